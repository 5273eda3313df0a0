//! The consume loop every cxgap consumer shares. Batches are gathered up to a size or a
//! time bound, split by partition and handed to a [`PartitionProcessor`], which applies
//! each partition batch in one storage transaction together with the partition's next
//! offset. The database is the truth about progress: Kafka offsets are committed after it
//! only as a hint (and not at all when the database assigns the partitions), so a crash
//! between the two replays records that the processor then skips. A transient failure
//! retries the same records; nothing is acknowledged before it is durable. On shutdown the
//! batch in hand is finished first.

use crate::{Consumed, GapAction, Rewinds, Subscriber};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
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
}

impl BatchLimits {
    pub const IDLE: Duration = Duration::from_millis(3);

    pub fn new(max_events: usize, max_wait: Duration) -> BatchLimits {
        BatchLimits { max_events, max_wait, idle: Self::IDLE.min(max_wait) }
    }
}

/// Partitions to read, when something other than the broker's group protocol assigns them
/// (`None` until the first assignment).
pub type Assignments = watch::Receiver<Option<Vec<i32>>>;

/// Consumes until `shutdown`. With `assignments`, the partitions come from that channel
/// (the database leases) and are read from their stored offsets; without, the broker's
/// group assigns them and processed offsets are committed to it as a hint.
pub async fn run<S: Subscriber, P: PartitionProcessor>(
    mut sub: S,
    processor: &P,
    limits: BatchLimits,
    shutdown: &CancellationToken,
    mut assignments: Option<Assignments>,
) -> Result<(), String> {
    let group_commits = assignments.is_none();
    let topic = processor.topic().to_string();
    let mut rewinds = Rewinds::default();
    loop {
        let changed = async {
            match assignments.as_mut() {
                Some(rx) => rx.changed().await.map_err(|_| ()),
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = changed => {
                if r.is_err() {
                    assignments = None; // the assigner stopped: keep what we have
                    continue;
                }
                let mine = assignments.as_ref().and_then(|rx| rx.borrow().clone()).unwrap_or_default();
                if let Err(e) = assign(&mut sub, processor, &topic, &mine).await {
                    warn!(error = %e, "could not take the new assignment; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Some(rx) = assignments.as_mut() {
                        rx.mark_changed();
                    }
                }
                continue;
            }
            r = sub.next() => r,
        };
        let first = match first {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "consume failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + limits.max_wait;
        while batch.len() < limits.max_events {
            let idle = (tokio::time::Instant::now() + limits.idle).min(deadline);
            tokio::select! {
                r = sub.next() => match r {
                    Ok(c) => batch.push(c),
                    Err(e) => { warn!(error = %e, "consume failed mid-batch"); break; }
                },
                _ = tokio::time::sleep_until(idle) => break,
                _ = shutdown.cancelled() => break,
            }
        }
        let mut by_partition: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
        for c in batch {
            by_partition.entry(c.partition).or_default().push(c);
        }
        for (partition, mut records) in by_partition {
            records.sort_by_key(|r| r.offset);
            apply(&mut sub, processor, &topic, partition, &records, &mut rewinds, group_commits, shutdown).await?;
        }
        if shutdown.is_cancelled() {
            break;
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

/// One partition batch, until it is committed, moved elsewhere, or has to be read again.
#[allow(clippy::too_many_arguments)]
async fn apply<S: Subscriber, P: PartitionProcessor>(
    sub: &mut S,
    processor: &P,
    topic: &str,
    partition: i32,
    records: &[Consumed],
    rewinds: &mut Rewinds,
    group_commits: bool,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let last = records.last().map(|r| r.offset).unwrap_or_default();
    let started = Instant::now();
    let mut attempt = 0u32;
    let mut accept_gap = false;
    loop {
        let error = match processor.process(partition, records, accept_gap).await {
            Ok(stats) => {
                if P::advanced(&stats) {
                    rewinds.resolved(partition);
                }
                processor.committed(partition, &stats, started.elapsed());
                if group_commits && let Err(e) = sub.commit(topic, partition, last) {
                    warn!(error = %e, partition, "offset hint not committed to Kafka (the database has it)");
                }
                return Ok(());
            }
            Err(e) => e,
        };
        match P::failure(&error) {
            Failure::Gap(gap) => match rewinds.on_gap(partition, gap.expected, gap.replayed) {
                GapAction::Accept => accept_gap = true,
                GapAction::Rewind(to) => {
                    warn!(
                        partition,
                        expected = gap.expected,
                        first = gap.first,
                        rewind_to = to,
                        "records skipped by the broker; re-reading"
                    );
                    if let Err(e) = sub.seek(topic, partition, to) {
                        warn!(error = %e, partition, "seek failed; the batch is dropped and read again");
                    }
                    return Ok(());
                }
            },
            Failure::Fenced => {
                // Another instance owns this partition now; its records are its own.
                info!(partition, "partition moved to another instance; dropping the batch in hand");
                return Ok(());
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
