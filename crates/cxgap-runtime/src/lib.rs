//! What every cxgap service shares: logging, the shutdown signal, and the operations
//! endpoints (`/healthz`, `/readyz`, `/metrics`) that Kubernetes and Prometheus use, and
//! TLS on the services' own ports.

pub mod db;
pub mod ops;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use ops::{Check, OpsState};
pub use shutdown::{Shutdown, signal};
