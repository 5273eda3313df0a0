//! The consume loop every cxgap consumer shares. Batches are gathered up to a size or a
//! time bound, split by partition and handed to a [`PartitionProcessor`], which applies
//! each partition batch in one storage transaction together with the partition's next
//! offset. The database is the truth about progress: Kafka offsets are committed after it
//! only as a hint (and not at all when the database assigns the partitions), so a crash
//! between the two replays records that the processor then skips. A transient failure
//! retries the same records; nothing is acknowledged before it is durable. On shutdown the
//! batch in hand is finished first.

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

    /// Called after each committed batch (metrics, waking whoever waits for new state).
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
}

impl BatchLimits {
    pub const IDLE: Duration = Duration::from_millis(3);

    pub fn new(max_events: usize, max_wait: Duration) -> BatchLimits {
        BatchLimits { max_events, max_wait, idle: Self::IDLE.min(max_wait), max_in_flight: 8 }
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
/// overlaps the database's. Reading pauses while too many records wait.
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
    let start = |partition: i32, records: Vec<Consumed>| {
        let rewinds = &rewinds;
        async move {
            let outcome = apply(processor, partition, &records, rewinds, shutdown).await;
            (partition, records.last().map(|r| r.offset), outcome)
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
            Some((partition, last, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
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
                // The partition that finished first (its records have waited longest), then
                // any other waiting partition while there is room.
                let ready: Vec<i32> = std::iter::once(partition)
                    .chain(waiting.keys().copied().filter(|p| *p != partition))
                    .filter(|p| waiting.contains_key(p) && !busy.contains(p))
                    .collect();
                for p in ready {
                    if busy.len() >= limits.max_in_flight {
                        break;
                    }
                    let Some(mut records) = waiting.remove(&p) else { continue };
                    if records.len() > limits.max_events {
                        waiting.insert(p, records.split_off(limits.max_events));
                    }
                    busy.insert(p);
                    in_flight.push(start(p, records));
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
            for (partition, mut records) in by_partition {
                records.sort_by_key(|r| r.offset);
                if !busy.contains(&partition) && busy.len() < limits.max_in_flight {
                    busy.insert(partition);
                    in_flight.push(start(partition, records));
                } else {
                    waiting.entry(partition).or_default().extend(records);
                }
            }
        }
    }
    // The batches in hand are finished first; records not yet handed over are read again
    // by whoever owns their partition next.
    while let Some((partition, last, outcome)) = in_flight.next().await {
        if let (Outcome::Committed, true, Some(last)) = (outcome?, group_commits, last)
            && let Err(e) = sub.commit(&topic, partition, last)
        {
            warn!(error = %e, partition, "offset hint not committed to Kafka (the database has it)");
        }
    }
    info!(topic, "consumer stopped");
    Ok(())
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
            let next = self.cursors.iter().find(|(p, c)| **c < self.logs[p]).map(|(p, c)| (*p, *c));
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

        fn failure(error: &Gap) -> Failure {
            Failure::Gap(*error)
        }

        fn advanced(applied: &usize) -> bool {
            *applied > 0
        }

        fn committed(&self, _: i32, _: &usize, _: Duration) {}
    }

    #[tokio::test]
    async fn records_the_broker_skips_are_read_again_while_other_partitions_go_on() {
        let sub = Skipping { logs: [(0, 40), (1, 40)].into(), cursors: BTreeMap::new(), skipped: false };
        let recorder = Recorder::default();
        let (_assigner, mut assignments) = watch::channel(Some(vec![0, 1]));
        assignments.mark_changed();
        let shutdown = CancellationToken::new();
        let limits = BatchLimits::new(8, Duration::from_millis(20));
        let stop = async {
            for _ in 0..300 {
                if recorder.applied.lock().unwrap().len() >= 80 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            shutdown.cancel();
        };
        let (r, ()) = tokio::join!(run(sub, &recorder, limits, &shutdown, Some(assignments)), stop);
        r.unwrap();
        let mut applied = recorder.applied.lock().unwrap().clone();
        applied.sort();
        let expected: Vec<(i32, i64)> = (0..2).flat_map(|p| (0..40).map(move |o| (p, o))).collect();
        assert_eq!(applied, expected, "every record of both partitions applied once, none skipped");
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
