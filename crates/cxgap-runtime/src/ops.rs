//! `/healthz` (the process is alive), `/readyz` (its dependencies answer and it is not
//! draining) and `/metrics` (Prometheus text format), mounted on a service's HTTP router.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A named readiness check: `Ok` when the dependency answers.
pub type CheckFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct Check {
    pub name: &'static str,
    pub run: CheckFn,
}

impl Check {
    pub fn new<F, Fut>(name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Check { name, run: Arc::new(move || Box::pin(f())) }
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

#[derive(Clone, Debug)]
pub struct OpsState {
    pub checks: Vec<Check>,
    pub registry: Arc<Registry>,
    pub draining: crate::Shutdown,
}

impl OpsState {
    /// Runs every check (each bounded to 3 s); the failures, by name.
    pub async fn failures(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.draining.is_cancelled() {
            out.push(("shutdown".into(), "draining".into()));
        }
        for c in &self.checks {
            match tokio::time::timeout(Duration::from_secs(3), (c.run)()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => out.push((c.name.into(), e)),
                Err(_) => out.push((c.name.into(), "timed out".into())),
            }
        }
        out
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<OpsState>) -> Response {
    let failures = s.failures().await;
    if failures.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let body: String = failures.iter().map(|(n, e)| format!("{n}: {e}\n")).collect();
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn metrics(State(s): State<OpsState>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}
