//! A small HTTP JSON face of the alert lifecycle, for the dashboard and scripts:
//! `GET /v1/alerts?state=firing,acknowledged&limit=N`, `GET /v1/alerts/{id}`, `POST /v1/alerts/{id}/ack`,
//! `POST /v1/alerts/{id}/resolve` (body `{"by", "note"}`), tenant-scoped by API key.
//! Browsers on another origin (the dashboard is served by analytics) may call it: the
//! key travels in the `authorization` header, never in a cookie, so CORS is open.

use crate::store::{Alert, AlertStore, StoreError};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cxgap_auth::{AuthError, Authenticator};
use cxgap_domain::alerts::AlertState;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct HttpState {
    pub store: AlertStore,
    pub auth: Arc<Authenticator>,
    pub log_changed: Arc<Notify>,
    pub deliveries: Arc<Notify>,
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
}

fn auth_error(e: AuthError) -> Response {
    match e {
        AuthError::Unauthenticated(m) => error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", m),
        AuthError::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", m),
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(m) => error(StatusCode::NOT_FOUND, "NOT_FOUND", m),
        StoreError::Invalid(m) => error(StatusCode::CONFLICT, "FAILED_PRECONDITION", m),
        StoreError::Conflict(m) => error(StatusCode::CONFLICT, "ABORTED", m),
        e => error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", e.to_string()),
    }
}

async fn tenant(s: &HttpState, h: &HeaderMap) -> Result<String, Response> {
    s.auth.tenant(h.get("authorization").and_then(|v| v.to_str().ok())).await.map_err(auth_error)
}

async fn list(State(s): State<HttpState>, h: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let tenant = match tenant(&s, &h).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut states = Vec::new();
    for name in q.get("state").map(String::as_str).unwrap_or("").split(',').filter(|x| !x.is_empty()) {
        match AlertState::parse(name) {
            Some(st) => states.push(st),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    format!("state {name:?} is not firing, acknowledged or resolved"),
                );
            }
        }
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "limit must be 1–1000".into()),
    };
    match s.store.alerts(&tenant, &states, limit, None).await {
        Ok(a) => Json::<Vec<Alert>>(a).into_response(),
        Err(e) => store_error(e),
    }
}

/// One alert, whatever its state or age: a link from a notification must find it.
async fn one(State(s): State<HttpState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let tenant = match tenant(&s, &h).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match s.store.alert(&tenant, &id).await {
        Ok(Some(a)) => Json(a).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("alert {id:?}")),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct Act {
    #[serde(default)]
    by: String,
    #[serde(default)]
    note: String,
}

async fn act(s: HttpState, h: HeaderMap, id: String, body: &[u8], to: AlertState) -> Response {
    let tenant = match tenant(&s, &h).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let a: Act = if body.is_empty() {
        Act::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(a) => a,
            Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", format!("body: {e}")),
        }
    };
    let by = if a.by.is_empty() { "http".to_string() } else { a.by };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    match s.store.act(&tenant, &id, to, &by, &a.note, now).await {
        Ok(alert) => {
            s.log_changed.notify_waiters();
            s.deliveries.notify_one();
            Json(alert).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn ack(State(s): State<HttpState>, h: HeaderMap, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    act(s, h, id, &body, AlertState::Acknowledged).await
}

async fn resolve(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    act(s, h, id, &body, AlertState::Resolved).await
}

/// Answers CORS preflights and marks every response readable by any origin.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(req).await };
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert("access-control-allow-methods", HeaderValue::from_static("GET, POST, OPTIONS"));
    h.insert("access-control-allow-headers", HeaderValue::from_static("authorization, content-type"));
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    resp
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/alerts", get(list))
        .route("/v1/alerts/{id}", get(one))
        .route("/v1/alerts/{id}/ack", post(ack))
        .route("/v1/alerts/{id}/resolve", post(resolve))
        .layer(axum::middleware::from_fn(cors))
        .with_state(state)
}
