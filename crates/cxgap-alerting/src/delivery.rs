//! Delivering the outbox: each pending (notification, subscription) row is tried when due.
//! Webhooks get a signed POST (Standard Webhooks headers) to an address the SSRF guard
//! checked, with a timeout; 2xx is delivered, 410 Gone disables the subscription, a
//! redirect is a failure (never followed: it could point anywhere), anything else is
//! retried on the schedule, no sooner than `Retry-After`, and dead-lettered after the last
//! try. Kafka subscriptions get the same JSON on their topic. A row is marked only after
//! the outcome is known, so a crash means another try with the same notification id.

use crate::model::Target;
use crate::retry::{Schedule, parse_retry_after};
use crate::ssrf::{self, Guard};
use crate::store::{AlertStore, DueDelivery, StoreError};
use crate::webhook;
use cxgap_bus::{Publisher, Record, headers};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

pub const NOTIFICATION_SCHEMA: &str = "cxgap.alerting.v1.Notification+json";

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub schedule: Schedule,
    pub timeout: Duration,
    pub guard: Guard,
    /// Deliveries tried at once.
    pub concurrency: usize,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again (no sooner than the `Retry-After`, if the receiver sent one).
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Never try this delivery again.
    Dead {
        error: String,
    },
    /// 410 Gone: the endpoint asks to be forgotten.
    Gone,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn jitter_unit() -> f64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_or(0.5, |_| (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64)
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                warn!("no CA certificates found on this machine; https webhooks will fail verification");
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// One HTTP/1.1 POST to the checked addresses of `target`. Returns the status and the
/// `Retry-After` header.
async fn post(target: &ssrf::Target, body: Bytes, extra: &[(&str, String)]) -> Result<(u16, Option<String>), String> {
    let mut last = String::from("no address");
    let mut stream = None;
    for addr in &target.addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    let path = match target.url.query() {
        Some(q) => format!("{}?{q}", target.url.path()),
        None => target.url.path().to_string(),
    };
    let host = match target.url.port() {
        Some(p) => format!("{}:{p}", target.host),
        None => target.host.clone(),
    };
    let mut req = hyper::Request::post(path)
        .header("host", host)
        .header("content-type", "application/json")
        .header("user-agent", concat!("cxgap/", env!("CARGO_PKG_VERSION")));
    for (k, v) in extra {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = if target.url.scheme() == "https" {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS with {}: {e}", target.host))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(stream), req).await?
    };
    Ok(resp)
}

async fn send<T>(io: T, req: hyper::Request<Full<Bytes>>) -> Result<(u16, Option<String>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| format!("request failed: {e}"));
    let out = match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            // Drain (bounded by the caller's timeout) so the connection closes cleanly.
            let _ = r.into_body().collect().await;
            Ok((status, retry_after))
        }
        Err(e) => Err(e),
    };
    driver.abort();
    out
}

/// Signs and POSTs one webhook delivery and classifies the answer.
pub async fn deliver_webhook(
    guard: &Guard,
    url: &str,
    secrets: &[String],
    notification_id: &str,
    payload: &str,
    timeout: Duration,
) -> Outcome {
    let keys: Result<Vec<Vec<u8>>, _> = secrets.iter().map(|s| webhook::decode_secret(s)).collect();
    let keys = match keys {
        Ok(k) if !k.is_empty() => k,
        Ok(_) => return Outcome::Dead { error: "the subscription has no signing secret".into() },
        Err(e) => return Outcome::Dead { error: e.to_string() },
    };
    let target = match guard.resolve(url).await {
        Ok(t) => t,
        Err(ssrf::Refused::Unresolved(h)) => {
            return Outcome::Failed { error: format!("{h} does not resolve"), retry_after: None };
        }
        Err(e) => return Outcome::Dead { error: e.to_string() },
    };
    let now = now_ms() / 1000;
    let signature = webhook::sign(&keys, notification_id, now, payload.as_bytes());
    let headers = [
        ("webhook-id", notification_id.to_string()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", signature),
    ];
    let body = Bytes::copy_from_slice(payload.as_bytes());
    match tokio::time::timeout(timeout, post(&target, body, &headers)).await {
        Err(_) => Outcome::Failed { error: format!("no answer within {timeout:?}"), retry_after: None },
        Ok(Err(e)) => Outcome::Failed { error: e, retry_after: None },
        Ok(Ok((status, retry_after))) => match status {
            200..=299 => Outcome::Delivered,
            410 => Outcome::Gone,
            300..=399 => {
                Outcome::Failed { error: format!("HTTP {status}: redirects are not followed"), retry_after: None }
            }
            _ => Outcome::Failed {
                error: format!("HTTP {status}"),
                retry_after: retry_after.and_then(|v| parse_retry_after(&v, now)),
            },
        },
    }
}

#[derive(Debug)]
pub struct Deliverer<P> {
    pub store: AlertStore,
    pub config: DeliveryConfig,
    pub kafka: P,
    pub wake: Arc<Notify>,
    pub metrics: crate::metrics::Metrics,
}

impl<P: Publisher> Deliverer<P> {
    async fn attempt(&self, d: &DueDelivery) -> Outcome {
        if d.disabled {
            return Outcome::Dead { error: "subscription disabled".into() };
        }
        match &d.target {
            Target::Webhook { url, secrets } => {
                deliver_webhook(&self.config.guard, url, secrets, &d.notification_id, &d.payload, self.config.timeout)
                    .await
            }
            Target::Kafka { topic } => {
                let record = Record {
                    topic: topic.clone(),
                    key: d.alert_id.clone().into_bytes(),
                    payload: d.payload.clone().into_bytes(),
                    headers: vec![
                        (headers::ID.into(), d.notification_id.clone().into_bytes()),
                        (headers::SCHEMA.into(), NOTIFICATION_SCHEMA.as_bytes().to_vec()),
                        (headers::SCHEMA_VERSION.into(), b"1".to_vec()),
                        (headers::TENANT.into(), d.tenant_id.clone().into_bytes()),
                    ],
                };
                match self.kafka.publish(vec![record]).await.pop() {
                    Some(Ok(_)) => Outcome::Delivered,
                    Some(Err(e)) => Outcome::Failed { error: e.to_string(), retry_after: None },
                    None => Outcome::Failed { error: "no publish result".into(), retry_after: None },
                }
            }
            Target::GrpcStream => Outcome::Delivered,
        }
    }

    /// A grouped webhook delivery: seal (or reuse) its batch and send the whole batch as
    /// one request, `{"type": "alert.group", "notification_id": <batch id>, "data":
    /// {"group", "notifications": [...]}}`. `None` if another pass already sent it.
    async fn attempt_batch(&self, d: &DueDelivery) -> Result<Option<(String, Outcome)>, StoreError> {
        let Some(batch) = self.store.seal_batch(d, now_ms()).await? else { return Ok(None) };
        let members = self.store.batch(&d.tenant_id, &d.subscription_id, &batch).await?;
        if members.is_empty() {
            return Ok(None);
        }
        let outcome = match &d.target {
            _ if d.disabled => Outcome::Dead { error: "subscription disabled".into() },
            Target::Webhook { url, secrets } => {
                let notifications: Vec<serde_json::Value> =
                    members.iter().filter_map(|(_, p)| serde_json::from_str(p).ok()).collect();
                let body = serde_json::json!({
                    "type": "alert.group",
                    "timestamp": crate::time_rfc3339(now_ms()),
                    "notification_id": batch,
                    "data": { "group": d.group_key, "notifications": notifications },
                })
                .to_string();
                deliver_webhook(&self.config.guard, url, secrets, &batch, &body, self.config.timeout).await
            }
            _ => Outcome::Dead { error: "grouping applies to webhooks only".into() },
        };
        Ok(Some((batch, outcome)))
    }

    /// Tries one delivery (or, when grouped, its batch) and records the outcome.
    pub async fn run_one(&self, d: &DueDelivery) -> Result<Outcome, StoreError> {
        let started = Instant::now();
        let (batch, outcome) = if d.group_key.is_empty() {
            (None, self.attempt(d).await)
        } else {
            match self.attempt_batch(d).await? {
                Some((b, o)) => (Some(b), o),
                None => return Ok(Outcome::Delivered),
            }
        };
        let now = now_ms();
        let attempt = d.attempts + 1;
        let record = |status: &'static str, next_at: i64, error: String| {
            let batch = batch.clone();
            async move {
                match &batch {
                    Some(b) => self.store.attempted_batch(d, b, status, next_at, &error, now).await,
                    None => self.store.attempted(d, status, next_at, &error, now).await,
                }
            }
        };
        match &outcome {
            Outcome::Delivered => {
                record("delivered", now, String::new()).await?;
                debug!(notification = %d.notification_id, subscription = %d.subscription_id, attempt, "delivered");
            }
            Outcome::Gone => {
                let reason = "the endpoint answered 410 Gone";
                self.store.disable_subscription(&d.tenant_id, &d.subscription_id, reason).await?;
                record("dead", now, reason.to_string()).await?;
                info!(subscription = %d.subscription_id, "webhook endpoint is gone; subscription disabled");
            }
            Outcome::Dead { error } => {
                record("dead", now, error.clone()).await?;
                warn!(notification = %d.notification_id, subscription = %d.subscription_id, %error, "dead-lettered");
            }
            Outcome::Failed { error, retry_after } => {
                match self.config.schedule.next_delay(attempt, jitter_unit(), *retry_after) {
                    Some(delay) => {
                        record("pending", now + delay.as_millis() as i64, error.clone()).await?;
                        debug!(notification = %d.notification_id, attempt, ?delay, %error, "delivery failed; will retry");
                    }
                    None => {
                        let error = format!("gave up after {attempt} attempts: {error}");
                        record("dead", now, error.clone()).await?;
                        warn!(notification = %d.notification_id, subscription = %d.subscription_id, %error, "dead-lettered");
                    }
                }
            }
        }
        self.metrics.delivery(&outcome, started.elapsed());
        Ok(outcome)
    }

    /// Delivers what is due, whenever woken and at least every 500 ms, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: cxgap_runtime::Shutdown) {
        loop {
            match self.store.due(now_ms(), self.config.concurrency * 4).await {
                Ok(due) if !due.is_empty() => {
                    // One attempt per subscription at a time keeps a slow endpoint from
                    // holding up the others' order; different subscriptions go in parallel.
                    let mut by_sub: std::collections::BTreeMap<String, Vec<DueDelivery>> = Default::default();
                    for d in due {
                        by_sub.entry(format!("{}/{}", d.tenant_id, d.subscription_id)).or_default().push(d);
                    }
                    let mut tasks = tokio::task::JoinSet::new();
                    for (_, list) in by_sub.into_iter().take(self.config.concurrency) {
                        let me = self.clone();
                        tasks.spawn(async move {
                            for d in list {
                                match me.run_one(&d).await {
                                    Ok(Outcome::Delivered) => {}
                                    // Keep this subscription's order: stop at its first failure.
                                    Ok(_) => break,
                                    Err(e) => {
                                        warn!(error = %e, "recording a delivery failed");
                                        break;
                                    }
                                }
                            }
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                    continue;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "reading due deliveries failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
