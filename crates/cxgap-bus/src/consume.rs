//! The consume loop every cxgap consumer shares. Batches are gathered up to a size or a
//! time bound, split by partition and handed to a [`PartitionProcessor`], which applies
//! each partition batch (or a group of small ones) in one storage transaction together
//! with the partitions' next offsets. The database is the truth about progress: Kafka
//! offsets are committed after it only as a hint (and not at all when the database
//! assigns the partitions), so a crash between the two replays records that the
//! processor then skips. A transient failure retries the same records; nothing is
//! acknowledged before it is durable. On shutdown the batch in hand is finished first.

use crate::{Consumed, GapAction, Rewinds, Subscriber};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A partition batch starts beyond the offset the database says is next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub partition: i32,
    /// The stored next offset.
    pub expected: i64,
    /// The first record not applied before.
    pub first: i64,
    /// Whether the batch also held records before `expected` (read contiguously up to it).
    pub replayed: bool,
}

impl Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partition {}: records start at offset {}, the next to apply is {}",
            self.partition, self.first, self.expected
        )
    }
}

/// The records of a partition batch not applied before, in offset order.
#[derive(Debug)]
pub struct Fresh<'a> {
    pub records: Vec<&'a Consumed>,
    /// Records below the stored offset: applied by an earlier run.
    pub replayed: usize,
}

impl Fresh<'_> {
    /// The offset to store after applying these records (`None`: nothing to apply).
    pub fn next_offset(&self) -> Option<i64> {
        self.records.iter().map(|r| r.offset).max().map(|o| o + 1)
    }
}

/// Splits one partition's batch at `expected`, the stored next offset. Applying records
/// that start beyond it would store an offset past records never applied, so that is a
/// [`Gap`] unless `accept_gap` says the consumer rewound and found the gap in the log itself.
pub fn fresh(partition: i32, records: &[Consumed], expected: Option<i64>, accept_gap: bool) -> Result<Fresh<'_>, Gap> {
    let from = expected.unwrap_or(0);
    let mut fresh: Vec<&Consumed> = records.iter().filter(|r| r.offset >= from).collect();
    fresh.sort_by_key(|r| r.offset);
    let replayed = records.len() - fresh.len();
    if let (Some(expected), Some(first)) = (expected, fresh.first().map(|r| r.offset))
        && first > expected
    {
        if !accept_gap {
            return Err(Gap { partition, expected, first, replayed: replayed > 0 });
        }
        warn!(partition, expected, first, "offsets missing from the log itself (compaction or retention); continuing");
    }
    Ok(Fresh { records: fresh, replayed })
}

/// What a failed batch means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The records start beyond the stored offset: rewind and read again.
    Gap(Gap),
    /// The stored offset moved under us: another instance owns the partition now.
    Fenced,
    /// Anything else (database or broker unavailable): retry the same records.
    Retry,
}

/// One consumer's side of the loop: applies a partition batch atomically with its offset.
pub trait PartitionProcessor: Send + Sync {
    type Stats: Send;
    type Error: Display + Send;

    /// The topic consumed.
    fn topic(&self) -> &str;

    /// The next offset stored for `partition` (`None`: nothing applied yet).
    fn stored_offset(&self, partition: i32) -> impl Future<Output = Result<Option<i64>, Self::Error>> + Send;

    /// Applies `records` (one partition, offset order) in one transaction; see [`fresh`].
    fn process(
        &self,
        partition: i32,
        records: &[Consumed],
        accept_gap: bool,
    ) -> impl Future<Output = Result<Self::Stats, Self::Error>> + Send;

    fn failure(error: &Self::Error) -> Failure;

    /// Whether the batch applied anything beyond replayed records.
    fn advanced(stats: &Self::Stats) -> bool;

    /// Applies several partitions' batches (offset order each, none being rewound) in one
    /// transaction, each partition's offset moving as in [`PartitionProcessor::process`]; a
    /// gap or a fence in any of them fails them all, and the loop then applies them one by
    /// one. `None`: this processor does not group (the default).
    fn process_group(
        &self,
        parts: &[(i32, &[Consumed])],
    ) -> impl Future<Output = Option<Result<Self::Stats, Self::Error>>> + Send {
        let _ = parts;
        std::future::ready(None)
    }

    /// Called after each committed batch (metrics, waking whoever waits for new state); for
    /// a group, once, with its first partition.
    fn committed(&self, partition: i32, stats: &Self::Stats, took: Duration);
}

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_events: usize,
    /// The longest a batch keeps filling while records keep arriving.
    pub max_wait: Duration,
    /// A batch closes as soon as no record arrived for this long: under load batches fill
    /// up (fewer transactions), while a lone record is not held back for `max_wait`.
    pub idle: Duration,
    /// How many partitions' batches may be in flight at once. One where the database
    /// serialises writers on a single connection (SQLite): side by side there, batches
    /// only queue for the connection, and everything else that needs it (queries, the
    /// outbox relay, leases) waits behind all of them.
    pub max_in_flight: usize,
    /// Partition batches ready together whose records total at most this go to the
    /// processor as one group, one transaction (0: never). At low rates a batch spreads a
    /// few records over many partitions, and a transaction (and a commit's WAL flush) for
    /// each cost more than the records themselves.
    pub group_below: usize,
}

impl BatchLimits {
    pub const IDLE: Duration = Duration::from_millis(3);

    pub fn new(max_events: usize, max_wait: Duration) -> BatchLimits {
        BatchLimits { max_events, max_wait, idle: Self::IDLE.min(max_wait), max_in_flight: 8, group_below: 0 }
    }

    pub fn grouped(self, group_below: usize) -> BatchLimits {
        BatchLimits { group_below, ..self }
    }

    pub fn in_flight(self, max_in_flight: usize) -> BatchLimits {
        BatchLimits { max_in_flight: max_in_flight.max(1), ..self }
    }
}

/// Partitions to read, when something other than the broker's group protocol assigns them
/// (`None` until the first assignment).
pub type Assignments = watch::Receiver<Option<Vec<i32>>>;

/// Consumes until `shutdown`. With `assignments`, the partitions come from that channel
/// (the database leases) and are read from their stored offsets; without, the broker's
/// group assigns them and processed offsets are committed to it as a hint.
///
/// Partitions are processed side by side: a partition batch is handed to the processor as
/// soon as the batch it came in closes, unless that partition already has one in flight,
/// in which case its records wait for it (each partition's batches stay in offset order,
/// one at a time). Partitions are independent — each has its own stored offset, and
/// records are keyed so that one customer's events share a partition — so one
/// partition's transaction no longer waits for another's, and the processor's work
/// overlaps the database's. Small partition batches that are ready together go as one
/// group in one transaction instead ([`BatchLimits::group_below`]), when the processor
/// groups. Reading pauses while too many records wait.
pub async fn run<S: Subscriber, P: PartitionProcessor>(
    mut sub: S,
    processor: &P,
    limits: BatchLimits,
    shutdown: &CancellationToken,
    mut assignments: Option<Assignments>,
) -> Result<(), String> {
    let group_commits = assignments.is_none();
    let topic = processor.topic().to_string();
    let rewinds = Mutex::new(Rewinds::default());
    let mut in_flight = FuturesUnordered::new();
    // Partitions with a batch in flight.
    let mut busy: BTreeSet<i32> = BTreeSet::new();
    // Records read for a partition that has a batch in flight.
    let mut waiting: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
    let mut batch: Vec<Consumed> = Vec::new();
    let mut batch_deadline = tokio::time::Instant::now();
    let mut idle_deadline = tokio::time::Instant::now();
    let max_waiting = limits.max_events.saturating_mul(4);
    let start = |unit: Vec<(i32, Vec<Consumed>)>| {
        let rewinds = &rewinds;
        async move {
            let last = |records: &[Consumed]| records.last().map(|r| r.offset);
            if unit.len() > 1 {
                let started = Instant::now();
                let parts: Vec<(i32, &[Consumed])> = unit.iter().map(|(p, r)| (*p, r.as_slice())).collect();
                match processor.process_group(&parts).await {
                    Some(Ok(stats)) => {
                        processor.committed(unit[0].0, &stats, started.elapsed());
                        return unit.iter().map(|(p, r)| (*p, last(r), Ok(Outcome::Committed))).collect::<Vec<_>>();
                    }
                    Some(Err(e)) => {
                        info!(error = %e, partitions = unit.len(), "grouped batch refused; applying its partitions one by one");
                    }
                    None => {}
                }
            }
            let each = unit.iter().map(|(partition, records)| async move {
                (*partition, last(records), apply(processor, *partition, records, rewinds, shutdown).await)
            });
            futures_util::future::join_all(each).await
        }
    };
    loop {
        let waiting_now: usize = waiting.values().map(Vec::len).sum();
        // A new assignment is taken between batches: stop reading, let what is in flight
        // finish, then point the subscriber at the new partitions.
        let reassign = assignments.as_ref().is_some_and(|rx| rx.has_changed().unwrap_or(false));
        if reassign && in_flight.is_empty() && batch.is_empty() {
            let rx = assignments.as_mut().expect("checked above");
            let mine = rx.borrow_and_update().clone().unwrap_or_default();
            waiting.clear();
            busy.clear();
            if let Err(e) = assign(&mut sub, processor, &topic, &mine).await {
                warn!(error = %e, "could not take the new assignment; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                rx.mark_changed();
            }
            continue;
        }
        let read = !reassign && batch.len() < limits.max_events && waiting_now < max_waiting;
        let close_at = batch_deadline.min(idle_deadline);
        let assigner_gone = async {
            match assignments.as_mut() {
                Some(rx) if !reassign => rx.changed().await.is_err(),
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            gone = assigner_gone => {
                if gone {
                    assignments = None; // the assigner stopped: keep what we have
                }
                // Otherwise a new assignment arrived: taken at the top of the loop. The
                // watch stays marked as changed until then.
                if let Some(rx) = assignments.as_mut() {
                    rx.mark_changed();
                }
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let done: Vec<(i32, Option<i64>, Result<Outcome, String>)> = done;
                let mut finished = Vec::with_capacity(done.len());
                for (partition, last, outcome) in done {
                    match outcome? {
                        Outcome::Committed => {
                            if group_commits
                                && let Some(last) = last
                                && let Err(e) = sub.commit(&topic, partition, last)
                            {
                                warn!(error = %e, partition, "offset hint not committed to Kafka (the database has it)");
                            }
                        }
                        Outcome::Rewind(to) => {
                            // What was read after the refused batch is read again from `to`;
                            // left in hand, it would look like another gap at the same offset,
                            // and a gap seen again once the window reaches the start is accepted
                            // as being in the log (records would be skipped).
                            waiting.remove(&partition);
                            batch.retain(|c| c.partition != partition);
                            if let Err(e) = sub.seek(&topic, partition, to) {
                                warn!(error = %e, partition, "seek failed; the batch is dropped and read again");
                            }
                        }
                        Outcome::Dropped => {}
                    }
                    busy.remove(&partition);
                    finished.push(partition);
                }
                // The partitions that just finished first (their records have waited
                // longest), then any other waiting partition while there is room.
                let mut ready: Vec<i32> = finished.clone();
                ready.extend(waiting.keys().copied().filter(|p| !finished.contains(p)));
                let ready: Vec<(i32, Vec<Consumed>)> = ready
                    .into_iter()
                    .filter(|p| !busy.contains(p))
                    .filter_map(|p| {
                        let mut records = waiting.remove(&p)?;
                        if records.len() > limits.max_events {
                            waiting.insert(p, records.split_off(limits.max_events));
                        }
                        Some((p, records))
                    })
                    .collect();
                for unit in units(ready, limits.group_below, &rewinds) {
                    if in_flight.len() < limits.max_in_flight {
                        busy.extend(unit.iter().map(|(p, _)| *p));
                        in_flight.push(start(unit));
                    } else {
                        // Put back in front of anything read since.
                        for (p, mut records) in unit {
                            records.extend(waiting.remove(&p).unwrap_or_default());
                            waiting.insert(p, records);
                        }
                    }
                }
            }
            r = sub.next(), if read => match r {
                Ok(c) => {
                    let now = tokio::time::Instant::now();
                    if batch.is_empty() {
                        batch_deadline = now + limits.max_wait;
                    }
                    idle_deadline = now + limits.idle;
                    batch.push(c);
                }
                Err(e) => {
                    warn!(error = %e, "consume failed; retrying");
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    } else {
                        idle_deadline = tokio::time::Instant::now();
                    }
                }
            },
            _ = tokio::time::sleep_until(close_at), if !batch.is_empty() => {
                idle_deadline = tokio::time::Instant::now();
            }
        }
        // A batch closes when full, after `idle` without a record, or at `max_wait`.
        let now = tokio::time::Instant::now();
        if !batch.is_empty() && (batch.len() >= limits.max_events || now >= batch_deadline.min(idle_deadline)) {
            let mut by_partition: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
            for c in batch.drain(..) {
                by_partition.entry(c.partition).or_default().push(c);
            }
            let mut ready = Vec::new();
            for (partition, mut records) in by_partition {
                records.sort_by_key(|r| r.offset);
                if busy.contains(&partition) || waiting.contains_key(&partition) {
                    waiting.entry(partition).or_default().extend(records);
                } else {
                    ready.push((partition, records));
                }
            }
            for unit in units(ready, limits.group_below, &rewinds) {
                if in_flight.len() < limits.max_in_flight {
                    busy.extend(unit.iter().map(|(p, _)| *p));
                    in_flight.push(start(unit));
                } else {
                    for (p, records) in unit {
                        waiting.entry(p).or_default().extend(records);
                    }
                }
            }
        }
    }
    // The batches in hand are finished first; records not yet handed over are read again
    // by whoever owns their partition next.
    while let Some(done) = in_flight.next().await {
        for (partition, last, outcome) in done {
            if let (Outcome::Committed, true, Some(last)) = (outcome?, group_commits, last)
                && let Err(e) = sub.commit(&topic, partition, last)
            {
                warn!(error = %e, partition, "offset hint not committed to Kafka (the database has it)");
            }
        }
    }
    info!(topic, "consumer stopped");
    Ok(())
}

/// Splits partition batches ready to start into units of one transaction each: all of
/// them together when they are several, hold at most `group_below` records and none is
/// being rewound (a rewind's bookkeeping is per partition); otherwise one per partition.
fn units(
    ready: Vec<(i32, Vec<Consumed>)>,
    group_below: usize,
    rewinds: &Mutex<Rewinds>,
) -> Vec<Vec<(i32, Vec<Consumed>)>> {
    let total: usize = ready.iter().map(|(_, r)| r.len()).sum();
    let rewinding = {
        let r = lock(rewinds);
        ready.iter().any(|(p, _)| r.rewinding(*p))
    };
    if ready.len() > 1 && total <= group_below && !rewinding {
        vec![ready]
    } else {
        ready.into_iter().map(|part| vec![part]).collect()
    }
}

/// Points the subscriber at `partitions`, each from its stored offset.
async fn assign<S: Subscriber, P: PartitionProcessor>(
    sub: &mut S,
    processor: &P,
    topic: &str,
    partitions: &[i32],
) -> Result<(), String> {
    let mut from = Vec::with_capacity(partitions.len());
    for &p in partitions {
        from.push((p, processor.stored_offset(p).await.map_err(|e| e.to_string())?.unwrap_or(0)));
    }
    sub.assign(topic, &from).map_err(|e| e.to_string())?;
    info!(topic, ?from, "reading partitions from their stored offsets");
    Ok(())
}

/// How a partition batch ended.
enum Outcome {
    Committed,
    /// Refused for a gap: read the partition again from this offset.
    Rewind(i64),
    /// Another instance owns the partition now.
    Dropped,
}

/// One partition batch, until it is committed, moved elsewhere, or has to be read again.
async fn apply<P: PartitionProcessor>(
    processor: &P,
    partition: i32,
    records: &[Consumed],
    rewinds: &Mutex<Rewinds>,
    shutdown: &CancellationToken,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let mut attempt = 0u32;
    let mut accept_gap = false;
    loop {
        let error = match processor.process(partition, records, accept_gap).await {
            Ok(stats) => {
                if P::advanced(&stats) {
                    lock(rewinds).resolved(partition);
                }
                processor.committed(partition, &stats, started.elapsed());
                return Ok(Outcome::Committed);
            }
            Err(e) => e,
        };
        match P::failure(&error) {
            Failure::Gap(gap) => {
                let action = lock(rewinds).on_gap(partition, gap.expected, gap.replayed);
                match action {
                    GapAction::Accept => accept_gap = true,
                    GapAction::Rewind(to) => {
                        warn!(
                            partition,
                            expected = gap.expected,
                            first = gap.first,
                            rewind_to = to,
                            "records skipped by the broker; re-reading"
                        );
                        return Ok(Outcome::Rewind(to));
                    }
                }
            }
            Failure::Fenced => {
                // Another instance owns this partition now; its records are its own.
                info!(partition, "partition moved to another instance; dropping the batch in hand");
                return Ok(Outcome::Dropped);
            }
            Failure::Retry => {
                attempt += 1;
                warn!(error = %error, partition, attempt, "batch failed; retrying the same records");
                if shutdown.is_cancelled() && attempt >= 3 {
                    return Err(format!("stopping with an unprocessed batch on partition {partition}: {error}"));
                }
                tokio::time::sleep(Duration::from_millis((100 * 2u64.pow(attempt.min(6))).min(5_000))).await;
            }
        }
    }
}

/// The rewind bookkeeping is only touched between awaits; a poisoned lock still holds
/// consistent data (every update is a single map operation).
fn lock(rewinds: &Mutex<Rewinds>) -> std::sync::MutexGuard<'_, Rewinds> {
    rewinds.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    fn at(offsets: &[i64]) -> Vec<Consumed> {
        offsets
            .iter()
            .map(|&offset| Consumed {
                record: Record { topic: "t".into(), key: vec![], payload: vec![], headers: vec![] },
                partition: 3,
                offset,
            })
            .collect()
    }

    /// A broker that, the first time partition 0 is read from its start, answers from
    /// offset 10 (as tansu does for a fetch from the middle of a record batch).
    struct Skipping {
        logs: BTreeMap<i32, i64>,
        cursors: BTreeMap<i32, i64>,
        skipped: bool,
    }

    impl Subscriber for Skipping {
        async fn next(&mut self) -> Result<Consumed, crate::BusError> {
            // The partition furthest behind: records of all partitions interleave.
            let next =
                self.cursors.iter().filter(|(p, c)| **c < self.logs[p]).min_by_key(|(_, c)| **c).map(|(p, c)| (*p, *c));
            let Some((partition, offset)) = next else { return std::future::pending().await };
            // Records trickle in, so a batch is still filling when an earlier one returns.
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.cursors.insert(partition, offset + 1);
            let record = Record { topic: "t".into(), key: vec![], payload: vec![], headers: vec![] };
            Ok(Consumed { record, partition, offset })
        }

        fn commit(&mut self, _: &str, _: i32, _: i64) -> Result<(), crate::BusError> {
            Ok(())
        }

        fn assign(&mut self, _: &str, partitions: &[(i32, i64)]) -> Result<(), crate::BusError> {
            self.cursors = partitions.iter().copied().collect();
            if !self.skipped && self.cursors.get(&0) == Some(&0) {
                self.skipped = true;
                self.cursors.insert(0, 10);
            }
            Ok(())
        }

        fn seek(&mut self, _: &str, partition: i32, offset: i64) -> Result<(), crate::BusError> {
            self.cursors.insert(partition, offset);
            Ok(())
        }
    }

    /// Applies records after a short delay (so later records are read meanwhile), storing
    /// each partition's next offset as a database would.
    #[derive(Default)]
    struct Recorder {
        stored: Mutex<BTreeMap<i32, i64>>,
        applied: Mutex<Vec<(i32, i64)>>,
        /// Whether it applies groups (all or nothing); the partitions of each group applied.
        groups: Option<Mutex<Vec<Vec<i32>>>>,
    }

    impl PartitionProcessor for Recorder {
        type Stats = usize;
        type Error = Gap;

        fn topic(&self) -> &str {
            "t"
        }

        async fn stored_offset(&self, partition: i32) -> Result<Option<i64>, Gap> {
            Ok(Some(self.stored.lock().unwrap().get(&partition).copied().unwrap_or(0)))
        }

        async fn process(&self, partition: i32, records: &[Consumed], accept_gap: bool) -> Result<usize, Gap> {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let expected = self.stored.lock().unwrap().get(&partition).copied().unwrap_or(0);
            let fresh = fresh(partition, records, Some(expected), accept_gap)?;
            if let Some(next) = fresh.next_offset() {
                self.applied.lock().unwrap().extend(fresh.records.iter().map(|r| (partition, r.offset)));
                self.stored.lock().unwrap().insert(partition, next);
            }
            Ok(records.len() - fresh.replayed)
        }

        async fn process_group(&self, parts: &[(i32, &[Consumed])]) -> Option<Result<usize, Gap>> {
            let groups = self.groups.as_ref()?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut stored = self.stored.lock().unwrap();
            let mut moves = Vec::new();
            for &(partition, records) in parts {
                let expected = stored.get(&partition).copied().unwrap_or(0);
                match fresh(partition, records, Some(expected), false) {
                    Ok(f) => moves.push((partition, f)),
                    Err(gap) => return Some(Err(gap)), // nothing applied
                }
            }
            let mut applied = 0;
            for (partition, f) in moves {
                if let Some(next) = f.next_offset() {
                    applied += f.records.len();
                    self.applied.lock().unwrap().extend(f.records.iter().map(|r| (partition, r.offset)));
                    stored.insert(partition, next);
                }
            }
            groups.lock().unwrap().push(parts.iter().map(|(p, _)| *p).collect());
            Some(Ok(applied))
        }

        fn failure(error: &Gap) -> Failure {
            Failure::Gap(*error)
        }

        fn advanced(applied: &usize) -> bool {
            *applied > 0
        }

        fn committed(&self, _: i32, _: &usize, _: Duration) {}
    }

    /// Runs the loop over `logs` until every record is applied (or 3 s), as `recorder` applies
    /// them; returns what it applied, sorted.
    async fn consume_all(sub: Skipping, recorder: &Recorder, limits: BatchLimits) -> Vec<(i32, i64)> {
        let total: i64 = sub.logs.values().sum();
        let partitions: Vec<i32> = sub.logs.keys().copied().collect();
        let (_assigner, mut assignments) = watch::channel(Some(partitions));
        assignments.mark_changed();
        let shutdown = CancellationToken::new();
        let stop = async {
            for _ in 0..300 {
                if recorder.applied.lock().unwrap().len() as i64 >= total {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            shutdown.cancel();
        };
        let (r, ()) = tokio::join!(run(sub, recorder, limits, &shutdown, Some(assignments)), stop);
        r.unwrap();
        let mut applied = recorder.applied.lock().unwrap().clone();
        applied.sort();
        applied
    }

    fn every_record(logs: &[(i32, i64)]) -> Vec<(i32, i64)> {
        logs.iter().flat_map(|&(p, n)| (0..n).map(move |o| (p, o))).collect()
    }

    #[tokio::test]
    async fn records_the_broker_skips_are_read_again_while_other_partitions_go_on() {
        for grouped in [false, true] {
            let sub = Skipping { logs: [(0, 40), (1, 40)].into(), cursors: BTreeMap::new(), skipped: false };
            let recorder = Recorder { groups: grouped.then(Mutex::default), ..Recorder::default() };
            let limits = BatchLimits::new(8, Duration::from_millis(20)).grouped(if grouped { 8 } else { 0 });
            let applied = consume_all(sub, &recorder, limits).await;
            assert_eq!(
                applied,
                every_record(&[(0, 40), (1, 40)]),
                "grouped: {grouped}: every record of both partitions applied once, none skipped"
            );
        }
    }

    #[tokio::test]
    async fn small_batches_of_several_partitions_share_a_transaction() {
        let logs = [(0, 30), (1, 30), (2, 30)];
        let sub = Skipping { logs: logs.into(), cursors: BTreeMap::new(), skipped: true };
        let recorder = Recorder { groups: Some(Mutex::default()), ..Recorder::default() };
        let limits = BatchLimits::new(64, Duration::from_millis(20)).grouped(16);
        let applied = consume_all(sub, &recorder, limits).await;
        assert_eq!(applied, every_record(&logs), "every record applied once");
        let groups = recorder.groups.as_ref().unwrap().lock().unwrap().clone();
        assert!(!groups.is_empty(), "batches of three partitions were applied together");
        assert!(groups.iter().all(|g| g.len() > 1 && g.windows(2).all(|w| w[0] < w[1])), "{groups:?}");
    }

    #[test]
    fn fresh_skips_what_was_applied_and_refuses_gaps() {
        let rs = at(&[5, 6, 7, 8]);
        let f = fresh(3, &rs, Some(7), false).unwrap();
        assert_eq!((f.records.len(), f.replayed, f.next_offset()), (2, 2, Some(9)));
        let f = fresh(3, &rs, Some(9), false).unwrap();
        assert_eq!((f.records.len(), f.replayed, f.next_offset()), (0, 4, None));
        assert_eq!(
            fresh(3, &rs, Some(2), false).unwrap_err(),
            Gap { partition: 3, expected: 2, first: 5, replayed: false }
        );
        assert!(fresh(3, &at(&[1, 9]), Some(4), false).unwrap_err().replayed, "records before the gap were read");
        assert_eq!(fresh(3, &rs, Some(2), true).unwrap().records.len(), 4, "an accepted gap applies everything");
        assert_eq!(fresh(3, &rs, None, false).unwrap().records.len(), 4, "a partition never applied starts anywhere");
    }
}
