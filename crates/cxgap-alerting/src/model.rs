//! Rules, subscriptions and silences as tenants write them (JSON in the database, YAML in
//! rule files, protobuf on the API), with their validation and matching.

use cxgap_domain::report::Metric;
use cxgap_domain::rules::{
    HotAlert, MetricWorsening, PerceptionGapBound, RiskJump, RiskThreshold, Severity, SlaBreachSurge,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a rule watches. Scopes name the subjects of aggregate rules: `touchpoint`,
/// `journey_stage`, `channel`, `segment` (every attribute) or `segment:KEY`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleParams {
    RiskThreshold(RiskThreshold),
    RiskJump(RiskJump),
    HotAlert(HotAlert),
    MetricWorsening { worsening: MetricWorsening, window_days: u32, scope: String },
    SlaBreachSurge { surge: SlaBreachSurge, window_days: u32, scope: String },
    PerceptionGap(PerceptionGapBound),
}

impl RuleParams {
    pub fn kind(&self) -> &'static str {
        match self {
            RuleParams::RiskThreshold(_) => "risk_threshold",
            RuleParams::RiskJump(_) => "risk_jump",
            RuleParams::HotAlert(_) => "hot_alert",
            RuleParams::MetricWorsening { .. } => "metric_worsening",
            RuleParams::SlaBreachSurge { .. } => "sla_breach_surge",
            RuleParams::PerceptionGap(_) => "perception_gap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub severity: Severity,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(flatten)]
    pub params: RuleParams,
}

fn yes() -> bool {
    true
}

const SCOPES: &[&str] = &["touchpoint", "journey_stage", "channel", "segment"];

fn check_scope(scope: &str) -> Result<(), String> {
    let base = scope.split_once(':').map_or(scope, |(b, _)| b);
    if !SCOPES.contains(&base) || (scope.contains(':') && base != "segment") {
        return Err(format!("scope {scope:?} is not touchpoint, journey_stage, channel, segment or segment:KEY"));
    }
    Ok(())
}

fn check_window(days: u32) -> Result<(), String> {
    if !cxgap_domain::signals::AGGREGATE_WINDOW_DAYS.contains(&days) {
        return Err(format!(
            "window_days {days} is not one analytics reports ({:?})",
            cxgap_domain::signals::AGGREGATE_WINDOW_DAYS
        ));
    }
    Ok(())
}

fn check_alpha(alpha: f64) -> Result<(), String> {
    if !(alpha > 0.0 && alpha < 0.5) {
        return Err(format!("alpha {alpha} must be between 0 and 0.5"));
    }
    Ok(())
}

impl Rule {
    /// Every problem with the rule, each naming its field.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !id_ok {
            errors.push(format!("id {:?} must be 1–64 letters, digits, '-' or '_'", self.id));
        }
        if self.name.trim().is_empty() || self.name.len() > 200 {
            errors.push("name must be 1–200 characters".to_string());
        }
        let params = match &self.params {
            RuleParams::RiskThreshold(r) => r.validate(),
            RuleParams::RiskJump(r) => {
                if !(r.delta > 0.0 && r.delta <= 1.0) {
                    Err(format!("delta {} must be in (0, 1]", r.delta))
                } else if r.within_ms <= 0 {
                    Err("within_ms must be positive".into())
                } else {
                    Ok(())
                }
            }
            RuleParams::HotAlert(h) => {
                if h.min_customer_value < 0.0 || h.max_nps > 10 || !(-1.0..=1.0).contains(&h.max_sentiment) {
                    Err("hot alert needs min_customer_value ≥ 0, max_nps 0–10, max_sentiment −1..1".into())
                } else {
                    Ok(())
                }
            }
            RuleParams::MetricWorsening { worsening, window_days, scope } => check_scope(scope)
                .and(check_window(*window_days))
                .and(check_alpha(worsening.alpha))
                .and(if worsening.min_n < 2 { Err("min_n must be at least 2".into()) } else { Ok(()) }),
            RuleParams::SlaBreachSurge { surge, window_days, scope } => {
                check_scope(scope).and(check_window(*window_days)).and(check_alpha(surge.alpha)).and(
                    if (0.0..=1.0).contains(&surge.min_share) { Ok(()) } else { Err("min_share must be 0–1".into()) },
                )
            }
            RuleParams::PerceptionGap(p) => {
                if (0.0..=1.0).contains(&p.bound) {
                    Ok(())
                } else {
                    Err("bound must be 0–1".into())
                }
            }
        };
        if let Err(e) = params {
            errors.push(e);
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }
}

/// The rules a new tenant starts with: sensible thresholds a CX team can tune.
pub fn default_rules() -> Vec<Rule> {
    let rule = |id: &str, name: &str, severity, params| Rule {
        id: id.into(),
        name: name.into(),
        severity,
        enabled: true,
        params,
    };
    let worsening = MetricWorsening { metric: Metric::Nps, min_n: 30, alpha: 0.05, min_difference: 10.0 };
    vec![
        rule(
            "churn-risk-high",
            "Customer churn risk high",
            Severity::Warning,
            RuleParams::RiskThreshold(RiskThreshold { fire_at: 0.7, clear_at: 0.6 }),
        ),
        rule(
            "churn-risk-jump",
            "Customer churn risk jumped",
            Severity::Warning,
            RuleParams::RiskJump(RiskJump { delta: 0.25, within_ms: 7 * 86_400_000 }),
        ),
        rule(
            "hot-detractor",
            "High-value detractor with a negative comment",
            Severity::Critical,
            RuleParams::HotAlert(HotAlert::default()),
        ),
        rule(
            "nps-worse-touchpoint",
            "Touchpoint NPS worsened significantly",
            Severity::Warning,
            RuleParams::MetricWorsening { worsening, window_days: 30, scope: "touchpoint".into() },
        ),
        rule(
            "nps-worse-segment",
            "Segment NPS worsened significantly",
            Severity::Warning,
            RuleParams::MetricWorsening { worsening, window_days: 30, scope: "segment".into() },
        ),
        rule(
            "sla-breach-surge",
            "SLA breaches surged at a touchpoint",
            Severity::Warning,
            RuleParams::SlaBreachSurge {
                surge: SlaBreachSurge { min_n: 30, alpha: 0.05, min_share: 0.2 },
                window_days: 7,
                scope: "touchpoint".into(),
            },
        ),
        rule(
            "perception-gap",
            "Management overrates a touchpoint",
            Severity::Info,
            RuleParams::PerceptionGap(PerceptionGapBound { bound: 0.2, min_n: 20 }),
        ),
    ]
}

/// Label matcher of a silence, as in Alertmanager: equality or a fully anchored regular
/// expression, optionally negated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    pub label: String,
    pub value: String,
    #[serde(default)]
    pub regex: bool,
    #[serde(default)]
    pub negate: bool,
}

impl Matcher {
    pub fn validate(&self) -> Result<(), String> {
        if self.label.is_empty() {
            return Err("matcher label must not be empty".into());
        }
        if self.regex {
            regex::Regex::new(&format!("^(?:{})$", self.value))
                .map_err(|e| format!("matcher {}: {:?} is not a regular expression: {e}", self.label, self.value))?;
        }
        Ok(())
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.label).map_or("", String::as_str);
        let hit = if self.regex {
            regex::Regex::new(&format!("^(?:{})$", self.value)).is_ok_and(|r| r.is_match(v))
        } else {
            v == self.value
        };
        hit != self.negate
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    pub fn validate(&self) -> Result<(), String> {
        if self.matchers.is_empty() {
            return Err("a silence needs at least one matcher".into());
        }
        for m in &self.matchers {
            m.validate()?;
        }
        if self.ends_at <= self.starts_at {
            return Err("ends_at must be after starts_at".into());
        }
        Ok(())
    }

    pub fn mutes(&self, labels: &BTreeMap<String, String>, now: i64) -> bool {
        self.starts_at <= now && now < self.ends_at && self.matchers.iter().all(|m| m.matches(labels))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Rule kinds (`risk_threshold`, …); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Segment attributes the alert's customer or subject must have.
    #[serde(default)]
    pub segment: BTreeMap<String, String>,
    #[serde(default)]
    pub min_customer_value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    Webhook { url: String, secrets: Vec<String> },
    Kafka { topic: String },
    GrpcStream,
}

/// How a webhook subscription batches notifications (Alertmanager's group_by,
/// group_wait and group_interval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grouping {
    pub by: Vec<String>,
    pub wait_ms: i64,
    pub interval_ms: i64,
}

impl Grouping {
    /// The group an alert belongs to: its values of the `by` labels.
    pub fn key(&self, labels: &BTreeMap<String, String>) -> String {
        let parts: Vec<String> =
            self.by.iter().map(|l| format!("{l}={}", labels.get(l).map_or("", String::as_str))).collect();
        // Never empty, so a grouped delivery is told apart from an ungrouped one.
        format!("[{}]", parts.join(","))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.wait_ms < 0 || self.interval_ms < 0 || self.wait_ms > 3_600_000 || self.interval_ms > 86_400_000 {
            return Err("grouping: group_wait must be 0–1 h and group_interval 0–24 h".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub filter: Filter,
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grouping: Option<Grouping>,
}

/// What a subscription filter sees of an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFacts<'a> {
    pub kind: &'a str,
    pub severity: Severity,
    pub labels: &'a BTreeMap<String, String>,
    pub customer_value: Option<f64>,
}

impl Filter {
    pub fn accepts(&self, a: &AlertFacts<'_>) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == a.kind))
            && self.min_severity.is_none_or(|m| a.severity >= m)
            && self.segment.iter().all(|(k, v)| a.labels.get(&format!("segment.{k}")) == Some(v))
            && (self.min_customer_value <= 0.0 || a.customer_value.unwrap_or(0.0) >= self.min_customer_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_are_valid_and_round_trip_as_json() {
        for r in default_rules() {
            r.validate().unwrap();
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), r, "{json}");
        }
        let mut bad = default_rules().remove(3);
        bad.id = "no spaces".into();
        if let RuleParams::MetricWorsening { scope, .. } = &mut bad.params {
            *scope = "region".into();
        }
        let e = bad.validate().unwrap_err();
        assert!(e.contains("id \"no spaces\"") && e.contains("scope \"region\""), "{e}");
    }

    #[test]
    fn silences_match_like_alertmanager() {
        let labels: BTreeMap<String, String> = [("rule", "churn-risk-high"), ("segment.tier", "gold")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let m = |label: &str, value: &str, regex, negate| Matcher {
            label: label.into(),
            value: value.into(),
            regex,
            negate,
        };
        let s = Silence {
            id: "s1".into(),
            matchers: vec![m("rule", "churn-.*", true, false), m("segment.tier", "silver", false, true)],
            starts_at: 10,
            ends_at: 20,
            created_by: "ops".into(),
            comment: String::new(),
        };
        assert!(s.mutes(&labels, 10) && !s.mutes(&labels, 20) && !s.mutes(&labels, 9));
        assert!(!m("rule", "churn", true, false).matches(&labels), "regexes are anchored");
        assert!(m("missing", "", false, false).matches(&labels), "a missing label is the empty string");
        assert!(m("rule", "(", true, false).validate().is_err());
    }

    #[test]
    fn filters_select_by_kind_severity_segment_and_value() {
        let labels: BTreeMap<String, String> = [("segment.tier".to_string(), "gold".to_string())].into();
        let facts =
            AlertFacts { kind: "hot_alert", severity: Severity::Critical, labels: &labels, customer_value: Some(5e4) };
        assert!(Filter::default().accepts(&facts));
        let f = Filter {
            kinds: vec!["hot_alert".into()],
            min_severity: Some(Severity::Warning),
            segment: [("tier".to_string(), "gold".to_string())].into(),
            min_customer_value: 10_000.0,
        };
        assert!(f.accepts(&facts));
        assert!(!Filter { min_customer_value: 1e6, ..f.clone() }.accepts(&facts));
        assert!(!Filter { kinds: vec!["risk_jump".into()], ..f.clone() }.accepts(&facts));
        assert!(!Filter { segment: [("tier".to_string(), "silver".to_string())].into(), ..f }.accepts(&facts));
    }
}
