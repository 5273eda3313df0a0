//! Tenants and API keys, shared by every service: keys are stored only as peppered
//! HMAC-SHA256 hashes (PostgreSQL, or SQLite in embedded mode), and
//! `authorization: Bearer <key>` resolves to the tenant. The key decides the tenant; a
//! tenant id in a payload never does.

pub mod auth;
pub mod tenants;

pub use auth::{AuthError, Authenticator};
pub use tenants::{StoreError, TenantStore};
