//! The alerting service: consumes analytics signals, evaluates each tenant's rules, owns
//! the alert lifecycle, and delivers notifications to subscribers at least once with
//! stable ids. Signals are applied exactly once per batch transaction ([`processor`]);
//! rules ([`model`], [`evaluate`]) and the lifecycle (`cxgap_domain::alerts`) decide
//! changes; each change writes its notification to an ordered log and its deliveries to
//! an outbox ([`store`]), delivered by [`delivery`]: Standard Webhooks signing
//! ([`webhook`]) behind an SSRF guard ([`ssrf`]) with a retry schedule ([`retry`]), Kafka
//! topics, and the resumable gRPC stream ([`grpc`]).

pub mod app;
pub mod config;
pub mod delivery;
pub mod evaluate;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod model;
pub mod processor;
pub mod retry;
pub mod ssrf;
pub mod store;
pub mod webhook;

pub use app::App;
pub use config::AlertingConfig;

/// RFC 3339 UTC with milliseconds, for payload timestamps.
pub fn time_rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&f).unwrap_or_default()
}
