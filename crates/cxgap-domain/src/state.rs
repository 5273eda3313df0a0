//! A tenant's gap state: the aggregate cells, the customers and management's assessments,
//! built by applying events one at a time. Applying the same set of events in any order,
//! with any number of duplicates, gives an identical [`Snapshot`] — every accumulator is an
//! exact integer sum and every "latest" field is a max under a total order.

use crate::aggregate::CellAgg;
use crate::calendar::Day;
use crate::customer::{CustomerState, EventOrder, stable_hash};
use crate::model::{Attributes, Channel, FeedbackEvent, Instrument, InternalAssessment, JourneyStage, Segment};
use crate::score::derive;
use crate::slots::{SlotIndex, SmallId, hash32};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::sync::Arc;

/// Interned values: ids are assigned in arrival order, so they never leave this module
/// unresolved (snapshots and reports use the values). `K` is how a value is kept, looked
/// up by the value itself (`Q`): segments are kept shared (see [`Segment`]).
#[derive(Debug, Clone)]
struct Interner<K> {
    ids: FxHashMap<K, u32>,
    values: Vec<K>,
}

/// How an interner keeps a value it is given by reference.
trait Keep<Q: ?Sized> {
    fn keep(v: &Q) -> Self;
}

/// A touchpoint as the state keeps it: shared, so that each cell of a batch's writes
/// names its touchpoint without a new allocation holding a copy of the text. Looked up by
/// its text, with "" for none, as storage writes it: validation never lets an empty
/// touchpoint through, so the two cannot be confused.
#[derive(Debug, Clone)]
struct TouchpointKey(Option<Arc<str>>);

impl TouchpointKey {
    fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

impl std::hash::Hash for TouchpointKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl PartialEq for TouchpointKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TouchpointKey {}

impl PartialOrd for TouchpointKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// None first, then by text: as `Option<String>` orders them.
impl Ord for TouchpointKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::borrow::Borrow<str> for TouchpointKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Keep<str> for TouchpointKey {
    fn keep(v: &str) -> Self {
        TouchpointKey((!v.is_empty()).then(|| Arc::from(v)))
    }
}

impl Keep<Attributes> for Segment {
    fn keep(v: &Attributes) -> Self {
        Segment::new(v.clone())
    }
}

impl Keep<Segment> for Segment {
    fn keep(v: &Segment) -> Self {
        v.clone()
    }
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner { ids: FxHashMap::default(), values: Vec::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Interner<K> {
    fn intern<Q>(&mut self, v: &Q) -> u32
    where
        K: std::borrow::Borrow<Q> + Keep<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        match self.ids.get(v) {
            Some(&id) => id,
            None => self.insert(K::keep(v)),
        }
    }

    /// Interns a value already in kept form, keeping it as it is when it is new.
    fn intern_kept(&mut self, v: K) -> u32 {
        match self.ids.get(&v) {
            Some(&id) => id,
            None => self.insert(v),
        }
    }

    fn insert(&mut self, v: K) -> u32 {
        let id = self.values.len() as u32;
        self.values.push(v.clone());
        self.ids.insert(v, id);
        id
    }

    fn get(&self, id: u32) -> &K {
        &self.values[id as usize]
    }

    /// Each id's rank in the values' order: comparing ranks compares the values.
    fn ranks(&self) -> Vec<u32>
    where
        K: Ord,
    {
        let mut by_value: Vec<u32> = (0..self.values.len() as u32).collect();
        by_value.sort_unstable_by_key(|&id| &self.values[id as usize]);
        let mut rank = vec![0; self.values.len()];
        for (r, id) in by_value.into_iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        rank
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

    /// Room for `n` values in the first chunk (at most a chunk's worth).
    fn with_capacity(n: usize) -> Self {
        Chunked { chunks: if n == 0 { Vec::new() } else { vec![Vec::with_capacity(n.min(Self::CHUNK))] } }
    }

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

/// The identity of an applied event: SipHash-1-3 with 128-bit output over the id, under a
/// secret key drawn once per process. Fixed-size keys keep the deduplication set free of
/// one allocation per event; two distinct ids share one with a probability of about
/// n²/2¹²⁹ (below 10⁻²⁰ at a billion events of a tenant), and the key, which never leaves
/// the process, keeps a tenant from crafting ids that collide on purpose. The identities
/// are only compared within the process (the deduplication set, snapshots); across
/// processes the event id itself dedupes, in storage. SHA-256 did the same at 50 ns an id,
/// two passes of `std`'s 64-bit SipHash-1-3 at 7–11 ns (measured, 2026-12-01, twenty-eighth
/// run); this one 128-bit pass takes 181 instructions an id where those two took 446
/// (callgrind, 2026-12-02).
fn event_key(id: &str) -> u128 {
    use siphasher::sip128::SipHasher13;
    use std::hash::BuildHasher as _;
    static KEY: std::sync::OnceLock<SipHasher13> = std::sync::OnceLock::new();
    let hasher = KEY.get_or_init(|| {
        // `std`'s keys come from the operating system's random source; two outputs of a
        // hasher under them are two secret, unpredictable 64-bit keys.
        let random = std::hash::RandomState::new();
        SipHasher13::new_with_keys(random.hash_one(0u8), random.hash_one(1u8))
    });
    hasher.hash(id.as_bytes()).as_u128()
}

/// The big values (cells are 240 bytes of sums, customers 112) live in [`Chunked`] vectors and
/// the indexes hold their position: growing an index then moves small entries instead of
/// whole accumulators, and the values never move (measured: table growth and the page
/// faults behind it were about 40 % of the engine's time when cells were stored inline).
/// The indexes keep 8 bytes a record (see [`SlotIndex`]) and the records their own keys.
#[derive(Debug, Default, Clone)]
pub struct GapState {
    seen: FxHashSet<u128>,
    duplicates: u64,
    touchpoints: Interner<TouchpointKey>,
    segments: Interner<Segment>,
    cell_index: SlotIndex,
    cells: Chunked<(CellKey, CellAgg)>,
    customer_index: SlotIndex,
    /// Each customer beside its id: finding a customer reads the line its state starts on.
    customers: Chunked<(SmallId, CustomerState<u32>)>,
    assessments: FxHashMap<AssessmentKey, (EventOrder, InternalAssessment)>,
    seen_assessments: FxHashSet<Box<str>>,
}

/// Events are applied in groups of this many, each step of the work done for the whole
/// group before the next (see [`GapState::apply_all`]).
const GROUP: usize = 32;

impl GapState {
    pub fn new() -> Self {
        Self::default()
    }

    /// A state sized for `events` events from the start: a batch's delta, whose tables
    /// would otherwise grow from nothing, copying what they hold at each step, in every
    /// batch. Cells and customers are at most one per event (plus customers put back).
    pub fn with_capacity(events: usize) -> Self {
        GapState {
            seen: FxHashSet::with_capacity_and_hasher(events, Default::default()),
            cell_index: SlotIndex::with_capacity(events),
            cells: Chunked::with_capacity(events),
            customer_index: SlotIndex::with_capacity(events),
            customers: Chunked::with_capacity(events),
            ..Self::default()
        }
    }

    /// Applies one event; a second event with the same id is a no-op (first one wins).
    pub fn apply(&mut self, ev: &FeedbackEvent) -> Applied {
        let mut result = Applied::Duplicate;
        self.apply_all([ev], |_, a| result = a);
        result
    }

    /// Applies events in order, with the same result as [`GapState::apply`] on each, and
    /// tells `applied` what became of each one, in order.
    ///
    /// On a large state most of the time goes to cache misses: the event's id in the
    /// deduplication set, its cell and its customer. Taken one event at a time they follow
    /// one another, because the work between them (sentiment, the accumulators) fills the
    /// processor's window. So events go through in groups, each step done for the whole
    /// group before the next: hashing the ids, the deduplication set, the cells' and the
    /// customers' indexes, a first read of each record, and only then the accumulators.
    /// Within a step the misses of a group's events are independent and overlap.
    pub fn apply_all<'e>(
        &mut self,
        events: impl IntoIterator<Item = &'e FeedbackEvent>,
        mut applied: impl FnMut(&'e FeedbackEvent, Applied),
    ) {
        // Fixed arrays, not vectors: `apply` is `apply_all` of one event, and allocating
        // per call would cost it more than the lookups.
        let mut events = events.into_iter();
        let unset =
            CellKey { day: Day(0), channel: Channel::Web, stage: JourneyStage::Usage, touchpoint: 0, segment: 0 };
        loop {
            let Some(first) = events.next() else { return };
            let mut group = [first; GROUP];
            let mut n = 1;
            for ev in events.by_ref().take(GROUP - 1) {
                group[n] = ev;
                n += 1;
            }
            let group = &group[..n];
            let mut ids = [0u128; GROUP];
            for (id, ev) in ids.iter_mut().zip(group) {
                *id = event_key(&ev.event_id);
            }
            let mut new = [false; GROUP];
            for (new, id) in new.iter_mut().zip(&ids[..n]) {
                *new = self.seen.insert(*id);
            }
            let mut fresh = [first; GROUP];
            let mut m = 0;
            for (&ev, _) in group.iter().zip(&new).filter(|(_, new)| **new) {
                fresh[m] = ev;
                m += 1;
            }
            let fresh = &fresh[..m];
            let mut keys = [unset; GROUP];
            for (key, ev) in keys.iter_mut().zip(fresh) {
                *key = CellKey {
                    day: ev.occurred_at.day(),
                    channel: ev.channel,
                    stage: ev.journey_stage,
                    touchpoint: self.touchpoints.intern(ev.touchpoint.as_deref().unwrap_or("")),
                    segment: self.segments.intern(&ev.attributes),
                };
            }
            let keys = &keys[..m];
            // Candidates from the indexes first, then one read of each (their misses
            // overlap), then the comparisons of keys, which settle each lookup.
            let mut cells = [u32::MAX; GROUP];
            for (cell, key) in cells.iter_mut().zip(keys) {
                *cell = self.cell_index.candidate(hash32(key)).unwrap_or(u32::MAX);
            }
            let mut customers = [u32::MAX; GROUP];
            for (customer, ev) in customers.iter_mut().zip(fresh) {
                *customer = self.customer_index.candidate(hash32(ev.customer_id.as_str())).unwrap_or(u32::MAX);
            }
            let (cells, customers) = (&mut cells[..m], &mut customers[..m]);
            let mut touch = 0u64;
            for (&cell, &customer) in cells.iter().zip(customers.iter()) {
                if cell != u32::MAX {
                    touch ^= self.cells[cell as usize].1.events;
                }
                if customer != u32::MAX {
                    touch ^= self.customers[customer as usize].1.events;
                }
            }
            std::hint::black_box(touch);
            for (cell, key) in cells.iter_mut().zip(keys) {
                if *cell == u32::MAX || self.cells[*cell as usize].0 != *key {
                    *cell = self.cell_position(*key);
                }
            }
            for ((customer, ev), key) in customers.iter_mut().zip(fresh).zip(keys) {
                let id = ev.customer_id.as_str();
                if *customer == u32::MAX || self.customers[*customer as usize].0.as_bytes() != id.as_bytes() {
                    let h = hash32(id);
                    *customer = match self.customer_position_by(h, id) {
                        Some(pos) => pos,
                        None => self.push_customer(h, id, CustomerState::new(ev, key.segment)),
                    };
                }
            }
            // The customers' weekly buckets and channel scores live apart from them: one
            // read of each, all independent of one another, so their misses overlap too.
            let mut touch = 0u64;
            for &customer in customers.iter() {
                let c = &self.customers[customer as usize].1;
                touch ^= c.buckets.iter().fold(0, |t, b| t ^ u64::from(b.events))
                    ^ c.channels.first().map_or(0, |c| u64::from(c.n));
            }
            std::hint::black_box(touch);
            for (((ev, key), &cell), &customer) in fresh.iter().zip(keys).zip(cells.iter()).zip(customers.iter()) {
                let d = derive(ev);
                self.cells[cell as usize].1.add(ev, &d);
                self.customers[customer as usize].1.add(ev, &d, key.segment);
            }
            for (&ev, &new) in group.iter().zip(&new) {
                if new {
                    applied(ev, Applied::New);
                } else {
                    self.duplicates += 1;
                    applied(ev, Applied::Duplicate);
                }
            }
        }
    }

    /// The position of a cell, made empty if it is not there yet.
    fn cell_position(&mut self, key: CellKey) -> u32 {
        let h = hash32(&key);
        let cells = &self.cells;
        if let Some(pos) = self.cell_index.find(h, |pos| cells[pos as usize].0 == key) {
            return pos;
        }
        let pos = self.cells.push((key, CellAgg::default())) as u32;
        self.cell_index.insert(h, pos);
        pos
    }

    fn cell_mut(&mut self, key: CellKey) -> &mut CellAgg {
        let pos = self.cell_position(key);
        &mut self.cells[pos as usize].1
    }

    fn customer_position(&self, id: &str) -> Option<u32> {
        self.customer_position_by(hash32(id), id)
    }

    /// [`GapState::customer_position`] with the id's hash already taken (`h`).
    fn customer_position_by(&self, h: u32, id: &str) -> Option<u32> {
        let customers = &self.customers;
        self.customer_index.find(h, |pos| customers[pos as usize].0.as_bytes() == id.as_bytes())
    }

    /// Inserts or replaces a customer; returns its position.
    fn insert_customer(&mut self, id: &str, c: CustomerState<u32>) -> u32 {
        let h = hash32(id);
        if let Some(pos) = self.customer_position_by(h, id) {
            self.customers[pos as usize].1 = c;
            return pos;
        }
        self.push_customer(h, id, c)
    }

    /// Adds a customer the state does not hold (hash `h`); returns its position.
    fn push_customer(&mut self, h: u32, id: &str, c: CustomerState<u32>) -> u32 {
        let pos = self.customers.push((SmallId::new(id), c)) as u32;
        self.customer_index.insert(h, pos);
        pos
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
            touchpoint: self.touchpoints.intern(touchpoint.as_deref().unwrap_or("")),
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
    /// customer continue from its stored state. Takes the state: a batch's customers come
    /// from storage once, and their buckets move in rather than being copied.
    pub fn put_customer(&mut self, id: &str, state: CustomerState<Segment>) {
        let state = state.map_segment(|s| self.segments.intern_kept(s));
        self.insert_customer(id, state);
    }

    /// A customer in storable form (segment resolved).
    pub fn customer_state(&self, id: &str) -> Option<CustomerState<Segment>> {
        self.customer_ref(id).map(|c| c.with_segment(self.segments.get(c.segment).clone()))
    }

    fn customer_ref(&self, id: &str) -> Option<&CustomerState<u32>> {
        self.customer_position(id).map(|pos| &self.customers[pos as usize].1)
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
                    touchpoint: self.touchpoints.get(k.touchpoint).0.as_deref(),
                    attributes: self.segments.get(k.segment),
                },
                v,
            )
        })
    }

    pub fn customers(&self) -> impl Iterator<Item = (&str, &CustomerState<u32>, &Attributes)> {
        self.customers.iter().map(|(id, c)| (id.as_str(), c, &**self.segments.get(c.segment)))
    }

    pub fn customer(&self, id: &str) -> Option<(&CustomerState<u32>, &Attributes)> {
        self.customer_ref(id).map(|c| (c, &**self.segments.get(c.segment)))
    }

    pub fn assessments(&self) -> impl Iterator<Item = &InternalAssessment> {
        self.assessments.values().map(|(_, a)| a)
    }

    /// Latest event day in the state, the natural as-of for a historical export.
    pub fn last_day(&self) -> Option<Day> {
        self.cells.iter().map(|(k, _)| k.day).max()
    }

    /// What a batch's state has to write, taken apart instead of copied: the cells with
    /// their coordinates resolved and the customers with their segments, each sorted by
    /// key as in [`GapState::snapshot`] (so concurrent writers lock rows in one order).
    /// The analytics processor's delta ends here; copying it through `snapshot` cost two
    /// thirds as much as applying its events (see `docs/benchmarks.md`, 2026-12-01).
    pub fn into_writes(self) -> Writes {
        let cell_order = self.cell_order();
        let customer_order = self.customer_order();
        // Each value is taken from where it is kept, in the sorted order, leaving an empty
        // one behind (no allocation): moving them into a vector of options first copied
        // every cell twice.
        let GapState { touchpoints, segments, mut cells, mut customers, .. } = self;
        let cells = cell_order
            .into_iter()
            .map(|i| {
                let (k, v) = &mut cells[i as usize];
                let v = std::mem::take(v);
                (
                    (
                        k.day,
                        k.channel,
                        k.stage,
                        touchpoints.get(k.touchpoint).0.clone(),
                        segments.get(k.segment).clone(),
                    ),
                    v,
                )
            })
            .collect();
        let customers = customer_order
            .into_iter()
            .map(|i| {
                let (id, c) = &mut customers[i as usize];
                let c = std::mem::replace(c, CustomerState::vacant(0));
                (id.as_str().to_owned(), c.map_segment(|s| segments.get(s).clone()))
            })
            .collect();
        Writes { cells, customers }
    }

    /// The cells' positions in their keys' order: day, channel, stage, then touchpoint and
    /// segment by their values, whose ranks among the interned values order cells as their
    /// strings do (comparing the resolved strings cost more than the copy `into_writes`
    /// replaced, measured 2026-12-01). A batch's key and position nearly always fit one
    /// 64-bit integer (days counted from the earliest, each field in the bits its range
    /// needs), and integers sort without the branches of comparing tuples field by field;
    /// keys too wide for that sort as tuples.
    fn cell_order(&self) -> Vec<u32> {
        let touchpoint_rank = self.touchpoints.ranks();
        let segment_rank = self.segments.ranks();
        let n = self.cells.len();
        let (first, last) =
            self.cells.iter().fold((i32::MAX, i32::MIN), |(lo, hi), (k, _)| (lo.min(k.day.0), hi.max(k.day.0)));
        let bits = |count: usize| usize::BITS - count.saturating_sub(1).leading_zeros();
        let widths = [
            bits((i64::from(last) - i64::from(first) + 1).max(1) as usize),
            bits(Channel::ALL.len()),
            bits(JourneyStage::ALL.len()),
            bits(touchpoint_rank.len()),
            bits(segment_rank.len()),
            bits(n),
        ];
        if widths.iter().sum::<u32>() <= u64::BITS {
            let mut packed: Vec<u64> = self
                .cells
                .iter()
                .zip(0u64..)
                .map(|((k, _), i)| {
                    let fields = [
                        (i64::from(k.day.0) - i64::from(first)) as u64,
                        k.channel.index() as u64,
                        k.stage.index() as u64,
                        u64::from(touchpoint_rank[k.touchpoint as usize]),
                        u64::from(segment_rank[k.segment as usize]),
                        i,
                    ];
                    // No field is wider than 33 bits, so no shift reaches 64.
                    fields.iter().zip(widths).fold(0u64, |acc, (&f, w)| acc << w | f)
                })
                .collect();
            // The keys are distinct, so the bits above the position order them alone.
            let key_bits = widths.iter().sum::<u32>();
            radix_sort(&mut packed, widths[5], key_bits);
            let position = (1u64 << widths[5]) - 1;
            return packed.into_iter().map(|v| (v & position) as u32).collect();
        }
        let mut order: Vec<_> = self
            .cells
            .iter()
            .zip(0u32..)
            .map(|((k, _), i)| {
                (
                    (
                        k.day,
                        k.channel,
                        k.stage,
                        touchpoint_rank[k.touchpoint as usize],
                        segment_rank[k.segment as usize],
                    ),
                    i,
                )
            })
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, i)| i).collect()
    }

    /// The customers' positions in their ids' byte order. Sorted first on the ids' first
    /// twelve bytes (zero-padded) packed with the position into one integer, which orders
    /// ids that differ there as their bytes do, without a `memcmp` per comparison; then
    /// each run that shares those twelve bytes by the whole id.
    fn customer_order(&self) -> Vec<u32> {
        const PREFIX: usize = 12;
        let id_of = |i: u32| self.customers[i as usize].0.as_bytes();
        let mut packed: Vec<u128> = self
            .customers
            .iter()
            .zip(0u32..)
            .map(|((id, _), i)| {
                let (id, mut key) = (id.as_bytes(), [0u8; 16]);
                let k = id.len().min(PREFIX);
                key[..k].copy_from_slice(&id[..k]);
                key[PREFIX..].copy_from_slice(&i.to_be_bytes());
                u128::from_be_bytes(key)
            })
            .collect();
        packed.sort_unstable();
        let mut order: Vec<u32> = packed.iter().map(|&v| v as u32).collect();
        let mut start = 0;
        while start < packed.len() {
            let prefix = packed[start] >> 32;
            let end = start + packed[start..].iter().take_while(|&&v| v >> 32 == prefix).count();
            if end - start > 1 {
                order[start..end].sort_unstable_by(|&a, &b| id_of(a).cmp(id_of(b)));
            }
            start = end;
        }
        order
    }

    /// A canonical, fully resolved and sorted copy of the state, for equality checks.
    pub fn snapshot(&self) -> Snapshot {
        let mut cells: Vec<_> = self
            .cells
            .iter()
            .map(|(k, v)| {
                let touchpoint = self.touchpoints.get(k.touchpoint).0.clone();
                ((k.day, k.channel, k.stage, touchpoint, self.segments.get(k.segment).clone()), v.clone())
            })
            .collect();
        cells.sort_by(|a, b| a.0.cmp(&b.0));
        let mut customers: Vec<_> = self
            .customers
            .iter()
            .map(|(id, c)| (id.as_str().to_owned(), c.with_segment(self.segments.get(c.segment).clone())))
            .collect();
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
    pub customers: Vec<(String, CustomerState<Segment>)>,
    pub assessments: Vec<(AssessmentKey, InternalAssessment)>,
}

/// Sorts `values` by their bits from `from` up to `to`, a byte at a time from the lowest
/// (least-significant-digit radix sort), keeping the order of values equal in those bits.
/// A batch's cell keys are a few thousand integers of 20-odd bits: three or four passes
/// over them do less work than a comparison sort, whose branches on random keys the
/// processor mispredicts (the sort was 2–4 % of the samples of the engine as analytics
/// applies it, `perf`, 2026-12-01).
fn radix_sort(values: &mut Vec<u64>, from: u32, to: u32) {
    let mut sorted = vec![0u64; values.len()];
    let mut shift = from;
    let to = to.min(u64::BITS);
    while shift < to {
        // The last digit may be narrower than a byte: the bits above `to` do not count.
        let mask = (1usize << (to - shift).min(8)) - 1;
        let digit = |v: u64| (v >> shift) as usize & mask;
        let mut start = [0usize; 256];
        for &v in values.iter() {
            start[digit(v)] += 1;
        }
        let mut sum = 0;
        for s in start.iter_mut() {
            (*s, sum) = (sum, sum + *s);
        }
        for &v in values.iter() {
            let d = digit(v);
            sorted[start[d]] = v;
            start[d] += 1;
        }
        std::mem::swap(values, &mut sorted);
        shift += 8;
    }
}

/// See [`GapState::into_writes`].
#[derive(Debug, Clone, PartialEq)]
pub struct Writes {
    pub cells: Vec<(CellCoords, CellAgg)>,
    pub customers: Vec<(String, CustomerState<Segment>)>,
}

pub type CellCoords = (Day, Channel, JourneyStage, Option<Arc<str>>, Segment);

#[cfg(test)]
mod tests {
    use super::{Applied, Chunked, GapState, event_key, hash32, radix_sort};
    use crate::calendar::Timestamp;
    use crate::model::{Attributes, Channel, FeedbackEvent, JourneyStage};
    use crate::validate::FeedbackDraft;

    /// Event `n` of `customer`: an NPS answer on the web, at usage, on day 0.
    fn web_event(n: usize, customer: &str) -> FeedbackEvent {
        FeedbackDraft {
            event_id: format!("e{n}"),
            customer_id: customer.into(),
            channel: Some(Channel::Web),
            journey_stage: Some(JourneyStage::Usage),
            occurred_at: Some(Timestamp(0)),
            nps: Some(9),
            ..Default::default()
        }
        .validate(Timestamp(0), Default::default())
        .unwrap()
    }

    #[test]
    fn writes_share_one_copy_of_each_segment() {
        let event = |n: usize| {
            FeedbackDraft {
                event_id: format!("e{n}"),
                customer_id: format!("c{}", n % 4),
                attributes: vec![("tier".into(), ["gold", "silver"][n % 2].into())],
                channel: Some(Channel::ALL[n % 3]),
                journey_stage: Some(JourneyStage::Usage),
                occurred_at: Some(Timestamp(n as i64 * 86_400_000)),
                nps: Some(9),
                ..Default::default()
            }
            .validate(Timestamp(30 * 86_400_000), Default::default())
            .unwrap()
        };
        let events: Vec<_> = (0..24).map(event).collect();
        let mut s = GapState::new();
        s.apply_all(&events, |_, _| ());
        let snapshot = s.snapshot();
        let w = s.into_writes();
        // Sorted and equal to the snapshot, as before the segments were shared.
        assert_eq!(w.cells, snapshot.cells);
        assert_eq!(w.customers, snapshot.customers);
        let mut addresses = std::collections::BTreeMap::new();
        for segment in w.cells.iter().map(|(c, _)| &c.4).chain(w.customers.iter().map(|(_, c)| &c.segment)) {
            let first = *addresses.entry(segment.get("tier").unwrap().to_owned()).or_insert(segment.address());
            assert_eq!(segment.address(), first, "one copy per segment");
        }
        assert_eq!(addresses.len(), 2);
        // Stored as the attributes were, so rows written before read back.
        let gold = &w.customers[0].1.segment;
        assert_eq!(serde_json::to_string(gold).unwrap(), serde_json::to_string(&**gold).unwrap());
        let read: crate::model::Segment = serde_json::from_str(r#"[["tier","gold"]]"#).unwrap();
        assert_eq!(&read, gold);
    }

    #[test]
    fn event_keys_are_stable_within_the_process_and_tell_ids_apart() {
        // Ids that differ in one byte, in their length, or only past a 64-bit word.
        let ids: Vec<String> = (0..100_000)
            .map(|i| format!("evt-{i}"))
            .chain(["", "a", "a\0", "evt-12345678-x"].map(String::from))
            .collect();
        let keys: std::collections::HashSet<u128> = ids.iter().map(|id| event_key(id)).collect();
        assert_eq!(keys.len(), ids.len());
        assert_eq!(event_key("evt-42"), event_key(&String::from("evt-42")));
        // The 128 bits are not one 64-bit value twice.
        let (hi, lo) = (event_key("x") >> 64, event_key("x") as u64 as u128);
        assert_ne!(hi, lo);
    }

    #[test]
    fn customers_whose_ids_share_a_hash_stay_apart() {
        // Two ids with the same 32 hash bits (found by search): each lookup takes the
        // other's record as its first candidate, which only the comparison of ids rejects.
        let mut first = rustc_hash::FxHashMap::default();
        let (a, b) = (0u64..)
            .find_map(|i| {
                let id = format!("c{i}");
                first.insert(hash32(id.as_str()), id.clone()).map(|other| (other, id))
            })
            .expect("a 32-bit collision among 2^32+1 ids");
        let events: Vec<_> = (0..10).map(|n| web_event(n, if n % 3 == 0 { &a } else { &b })).collect();
        let mut s = GapState::new();
        // `a` first on its own, so that it is in the index when `b` is looked up.
        s.apply_all(&events[..1], |_, applied| assert_eq!(applied, Applied::New));
        s.apply_all(&events[1..], |_, applied| assert_eq!(applied, Applied::New));
        assert_eq!(s.customer_count(), 2);
        assert_eq!(s.customer(&a).map(|(c, _)| c.events), Some(4));
        assert_eq!(s.customer(&b).map(|(c, _)| c.events), Some(6));
    }

    #[test]
    fn a_state_taken_apart_for_writing_holds_what_its_snapshot_copies() {
        // More customers and cells than one chunk holds, several segments and touchpoints
        // (and none), and stored customers put back in, as a batch's delta has them.
        let n = Chunked::<usize>::CHUNK + 500;
        let event = |i: usize| {
            FeedbackDraft {
                event_id: format!("e{i}"),
                customer_id: format!("c{}", i % (n - 7)),
                attributes: vec![("tier".into(), ["gold", "silver", "bronze"][i % 3].into())],
                channel: Some(Channel::ALL[i % Channel::ALL.len()]),
                journey_stage: Some(JourneyStage::ALL[i % JourneyStage::ALL.len()]),
                touchpoint: if i.is_multiple_of(7) { String::new() } else { format!("tp{}", i % 7) },
                occurred_at: Some(Timestamp((i as i64 % 37) * 86_400_000)),
                nps: Some((i % 11) as i64),
                ..Default::default()
            }
            .validate(Timestamp(50 * 86_400_000), Default::default())
            .unwrap()
        };
        let earlier: Vec<_> = (n..n + 50).map(event).collect();
        let mut stored = GapState::new();
        stored.apply_all(&earlier, |_, _| ());
        let mut s = GapState::new();
        for (id, c) in stored.into_writes().customers {
            s.put_customer(&id, c);
        }
        let events: Vec<_> = (0..n).map(event).collect();
        s.apply_all(&events, |_, _| ());
        let snap = s.snapshot();
        assert!(snap.cells.len() > Chunked::<usize>::CHUNK && snap.customers.len() > Chunked::<usize>::CHUNK);
        let writes = s.into_writes();
        assert_eq!(writes.cells, snap.cells);
        assert_eq!(writes.customers, snap.customers);
    }

    #[test]
    fn writes_sort_ids_that_share_their_first_bytes_by_the_whole_id() {
        // Ids sharing the twelve bytes the first sort packs, ids that are prefixes of
        // others, a zero byte (what shorter ids are padded with; validation turns it away,
        // but the state orders any bytes) and non-ASCII bytes.
        let ids = [
            "customer-000-b",
            "customer-000-a",
            "customer-000",
            "customer-00",
            "customer-000\0",
            "customer-000-a\0",
            "c\0",
            "c",
            "é-1",
            "e-1",
            "customer-001",
            "customer-000-aa",
        ];
        let events: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let mut event = web_event(n, "c");
                event.customer_id = (*id).into();
                event
            })
            .collect();
        let mut s = GapState::new();
        s.apply_all(&events, |_, applied| assert_eq!(applied, Applied::New));
        let snap = s.snapshot();
        let writes = s.into_writes();
        let mut sorted: Vec<_> = ids.iter().map(|id| id.as_bytes()).collect();
        sorted.sort();
        assert!(writes.customers.iter().map(|(id, _)| id.as_bytes()).eq(sorted));
        assert_eq!(writes.customers, snap.customers);
    }

    #[test]
    fn cells_whose_keys_are_too_wide_for_one_integer_sort_as_tuples() {
        // Days 2²⁸ apart (29 bits: a packed key would lose the top one, which orders the
        // latest day first), 600 touchpoints, 600 segments and 600 cells (10 bits each)
        // and 8 bits for channel and stage: 67 bits, past the 64 of the packed sort.
        let n = 600;
        let event = |i: usize| {
            FeedbackDraft {
                event_id: format!("e{i}"),
                customer_id: format!("c{}", i % 7),
                attributes: vec![("tier".into(), format!("t{}", (i * 7) % n))],
                channel: Some(Channel::ALL[i % Channel::ALL.len()]),
                journey_stage: Some(JourneyStage::ALL[i % JourneyStage::ALL.len()]),
                touchpoint: format!("tp{}", (i * 13) % n),
                occurred_at: Some(Timestamp([-(1 << 28), 5 - (1 << 28), 0][i % 3] * 86_400_000)),
                nps: Some((i % 11) as i64),
                ..Default::default()
            }
            .validate(Timestamp(n as i64 * 86_400_000), Default::default())
            .unwrap()
        };
        let events: Vec<_> = (0..n).map(event).collect();
        let mut s = GapState::new();
        s.apply_all(&events, |_, _| ());
        assert_eq!(s.cell_count(), n);
        let snap = s.snapshot();
        let writes = s.into_writes();
        assert_eq!(writes.cells, snap.cells);
        assert_eq!(writes.customers, snap.customers);
    }

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

    #[test]
    fn radix_sort_orders_by_the_bits_asked_and_keeps_ties_in_order() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (n, from, to) in [(0, 0, 64), (1, 3, 20), (2_000, 11, 32), (5_000, 0, 64), (3_000, 40, 64), (700, 5, 9)] {
            let values: Vec<u64> = (0..n).map(|_| next()).collect();
            let span = to - from;
            let bits = |v: &u64| (v >> from) & if span == 64 { u64::MAX } else { (1u64 << span) - 1 };
            let mut expected = values.clone();
            expected.sort_by_key(bits);
            let mut sorted = values;
            radix_sort(&mut sorted, from, to);
            assert_eq!(sorted, expected, "{n} values by bits {from}..{to}");
        }
    }

    #[test]
    fn segments_with_the_same_values_under_other_keys_stay_apart() {
        // Segments are hashed by their values alone: equal values must still be told
        // apart by their keys.
        let event = |n: usize, key: &str| FeedbackEvent {
            attributes: Attributes(vec![(key.into(), "gold".into())]),
            ..web_event(n, &format!("c{n}"))
        };
        let mut s = GapState::new();
        s.apply_all(&[event(0, "tier"), event(1, "plan"), event(2, "tier")], |_, _| ());
        let cells: Vec<_> = s.cells().map(|(c, agg)| (c.attributes.0.clone(), agg.events)).collect();
        assert_eq!(cells.len(), 2, "{cells:?}");
        assert!(cells.contains(&(vec![("tier".into(), "gold".into())], 2)));
        assert!(cells.contains(&(vec![("plan".into(), "gold".into())], 1)));
    }
}
