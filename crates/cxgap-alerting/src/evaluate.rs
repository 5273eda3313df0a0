//! A signal against a tenant's rules: which alert subjects it speaks about, and for each
//! whether the rule's condition holds. Pure: the caller supplies whether each alert is
//! currently open (for hysteresis) and the customer's earlier risk points (for jumps).

use crate::model::{Rule, RuleParams};
use cxgap_domain::aggregate::{CELL_ROW_WIDTH, CellAgg};
use cxgap_domain::report::PerceptionGap;
use cxgap_domain::rules::{Severity, Verdict};
use cxgap_domain::stats::Estimate;
use cxgap_domain::{Instrument, JourneyStage, Timestamp};
use cxgap_proto::signals as pb;
use std::collections::BTreeMap;

/// One rule's verdict about one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub rule_id: String,
    pub rule_name: String,
    pub kind: &'static str,
    pub severity: Severity,
    /// "customer:ID", "touchpoint:NAME", "segment:KEY=VALUE", …
    pub subject: String,
    pub verdict: Verdict,
    pub labels: BTreeMap<String, String>,
    pub customer_value: Option<f64>,
}

/// What the evaluation needs to know beyond the signal.
pub trait Context {
    /// Whether the alert of `rule_id` about `subject` is open (firing or acknowledged).
    fn is_open(&self, rule_id: &str, subject: &str) -> bool;
    /// The customer's earlier (time, risk) points.
    fn risk_history(&self, customer: &str) -> Vec<(Timestamp, f64)>;
}

fn row(v: &[i64]) -> Option<CellAgg> {
    let arr: [i64; CELL_ROW_WIDTH] = v.try_into().ok()?;
    Some(CellAgg::from_row(&arr))
}

fn estimate(e: &cxgap_proto::common::Estimate) -> Estimate {
    Estimate { value: e.value, n: e.n, lower: e.lower, upper: e.upper }
}

pub(crate) fn subject_kind(k: i32) -> Option<&'static str> {
    match pb::SubjectKind::try_from(k).ok()? {
        pb::SubjectKind::Touchpoint => Some("touchpoint"),
        pb::SubjectKind::JourneyStage => Some("journey_stage"),
        pb::SubjectKind::Channel => Some("channel"),
        pb::SubjectKind::Segment => Some("segment"),
        pb::SubjectKind::Unspecified => None,
    }
}

/// Whether an aggregate rule's scope covers a subject (`segment:tier` covers `tier=gold`).
fn in_scope(scope: &str, kind: &str, subject: &str) -> bool {
    match scope.split_once(':') {
        Some(("segment", key)) => kind == "segment" && subject.split_once('=').is_some_and(|(k, _)| k == key),
        _ => scope == kind,
    }
}

/// The touchpoint of a customer's latest feedback that names one: the `touchpoint` label
/// of the customer's alerts.
pub fn feedback_touchpoint(c: &pb::CustomerRiskChanged) -> Option<&str> {
    c.feedback.iter().rev().map(|n| n.touchpoint.as_str()).find(|t| !t.is_empty())
}

pub fn evaluate(rules: &[Rule], signal: &pb::Signal, ctx: &dyn Context) -> Vec<Evaluation> {
    let mut out = Vec::new();
    let enabled = rules.iter().filter(|r| r.enabled);
    match &signal.body {
        Some(pb::signal::Body::Customer(c)) => {
            let subject = format!("customer:{}", c.customer_id);
            let mut labels: BTreeMap<String, String> =
                c.segment.iter().map(|(k, v)| (format!("segment.{k}"), v.clone())).collect();
            labels.insert("customer".into(), c.customer_id.clone());
            // Where the latest feedback happened: lets a touchpoint-wide alert inhibit it.
            if let Some(t) = feedback_touchpoint(c) {
                labels.insert("touchpoint".into(), t.to_string());
            }
            let at = signal.emitted_at.as_ref().map_or(0, |t| t.seconds * 1000 + t.nanos as i64 / 1_000_000);
            for rule in enabled {
                let verdict = match &rule.params {
                    RuleParams::RiskThreshold(t) => Some(t.evaluate(ctx.is_open(&rule.id, &subject), c.risk)),
                    RuleParams::RiskJump(j) => {
                        Some(j.evaluate(&ctx.risk_history(&c.customer_id), Timestamp(at), c.risk))
                    }
                    RuleParams::HotAlert(h) => {
                        // An event, not a state: it fires on hot feedback and stays open
                        // until a person acknowledges or resolves it.
                        let hot = c
                            .feedback
                            .iter()
                            .find(|n| h.is_hot(c.customer_value, n.nps.map(|x| x.min(10) as u8), n.sentiment));
                        hot.map(|n| Verdict {
                            firing: true,
                            summary: format!(
                                "customer {} (value {:.0}) gave NPS {} at {}: \"{}\"",
                                c.customer_id,
                                c.customer_value.unwrap_or(0.0),
                                n.nps.map_or("-".into(), |x| x.to_string()),
                                if n.touchpoint.is_empty() { "an unnamed touchpoint" } else { &n.touchpoint },
                                n.comment.chars().take(200).collect::<String>()
                            ),
                        })
                    }
                    _ => None,
                };
                if let Some(verdict) = verdict {
                    out.push(Evaluation {
                        rule_id: rule.id.clone(),
                        rule_name: rule.name.clone(),
                        kind: rule.params.kind(),
                        severity: rule.severity,
                        subject: subject.clone(),
                        verdict,
                        labels: labels.clone(),
                        customer_value: c.customer_value,
                    });
                }
            }
        }
        Some(pb::signal::Body::Aggregate(a)) => {
            let Some(kind) = subject_kind(a.subject_kind) else { return out };
            let (Some(current), Some(previous)) = (row(&a.current), row(&a.previous)) else { return out };
            let subject = format!("{kind}:{}", a.subject);
            let mut labels = BTreeMap::from([(kind.to_string(), a.subject.clone())]);
            if let Some((k, v)) = a.subject.split_once('=').filter(|_| kind == "segment") {
                labels.insert(format!("segment.{k}"), v.to_string());
            }
            for rule in enabled {
                let found: Vec<(String, Verdict)> = match &rule.params {
                    RuleParams::MetricWorsening { worsening, window_days, scope }
                        if *window_days == a.window_days && in_scope(scope, kind, &a.subject) =>
                    {
                        worsening.evaluate(&current, &previous).map(|(v, _)| (subject.clone(), v)).into_iter().collect()
                    }
                    RuleParams::SlaBreachSurge { surge, window_days, scope }
                        if *window_days == a.window_days && in_scope(scope, kind, &a.subject) =>
                    {
                        surge.evaluate(&current, &previous).map(|(v, _)| (subject.clone(), v)).into_iter().collect()
                    }
                    RuleParams::PerceptionGap(bound) if kind == "touchpoint" && a.window_days == 30 => a
                        .perception
                        .iter()
                        .filter_map(|f| {
                            let g = PerceptionGap {
                                touchpoint: a.subject.clone(),
                                journey_stage: JourneyStage::ALL
                                    .get((f.journey_stage - 1).max(0) as usize)
                                    .copied()
                                    .filter(|_| f.journey_stage > 0),
                                instrument: Instrument::parse(&f.instrument)?,
                                assessors: 0,
                                internal: f.internal,
                                internal_native: 0.0,
                                customer: f.customer.as_ref().map(estimate),
                                customer_native: None,
                                gap: f.gap.as_ref().map(estimate),
                            };
                            let v = bound.evaluate(&g)?;
                            Some((format!("{subject}:{}", f.instrument), v))
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                for (subject, verdict) in found {
                    out.push(Evaluation {
                        rule_id: rule.id.clone(),
                        rule_name: rule.name.clone(),
                        kind: rule.params.kind(),
                        severity: rule.severity,
                        subject,
                        verdict,
                        labels: labels.clone(),
                        customer_value: None,
                    });
                }
            }
        }
        None => {}
    }
    for e in &mut out {
        e.labels.insert("rule".into(), e.rule_id.clone());
        e.labels.insert("kind".into(), e.kind.into());
        e.labels.insert("severity".into(), format!("{:?}", e.severity).to_lowercase());
        e.labels.insert("subject".into(), e.subject.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::default_rules;

    struct Ctx {
        open: Vec<(String, String)>,
        history: Vec<(Timestamp, f64)>,
    }

    impl Context for Ctx {
        fn is_open(&self, rule_id: &str, subject: &str) -> bool {
            self.open.iter().any(|(r, s)| r == rule_id && s == subject)
        }
        fn risk_history(&self, _customer: &str) -> Vec<(Timestamp, f64)> {
            self.history.clone()
        }
    }

    fn customer(risk: f64, nps: u32, sentiment: f64, value: f64) -> pb::Signal {
        pb::Signal {
            signal_id: "s".into(),
            tenant_id: "t".into(),
            emitted_at: Some(prost_types::Timestamp { seconds: 1_000_000, nanos: 0 }),
            body: Some(pb::signal::Body::Customer(pb::CustomerRiskChanged {
                customer_id: "c1".into(),
                risk,
                customer_value: Some(value),
                segment: [("tier".to_string(), "gold".to_string())].into(),
                feedback: vec![pb::FeedbackNote {
                    event_id: "e1".into(),
                    nps: Some(nps),
                    sentiment: Some(sentiment),
                    comment: "awful, nobody called back".into(),
                    touchpoint: "helpline".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        }
    }

    #[test]
    fn customer_signals_meet_threshold_jump_and_hot_rules() {
        let rules = default_rules();
        let quiet = Ctx { open: vec![], history: vec![(Timestamp(999_000_000), 0.3)] };
        let e = evaluate(&rules, &customer(0.65, 2, -0.7, 50_000.0), &quiet);
        let by_rule = |id: &str| e.iter().find(|x| x.rule_id == id).map(|x| x.verdict.firing);
        assert_eq!(by_rule("churn-risk-high"), Some(false), "0.65 is below fire_at 0.7");
        assert_eq!(by_rule("churn-risk-jump"), Some(true), "0.3 → 0.65 within the week");
        assert_eq!(by_rule("hot-detractor"), Some(true));
        assert_eq!(e[0].labels["segment.tier"], "gold");
        assert_eq!(e[0].subject, "customer:c1");
        // Hysteresis: once open, 0.65 keeps it open (clears below 0.6).
        let open = Ctx { open: vec![("churn-risk-high".into(), "customer:c1".into())], history: vec![] };
        let e = evaluate(&rules, &customer(0.65, 9, 0.5, 50_000.0), &open);
        assert!(e.iter().find(|x| x.rule_id == "churn-risk-high").unwrap().verdict.firing);
        assert!(e.iter().all(|x| x.rule_id != "hot-detractor"), "no verdict without hot feedback");
    }

    #[test]
    fn aggregate_signals_meet_their_scoped_rules_only() {
        use cxgap_domain::aggregate::CellAgg;
        let mut cur = CellAgg::default();
        let mut prev = CellAgg::default();
        cur.nps.detractors = 60;
        cur.nps.promoters = 10;
        prev.nps.promoters = 60;
        prev.nps.detractors = 10;
        cur.events = 70;
        prev.events = 70;
        let signal = |kind: pb::SubjectKind, subject: &str, days: u32| pb::Signal {
            body: Some(pb::signal::Body::Aggregate(pb::AggregateChanged {
                subject_kind: kind as i32,
                subject: subject.into(),
                window_days: days,
                current: cur.to_row().unwrap().to_vec(),
                previous: prev.to_row().unwrap().to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let ctx = Ctx { open: vec![], history: vec![] };
        let e = evaluate(&default_rules(), &signal(pb::SubjectKind::Touchpoint, "helpline", 30), &ctx);
        assert_eq!(e.len(), 1);
        assert!(e[0].verdict.firing && e[0].rule_id == "nps-worse-touchpoint" && e[0].subject == "touchpoint:helpline");
        let e = evaluate(&default_rules(), &signal(pb::SubjectKind::Segment, "tier=gold", 30), &ctx);
        assert_eq!((e.len(), e[0].labels["segment.tier"].as_str()), (1, "gold"));
        assert!(evaluate(&default_rules(), &signal(pb::SubjectKind::Touchpoint, "helpline", 7), &ctx).is_empty());
        assert!(evaluate(&default_rules(), &signal(pb::SubjectKind::Channel, "PHONE", 30), &ctx).is_empty());
    }
}
