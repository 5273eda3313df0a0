//! Pure evaluation of the alert rule kinds of ARCHITECTURE §5. The alerting service owns
//! state and lifecycle; here each rule only answers "does the condition hold, and why".

use crate::aggregate::CellAgg;
use crate::calendar::Timestamp;
use crate::customer::stable_hash;
use crate::model::FeedbackEvent;
use crate::report::Metric;
use crate::stats::{Comparison, compare_proportions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// What a rule said about one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub firing: bool,
    pub summary: String,
}

impl Verdict {
    fn new(firing: bool, summary: String) -> Verdict {
        Verdict { firing, summary }
    }
}

/// Identity of an alert: a condition that stays true stays one alert. Hex of a stable
/// 64-bit hash of the length-prefixed parts, so ("ab","c") and ("a","bc") differ.
pub fn fingerprint(tenant: &str, rule_id: &str, subject: &str) -> String {
    let mut buf = Vec::with_capacity(tenant.len() + rule_id.len() + subject.len() + 12);
    for part in [tenant, rule_id, subject] {
        buf.extend_from_slice(&(part.len() as u32).to_be_bytes());
        buf.extend_from_slice(part.as_bytes());
    }
    format!("{:016x}", stable_hash(&buf))
}

/// Fires when risk reaches `fire_at`; once firing, clears only below `clear_at`, so a risk
/// hovering at the threshold does not flap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RiskThreshold {
    pub fire_at: f64,
    pub clear_at: f64,
}

impl RiskThreshold {
    pub fn validate(&self) -> Result<(), String> {
        let ok = (0.0..=1.0).contains(&self.fire_at) && (0.0..=1.0).contains(&self.clear_at);
        if !ok || self.clear_at > self.fire_at {
            return Err("risk threshold needs 0 ≤ clear_at ≤ fire_at ≤ 1".into());
        }
        Ok(())
    }

    pub fn evaluate(&self, was_firing: bool, risk: f64) -> Verdict {
        let firing = if was_firing { risk >= self.clear_at } else { risk >= self.fire_at };
        Verdict::new(
            firing,
            format!(
                "churn risk {:.0}% (fires at {:.0}%, clears below {:.0}%)",
                risk * 100.0,
                self.fire_at * 100.0,
                self.clear_at * 100.0
            ),
        )
    }
}

/// Fires when risk rose by at least `delta` above its lowest point within `within_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RiskJump {
    pub delta: f64,
    pub within_ms: i64,
}

impl RiskJump {
    /// `history` holds earlier (time, risk) points in any order.
    pub fn evaluate(&self, history: &[(Timestamp, f64)], now: Timestamp, risk: f64) -> Verdict {
        let low = history
            .iter()
            .filter(|(t, _)| t.0 <= now.0 && now.0 - t.0 <= self.within_ms)
            .map(|(_, r)| *r)
            .fold(f64::INFINITY, f64::min);
        let rise = if low.is_finite() { risk - low } else { 0.0 };
        Verdict::new(
            rise >= self.delta,
            format!(
                "churn risk rose {:.0} points to {:.0}% within {} h",
                rise * 100.0,
                risk * 100.0,
                self.within_ms / 3_600_000
            ),
        )
    }
}

/// How far out of time order a customer's risk signals may arrive and still be judged
/// against every point that could be their window's lowest. A signal's time is when
/// analytics emitted it, so signals of one customer come out of order only when the
/// analytics instance that owns its partition changes and the clocks of the two differ;
/// five minutes is far more skew than NTP leaves, and costs only the points of the last
/// five minutes kept whole.
pub const RISK_LATENESS_MS: i64 = 5 * 60_000;

/// Of a customer's risk points, the ones that can still be the lowest in the window of a
/// signal at or after `lateness_ms` before the last of them (as [`RiskJump`] looks for).
/// A point with a later point at or below it, itself at least `lateness_ms` older than
/// the last point, never is: that later point is in every such window the first is in.
/// Points within `lateness_ms` of the last are all kept, since a late signal can fall
/// between any two of them. What is left rises with time before that, so it stays short
/// whatever the number of points; the rest can be forgotten. Returns the times of the
/// points to keep; `points` in any order, one per time.
pub fn window_low_candidates(points: &[(Timestamp, f64)], lateness_ms: i64) -> Vec<Timestamp> {
    let mut by_time: Vec<&(Timestamp, f64)> = points.iter().collect();
    by_time.sort_by_key(|p| std::cmp::Reverse(p.0));
    let Some(last) = by_time.first().map(|p| p.0.0) else { return Vec::new() };
    let settled = last.saturating_sub(lateness_ms.max(0));
    // The lowest risk among the points already passed (later ones) that are settled.
    let mut lowest_later = f64::INFINITY;
    let mut keep = Vec::new();
    for &(t, r) in by_time {
        if t.0 > settled || r < lowest_later {
            keep.push(t);
        }
        if t.0 <= settled {
            lowest_later = lowest_later.min(r);
        }
    }
    keep.reverse();
    keep
}

/// A high-value detractor who also left a negative comment: call them today.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HotAlert {
    pub min_customer_value: f64,
    pub max_nps: u8,
    pub max_sentiment: f64,
}

impl Default for HotAlert {
    fn default() -> Self {
        HotAlert { min_customer_value: 10_000.0, max_nps: 6, max_sentiment: -0.3 }
    }
}

impl HotAlert {
    /// Whether one piece of feedback is hot: value, NPS answer and comment sentiment.
    pub fn is_hot(&self, customer_value: Option<f64>, nps: Option<u8>, sentiment: Option<f64>) -> bool {
        customer_value.unwrap_or(0.0) >= self.min_customer_value
            && nps.is_some_and(|n| n <= self.max_nps)
            && sentiment.is_some_and(|s| s <= self.max_sentiment)
    }

    /// `sentiment` is the comment's compound score, if it has a comment.
    pub fn evaluate(&self, ev: &FeedbackEvent, sentiment: Option<f64>) -> Verdict {
        let value = ev.customer_value.unwrap_or(0.0);
        let firing = self.is_hot(ev.customer_value, ev.nps, sentiment);
        Verdict::new(
            firing,
            format!(
                "customer {} (value {value:.0}) gave NPS {} with a negative comment at {}",
                ev.customer_id,
                ev.nps.map_or("-".into(), |n| n.to_string()),
                ev.touchpoint.as_deref().unwrap_or(ev.journey_stage.as_str())
            ),
        )
    }
}

/// A segment's or touchpoint's metric worsened significantly, window over window. No
/// verdict on thin data: both windows need `min_n` responses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricWorsening {
    pub metric: Metric,
    pub min_n: u64,
    pub alpha: f64,
    /// The smallest worsening worth an alert, in the metric's unit.
    pub min_difference: f64,
}

impl MetricWorsening {
    pub fn evaluate(&self, current: &CellAgg, previous: &CellAgg) -> Option<(Verdict, Comparison)> {
        let c = self.metric.compare(current, previous)?;
        if c.current.n < self.min_n || c.previous.n < self.min_n {
            return None;
        }
        // CES and every other metric here: higher is better, so worse is negative.
        let worse = -c.difference;
        let firing = worse >= self.min_difference && c.significant(self.alpha);
        Some((
            Verdict::new(
                firing,
                format!(
                    "{:?} fell from {:.2} (n={}) to {:.2} (n={}), p={:.4}",
                    self.metric, c.previous.value, c.previous.n, c.current.value, c.current.n, c.p_value
                ),
            ),
            c,
        ))
    }
}

/// The share of interactions that broke their promised wait rose significantly and is
/// above `min_share`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SlaBreachSurge {
    pub min_n: u64,
    pub alpha: f64,
    pub min_share: f64,
}

impl SlaBreachSurge {
    pub fn evaluate(&self, current: &CellAgg, previous: &CellAgg) -> Option<(Verdict, Comparison)> {
        let (c, p) = (&current.delivery, &previous.delivery);
        if c.sla_n < self.min_n || p.sla_n < self.min_n {
            return None;
        }
        let cmp = compare_proportions(c.sla_breaches, c.sla_n, p.sla_breaches, p.sla_n)?;
        let firing = cmp.current.value >= self.min_share && cmp.difference > 0.0 && cmp.significant(self.alpha);
        Some((
            Verdict::new(
                firing,
                format!(
                    "SLA breaches rose from {:.0}% to {:.0}% of {} interactions, p={:.4}",
                    cmp.previous.value * 100.0,
                    cmp.current.value * 100.0,
                    c.sla_n,
                    cmp.p_value
                ),
            ),
            cmp,
        ))
    }
}

/// Management rates a touchpoint more than `bound` (experience scale) above customers, and
/// the whole interval agrees: the gap's lower bound is beyond the bound too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PerceptionGapBound {
    pub bound: f64,
    pub min_n: u64,
}

impl PerceptionGapBound {
    pub fn evaluate(&self, g: &crate::report::PerceptionGap) -> Option<Verdict> {
        let gap = g.gap?;
        if gap.n < self.min_n {
            return None;
        }
        Some(Verdict::new(
            gap.lower > self.bound,
            format!(
                "management rates {} {} at {:.2} vs customers {:.2} (gap {:.2}, 95% CI {:.2}–{:.2}, n={})",
                g.touchpoint,
                g.instrument.name(),
                g.internal,
                g.internal - gap.value,
                gap.value,
                gap.lower,
                gap.upper,
                gap.n
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nps::NpsCounts;

    #[test]
    fn threshold_has_hysteresis() {
        let r = RiskThreshold { fire_at: 0.7, clear_at: 0.6 };
        assert!(!r.evaluate(false, 0.65).firing);
        assert!(r.evaluate(false, 0.7).firing);
        assert!(r.evaluate(true, 0.65).firing, "stays firing inside the band");
        assert!(!r.evaluate(true, 0.59).firing);
        assert!(RiskThreshold { fire_at: 0.5, clear_at: 0.6 }.validate().is_err());
    }

    #[test]
    fn jump_looks_only_inside_the_window() {
        let j = RiskJump { delta: 0.2, within_ms: 86_400_000 };
        let now = Timestamp(10 * 86_400_000);
        let hist = [(Timestamp(now.0 - 2 * 86_400_000), 0.1), (Timestamp(now.0 - 3_600_000), 0.5)];
        assert!(!j.evaluate(&hist, now, 0.6).firing, "the 0.1 is outside the window");
        assert!(j.evaluate(&hist, now, 0.71).firing);
        assert!(!j.evaluate(&[], now, 0.9).firing);
    }

    #[test]
    fn only_points_below_every_later_settled_point_are_kept() {
        let at = |h: i64| Timestamp(h * 3_600_000);
        let pts = [(at(3), 0.5), (at(1), 0.4), (at(2), 0.6), (at(4), 0.5), (at(5), 0.7)];
        // 0.6 at 2 h and 0.5 at 3 h have a later point as low (0.5 at 4 h): gone.
        assert_eq!(window_low_candidates(&pts, 0), vec![at(1), at(4), at(5)]);
        assert_eq!(window_low_candidates(&pts, RISK_LATENESS_MS), vec![at(1), at(4), at(5)]);
        // With the last 90 minutes unsettled, 0.5 at 4 h stands for no earlier point.
        assert_eq!(window_low_candidates(&pts, 90 * 60_000), vec![at(1), at(3), at(4), at(5)]);
        assert!(window_low_candidates(&[], RISK_LATENESS_MS).is_empty());
        assert_eq!(window_low_candidates(&pts, i64::MAX), vec![at(1), at(2), at(3), at(4), at(5)]);
    }

    /// A late signal between two points judged from what was kept: 0.2 at 0 min, 0.1 at 3
    /// min, then one at 1 min with 0.5. Its window holds 0.2 (a rise of 30 points), which
    /// settling on arrival order alone would have forgotten for the later 0.1.
    #[test]
    fn a_late_signal_is_judged_against_points_its_window_holds() {
        let min = |m: i64| Timestamp(1_000 * 86_400_000 + m * 60_000);
        let pts = [(min(0), 0.2), (min(3), 0.1)];
        let j = RiskJump { delta: 0.25, within_ms: 86_400_000 };
        let judged = |lateness| {
            let keep = window_low_candidates(&pts, lateness);
            let kept: Vec<_> = pts.iter().filter(|p| keep.contains(&p.0)).copied().collect();
            j.evaluate(&kept, min(1), 0.5).firing
        };
        assert!(j.evaluate(&pts, min(1), 0.5).firing);
        assert!(judged(RISK_LATENESS_MS));
        assert!(!judged(0), "without lateness the 0.2 is forgotten");
    }

    proptest::proptest! {
        /// Whatever the points, a jump evaluated at or after the last of them sees the
        /// same verdict and summary from the kept points as from all of them.
        #[test]
        fn kept_points_give_the_same_verdicts(
            risks in proptest::collection::vec(0u8..=100, 0..40),
            gaps in proptest::collection::vec(1i64..50, 40),
            after in 0i64..100,
            within_h in 1i64..60,
            risk in 0u8..=100,
        ) {
            let mut t = 0;
            let pts: Vec<(Timestamp, f64)> = risks.iter().zip(&gaps).map(|(r, g)| {
                t += g * 3_600_000;
                (Timestamp(t), *r as f64 / 100.0)
            }).collect();
            let keep = window_low_candidates(&pts, 0);
            let kept: Vec<(Timestamp, f64)> = pts.iter().filter(|p| keep.contains(&p.0)).copied().collect();
            let j = RiskJump { delta: 0.2, within_ms: within_h * 3_600_000 };
            let now = Timestamp(t + after * 3_600_000);
            proptest::prop_assert_eq!(j.evaluate(&pts, now, risk as f64 / 100.0), j.evaluate(&kept, now, risk as f64 / 100.0));
        }

        /// Signals arriving out of time order, none more than the lateness before the
        /// latest point so far, are each judged as from every earlier-arrived point when
        /// the history is settled after every arrival, as the alerting service settles it
        /// after every batch.
        #[test]
        fn late_signals_within_the_lateness_give_the_same_verdicts(
            arrivals in proptest::collection::vec((0u8..=100, -60i64..40), 1..60),
            lateness_min in 0i64..30,
            within_min in 1i64..120,
        ) {
            let j = RiskJump { delta: 0.2, within_ms: within_min * 60_000 };
            let lateness = lateness_min * 60_000;
            let mut all: Vec<(Timestamp, f64)> = Vec::new();
            let mut kept: Vec<(Timestamp, f64)> = Vec::new();
            let mut latest = 0i64;
            for (risk, step) in arrivals {
                // Forward by up to 40 minutes, or back by up to the lateness.
                let t = if step >= 0 { latest + step * 60_000 } else { latest - (-step * 60_000).min(lateness) };
                if all.iter().any(|p| p.0.0 == t) {
                    continue;
                }
                let (now, risk) = (Timestamp(t), risk as f64 / 100.0);
                proptest::prop_assert_eq!(j.evaluate(&all, now, risk), j.evaluate(&kept, now, risk));
                all.push((now, risk));
                kept.push((now, risk));
                let keep = window_low_candidates(&kept, lateness);
                kept.retain(|p| keep.contains(&p.0));
                latest = latest.max(t);
            }
        }
    }

    #[test]
    fn worsening_needs_significance_and_n() {
        let mut prev = CellAgg::default();
        let mut cur = CellAgg::default();
        prev.nps = NpsCounts { promoters: 300, passives: 400, detractors: 300 };
        cur.nps = NpsCounts { promoters: 200, passives: 400, detractors: 400 };
        let rule = MetricWorsening { metric: Metric::Nps, min_n: 30, alpha: 0.01, min_difference: 5.0 };
        let (v, c) = rule.evaluate(&cur, &prev).unwrap();
        assert!(v.firing, "{v:?} {c:?}");
        // An improvement never fires.
        assert!(!rule.evaluate(&prev, &cur).unwrap().0.firing);
        // A small shift on large samples is not significant.
        let slight =
            CellAgg { nps: NpsCounts { promoters: 290, passives: 400, detractors: 310 }, ..CellAgg::default() };
        assert!(!rule.evaluate(&slight, &prev).unwrap().0.firing);
        // On three responses each, the Wald test calls 67 → −67 "significant" (p ≈ .0005):
        // that is why the rule has a minimum n and gives no verdict below it.
        prev.nps = NpsCounts { promoters: 2, passives: 1, detractors: 0 };
        cur.nps = NpsCounts { promoters: 0, passives: 1, detractors: 2 };
        assert!(rule.evaluate(&cur, &prev).is_none());
    }

    #[test]
    fn sla_surge() {
        let mut prev = CellAgg::default();
        let mut cur = CellAgg::default();
        (prev.delivery.sla_n, prev.delivery.sla_breaches) = (200, 20);
        (cur.delivery.sla_n, cur.delivery.sla_breaches) = (200, 60);
        let rule = SlaBreachSurge { min_n: 50, alpha: 0.01, min_share: 0.2 };
        assert!(rule.evaluate(&cur, &prev).unwrap().0.firing);
        assert!(!rule.evaluate(&prev, &cur).unwrap().0.firing);
        assert!(SlaBreachSurge { min_n: 500, ..rule }.evaluate(&cur, &prev).is_none());
    }

    #[test]
    fn fingerprints_are_stable_and_unambiguous() {
        assert_eq!(fingerprint("t", "r", "customer:1"), fingerprint("t", "r", "customer:1"));
        assert_ne!(fingerprint("ab", "c", "x"), fingerprint("a", "bc", "x"));
        assert_eq!(fingerprint("t", "r", "s").len(), 16);
    }
}
