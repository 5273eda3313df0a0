//! Alerting metrics; labels are bounded (never a tenant, alert or subscription id).

use crate::delivery::Outcome;
use crate::processor::BatchStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub signals: Counter,
    pub duplicates: Counter,
    pub rejected: Counter,
    pub notifications: Counter,
    pub deliveries: Family<ResultLabel, Counter>,
    pub delivery_seconds: Histogram,
    pub batch_seconds: Histogram,
    pub alerts: Family<StateLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            signals: Counter::default(),
            duplicates: Counter::default(),
            rejected: Counter::default(),
            notifications: Counter::default(),
            deliveries: Family::default(),
            delivery_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            alerts: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register("cxgap_alerting_signals", "Signals evaluated", m.signals.clone());
        registry.register("cxgap_alerting_signal_duplicates", "Signals skipped as seen before", m.duplicates.clone());
        registry.register("cxgap_alerting_signals_rejected", "Records that are not valid signals", m.rejected.clone());
        registry.register("cxgap_alerting_notifications", "Alert changes notified", m.notifications.clone());
        registry.register("cxgap_alerting_deliveries", "Delivery attempts by result", m.deliveries.clone());
        registry.register(
            "cxgap_alerting_delivery_seconds",
            "Time of one delivery attempt",
            m.delivery_seconds.clone(),
        );
        registry.register(
            "cxgap_alerting_batch_seconds",
            "Time to evaluate and commit one batch of signals",
            m.batch_seconds.clone(),
        );
        registry.register("cxgap_alerting_alerts", "Alerts by state", m.alerts.clone());
        m
    }

    pub fn batch(&self, s: &BatchStats, took: Duration) {
        self.signals.inc_by(s.signals as u64);
        self.duplicates.inc_by(s.duplicates as u64);
        self.rejected.inc_by(s.rejected as u64);
        self.notifications.inc_by(s.notifications as u64);
        self.batch_seconds.observe(took.as_secs_f64());
    }

    pub fn delivery(&self, o: &Outcome, took: Duration) {
        let result = match o {
            Outcome::Delivered => "delivered",
            Outcome::Failed { .. } => "failed",
            Outcome::Dead { .. } => "dead",
            Outcome::Gone => "gone",
        };
        self.deliveries.get_or_create(&ResultLabel { result }).inc();
        self.delivery_seconds.observe(took.as_secs_f64());
    }
}
