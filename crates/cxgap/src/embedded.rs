//! `cxgap run`: embedded mode. Ingest, analytics and alerting in one process, over a
//! durable in-process bus and SQLite files in one data directory, through the same code
//! as the distributed services (only the bus and the database URL differ). The first run
//! creates a tenant and an API key and keeps them in the data directory.

use crate::retention::Retention;
use anyhow::{Context, Result};
use cxgap_auth::TenantStore;
use cxgap_bus::sql::SqlBus;
use cxgap_bus::{Publisher, TopicSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Directory of the SQLite files, the API key and the key pepper.
    #[arg(long, default_value = "cxgap-data")]
    data_dir: PathBuf,
    /// Ingest: HTTP and gRPC listen addresses.
    #[arg(long, default_value = "127.0.0.1:8080")]
    ingest_http: String,
    #[arg(long, default_value = "127.0.0.1:50051")]
    ingest_grpc: String,
    /// Analytics: HTTP (query API) and gRPC listen addresses.
    #[arg(long, default_value = "127.0.0.1:8081")]
    analytics_http: String,
    #[arg(long, default_value = "127.0.0.1:50052")]
    analytics_grpc: String,
    /// Alerting: HTTP (health, metrics) and gRPC listen addresses.
    #[arg(long, default_value = "127.0.0.1:8082")]
    alerting_http: String,
    #[arg(long, default_value = "127.0.0.1:50053")]
    alerting_grpc: String,
    /// Log filter (CXGAP_LOG syntax).
    #[arg(long, default_value = "info")]
    log: String,
}

const TOPICS: [&str; 4] = ["cxgap.feedback.v1", "cxgap.feedback.dlq.v1", "cxgap.signals.v1", "cxgap.alerts.v1"];
const PARTITIONS: i32 = 4;

/// A secret kept in the data directory: read it, or create it readable by its owner only.
fn secret_file(path: &Path, make: impl FnOnce() -> Result<String>) -> Result<(String, bool)> {
    if let Ok(s) = std::fs::read_to_string(path) {
        return Ok((s.trim().to_string(), false));
    }
    let value = make()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write as _;
    opts.open(path)
        .and_then(|mut f| f.write_all(format!("{value}\n").as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((value, true))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn settings(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    cxgap_runtime::telemetry::init(cxgap_runtime::telemetry::LogFormat::Plain, &args.log);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let stop = cxgap_runtime::shutdown::on_signal();
        let running = start(&args, stop, true).await?;
        running.wait().await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The three services running in this process.
#[derive(Debug)]
pub struct Running {
    pub key: String,
    pub ingest_grpc: std::net::SocketAddr,
    pub analytics_http: std::net::SocketAddr,
    pub analytics_grpc: std::net::SocketAddr,
    pub alerting_grpc: std::net::SocketAddr,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<Result<()>>)>,
}

impl Running {
    /// Until the services stop (on the shutdown they were started with).
    pub async fn wait(self) -> Result<()> {
        for (name, t) in self.tasks {
            t.await.with_context(|| format!("{name} panicked"))?.with_context(|| name)?;
        }
        Ok(())
    }
}

impl RunArgs {
    /// Every listener on a free loopback port.
    pub fn any_port(&mut self) {
        for a in [
            &mut self.ingest_http,
            &mut self.ingest_grpc,
            &mut self.analytics_http,
            &mut self.analytics_grpc,
            &mut self.alerting_http,
            &mut self.alerting_grpc,
        ] {
            *a = "127.0.0.1:0".into();
        }
    }

    pub fn new(data_dir: PathBuf) -> Self {
        RunArgs {
            data_dir,
            ingest_http: "127.0.0.1:8080".into(),
            ingest_grpc: "127.0.0.1:50051".into(),
            analytics_http: "127.0.0.1:8081".into(),
            analytics_grpc: "127.0.0.1:50052".into(),
            alerting_http: "127.0.0.1:8082".into(),
            alerting_grpc: "127.0.0.1:50053".into(),
            log: "warn".into(),
        }
    }
}

/// Starts ingest, analytics and alerting on the data directory; `announce` prints where.
pub async fn start(args: &RunArgs, stop: cxgap_runtime::Shutdown, announce: bool) -> Result<Running> {
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let url = |name: &str| format!("sqlite:{}", dir.join(name).display());
    let (pepper, _) = secret_file(&dir.join("pepper"), || random_hex(24))?;
    let tenants = TenantStore::connect(&url("tenants.db"), &pepper).await.context("opening the tenant database")?;
    let key_file = dir.join("api-key");
    // Bootstrap on the first run: one tenant, one key.
    let new_key = if key_file.exists() {
        None
    } else {
        let t = match tenants.tenants().await?.into_iter().next() {
            Some(t) => t,
            None => tenants.create_tenant("default").await?,
        };
        Some(tenants.create_key(&t.tenant_id, "embedded").await?.1)
    };
    let (key, created) = secret_file(&key_file, || new_key.clone().context("the API key file vanished"))?;
    let bus = SqlBus::open(&url("bus.db")).await.context("opening the bus")?;
    bus.ensure_topics(&TOPICS.map(|name| TopicSpec { name: name.into(), partitions: PARTITIONS, replication: 1 }))
        .await?;
    let common = |db: &str, http: &str, grpc: &str| {
        vec![
            ("CXGAP_KAFKA_BROKERS", "embedded".to_string()),
            ("CXGAP_DATABASE_URL", url(db)),
            ("CXGAP_API_KEY_PEPPER", pepper.clone()),
            ("CXGAP_HTTP_ADDR", http.to_string()),
            ("CXGAP_GRPC_ADDR", grpc.to_string()),
            ("CXGAP_TOPIC_PARTITIONS", PARTITIONS.to_string()),
            ("CXGAP_LOG_FORMAT", "plain".to_string()),
        ]
    };
    let mut ingest_settings = common("tenants.db", &args.ingest_http, &args.ingest_grpc);
    // One machine, usually one tenant: room for imports of a whole export at once.
    ingest_settings.push(("CXGAP_RATE_LIMIT_PER_SECOND", "20000".into()));
    ingest_settings.push(("CXGAP_RATE_LIMIT_BURST", "50000".into()));
    let ingest_cfg =
        cxgap_ingest::IngestConfig::load(&settings(&ingest_settings)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut alerting_settings = common("alerting.db", &args.alerting_http, &args.alerting_grpc);
    // Local webhook receivers are the norm on one machine.
    alerting_settings.push(("CXGAP_WEBHOOK_ALLOW", "127.0.0.0/8,::1/128".into()));
    let alerting_cfg =
        cxgap_alerting::AlertingConfig::load(&settings(&alerting_settings)).map_err(|e| anyhow::anyhow!("{e}"))?;

    let ingest = cxgap_ingest::App::build_with(ingest_cfg, Arc::new(bus.clone()), tenants.clone()).await?;
    let alerting_store = cxgap_alerting::store::AlertStore::connect(&alerting_cfg.database_url).await?;
    let (alerting_group, signals_topic, alerts_topic) =
        (alerting_cfg.group.clone(), alerting_cfg.signals_topic.clone(), alerting_cfg.alerts_topic.clone());
    let alerting_sub = bus.subscribe(&alerting_cfg.group, &[&alerting_cfg.signals_topic]);
    let alerting = cxgap_alerting::App::build_with(
        alerting_cfg,
        alerting_sub,
        bus.clone(),
        alerting_store.clone(),
        tenants.clone(),
    )
    .await?;

    let mut analytics_settings = common("analytics.db", &args.analytics_http, &args.analytics_grpc);
    // One instance: its lease is renewed fast and a restart takes over at once.
    analytics_settings.push(("CXGAP_KAFKA_SESSION_TIMEOUT_MS", "3000".into()));
    analytics_settings.push(("CXGAP_BATCH_MAX_WAIT_MS", "50".into()));
    // The dashboard's alerts panel talks to alerting's HTTP API directly.
    analytics_settings.push(("CXGAP_DASHBOARD_ALERTING_URL", format!("http://{}", alerting.http_addr())));
    let analytics_cfg =
        cxgap_analytics::AnalyticsConfig::load(&settings(&analytics_settings)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let analytics_store = cxgap_analytics::AnalyticsStore::connect(&analytics_cfg.database_url).await?;
    let analytics_sub = bus.subscribe(&analytics_cfg.consumer_group, &[&analytics_cfg.feedback_topic]);
    let retention = Retention {
        bus: bus.clone(),
        partitions: PARTITIONS,
        analytics: analytics_store.clone(),
        analytics_group: analytics_cfg.consumer_group.clone(),
        feedback_topic: analytics_cfg.feedback_topic.clone(),
        alerting: alerting_store,
        alerting_group,
        signals_topic,
        alerts_topic,
        dlq_topic: analytics_cfg.dlq_topic.clone(),
        newest_kept: crate::retention::NEWEST_KEPT,
    };
    let analytics =
        cxgap_analytics::App::build_with(analytics_cfg, analytics_sub, bus.clone(), analytics_store, tenants.clone())
            .await?;
    if announce {
        println!("cxgap is running (embedded mode, data in {})", dir.display());
        println!("  dashboard:      http://{}/dashboard#key={key}", analytics.http_addr());
        println!("  send feedback:  http://{}/v1/feedback  (CSV: /v1/feedback/import)", ingest.http_addr());
        println!("  gap reports:    http://{}/v1/report?window=30d&by=channel", analytics.http_addr());
        println!("  alerts (gRPC):  {}", alerting.grpc_addr());
        if created {
            println!("  API key (created now, also in {}): {key}", dir.join("api-key").display());
        } else {
            println!("  API key: in {}", dir.join("api-key").display());
        }
        println!(
            "  e.g. curl -H \"authorization: Bearer $(cat {})\" --data-binary @examples/feedback.csv http://{}/v1/feedback/import",
            dir.join("api-key").display(),
            ingest.http_addr()
        );
    }
    let (ingest_grpc, analytics_http, analytics_grpc, alerting_grpc) =
        (ingest.grpc_addr(), analytics.http_addr(), analytics.grpc_addr(), alerting.grpc_addr());
    let tasks = vec![
        ("ingest", tokio::spawn(ingest.run(stop.clone()))),
        ("analytics", tokio::spawn(analytics.run(stop.clone()))),
        ("alerting", tokio::spawn(alerting.run(stop.clone()))),
        ("bus retention", tokio::spawn(retention.run(stop))),
    ];
    Ok(Running { key, ingest_grpc, analytics_http, analytics_grpc, alerting_grpc, tasks })
}
