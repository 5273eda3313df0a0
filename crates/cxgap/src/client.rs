//! What every client command shares: where the services are, the API key, the output
//! format, and turning gRPC failures into messages that say what went wrong.
//!
//! The key comes from `--api-key`, `CXGAP_API_KEY`, or — so that `cxgap run` followed by
//! `cxgap report` just works — the `api-key` file of the embedded data directory.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use tonic::transport::Channel;

/// Environment variables of the client commands (kept apart from the services' settings).
pub const CLIENT_SETTINGS: &[cxgap_runtime::settings::Setting] = &[
    ("CXGAP_INGEST_URL", Some("http://127.0.0.1:50051"), "where client commands reach the ingest service (gRPC)"),
    ("CXGAP_ANALYTICS_URL", Some("http://127.0.0.1:50052"), "where client commands reach the analytics service (gRPC)"),
    ("CXGAP_ALERTING_URL", Some("http://127.0.0.1:50053"), "where client commands reach the alerting service (gRPC)"),
    ("CXGAP_API_KEY", None, "the API key client commands authenticate with"),
    ("CXGAP_DATA_DIR", Some("cxgap-data"), "embedded data directory whose api-key file is the fallback key"),
];

#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The ingest service's gRPC address.
    #[arg(long, env = "CXGAP_INGEST_URL", default_value = "http://127.0.0.1:50051")]
    pub ingest_url: String,
    /// The analytics service's gRPC address.
    #[arg(long, env = "CXGAP_ANALYTICS_URL", default_value = "http://127.0.0.1:50052")]
    pub analytics_url: String,
    /// The alerting service's gRPC address.
    #[arg(long, env = "CXGAP_ALERTING_URL", default_value = "http://127.0.0.1:50053")]
    pub alerting_url: String,
    /// API key of the tenant. Without it: CXGAP_API_KEY, then DATA_DIR/api-key.
    #[arg(long, env = "CXGAP_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Data directory of `cxgap run`, whose api-key file is used when no key is given.
    #[arg(long, env = "CXGAP_DATA_DIR", default_value = "cxgap-data")]
    pub data_dir: PathBuf,
}

impl Conn {
    pub fn key(&self) -> Result<String> {
        if let Some(k) = self.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            return Ok(k.to_string());
        }
        let file = self.data_dir.join("api-key");
        match std::fs::read_to_string(&file) {
            Ok(k) if !k.trim().is_empty() => Ok(k.trim().to_string()),
            _ => bail!(
                "no API key: pass --api-key, set CXGAP_API_KEY, or run this where `cxgap run` keeps its data ({} not found)",
                file.display()
            ),
        }
    }

    pub async fn channel(url: &str, service: &str) -> Result<Channel> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .with_context(|| format!("{url:?} is not a URL of the {service} service"))?
            .connect_timeout(std::time::Duration::from_secs(5));
        endpoint.connect().await.with_context(|| format!("cannot reach the {service} service at {url}"))
    }
}

/// Output of a client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    Table,
    Json,
}

/// A request carrying the tenant's key.
pub fn authed<T>(key: &str, msg: T) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    let v = format!("Bearer {key}").parse().context("the API key is not a valid header value")?;
    r.metadata_mut().insert("authorization", v);
    Ok(r)
}

/// A gRPC failure as the message a user acts on.
pub fn status(e: tonic::Status) -> anyhow::Error {
    match e.code() {
        tonic::Code::Unauthenticated => anyhow::anyhow!("the API key was refused: {}", e.message()),
        tonic::Code::Unavailable => anyhow::anyhow!("service unavailable: {}", e.message()),
        c => anyhow::anyhow!("{c:?}: {}", e.message()),
    }
}

/// Lower-case enum name without its prefix: `ALERT_STATE_FIRING` → `firing`.
pub fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_ascii_lowercase()
}

pub fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn timestamp(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else { return String::new() };
    cxgap_alerting::time_rfc3339(t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000))
}
