//! `cxgap alerts` (list, ack, resolve, watch) and `cxgap subscribe` (webhook, kafka and
//! stream subscriptions; list, delete): the alerting gRPC API from a terminal.

use crate::client::{self, Conn, OutFormat, enum_name};
use crate::table::Table;
use anyhow::{Context, Result, bail};
use cxgap_proto::alerting as pb;
use cxgap_proto::alerting::alerting_service_client::AlertingServiceClient;
use serde_json::{Value, json};
use std::process::ExitCode;
use tonic::transport::Channel;

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AlertsCommand {
    /// List alerts, most recently changed first.
    List {
        #[command(flatten)]
        conn: Conn,
        /// Only these states, comma-separated: firing, acknowledged, resolved.
        #[arg(long, value_delimiter = ',', value_parser = parse_state)]
        state: Vec<pb::AlertState>,
        /// Only these rule kinds, comma-separated (risk_threshold, hot_alert, ...).
        #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
        kind: Vec<pb::RuleKind>,
        /// info, warning or critical.
        #[arg(long, value_parser = parse_severity)]
        min_severity: Option<pb::Severity>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Acknowledge a firing alert: it stops repeating until it resolves.
    Ack(ChangeArgs),
    /// Resolve an alert by hand.
    Resolve(ChangeArgs),
    /// Print notifications as they happen, from a gRPC stream subscription.
    Watch {
        #[command(flatten)]
        conn: Conn,
        /// The stream subscription to follow (created if missing, with no filter).
        #[arg(long, default_value = "cli-watch")]
        subscription: String,
        /// Start from the oldest notification kept, not from now.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many notifications.
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
}

#[derive(Debug, clap::Args)]
struct ChangeArgs {
    #[command(flatten)]
    conn: Conn,
    alert_id: String,
    /// Who did it (shown in the alert's history).
    #[arg(long, default_value_t = default_user())]
    by: String,
    #[arg(long, default_value = "")]
    note: String,
    #[arg(long, value_enum, default_value = "table")]
    format: OutFormat,
}

fn default_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

#[derive(Debug, clap::Args)]
pub struct SubscribeArgs {
    #[command(subcommand)]
    command: SubscribeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SubscribeCommand {
    /// Deliver notifications to an HTTP endpoint, signed (Standard Webhooks).
    Webhook {
        #[command(flatten)]
        conn: Conn,
        url: String,
        /// Signing secret (whsec_…); generated and printed when not given. Twice while rotating.
        #[arg(long)]
        secret: Vec<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Batch alerts with equal values of these labels into one request.
        #[arg(long, value_delimiter = ',')]
        group_by: Vec<String>,
        /// How long a new group waits for more alerts, e.g. 30s.
        #[arg(long, value_parser = parse_duration)]
        group_wait: Option<prost_types::Duration>,
        /// Least time between two requests of one group, e.g. 5m.
        #[arg(long, value_parser = parse_duration)]
        group_interval: Option<prost_types::Duration>,
    },
    /// Publish notifications to a Kafka topic (key = alert id).
    Kafka {
        #[command(flatten)]
        conn: Conn,
        topic: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// A gRPC stream subscription, for `cxgap alerts watch` or your own client.
    Stream {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// List the tenant's subscriptions.
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Delete a subscription.
    Delete {
        #[command(flatten)]
        conn: Conn,
        subscription_id: String,
    },
}

#[derive(Debug, clap::Args)]
struct FilterArgs {
    /// Subscription id (generated when not given; giving an existing one replaces it).
    #[arg(long)]
    id: Option<String>,
    #[arg(long, default_value = "")]
    name: String,
    /// Only these rule kinds, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    kind: Vec<pb::RuleKind>,
    /// info, warning or critical.
    #[arg(long, value_parser = parse_severity)]
    min_severity: Option<pb::Severity>,
    /// Only customers of this segment, KEY=VALUE (repeatable).
    #[arg(long, value_parser = parse_pair)]
    segment: Vec<(String, String)>,
    /// Only customers worth at least this much.
    #[arg(long)]
    min_value: Option<f64>,
}

fn parse_state(s: &str) -> Result<pb::AlertState, String> {
    pb::AlertState::from_str_name(&format!("ALERT_STATE_{}", s.to_ascii_uppercase()))
        .filter(|s| *s != pb::AlertState::Unspecified)
        .ok_or_else(|| format!("{s:?} is not an alert state (firing, acknowledged, resolved)"))
}

fn parse_kind(s: &str) -> Result<pb::RuleKind, String> {
    pb::RuleKind::from_str_name(&format!("RULE_KIND_{}", s.to_ascii_uppercase()))
        .filter(|s| *s != pb::RuleKind::Unspecified)
        .ok_or_else(|| {
            format!(
                "{s:?} is not a rule kind (risk_threshold, risk_jump, hot_alert, metric_worsening, sla_breach_surge, perception_gap)"
            )
        })
}

fn parse_severity(s: &str) -> Result<pb::Severity, String> {
    pb::Severity::from_str_name(&format!("SEVERITY_{}", s.to_ascii_uppercase()))
        .filter(|s| *s != pb::Severity::Unspecified)
        .ok_or_else(|| format!("{s:?} is not a severity (info, warning, critical)"))
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `500ms`, `30s`, `5m`, `1h`.
fn parse_duration(s: &str) -> Result<prost_types::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 5m, 1h)"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("{s:?} is not a duration (e.g. 500ms, 30s, 5m, 1h)")),
    };
    Ok(prost_types::Duration { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn connect(conn: &Conn) -> Result<(AlertingServiceClient<Channel>, String)> {
    let key = conn.key()?;
    Ok((AlertingServiceClient::new(conn.alerting().await?), key))
}

fn state_name(s: i32) -> String {
    pb::AlertState::try_from(s).map_or_else(|_| s.to_string(), |s| enum_name(s.as_str_name(), "ALERT_STATE_"))
}

fn severity_name(s: i32) -> String {
    pb::Severity::try_from(s).map_or_else(|_| s.to_string(), |s| enum_name(s.as_str_name(), "SEVERITY_"))
}

fn kind_name(k: i32) -> String {
    pb::RuleKind::try_from(k).map_or_else(|_| k.to_string(), |k| enum_name(k.as_str_name(), "RULE_KIND_"))
}

fn alert_json(a: &pb::Alert) -> Value {
    json!({
        "alert_id": a.alert_id,
        "rule_id": a.rule_id,
        "kind": kind_name(a.kind),
        "severity": severity_name(a.severity),
        "state": state_name(a.state),
        "subject": a.subject,
        "summary": a.summary,
        "labels": a.labels,
        "customer_value": a.customer_value,
        "started_at": client::timestamp(a.started_at.as_ref()),
        "updated_at": client::timestamp(a.updated_at.as_ref()),
        "history": a.history.iter().map(|t| json!({
            "state": state_name(t.state), "at": client::timestamp(t.at.as_ref()), "by": t.by, "note": t.note,
        })).collect::<Vec<_>>(),
    })
}

fn alerts_table(alerts: &[pb::Alert]) -> Table {
    let mut t = Table::new(["alert", "state", "severity", "kind", "subject", "updated", "summary"]).text_last();
    for a in alerts {
        t.row(vec![
            a.alert_id.clone(),
            state_name(a.state),
            severity_name(a.severity),
            kind_name(a.kind),
            a.subject.clone(),
            client::timestamp(a.updated_at.as_ref()),
            a.summary.clone(),
        ]);
    }
    t
}

pub fn alerts(args: AlertsArgs) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        match args.command {
            AlertsCommand::List { conn, state, kind, min_severity, limit, format } => {
                let (mut api, key) = connect(&conn).await?;
                let mut alerts = Vec::new();
                let mut page_token = String::new();
                while alerts.len() < limit as usize {
                    let req = pb::ListAlertsRequest {
                        states: state.iter().map(|s| *s as i32).collect(),
                        kinds: kind.iter().map(|k| *k as i32).collect(),
                        min_severity: min_severity.map_or(0, |s| s as i32),
                        limit: (limit as usize - alerts.len()).min(500) as u32,
                        page_token: std::mem::take(&mut page_token),
                    };
                    let page = api.list_alerts(client::authed(&key, req)?).await.map_err(client::status)?.into_inner();
                    alerts.extend(page.alerts);
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    page_token = page.next_page_token;
                }
                alerts.truncate(limit as usize);
                match format {
                    OutFormat::Json => client::print_json(&Value::Array(alerts.iter().map(alert_json).collect()))?,
                    OutFormat::Table if alerts.is_empty() => println!("no alerts"),
                    OutFormat::Table => print!("{}", alerts_table(&alerts).render("")),
                }
            }
            AlertsCommand::Ack(c) | AlertsCommand::Resolve(c) if c.alert_id.trim().is_empty() => {
                bail!("the alert id is empty")
            }
            AlertsCommand::Ack(c) => {
                let (mut api, key) = connect(&c.conn).await?;
                let req = pb::AcknowledgeAlertRequest { alert_id: c.alert_id.clone(), by: c.by, note: c.note };
                let a = api
                    .acknowledge_alert(client::authed(&key, req)?)
                    .await
                    .map_err(client::status)
                    .with_context(|| format!("acknowledging {}", c.alert_id))?
                    .into_inner();
                changed(&a, c.format)?;
            }
            AlertsCommand::Resolve(c) => {
                let (mut api, key) = connect(&c.conn).await?;
                let req = pb::ResolveAlertRequest { alert_id: c.alert_id.clone(), by: c.by, note: c.note };
                let a = api
                    .resolve_alert(client::authed(&key, req)?)
                    .await
                    .map_err(client::status)
                    .with_context(|| format!("resolving {}", c.alert_id))?
                    .into_inner();
                changed(&a, c.format)?;
            }
            AlertsCommand::Watch { conn, subscription, from_start, count, format } => {
                watch(&conn, &subscription, from_start, count, format).await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn changed(a: &pb::Alert, format: OutFormat) -> Result<()> {
    match format {
        OutFormat::Json => client::print_json(&alert_json(a)),
        OutFormat::Table => {
            println!("{} is now {}: {}", a.alert_id, state_name(a.state), a.summary);
            Ok(())
        }
    }
}

async fn watch(conn: &Conn, subscription: &str, from_start: bool, count: Option<u64>, format: OutFormat) -> Result<()> {
    let (mut api, key) = connect(conn).await?;
    let existing =
        api.list_subscriptions(client::authed(&key, pb::ListSubscriptionsRequest {})?).await.map_err(client::status)?;
    if !existing.get_ref().subscriptions.iter().any(|s| s.subscription_id == subscription) {
        let sub = pb::Subscription {
            subscription_id: subscription.to_string(),
            name: "cxgap alerts watch".into(),
            target: Some(pb::subscription::Target::GrpcStream(pb::GrpcStreamTarget {})),
            ..Default::default()
        };
        api.create_subscription(client::authed(&key, pb::CreateSubscriptionRequest { subscription: Some(sub) })?)
            .await
            .map_err(client::status)?;
    }
    let cursor = if from_start { "0".to_string() } else { String::new() };
    let req = pb::SubscribeRequest { subscription_id: subscription.to_string(), cursor };
    let mut stream = api.subscribe(client::authed(&key, req)?).await.map_err(client::status)?.into_inner();
    if format == OutFormat::Table {
        eprintln!("watching subscription {subscription} (Ctrl-C stops)");
    }
    let mut seen = 0u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        if count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
        let n = tokio::select! {
            _ = &mut stop => return Ok(()),
            n = stream.message() => n.map_err(client::status)?,
        };
        let Some(n) = n else { bail!("the alerting service closed the stream") };
        seen += 1;
        let Some(a) = &n.alert else { continue };
        match format {
            OutFormat::Json => println!(
                "{}",
                json!({
                    "notification_id": n.notification_id, "cursor": n.cursor, "state": state_name(n.state),
                    "at": client::timestamp(n.at.as_ref()), "alert": alert_json(a),
                })
            ),
            OutFormat::Table => println!(
                "{} {:<12} {:<8} {:<24} {}  ({})",
                client::timestamp(n.at.as_ref()),
                state_name(n.state),
                severity_name(a.severity),
                a.subject,
                a.summary,
                a.alert_id
            ),
        }
    }
}

fn filter_pb(f: &FilterArgs) -> pb::SubscriptionFilter {
    pb::SubscriptionFilter {
        kinds: f.kind.iter().map(|k| *k as i32).collect(),
        min_severity: f.min_severity.map_or(0, |s| s as i32),
        segment: f.segment.iter().cloned().collect(),
        min_customer_value: f.min_value.unwrap_or(0.0),
    }
}

fn new_secret() -> Result<String> {
    use base64::Engine as _;
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    Ok(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(b)))
}

fn subscription_json(s: &pb::Subscription) -> Value {
    use pb::subscription::Target as T;
    let target = match &s.target {
        Some(T::Webhook(w)) => json!({"webhook": w.url}),
        Some(T::Kafka(k)) => json!({"kafka": k.topic}),
        Some(T::GrpcStream(_)) => json!({"grpc_stream": {}}),
        None => Value::Null,
    };
    let f = s.filter.clone().unwrap_or_default();
    json!({
        "subscription_id": s.subscription_id,
        "name": s.name,
        "target": target,
        "filter": {
            "kinds": f.kinds.iter().map(|k| kind_name(*k)).collect::<Vec<_>>(),
            "min_severity": severity_name(f.min_severity),
            "segment": f.segment,
            "min_customer_value": f.min_customer_value,
        },
        "group_by": s.grouping.as_ref().map(|g| g.group_by.clone()),
        "disabled": s.disabled,
        "disabled_reason": s.disabled_reason,
    })
}

pub fn subscribe(args: SubscribeArgs) -> Result<ExitCode> {
    use pb::subscription::Target as T;
    runtime()?.block_on(async move {
        let (conn, filter, target, grouping, generated) = match args.command {
            SubscribeCommand::List { conn, format } => {
                let (mut api, key) = connect(&conn).await?;
                let list = api
                    .list_subscriptions(client::authed(&key, pb::ListSubscriptionsRequest {})?)
                    .await
                    .map_err(client::status)?
                    .into_inner()
                    .subscriptions;
                match format {
                    OutFormat::Json => client::print_json(&Value::Array(list.iter().map(subscription_json).collect()))?,
                    OutFormat::Table => {
                        let mut t = Table::new(["subscription", "target", "min severity", "state"]).text_last();
                        for s in &list {
                            let target = match &s.target {
                                Some(T::Webhook(w)) => format!("webhook {}", w.url),
                                Some(T::Kafka(k)) => format!("kafka {}", k.topic),
                                Some(T::GrpcStream(_)) => "grpc stream".into(),
                                None => "?".into(),
                            };
                            let sev = s.filter.as_ref().map_or(0, |f| f.min_severity);
                            let state =
                                if s.disabled { format!("disabled: {}", s.disabled_reason) } else { "active".into() };
                            t.row(vec![s.subscription_id.clone(), target, severity_name(sev), state]);
                        }
                        print!("{}", t.render(""));
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            SubscribeCommand::Delete { conn, subscription_id } => {
                let (mut api, key) = connect(&conn).await?;
                let req = pb::DeleteSubscriptionRequest { subscription_id: subscription_id.clone() };
                api.delete_subscription(client::authed(&key, req)?).await.map_err(client::status)?;
                println!("deleted {subscription_id}");
                return Ok(ExitCode::SUCCESS);
            }
            SubscribeCommand::Webhook { conn, url, secret, filter, group_by, group_wait, group_interval } => {
                let (secrets, generated) =
                    if secret.is_empty() { (vec![new_secret()?], true) } else { (secret, false) };
                let grouping = (!group_by.is_empty() || group_wait.is_some() || group_interval.is_some())
                    .then_some(pb::Grouping { group_by, group_wait, group_interval });
                (conn, filter, T::Webhook(pb::WebhookTarget { url, secrets }), grouping, generated)
            }
            SubscribeCommand::Kafka { conn, topic, filter } => {
                (conn, filter, T::Kafka(pb::KafkaTarget { topic }), None, false)
            }
            SubscribeCommand::Stream { conn, filter } => {
                (conn, filter, T::GrpcStream(pb::GrpcStreamTarget {}), None, false)
            }
        };
        let (mut api, key) = connect(&conn).await?;
        let sub = pb::Subscription {
            subscription_id: filter.id.clone().unwrap_or_default(),
            name: filter.name.clone(),
            filter: Some(filter_pb(&filter)),
            grouping,
            target: Some(target.clone()),
            disabled: false,
            disabled_reason: String::new(),
        };
        let made = api
            .create_subscription(client::authed(&key, pb::CreateSubscriptionRequest { subscription: Some(sub) })?)
            .await
            .map_err(client::status)?
            .into_inner();
        println!("subscription {}", made.subscription_id);
        if let (true, T::Webhook(w)) = (generated, &target) {
            println!("signing secret (keep it; the receiver verifies with it): {}", w.secrets[0]);
        }
        Ok(ExitCode::SUCCESS)
    })
}
