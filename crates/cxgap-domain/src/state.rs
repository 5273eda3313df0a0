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

/// A vector kept in fixed-size chunks once it outgrows the first: growing never moves
/// what is stored. A doubling `Vec` of tens of megabytes of cells copies them on every
/// growth and leaves the old block to the allocator, which counts in the process's
/// resident memory until it is returned.
#[derive(Debug, Clone)]
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new() }
    }
}

impl<T> Chunked<T> {
    const CHUNK: usize = 4096;

    fn len(&self) -> usize {
        self.chunks.last().map_or(0, |last| (self.chunks.len() - 1) * Self::CHUNK + last.len())
    }

    /// Appends and returns the new element's index.
    fn push(&mut self, value: T) -> usize {
        match self.chunks.last_mut() {
            // The first chunk grows as a vector does, so small states stay small.
            Some(last) if last.len() < Self::CHUNK => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(if self.chunks.is_empty() { 0 } else { Self::CHUNK });
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len() - 1
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / Self::CHUNK][i % Self::CHUNK]
    }
}

impl<T> std::ops::IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / Self::CHUNK][i % Self::CHUNK]
    }
}

/// The identity of an applied event: 128 bits of SHA-256 of its id. Fixed-size keys keep
/// the deduplication set free of one allocation per event; two distinct ids share one
/// with a probability of about n²/2¹²⁹ (below 10⁻²⁰ at a billion events of a tenant), and
/// a cryptographic hash keeps a tenant from crafting ids that collide on purpose.
fn event_key(id: &str) -> u128 {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(id.as_bytes());
    u128::from_le_bytes(d[..16].try_into().expect("SHA-256 has 32 bytes"))
}

/// The big values (cells are ~800 bytes, customers ~130) live in [`Chunked`] vectors and
/// the hash tables hold their index: growing a table then moves small entries instead of
/// whole accumulators, and the values never move (measured: table growth and the page
/// faults behind it were about 40 % of the engine's time when cells were stored inline).
#[derive(Debug, Default, Clone)]
pub struct GapState {
    seen: FxHashSet<u128>,
    duplicates: u64,
    touchpoints: Interner<Option<String>>,
    segments: Interner<Attributes>,
    cell_index: FxHashMap<CellKey, u32>,
    cells: Chunked<(CellKey, CellAgg)>,
    customer_index: FxHashMap<Box<str>, u32>,
    customers: Chunked<CustomerState<u32>>,
    customer_ids: Chunked<Box<str>>,
    assessments: FxHashMap<AssessmentKey, (EventOrder, InternalAssessment)>,
    seen_assessments: FxHashSet<Box<str>>,
}

impl GapState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event; a second event with the same id is a no-op (first one wins).
    pub fn apply(&mut self, ev: &FeedbackEvent) -> Applied {
        if !self.seen.insert(event_key(&ev.event_id)) {
            self.duplicates += 1;
            return Applied::Duplicate;
        }
        let d = derive(ev);
        let key = CellKey {
            day: ev.occurred_at.day(),
            channel: ev.channel,
            stage: ev.journey_stage,
            touchpoint: self.touchpoints.intern(&ev.touchpoint),
            segment: self.segments.intern(&ev.attributes),
        };
        self.cell_mut(key).add(ev, &d);
        let seg = key.segment;
        match self.customer_index.get(ev.customer_id.as_str()) {
            Some(&i) => self.customers[i as usize].add(ev, &d, seg),
            None => {
                let mut c = CustomerState::new(ev, seg);
                c.add(ev, &d, seg);
                self.insert_customer(&ev.customer_id, c);
            }
        }
        Applied::New
    }

    fn cell_mut(&mut self, key: CellKey) -> &mut CellAgg {
        let cells = &mut self.cells;
        let i = *self.cell_index.entry(key).or_insert_with(|| cells.push((key, CellAgg::default())) as u32);
        &mut self.cells[i as usize].1
    }

    /// Inserts or replaces a customer.
    fn insert_customer(&mut self, id: &str, c: CustomerState<u32>) {
        match self.customer_index.get(id) {
            Some(&i) => self.customers[i as usize] = c,
            None => {
                self.customer_index.insert(id.into(), self.customers.len() as u32);
                self.customers.push(c);
                self.customer_ids.push(id.into());
            }
        }
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
        let key = self.cell_key(coords);
        self.cell_mut(key).merge(agg);
    }

    fn cell_key(&mut self, (day, channel, stage, touchpoint, attributes): &CellCoords) -> CellKey {
        CellKey {
            day: *day,
            channel: *channel,
            stage: *stage,
            touchpoint: self.touchpoints.intern(touchpoint),
            segment: self.segments.intern(attributes),
        }
    }

    /// Replaces a cell with its stored value: refreshing a state kept between reads of
    /// storage, where a changed row holds the cell's whole sums, not a delta.
    pub fn set_cell(&mut self, coords: &CellCoords, agg: &CellAgg) {
        let key = self.cell_key(coords);
        *self.cell_mut(key) = agg.clone();
    }

    /// Puts a stored customer back, replacing what is in memory, so new events for that
    /// customer continue from its stored state.
    pub fn put_customer(&mut self, id: &str, state: &CustomerState<Attributes>) {
        let seg = self.segments.intern(&state.segment);
        self.insert_customer(id, state.with_segment(seg));
    }

    /// A customer in storable form (segment resolved).
    pub fn customer_state(&self, id: &str) -> Option<CustomerState<Attributes>> {
        self.customer_ref(id).map(|c| c.with_segment(self.segments.get(c.segment).clone()))
    }

    fn customer_ref(&self, id: &str) -> Option<&CustomerState<u32>> {
        self.customer_index.get(id).map(|&i| &self.customers[i as usize])
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
        self.customer_ids.iter().zip(self.customers.iter()).map(|(id, c)| (&**id, c, self.segments.get(c.segment)))
    }

    pub fn customer(&self, id: &str) -> Option<(&CustomerState<u32>, &Attributes)> {
        self.customer_ref(id).map(|c| (c, self.segments.get(c.segment)))
    }

    pub fn assessments(&self) -> impl Iterator<Item = &InternalAssessment> {
        self.assessments.values().map(|(_, a)| a)
    }

    /// Latest event day in the state, the natural as-of for a historical export.
    pub fn last_day(&self) -> Option<Day> {
        self.cells.iter().map(|(k, _)| k.day).max()
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
        let mut customers: Vec<_> =
            self.customers().map(|(id, c, segment)| (id.to_string(), c.with_segment(segment.clone()))).collect();
        customers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seen: Vec<u128> = self.seen.iter().copied().collect();
        seen.sort_unstable();
        let mut assessments: Vec<_> = self.assessments.iter().map(|(k, (_, a))| (k.clone(), a.clone())).collect();
        assessments.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot { seen, cells, customers, assessments }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The applied events' identities (see `event_key`), sorted.
    pub seen: Vec<u128>,
    pub cells: Vec<(CellCoords, CellAgg)>,
    pub customers: Vec<(String, CustomerState<Attributes>)>,
    pub assessments: Vec<(AssessmentKey, InternalAssessment)>,
}

pub type CellCoords = (Day, Channel, JourneyStage, Option<String>, Attributes);

#[cfg(test)]
mod tests {
    use super::Chunked;

    #[test]
    fn chunked_indexes_across_chunks_in_push_order() {
        let mut c = Chunked::default();
        let n = Chunked::<usize>::CHUNK * 2 + 3;
        for i in 0..n {
            assert_eq!(c.push(i), i);
        }
        assert_eq!(c.len(), n);
        assert_eq!((c[0], c[Chunked::<usize>::CHUNK], c[n - 1]), (0, Chunked::<usize>::CHUNK, n - 1));
        c[5] = 50;
        assert!(c.iter().copied().eq((0..n).map(|i| if i == 5 { 50 } else { i })));
    }
}
