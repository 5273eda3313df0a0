//! Ingest metrics. Label values are bounded (channel, result, transport): never a tenant
//! or customer id.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub channel: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub transport: &'static str,
    pub code: &'static str,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub events: Family<EventLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub produce_seconds: Histogram,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            events: Family::default(),
            requests: Family::default(),
            produce_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
        registry.register("cxgap_ingest_events", "Feedback events by channel and result", m.events.clone());
        registry.register("cxgap_ingest_requests", "Requests by transport and status code", m.requests.clone());
        registry.register(
            "cxgap_ingest_produce_seconds",
            "Time from publish to broker acknowledgement, per batch",
            m.produce_seconds.clone(),
        );
        m
    }

    pub fn event(&self, channel: &str, result: &'static str, n: u64) {
        self.events.get_or_create(&EventLabels { channel: channel.to_string(), result }).inc_by(n);
    }

    pub fn request(&self, transport: &'static str, code: &'static str) {
        self.requests.get_or_create(&RequestLabels { transport, code }).inc();
    }
}
