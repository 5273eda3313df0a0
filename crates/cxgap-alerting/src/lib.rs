//! The alerting service: consumes analytics signals, evaluates each tenant's rules, owns
//! the alert lifecycle, and delivers notifications to subscribers at least once with
//! stable ids. This crate holds the delivery mechanics that need no broker or database:
//! Standard Webhooks signing ([`webhook`]), the SSRF guard on webhook targets ([`ssrf`])
//! and the retry schedule ([`retry`]).

pub mod delivery;
pub mod evaluate;
pub mod metrics;
pub mod model;
pub mod processor;
pub mod retry;
pub mod ssrf;
pub mod store;
pub mod webhook;

/// RFC 3339 UTC with milliseconds, for payload timestamps.
pub fn time_rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&f).unwrap_or_default()
}
