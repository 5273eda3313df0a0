//! The alerting service: consumes analytics signals, evaluates each tenant's rules, owns
//! the alert lifecycle, and delivers notifications to subscribers at least once with
//! stable ids. This crate holds the delivery mechanics that need no broker or database:
//! Standard Webhooks signing ([`webhook`]), the SSRF guard on webhook targets ([`ssrf`])
//! and the retry schedule ([`retry`]).

pub mod retry;
pub mod ssrf;
pub mod webhook;
