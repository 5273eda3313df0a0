//! The experience score: every instrument mapped onto one 0–1 scale so that channels using
//! different instruments can be compared (ARCHITECTURE §4). Per-event figures are rounded
//! to fixed point here, once, so every later sum is exact and order-independent.

use crate::model::FeedbackEvent;
use crate::sentiment;

/// Experience scores are stored in millionths.
pub const EXP_SCALE: f64 = 1_000_000.0;
/// Sentiment compound scores are stored in ten-thousandths.
pub const SENT_SCALE: f64 = 10_000.0;

/// Figures derived once per event, at apply time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Derived {
    /// Mean of the available components, in millionths (0..=1_000_000).
    pub experience: Option<i64>,
    /// VADER compound in ten-thousandths, when the event has a comment.
    pub sentiment: Option<i64>,
}

impl Derived {
    pub fn negative(&self) -> bool {
        self.sentiment.is_some_and(|s| (s as f64 / SENT_SCALE) <= sentiment::NEGATIVE_THRESHOLD)
    }
}

/// Components: NPS/10, (CSAT−1)/4, (CES−1)/6, mean (P−1)/6 over rated dimensions and the
/// comment's sentiment (s+1)/2, each weighted equally when present.
pub fn derive(ev: &FeedbackEvent) -> Derived {
    let sentiment = ev.comment.as_deref().map(sentiment::compound);
    let mut parts = [0.0f64; 5];
    let mut k = 0;
    let mut push = |x: f64| {
        parts[k] = x;
        k += 1;
    };
    if let Some(n) = ev.nps {
        push(n as f64 / 10.0);
    }
    if let Some(c) = ev.csat {
        push((c as f64 - 1.0) / 4.0);
    }
    if let Some(c) = ev.ces {
        push((c as f64 - 1.0) / 6.0);
    }
    let (rated, sum) = ev
        .ratings
        .iter()
        .flatten()
        .fold((0u32, 0.0f64), |(n, sum), r| (n + 1, sum + (r.perception as f64 - 1.0) / 6.0));
    if rated > 0 {
        push(sum / rated as f64);
    }
    if let Some(s) = sentiment {
        push((s + 1.0) / 2.0);
    }
    let experience = (k > 0).then(|| (parts[..k].iter().sum::<f64>() / k as f64 * EXP_SCALE).round() as i64);
    Derived { experience, sentiment: sentiment.map(|s| (s * SENT_SCALE).round() as i64) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Timestamp;
    use crate::model::{Channel, JourneyStage, Rating};
    use crate::validate::FeedbackDraft;

    pub(crate) fn event(nps: Option<i64>, csat: Option<i64>, ces: Option<i64>) -> FeedbackEvent {
        FeedbackDraft {
            event_id: "e".into(),
            customer_id: "c".into(),
            channel: Some(Channel::Web),
            journey_stage: Some(JourneyStage::Usage),
            occurred_at: Some(Timestamp(0)),
            nps,
            csat,
            ces,
            comment: if nps.is_none() && csat.is_none() && ces.is_none() { "fine".into() } else { String::new() },
            ..Default::default()
        }
        .validate(Timestamp(0), Default::default())
        .unwrap()
    }

    #[test]
    fn instruments_share_one_scale() {
        assert_eq!(derive(&event(Some(10), None, None)).experience, Some(1_000_000));
        assert_eq!(derive(&event(None, Some(1), None)).experience, Some(0));
        assert_eq!(derive(&event(None, None, Some(4))).experience, Some(500_000));
        // NPS 8 → .8, CSAT 4 → .75: mean .775
        assert_eq!(derive(&event(Some(8), Some(4), None)).experience, Some(775_000));
    }

    #[test]
    fn ratings_and_comments_count() {
        let mut ev = event(None, None, Some(7));
        ev.ratings[0] = Some(Rating { expectation: 7, perception: 1 });
        assert_eq!(derive(&ev).experience, Some(500_000));
        let ev = event(None, None, None);
        let d = derive(&ev);
        assert!(d.sentiment.unwrap() > 0 && !d.negative());
    }
}
