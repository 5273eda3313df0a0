//! `cxgap.alerting.v1.AlertingService`: rules, alerts (list, acknowledge, resolve),
//! silences, subscriptions, dead letters and the resumable `Subscribe` stream. Every call
//! is scoped to the tenant of the caller's API key.

use crate::model::{Filter, Matcher, Rule, RuleParams, Silence, Subscription, Target};
use crate::store::{Alert, AlertStore, Notification, StoreError, Transition};
use cxgap_auth::{AuthError, Authenticator};
use cxgap_domain::alerts::AlertState;
use cxgap_domain::report::Metric;
use cxgap_domain::rules::{
    HotAlert, MetricWorsening, PerceptionGapBound, RiskJump, RiskThreshold, Severity, SlaBreachSurge,
};
use cxgap_proto::alerting as pb;
use cxgap_proto::alerting::alerting_service_server::AlertingService;
use cxgap_proto::common as cpb;
use cxgap_proto::convert::timestamp_to_pb;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct GrpcAlerting {
    pub store: AlertStore,
    pub auth: Arc<Authenticator>,
    /// Woken after every commit that may have added notifications.
    pub log_changed: Arc<Notify>,
    /// Woken when deliveries were queued (replays).
    pub deliveries: Arc<Notify>,
}

fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Unauthenticated(m) => Status::unauthenticated(m),
        AuthError::Unavailable(m) => Status::unavailable(m),
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(m) => Status::not_found(m),
        StoreError::Invalid(m) => Status::failed_precondition(m),
        StoreError::Conflict(m) => Status::aborted(m),
        e => Status::unavailable(e.to_string()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn ts(ms: i64) -> prost_types::Timestamp {
    timestamp_to_pb(cxgap_domain::Timestamp(ms))
}

fn ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1000 + t.nanos as i64 / 1_000_000)
}

fn severity_to_pb(s: Severity) -> i32 {
    match s {
        Severity::Info => pb::Severity::Info as i32,
        Severity::Warning => pb::Severity::Warning as i32,
        Severity::Critical => pb::Severity::Critical as i32,
    }
}

fn severity_from_pb(s: i32) -> Option<Severity> {
    match pb::Severity::try_from(s).ok()? {
        pb::Severity::Info => Some(Severity::Info),
        pb::Severity::Warning => Some(Severity::Warning),
        pb::Severity::Critical => Some(Severity::Critical),
        pb::Severity::Unspecified => None,
    }
}

const KINDS: [(pb::RuleKind, &str); 6] = [
    (pb::RuleKind::RiskThreshold, "risk_threshold"),
    (pb::RuleKind::RiskJump, "risk_jump"),
    (pb::RuleKind::HotAlert, "hot_alert"),
    (pb::RuleKind::MetricWorsening, "metric_worsening"),
    (pb::RuleKind::SlaBreachSurge, "sla_breach_surge"),
    (pb::RuleKind::PerceptionGap, "perception_gap"),
];

fn kind_to_pb(k: &str) -> i32 {
    KINDS.iter().find(|(_, n)| *n == k).map_or(0, |(p, _)| *p as i32)
}

fn kind_from_pb(k: i32) -> Result<&'static str, Status> {
    KINDS
        .iter()
        .find(|(p, _)| *p as i32 == k)
        .map(|(_, n)| *n)
        .ok_or_else(|| Status::invalid_argument(format!("rule kind {k} is not one of the six kinds")))
}

fn state_to_pb(s: AlertState) -> i32 {
    match s {
        AlertState::Firing => pb::AlertState::Firing as i32,
        AlertState::Acknowledged => pb::AlertState::Acknowledged as i32,
        AlertState::Resolved => pb::AlertState::Resolved as i32,
    }
}

fn window_days(w: i32) -> Result<u32, Status> {
    match cpb::Window::try_from(w) {
        Ok(cpb::Window::Window7d) => Ok(7),
        Ok(cpb::Window::Window30d | cpb::Window::Unspecified) => Ok(30),
        _ => Err(Status::invalid_argument("window: alert rules compare 7-day or 30-day windows")),
    }
}

fn window_to_pb(days: u32) -> i32 {
    if days == 7 { cpb::Window::Window7d as i32 } else { cpb::Window::Window30d as i32 }
}

fn metric_from_pb(m: i32) -> Result<Metric, Status> {
    let name = cpb::Metric::try_from(m).map(|m| m.as_str_name()).unwrap_or("");
    Metric::parse(name.trim_start_matches("METRIC_")).ok_or_else(|| {
        Status::invalid_argument("metric: NPS, CSAT_PERCENT, CES, EXPERIENCE, SERVICE_QUALITY or SENTIMENT")
    })
}

fn metric_to_pb(m: Metric) -> i32 {
    match m {
        Metric::Nps => cpb::Metric::Nps as i32,
        Metric::CsatPercent => cpb::Metric::CsatPercent as i32,
        Metric::Ces => cpb::Metric::Ces as i32,
        Metric::Experience => cpb::Metric::Experience as i32,
        Metric::ServiceQuality => cpb::Metric::ServiceQuality as i32,
        Metric::Sentiment => cpb::Metric::Sentiment as i32,
    }
}

pub fn rule_from_pb(r: &pb::Rule) -> Result<Rule, Status> {
    use pb::rule::Params;
    let params = match r.params.as_ref() {
        Some(Params::RiskThreshold(p)) => {
            RuleParams::RiskThreshold(RiskThreshold { fire_at: p.fire_at, clear_at: p.clear_at })
        }
        Some(Params::RiskJump(p)) => RuleParams::RiskJump(RiskJump {
            delta: p.delta,
            within_ms: p.within.as_ref().map_or(0, |d| d.seconds * 1000 + d.nanos as i64 / 1_000_000),
        }),
        Some(Params::HotAlert(p)) => RuleParams::HotAlert(HotAlert {
            min_customer_value: p.min_customer_value,
            max_nps: p.max_nps.min(255) as u8,
            max_sentiment: p.max_sentiment,
        }),
        Some(Params::MetricWorsening(p)) => RuleParams::MetricWorsening {
            worsening: MetricWorsening {
                metric: metric_from_pb(p.metric)?,
                min_n: p.min_n as u64,
                alpha: p.alpha,
                min_difference: p.min_difference,
            },
            window_days: window_days(p.window)?,
            scope: p.scope.clone(),
        },
        Some(Params::SlaBreachSurge(p)) => RuleParams::SlaBreachSurge {
            surge: SlaBreachSurge { min_n: p.min_n as u64, alpha: p.alpha, min_share: p.min_share },
            window_days: window_days(p.window)?,
            scope: "touchpoint".into(),
        },
        Some(Params::PerceptionGap(p)) => {
            RuleParams::PerceptionGap(PerceptionGapBound { bound: p.bound, min_n: p.min_n as u64 })
        }
        None => return Err(Status::invalid_argument("rule: params are required (one of the six kinds)")),
    };
    if r.kind != 0 && kind_from_pb(r.kind)? != params.kind() {
        return Err(Status::invalid_argument(format!(
            "rule: kind says {} but the params are {}",
            r.kind,
            params.kind()
        )));
    }
    let rule = Rule {
        id: r.rule_id.clone(),
        name: r.name.clone(),
        severity: severity_from_pb(r.severity).unwrap_or(Severity::Warning),
        enabled: r.enabled,
        params,
    };
    rule.validate().map_err(|e| Status::invalid_argument(format!("rule: {e}")))?;
    Ok(rule)
}

pub fn rule_to_pb(r: &Rule) -> pb::Rule {
    use pb::rule::Params;
    let params = match &r.params {
        RuleParams::RiskThreshold(t) => {
            Params::RiskThreshold(pb::RiskThresholdParams { fire_at: t.fire_at, clear_at: t.clear_at })
        }
        RuleParams::RiskJump(j) => Params::RiskJump(pb::RiskJumpParams {
            delta: j.delta,
            within: Some(prost_types::Duration { seconds: j.within_ms / 1000, nanos: 0 }),
        }),
        RuleParams::HotAlert(h) => Params::HotAlert(pb::HotAlertParams {
            min_customer_value: h.min_customer_value,
            max_nps: h.max_nps as u32,
            max_sentiment: h.max_sentiment,
        }),
        RuleParams::MetricWorsening { worsening, window_days, scope } => {
            Params::MetricWorsening(pb::MetricWorseningParams {
                metric: metric_to_pb(worsening.metric),
                window: window_to_pb(*window_days),
                min_n: worsening.min_n as u32,
                alpha: worsening.alpha,
                min_difference: worsening.min_difference,
                scope: scope.clone(),
            })
        }
        RuleParams::SlaBreachSurge { surge, window_days, .. } => Params::SlaBreachSurge(pb::SlaBreachSurgeParams {
            window: window_to_pb(*window_days),
            min_n: surge.min_n as u32,
            alpha: surge.alpha,
            min_share: surge.min_share,
        }),
        RuleParams::PerceptionGap(p) => {
            Params::PerceptionGap(pb::PerceptionGapParams { bound: p.bound, min_n: p.min_n as u32 })
        }
    };
    pb::Rule {
        rule_id: r.id.clone(),
        name: r.name.clone(),
        kind: kind_to_pb(r.params.kind()),
        severity: severity_to_pb(r.severity),
        enabled: r.enabled,
        params: Some(params),
    }
}

pub fn alert_to_pb(a: &Alert, history: &[Transition]) -> pb::Alert {
    pb::Alert {
        alert_id: a.alert_id.clone(),
        rule_id: a.rule_id.clone(),
        kind: kind_to_pb(&a.kind),
        severity: severity_to_pb(a.severity),
        state: state_to_pb(a.state),
        subject: a.subject.clone(),
        summary: a.summary.clone(),
        labels: a.labels.clone().into_iter().collect(),
        customer_value: a.customer_value,
        started_at: Some(ts(a.started_at)),
        updated_at: Some(ts(a.updated_at)),
        history: history
            .iter()
            .map(|t| pb::AlertTransition {
                state: state_to_pb(t.state),
                at: Some(ts(t.at)),
                by: t.by.clone(),
                note: t.note.clone(),
            })
            .collect(),
    }
}

fn filter_from_pb(f: Option<&pb::SubscriptionFilter>) -> Result<Filter, Status> {
    let Some(f) = f else { return Ok(Filter::default()) };
    Ok(Filter {
        kinds: f.kinds.iter().map(|k| kind_from_pb(*k).map(str::to_string)).collect::<Result<_, _>>()?,
        min_severity: severity_from_pb(f.min_severity),
        segment: f.segment.clone().into_iter().collect(),
        min_customer_value: f.min_customer_value,
    })
}

fn subscription_to_pb(s: &Subscription, disabled: &str) -> pb::Subscription {
    use pb::subscription::Target as T;
    pb::Subscription {
        subscription_id: s.id.clone(),
        name: s.name.clone(),
        filter: Some(pb::SubscriptionFilter {
            kinds: s.filter.kinds.iter().map(|k| kind_to_pb(k)).collect(),
            min_severity: s.filter.min_severity.map_or(0, severity_to_pb),
            segment: s.filter.segment.clone().into_iter().collect(),
            min_customer_value: s.filter.min_customer_value,
        }),
        target: Some(match &s.target {
            // Secrets are write-only: the API never shows them again.
            Target::Webhook { url, secrets } => T::Webhook(pb::WebhookTarget {
                url: url.clone(),
                secrets: secrets.iter().map(|_| "whsec_…".to_string()).collect(),
            }),
            Target::Kafka { topic } => T::Kafka(pb::KafkaTarget { topic: topic.clone() }),
            Target::GrpcStream => T::GrpcStream(pb::GrpcStreamTarget {}),
        }),
        disabled: !disabled.is_empty(),
        disabled_reason: disabled.to_string(),
        grouping: s.grouping.as_ref().map(|g| pb::Grouping {
            group_by: g.by.clone(),
            group_wait: Some(prost_types::Duration {
                seconds: g.wait_ms / 1000,
                nanos: (g.wait_ms % 1000) as i32 * 1_000_000,
            }),
            group_interval: Some(prost_types::Duration {
                seconds: g.interval_ms / 1000,
                nanos: (g.interval_ms % 1000) as i32 * 1_000_000,
            }),
        }),
    }
}

fn silence_to_pb(s: &Silence) -> pb::Silence {
    pb::Silence {
        silence_id: s.id.clone(),
        matchers: s
            .matchers
            .iter()
            .map(|m| pb::Matcher { label: m.label.clone(), value: m.value.clone(), regex: m.regex, negate: m.negate })
            .collect(),
        starts_at: Some(ts(s.starts_at)),
        ends_at: Some(ts(s.ends_at)),
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
    }
}

fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random source");
    format!("{prefix}_{:016x}", u64::from_le_bytes(b))
}

/// The alert a stored notification is about: its payload's `data`, read once for both the
/// subscription's filter and the message.
fn stored_alert(n: &Notification) -> Result<Alert, Status> {
    #[derive(serde::Deserialize)]
    struct Payload {
        data: Alert,
    }
    serde_json::from_str::<Payload>(&n.payload)
        .map(|p| p.data)
        .map_err(|e| Status::internal(format!("stored notification: {e}")))
}

fn notification_to_pb(n: &Notification, alert: &Alert) -> pb::Notification {
    pb::Notification {
        notification_id: n.notification_id.clone(),
        cursor: n.seq.to_string(),
        alert: Some(alert_to_pb(alert, &[])),
        state: state_to_pb(n.state),
        at: Some(ts(n.at)),
    }
}

impl GrpcAlerting {
    async fn tenant<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        self.auth.tenant(header).await.map_err(auth_status)
    }

    async fn put_rule(&self, tenant: &str, rule: Option<&pb::Rule>, create: bool) -> Result<pb::Rule, Status> {
        let mut rule = rule_from_pb(rule.ok_or_else(|| Status::invalid_argument("rule is required"))?)?;
        let exists = self.store.rules(tenant).await.map_err(store_status)?.iter().any(|r| r.id == rule.id);
        if create && exists {
            return Err(Status::already_exists(format!("rule {:?} exists; use UpdateRule", rule.id)));
        }
        if !create && !exists {
            return Err(Status::not_found(format!("rule {:?}", rule.id)));
        }
        if rule.name.is_empty() {
            rule.name = rule.id.clone();
        }
        self.store.put_rule(tenant, &rule, now_ms()).await.map_err(store_status)?;
        Ok(rule_to_pb(&rule))
    }

    async fn act(&self, req: Request<(String, String, String)>, to: AlertState) -> Result<Response<pb::Alert>, Status> {
        let tenant = self.tenant(&req).await?;
        let (id, by, note) = req.into_inner();
        let by = if by.is_empty() { "api".to_string() } else { by };
        let a = self.store.act(&tenant, &id, to, &by, &note, now_ms()).await.map_err(store_status)?;
        self.log_changed.notify_waiters();
        self.deliveries.notify_one();
        let history = self.store.history(&a.alert_id).await.map_err(store_status)?;
        Ok(Response::new(alert_to_pb(&a, &history)))
    }
}

type NotificationStream = Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send>>;

#[tonic::async_trait]
impl AlertingService for GrpcAlerting {
    async fn create_rule(&self, req: Request<pb::CreateRuleRequest>) -> Result<Response<pb::Rule>, Status> {
        let tenant = self.tenant(&req).await?;
        Ok(Response::new(self.put_rule(&tenant, req.get_ref().rule.as_ref(), true).await?))
    }

    async fn update_rule(&self, req: Request<pb::UpdateRuleRequest>) -> Result<Response<pb::Rule>, Status> {
        let tenant = self.tenant(&req).await?;
        Ok(Response::new(self.put_rule(&tenant, req.get_ref().rule.as_ref(), false).await?))
    }

    async fn delete_rule(
        &self,
        req: Request<pb::DeleteRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let id = &req.get_ref().rule_id;
        if !self.store.delete_rule(&tenant, id).await.map_err(store_status)? {
            return Err(Status::not_found(format!("rule {id:?}")));
        }
        Ok(Response::new(pb::DeleteRuleResponse {}))
    }

    async fn list_rules(&self, req: Request<pb::ListRulesRequest>) -> Result<Response<pb::ListRulesResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let rules = self.store.rules(&tenant).await.map_err(store_status)?;
        Ok(Response::new(pb::ListRulesResponse { rules: rules.iter().map(rule_to_pb).collect() }))
    }

    async fn list_alerts(
        &self,
        req: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let r = req.into_inner();
        let states: Vec<AlertState> = r
            .states
            .iter()
            .map(|s| match pb::AlertState::try_from(*s) {
                Ok(pb::AlertState::Firing) => Ok(AlertState::Firing),
                Ok(pb::AlertState::Acknowledged) => Ok(AlertState::Acknowledged),
                Ok(pb::AlertState::Resolved) => Ok(AlertState::Resolved),
                _ => Err(Status::invalid_argument(format!("states: {s} is not an alert state"))),
            })
            .collect::<Result<_, _>>()?;
        let kinds: Vec<&str> = r.kinds.iter().map(|k| kind_from_pb(*k)).collect::<Result<_, _>>()?;
        let min = severity_from_pb(r.min_severity);
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) as usize };
        let before = match r.page_token.split_once('.') {
            Some((at, id)) => {
                Some((at.parse::<i64>().map_err(|_| Status::invalid_argument("page_token"))?, id.to_string()))
            }
            None if r.page_token.is_empty() => None,
            None => return Err(Status::invalid_argument("page_token is not a token this service issued")),
        };
        let mut alerts = Vec::new();
        let mut cursor = before;
        // Kind and severity filters apply after the store's page; keep reading until full.
        loop {
            let page = self.store.alerts(&tenant, &states, limit, cursor.clone()).await.map_err(store_status)?;
            let done = page.len() < limit;
            cursor = page.last().map(|a| (a.updated_at, a.alert_id.clone()));
            alerts.extend(page.into_iter().filter(|a| {
                (kinds.is_empty() || kinds.contains(&a.kind.as_str())) && min.is_none_or(|m| a.severity >= m)
            }));
            if done || alerts.len() >= limit {
                break;
            }
        }
        let next = if alerts.len() > limit || (alerts.len() == limit && cursor.is_some()) {
            alerts.truncate(limit);
            alerts.last().map(|a| format!("{}.{}", a.updated_at, a.alert_id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: alerts.iter().map(|a| alert_to_pb(a, &[])).collect(),
            next_page_token: next,
        }))
    }

    async fn get_alert(&self, req: Request<pb::GetAlertRequest>) -> Result<Response<pb::Alert>, Status> {
        let tenant = self.tenant(&req).await?;
        let id = &req.get_ref().alert_id;
        let a = self.store.alert(&tenant, id).await.map_err(store_status)?;
        let a = a.ok_or_else(|| Status::not_found(format!("alert {id:?}")))?;
        let history = self.store.history(&a.alert_id).await.map_err(store_status)?;
        Ok(Response::new(alert_to_pb(&a, &history)))
    }

    async fn acknowledge_alert(
        &self,
        req: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let (meta, ext, r) = req.into_parts();
        self.act(Request::from_parts(meta, ext, (r.alert_id, r.by, r.note)), AlertState::Acknowledged).await
    }

    async fn resolve_alert(&self, req: Request<pb::ResolveAlertRequest>) -> Result<Response<pb::Alert>, Status> {
        let (meta, ext, r) = req.into_parts();
        self.act(Request::from_parts(meta, ext, (r.alert_id, r.by, r.note)), AlertState::Resolved).await
    }

    async fn create_silence(&self, req: Request<pb::CreateSilenceRequest>) -> Result<Response<pb::Silence>, Status> {
        let tenant = self.tenant(&req).await?;
        let s = req.into_inner().silence.ok_or_else(|| Status::invalid_argument("silence is required"))?;
        let now = now_ms();
        let silence = Silence {
            id: if s.silence_id.is_empty() { new_id("sil") } else { s.silence_id },
            matchers: s
                .matchers
                .into_iter()
                .map(|m| Matcher { label: m.label, value: m.value, regex: m.regex, negate: m.negate })
                .collect(),
            starts_at: ms(s.starts_at.as_ref()).unwrap_or(now),
            ends_at: ms(s.ends_at.as_ref()).ok_or_else(|| Status::invalid_argument("silence: ends_at is required"))?,
            created_by: s.created_by,
            comment: s.comment,
        };
        silence.validate().map_err(|e| Status::invalid_argument(format!("silence: {e}")))?;
        self.store.put_silence(&tenant, &silence).await.map_err(store_status)?;
        Ok(Response::new(silence_to_pb(&silence)))
    }

    async fn expire_silence(&self, req: Request<pb::ExpireSilenceRequest>) -> Result<Response<pb::Silence>, Status> {
        let tenant = self.tenant(&req).await?;
        let id = &req.get_ref().silence_id;
        let all = self.store.silences(&tenant, None).await.map_err(store_status)?;
        let mut s =
            all.into_iter().find(|s| &s.id == id).ok_or_else(|| Status::not_found(format!("silence {id:?}")))?;
        let now = now_ms();
        s.ends_at = s.ends_at.min(now);
        s.starts_at = s.starts_at.min(s.ends_at - 1);
        self.store.put_silence(&tenant, &s).await.map_err(store_status)?;
        Ok(Response::new(silence_to_pb(&s)))
    }

    async fn list_silences(
        &self,
        req: Request<pb::ListSilencesRequest>,
    ) -> Result<Response<pb::ListSilencesResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let active = (!req.get_ref().include_expired).then(now_ms);
        let list = self.store.silences(&tenant, active).await.map_err(store_status)?;
        Ok(Response::new(pb::ListSilencesResponse { silences: list.iter().map(silence_to_pb).collect() }))
    }

    async fn create_subscription(
        &self,
        req: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        use pb::subscription::Target as T;
        let tenant = self.tenant(&req).await?;
        let s = req.into_inner().subscription.ok_or_else(|| Status::invalid_argument("subscription is required"))?;
        let target = match s.target {
            Some(T::Webhook(w)) => {
                crate::ssrf::Guard::parse_url(&w.url).map_err(|e| Status::invalid_argument(e.to_string()))?;
                if w.secrets.is_empty() || w.secrets.len() > 2 {
                    return Err(Status::invalid_argument("webhook: one secret, or two while rotating"));
                }
                for secret in &w.secrets {
                    crate::webhook::decode_secret(secret)
                        .map_err(|e| Status::invalid_argument(format!("webhook: {e}")))?;
                }
                Target::Webhook { url: w.url, secrets: w.secrets }
            }
            Some(T::Kafka(k)) if !k.topic.is_empty() => Target::Kafka { topic: k.topic },
            Some(T::Kafka(_)) => return Err(Status::invalid_argument("kafka: topic is required")),
            Some(T::GrpcStream(_)) => Target::GrpcStream,
            None => return Err(Status::invalid_argument("subscription: a target is required")),
        };
        let duration =
            |d: Option<&prost_types::Duration>| d.map_or(0, |d| d.seconds * 1000 + d.nanos as i64 / 1_000_000);
        let grouping = match s.grouping {
            Some(g) if !matches!(target, Target::Webhook { .. }) => {
                return Err(Status::invalid_argument(format!(
                    "grouping applies to webhook subscriptions only (group_by {:?})",
                    g.group_by
                )));
            }
            Some(g) => {
                let g = crate::model::Grouping {
                    by: g.group_by,
                    wait_ms: duration(g.group_wait.as_ref()),
                    interval_ms: duration(g.group_interval.as_ref()),
                };
                g.validate().map_err(Status::invalid_argument)?;
                Some(g)
            }
            None => None,
        };
        let sub = Subscription {
            id: if s.subscription_id.is_empty() { new_id("sub") } else { s.subscription_id },
            name: s.name,
            filter: filter_from_pb(s.filter.as_ref())?,
            target,
            grouping,
        };
        self.store.put_subscription(&tenant, &sub, now_ms()).await.map_err(store_status)?;
        Ok(Response::new(subscription_to_pb(&sub, "")))
    }

    async fn delete_subscription(
        &self,
        req: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let id = &req.get_ref().subscription_id;
        if !self.store.delete_subscription(&tenant, id).await.map_err(store_status)? {
            return Err(Status::not_found(format!("subscription {id:?}")));
        }
        Ok(Response::new(pb::DeleteSubscriptionResponse {}))
    }

    async fn list_subscriptions(
        &self,
        req: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let list = self.store.subscriptions(&tenant).await.map_err(store_status)?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: list.iter().map(|(s, d)| subscription_to_pb(s, d)).collect(),
        }))
    }

    async fn list_dead_letters(
        &self,
        req: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let sub = Some(req.get_ref().subscription_id.as_str()).filter(|s| !s.is_empty());
        let list = self.store.dead_letters(&tenant, sub).await.map_err(store_status)?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: list
                .into_iter()
                .map(|d| pb::DeadLetter {
                    notification_id: d.notification_id,
                    subscription_id: d.subscription_id,
                    attempts: d.attempts,
                    last_error: d.last_error,
                    failed_at: Some(ts(d.failed_at)),
                })
                .collect(),
        }))
    }

    async fn replay_dead_letter(
        &self,
        req: Request<pb::ReplayDeadLetterRequest>,
    ) -> Result<Response<pb::ReplayDeadLetterResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let id = &req.get_ref().notification_id;
        if self.store.replay(&tenant, id, now_ms()).await.map_err(store_status)? == 0 {
            return Err(Status::not_found(format!("no dead letter for notification {id:?}")));
        }
        self.deliveries.notify_one();
        Ok(Response::new(pb::ReplayDeadLetterResponse {}))
    }

    type SubscribeStream = NotificationStream;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let tenant = self.tenant(&req).await?;
        let r = req.into_inner();
        let (sub, disabled) = self
            .store
            .subscription(&tenant, &r.subscription_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("subscription {:?}", r.subscription_id)))?;
        if sub.target != Target::GrpcStream {
            return Err(Status::failed_precondition("subscription's target is not a gRPC stream"));
        }
        if !disabled.is_empty() {
            return Err(Status::failed_precondition(format!("subscription disabled: {disabled}")));
        }
        let mut cursor = match r.cursor.as_str() {
            "" => self.store.last_seq().await.map_err(store_status)?,
            c => c.parse::<i64>().map_err(|_| Status::invalid_argument("cursor is not one this service issued"))?,
        };
        let (store, changed) = (self.store.clone(), self.log_changed.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::Notification, Status>>(64);
        tokio::spawn(async move {
            loop {
                // Register for the wake-up before reading, so a commit in between is not missed.
                let woken = changed.notified();
                let batch = match store.notifications_after(&tenant, cursor, 200).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                };
                for n in &batch {
                    cursor = n.seq;
                    if !n.silenced_by.is_empty() {
                        continue;
                    }
                    let alert = match stored_alert(n) {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    if sub.filter.accepts(&alert.facts()) && tx.send(Ok(notification_to_pb(n, &alert))).await.is_err() {
                        return; // the client went away
                    }
                }
                if batch.is_empty() {
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
