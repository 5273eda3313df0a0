//! The HTTP JSON query API, scoped to the tenant of the caller's API key:
//! `GET /v1/report`, `/v1/trend`, `/v1/perception`, `/v1/at-risk`, `/v1/customers/{id}/risk`.
//! Every figure carries its n and 95% interval (the domain's report types, as JSON).

use crate::queries;
use crate::store::AnalyticsStore;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cxgap_auth::{AuthError, Authenticator};
use cxgap_domain::report::{self, Filter, Granularity, GroupBy, Metric, ReportQuery, Window};
use cxgap_domain::risk::RiskModel;
use cxgap_domain::{Channel, Day, JourneyStage};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct QueryState {
    pub store: AnalyticsStore,
    pub auth: Arc<Authenticator>,
    pub model: RiskModel,
    /// Where the dashboard's browser reaches the alerting HTTP API (empty: no alerts panel).
    pub alerting_url: String,
}

/// The dashboard: one self-contained page (no build step, no external resources) that
/// reads this API and the alerting service's, with the caller's API key.
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(DASHBOARD)
}

async fn dashboard_config(State(s): State<QueryState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "alerting_url": s.alerting_url }))
}

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthenticated(String),
    NotFound(String),
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", m),
            ApiError::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "NOT_FOUND", m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", m),
        };
        (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(m) => ApiError::Unauthenticated(m),
            AuthError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

type Params = Query<HashMap<String, String>>;

fn today() -> Day {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    cxgap_domain::Timestamp(ms).day()
}

/// Parses the query parameters every endpoint shares, naming the bad one.
struct Q<'a>(&'a HashMap<String, String>);

impl Q<'_> {
    fn window(&self, default: Window) -> Result<Window, ApiError> {
        self.0.get("window").map_or(Ok(default), |w| {
            Window::parse(w).ok_or_else(|| ApiError::BadRequest(format!("window {w:?} is not 7d, 30d, 90d, Nd or all")))
        })
    }

    fn as_of(&self) -> Result<Day, ApiError> {
        self.0.get("as_of").map_or(Ok(today()), |d| {
            Day::parse(d).ok_or_else(|| ApiError::BadRequest(format!("as_of {d:?} is not a date (YYYY-MM-DD)")))
        })
    }

    fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, ApiError> {
        self.0.get(key).map_or(Ok(default), |v| {
            v.parse().map_err(|_| ApiError::BadRequest(format!("{key} {v:?} is not a number")))
        })
    }

    fn filter(&self) -> Result<Filter, ApiError> {
        let list =
            |k: &str| self.0.get(k).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>());
        let mut f = Filter::default();
        for c in list("channel").unwrap_or_default() {
            f.channels.push(
                Channel::parse(c).ok_or_else(|| {
                    ApiError::BadRequest(format!("channel {c:?} is not one of {}", Channel::allowed()))
                })?,
            );
        }
        for s in list("stage").unwrap_or_default() {
            f.journey_stages.push(JourneyStage::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!("stage {s:?} is not one of {}", JourneyStage::allowed()))
            })?);
        }
        f.touchpoints = list("touchpoint").unwrap_or_default().into_iter().map(String::from).collect();
        for (k, v) in self.0 {
            if let Some(attr) = k.strip_prefix("segment.") {
                f.segment.push((attr.to_string(), v.clone()));
            }
        }
        Ok(f)
    }
}

impl QueryState {
    async fn tenant(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        Ok(self.auth.tenant(headers.get("authorization").and_then(|v| v.to_str().ok())).await?)
    }
}

async fn gap_report(
    State(s): State<QueryState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Json<report::GapReport>, ApiError> {
    let tenant = s.tenant(&headers).await?;
    let q = Q(&p);
    let mut query = ReportQuery::new(q.as_of()?, q.window(Window::Days(30))?);
    query.min_n = q.number("min_n", 30)?;
    query.filter = q.filter()?;
    if let Some(by) = p.get("by") {
        for g in by.split(',').filter(|s| !s.is_empty()) {
            query.group_by.push(GroupBy::parse(g).ok_or_else(|| {
                ApiError::BadRequest(format!("by {g:?} is not channel, stage, touchpoint, dimension or segment.KEY"))
            })?);
        }
    }
    Ok(Json(queries::gap_report(&s.store, &tenant, &query).await?))
}

async fn trend(
    State(s): State<QueryState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Json<report::Trend>, ApiError> {
    let tenant = s.tenant(&headers).await?;
    let q = Q(&p);
    let metric = p.get("metric").map_or(Ok(Metric::Nps), |m| {
        Metric::parse(m).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "metric {m:?} is not nps, csat, ces, experience, service_quality or sentiment"
            ))
        })
    })?;
    let granularity = match p.get("granularity").map(String::as_str) {
        None | Some("week") => Granularity::Week,
        Some("day") => Granularity::Day,
        Some(g) => return Err(ApiError::BadRequest(format!("granularity {g:?} is not day or week"))),
    };
    let (window, as_of) = (q.window(Window::Days(90))?, q.as_of()?);
    Ok(Json(queries::trend(&s.store, &tenant, metric, granularity, window, as_of, &q.filter()?).await?))
}

async fn perception(
    State(s): State<QueryState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Json<Vec<report::PerceptionGap>>, ApiError> {
    let tenant = s.tenant(&headers).await?;
    let q = Q(&p);
    let (window, as_of) = (q.window(Window::Days(90))?, q.as_of()?);
    Ok(Json(queries::perception(&s.store, &tenant, window, as_of).await?))
}

/// The list is the body; the next page's token, when there is one, is the
/// `x-next-page-token` header (pass it back as `page_token`).
async fn at_risk(
    State(s): State<QueryState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<([(&'static str, String); 1], Json<Vec<report::CustomerRisk>>), ApiError> {
    let tenant = s.tenant(&headers).await?;
    let q = Q(&p);
    let (min_risk, filter, limit) = (q.number("min_risk", 0.0)?, q.filter()?, q.number("limit", 50)?);
    let customers =
        report::CustomerFilter::of(&filter).map_err(|e| ApiError::BadRequest(format!("touchpoint: {e}")))?;
    let after = match p.get("page_token").filter(|t| !t.is_empty()) {
        Some(t) => Some(queries::PageToken::parse(t).map_err(ApiError::BadRequest)?),
        None => None,
    };
    let (page, next) =
        queries::at_risk_page(&s.store, &s.model, &tenant, q.as_of()?, min_risk, &customers, limit, after.as_ref())
            .await?;
    Ok(([("x-next-page-token", next.map(|t| t.encode()).unwrap_or_default())], Json(page)))
}

async fn customer_risk(
    State(s): State<QueryState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Params,
) -> Result<Json<queries::CustomerRiskDetail>, ApiError> {
    let tenant = s.tenant(&headers).await?;
    let as_of = Q(&p).as_of()?;
    queries::customer(&s.store, &s.model, &tenant, &id, as_of)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("customer {id:?}")))
}

pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/v1/report", get(gap_report))
        .route("/v1/trend", get(trend))
        .route("/v1/perception", get(perception))
        .route("/v1/at-risk", get(at_risk))
        .route("/v1/customers/{id}/risk", get(customer_risk))
        .route("/", get(|| async { axum::response::Redirect::to("/dashboard") }))
        .route("/dashboard", get(dashboard))
        .route("/dashboard/config.json", get(dashboard_config))
        .with_state(state)
}
