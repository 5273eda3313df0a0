//! Additive accumulators of one aggregate cell (a tenant's events of one day, channel,
//! journey stage, touchpoint and segment). All fields are exact integer sums, so merging
//! cells in any order gives bit-identical results, and any query is a merge of cells.

use crate::model::{Dimension, FeedbackEvent};
use crate::nps::{NpsCounts, NpsFigure};
use crate::score::{Derived, EXP_SCALE, SENT_SCALE};
use crate::servqual::ImportanceWeights;
use crate::stats::{Estimate, Moments, wilson};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::{Deref, DerefMut};

/// Integers in [`CellAgg::to_row`]: 4 counts, 22 moments of 3, 7 more counts.
pub const CELL_ROW_WIDTH: usize = 4 + 22 * 3 + 7;

/// Wait times are summed in milliseconds, wait/promise ratios in ten-thousandths.
pub const WAIT_SCALE: f64 = 1000.0;
pub const RATIO_SCALE: f64 = 10_000.0;

/// Accumulators that most cells never use, kept off the cell until an event needs them:
/// service-quality ratings come with a minority of events and operational data with
/// fewer, and the five dimensions alone are 480 of a full cell's ~770 bytes. A cell
/// without them is 240 bytes (measured: memory per tracked customer at 100k customers
/// fell from about 1,000 to 906 bytes; the engine's speed did not measurably change).
/// Reads of an unused part see zeros;
/// the first write allocates it. Equality and serialization are by value, so a part
/// that is absent equals one that is present and zero.
#[derive(Debug, Clone, Default)]
pub struct Sparse<T>(Option<Box<T>>);

/// A type with a shared all-zero value, what an unused [`Sparse`] part reads as.
pub trait Zeroed: Default + PartialEq + 'static {
    fn zero() -> &'static Self;
}

impl<T: Zeroed> Sparse<T> {
    /// Whether the part was ever written.
    pub fn is_used(&self) -> bool {
        self.0.is_some()
    }

    /// Stored only when not zero.
    pub fn of(value: T) -> Self {
        Sparse((value != *T::zero()).then(|| Box::new(value)))
    }
}

impl<T: Zeroed> Deref for Sparse<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_deref().unwrap_or_else(|| T::zero())
    }
}

impl<T: Zeroed> DerefMut for Sparse<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

impl<T: Zeroed> PartialEq for Sparse<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Zeroed + Eq> Eq for Sparse<T> {}

impl<T: Zeroed + Serialize> Serialize for Sparse<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de, T: Zeroed + Deserialize<'de>> Deserialize<'de> for Sparse<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Sparse::of)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimAgg {
    pub expectation: Moments,
    pub perception: Moments,
    /// P − E per response.
    pub gap: Moments,
}

impl DimAgg {
    const ZERO: DimAgg = DimAgg { expectation: Moments::ZERO, perception: Moments::ZERO, gap: Moments::ZERO };
}

impl Zeroed for [DimAgg; 5] {
    fn zero() -> &'static Self {
        static ZERO: [DimAgg; 5] = [DimAgg::ZERO; 5];
        &ZERO
    }
}

impl Zeroed for DeliveryAgg {
    fn zero() -> &'static Self {
        static ZERO: DeliveryAgg = DeliveryAgg {
            wait_ms: Moments::ZERO,
            ratio: Moments::ZERO,
            sla_n: 0,
            sla_breaches: 0,
            resolution_n: 0,
            unresolved: 0,
        };
        &ZERO
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAgg {
    pub wait_ms: Moments,
    /// Per-event wait / promised wait, for events with a positive promise.
    pub ratio: Moments,
    pub sla_n: u64,
    pub sla_breaches: u64,
    pub resolution_n: u64,
    pub unresolved: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellAgg {
    pub events: u64,
    pub nps: NpsCounts,
    /// Raw 0–10 scores, for comparing with management's NPS-scale assessments.
    pub nps_score: Moments,
    pub csat: Moments,
    pub csat_satisfied: u64,
    pub ces: Moments,
    pub dims: Sparse<[DimAgg; 5]>,
    /// Events with at least one rated dimension.
    pub rated_events: u64,
    pub experience: Moments,
    pub sentiment: Moments,
    pub sentiment_negative: u64,
    pub delivery: Sparse<DeliveryAgg>,
}

impl CellAgg {
    pub fn add(&mut self, ev: &FeedbackEvent, d: &Derived) {
        self.events += 1;
        if let Some(n) = ev.nps {
            self.nps.add(n);
            self.nps_score.add(n as i64);
        }
        if let Some(c) = ev.csat {
            self.csat.add(c as i64);
            self.csat_satisfied += (c >= 4) as u64;
        }
        if let Some(c) = ev.ces {
            self.ces.add(c as i64);
        }
        if ev.ratings.iter().any(Option::is_some) {
            self.rated_events += 1;
            for (agg, r) in self.dims.iter_mut().zip(ev.ratings.iter()) {
                if let Some(r) = r {
                    agg.expectation.add(r.expectation as i64);
                    agg.perception.add(r.perception as i64);
                    agg.gap.add(r.perception as i64 - r.expectation as i64);
                }
            }
        }
        if let Some(x) = d.experience {
            self.experience.add(x);
        }
        if let Some(s) = d.sentiment {
            self.sentiment.add(s);
            self.sentiment_negative += d.negative() as u64;
        }
        let op = &ev.operational;
        if let Some(w) = op.wait_seconds {
            self.delivery.wait_ms.add((w * WAIT_SCALE).round() as i64);
        }
        if let Some(b) = op.sla_breached() {
            self.delivery.sla_n += 1;
            self.delivery.sla_breaches += b as u64;
        }
        if let (Some(w), Some(p)) = (op.wait_seconds, op.promised_wait_seconds)
            && p > 0.0
        {
            self.delivery.ratio.add((w / p * RATIO_SCALE).round() as i64);
        }
        if let Some(r) = op.resolved {
            self.delivery.resolution_n += 1;
            self.delivery.unresolved += (!r) as u64;
        }
    }

    pub fn merge(&mut self, o: &CellAgg) {
        self.events += o.events;
        self.nps.merge(&o.nps);
        self.nps_score.merge(&o.nps_score);
        self.csat.merge(&o.csat);
        self.csat_satisfied += o.csat_satisfied;
        self.ces.merge(&o.ces);
        if o.dims.is_used() {
            for (a, b) in self.dims.iter_mut().zip(o.dims.iter()) {
                a.expectation.merge(&b.expectation);
                a.perception.merge(&b.perception);
                a.gap.merge(&b.gap);
            }
        }
        self.rated_events += o.rated_events;
        self.experience.merge(&o.experience);
        self.sentiment.merge(&o.sentiment);
        self.sentiment_negative += o.sentiment_negative;
        if !o.delivery.is_used() {
            return;
        }
        let (d, e) = (&mut *self.delivery, &*o.delivery);
        d.wait_ms.merge(&e.wait_ms);
        d.ratio.merge(&e.ratio);
        d.sla_n += e.sla_n;
        d.sla_breaches += e.sla_breaches;
        d.resolution_n += e.resolution_n;
        d.unresolved += e.unresolved;
    }

    /// The cell as a fixed-width row of integers, for storage where merging is column-wise
    /// addition (`v = v + excluded.v`): the sum of two rows is the row of the merged cells.
    /// `None` when a sum of squares exceeds 64 bits.
    pub fn to_row(&self) -> Option<[i64; CELL_ROW_WIDTH]> {
        let mut row = [0i64; CELL_ROW_WIDTH];
        let mut i = 0;
        let mut put = |x: i64| {
            row[i] = x;
            i += 1;
        };
        let count = |x: u64| i64::try_from(x).ok();
        put(count(self.events)?);
        put(count(self.nps.promoters)?);
        put(count(self.nps.passives)?);
        put(count(self.nps.detractors)?);
        let mut moments: Vec<&Moments> = vec![&self.nps_score, &self.csat, &self.ces];
        for d in self.dims.iter() {
            moments.extend([&d.expectation, &d.perception, &d.gap]);
        }
        moments.extend([&self.experience, &self.sentiment, &self.delivery.wait_ms, &self.delivery.ratio]);
        for m in moments {
            for x in m.to_parts()? {
                put(x);
            }
        }
        for x in [
            self.csat_satisfied,
            self.rated_events,
            self.sentiment_negative,
            self.delivery.sla_n,
            self.delivery.sla_breaches,
            self.delivery.resolution_n,
            self.delivery.unresolved,
        ] {
            put(count(x)?);
        }
        Some(row)
    }

    pub fn from_row(row: &[i64; CELL_ROW_WIDTH]) -> CellAgg {
        let mut it = row.iter().copied();
        let mut next = || it.next().expect("row width");
        let mut c = CellAgg { events: next().max(0) as u64, ..Default::default() };
        c.nps = NpsCounts { promoters: next() as u64, passives: next() as u64, detractors: next() as u64 };
        let mut moment = || Moments::from_parts([next(), next(), next()]);
        c.nps_score = moment();
        c.csat = moment();
        c.ces = moment();
        let mut dims = [DimAgg::ZERO; 5];
        for d in dims.iter_mut() {
            d.expectation = moment();
            d.perception = moment();
            d.gap = moment();
        }
        c.dims = Sparse::of(dims);
        c.experience = moment();
        c.sentiment = moment();
        let mut delivery = DeliveryAgg { wait_ms: moment(), ratio: moment(), ..Default::default() };
        let mut next = || it.next().expect("row width") as u64;
        c.csat_satisfied = next();
        c.rated_events = next();
        c.sentiment_negative = next();
        delivery.sla_n = next();
        delivery.sla_breaches = next();
        delivery.resolution_n = next();
        delivery.unresolved = next();
        c.delivery = Sparse::of(delivery);
        c
    }

    pub fn summary(&self, weights: &ImportanceWeights, min_n: u64) -> Summary {
        let dimensions: Vec<DimensionGap> = Dimension::ALL
            .iter()
            .filter_map(|&d| {
                let a = &self.dims[d.index()];
                Some(DimensionGap {
                    dimension: d,
                    expectation: a.expectation.estimate(1.0)?,
                    perception: a.perception.estimate(1.0)?,
                    gap: a.gap.estimate(1.0)?,
                })
            })
            .collect();
        let equal = ImportanceWeights([1.0; 5]);
        let responses = [self.nps.n(), self.csat.n, self.ces.n, self.rated_events, self.sentiment.n];
        Summary {
            events: self.events,
            nps: self.nps.figure(),
            csat_percent: wilson(self.csat_satisfied, self.csat.n).map(|e| e.map(|x| x * 100.0)),
            csat_mean: self.csat.estimate(1.0),
            ces: self.ces.estimate(1.0),
            experience: self.experience.estimate(EXP_SCALE),
            sentiment: self.sentiment.estimate(SENT_SCALE),
            negative_sentiment_share: wilson(self.sentiment_negative, self.sentiment.n),
            service_quality: service_quality(&dimensions, &equal, self.rated_events),
            service_quality_weighted: service_quality(&dimensions, weights, self.rated_events),
            dimensions,
            delivery: self.delivery.summary(),
            low_n: responses.iter().copied().max().unwrap_or(0) < min_n,
        }
    }
}

/// Weighted mean of the dimension gaps. Its interval is the conservative (perfectly
/// correlated, Cauchy–Schwarz) bound z·Σ wᵢ·SEᵢ: dimension gaps from one respondent are
/// positively correlated, so assuming independence would give intervals too narrow.
fn service_quality(dims: &[DimensionGap], w: &ImportanceWeights, n: u64) -> Option<Estimate> {
    let total: f64 = dims.iter().map(|d| w.get(d.dimension)).sum();
    if dims.is_empty() || total <= 0.0 {
        return None;
    }
    let (mut value, mut half) = (0.0, 0.0);
    for d in dims {
        let wi = w.get(d.dimension) / total;
        value += wi * d.gap.value;
        half += wi * (d.gap.upper - d.gap.value);
    }
    Some(Estimate { value, n, lower: value - half, upper: value + half })
}

impl DeliveryAgg {
    fn summary(&self) -> Option<DeliveryGap> {
        let g = DeliveryGap {
            wait_ratio: self.ratio.estimate(RATIO_SCALE),
            sla_breach_share: wilson(self.sla_breaches, self.sla_n),
            unresolved_share: wilson(self.unresolved, self.resolution_n),
            mean_wait_seconds: self.wait_ms.estimate(WAIT_SCALE),
        };
        let any = g.wait_ratio.is_some()
            || g.sla_breach_share.is_some()
            || g.unresolved_share.is_some()
            || g.mean_wait_seconds.is_some();
        any.then_some(g)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DimensionGap {
    pub dimension: Dimension,
    pub expectation: Estimate,
    pub perception: Estimate,
    /// Perception minus expectation; negative is a shortfall.
    pub gap: Estimate,
}

/// Promised versus delivered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeliveryGap {
    pub wait_ratio: Option<Estimate>,
    pub sla_breach_share: Option<Estimate>,
    pub unresolved_share: Option<Estimate>,
    pub mean_wait_seconds: Option<Estimate>,
}

/// Every figure of one group, each with its n and interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub events: u64,
    pub nps: Option<NpsFigure>,
    pub csat_percent: Option<Estimate>,
    pub csat_mean: Option<Estimate>,
    pub ces: Option<Estimate>,
    pub experience: Option<Estimate>,
    pub sentiment: Option<Estimate>,
    pub negative_sentiment_share: Option<Estimate>,
    pub dimensions: Vec<DimensionGap>,
    pub service_quality: Option<Estimate>,
    pub service_quality_weighted: Option<Estimate>,
    pub delivery: Option<DeliveryGap>,
    /// Fewer responses than the query's minimum: shown, but not to be acted on.
    pub low_n: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Z95;

    #[test]
    fn service_quality_interval_is_conservative() {
        let mk = |d, g: f64, se: f64| DimensionGap {
            dimension: d,
            expectation: Estimate { value: 5.0, n: 10, lower: 5.0, upper: 5.0 },
            perception: Estimate { value: 5.0 + g, n: 10, lower: 5.0, upper: 5.0 },
            gap: Estimate { value: g, n: 10, lower: g - Z95 * se, upper: g + Z95 * se },
        };
        let dims = [mk(Dimension::Reliability, -1.0, 0.1), mk(Dimension::Empathy, -0.5, 0.3)];
        let sq = service_quality(&dims, &ImportanceWeights([1.0; 5]), 10).unwrap();
        assert!((sq.value + 0.75).abs() < 1e-12);
        assert!((sq.upper - sq.value - Z95 * 0.2).abs() < 1e-12);
    }

    fn event(rated: bool, waited: bool) -> FeedbackEvent {
        use crate::calendar::Timestamp;
        use crate::model::{Channel, JourneyStage};
        use crate::validate::{FeedbackDraft, RatingDraft};
        FeedbackDraft {
            event_id: "e".into(),
            customer_id: "c".into(),
            channel: Some(Channel::Phone),
            journey_stage: Some(JourneyStage::Support),
            occurred_at: Some(Timestamp(0)),
            nps: Some(3),
            ratings: if rated {
                vec![RatingDraft { dimension: Some(Dimension::Empathy), expectation: Some(7), perception: Some(2) }]
            } else {
                Vec::new()
            },
            wait_seconds: waited.then_some(90.0),
            ..Default::default()
        }
        .validate(Timestamp(0), Default::default())
        .unwrap()
    }

    #[test]
    fn unused_parts_stay_off_the_cell_and_read_as_zero() {
        // The point of `Sparse`: a cell of plain NPS answers carries no dimension or
        // delivery accumulators, yet equals, merges and stores like one that does.
        assert!(size_of::<CellAgg>() <= 256, "{}", size_of::<CellAgg>());
        let plain = event(false, false);
        let mut a = CellAgg::default();
        a.add(&plain, &crate::score::derive(&plain));
        assert!(!a.dims.is_used() && !a.delivery.is_used());
        assert_eq!(a.dims[Dimension::Empathy.index()].gap.n, 0);
        let mut merged = CellAgg::default();
        merged.merge(&a);
        assert!(!merged.dims.is_used() && !merged.delivery.is_used());
        let back = CellAgg::from_row(&a.to_row().unwrap());
        assert!(!back.dims.is_used() && !back.delivery.is_used());
        assert_eq!(back, a);

        let full = event(true, true);
        let mut b = CellAgg::default();
        b.add(&full, &crate::score::derive(&full));
        assert!(b.dims.is_used() && b.delivery.is_used());
        assert_eq!((b.rated_events, b.dims[Dimension::Empathy.index()].gap.sum), (1, -5));
        assert_eq!(b.delivery.wait_ms.sum, 90_000);
        assert_eq!(CellAgg::from_row(&b.to_row().unwrap()), b);
        // Present-but-zero equals absent.
        let mut zeroed = a.clone();
        zeroed.dims[0].gap.n = 0;
        assert!(zeroed.dims.is_used());
        assert_eq!(zeroed, a);
    }
}
