//! One way every service opens its database: PostgreSQL or (embedded mode) a SQLite file,
//! through sqlx's `Any` driver so the same SQL serves both, and the service's migrations.

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, Migrator};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database migration failed: {0}")]
    Migration(String),
}

/// Connections in a service's pool for `url` when `CXGAP_DATABASE_POOL_SIZE` does not say
/// ([`crate::settings::Settings::database_pool_size`]). SQLite allows one writer; one
/// connection avoids "database is locked" between ours. Consumers size their concurrency
/// by the pool.
pub fn pool_size(url: &str) -> u32 {
    if url.starts_with("sqlite:") { 1 } else { DEFAULT_POOL_SIZE }
}

/// PostgreSQL connections per pool unless configured.
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// Whether `migration` runs on this backend. Migrations are portable SQL, run on both,
/// except those whose file name ends in `_postgres` (`1005_cells_fillfactor_postgres.sql`):
/// PostgreSQL's storage settings, which SQLite has no syntax for and no need of.
pub fn runs_on(migration: &Migration, sqlite: bool) -> bool {
    // sqlx turns the file name's underscores into the description's spaces.
    !(sqlite && migration.description.ends_with(" postgres"))
}

/// Connects (creating a SQLite file if needed) with at most `pool_size` connections and runs
/// `migrations` (those for this backend, see [`runs_on`]).
///
/// Services may share a database, and so sqlx's migration table: each service owns a
/// range of versions (auth 1–999, analytics 1001–1999, alerting 2001–2999) and ignores
/// the others'.
pub async fn connect(url: &str, pool_size: u32, migrations: &Migrator) -> Result<AnyPool, DbError> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let url = if sqlite && !url.contains("mode=") {
        format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
    } else {
        url.to_string()
    };
    let pool = AnyPoolOptions::new()
        // One writer at a time on SQLite, whatever the caller asked (settings refuse more).
        .max_connections(if sqlite { 1 } else { pool_size.max(1) })
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    let ours: Vec<Migration> = migrations.migrations.iter().filter(|m| runs_on(m, sqlite)).cloned().collect();
    let mut migrator = Migrator { migrations: ours.into(), ..Migrator::DEFAULT };
    migrator.set_ignore_missing(true);
    migrator.run(&pool).await.map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(pool)
}

/// The message of an error that retrying the transaction resolves: a unique-key race, a
/// serialization failure or deadlock (PostgreSQL), a busy or locked file (SQLite).
/// Every store classifies through this one list of codes.
pub fn retryable(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("23505" | "1555" | "2067" | "40001" | "40P01" | "5" | "6")) =>
        {
            Some(db.message().to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::MigrationType;

    fn migration(description: &'static str) -> Migration {
        Migration::new(1, description.into(), MigrationType::Simple, "SELECT 1".into(), false)
    }

    #[test]
    fn postgres_only_migrations_are_skipped_on_sqlite_and_no_other() {
        let only = migration("cells fillfactor postgres");
        assert!(runs_on(&only, false));
        assert!(!runs_on(&only, true));
        for portable in ["analytics", "cell changes", "postgres mirrors", "postgresql"] {
            assert!(runs_on(&migration(portable), true), "{portable}");
            assert!(runs_on(&migration(portable), false), "{portable}");
        }
    }
}
