//! Analytics' side of the shared consume loop ([`cxgap_bus::consume`]): feedback batches
//! go to the [`Processor`], one storage transaction per partition batch.

use crate::metrics::Metrics;
use crate::processor::{BatchStats, ProcessError, Processor};
use crate::store::StoreError;
use cxgap_bus::consume::{self, Failure, PartitionProcessor};
use cxgap_bus::{Consumed, Publisher, Subscriber};
use cxgap_runtime::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use cxgap_bus::consume::BatchLimits;

struct Feedback<P> {
    processor: Arc<Processor<P>>,
    metrics: Metrics,
}

impl<P: Publisher> PartitionProcessor for Feedback<P> {
    type Stats = BatchStats;
    type Error = ProcessError;

    fn topic(&self) -> &str {
        &self.processor.config.topic
    }

    async fn stored_offset(&self, partition: i32) -> Result<Option<i64>, ProcessError> {
        let c = &self.processor.config;
        Ok(self.processor.store.next_offset(&c.group, &c.topic, partition).await?)
    }

    async fn process(
        &self,
        partition: i32,
        records: &[Consumed],
        accept_gap: bool,
    ) -> Result<BatchStats, ProcessError> {
        self.processor.process_batch(partition, records, accept_gap).await
    }

    async fn process_group(&self, parts: &[(i32, &[Consumed])]) -> Option<Result<BatchStats, ProcessError>> {
        Some(self.processor.process_group(parts).await)
    }

    fn failure(error: &ProcessError) -> Failure {
        match error {
            ProcessError::Gap(gap) => Failure::Gap(*gap),
            ProcessError::Store(StoreError::Fenced { .. }) => Failure::Fenced,
            _ => Failure::Retry,
        }
    }

    fn advanced(stats: &BatchStats) -> bool {
        stats.replayed < stats.records
    }

    fn committed(&self, _partition: i32, stats: &BatchStats, took: Duration) {
        self.metrics.batch(stats, took);
    }
}

/// The consume loop's limits for `config`: a batch in flight holds a connection for its
/// transaction, so as many as the pool has; partition batches that close together share
/// one transaction while they hold at most a quarter of a full batch (under load batches
/// fill and partitions go side by side; at low rates one transaction replaces several
/// that would each carry a record or two).
pub fn limits(config: &crate::AnalyticsConfig) -> BatchLimits {
    let in_flight = config.database_pool_size as usize;
    BatchLimits::new(config.batch_max_events, config.batch_max_wait)
        .in_flight(in_flight)
        .grouped(config.batch_max_events / 4)
}

/// Consumes until shutdown. With `assignments`, partitions come from that channel (the
/// database-coordinated assignment) instead of the broker's group protocol.
pub async fn run<S: Subscriber, P: Publisher>(
    sub: S,
    processor: Arc<Processor<P>>,
    limits: BatchLimits,
    metrics: Metrics,
    shutdown: Shutdown,
    assignments: Option<watch::Receiver<Option<Vec<i32>>>>,
) -> anyhow::Result<()> {
    let feedback = Feedback { processor, metrics };
    consume::run(sub, &feedback, limits, &shutdown, assignments).await.map_err(anyhow::Error::msg)
}
