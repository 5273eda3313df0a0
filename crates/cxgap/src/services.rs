//! The service commands (`cxgap ingest`, `analytics`, `alerting`) and the tenant/key
//! administration commands.

use anyhow::{Context, Result};
use cxgap_auth::TenantStore;
use cxgap_ingest::IngestConfig;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Settings from the environment (`CXGAP_*`) and from flags, flags winning.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// Bootstrap brokers (CXGAP_KAFKA_BROKERS).
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// postgres://… or sqlite:path (CXGAP_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
    /// gRPC listen address (CXGAP_GRPC_ADDR).
    #[arg(long)]
    grpc_addr: Option<String>,
    /// HTTP listen address (CXGAP_HTTP_ADDR).
    #[arg(long)]
    http_addr: Option<String>,
    /// Check the settings (names and values) and exit: 0 when the service would start
    /// with them, 2 naming every problem. Connects to nothing.
    #[arg(long)]
    check_config: bool,
    /// Any other setting, e.g. --set CXGAP_MAX_BATCH_EVENTS=500 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Every service's settings: an environment shared by all services (one ConfigMap) may
/// carry another service's variables, which are dropped; a name no service knows is kept,
/// so the service refuses it as a probable typo.
fn known_elsewhere(own: &[cxgap_runtime::settings::Setting], key: &str) -> bool {
    let all: [&[cxgap_runtime::settings::Setting]; 4] = [
        cxgap_ingest::config::SETTINGS,
        cxgap_analytics::config::SETTINGS,
        cxgap_alerting::config::SETTINGS,
        crate::client::CLIENT_SETTINGS,
    ];
    !own.iter().any(|(k, _, _)| *k == key) && all.iter().any(|s| s.iter().any(|(k, _, _)| *k == key))
}

impl ServiceArgs {
    fn settings(&self, own: &[cxgap_runtime::settings::Setting]) -> Result<BTreeMap<String, String>> {
        let mut m: BTreeMap<String, String> =
            std::env::vars().filter(|(k, _)| k.starts_with("CXGAP_") && !known_elsewhere(own, k)).collect();
        for (k, v) in [
            ("CXGAP_KAFKA_BROKERS", &self.kafka_brokers),
            ("CXGAP_DATABASE_URL", &self.database_url),
            ("CXGAP_GRPC_ADDR", &self.grpc_addr),
            ("CXGAP_HTTP_ADDR", &self.http_addr),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone());
            }
        }
        for kv in &self.set {
            let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv:?} is not KEY=VALUE"))?;
            m.insert(k.trim().to_string(), v.to_string());
        }
        Ok(m)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

#[derive(Debug, clap::Args)]
pub struct SettingsArgs {
    /// table, markdown or json.
    #[arg(long, default_value = "table", value_parser = ["table", "markdown", "json"])]
    format: String,
}

/// Every environment variable the binary reads, per consumer, with default and meaning:
/// the one list deployment manifests and documentation are checked against.
pub fn settings(args: SettingsArgs) -> Result<ExitCode> {
    let groups: [(&str, &[cxgap_runtime::settings::Setting]); 6] = [
        ("ingest", cxgap_ingest::config::SETTINGS),
        ("analytics", cxgap_analytics::config::SETTINGS),
        ("alerting", cxgap_alerting::config::SETTINGS),
        ("client", crate::client::CLIENT_SETTINGS),
        // Read by all three services.
        ("kafka security", cxgap_runtime::settings::KAFKA_SECURITY),
        ("server TLS", cxgap_runtime::settings::SERVER_TLS),
    ];
    match args.format.as_str() {
        "json" => {
            let v: serde_json::Map<String, serde_json::Value> = groups
                .iter()
                .map(|(g, list)| {
                    let items = list
                        .iter()
                        .map(|(k, d, m)| serde_json::json!({"name": k, "default": d, "meaning": m}))
                        .collect();
                    (g.to_string(), serde_json::Value::Array(items))
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        "markdown" => {
            println!("| variable | ingest | analytics | alerting | client | default | meaning |");
            println!("|---|---|---|---|---|---|---|");
            let mut names: Vec<&str> = groups.iter().flat_map(|(_, l)| l.iter().map(|s| s.0)).collect();
            names.sort();
            names.dedup();
            for n in names {
                let (mut default, mut meaning) = ("", "");
                let shared = cxgap_runtime::settings::KAFKA_SECURITY
                    .iter()
                    .chain(cxgap_runtime::settings::SERVER_TLS)
                    .find(|s| s.0 == n);
                let marks: Vec<&str> = groups[..4]
                    .iter()
                    .map(|(g, l)| match l.iter().find(|s| s.0 == n).or(shared.filter(|_| *g != "client")) {
                        Some((_, d, m)) => {
                            default = d.unwrap_or("required");
                            meaning = m;
                            "✓"
                        }
                        None => "",
                    })
                    .collect();
                println!("| `{n}` | {} | `{default}` | {meaning} |", marks.join(" | "));
            }
        }
        _ => {
            for (g, list) in groups {
                println!("{g}:");
                for (k, d, m) in list {
                    println!("  {k:<34} {:<26} {m}", d.unwrap_or("(required)"));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one way a service command starts: invalid settings exit 2 naming every problem;
/// otherwise logging starts and the service runs until SIGTERM or SIGINT.
fn serve<C, Fut>(
    check_only: bool,
    loaded: Result<C, cxgap_runtime::settings::ConfigError>,
    log: impl FnOnce(&C) -> (cxgap_runtime::telemetry::LogFormat, String),
    run: impl FnOnce(C, cxgap_runtime::Shutdown) -> Fut,
) -> Result<ExitCode>
where
    Fut: Future<Output = Result<()>>,
{
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if check_only {
        println!("configuration ok");
        return Ok(ExitCode::SUCCESS);
    }
    let (format, filter) = log(&config);
    cxgap_runtime::telemetry::init(format, &filter);
    runtime()?.block_on(async { run(config, cxgap_runtime::shutdown::on_signal()).await })?;
    Ok(ExitCode::SUCCESS)
}

pub fn analytics(args: ServiceArgs) -> Result<ExitCode> {
    let loaded = cxgap_analytics::AnalyticsConfig::load(&args.settings(cxgap_analytics::config::SETTINGS)?);
    serve(
        args.check_config,
        loaded,
        |c| (c.log_format, c.log_filter.clone()),
        |config, stop| async move { cxgap_analytics::App::build(config).await?.run(stop).await },
    )
}

pub fn alerting(args: ServiceArgs) -> Result<ExitCode> {
    let loaded = cxgap_alerting::AlertingConfig::load(&args.settings(cxgap_alerting::config::SETTINGS)?);
    serve(
        args.check_config,
        loaded,
        |c| (c.log_format, c.log_filter.clone()),
        |config, stop| async move { cxgap_alerting::App::build(config).await?.run(stop).await },
    )
}

pub fn ingest(args: ServiceArgs) -> Result<ExitCode> {
    let loaded = IngestConfig::load(&args.settings(cxgap_ingest::config::SETTINGS)?);
    serve(
        args.check_config,
        loaded,
        |c| (c.log_format, c.log_filter.clone()),
        |config, stop| async move { cxgap_ingest::App::build(config).await?.run(stop).await },
    )
}

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// postgres://… or sqlite:path (default: CXGAP_DATABASE_URL).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// The API-key pepper the services use (default: CXGAP_API_KEY_PEPPER).
    #[arg(long, global = true)]
    pepper: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    command: TenantsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TenantsCommand {
    /// Create a tenant.
    Create { name: String },
    /// List tenants.
    List,
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Create an API key for a tenant (id or name); the key is printed once.
    Create {
        tenant: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List API keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke an API key by its id.
    Revoke { key_id: String },
}

fn setting(flag: &Option<String>, env: &str) -> Result<String> {
    flag.clone().or_else(|| std::env::var(env).ok()).filter(|s| !s.is_empty()).with_context(|| {
        format!("pass --{} or set {env}", env.trim_start_matches("CXGAP_").to_lowercase().replace('_', "-"))
    })
}

fn fmt_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

async fn store(db: &DbArgs) -> Result<TenantStore> {
    let url = setting(&db.database_url, "CXGAP_DATABASE_URL")?;
    let pepper = setting(&db.pepper, "CXGAP_API_KEY_PEPPER")?;
    TenantStore::connect(&url, &pepper).await.context("connecting to the tenant database")
}

pub fn tenants(args: TenantsArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let store = store(&args.db).await?;
        match args.command {
            TenantsCommand::Create { name } => {
                let t = store.create_tenant(&name).await?;
                println!("{}\t{}", t.tenant_id, t.name);
            }
            TenantsCommand::List => {
                for t in store.tenants().await? {
                    println!("{}\t{}\t{}", t.tenant_id, t.name, fmt_ms(t.created_at));
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn keys(args: KeysArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let store = store(&args.db).await?;
        match args.command {
            KeysCommand::Create { tenant, label } => {
                let (info, key) = store.create_key(&tenant, &label).await?;
                eprintln!("key {} for tenant {}: store it now, it is not shown again", info.key_id, info.tenant_id);
                println!("{key}");
            }
            KeysCommand::List { tenant } => {
                for k in store.keys(tenant.as_deref()).await? {
                    let state = k.revoked_at.map_or("active".to_string(), |r| format!("revoked {}", fmt_ms(r)));
                    println!("{}\t{}\t{}\t{}\t{}", k.key_id, k.tenant_id, k.label, fmt_ms(k.created_at), state);
                }
            }
            KeysCommand::Revoke { key_id } => {
                store.revoke_key(&key_id).await?;
                println!("revoked {key_id}");
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// postgres://… or sqlite:path (default: CXGAP_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
}

/// Brings the database schema of all three services up to date and exits: a deployment's
/// migration Job runs this before new pods start. The services migrate on start too (each
/// its own tables, under PostgreSQL's advisory lock), so running it twice is harmless.
pub fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    cxgap_runtime::telemetry::init(cxgap_runtime::telemetry::LogFormat::Json, "warn");
    runtime()?.block_on(async {
        let url = setting(&args.database_url, "CXGAP_DATABASE_URL")?;
        // The tenant store needs a pepper to hash keys, not to migrate.
        TenantStore::connect(&url, "migration-only-not-a-pepper").await.context("migrating the tenant tables")?;
        cxgap_analytics::AnalyticsStore::connect(&url).await.context("migrating the analytics tables")?;
        cxgap_alerting::store::AlertStore::connect(&url).await.context("migrating the alerting tables")?;
        println!("schema up to date (auth, analytics, alerting)");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
