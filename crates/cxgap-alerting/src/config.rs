//! Typed settings of the alerting service (see `cxgap_runtime::settings`).

use crate::retry::Schedule;
use crate::ssrf::Guard;
use cxgap_runtime::settings::{ConfigError, Setting, Settings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub const SETTINGS: &[Setting] = &[
    ("CXGAP_KAFKA_BROKERS", None, "bootstrap brokers, host:port[,host:port]"),
    ("CXGAP_DATABASE_URL", None, "postgres://… or sqlite:path (alerting state, tenants and API keys)"),
    (
        "CXGAP_DATABASE_POOL_SIZE",
        Some("8"),
        "connections in each of the service's PostgreSQL pools (alerting state, tenants; opened as needed): also how many signal batches are processed at once; SQLite: 1",
    ),
    ("CXGAP_API_KEY_PEPPER", None, "secret mixed into API-key hashes, the same as the other services'"),
    ("CXGAP_GRPC_ADDR", Some("0.0.0.0:50053"), "gRPC listen address (AlertingService, health, reflection)"),
    ("CXGAP_HTTP_ADDR", Some("0.0.0.0:8082"), "HTTP listen address (/healthz, /readyz, /metrics)"),
    ("CXGAP_SIGNALS_TOPIC", Some("cxgap.signals.v1"), "topic of analytics' signals, consumed"),
    ("CXGAP_ALERTS_TOPIC", Some("cxgap.alerts.v1"), "topic created for Kafka subscriptions"),
    ("CXGAP_ALERTING_GROUP", Some("cxgap-alerting"), "Kafka consumer group of the alerting instances"),
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
    (
        "CXGAP_PARTITION_ASSIGNMENT",
        Some("database"),
        "database (leases in PostgreSQL share the signal partitions) or kafka (the group protocol)",
    ),
    ("CXGAP_BATCH_MAX_EVENTS", Some("500"), "records per storage transaction"),
    (
        "CXGAP_BATCH_MAX_WAIT_MS",
        Some("20"),
        "longest a batch keeps filling while records keep arriving (it closes after 3 ms without one)",
    ),
    ("CXGAP_REPEAT_INTERVAL_MINUTES", Some("240"), "how often a firing, unacknowledged alert is notified again"),
    (
        "CXGAP_WEBHOOK_RETRY_SCHEDULE",
        Some(crate::retry::DEFAULT_SCHEDULE),
        "delays between webhook attempts; after the last, dead letter",
    ),
    ("CXGAP_WEBHOOK_TIMEOUT_MS", Some("10000"), "how long one webhook attempt may take"),
    (
        "CXGAP_WEBHOOK_ALLOW",
        Some(""),
        "CIDR blocks webhooks may reach although internal (e.g. 10.0.0.0/8); empty: none",
    ),
    ("CXGAP_DELIVERY_CONCURRENCY", Some("8"), "subscriptions delivered to at once"),
    ("CXGAP_AUTH_CACHE_SECONDS", Some("30"), "how long an API key verdict is cached"),
    ("CXGAP_SHUTDOWN_GRACE_SECONDS", Some("20"), "time to finish the batch in hand on SIGTERM"),
    ("CXGAP_LOG_FORMAT", Some("json"), "json or plain"),
    ("CXGAP_LOG", Some("info"), "log filter"),
];

#[derive(Debug, Clone)]
pub struct AlertingConfig {
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
    pub signals_topic: String,
    pub alerts_topic: String,
    pub group: String,
    pub topic_partitions: i32,
    pub topic_replication: i32,
    pub session_timeout: Duration,
    /// The longest a consumer's fetch waits at the broker for records.
    pub fetch_wait: Duration,
    /// Partitions shared through database leases (true) or the Kafka group protocol.
    pub database_assignment: bool,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    pub repeat_interval: Duration,
    pub retry_schedule: Schedule,
    pub webhook_timeout: Duration,
    pub webhook_guard: Guard,
    pub delivery_concurrency: usize,
    pub auth_cache: Duration,
    pub shutdown_grace: Duration,
    pub log_format: cxgap_runtime::telemetry::LogFormat,
    pub log_filter: String,
}

impl AlertingConfig {
    pub fn load(values: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut r = Settings::new(values, SETTINGS, "alerting");
        let kafka_brokers = r.raw("CXGAP_KAFKA_BROKERS");
        let kafka_security = r.kafka_security();
        let server_tls = r.server_tls();
        let database_url = r.database_url("CXGAP_DATABASE_URL");
        let pool_size = r.database_pool_size("CXGAP_DATABASE_POOL_SIZE", database_url.as_deref());
        let pepper = r.raw("CXGAP_API_KEY_PEPPER");
        if pepper.as_ref().is_some_and(|p| p.chars().count() < 16) {
            r.error("CXGAP_API_KEY_PEPPER must be at least 16 characters");
        }
        let grpc_addr = r.parse("CXGAP_GRPC_ADDR", "a socket address like 0.0.0.0:50053", |_| true);
        let http_addr = r.parse("CXGAP_HTTP_ADDR", "a socket address like 0.0.0.0:8082", |_| true);
        let signals_topic = r.raw("CXGAP_SIGNALS_TOPIC");
        let alerts_topic = r.raw("CXGAP_ALERTS_TOPIC");
        let group = r.raw("CXGAP_ALERTING_GROUP");
        let partitions = r.parse::<i32>("CXGAP_TOPIC_PARTITIONS", "a positive integer", |x| *x > 0);
        let replication = r.parse::<i32>("CXGAP_TOPIC_REPLICATION", "a positive integer", |x| *x > 0);
        let session = r.parse::<u64>("CXGAP_KAFKA_SESSION_TIMEOUT_MS", "milliseconds between 1000 and 300000", |x| {
            (1000..=300_000).contains(x)
        });
        let fetch_wait = r.parse::<u64>("CXGAP_KAFKA_FETCH_WAIT_MS", "milliseconds between 1 and 10000", |x| {
            (1..=10_000).contains(x)
        });
        let assignment =
            r.parse::<String>("CXGAP_PARTITION_ASSIGNMENT", "database or kafka", |x| x == "database" || x == "kafka");
        let batch = r.parse::<usize>("CXGAP_BATCH_MAX_EVENTS", "a positive integer", |x| *x > 0);
        let wait = r.parse::<u64>("CXGAP_BATCH_MAX_WAIT_MS", "a number of milliseconds", |_| true);
        let repeat = r.parse::<u64>("CXGAP_REPEAT_INTERVAL_MINUTES", "a positive number of minutes", |x| *x > 0);
        let schedule = r.raw("CXGAP_WEBHOOK_RETRY_SCHEDULE").and_then(|s| match Schedule::parse(&s) {
            Ok(s) => Some(s),
            Err(e) => {
                r.error(format!("CXGAP_WEBHOOK_RETRY_SCHEDULE: {e}"));
                None
            }
        });
        let timeout = r.parse::<u64>("CXGAP_WEBHOOK_TIMEOUT_MS", "milliseconds between 100 and 120000", |x| {
            (100..=120_000).contains(x)
        });
        let guard = r.raw("CXGAP_WEBHOOK_ALLOW").and_then(|s| match Guard::new(&s) {
            Ok(g) => Some(g),
            Err(e) => {
                r.error(format!("CXGAP_WEBHOOK_ALLOW: {e}"));
                None
            }
        });
        let concurrency = r.parse::<usize>("CXGAP_DELIVERY_CONCURRENCY", "a positive integer", |x| *x > 0);
        let auth_cache = r.parse::<u64>("CXGAP_AUTH_CACHE_SECONDS", "a number of seconds", |_| true);
        let grace = r.parse::<u64>("CXGAP_SHUTDOWN_GRACE_SECONDS", "a number of seconds", |_| true);
        let log_format = r.log_format("CXGAP_LOG_FORMAT");
        let log_filter = r.raw("CXGAP_LOG");
        let config = (|| {
            Some(AlertingConfig {
                kafka_brokers: kafka_brokers?,
                kafka_security: kafka_security?,
                server_tls: server_tls?,
                database_url: database_url?,
                database_pool_size: pool_size?,
                api_key_pepper: pepper?,
                grpc_addr: grpc_addr?,
                http_addr: http_addr?,
                signals_topic: signals_topic?,
                alerts_topic: alerts_topic?,
                group: group?,
                topic_partitions: partitions?,
                topic_replication: replication?,
                session_timeout: Duration::from_millis(session?),
                fetch_wait: Duration::from_millis(fetch_wait?),
                database_assignment: assignment? == "database",
                batch_max_events: batch?,
                batch_max_wait: Duration::from_millis(wait?),
                repeat_interval: Duration::from_secs(repeat? * 60),
                retry_schedule: schedule?,
                webhook_timeout: Duration::from_millis(timeout?),
                webhook_guard: guard?,
                delivery_concurrency: concurrency?,
                auth_cache: Duration::from_secs(auth_cache?),
                shutdown_grace: Duration::from_secs(grace?),
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
    fn defaults_and_errors_name_the_setting() {
        let mut m: BTreeMap<String, String> = [
            ("CXGAP_KAFKA_BROKERS", "b:9092"),
            ("CXGAP_DATABASE_URL", "sqlite:x.db"),
            ("CXGAP_API_KEY_PEPPER", "0123456789abcdef"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = AlertingConfig::load(&m).unwrap();
        assert_eq!(c.retry_schedule.attempts(), 8);
        assert_eq!(c.repeat_interval, Duration::from_secs(4 * 3600));
        assert_eq!(c.fetch_wait, Duration::from_millis(10));
        m.insert("CXGAP_KAFKA_FETCH_WAIT_MS".into(), "10001".into());
        m.insert("CXGAP_WEBHOOK_RETRY_SCHEDULE".into(), "5s,later".into());
        m.insert("CXGAP_WEBHOOK_ALLOW".into(), "localhost".into());
        let e = AlertingConfig::load(&m).unwrap_err().to_string();
        assert!(e.contains("CXGAP_WEBHOOK_RETRY_SCHEDULE") && e.contains("\"later\""), "{e}");
        assert!(e.contains("CXGAP_WEBHOOK_ALLOW"), "{e}");
        assert!(e.contains("CXGAP_KAFKA_FETCH_WAIT_MS=\"10001\""), "{e}");
    }
}
