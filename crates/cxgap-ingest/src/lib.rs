//! The ingest service: authenticates the tenant by API key, validates and normalises each
//! feedback event, publishes it to the feedback topic and answers only after the broker
//! acknowledged it. gRPC (single, batch, client-streaming), HTTP JSON and streaming CSV
//! import share one core, [`ingestor::Ingestor`].

pub mod app;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod ingestor;
pub mod limits;
pub mod metrics;

pub use app::App;
pub use config::IngestConfig;
pub use cxgap_auth::{Authenticator, TenantStore, tenants};
