//! The analytics service: consumes the feedback topic as a consumer group and keeps the
//! gap state in PostgreSQL (SQLite in embedded mode) exactly once — each batch's state
//! changes, processed event ids and the partition's offset are written in one
//! transaction, so a crash, rebalance or redelivery never loses or double-counts an event.
//! Reports are served over gRPC and HTTP JSON, scoped to the caller's API key; risk and
//! gap changes leave as signals through a transactional outbox.

pub mod app;
pub mod config;
pub mod consumer;
pub mod grpc;
pub mod http;
pub mod metrics;
mod pgbatch;
pub mod processor;
pub mod queries;
pub mod signals;
pub mod store;

pub use app::App;
pub use config::AnalyticsConfig;
pub use store::{AnalyticsStore, StoreError};
