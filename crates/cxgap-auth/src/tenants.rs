//! Tenants and API keys, in PostgreSQL or (embedded mode) SQLite through one code path.
//! A key reads `cxk_<key id>_<secret>`; only HMAC-SHA256(pepper, key id:secret) is stored,
//! and verification compares in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::AnyPool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database migration failed: {0}")]
    Migration(String),
}

/// The one place database errors are classified, by SQLSTATE / SQLite extended code.
pub fn classify(e: sqlx::Error, what: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        // 23505: PostgreSQL unique_violation; 1555 / 2067: SQLite primary key / unique.
        if matches!(db.code().as_deref(), Some("23505" | "1555" | "2067")) {
            return StoreError::Conflict(what.to_string());
        }
    }
    if matches!(e, sqlx::Error::RowNotFound) {
        return StoreError::NotFound(what.to_string());
    }
    StoreError::Unavailable(e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub tenant_id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: String,
    pub tenant_id: String,
    pub label: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Clone)]
pub struct TenantStore {
    pool: AnyPool,
    pepper: String,
}

impl std::fmt::Debug for TenantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStore").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Splits `cxk_<key id>_<secret>`.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("cxk_")?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (ok(id, 12) && ok(secret, 64)).then_some((id, secret))
}

impl TenantStore {
    /// Connects (creating the SQLite file if needed) with the default pool size
    /// ([`cxgap_runtime::db::pool_size`]) and runs the migrations.
    pub async fn connect(url: &str, pepper: &str) -> Result<Self, StoreError> {
        Self::connect_with_pool(url, pepper, cxgap_runtime::db::pool_size(url)).await
    }

    /// As [`TenantStore::connect`], with at most `pool_size` connections.
    pub async fn connect_with_pool(url: &str, pepper: &str, pool_size: u32) -> Result<Self, StoreError> {
        static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
        let pool = cxgap_runtime::db::connect(url, pool_size, &MIGRATIONS).await.map_err(|e| match e {
            cxgap_runtime::db::DbError::Unavailable(m) => StoreError::Unavailable(m),
            cxgap_runtime::db::DbError::Migration(m) => StoreError::Migration(m),
        })?;
        Ok(TenantStore { pool, pepper: pepper.to_string() })
    }

    fn mac(&self, key_id: &str, secret: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.pepper.as_bytes()).expect("HMAC takes any key length");
        mac.update(key_id.as_bytes());
        mac.update(b":");
        mac.update(secret.as_bytes());
        mac
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(|e| classify(e, "ping"))
    }

    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        let t = Tenant { tenant_id: format!("tn_{}", random_hex(6)), name: name.to_string(), created_at: now_ms() };
        sqlx::query("INSERT INTO tenants (tenant_id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&t.tenant_id)
            .bind(&t.name)
            .bind(t.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| classify(e, &format!("tenant {name:?}")))?;
        Ok(t)
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT tenant_id, name, created_at FROM tenants ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| classify(e, "tenants"))?;
        Ok(rows.into_iter().map(|(tenant_id, name, created_at)| Tenant { tenant_id, name, created_at }).collect())
    }

    /// `tenant` is a tenant id or name. Returns the key's info and the key itself, which is
    /// shown this once and never stored.
    pub async fn create_key(&self, tenant: &str, label: &str) -> Result<(KeyInfo, String), StoreError> {
        let tenant_id: (String,) = sqlx::query_as("SELECT tenant_id FROM tenants WHERE tenant_id = $1 OR name = $1")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(e, &format!("tenant {tenant:?}")))?;
        let key_id = random_hex(6);
        let secret = random_hex(32);
        let hash: String =
            self.mac(&key_id, &secret).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let info = KeyInfo {
            key_id,
            tenant_id: tenant_id.0,
            label: label.to_string(),
            created_at: now_ms(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (key_id, tenant_id, key_hash, label, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&info.key_id)
        .bind(&info.tenant_id)
        .bind(&hash)
        .bind(&info.label)
        .bind(info.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| classify(e, "api key"))?;
        let key = format!("cxk_{}_{}", info.key_id, secret);
        Ok((info, key))
    }

    pub async fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, StoreError> {
        let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT k.key_id, k.tenant_id, k.label, k.created_at, k.revoked_at FROM api_keys k \
             JOIN tenants t ON t.tenant_id = k.tenant_id \
             WHERE $1 = '' OR t.tenant_id = $1 OR t.name = $1 ORDER BY k.created_at, k.key_id",
        )
        .bind(tenant.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify(e, "api keys"))?;
        Ok(rows
            .into_iter()
            .map(|(key_id, tenant_id, label, created_at, revoked_at)| KeyInfo {
                key_id,
                tenant_id,
                label,
                created_at,
                revoked_at,
            })
            .collect())
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(|e| classify(e, "api key"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("active key {key_id:?}")));
        }
        Ok(())
    }

    /// The tenant of a valid, unrevoked key; `Ok(None)` for anything else.
    pub async fn authenticate(&self, key: &str) -> Result<Option<String>, StoreError> {
        let Some((key_id, secret)) = parse_key(key) else { return Ok(None) };
        let row: Option<(String, String, Option<i64>)> =
            sqlx::query_as("SELECT tenant_id, key_hash, revoked_at FROM api_keys WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| classify(e, "api key"))?;
        let Some((tenant, hash, revoked)) = row else { return Ok(None) };
        let Some(expected) = hex_decode(&hash) else { return Ok(None) };
        let valid = self.mac(key_id, secret).verify_slice(&expected).is_ok();
        Ok((valid && revoked.is_none()).then_some(tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format() {
        let id = "0123456789ab";
        let secret = "f".repeat(64);
        let key = format!("cxk_{id}_{secret}");
        assert_eq!(parse_key(&key), Some((id, secret.as_str())));
        for bad in ["", "cxk_", "cxk_0123456789ab", "Bearer x", &format!("cxk_{id}_{}", "g".repeat(64))] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex_decode("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex_decode("0"), None);
        assert_eq!(hex_decode("zz"), None);
    }
}
