//! `cxgap report`, `cxgap risk` and `cxgap at-risk`: the analytics query API over gRPC,
//! printed as tables or (`--format json`) as JSON with enum names instead of numbers.

use crate::client::{self, Conn, OutFormat, enum_name};
use crate::filter::{self, CustomerFilterArgs, FilterArgs};
use crate::table::Table;
use anyhow::{Context, Result};
use cxgap_proto::analytics as pb;
use cxgap_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use cxgap_proto::common as cpb;
use serde_json::{Value, json};
use std::process::ExitCode;
use tonic::transport::Channel;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    conn: Conn,
    /// Event-time window ending at --as-of: 7d, 30d, 90d or all.
    #[arg(long, default_value = "30d", value_parser = parse_window)]
    window: cpb::Window,
    /// Last day of the window (YYYY-MM-DD); defaults to today (UTC).
    #[arg(long, value_parser = parse_day)]
    as_of: Option<cpb::Date>,
    /// Group by a combination, comma-separated: channel, stage, touchpoint, dimension,
    /// segment.KEY.
    #[arg(long, value_delimiter = ',', value_parser = parse_group)]
    by: Vec<pb::Grouping>,
    /// Groups with fewer responses are flagged low-n.
    #[arg(long, default_value_t = 30)]
    min_n: u32,
    #[command(flatten)]
    filter: FilterArgs,
    #[arg(long, value_enum, default_value = "table")]
    format: OutFormat,
}

#[derive(Debug, clap::Args)]
pub struct RiskArgs {
    #[command(flatten)]
    conn: Conn,
    customer_id: String,
    #[arg(long, value_enum, default_value = "table")]
    format: OutFormat,
}

#[derive(Debug, clap::Args)]
pub struct AtRiskArgs {
    #[command(flatten)]
    conn: Conn,
    /// How many customers to list (pages are fetched as needed).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Only customers at or above this churn risk (0–1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_unit)]
    min_risk: f64,
    #[command(flatten)]
    customers: CustomerFilterArgs,
    #[arg(long, value_enum, default_value = "table")]
    format: OutFormat,
}

fn parse_window(s: &str) -> Result<cpb::Window, String> {
    match s.to_ascii_lowercase().as_str() {
        "7d" => Ok(cpb::Window::Window7d),
        "30d" => Ok(cpb::Window::Window30d),
        "90d" => Ok(cpb::Window::Window90d),
        "all" => Ok(cpb::Window::All),
        _ => Err(format!("{s:?} is not a window the service offers (7d, 30d, 90d, all)")),
    }
}

fn parse_day(s: &str) -> Result<cpb::Date, String> {
    let d = cxgap_domain::Day::parse(s).ok_or_else(|| format!("{s:?} is not a date (YYYY-MM-DD)"))?;
    let (year, month, day) = d.ymd();
    Ok(cpb::Date { year, month, day })
}

fn parse_unit(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a risk between 0 and 1")),
    }
}

fn parse_group(s: &str) -> Result<pb::Grouping, String> {
    let (by, key) = match s {
        "channel" => (pb::GroupBy::Channel, ""),
        "stage" | "journey_stage" => (pb::GroupBy::JourneyStage, ""),
        "touchpoint" => (pb::GroupBy::Touchpoint, ""),
        "dimension" => (pb::GroupBy::Dimension, ""),
        _ => match s.strip_prefix("segment.") {
            Some(k) if !k.is_empty() => (pb::GroupBy::Segment, k),
            _ => return Err(format!("{s:?} is not a grouping (channel, stage, touchpoint, dimension, segment.KEY)")),
        },
    };
    Ok(pb::Grouping { by: by as i32, segment_key: key.to_string() })
}

async fn connect(conn: &Conn) -> Result<(AnalyticsServiceClient<Channel>, String)> {
    let key = conn.key()?;
    Ok((AnalyticsServiceClient::new(conn.analytics().await?), key))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn est(e: Option<&cpb::Estimate>) -> Value {
    match e {
        Some(e) if e.n > 0 => json!({"value": e.value, "n": e.n, "lower": e.lower, "upper": e.upper}),
        _ => Value::Null,
    }
}

/// `v [lo, hi]` with the given decimals, or a dash when there is nothing to show.
fn est_text(e: Option<&cpb::Estimate>, decimals: usize, scale: f64) -> String {
    match e {
        Some(e) if e.n > 0 && e.value.is_finite() => {
            format!("{:.d$} [{:.d$}, {:.d$}]", e.value * scale, e.lower * scale, e.upper * scale, d = decimals)
        }
        _ => "–".into(),
    }
}

fn date_text(d: Option<&cpb::Date>) -> String {
    d.map_or_else(String::new, |d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
}

fn channel_name(c: i32) -> String {
    cpb::Channel::try_from(c).map_or_else(|_| c.to_string(), |c| enum_name(c.as_str_name(), "CHANNEL_"))
}

fn dimension_name(d: i32) -> String {
    cpb::Dimension::try_from(d).map_or_else(|_| d.to_string(), |d| enum_name(d.as_str_name(), "DIMENSION_"))
}

fn summary_json(s: Option<&pb::Summary>) -> Value {
    let Some(s) = s else { return Value::Null };
    let nps = s.nps.as_ref();
    let delivery = s.delivery.as_ref();
    json!({
        "events": s.events,
        "low_n": s.low_n,
        "nps": nps.map(|n| json!({
            "wald": est(n.wald.as_ref()), "adjusted_wald": est(n.adjusted_wald.as_ref()),
            "promoters": n.promoters, "passives": n.passives, "detractors": n.detractors,
        })),
        "csat_percent": est(s.csat_percent.as_ref()),
        "csat_mean": est(s.csat_mean.as_ref()),
        "ces": est(s.ces.as_ref()),
        "experience": est(s.experience.as_ref()),
        "sentiment": est(s.sentiment.as_ref()),
        "dimensions": s.dimensions.iter().map(|d| json!({
            "dimension": dimension_name(d.dimension),
            "expectation": est(d.expectation.as_ref()),
            "perception": est(d.perception.as_ref()),
            "gap": est(d.gap.as_ref()),
        })).collect::<Vec<_>>(),
        "service_quality_unweighted": s.service_quality_unweighted,
        "service_quality_weighted": s.service_quality_weighted,
        "delivery": delivery.map(|d| json!({
            "wait_ratio": est(d.wait_ratio.as_ref()),
            "sla_breach_share": est(d.sla_breach_share.as_ref()),
            "unresolved_share": est(d.unresolved_share.as_ref()),
            "mean_wait_seconds": est(d.mean_wait_seconds.as_ref()),
        })),
    })
}

fn group_label(k: &pb::GroupKey) -> String {
    let by = k.grouping.as_ref().map_or(0, |g| g.by);
    match pb::GroupBy::try_from(by) {
        Ok(pb::GroupBy::Segment) => {
            format!("{}={}", k.grouping.as_ref().map_or("", |g| g.segment_key.as_str()), k.value)
        }
        _ => k.value.clone(),
    }
}

fn perception_json(p: &pb::PerceptionGap) -> Value {
    json!({
        "touchpoint": p.touchpoint,
        "dimension": if p.dimension == 0 { Value::Null } else { Value::String(dimension_name(p.dimension)) },
        "internal_score": p.internal_score,
        "customer_score": est(p.customer_score.as_ref()),
        "gap": est(p.gap.as_ref()),
    })
}

fn report_json(r: &pb::GapReport) -> Value {
    json!({
        "as_of": date_text(r.as_of.as_ref()),
        "window": cpb::Window::try_from(r.window).map_or_else(|_| r.window.to_string(), |w| enum_name(w.as_str_name(), "WINDOW_")),
        "overall": summary_json(r.overall.as_ref()),
        "groups": r.groups.iter().map(|g| json!({
            "key": g.key.iter().map(group_label).collect::<Vec<_>>(),
            "summary": summary_json(g.summary.as_ref()),
        })).collect::<Vec<_>>(),
        "consistency": r.consistency.iter().map(|c| json!({
            "scope": c.scope, "spread": c.spread, "stddev": c.stddev,
            "best_channel": channel_name(c.best_channel), "worst_channel": channel_name(c.worst_channel),
            "channels": c.channels,
        })).collect::<Vec<_>>(),
        "perception": r.perception.iter().map(perception_json).collect::<Vec<_>>(),
    })
}

fn summary_row(label: String, s: Option<&pb::Summary>) -> Vec<String> {
    let d = pb::Summary::default();
    let s = s.unwrap_or(&d);
    let sla = s.delivery.as_ref().and_then(|d| d.sla_breach_share.as_ref());
    vec![
        label,
        format!("{}{}", s.events, if s.low_n { " (low n)" } else { "" }),
        est_text(s.nps.as_ref().and_then(|n| n.wald.as_ref()), 1, 1.0),
        est_text(s.csat_percent.as_ref(), 1, 1.0),
        est_text(s.ces.as_ref(), 2, 1.0),
        est_text(s.experience.as_ref(), 2, 1.0),
        s.service_quality_weighted.map_or("–".into(), |v| format!("{v:.2}")),
        est_text(sla, 0, 100.0),
    ]
}

fn report_text(r: &pb::GapReport) -> String {
    let window = cpb::Window::try_from(r.window).map_or_else(|_| "?".into(), |w| enum_name(w.as_str_name(), "WINDOW_"));
    let mut out = format!("Gap report, window {window} ending {}\n\n", date_text(r.as_of.as_ref()));
    let mut t =
        Table::new(["group", "events", "NPS [95%]", "CSAT % [95%]", "CES", "experience", "SQ gap", "SLA breach %"]);
    t.row(summary_row("all".into(), r.overall.as_ref()));
    for g in &r.groups {
        let label = g.key.iter().map(group_label).collect::<Vec<_>>().join(" · ");
        t.row(summary_row(label, g.summary.as_ref()));
    }
    out.push_str(&t.render("  "));
    if let Some(o) = &r.overall
        && !o.dimensions.is_empty()
    {
        let mut t = Table::new(["SERVQUAL dimension", "expected", "perceived", "gap [95%]"]);
        for d in &o.dimensions {
            t.row(vec![
                dimension_name(d.dimension),
                est_text(d.expectation.as_ref(), 2, 1.0),
                est_text(d.perception.as_ref(), 2, 1.0),
                est_text(d.gap.as_ref(), 2, 1.0),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render("  "));
    }
    if !r.perception.is_empty() {
        let mut t = Table::new(["touchpoint", "management", "customers [95%]", "gap [95%]"]);
        for p in r.perception.iter().filter(|p| p.dimension == 0) {
            t.row(vec![
                p.touchpoint.clone(),
                format!("{:.2}", p.internal_score),
                est_text(p.customer_score.as_ref(), 2, 1.0),
                est_text(p.gap.as_ref(), 2, 1.0),
            ]);
        }
        out.push_str("\nPerception gap (management's score − customers', 0–1 scale)\n");
        out.push_str(&t.render("  "));
    }
    out
}

pub fn report(args: ReportArgs) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        let filter = args.filter.pb()?;
        let (mut api, key) = connect(&args.conn).await?;
        let req = pb::GetGapReportRequest {
            group_by: args.by.clone(),
            window: args.window as i32,
            as_of: args.as_of,
            filter,
            min_n: args.min_n,
        };
        let r = api.get_gap_report(client::authed(&key, req)?).await.map_err(client::status)?.into_inner();
        match args.format {
            OutFormat::Json => client::print_json(&report_json(&r))?,
            OutFormat::Table => {
                if let Some(only) = filter::describe(&args.filter.domain()?) {
                    println!("only {only}");
                }
                print!("{}", report_text(&r))
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn risk_json(c: &pb::CustomerRisk) -> Value {
    json!({
        "customer_id": c.customer_id,
        "risk": c.risk,
        "health": c.health,
        "events": c.events,
        "customer_value": c.customer_value,
        "segment": c.segment,
        "last_seen": client::timestamp(c.last_seen.as_ref()),
        "drivers": c.drivers.iter().map(|d| json!({"feature": d.feature, "value": d.value, "contribution": d.contribution})).collect::<Vec<_>>(),
        "history": c.history.iter().map(|p| json!({"at": client::timestamp(p.at.as_ref()), "risk": p.risk})).collect::<Vec<_>>(),
    })
}

fn drivers_text(c: &pb::CustomerRisk, n: usize) -> String {
    c.drivers
        .iter()
        .filter(|d| d.contribution > 0.0)
        .take(n)
        .map(|d| format!("{} (+{:.2})", d.feature, d.contribution))
        .collect::<Vec<_>>()
        .join(", ")
}

fn segment_text(c: &pb::CustomerRisk) -> String {
    let mut s: Vec<String> = c.segment.iter().map(|(k, v)| format!("{k}={v}")).collect();
    s.sort();
    s.join(" ")
}

pub fn risk(args: RiskArgs) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        let (mut api, key) = connect(&args.conn).await?;
        let req = pb::GetCustomerRiskRequest { customer_id: args.customer_id.clone() };
        let c = api
            .get_customer_risk(client::authed(&key, req)?)
            .await
            .map_err(client::status)
            .with_context(|| format!("customer {:?}", args.customer_id))?
            .into_inner();
        if args.format == OutFormat::Json {
            client::print_json(&risk_json(&c))?;
            return Ok(ExitCode::SUCCESS);
        }
        println!("customer   {}", c.customer_id);
        println!("churn risk {:.1} %   health {:.0}/100", c.risk * 100.0, c.health);
        println!("events     {}   last seen {}", c.events, client::timestamp(c.last_seen.as_ref()));
        if let Some(v) = c.customer_value {
            println!("value      {v:.2}");
        }
        if !c.segment.is_empty() {
            println!("segment    {}", segment_text(&c));
        }
        let mut t = Table::new(["driver", "value", "contribution to log-odds"]);
        for d in &c.drivers {
            t.row(vec![d.feature.clone(), format!("{:.3}", d.value), format!("{:+.3}", d.contribution)]);
        }
        println!("\n{}", t.render("  "));
        if !c.history.is_empty() {
            let mut t = Table::new(["decided at", "risk %"]);
            for p in &c.history {
                t.row(vec![client::timestamp(p.at.as_ref()), format!("{:.1}", p.risk * 100.0)]);
            }
            println!("{}", t.render("  "));
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn at_risk(args: AtRiskArgs) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        let filter = args.customers.pb()?;
        let (mut api, key) = connect(&args.conn).await?;
        let mut customers = Vec::new();
        let mut page_token = String::new();
        while customers.len() < args.limit as usize {
            let req = pb::ListAtRiskCustomersRequest {
                limit: (args.limit as usize - customers.len()).min(500) as u32,
                min_risk: args.min_risk,
                filter: filter.clone(),
                page_token: std::mem::take(&mut page_token),
            };
            let page =
                api.list_at_risk_customers(client::authed(&key, req)?).await.map_err(client::status)?.into_inner();
            customers.extend(page.customers);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        customers.truncate(args.limit as usize);
        match args.format {
            OutFormat::Json => client::print_json(&Value::Array(customers.iter().map(risk_json).collect()))?,
            OutFormat::Table => {
                let mut t = Table::new(["customer", "risk %", "health", "value", "events", "segment", "top drivers"])
                    .text_last();
                for c in &customers {
                    t.row(vec![
                        c.customer_id.clone(),
                        format!("{:.1}", c.risk * 100.0),
                        format!("{:.0}", c.health),
                        c.customer_value.map_or("–".into(), |v| format!("{v:.0}")),
                        c.events.to_string(),
                        segment_text(c),
                        drivers_text(c, 3),
                    ]);
                }
                if t.is_empty() {
                    println!("no customer at or above risk {:.2}", args.min_risk);
                } else {
                    print!("{}", t.render(""));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
