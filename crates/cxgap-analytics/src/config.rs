//! Typed settings of the analytics service (see `cxgap_runtime::settings`).

use cxgap_runtime::settings::{ConfigError, Setting, Settings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub const SETTINGS: &[Setting] = &[
    ("CXGAP_KAFKA_BROKERS", None, "bootstrap brokers, host:port[,host:port]"),
    ("CXGAP_DATABASE_URL", None, "postgres://… or sqlite:path (analytics state, tenants and API keys)"),
    (
        "CXGAP_DATABASE_POOL_SIZE",
        Some("8"),
        "connections in each of the service's PostgreSQL pools (state, the batch writer, tenants; opened as needed): also how many partition batches are written at once; SQLite: 1",
    ),
    ("CXGAP_API_KEY_PEPPER", None, "secret mixed into API-key hashes, the same as ingest's"),
    ("CXGAP_GRPC_ADDR", Some("0.0.0.0:50052"), "gRPC listen address (AnalyticsService, health, reflection)"),
    ("CXGAP_HTTP_ADDR", Some("0.0.0.0:8081"), "HTTP listen address (query API, /healthz, /readyz, /metrics)"),
    ("CXGAP_FEEDBACK_TOPIC", Some("cxgap.feedback.v1"), "topic consumed"),
    ("CXGAP_DLQ_TOPIC", Some("cxgap.feedback.dlq.v1"), "where records that cannot be processed go"),
    ("CXGAP_SIGNALS_TOPIC", Some("cxgap.signals.v1"), "where risk and gap signals go (to alerting)"),
    ("CXGAP_SIGNAL_INTERVAL_MS", Some("2000"), "how often changed tenants' gap figures are re-evaluated"),
    ("CXGAP_SIGNAL_RETENTION_DAYS", Some("90"), "how long published signals (the risk history) are kept"),
    ("CXGAP_CONSUMER_GROUP", Some("cxgap-analytics"), "Kafka consumer group of the analytics instances"),
    (
        "CXGAP_PARTITION_ASSIGNMENT",
        Some("database"),
        "database (leases in the analytics database) or kafka (the broker's group protocol)",
    ),
    ("CXGAP_TOPIC_PARTITIONS", Some("12"), "partitions when topics are created"),
    ("CXGAP_TOPIC_REPLICATION", Some("1"), "replication factor when topics are created"),
    (
        "CXGAP_KAFKA_SESSION_TIMEOUT_MS",
        Some("45000"),
        "session (group or lease): how soon a crashed instance's partitions move",
    ),
    (
        "CXGAP_KAFKA_FETCH_WAIT_MS",
        Some("10"),
        "longest a consumer's fetch waits at the broker for records: 10 for a broker that answers only then (tansu); 500 on Apache Kafka",
    ),
    ("CXGAP_BATCH_MAX_EVENTS", Some("2000"), "records per consume batch (one transaction per partition in it)"),
    (
        "CXGAP_BATCH_MAX_WAIT_MS",
        Some("20"),
        "longest a batch keeps filling while records keep arriving (it closes after 3 ms without one)",
    ),
    ("CXGAP_DEDUP_WINDOW_HOURS", Some("24"), "how long processed event ids are remembered"),
    ("CXGAP_AUTH_CACHE_SECONDS", Some("30"), "how long an API key verdict is cached"),
    ("CXGAP_SHUTDOWN_GRACE_SECONDS", Some("20"), "time to finish the batch in hand on SIGTERM"),
    (
        "CXGAP_DASHBOARD_ALERTING_URL",
        Some(""),
        "where the dashboard's browser reaches alerting's HTTP API, e.g. https://alerting.example; empty: no alerts panel",
    ),
    ("CXGAP_LOG_FORMAT", Some("json"), "json or plain"),
    ("CXGAP_LOG", Some("info"), "log filter"),
];

/// Who decides which instance reads which partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Leases in the analytics database; works on any Kafka-protocol broker.
    Database,
    /// The broker's consumer-group protocol.
    Kafka,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsConfig {
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
    pub dlq_topic: String,
    pub signals_topic: String,
    pub signal_interval: Duration,
    pub signal_retention: Duration,
    pub consumer_group: String,
    pub assignment: Assignment,
    pub topic_partitions: i32,
    pub topic_replication: i32,
    pub session_timeout: Duration,
    /// The longest a consumer's fetch waits at the broker for records.
    pub fetch_wait: Duration,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    pub dedup_window: Duration,
    pub auth_cache: Duration,
    pub shutdown_grace: Duration,
    pub dashboard_alerting_url: String,
    pub log_format: cxgap_runtime::telemetry::LogFormat,
    pub log_filter: String,
}

impl AnalyticsConfig {
    pub fn load(values: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut r = Settings::new(values, SETTINGS, "analytics");
        let kafka_brokers = r.raw("CXGAP_KAFKA_BROKERS");
        let kafka_security = r.kafka_security();
        let server_tls = r.server_tls();
        let database_url = r.database_url("CXGAP_DATABASE_URL");
        let pool_size = r.database_pool_size("CXGAP_DATABASE_POOL_SIZE", database_url.as_deref());
        let pepper = r.raw("CXGAP_API_KEY_PEPPER");
        if pepper.as_ref().is_some_and(|p| p.chars().count() < 16) {
            r.error("CXGAP_API_KEY_PEPPER must be at least 16 characters");
        }
        let grpc_addr = r.parse("CXGAP_GRPC_ADDR", "a socket address like 0.0.0.0:50052", |_| true);
        let http_addr = r.parse("CXGAP_HTTP_ADDR", "a socket address like 0.0.0.0:8081", |_| true);
        let feedback_topic = r.raw("CXGAP_FEEDBACK_TOPIC");
        let dlq_topic = r.raw("CXGAP_DLQ_TOPIC");
        let signals_topic = r.raw("CXGAP_SIGNALS_TOPIC");
        let signal_interval = r.parse::<u64>("CXGAP_SIGNAL_INTERVAL_MS", "milliseconds between 100 and 3600000", |x| {
            (100..=3_600_000).contains(x)
        });
        let retention = r.parse::<u64>("CXGAP_SIGNAL_RETENTION_DAYS", "a positive number of days", |x| *x > 0);
        let consumer_group = r.raw("CXGAP_CONSUMER_GROUP");
        let assignment =
            r.parse::<String>("CXGAP_PARTITION_ASSIGNMENT", "database or kafka", |x| x == "database" || x == "kafka");
        let partitions = r.parse::<i32>("CXGAP_TOPIC_PARTITIONS", "a positive integer", |x| *x > 0);
        let replication = r.parse::<i32>("CXGAP_TOPIC_REPLICATION", "a positive integer", |x| *x > 0);
        let session = r.parse::<u64>("CXGAP_KAFKA_SESSION_TIMEOUT_MS", "milliseconds between 1000 and 300000", |x| {
            (1000..=300_000).contains(x)
        });
        let fetch_wait = r.parse::<u64>("CXGAP_KAFKA_FETCH_WAIT_MS", "milliseconds between 1 and 10000", |x| {
            (1..=10_000).contains(x)
        });
        let batch = r.parse::<usize>("CXGAP_BATCH_MAX_EVENTS", "a positive integer", |x| *x > 0);
        let wait = r.parse::<u64>("CXGAP_BATCH_MAX_WAIT_MS", "a number of milliseconds", |_| true);
        let dedup = r.parse::<u64>("CXGAP_DEDUP_WINDOW_HOURS", "a positive number of hours", |x| *x > 0);
        let auth_cache = r.parse::<u64>("CXGAP_AUTH_CACHE_SECONDS", "a number of seconds", |_| true);
        let grace = r.parse::<u64>("CXGAP_SHUTDOWN_GRACE_SECONDS", "a number of seconds", |_| true);
        let dashboard_alerting_url = r.raw("CXGAP_DASHBOARD_ALERTING_URL");
        let log_format = r.log_format("CXGAP_LOG_FORMAT");
        let log_filter = r.raw("CXGAP_LOG");
        let config = (|| {
            Some(AnalyticsConfig {
                kafka_brokers: kafka_brokers?,
                kafka_security: kafka_security?,
                server_tls: server_tls?,
                database_url: database_url?,
                database_pool_size: pool_size?,
                api_key_pepper: pepper?,
                grpc_addr: grpc_addr?,
                http_addr: http_addr?,
                feedback_topic: feedback_topic?,
                dlq_topic: dlq_topic?,
                signals_topic: signals_topic?,
                signal_interval: Duration::from_millis(signal_interval?),
                signal_retention: Duration::from_secs(retention? * 86_400),
                consumer_group: consumer_group?,
                assignment: if assignment? == "kafka" { Assignment::Kafka } else { Assignment::Database },
                topic_partitions: partitions?,
                topic_replication: replication?,
                session_timeout: Duration::from_millis(session?),
                fetch_wait: Duration::from_millis(fetch_wait?),
                batch_max_events: batch?,
                batch_max_wait: Duration::from_millis(wait?),
                dedup_window: Duration::from_secs(dedup? * 3600),
                auth_cache: Duration::from_secs(auth_cache?),
                shutdown_grace: Duration::from_secs(grace?),
                dashboard_alerting_url: dashboard_alerting_url?.trim_end_matches('/').to_string(),
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

    #[test]
    fn defaults_and_errors() {
        let mut m: BTreeMap<String, String> = [
            ("CXGAP_KAFKA_BROKERS", "b:9092"),
            ("CXGAP_DATABASE_URL", "sqlite:x.db"),
            ("CXGAP_API_KEY_PEPPER", "0123456789abcdef"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = AnalyticsConfig::load(&m).unwrap();
        assert_eq!(c.dedup_window, Duration::from_secs(24 * 3600));
        assert_eq!(c.dlq_topic, "cxgap.feedback.dlq.v1");
        assert_eq!(c.fetch_wait, Duration::from_millis(10));
        m.insert("CXGAP_KAFKA_FETCH_WAIT_MS".into(), "500".into());
        assert_eq!(AnalyticsConfig::load(&m).unwrap().fetch_wait, Duration::from_millis(500));
        m.insert("CXGAP_KAFKA_FETCH_WAIT_MS".into(), "0".into());
        m.insert("CXGAP_BATCH_MAX_EVENTS".into(), "0".into());
        m.insert("CXGAP_MAX_BATCH_EVENTS".into(), "10".into());
        let e = AnalyticsConfig::load(&m).unwrap_err().to_string();
        assert!(e.contains("CXGAP_BATCH_MAX_EVENTS=\"0\""), "{e}");
        assert!(e.contains("CXGAP_KAFKA_FETCH_WAIT_MS=\"0\"") && e.contains("between 1 and 10000"), "{e}");
        assert!(e.contains("CXGAP_MAX_BATCH_EVENTS is not a setting of the analytics service"), "{e}");
    }

    #[test]
    fn the_pool_size_bounds_the_batches_written_at_once() {
        let load = |url: &str, size: Option<&str>| {
            let mut m: BTreeMap<String, String> = [
                ("CXGAP_KAFKA_BROKERS", "b:9092"),
                ("CXGAP_DATABASE_URL", url),
                ("CXGAP_API_KEY_PEPPER", "0123456789abcdef"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            if let Some(size) = size {
                m.insert("CXGAP_DATABASE_POOL_SIZE".into(), size.into());
            }
            AnalyticsConfig::load(&m)
        };
        let pg = "postgres://db/cxgap";
        let c = load(pg, None).unwrap();
        assert_eq!((c.database_pool_size, crate::consumer::limits(&c).max_in_flight), (8, 8));
        let c = load(pg, Some("3")).unwrap();
        assert_eq!((c.database_pool_size, crate::consumer::limits(&c).max_in_flight), (3, 3));
        let c = load("sqlite:x.db", None).unwrap();
        assert_eq!((c.database_pool_size, crate::consumer::limits(&c).max_in_flight), (1, 1));
        let e = load("sqlite:x.db", Some("8")).unwrap_err().to_string();
        assert!(e.contains("CXGAP_DATABASE_POOL_SIZE=8 cannot apply to a SQLite database"), "{e}");
        let e = load(pg, Some("0")).unwrap_err().to_string();
        assert!(e.contains("CXGAP_DATABASE_POOL_SIZE=\"0\" is not a number of connections from 1 to 256"), "{e}");
    }
}
