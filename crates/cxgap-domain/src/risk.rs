//! Churn risk and health from customer features: a logistic model whose coefficients are
//! configuration. Every risk comes with its drivers — each feature's contribution to the
//! log-odds — so a person can see why a customer is at risk.

use crate::customer::Features;
use crate::nps::NpsClass;
use serde::{Deserialize, Serialize};

/// Coefficients on features scaled to 0–1. The defaults are a documented prior, not a fit:
/// a satisfied promoter sits near 3% risk, a detractor with unresolved contacts, negative
/// comments and high effort above 95%. Tenants with churn labels should fit their own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RiskModel {
    pub intercept: f64,
    /// × (1 − decayed experience score)
    pub low_experience: f64,
    /// × min(1, fall in experience score per 30 days / 0.2)
    pub declining_trend: f64,
    /// × 1 when the latest NPS answer was a detractor
    pub detractor: f64,
    /// × 1 when the latest NPS answer was a promoter (negative: protective)
    pub promoter: f64,
    /// × decayed share of comments with negative sentiment
    pub negative_sentiment: f64,
    /// × min(1, decayed unresolved contacts / 3)
    pub unresolved_contacts: f64,
    /// × min(1, decayed contacts beyond the first / 3)
    pub repeat_contacts: f64,
    /// × (1 − (decayed CES − 1)/6)
    pub high_effort: f64,
    /// × min(1, decayed SLA breaches / 3)
    pub sla_breaches: f64,
    /// × min(1, perception gap at touched stages / 0.3)
    pub perception_gap: f64,
    /// × min(1, days since last interaction / 90)
    pub silence: f64,
    /// Half-life of the feature decay, in days.
    pub half_life_days: f64,
}

impl Default for RiskModel {
    fn default() -> Self {
        RiskModel {
            intercept: -3.0,
            low_experience: 3.0,
            declining_trend: 1.5,
            detractor: 1.2,
            promoter: -1.0,
            negative_sentiment: 1.2,
            unresolved_contacts: 1.3,
            repeat_contacts: 0.8,
            high_effort: 1.0,
            sla_breaches: 0.8,
            perception_gap: 0.7,
            silence: 1.0,
            half_life_days: 30.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Driver {
    pub feature: &'static str,
    /// The scaled feature value, 0–1.
    pub value: f64,
    /// coefficient × value: the feature's share of the log-odds. Positive raises risk.
    pub contribution: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RiskAssessment {
    /// Probability of churn, 0–1.
    pub risk: f64,
    /// 100 × (1 − risk): the same judgement on the scale CX teams are used to.
    pub health: f64,
    /// Largest absolute contribution first.
    pub drivers: Vec<Driver>,
}

impl RiskModel {
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            self.intercept,
            self.low_experience,
            self.declining_trend,
            self.detractor,
            self.promoter,
            self.negative_sentiment,
            self.unresolved_contacts,
            self.repeat_contacts,
            self.high_effort,
            self.sla_breaches,
            self.perception_gap,
            self.silence,
        ];
        if all.iter().any(|c| !c.is_finite()) {
            return Err("risk model coefficients must be finite numbers".into());
        }
        if !(self.half_life_days.is_finite() && self.half_life_days > 0.0) {
            return Err("risk model half_life_days must be a positive number".into());
        }
        Ok(())
    }

    pub fn assess(&self, f: &Features) -> RiskAssessment {
        let cap = |x: f64| x.clamp(0.0, 1.0);
        let mut drivers = Vec::with_capacity(11);
        let mut push = |feature, value: Option<f64>, coef: f64| {
            if let Some(v) = value {
                drivers.push(Driver { feature, value: v, contribution: coef * v });
            }
        };
        push("low_experience", f.experience.map(|e| cap(1.0 - e)), self.low_experience);
        push("declining_trend", f.trend_per_30d.map(|t| cap(-t / 0.2)), self.declining_trend);
        push("detractor", f.last_nps.map(|c| (c == NpsClass::Detractor) as u8 as f64), self.detractor);
        push("promoter", f.last_nps.map(|c| (c == NpsClass::Promoter) as u8 as f64), self.promoter);
        push("negative_sentiment", f.negative_sentiment_share.map(cap), self.negative_sentiment);
        push("unresolved_contacts", Some(cap(f.unresolved_contacts / 3.0)), self.unresolved_contacts);
        push("repeat_contacts", Some(cap(f.repeat_contacts / 3.0)), self.repeat_contacts);
        push("high_effort", f.effort.map(|c| cap(1.0 - (c - 1.0) / 6.0)), self.high_effort);
        push("sla_breaches", Some(cap(f.sla_breaches / 3.0)), self.sla_breaches);
        push("perception_gap", f.perception_gap.map(|g| cap(g / 0.3)), self.perception_gap);
        push("silence", Some(cap(f.silence_days / 90.0)), self.silence);
        let z = self.intercept + drivers.iter().map(|d| d.contribution).sum::<f64>();
        let risk = 1.0 / (1.0 + (-z).exp());
        drivers.retain(|d| d.contribution != 0.0);
        drivers.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()).then(a.feature.cmp(b.feature)));
        RiskAssessment { risk, health: 100.0 * (1.0 - risk), drivers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn happy() -> Features {
        Features {
            experience: Some(0.9),
            trend_per_30d: Some(0.0),
            last_nps: Some(NpsClass::Promoter),
            negative_sentiment_share: Some(0.0),
            unresolved_contacts: 0.0,
            repeat_contacts: 0.0,
            effort: Some(6.5),
            sla_breaches: 0.0,
            perception_gap: Some(0.0),
            silence_days: 3.0,
        }
    }

    #[test]
    fn happy_and_angry_customers_land_where_documented() {
        let m = RiskModel::default();
        let h = m.assess(&happy());
        assert!(h.risk < 0.05, "{h:?}");
        let angry = Features {
            experience: Some(0.2),
            trend_per_30d: Some(-0.3),
            last_nps: Some(NpsClass::Detractor),
            negative_sentiment_share: Some(0.8),
            unresolved_contacts: 2.0,
            repeat_contacts: 3.0,
            effort: Some(2.0),
            sla_breaches: 2.0,
            ..happy()
        };
        let a = m.assess(&angry);
        assert!(a.risk > 0.95, "{a:?}");
        assert!((a.health - 100.0 * (1.0 - a.risk)).abs() < 1e-12);
    }

    #[test]
    fn drivers_explain_the_log_odds() {
        let m = RiskModel::default();
        let f = Features { last_nps: Some(NpsClass::Detractor), unresolved_contacts: 3.0, ..happy() };
        let a = m.assess(&f);
        let z: f64 = m.intercept + a.drivers.iter().map(|d| d.contribution).sum::<f64>();
        assert!((1.0 / (1.0 + (-z).exp()) - a.risk).abs() < 1e-12);
        assert_eq!(a.drivers[0].feature, "unresolved_contacts");
        assert!(a.drivers.windows(2).all(|w| w[0].contribution.abs() >= w[1].contribution.abs()));
    }

    #[test]
    fn missing_data_is_not_imputed() {
        let f = Features {
            experience: None,
            trend_per_30d: None,
            last_nps: None,
            negative_sentiment_share: None,
            effort: None,
            perception_gap: None,
            ..happy()
        };
        let a = RiskModel::default().assess(&f);
        assert!(a.drivers.iter().all(|d| d.feature == "silence"), "{a:?}");
    }

    #[test]
    fn bad_config_is_named() {
        let m = RiskModel { half_life_days: 0.0, ..Default::default() };
        assert!(m.validate().unwrap_err().contains("half_life_days"));
    }
}
