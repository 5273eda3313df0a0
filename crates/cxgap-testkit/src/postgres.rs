//! A fresh database per test on the machine's PostgreSQL (127.0.0.1:5432, trust auth, or
//! `TESTKIT_POSTGRES_URL`). If the server is not running, the harness starts the
//! machine's cluster with `pg_ctlcluster`, so no test depends on a hand-started service.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::time::Duration;

fn admin_url() -> String {
    std::env::var("TESTKIT_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn connect_admin() -> anyhow::Result<PgConnection> {
    let url = admin_url();
    match PgConnection::connect(&url).await {
        Ok(c) => Ok(c),
        Err(first) => {
            start_cluster();
            for _ in 0..100 {
                if let Ok(c) = PgConnection::connect(&url).await {
                    return Ok(c);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::bail!("PostgreSQL at {url} is not reachable and could not be started: {first}")
        }
    }
}

/// Starts the machine's Debian cluster(s); harmless when already running.
fn start_cluster() {
    let Ok(versions) = std::fs::read_dir("/etc/postgresql") else { return };
    for v in versions.flatten() {
        let version = v.file_name().to_string_lossy().to_string();
        let _ = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .status();
    }
}

/// A database that exists for one test and is dropped afterwards.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn new() -> anyhow::Result<TestDb> {
        let mut admin = connect_admin().await?;
        let name = format!("cxgap_test_{}", crate::random_suffix());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
        let base = admin_url();
        let url = match base.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{name}"),
            None => anyhow::bail!("cannot derive a database URL from {base}"),
        };
        Ok(TestDb { url, name })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async; a small runtime of its own does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url()).await.ok()?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.ok()
            })
        })
        .join();
    }
}
