//! Analytics metrics; labels are bounded (never a tenant or customer id).

use crate::processor::BatchStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Metrics {
    pub applied: Counter,
    pub duplicates: Counter,
    pub replayed: Counter,
    pub dead_lettered: Counter,
    pub batch_seconds: Histogram,
    /// From a signal's creation (its batch's start, or its evaluation round's) to the
    /// broker's acknowledgement: how far the outbox relay is behind.
    pub signal_publish_seconds: Histogram,
    pub lag: Family<PartitionLabel, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            applied: Counter::default(),
            duplicates: Counter::default(),
            replayed: Counter::default(),
            dead_lettered: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            signal_publish_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            lag: Family::default(),
        };
        registry.register(
            "cxgap_analytics_consumer_lag",
            "Records on the feedback topic not yet committed to the database, per partition",
            m.lag.clone(),
        );
        registry.register("cxgap_analytics_events_applied", "Events applied to the gap state", m.applied.clone());
        registry.register("cxgap_analytics_duplicates", "Events skipped as already applied", m.duplicates.clone());
        registry.register("cxgap_analytics_replayed", "Records below the stored offset, skipped", m.replayed.clone());
        registry.register(
            "cxgap_analytics_dead_lettered",
            "Records sent to the dead-letter topic",
            m.dead_lettered.clone(),
        );
        registry.register(
            "cxgap_analytics_batch_seconds",
            "Time to process and commit one batch",
            m.batch_seconds.clone(),
        );
        registry.register(
            "cxgap_analytics_signal_publish_seconds",
            "Time from a signal's creation (its batch's start, or its evaluation round's) to the broker's acknowledgement of it",
            m.signal_publish_seconds.clone(),
        );
        m
    }

    pub fn lag(&self, partition: i32, records: i64) {
        self.lag.get_or_create(&PartitionLabel { partition }).set(records);
    }

    pub fn batch(&self, s: &BatchStats, took: Duration) {
        self.applied.inc_by(s.applied as u64);
        self.duplicates.inc_by(s.duplicates as u64);
        self.replayed.inc_by(s.replayed as u64);
        self.dead_lettered.inc_by(s.dead_lettered as u64);
        self.batch_seconds.observe(took.as_secs_f64());
    }
}
