//! `authorization: Bearer <api key>` → tenant. Verdicts are cached briefly so the database
//! is not asked on every request; a revoked key stops working within the cache TTL.

use crate::tenants::TenantStore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key, a malformed header, or an unknown or revoked key.
    #[error("{0}")]
    Unauthenticated(String),
    /// The key store could not be asked.
    #[error("{0}")]
    Unavailable(String),
}

/// Key digest → (tenant, or None for a refused key; when it was checked).
type Verdicts = HashMap<[u8; 32], (Option<String>, Instant)>;

#[derive(Debug)]
pub struct Authenticator {
    store: TenantStore,
    ttl: Duration,
    // Keyed by a digest of the key, so no plaintext key is kept in memory longer than a call.
    cache: Mutex<Verdicts>,
}

impl Authenticator {
    pub fn new(store: TenantStore, ttl: Duration) -> Self {
        Authenticator { store, ttl, cache: Mutex::new(HashMap::new()) }
    }

    pub fn store(&self) -> &TenantStore {
        &self.store
    }

    /// The tenant of an `authorization` header value.
    pub async fn tenant(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        let Some(value) = authorization else {
            return Err(AuthError::Unauthenticated("missing authorization: Bearer <api key>".into()));
        };
        let Some(key) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim) else {
            return Err(AuthError::Unauthenticated("authorization must be \"Bearer <api key>\"".into()));
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let now = Instant::now();
        if let Some((verdict, at)) = self.cache.lock().expect("auth cache").get(&digest).cloned()
            && now.duration_since(at) < self.ttl
        {
            return verdict.ok_or_else(|| AuthError::Unauthenticated("unknown or revoked API key".into()));
        }
        let verdict = self
            .store
            .authenticate(key)
            .await
            .map_err(|e| AuthError::Unavailable(format!("cannot verify the API key: {e}")))?;
        let mut cache = self.cache.lock().expect("auth cache");
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(digest, (verdict.clone(), now));
        verdict.ok_or_else(|| AuthError::Unauthenticated("unknown or revoked API key".into()))
    }
}
