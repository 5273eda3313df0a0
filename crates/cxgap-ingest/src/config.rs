//! Typed settings of the ingest service, loaded once from defaults, environment variables
//! (`CXGAP_*`) and flags (which win), validated before anything binds. The loader takes a
//! map, so it is tested without touching the process environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Every setting: (environment variable, default, meaning). The deployment manifests use
/// exactly these names.
pub const SETTINGS: &[Setting] = &[
    ("CXGAP_KAFKA_BROKERS", None, "bootstrap brokers, host:port[,host:port]"),
    ("CXGAP_DATABASE_URL", None, "postgres://… or sqlite://path (tenants and API keys)"),
    (
        "CXGAP_DATABASE_POOL_SIZE",
        Some("8"),
        "connections to PostgreSQL (tenants and API keys; opened as needed); SQLite: 1",
    ),
    ("CXGAP_API_KEY_PEPPER", None, "secret mixed into API-key hashes, at least 16 characters"),
    ("CXGAP_GRPC_ADDR", Some("0.0.0.0:50051"), "gRPC listen address"),
    ("CXGAP_HTTP_ADDR", Some("0.0.0.0:8080"), "HTTP listen address (API, /healthz, /readyz, /metrics)"),
    ("CXGAP_FEEDBACK_TOPIC", Some("cxgap.feedback.v1"), "topic feedback is published to"),
    ("CXGAP_TOPIC_PARTITIONS", Some("12"), "partitions when the topic is created"),
    ("CXGAP_TOPIC_REPLICATION", Some("1"), "replication factor when the topic is created"),
    ("CXGAP_DELIVERY_TIMEOUT_MS", Some("10000"), "how long a publish waits for the broker before UNAVAILABLE"),
    ("CXGAP_RATE_LIMIT_PER_SECOND", Some("2000"), "events per second per tenant"),
    ("CXGAP_RATE_LIMIT_BURST", Some("10000"), "events a tenant may send at once"),
    ("CXGAP_MAX_BATCH_EVENTS", Some("1000"), "events per batch request"),
    ("CXGAP_MAX_EVENT_BYTES", Some("65536"), "encoded size of one event"),
    ("CXGAP_MAX_REQUEST_BYTES", Some("8388608"), "size of one request (gRPC message or HTTP body)"),
    ("CXGAP_AUTH_CACHE_SECONDS", Some("30"), "how long an API key verdict is cached (revocation delay)"),
    ("CXGAP_SHUTDOWN_GRACE_SECONDS", Some("20"), "time to drain in-flight requests on SIGTERM"),
    ("CXGAP_LOG_FORMAT", Some("json"), "json or plain"),
    ("CXGAP_LOG", Some("info"), "log filter, e.g. info or cxgap_ingest=debug"),
];

#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    pub kafka_brokers: String,
    /// TLS and SASL towards the brokers ([`cxgap_runtime::settings::KAFKA_SECURITY`]).
    pub kafka_security: cxgap_runtime::settings::KafkaSecurity,
    /// TLS on this service's gRPC and HTTP ports ([`cxgap_runtime::settings::SERVER_TLS`]).
    pub server_tls: Option<cxgap_runtime::tls::ServerTls>,
    pub database_url: String,
    /// Connections in each of the service's database pools (1 on SQLite).
    pub database_pool_size: u32,
    pub api_key_pepper: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub feedback_topic: String,
    pub topic_partitions: i32,
    pub topic_replication: i32,
    pub delivery_timeout: Duration,
    pub rate_per_second: f64,
    pub rate_burst: f64,
    pub max_batch_events: usize,
    pub max_event_bytes: usize,
    pub max_request_bytes: usize,
    pub shutdown_grace: Duration,
    pub auth_cache: Duration,
    pub log_format: cxgap_runtime::telemetry::LogFormat,
    pub log_filter: String,
}

pub use cxgap_runtime::settings::ConfigError;
use cxgap_runtime::settings::{Setting, Settings};

impl IngestConfig {
    /// `values` holds environment variables and flags already merged (flags win).
    pub fn load(values: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut r = Settings::new(values, SETTINGS, "ingest");
        let kafka_brokers = r.raw("CXGAP_KAFKA_BROKERS");
        let kafka_security = r.kafka_security();
        let server_tls = r.server_tls();
        let database_url = r.database_url("CXGAP_DATABASE_URL");
        let pool_size = r.database_pool_size("CXGAP_DATABASE_POOL_SIZE", database_url.as_deref());
        let pepper = r.raw("CXGAP_API_KEY_PEPPER");
        if pepper.as_ref().is_some_and(|p| p.chars().count() < 16) {
            r.error("CXGAP_API_KEY_PEPPER must be at least 16 characters");
        }
        let positive = |x: &i64| *x > 0;
        let grpc_addr = r.parse("CXGAP_GRPC_ADDR", "a socket address like 0.0.0.0:50051", |_| true);
        let http_addr = r.parse("CXGAP_HTTP_ADDR", "a socket address like 0.0.0.0:8080", |_| true);
        let feedback_topic = r.raw("CXGAP_FEEDBACK_TOPIC");
        let partitions = r.parse::<i64>("CXGAP_TOPIC_PARTITIONS", "a positive integer", positive);
        let replication = r.parse::<i64>("CXGAP_TOPIC_REPLICATION", "a positive integer", positive);
        let delivery_ms =
            r.parse::<u64>("CXGAP_DELIVERY_TIMEOUT_MS", "a number of milliseconds ≥ 100", |x| *x >= 100);
        let rate = r.parse("CXGAP_RATE_LIMIT_PER_SECOND", "a positive number", |x: &f64| *x > 0.0);
        let burst = r.parse("CXGAP_RATE_LIMIT_BURST", "a number ≥ 1", |x: &f64| *x >= 1.0);
        let max_batch = r.parse("CXGAP_MAX_BATCH_EVENTS", "a positive integer", |x: &usize| *x > 0);
        let max_event = r.parse("CXGAP_MAX_EVENT_BYTES", "a number of bytes ≥ 1024", |x: &usize| *x >= 1024);
        let max_request = r.parse("CXGAP_MAX_REQUEST_BYTES", "a number of bytes ≥ 65536", |x: &usize| *x >= 65536);
        let auth_cache = r.parse("CXGAP_AUTH_CACHE_SECONDS", "a number of seconds", |_: &u64| true);
        let grace = r.parse("CXGAP_SHUTDOWN_GRACE_SECONDS", "a number of seconds", |_: &u64| true);
        let log_format = r.log_format("CXGAP_LOG_FORMAT");
        let log_filter = r.raw("CXGAP_LOG");
        if let (Some(b), Some(m)) = (burst, max_batch)
            && b < m as f64
        {
            r.error(format!("CXGAP_RATE_LIMIT_BURST ({b}) must be at least CXGAP_MAX_BATCH_EVENTS ({m})"));
        }
        let config = (|| {
            Some(IngestConfig {
                kafka_brokers: kafka_brokers?,
                kafka_security: kafka_security?,
                server_tls: server_tls?,
                database_url: database_url?,
                database_pool_size: pool_size?,
                api_key_pepper: pepper?,
                grpc_addr: grpc_addr?,
                http_addr: http_addr?,
                feedback_topic: feedback_topic?,
                topic_partitions: partitions? as i32,
                topic_replication: replication? as i32,
                delivery_timeout: Duration::from_millis(delivery_ms?),
                rate_per_second: rate?,
                rate_burst: burst?,
                max_batch_events: max_batch?,
                max_event_bytes: max_event?,
                max_request_bytes: max_request?,
                shutdown_grace: Duration::from_secs(grace?),
                auth_cache: Duration::from_secs(auth_cache?),
                log_format: log_format?,
                log_filter: log_filter?,
            })
        })();
        r.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn minimal() -> BTreeMap<String, String> {
        map(&[
            ("CXGAP_KAFKA_BROKERS", "127.0.0.1:9092"),
            ("CXGAP_DATABASE_URL", "postgres://localhost/cxgap"),
            ("CXGAP_API_KEY_PEPPER", "0123456789abcdef"),
        ])
    }

    #[test]
    fn defaults_fill_the_rest() {
        let c = IngestConfig::load(&minimal()).unwrap();
        assert_eq!(c.feedback_topic, "cxgap.feedback.v1");
        assert_eq!(c.grpc_addr.port(), 50051);
        assert_eq!(c.max_batch_events, 1000);
        assert_eq!(c.kafka_security.properties, [], "plaintext to the brokers unless told");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut m = map(&[
            ("CXGAP_DATABASE_URL", "mysql://x"),
            ("CXGAP_API_KEY_PEPPER", "short"),
            ("CXGAP_TOPIC_PARTITIONS", "0"),
            ("CXGAP_GRPC_ADDR", "nowhere"),
            ("CXGAP_LOG_FORMAT", "xml"),
            ("CXGAP_KAFKA_BROKER", "typo"),
            ("CXGAP_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
        ]);
        m.insert("UNRELATED".into(), "ignored".into());
        let e = IngestConfig::load(&m).unwrap_err().to_string();
        for want in [
            "CXGAP_KAFKA_BROKERS is required",
            "CXGAP_DATABASE_URL must start with",
            "CXGAP_API_KEY_PEPPER must be at least 16",
            "CXGAP_TOPIC_PARTITIONS=\"0\" is not a positive integer",
            "CXGAP_GRPC_ADDR=\"nowhere\"",
            "CXGAP_KAFKA_BROKER is not a setting",
            "CXGAP_LOG_FORMAT=\"xml\" is not json or plain",
            "CXGAP_KAFKA_SASL_USERNAME is required with CXGAP_KAFKA_SECURITY_PROTOCOL=sasl_ssl",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
    }
}
