//! A tenant's gap state: the aggregate cells, the customers and management's assessments,
//! built by applying events one at a time. Applying the same set of events in any order,
//! with any number of duplicates, gives an identical [`Snapshot`] — every accumulator is an
//! exact integer sum and every "latest" field is a max under a total order.

use crate::aggregate::CellAgg;
use crate::calendar::Day;
use crate::customer::{CustomerState, EventOrder, stable_hash};
use crate::model::{Attributes, Channel, FeedbackEvent, Instrument, InternalAssessment, JourneyStage};
use crate::score::derive;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

/// Interned strings: ids are assigned in arrival order, so they never leave this module
/// unresolved (snapshots and reports use the strings).
#[derive(Debug, Default, Clone)]
struct Interner<T> {
    ids: FxHashMap<T, u32>,
    values: Vec<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Interner<T> {
    fn intern(&mut self, v: &T) -> u32 {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(v.clone());
        self.ids.insert(v.clone(), id);
        id
    }

    fn get(&self, id: u32) -> &T {
        &self.values[id as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CellKey {
    pub day: Day,
    pub channel: Channel,
    pub stage: JourneyStage,
    pub touchpoint: u32,
    pub segment: u32,
}

/// A cell's coordinates, resolved to strings.
#[derive(Debug, Clone, Copy)]
pub struct CellRef<'a> {
    pub day: Day,
    pub channel: Channel,
    pub stage: JourneyStage,
    pub touchpoint: Option<&'a str>,
    pub attributes: &'a Attributes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    New,
    Duplicate,
}

/// Internal assessments are keyed so that each assessor's latest view of a touchpoint
/// (and stage) on an instrument counts once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AssessmentKey {
    pub touchpoint: String,
    pub journey_stage: Option<JourneyStage>,
    pub instrument: Instrument,
    pub assessor: String,
}

#[derive(Debug, Default, Clone)]
pub struct GapState {
    seen: FxHashSet<Box<str>>,
    duplicates: u64,
    touchpoints: Interner<Option<String>>,
    segments: Interner<Attributes>,
    cells: FxHashMap<CellKey, CellAgg>,
    customers: FxHashMap<Box<str>, CustomerState<u32>>,
    assessments: FxHashMap<AssessmentKey, (EventOrder, InternalAssessment)>,
    seen_assessments: FxHashSet<Box<str>>,
}

impl GapState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event; a second event with the same id is a no-op (first one wins).
    pub fn apply(&mut self, ev: &FeedbackEvent) -> Applied {
        if self.seen.contains(ev.event_id.as_str()) {
            self.duplicates += 1;
            return Applied::Duplicate;
        }
        self.seen.insert(ev.event_id.as_str().into());
        let d = derive(ev);
        let key = CellKey {
            day: ev.occurred_at.day(),
            channel: ev.channel,
            stage: ev.journey_stage,
            touchpoint: self.touchpoints.intern(&ev.touchpoint),
            segment: self.segments.intern(&ev.attributes),
        };
        self.cells.entry(key).or_default().add(ev, &d);
        let seg = key.segment;
        match self.customers.get_mut(ev.customer_id.as_str()) {
            Some(c) => c.add(ev, &d, seg),
            None => {
                let mut c = CustomerState::new(ev, seg);
                c.add(ev, &d, seg);
                self.customers.insert(ev.customer_id.as_str().into(), c);
            }
        }
        Applied::New
    }

    /// Keeps each assessor's latest assessment per touchpoint, stage and instrument.
    pub fn apply_assessment(&mut self, a: &InternalAssessment) -> Applied {
        if !self.seen_assessments.insert(a.assessment_id.as_str().into()) {
            return Applied::Duplicate;
        }
        let key = AssessmentKey {
            touchpoint: a.touchpoint.clone(),
            journey_stage: a.journey_stage,
            instrument: a.instrument,
            assessor: a.assessor.clone(),
        };
        let order = EventOrder { at: a.assessed_at, id_hash: stable_hash(a.assessment_id.as_bytes()) };
        match self.assessments.get(&key) {
            Some((o, _)) if *o >= order => {}
            _ => {
                self.assessments.insert(key, (order, a.clone()));
            }
        }
        Applied::New
    }

    /// Merges a stored cell into the state: rebuilding reports from storage, where each
    /// row holds additive sums.
    pub fn merge_cell(&mut self, coords: &CellCoords, agg: &CellAgg) {
        let (day, channel, stage, touchpoint, attributes) = coords;
        let key = CellKey {
            day: *day,
            channel: *channel,
            stage: *stage,
            touchpoint: self.touchpoints.intern(touchpoint),
            segment: self.segments.intern(attributes),
        };
        self.cells.entry(key).or_default().merge(agg);
    }

    /// Puts a stored customer back, replacing what is in memory, so new events for that
    /// customer continue from its stored state.
    pub fn put_customer(&mut self, id: &str, state: &CustomerState<Attributes>) {
        let seg = self.segments.intern(&state.segment);
        self.customers.insert(id.into(), state.with_segment(seg));
    }

    /// A customer in storable form (segment resolved).
    pub fn customer_state(&self, id: &str) -> Option<CustomerState<Attributes>> {
        self.customers.get(id).map(|c| c.with_segment(self.segments.get(c.segment).clone()))
    }

    pub fn events(&self) -> usize {
        self.seen.len()
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn customer_count(&self) -> usize {
        self.customers.len()
    }

    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }

    pub fn cells(&self) -> impl Iterator<Item = (CellRef<'_>, &CellAgg)> {
        self.cells.iter().map(|(k, v)| {
            (
                CellRef {
                    day: k.day,
                    channel: k.channel,
                    stage: k.stage,
                    touchpoint: self.touchpoints.get(k.touchpoint).as_deref(),
                    attributes: self.segments.get(k.segment),
                },
                v,
            )
        })
    }

    pub fn customers(&self) -> impl Iterator<Item = (&str, &CustomerState<u32>, &Attributes)> {
        self.customers.iter().map(|(id, c)| (&**id, c, self.segments.get(c.segment)))
    }

    pub fn customer(&self, id: &str) -> Option<(&CustomerState<u32>, &Attributes)> {
        self.customers.get(id).map(|c| (c, self.segments.get(c.segment)))
    }

    pub fn assessments(&self) -> impl Iterator<Item = &InternalAssessment> {
        self.assessments.values().map(|(_, a)| a)
    }

    /// Latest event day in the state, the natural as-of for a historical export.
    pub fn last_day(&self) -> Option<Day> {
        self.cells.keys().map(|k| k.day).max()
    }

    /// A canonical, fully resolved and sorted copy of the state, for equality checks.
    pub fn snapshot(&self) -> Snapshot {
        let mut cells: Vec<_> = self
            .cells()
            .map(|(k, v)| {
                ((k.day, k.channel, k.stage, k.touchpoint.map(str::to_owned), k.attributes.clone()), v.clone())
            })
            .collect();
        cells.sort_by(|a, b| a.0.cmp(&b.0));
        let mut customers: Vec<_> = self
            .customers
            .iter()
            .map(|(id, c)| (id.to_string(), c.with_segment(self.segments.get(c.segment).clone())))
            .collect();
        customers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seen: Vec<String> = self.seen.iter().map(|s| s.to_string()).collect();
        seen.sort();
        let mut assessments: Vec<_> = self.assessments.iter().map(|(k, (_, a))| (k.clone(), a.clone())).collect();
        assessments.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot { seen, cells, customers, assessments }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub seen: Vec<String>,
    pub cells: Vec<(CellCoords, CellAgg)>,
    pub customers: Vec<(String, CustomerState<Attributes>)>,
    pub assessments: Vec<(AssessmentKey, InternalAssessment)>,
}

pub type CellCoords = (Day, Channel, JourneyStage, Option<String>, Attributes);
