//! Queries over a [`GapState`]: gap reports grouped by any combination of dimensions over
//! event-time windows, consistency and perception gaps, trends with window-over-window
//! tests, and customers' churn risk. Every figure carries its n and interval.

use crate::aggregate::{CellAgg, Summary};
use crate::calendar::{Day, Timestamp};
use crate::customer::Features;
use crate::model::{Attributes, Channel, Dimension, Instrument, JourneyStage};
use crate::risk::{Driver, RiskModel};
use crate::score::EXP_SCALE;
use crate::servqual::ImportanceWeights;
use crate::state::{CellRef, GapState};
use crate::stats::{Comparison, Estimate, Moments, compare_means, compare_proportions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// An event-time window ending at the as-of day, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    Days(u32),
    All,
}

impl Window {
    pub const STANDARD: [Window; 3] = [Window::Days(7), Window::Days(30), Window::Days(90)];

    /// `7`, `7d`, `30d`, `90d` or `all`.
    pub fn parse(s: &str) -> Option<Window> {
        let s = s.trim().to_ascii_lowercase();
        if s == "all" {
            return Some(Window::All);
        }
        let n: u32 = s.strip_suffix('d').unwrap_or(&s).parse().ok()?;
        (1..=3660).contains(&n).then_some(Window::Days(n))
    }

    /// First day of the window (None = unbounded) for a window ending at `as_of`.
    pub fn first_day(self, as_of: Day) -> Option<Day> {
        match self {
            Window::Days(n) => Some(as_of.plus_days(1 - n as i32)),
            Window::All => None,
        }
    }

    pub fn contains(self, as_of: Day, day: Day) -> bool {
        day <= as_of && self.first_day(as_of).is_none_or(|f| day >= f)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Days(n) => write!(f, "{n}d"),
            Window::All => f.write_str("all"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Channel,
    JourneyStage,
    Touchpoint,
    /// A segment attribute key, e.g. `tier`.
    Segment(String),
    Dimension,
}

impl GroupBy {
    /// `channel`, `stage`/`journey_stage`, `touchpoint`, `dimension`, `segment.KEY`.
    pub fn parse(s: &str) -> Option<GroupBy> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "channel" => Some(GroupBy::Channel),
            "stage" | "journey_stage" => Some(GroupBy::JourneyStage),
            "touchpoint" => Some(GroupBy::Touchpoint),
            "dimension" => Some(GroupBy::Dimension),
            _ => s.strip_prefix("segment.").filter(|k| !k.is_empty()).map(|k| GroupBy::Segment(k.to_string())),
        }
    }

    pub fn name(&self) -> String {
        match self {
            GroupBy::Channel => "channel".into(),
            GroupBy::JourneyStage => "journey_stage".into(),
            GroupBy::Touchpoint => "touchpoint".into(),
            GroupBy::Segment(k) => format!("segment.{k}"),
            GroupBy::Dimension => "dimension".into(),
        }
    }

    fn value(&self, c: &CellRef<'_>) -> GroupValue {
        match self {
            GroupBy::Channel => GroupValue::Channel(c.channel),
            GroupBy::JourneyStage => GroupValue::Stage(c.stage),
            GroupBy::Touchpoint => GroupValue::Text(c.touchpoint.map(str::to_owned)),
            GroupBy::Segment(k) => GroupValue::Text(c.attributes.get(k).map(str::to_owned)),
            GroupBy::Dimension => unreachable!("dimension rows are split from summaries"),
        }
    }
}

/// A group's value; ordered the way the vocabularies are, and "(none)" last.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupValue {
    Channel(Channel),
    Stage(JourneyStage),
    Dimension(Dimension),
    Text(Option<String>),
}

impl fmt::Display for GroupValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupValue::Channel(c) => f.write_str(c.as_str()),
            GroupValue::Stage(s) => f.write_str(s.as_str()),
            GroupValue::Dimension(d) => f.write_str(d.as_str()),
            GroupValue::Text(Some(t)) => f.write_str(t),
            GroupValue::Text(None) => f.write_str("(none)"),
        }
    }
}

/// Restricts a query to matching events; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub channels: Vec<Channel>,
    pub journey_stages: Vec<JourneyStage>,
    pub touchpoints: Vec<String>,
    pub segment: Vec<(String, String)>,
}

impl Filter {
    pub fn matches(&self, c: &CellRef<'_>) -> bool {
        (self.channels.is_empty() || self.channels.contains(&c.channel))
            && (self.journey_stages.is_empty() || self.journey_stages.contains(&c.stage))
            && (self.touchpoints.is_empty() || c.touchpoint.is_some_and(|t| self.touchpoints.iter().any(|x| x == t)))
            && c.attributes.matches(&self.segment)
    }
}

/// Which customers an at-risk list covers: a [`Filter`] less its touchpoints, which a
/// customer's record does not keep (it keeps the journey stages the customer touched and
/// each channel's experience: every valid event has an experience score, so every
/// channel the customer gave feedback through).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerFilter {
    /// Customers who gave feedback through any of these.
    pub channels: Vec<Channel>,
    /// Customers who touched any of these stages.
    pub journey_stages: Vec<JourneyStage>,
    /// Customers whose latest segment has all of these attributes.
    pub segment: Vec<(String, String)>,
}

/// Why touchpoints cannot select customers.
pub const CUSTOMERS_KEEP_NO_TOUCHPOINTS: &str =
    "a customer's record keeps the journey stages and channels of their feedback, not its touchpoints";

impl CustomerFilter {
    /// `filter` for customers; an error naming the field when it names touchpoints.
    pub fn of(filter: &Filter) -> Result<CustomerFilter, String> {
        if !filter.touchpoints.is_empty() {
            return Err(format!("touchpoints cannot select customers: {CUSTOMERS_KEEP_NO_TOUCHPOINTS}"));
        }
        Ok(CustomerFilter::lenient(filter))
    }

    /// `filter` for customers, its touchpoints left out.
    pub fn lenient(filter: &Filter) -> CustomerFilter {
        CustomerFilter {
            channels: filter.channels.clone(),
            journey_stages: filter.journey_stages.clone(),
            segment: filter.segment.clone(),
        }
    }

    pub fn matches<S>(&self, c: &crate::customer::CustomerState<S>, attributes: &Attributes) -> bool {
        (self.channels.is_empty() || c.channels.iter().any(|x| self.channels.contains(&x.channel)))
            && (self.journey_stages.is_empty() || self.journey_stages.iter().any(|s| c.stages & (1 << s.index()) != 0))
            && attributes.matches(&self.segment)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportQuery {
    pub window: Window,
    pub as_of: Day,
    pub group_by: Vec<GroupBy>,
    pub filter: Filter,
    /// Groups with fewer responses are flagged low-n (and left out of consistency gaps).
    pub min_n: u64,
    pub weights: ImportanceWeights,
}

impl ReportQuery {
    pub fn new(as_of: Day, window: Window) -> Self {
        ReportQuery {
            window,
            as_of,
            group_by: Vec::new(),
            filter: Filter::default(),
            min_n: 30,
            weights: ImportanceWeights::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    pub key: Vec<(String, GroupValue)>,
    pub summary: Summary,
}

/// Omnichannel inconsistency within a scope: how far apart channels' experience is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyGap {
    /// `all` or `key=value` of a segment attribute.
    pub scope: String,
    pub channels: Vec<(Channel, Estimate)>,
    /// Best minus worst channel mean experience score (0–1).
    pub spread: f64,
    /// Standard deviation of the channel means.
    pub stddev: f64,
    pub best: Channel,
    pub worst: Channel,
    /// Best channel against worst: is the spread more than noise?
    pub test: Option<Comparison>,
}

/// Management's view against customers', on the experience scale 0–1 and on the
/// instrument's own scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerceptionGap {
    pub touchpoint: String,
    pub journey_stage: Option<JourneyStage>,
    pub instrument: Instrument,
    pub assessors: usize,
    pub internal: f64,
    pub internal_native: f64,
    pub customer: Option<Estimate>,
    pub customer_native: Option<Estimate>,
    /// internal − customer: positive means the firm overrates itself.
    pub gap: Option<Estimate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapReport {
    pub as_of: Day,
    pub window: Window,
    pub from: Option<Day>,
    pub group_by: Vec<String>,
    pub overall: Summary,
    pub groups: Vec<GroupRow>,
    pub consistency: Vec<ConsistencyGap>,
    pub perception: Vec<PerceptionGap>,
}

fn merged<'a>(state: &'a GapState, pred: impl Fn(&CellRef<'a>) -> bool) -> CellAgg {
    let mut agg = CellAgg::default();
    for (c, a) in state.cells() {
        if pred(&c) {
            agg.merge(a);
        }
    }
    agg
}

pub fn gap_report(state: &GapState, q: &ReportQuery) -> GapReport {
    let event_groups: Vec<&GroupBy> = q.group_by.iter().filter(|g| **g != GroupBy::Dimension).collect();
    let mut overall = CellAgg::default();
    let mut groups: BTreeMap<Vec<GroupValue>, CellAgg> = BTreeMap::new();
    let mut scopes: BTreeMap<String, [Moments; 10]> = BTreeMap::new();
    for (c, agg) in state.cells() {
        if !q.window.contains(q.as_of, c.day) || !q.filter.matches(&c) {
            continue;
        }
        overall.merge(agg);
        if !q.group_by.is_empty() {
            let key = event_groups.iter().map(|g| g.value(&c)).collect();
            groups.entry(key).or_default().merge(agg);
        }
        if !agg.experience.is_empty() {
            scopes.entry("all".into()).or_default()[c.channel.index()].merge(&agg.experience);
            for (k, v) in &c.attributes.0 {
                scopes.entry(format!("{k}={v}")).or_default()[c.channel.index()].merge(&agg.experience);
            }
        }
    }
    let dim_pos = q.group_by.iter().position(|g| *g == GroupBy::Dimension);
    let mut rows = Vec::new();
    for (values, agg) in groups {
        let summary = agg.summary(&q.weights, q.min_n);
        let key: Vec<(String, GroupValue)> = event_groups.iter().map(|g| g.name()).zip(values).collect();
        match dim_pos {
            None => rows.push(GroupRow { key, summary }),
            Some(pos) => {
                for d in &summary.dimensions {
                    let mut key = key.clone();
                    key.insert(pos, ("dimension".into(), GroupValue::Dimension(d.dimension)));
                    let s = Summary {
                        dimensions: vec![*d],
                        service_quality: Some(d.gap),
                        service_quality_weighted: Some(d.gap),
                        low_n: d.gap.n < q.min_n,
                        ..summary.clone()
                    };
                    rows.push(GroupRow { key, summary: s });
                }
            }
        }
    }
    if dim_pos.is_some() {
        rows.sort_by(|a, b| {
            let ka: Vec<&GroupValue> = a.key.iter().map(|k| &k.1).collect();
            let kb: Vec<&GroupValue> = b.key.iter().map(|k| &k.1).collect();
            ka.cmp(&kb)
        });
    }
    let consistency = scopes
        .into_iter()
        .filter_map(|(scope, per_channel)| consistency(scope, &per_channel, q.min_n.max(2)))
        .collect();
    GapReport {
        as_of: q.as_of,
        window: q.window,
        from: q.window.first_day(q.as_of),
        group_by: q.group_by.iter().map(GroupBy::name).collect(),
        overall: overall.summary(&q.weights, q.min_n),
        groups: rows,
        consistency,
        perception: perception_gaps(state, q.window, q.as_of),
    }
}

fn consistency(scope: String, per_channel: &[Moments; 10], min_n: u64) -> Option<ConsistencyGap> {
    let channels: Vec<(Channel, Estimate)> = Channel::ALL
        .iter()
        .filter(|c| per_channel[c.index()].n >= min_n)
        .filter_map(|&c| Some((c, per_channel[c.index()].estimate(EXP_SCALE)?)))
        .collect();
    if channels.len() < 2 {
        return None;
    }
    let best = channels.iter().max_by(|a, b| a.1.value.total_cmp(&b.1.value))?.0;
    let worst = channels.iter().min_by(|a, b| a.1.value.total_cmp(&b.1.value))?.0;
    let means: Vec<f64> = channels.iter().map(|c| c.1.value).collect();
    let mean = means.iter().sum::<f64>() / means.len() as f64;
    let stddev = (means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / means.len() as f64).sqrt();
    Some(ConsistencyGap {
        scope,
        spread: means.iter().cloned().fold(f64::MIN, f64::max) - means.iter().cloned().fold(f64::MAX, f64::min),
        stddev,
        best,
        worst,
        test: compare_means(&per_channel[best.index()], &per_channel[worst.index()], EXP_SCALE),
        channels,
    })
}

fn instrument_moments(agg: &CellAgg, i: Instrument) -> &Moments {
    match i {
        Instrument::Nps => &agg.nps_score,
        Instrument::Csat => &agg.csat,
        Instrument::Ces => &agg.ces,
        Instrument::Dimension(d) => &agg.dims[d.index()].perception,
    }
}

type AssessmentGroup = (String, Option<JourneyStage>, Instrument);

fn assessment_groups(state: &GapState) -> BTreeMap<AssessmentGroup, Vec<u8>> {
    let mut groups: BTreeMap<AssessmentGroup, Vec<u8>> = BTreeMap::new();
    for a in state.assessments() {
        groups.entry((a.touchpoint.clone(), a.journey_stage, a.instrument)).or_default().push(a.score);
    }
    groups
}

/// Per touchpoint (and stage, when management assessed one) and instrument: the mean of
/// each assessor's latest score against customers' mean in the window.
pub fn perception_gaps(state: &GapState, window: Window, as_of: Day) -> Vec<PerceptionGap> {
    assessment_groups(state)
        .into_iter()
        .map(|((touchpoint, stage, instrument), scores)| {
            let internal_native = scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len() as f64;
            let internal = instrument.normalise(internal_native);
            let agg = merged(state, |c| {
                window.contains(as_of, c.day)
                    && c.touchpoint == Some(touchpoint.as_str())
                    && stage.is_none_or(|s| s == c.stage)
            });
            let customer_native = instrument_moments(&agg, instrument).estimate(1.0);
            let customer = customer_native.map(|e| e.map(|x| instrument.normalise(x)));
            PerceptionGap {
                gap: customer.map(|c| c.map(|x| internal - x)),
                touchpoint,
                journey_stage: stage,
                instrument,
                assessors: scores.len(),
                internal,
                internal_native,
                customer,
                customer_native,
            }
        })
        .collect()
}

/// The perception gap of each journey stage (indexed by `JourneyStage::index`): the
/// response-weighted mean over assessed touchpoints of management − customers.
pub fn stage_perception_gaps(state: &GapState, window: Window, as_of: Day) -> [Option<f64>; 9] {
    let groups = assessment_groups(state);
    let mut num = [0.0f64; 9];
    let mut den = [0u64; 9];
    for ((touchpoint, stage, instrument), scores) in &groups {
        let internal = instrument.normalise(scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len() as f64);
        let mut per_stage: [Moments; 9] = Default::default();
        for (c, a) in state.cells() {
            if window.contains(as_of, c.day)
                && c.touchpoint == Some(touchpoint.as_str())
                && stage.is_none_or(|s| s == c.stage)
            {
                per_stage[c.stage.index()].merge(instrument_moments(a, *instrument));
            }
        }
        for (i, m) in per_stage.iter().enumerate() {
            if let Some((mean, _)) = m.mean_var(1.0) {
                num[i] += m.n as f64 * (internal - instrument.normalise(mean));
                den[i] += m.n;
            }
        }
    }
    std::array::from_fn(|i| (den[i] > 0).then(|| num[i] / den[i] as f64))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Nps,
    CsatPercent,
    Ces,
    Experience,
    ServiceQuality,
    Sentiment,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nps" => Some(Metric::Nps),
            "csat" | "csat_percent" => Some(Metric::CsatPercent),
            "ces" => Some(Metric::Ces),
            "experience" => Some(Metric::Experience),
            "service_quality" | "sq" | "gap" => Some(Metric::ServiceQuality),
            "sentiment" => Some(Metric::Sentiment),
            _ => None,
        }
    }

    pub fn estimate(self, agg: &CellAgg) -> Option<Estimate> {
        let s = agg.summary(&ImportanceWeights::default(), 0);
        match self {
            Metric::Nps => s.nps.map(|n| n.wald),
            Metric::CsatPercent => s.csat_percent,
            Metric::Ces => s.ces,
            Metric::Experience => s.experience,
            Metric::ServiceQuality => s.service_quality_weighted,
            Metric::Sentiment => s.sentiment,
        }
    }

    /// Tests current against previous with the test that fits the metric.
    pub fn compare(self, cur: &CellAgg, prev: &CellAgg) -> Option<Comparison> {
        match self {
            Metric::Nps => cur.nps.compare(&prev.nps),
            Metric::CsatPercent => {
                compare_proportions(cur.csat_satisfied, cur.csat.n, prev.csat_satisfied, prev.csat.n).map(|c| {
                    let pct = |e: Estimate| e.map(|x| x * 100.0);
                    Comparison {
                        current: pct(c.current),
                        previous: pct(c.previous),
                        difference: c.difference * 100.0,
                        ..c
                    }
                })
            }
            Metric::Ces => compare_means(&cur.ces, &prev.ces, 1.0),
            Metric::Experience => compare_means(&cur.experience, &prev.experience, EXP_SCALE),
            Metric::Sentiment => compare_means(&cur.sentiment, &prev.sentiment, crate::score::SENT_SCALE),
            Metric::ServiceQuality => {
                let (c, p) = (self.estimate(cur)?, self.estimate(prev)?);
                Some(Comparison::from_variances(c, c.std_error().powi(2), p, p.std_error().powi(2)))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Day,
    Week,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendPoint {
    pub start: Day,
    pub estimate: Option<Estimate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    pub metric: Metric,
    pub points: Vec<TrendPoint>,
    /// The window against the window of the same length before it.
    pub comparison: Option<Comparison>,
}

/// The aggregate of a window and of the window of the same length just before it.
pub fn window_pair(state: &GapState, days: u32, as_of: Day, pred: impl Fn(&CellRef<'_>) -> bool) -> (CellAgg, CellAgg) {
    let prev_end = as_of.plus_days(-(days as i32));
    let (cur_w, prev_w) = (Window::Days(days), Window::Days(days));
    let mut cur = CellAgg::default();
    let mut prev = CellAgg::default();
    for (c, a) in state.cells() {
        if !pred(&c) {
            continue;
        }
        if cur_w.contains(as_of, c.day) {
            cur.merge(a);
        } else if prev_w.contains(prev_end, c.day) {
            prev.merge(a);
        }
    }
    (cur, prev)
}

pub fn trend(
    state: &GapState,
    metric: Metric,
    granularity: Granularity,
    window: Window,
    as_of: Day,
    filter: &Filter,
) -> Trend {
    let bucket = |d: Day| match granularity {
        Granularity::Day => d,
        Granularity::Week => Day::week_start(d.week()),
    };
    let mut series: BTreeMap<Day, CellAgg> = BTreeMap::new();
    for (c, a) in state.cells() {
        if window.contains(as_of, c.day) && filter.matches(&c) {
            series.entry(bucket(c.day)).or_default().merge(a);
        }
    }
    let comparison = match window {
        Window::Days(n) => {
            let (cur, prev) = window_pair(state, n, as_of, |c| filter.matches(c));
            metric.compare(&cur, &prev)
        }
        Window::All => None,
    };
    Trend {
        metric,
        points: series.into_iter().map(|(start, a)| TrendPoint { start, estimate: metric.estimate(&a) }).collect(),
        comparison,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerRisk {
    pub customer_id: String,
    pub risk: f64,
    pub health: f64,
    pub drivers: Vec<Driver>,
    pub features: Features,
    pub attributes: Attributes,
    pub customer_value: Option<f64>,
    pub last_seen: Timestamp,
    pub events: u64,
    /// Best minus worst channel experience for this customer (omnichannel consistency).
    pub channel_spread: Option<f64>,
}

/// Evaluates customers against one precomputed set of stage perception gaps.
#[derive(Debug)]
pub struct RiskView<'a> {
    state: &'a GapState,
    model: &'a RiskModel,
    as_of: Day,
    stage_gaps: [Option<f64>; 9],
}

impl<'a> RiskView<'a> {
    pub fn new(state: &'a GapState, model: &'a RiskModel, as_of: Day) -> Self {
        RiskView { state, model, as_of, stage_gaps: stage_perception_gaps(state, Window::Days(90), as_of) }
    }

    /// With stage perception gaps computed elsewhere, for a state that holds only some
    /// customers and none of the cells (a batch's working set).
    pub fn with_stage_gaps(
        state: &'a GapState,
        model: &'a RiskModel,
        as_of: Day,
        stage_gaps: [Option<f64>; 9],
    ) -> Self {
        RiskView { state, model, as_of, stage_gaps }
    }

    pub fn customer(&self, id: &str) -> Option<CustomerRisk> {
        let (c, attrs) = self.state.customer(id)?;
        Some(self.assess(id, c, attrs))
    }

    fn assess(&self, id: &str, c: &crate::customer::CustomerState<u32>, attrs: &Attributes) -> CustomerRisk {
        let features = c.features(self.as_of, self.model.half_life_days, &self.stage_gaps);
        let a = self.model.assess(&features);
        CustomerRisk {
            customer_id: id.to_string(),
            risk: a.risk,
            health: a.health,
            drivers: a.drivers,
            features,
            attributes: attrs.clone(),
            customer_value: c.customer_value,
            last_seen: c.last_seen,
            events: c.events,
            channel_spread: c.channel_spread(),
        }
    }

    /// Customers that `filter` covers at or above `min_risk`, ordered by risk × customer
    /// value (value 1 when unknown), then risk, then id.
    pub fn at_risk(&self, min_risk: f64, filter: &CustomerFilter, limit: usize) -> Vec<CustomerRisk> {
        let mut all: Vec<CustomerRisk> = self
            .state
            .customers()
            .filter(|(_, c, attrs)| filter.matches(c, attrs) && c.first_seen.day() <= self.as_of)
            .map(|(id, c, attrs)| self.assess(id, c, attrs))
            .filter(|r| r.risk >= min_risk)
            .collect();
        let priority = |r: &CustomerRisk| r.risk * r.customer_value.unwrap_or(1.0);
        all.sort_by(|a, b| {
            priority(b).total_cmp(&priority(a)).then(b.risk.total_cmp(&a.risk)).then(a.customer_id.cmp(&b.customer_id))
        });
        all.truncate(limit);
        all
    }
}
