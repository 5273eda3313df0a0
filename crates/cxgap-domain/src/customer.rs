//! Per-customer state for health and churn risk. Interactions are kept as weekly buckets of
//! exact integer sums; decay is applied when features are read, relative to the as-of day,
//! so state never depends on arrival order. Buckets older than the retention horizon
//! (relative to the customer's newest event) are dropped: by then their decayed weight is
//! negligible, and the rule depends only on the set of events, not their order.

use crate::calendar::{Day, MS_PER_DAY, Timestamp};
use crate::model::{Channel, FeedbackEvent, JourneyStage};
use crate::nps::NpsClass;
use crate::score::{Derived, EXP_SCALE};
use serde::{Deserialize, Serialize};

pub const RETENTION_WEEKS: i32 = 26;

/// Stored form: buckets, event orders and channel scores serialize as arrays (field
/// order), not objects. A customer's state is rewritten on every batch that touches it,
/// and with field names a state of a few months' weekly buckets passed PostgreSQL's 2 KB
/// compression threshold (pglz on every write and read). Deserializing accepts both the
/// array form and the object form of rows written before (see [`StoredBucket`]).
///
/// In memory the week's latest NPS answer and latest event time are kept without
/// `Option`'s tags (a score that no answer has, and the earliest time): 80 bytes a bucket
/// where the two options took 96. A customer holds a bucket per active week, grown one at
/// a time (memory per tracked customer), so each new week moves the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(from = "StoredBucket")]
pub struct WeekBucket {
    pub week: i32,
    pub events: u32,
    pub exp_n: u32,
    pub exp_sum: u64,
    pub sentiment_n: u32,
    pub sentiment_negative: u32,
    pub contacts: u32,
    pub unresolved: u32,
    pub ces_n: u32,
    pub ces_sum: u32,
    pub sla_breaches: u32,
    /// The latest NPS answer within the week: its order, and the score or [`NO_NPS`].
    nps_order: EventOrder,
    nps: u8,
    /// The latest event within the week; [`NO_EVENT`] before the first.
    last_at: Timestamp,
}

const NO_NPS: u8 = u8::MAX;
const NO_EVENT: Timestamp = Timestamp(i64::MIN);
const NO_ORDER: EventOrder = EventOrder { at: Timestamp(i64::MIN), id_hash: 0 };

impl Default for WeekBucket {
    fn default() -> Self {
        WeekBucket {
            week: 0,
            events: 0,
            exp_n: 0,
            exp_sum: 0,
            sentiment_n: 0,
            sentiment_negative: 0,
            contacts: 0,
            unresolved: 0,
            ces_n: 0,
            ces_sum: 0,
            sla_breaches: 0,
            nps_order: NO_ORDER,
            nps: NO_NPS,
            last_at: NO_EVENT,
        }
    }
}

impl WeekBucket {
    /// The latest NPS answer within the week.
    pub fn last_nps(&self) -> Option<(EventOrder, u8)> {
        (self.nps != NO_NPS).then_some((self.nps_order, self.nps))
    }

    /// When the week's latest event happened.
    pub fn last_at(&self) -> Option<Timestamp> {
        (self.last_at != NO_EVENT).then_some(self.last_at)
    }

    fn set_last_nps(&mut self, v: Option<(EventOrder, u8)>) {
        (self.nps_order, self.nps) = match v {
            // Scores are 0–10 (validated), so the marker is never a score.
            Some((o, n)) if n != NO_NPS => (o, n),
            _ => (NO_ORDER, NO_NPS),
        };
    }
}

/// A bucket as stored, and as it was kept in memory before: the form rows are read in.
#[derive(Deserialize)]
struct StoredBucket {
    week: i32,
    events: u32,
    exp_n: u32,
    exp_sum: u64,
    sentiment_n: u32,
    sentiment_negative: u32,
    contacts: u32,
    unresolved: u32,
    ces_n: u32,
    ces_sum: u32,
    sla_breaches: u32,
    last_nps: Option<(EventOrder, u8)>,
    last_at: Option<Timestamp>,
}

impl From<StoredBucket> for WeekBucket {
    fn from(s: StoredBucket) -> Self {
        let mut b = WeekBucket {
            week: s.week,
            events: s.events,
            exp_n: s.exp_n,
            exp_sum: s.exp_sum,
            sentiment_n: s.sentiment_n,
            sentiment_negative: s.sentiment_negative,
            contacts: s.contacts,
            unresolved: s.unresolved,
            ces_n: s.ces_n,
            ces_sum: s.ces_sum,
            sla_breaches: s.sla_breaches,
            last_at: s.last_at.unwrap_or(NO_EVENT),
            ..WeekBucket::default()
        };
        b.set_last_nps(s.last_nps);
        b
    }
}

impl Serialize for WeekBucket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            self.week,
            self.events,
            self.exp_n,
            self.exp_sum,
            self.sentiment_n,
            self.sentiment_negative,
            self.contacts,
            self.unresolved,
            self.ces_n,
            self.ces_sum,
            self.sla_breaches,
            self.last_nps(),
            self.last_at(),
        )
            .serialize(s)
    }
}

/// A total order on events for "latest wins" fields: time, then a stable hash of the id.
/// Serialized as `[at, id_hash]` (see [`WeekBucket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct EventOrder {
    pub at: Timestamp,
    pub id_hash: u64,
}

impl Serialize for EventOrder {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.at, self.id_hash).serialize(s)
    }
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms, unlike `DefaultHasher`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Serialized as `[channel, n, sum]` (see [`WeekBucket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ChannelScore {
    pub channel: Channel,
    pub n: u32,
    pub sum: u64,
}

impl Serialize for ChannelScore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.channel, self.n, self.sum).serialize(s)
    }
}

/// `S` is how the owner refers to an interned segment (attributes + value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerState<S> {
    pub events: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Bit i set when the customer touched `JourneyStage::ALL[i]`.
    pub stages: u16,
    /// Segment and value from the customer's latest event.
    pub latest: EventOrder,
    pub segment: S,
    pub customer_value: Option<f64>,
    pub buckets: Vec<WeekBucket>,
    pub channels: Vec<ChannelScore>,
}

impl<S: Clone> CustomerState<S> {
    pub fn new(ev: &FeedbackEvent, segment: S) -> Self {
        CustomerState {
            events: 0,
            first_seen: ev.occurred_at,
            last_seen: ev.occurred_at,
            stages: 0,
            latest: EventOrder { at: Timestamp(i64::MIN), id_hash: 0 },
            segment,
            customer_value: None,
            buckets: Vec::new(),
            channels: Vec::new(),
        }
    }

    /// A state of no events that allocates nothing: what is left behind where a state
    /// is taken out of a collection that keeps its place.
    pub(crate) fn vacant(segment: S) -> Self {
        CustomerState {
            events: 0,
            first_seen: Timestamp(0),
            last_seen: Timestamp(0),
            stages: 0,
            latest: EventOrder { at: Timestamp(i64::MIN), id_hash: 0 },
            segment,
            customer_value: None,
            buckets: Vec::new(),
            channels: Vec::new(),
        }
    }

    pub fn add(&mut self, ev: &FeedbackEvent, d: &Derived, segment: S) {
        let order = EventOrder { at: ev.occurred_at, id_hash: stable_hash(ev.event_id.as_bytes()) };
        self.events += 1;
        self.first_seen = self.first_seen.min(ev.occurred_at);
        self.last_seen = self.last_seen.max(ev.occurred_at);
        self.stages |= 1 << ev.journey_stage.index();
        if order > self.latest {
            self.latest = order;
            self.segment = segment;
            self.customer_value = ev.customer_value;
        }
        if let Some(x) = d.experience {
            match self.channels.binary_search_by_key(&ev.channel, |c| c.channel) {
                Ok(i) => {
                    self.channels[i].n += 1;
                    self.channels[i].sum += x as u64;
                }
                Err(i) => {
                    // Grown one at a time: most customers use one or two channels, and a
                    // default Vec would reserve four (memory per tracked customer).
                    self.channels.reserve_exact(1);
                    self.channels.insert(i, ChannelScore { channel: ev.channel, n: 1, sum: x as u64 })
                }
            }
        }
        let week = ev.occurred_at.day().week();
        let horizon = self.last_seen.day().week() - RETENTION_WEEKS;
        self.buckets.retain(|b| b.week >= horizon);
        if week < horizon {
            return;
        }
        let i = match self.buckets.binary_search_by_key(&week, |b| b.week) {
            Ok(i) => i,
            Err(i) => {
                self.buckets.reserve_exact(1);
                self.buckets.insert(i, WeekBucket { week, ..Default::default() });
                i
            }
        };
        let b = &mut self.buckets[i];
        b.events += 1;
        if let Some(x) = d.experience {
            b.exp_n += 1;
            b.exp_sum += x as u64;
        }
        if d.sentiment.is_some() {
            b.sentiment_n += 1;
            b.sentiment_negative += d.negative() as u32;
        }
        if ev.channel.is_contact() || ev.journey_stage == JourneyStage::Support {
            b.contacts += 1;
        }
        b.unresolved += (ev.operational.resolved == Some(false)) as u32;
        if let Some(c) = ev.ces {
            b.ces_n += 1;
            b.ces_sum += c as u32;
        }
        b.sla_breaches += (ev.operational.sla_breached() == Some(true)) as u32;
        if let Some(n) = ev.nps
            && b.last_nps().is_none_or(|(o, _)| order > o)
        {
            b.set_last_nps(Some((order, n)));
        }
        b.last_at = b.last_at.max(ev.occurred_at);
    }

    /// The same state with its segment mapped, taking it apart (nothing is copied).
    pub fn map_segment<T>(self, f: impl FnOnce(S) -> T) -> CustomerState<T> {
        CustomerState {
            events: self.events,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            stages: self.stages,
            latest: self.latest,
            segment: f(self.segment),
            customer_value: self.customer_value,
            buckets: self.buckets,
            channels: self.channels,
        }
    }

    /// A copy of the state with the segment referred to another way (e.g. resolved).
    /// Callers hold small segments (an interned id), so copying it along costs nothing.
    pub fn with_segment<T>(&self, segment: T) -> CustomerState<T> {
        self.clone().map_segment(|_| segment)
    }

    /// Omnichannel inconsistency for this customer: best minus worst channel mean score.
    pub fn channel_spread(&self) -> Option<f64> {
        let means: Vec<f64> = self.channels.iter().map(|c| c.sum as f64 / c.n as f64 / EXP_SCALE).collect();
        (means.len() >= 2)
            .then(|| means.iter().cloned().fold(f64::MIN, f64::max) - means.iter().cloned().fold(f64::MAX, f64::min))
    }

    /// Decayed features as of the end of `as_of`. Weeks starting after `as_of` are ignored;
    /// the week containing `as_of` counts whole (features have week granularity).
    pub fn features(&self, as_of: Day, half_life_days: f64, stage_gaps: &[Option<f64>; 9]) -> Features {
        let now_ms = as_of.plus_days(1).start().0;
        let mut acc = Decayed::default();
        let mut trend = Trend::default();
        for b in self.buckets.iter().filter(|b| Day::week_start(b.week) <= as_of) {
            let mid = Day::week_start(b.week).plus_days(3);
            let age_days = (as_of.0 - mid.0).max(0) as f64;
            let w = 0.5f64.powf(age_days / half_life_days);
            acc.exp_n += w * b.exp_n as f64;
            acc.exp_sum += w * b.exp_sum as f64 / EXP_SCALE;
            acc.sent_n += w * b.sentiment_n as f64;
            acc.sent_neg += w * b.sentiment_negative as f64;
            acc.contacts += w * b.contacts as f64;
            acc.unresolved += w * b.unresolved as f64;
            acc.ces_n += w * b.ces_n as f64;
            acc.ces_sum += w * b.ces_sum as f64;
            acc.sla += w * b.sla_breaches as f64;
            if b.exp_n > 0 {
                let y = b.exp_sum as f64 / b.exp_n as f64 / EXP_SCALE;
                trend.add(-age_days / 30.0, y, w * b.exp_n as f64);
            }
        }
        let visible = || self.buckets.iter().filter(|b| Day::week_start(b.week) <= as_of);
        let last_nps = visible().filter_map(|b| b.last_nps()).max_by_key(|(o, _)| *o).map(|(_, n)| NpsClass::of(n));
        let last_at = visible().filter_map(|b| b.last_at()).max().unwrap_or(self.last_seen);
        let touched: Vec<f64> = JourneyStage::ALL
            .iter()
            .filter(|s| self.stages & (1 << s.index()) != 0)
            .filter_map(|s| stage_gaps[s.index()])
            .collect();
        Features {
            experience: (acc.exp_n > 0.0).then(|| acc.exp_sum / acc.exp_n),
            trend_per_30d: trend.slope(),
            last_nps,
            negative_sentiment_share: (acc.sent_n > 0.0).then(|| acc.sent_neg / acc.sent_n),
            unresolved_contacts: acc.unresolved,
            repeat_contacts: (acc.contacts - 1.0).max(0.0),
            effort: (acc.ces_n > 0.0).then(|| acc.ces_sum / acc.ces_n),
            sla_breaches: acc.sla,
            perception_gap: (!touched.is_empty())
                .then(|| touched.iter().map(|g| g.max(0.0)).sum::<f64>() / touched.len() as f64),
            silence_days: ((now_ms - last_at.0).max(0) as f64) / MS_PER_DAY as f64,
        }
    }
}

#[derive(Default)]
struct Decayed {
    exp_n: f64,
    exp_sum: f64,
    sent_n: f64,
    sent_neg: f64,
    contacts: f64,
    unresolved: f64,
    ces_n: f64,
    ces_sum: f64,
    sla: f64,
}

/// Weighted least squares of weekly mean score against time.
#[derive(Default)]
struct Trend {
    w: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
    points: u32,
}

impl Trend {
    fn add(&mut self, x: f64, y: f64, w: f64) {
        self.w += w;
        self.x += w * x;
        self.y += w * y;
        self.xx += w * x * x;
        self.xy += w * x * y;
        self.points += 1;
    }

    fn slope(&self) -> Option<f64> {
        if self.points < 2 || self.w <= 0.0 {
            return None;
        }
        let den = self.w * self.xx - self.x * self.x;
        (den.abs() > 1e-12).then(|| (self.w * self.xy - self.x * self.y) / den)
    }
}

/// What the risk model sees of one customer. `None` means "no data", which contributes
/// nothing rather than being imputed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Decayed mean experience score, 0–1.
    pub experience: Option<f64>,
    /// Change of the weekly experience score per 30 days.
    pub trend_per_30d: Option<f64>,
    pub last_nps: Option<NpsClass>,
    pub negative_sentiment_share: Option<f64>,
    /// Decayed counts.
    pub unresolved_contacts: f64,
    pub repeat_contacts: f64,
    /// Decayed mean CES, 1–7 (7 = very easy).
    pub effort: Option<f64>,
    pub sla_breaches: f64,
    /// Mean over the stages the customer touched of max(0, management − customers).
    pub perception_gap: Option<f64>,
    pub silence_days: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::derive;
    use crate::validate::FeedbackDraft;

    fn ev(id: &str, day: i32, nps: i64, resolved: Option<bool>) -> FeedbackEvent {
        FeedbackDraft {
            event_id: id.into(),
            customer_id: "c".into(),
            channel: Some(Channel::Phone),
            journey_stage: Some(JourneyStage::Support),
            occurred_at: Some(Day(day).start()),
            nps: Some(nps),
            resolved,
            ..Default::default()
        }
        .validate(Timestamp(i64::MAX / 2), Default::default())
        .unwrap()
    }

    fn state(events: &[FeedbackEvent]) -> CustomerState<()> {
        let mut s = CustomerState::new(&events[0], ());
        for e in events {
            s.add(e, &derive(e), ());
        }
        s
    }

    #[test]
    fn decline_and_unresolved_contacts_show_in_features() {
        let evs = [ev("a", 20_000, 10, None), ev("b", 20_030, 6, Some(false)), ev("c", 20_060, 2, Some(false))];
        let f = state(&evs).features(Day(20_060), 30.0, &[None; 9]);
        assert_eq!(f.last_nps, Some(NpsClass::Detractor));
        assert!(f.trend_per_30d.unwrap() < -0.2, "{f:?}");
        assert!(f.unresolved_contacts > 1.0 && f.repeat_contacts > 0.5, "{f:?}");
        assert_eq!(f.silence_days, 1.0);
    }

    #[test]
    fn events_beyond_retention_are_dropped_in_any_order() {
        let old = ev("old", 20_000, 0, None);
        let new = ev("new", 20_000 + 7 * (RETENTION_WEEKS + 2), 10, None);
        let a = state(&[old.clone(), new.clone()]);
        let b = state(&[new, old]);
        assert_eq!(a.buckets, b.buckets);
        assert_eq!(a.buckets.len(), 1);
    }

    #[test]
    fn as_of_ignores_later_events() {
        let evs = [ev("a", 20_000, 10, None), ev("b", 20_100, 0, None)];
        let f = state(&evs).features(Day(20_010), 30.0, &[None; 9]);
        assert_eq!(f.last_nps, Some(NpsClass::Promoter));
        assert!(f.experience.unwrap() > 0.99);
    }

    #[test]
    fn stored_form_is_compact_and_rows_in_the_object_form_still_read() {
        let evs = [ev("a", 20_000, 10, None), ev("b", 20_030, 6, Some(false))];
        let s = state(&evs).with_segment(0u32);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("sentiment_negative") && !json.contains("id_hash"), "{json}");
        assert_eq!(serde_json::from_str::<CustomerState<u32>>(&json).unwrap(), s);
        // The object form, as rows were written before the compact form.
        let b = &s.buckets[0];
        let old = serde_json::json!({
            "events": s.events, "first_seen": s.first_seen, "last_seen": s.last_seen, "stages": s.stages,
            "latest": {"at": s.latest.at, "id_hash": s.latest.id_hash}, "segment": 0,
            "customer_value": s.customer_value,
            "buckets": [{
                "week": b.week, "events": b.events, "exp_n": b.exp_n, "exp_sum": b.exp_sum,
                "sentiment_n": b.sentiment_n, "sentiment_negative": b.sentiment_negative,
                "contacts": b.contacts, "unresolved": b.unresolved, "ces_n": b.ces_n, "ces_sum": b.ces_sum,
                "sla_breaches": b.sla_breaches,
                "last_nps": b.last_nps().map(|(o, n)| (serde_json::json!({"at": o.at, "id_hash": o.id_hash}), n)),
                "last_at": b.last_at(),
            }],
            "channels": s.channels.iter().map(|c| serde_json::json!({"channel": c.channel, "n": c.n, "sum": c.sum}))
                .collect::<Vec<_>>(),
        });
        let mut expected = s.clone();
        expected.buckets.truncate(1);
        assert_eq!(serde_json::from_value::<CustomerState<u32>>(old).unwrap(), expected);
    }

    #[test]
    fn a_bucket_keeps_no_tags_and_stores_as_before() {
        // 80 bytes where `Option`'s tags made 96 (memory per tracked customer).
        assert_eq!(size_of::<WeekBucket>(), 80);
        let mut e = ev("a", 20_000, 0, None);
        e.nps = None;
        let s = state(&[e, ev("b", 20_007, 9, None)]);
        let (quiet, answered) = (&s.buckets[0], &s.buckets[1]);
        assert_eq!(quiet.last_nps(), None);
        assert_eq!(quiet.last_at(), Some(Day(20_000).start()));
        assert_eq!(answered.last_nps().map(|(_, n)| n), Some(9));
        let json = serde_json::to_value(quiet).unwrap();
        assert_eq!(json[11], serde_json::Value::Null, "no answer stores as null: {json}");
        assert_eq!(json[12], serde_json::json!(Day(20_000).start().0));
        for b in [quiet, answered] {
            assert_eq!(&serde_json::from_value::<WeekBucket>(serde_json::to_value(b).unwrap()).unwrap(), b);
        }
        // A bucket stored with no event time (never written, but readable).
        let mut stored = serde_json::to_value(quiet).unwrap();
        stored[12] = serde_json::Value::Null;
        assert_eq!(serde_json::from_value::<WeekBucket>(stored).unwrap().last_at(), None);
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
