//! The analytics service: consumes the feedback topic as a consumer group and keeps the
//! gap state in PostgreSQL (SQLite in embedded mode) exactly once — each batch's state
//! changes, processed event ids and the partition's offset are written in one
//! transaction, so a crash, rebalance or redelivery never loses or double-counts an event.

pub mod processor;
pub mod store;

pub use store::{AnalyticsStore, StoreError};
