//! The consume loop. Batches are gathered up to a size or a time bound, split by
//! partition and handed to the processor, one storage transaction per partition batch.
//! The database is the truth about progress: Kafka offsets are committed afterwards only
//! as a hint, so a crash between the two replays records that the processor then skips.
//! A transient failure retries the same records; nothing is acknowledged before it is
//! durable. On shutdown the batch in hand is finished and committed first.

use crate::metrics::Metrics;
use crate::processor::{ProcessError, Processor};
use crate::store::StoreError;
use cxgap_bus::{Consumed, Publisher, Subscriber};
use cxgap_runtime::Shutdown;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_wait: Duration,
}

/// Points the subscriber at `partitions`, each from its offset stored in the database.
async fn assign<S: Subscriber, P: Publisher>(
    sub: &mut S,
    processor: &Processor<P>,
    partitions: &[i32],
) -> anyhow::Result<()> {
    let c = &processor.config;
    let mut from = Vec::with_capacity(partitions.len());
    for &p in partitions {
        from.push((p, processor.store.next_offset(&c.group, &c.topic, p).await?.unwrap_or(0)));
    }
    sub.assign(&c.topic, &from)?;
    info!(?from, "reading partitions from their stored offsets");
    Ok(())
}

/// Consumes until shutdown. With `assignments`, partitions come from that channel (the
/// database-coordinated assignment) instead of the broker's group protocol.
pub async fn run<S: Subscriber, P: Publisher>(
    mut sub: S,
    processor: Arc<Processor<P>>,
    limits: BatchLimits,
    metrics: Metrics,
    shutdown: Shutdown,
    mut assignments: Option<watch::Receiver<Option<Vec<i32>>>>,
) -> anyhow::Result<()> {
    let topic = processor.config.topic.clone();
    let group_commits = assignments.is_none();
    let mut rewinds = cxgap_bus::Rewinds::default();
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
                if let Err(e) = assign(&mut sub, &processor, &mine).await {
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
            tokio::select! {
                r = sub.next() => match r {
                    Ok(c) => batch.push(c),
                    Err(e) => { warn!(error = %e, "consume failed mid-batch"); break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.cancelled() => break,
            }
        }
        let mut by_partition: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
        for c in batch {
            by_partition.entry(c.partition).or_default().push(c);
        }
        for (partition, mut records) in by_partition {
            records.sort_by_key(|r| r.offset);
            let last = records.last().map(|r| r.offset).unwrap_or_default();
            let started = Instant::now();
            let mut attempt = 0u32;
            let mut accept_gap = false;
            loop {
                let done = if accept_gap {
                    processor.process_accepting_gap(partition, &records).await
                } else {
                    processor.process(partition, &records).await
                };
                match done {
                    Ok(stats) => {
                        if stats.replayed < stats.records {
                            rewinds.resolved(partition);
                        }
                        metrics.batch(&stats, started.elapsed());
                        if group_commits && let Err(e) = sub.commit(&topic, partition, last) {
                            warn!(error = %e, partition, "offset hint not committed to Kafka (the database has it)");
                        }
                        break;
                    }
                    Err(ProcessError::Gap { expected, first, replayed, .. }) => {
                        match rewinds.on_gap(partition, expected, replayed) {
                            cxgap_bus::GapAction::Accept => accept_gap = true,
                            cxgap_bus::GapAction::Rewind(to) => {
                                warn!(
                                    partition,
                                    expected,
                                    first,
                                    rewind_to = to,
                                    "records skipped by the broker; re-reading"
                                );
                                if let Err(e) = sub.seek(&topic, partition, to) {
                                    warn!(error = %e, partition, "seek failed; the batch is dropped and read again");
                                }
                                break;
                            }
                        }
                    }
                    Err(ProcessError::Store(StoreError::Fenced { .. })) => {
                        // Another instance owns this partition now; its records are its own.
                        info!(partition, "partition moved to another instance; dropping the batch in hand");
                        break;
                    }
                    Err(e) => {
                        attempt += 1;
                        warn!(error = %e, partition, attempt, "batch failed; retrying the same records");
                        if shutdown.is_cancelled() && attempt >= 3 {
                            anyhow::bail!("stopping with an unprocessed batch on partition {partition}: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis((100 * 2u64.pow(attempt.min(6))).min(5_000))).await;
                    }
                }
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    info!("consumer stopped");
    Ok(())
}
