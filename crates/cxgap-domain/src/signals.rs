//! What analytics tells alerting, decided here without I/O: the figures of each subject
//! (touchpoint, journey stage, channel, segment attribute) for a window and the window
//! before it, and the stable ids that let a republished or recomputed signal be recognised
//! as the same one. Ids hash the content that caused the signal, so recomputing unchanged
//! figures gives the same id and the outbox stores it once.

use crate::aggregate::CellAgg;
use crate::calendar::Day;
use crate::customer::stable_hash;
use crate::report::{PerceptionGap, Window, perception_gaps};
use crate::state::{CellRef, GapState};
use std::collections::BTreeMap;

/// The windows aggregate signals report, each against the window before it.
pub const AGGREGATE_WINDOW_DAYS: [u32; 2] = [7, 30];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubjectKind {
    Touchpoint,
    JourneyStage,
    Channel,
    /// The subject is `key=value` of one segment attribute.
    Segment,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Touchpoint => "touchpoint",
            SubjectKind::JourneyStage => "journey_stage",
            SubjectKind::Channel => "channel",
            SubjectKind::Segment => "segment",
        }
    }
}

/// One subject's accumulators for `window_days` ending `as_of` and the window before.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateFigures {
    pub kind: SubjectKind,
    pub subject: String,
    pub window_days: u32,
    pub as_of: Day,
    pub current: CellAgg,
    pub previous: CellAgg,
    /// Management's assessments of this touchpoint against customers (touchpoints only).
    pub perception: Vec<PerceptionGap>,
}

fn subjects(c: &CellRef<'_>) -> impl Iterator<Item = (SubjectKind, String)> {
    let fixed = [
        c.touchpoint.map(|t| (SubjectKind::Touchpoint, t.to_string())),
        Some((SubjectKind::JourneyStage, c.stage.as_str().to_string())),
        Some((SubjectKind::Channel, c.channel.as_str().to_string())),
    ];
    fixed.into_iter().flatten().chain(c.attributes.0.iter().map(|(k, v)| (SubjectKind::Segment, format!("{k}={v}"))))
}

/// Every subject with responses in either window, for each of `windows` (in days), as of
/// `as_of`. `state` must hold the cells of the `2 × max(windows)` days up to `as_of`.
pub fn aggregate_figures(state: &GapState, as_of: Day, windows: &[u32]) -> Vec<AggregateFigures> {
    let mut out = Vec::new();
    for &days in windows {
        let days = days.max(1);
        let first = as_of.plus_days(1 - days as i32);
        let before = first.plus_days(-(days as i32));
        let mut acc: BTreeMap<(SubjectKind, String), (CellAgg, CellAgg)> = BTreeMap::new();
        for (c, agg) in state.cells() {
            if c.day > as_of || c.day < before {
                continue;
            }
            let current = c.day >= first;
            for key in subjects(&c) {
                let e = acc.entry(key).or_default();
                if current { e.0.merge(agg) } else { e.1.merge(agg) }
            }
        }
        let perception = perception_gaps(state, Window::Days(days), as_of);
        for ((kind, subject), (current, previous)) in acc {
            let perception = if kind == SubjectKind::Touchpoint {
                perception.iter().filter(|g| g.touchpoint == subject).cloned().collect()
            } else {
                Vec::new()
            };
            out.push(AggregateFigures { kind, subject, window_days: days, as_of, current, previous, perception });
        }
    }
    out
}

fn hash_parts(parts: &[&[u8]]) -> u64 {
    let mut buf = Vec::new();
    for p in parts {
        buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
        buf.extend_from_slice(p);
    }
    stable_hash(&buf)
}

/// The id of an aggregate signal: its tenant, subject, window and every figure in it.
pub fn aggregate_signal_id(tenant: &str, f: &AggregateFigures) -> String {
    let mut figures = Vec::new();
    for agg in [&f.current, &f.previous] {
        // An accumulator too large for a row still gets an id from what fits.
        for v in agg.to_row().map(|r| r.to_vec()).unwrap_or_else(|| vec![agg.events as i64]) {
            figures.extend_from_slice(&v.to_be_bytes());
        }
    }
    for g in &f.perception {
        figures.extend_from_slice(g.instrument.name().as_bytes());
        figures.extend_from_slice(&g.internal.to_bits().to_be_bytes());
    }
    let h = hash_parts(&[
        tenant.as_bytes(),
        f.kind.as_str().as_bytes(),
        f.subject.as_bytes(),
        &f.window_days.to_be_bytes(),
        &f.as_of.0.to_be_bytes(),
        &figures,
    ]);
    format!("sig-a-{h:016x}")
}

/// The id of a customer signal: the customer and the exact set of events behind it (its
/// event count and the newest event's id), so the same state always has the same id.
pub fn customer_signal_id(tenant: &str, customer: &str, events: u64, newest_event: &str, as_of: Day) -> String {
    let h = hash_parts(&[
        tenant.as_bytes(),
        customer.as_bytes(),
        &events.to_be_bytes(),
        newest_event.as_bytes(),
        &as_of.0.to_be_bytes(),
    ]);
    format!("sig-c-{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::FeedbackDraft;
    use crate::{Channel, JourneyStage, Timestamp};

    fn event(id: &str, day: i32, nps: u8, touchpoint: &str) -> crate::FeedbackEvent {
        FeedbackDraft {
            event_id: id.into(),
            customer_id: format!("c-{id}"),
            channel: Some(Channel::Phone),
            journey_stage: Some(JourneyStage::Support),
            touchpoint: touchpoint.into(),
            occurred_at: Some(Timestamp(day as i64 * 86_400_000 + 1_000)),
            nps: Some(nps as i64),
            attributes: vec![("plan".into(), "gold".into())],
            ..Default::default()
        }
        .validate(Timestamp(i64::MAX / 4), Default::default())
        .expect("valid")
    }

    #[test]
    fn figures_split_the_two_windows_per_subject() {
        let mut s = GapState::new();
        let as_of = Day(20_000);
        // Current week: two detractors; the week before: one promoter; older: ignored.
        for (id, day, nps) in [("a", 20_000, 2), ("b", 19_995, 3), ("c", 19_990, 10), ("d", 19_900, 10)] {
            s.apply(&event(id, day, nps, "helpline"));
        }
        let f = aggregate_figures(&s, as_of, &[7]);
        let tp = f.iter().find(|f| f.kind == SubjectKind::Touchpoint && f.subject == "helpline").expect("touchpoint");
        assert_eq!((tp.current.events, tp.previous.events), (2, 1));
        assert_eq!(tp.current.nps.detractors, 2);
        assert_eq!(tp.previous.nps.promoters, 1);
        let seg = f.iter().find(|f| f.kind == SubjectKind::Segment).expect("segment");
        assert_eq!(seg.subject, "plan=gold");
        assert_eq!(f.iter().filter(|f| f.kind == SubjectKind::Channel).count(), 1);
    }

    #[test]
    fn ids_follow_content_only() {
        let mut s = GapState::new();
        s.apply(&event("a", 20_000, 2, "helpline"));
        let f1 = aggregate_figures(&s, Day(20_000), &[7]);
        let f2 = aggregate_figures(&s, Day(20_000), &[7]);
        assert_eq!(aggregate_signal_id("t", &f1[0]), aggregate_signal_id("t", &f2[0]));
        assert_ne!(aggregate_signal_id("t", &f1[0]), aggregate_signal_id("u", &f1[0]));
        s.apply(&event("b", 20_000, 9, "helpline"));
        let f3 = aggregate_figures(&s, Day(20_000), &[7]);
        let same_subject = f3.iter().find(|f| f.kind == f1[0].kind && f.subject == f1[0].subject).expect("subject");
        assert_ne!(aggregate_signal_id("t", &f1[0]), aggregate_signal_id("t", same_subject));
        assert_eq!(customer_signal_id("t", "c", 3, "e9", Day(1)), customer_signal_id("t", "c", 3, "e9", Day(1)));
        assert_ne!(customer_signal_id("t", "c", 3, "e9", Day(1)), customer_signal_id("t", "c", 4, "e9", Day(1)));
    }
}
