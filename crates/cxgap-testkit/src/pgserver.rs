//! A throwaway PostgreSQL server of its own (initdb in a temporary directory, a free
//! loopback port), for tests that restart the database as a fault without touching the
//! machine's cluster or other tests. Uses the machine's PostgreSQL binaries
//! (`/usr/lib/postgresql/*/bin`, or `TESTKIT_PG_BIN`); as root it runs them as the
//! `postgres` user, since the server refuses to run as root.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn bin_dir() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("TESTKIT_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no PostgreSQL binaries in /usr/lib/postgresql (apt-get install postgresql)")?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).context("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl PgServer {
    pub fn start() -> Result<PgServer> {
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!("cxgap-pg-{}", crate::random_suffix()));
        std::fs::create_dir_all(&dir)?;
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status()?.success();
            if !ok {
                bail!("cannot hand {} to the postgres user", dir.display());
            }
        }
        let server = PgServer { bin, dir, port: crate::free_port(), as_postgres };
        let data = server.data();
        server.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])?;
        server.pg_ctl_start()?;
        Ok(server)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!("{tool} {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "-t", "60", "start"])
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of `database` on this server (create it with [`PgServer::create_database`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn create_database(&self, name: &str) -> Result<String> {
        use sqlx::Connection;
        let mut c = sqlx::postgres::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut c).await?;
        Ok(self.url(name))
    }

    /// Stops the server the way an orchestrator does (fast shutdown: connections are cut,
    /// open transactions roll back).
    pub fn stop(&self) -> Result<()> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }

    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl_start()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
