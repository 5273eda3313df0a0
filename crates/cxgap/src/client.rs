//! What every client command shares: where the services are, the API key, the output
//! format, and turning gRPC failures into messages that say what went wrong.
//!
//! The key comes from `--api-key`, `CXGAP_API_KEY`, or — so that `cxgap run` followed by
//! `cxgap report` just works — the `api-key` file of the embedded data directory.
//!
//! An `https://` URL is reached over TLS (rustls), trusting the system's CAs and those of
//! `--ca-file`; `--client-cert`/`--client-key` answer a server that asks for a client
//! certificate. That is how a production deployment is reached: TLS ends at its ingress.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Environment variables of the client commands (kept apart from the services' settings).
pub const CLIENT_SETTINGS: &[cxgap_runtime::settings::Setting] = &[
    ("CXGAP_INGEST_URL", Some("http://127.0.0.1:50051"), "where client commands reach the ingest service (gRPC)"),
    ("CXGAP_ANALYTICS_URL", Some("http://127.0.0.1:50052"), "where client commands reach the analytics service (gRPC)"),
    ("CXGAP_ALERTING_URL", Some("http://127.0.0.1:50053"), "where client commands reach the alerting service (gRPC)"),
    ("CXGAP_API_KEY", None, "the API key client commands authenticate with"),
    ("CXGAP_CA_FILE", None, "CA certificates (PEM) client commands trust for https:// URLs, besides the system's"),
    ("CXGAP_CLIENT_CERT", None, "client certificate (PEM) for https:// services that ask for one"),
    ("CXGAP_CLIENT_KEY", None, "private key (PEM) of CXGAP_CLIENT_CERT"),
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
    /// CA certificates (PEM) to trust for https:// URLs, besides the system's.
    #[arg(long, env = "CXGAP_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for services that ask for one (mutual TLS).
    #[arg(long, env = "CXGAP_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "CXGAP_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
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

    pub async fn ingest(&self) -> Result<Channel> {
        self.channel(&self.ingest_url, "ingest").await
    }

    pub async fn analytics(&self) -> Result<Channel> {
        self.channel(&self.analytics_url, "analytics").await
    }

    pub async fn alerting(&self) -> Result<Channel> {
        self.channel(&self.alerting_url, "alerting").await
    }

    async fn channel(&self, url: &str, service: &str) -> Result<Channel> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .with_context(|| format!("{url:?} is not a URL of the {service} service"))?
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(tls) = self.tls(url, service)? {
            endpoint = endpoint.tls_config(tls).with_context(|| format!("TLS to the {service} service at {url}"))?;
        }
        endpoint.connect().await.map_err(|e| {
            let e = anyhow::Error::new(e).context(format!("cannot reach the {service} service at {url}"));
            match tls_hint(&format!("{e:#}")) {
                Some(hint) => e.context(hint),
                None => e,
            }
        })
    }

    /// The TLS settings for `url`: none for http://, the system's CAs plus `--ca-file` and
    /// the client certificate for https://. TLS options beside an http:// URL are refused:
    /// whoever set them expects the traffic encrypted, and it would not be.
    fn tls(&self, url: &str, service: &str) -> Result<Option<ClientTlsConfig>> {
        let given = [("--ca-file", &self.ca_file), ("--client-cert", &self.client_cert)]
            .into_iter()
            .find_map(|(flag, v)| v.as_ref().map(|_| flag));
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("https") => {}
            Some("http") => match given {
                Some(flag) => bail!(
                    "{flag} is set, but the {service} service's URL {url} is http://, which is never encrypted: use https://"
                ),
                None => return Ok(None),
            },
            _ => bail!("the {service} service's URL {url:?} must start with http:// or https://"),
        }
        // gRPC is HTTP/2 only; TLS terminators that do not negotiate ALPN (layer-4 load
        // balancers, socat) still carry it, so HTTP/2 is assumed rather than required.
        let mut tls = ClientTlsConfig::new().with_native_roots().assume_http2(true);
        if let Some(ca) = &self.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(pem(ca, "CA file", "CERTIFICATE")?));
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            tls = tls.identity(Identity::from_pem(
                pem(cert, "client certificate", "CERTIFICATE")?,
                pem(key, "client key", "PRIVATE KEY")?,
            ));
        }
        Ok(Some(tls))
    }
}

/// A PEM file's bytes, checked to hold a block of `kind` (`CERTIFICATE`, `PRIVATE KEY`
/// also matching `EC PRIVATE KEY` and `RSA PRIVATE KEY`), so a wrong file is named here
/// rather than failing the handshake with a parser's message.
fn pem(path: &Path, what: &str, kind: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let has = text.lines().any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
    if !has {
        bail!("the {what} {} holds no PEM block \"{kind}\"", path.display());
    }
    Ok(bytes)
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

/// A gRPC failure as the message a user acts on. A failure of the connection itself
/// (say, a TLS alert from a server that wanted a client certificate) comes as a status
/// whose message is only "transport error"; the cause is in its sources, so they are added.
pub fn status(e: tonic::Status) -> anyhow::Error {
    let mut message = e.message().to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message = format!("{message}: {cause_text}");
        }
        source = cause.source();
    }
    if let Some(hint) = tls_hint(&message) {
        message = format!("{message} ({hint})");
    }
    match e.code() {
        tonic::Code::Unauthenticated => anyhow::anyhow!("the API key was refused: {message}"),
        tonic::Code::Unavailable => anyhow::anyhow!("service unavailable: {message}"),
        c => anyhow::anyhow!("{c:?}: {message}"),
    }
}

/// What to do about a TLS refusal, read from the words rustls puts in its errors. A server
/// that wants a client certificate it was not given can also just close the connection
/// (TLS 1.3 finishes the client's side first), which gives no words to read.
fn tls_hint(message: &str) -> Option<&'static str> {
    let alert = |names: &[&str]| {
        message.contains("received fatal alert") && names.iter().any(|n| message.contains(&format!("alert: {n}")))
    };
    if alert(&["CertificateRequired"]) {
        Some(
            "the server asks for a client certificate: give --client-cert and --client-key \
             (CXGAP_CLIENT_CERT, CXGAP_CLIENT_KEY)",
        )
    } else if alert(&["UnknownCA", "BadCertificate", "CertificateUnknown", "DecryptError", "AccessDenied"]) {
        Some("the server refused the client certificate: is it signed by a CA the server trusts, with its own key?")
    } else if message.contains("invalid peer certificate") {
        Some("the server's certificate is not trusted here: give the CA that signed it with --ca-file (CXGAP_CA_FILE)")
    } else {
        None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(ca_file: Option<&str>) -> Conn {
        Conn {
            ingest_url: String::new(),
            analytics_url: String::new(),
            alerting_url: String::new(),
            api_key: None,
            data_dir: PathBuf::new(),
            ca_file: ca_file.map(PathBuf::from),
            client_cert: None,
            client_key: None,
        }
    }

    #[test]
    fn tls_refusals_say_what_to_do() {
        let said = |m: &str| status(tonic::Status::unavailable(m)).to_string();
        let missing = said("transport error: tls handshake eof: received fatal alert: CertificateRequired");
        assert!(missing.contains("--client-cert and --client-key"), "{missing}");
        for alert in ["UnknownCA", "BadCertificate", "DecryptError"] {
            let refused = said(&format!("transport error: received fatal alert: {alert}"));
            assert!(refused.contains("refused the client certificate"), "{refused}");
        }
        let untrusted = said("transport error: invalid peer certificate: UnknownIssuer");
        assert!(untrusted.contains("--ca-file"), "{untrusted}");
        // Other failures get no TLS advice.
        for m in ["transport error: connection refused", "tenant not found", "received fatal alert: ProtocolVersion"] {
            assert!(!said(m).contains('('), "{m}");
        }
    }

    #[test]
    fn tls_follows_the_url_scheme() {
        assert!(conn(None).tls("http://127.0.0.1:50052", "analytics").unwrap().is_none());
        assert!(conn(None).tls("HTTPS://cx.example.com", "analytics").unwrap().is_some());
        let err = conn(None).tls("grpc://127.0.0.1:50052", "analytics").unwrap_err().to_string();
        assert!(err.contains("must start with http:// or https://"), "{err}");
        let err = conn(Some("ca.pem")).tls("http://127.0.0.1:50052", "analytics").unwrap_err().to_string();
        assert!(err.contains("--ca-file is set") && err.contains("http://127.0.0.1:50052"), "{err}");
        let err = conn(Some("/no/such/ca.pem")).tls("https://x", "analytics").unwrap_err().to_string();
        assert!(err.contains("cannot read the CA file /no/such/ca.pem"), "{err}");
    }
}
