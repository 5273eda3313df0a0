//! The queries both faces of the API (HTTP JSON and gRPC) answer: each loads just the part
//! of a tenant's stored state it needs and asks the domain for the figures.

use crate::store::{AnalyticsStore, StoreError};
use cxgap_domain::Day;
use cxgap_domain::report::{self, Filter, Granularity, Metric, ReportQuery, RiskView, Window};
use cxgap_domain::risk::RiskModel;

pub async fn gap_report(
    store: &AnalyticsStore,
    tenant: &str,
    q: &ReportQuery,
) -> Result<report::GapReport, StoreError> {
    let state = store.load(tenant, q.window.first_day(q.as_of), false).await?;
    Ok(report::gap_report(&state, q))
}

pub async fn trend(
    store: &AnalyticsStore,
    tenant: &str,
    metric: Metric,
    granularity: Granularity,
    window: Window,
    as_of: Day,
    filter: &Filter,
) -> Result<report::Trend, StoreError> {
    // The comparison needs the window before this one too.
    let from = match window {
        Window::Days(n) => Some(as_of.plus_days(1 - 2 * n as i32)),
        Window::All => None,
    };
    let state = store.load(tenant, from, false).await?;
    Ok(report::trend(&state, metric, granularity, window, as_of, filter))
}

pub async fn perception(
    store: &AnalyticsStore,
    tenant: &str,
    window: Window,
    as_of: Day,
) -> Result<Vec<report::PerceptionGap>, StoreError> {
    let state = store.load(tenant, window.first_day(as_of), false).await?;
    Ok(report::perception_gaps(&state, window, as_of))
}

/// Where a page of the at-risk list ends: the last customer's place in the ordering
/// (risk × value, then risk, descending; then id), so the next page starts after it even
/// if customers were added in between. Opaque to callers.
#[derive(Debug, Clone, PartialEq)]
pub struct PageToken {
    priority: f64,
    risk: f64,
    id: String,
}

impl PageToken {
    fn of(r: &report::CustomerRisk) -> PageToken {
        PageToken { priority: priority(r), risk: r.risk, id: r.customer_id.clone() }
    }

    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let raw = format!("{:016x}.{:016x}.{}", self.priority.to_bits(), self.risk.to_bits(), self.id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn parse(token: &str) -> Result<PageToken, String> {
        use base64::Engine as _;
        let bad = || "page_token is not a token this service issued".to_string();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let mut parts = raw.splitn(3, '.');
        let mut bits = || parts.next().and_then(|p| u64::from_str_radix(p, 16).ok()).map(f64::from_bits);
        let (priority, risk) = (bits().ok_or_else(bad)?, bits().ok_or_else(bad)?);
        let id = parts.next().ok_or_else(bad)?.to_string();
        Ok(PageToken { priority, risk, id })
    }

    /// Whether `r` comes after this token in the at-risk ordering.
    fn precedes(&self, r: &report::CustomerRisk) -> bool {
        let order =
            self.priority.total_cmp(&priority(r)).then(self.risk.total_cmp(&r.risk)).then(r.customer_id.cmp(&self.id));
        order == std::cmp::Ordering::Greater
    }
}

fn priority(r: &report::CustomerRisk) -> f64 {
    r.risk * r.customer_value.unwrap_or(1.0)
}

/// One page of the at-risk list and the token of the next page, if there is one.
#[allow(clippy::too_many_arguments)]
pub async fn at_risk_page(
    store: &AnalyticsStore,
    model: &RiskModel,
    tenant: &str,
    as_of: Day,
    min_risk: f64,
    filter: &report::CustomerFilter,
    limit: usize,
    after: Option<&PageToken>,
) -> Result<(Vec<report::CustomerRisk>, Option<PageToken>), StoreError> {
    let state = store.load(tenant, Some(as_of.plus_days(-89)), true).await?;
    let all = RiskView::new(&state, model, as_of).at_risk(min_risk, filter, usize::MAX);
    let mut rest = all.into_iter().filter(|r| after.is_none_or(|t| t.precedes(r)));
    let page: Vec<report::CustomerRisk> = rest.by_ref().take(limit).collect();
    let next = if rest.next().is_some() { page.last().map(PageToken::of) } else { None };
    Ok((page, next))
}

pub async fn at_risk(
    store: &AnalyticsStore,
    model: &RiskModel,
    tenant: &str,
    as_of: Day,
    min_risk: f64,
    filter: &report::CustomerFilter,
    limit: usize,
) -> Result<Vec<report::CustomerRisk>, StoreError> {
    Ok(at_risk_page(store, model, tenant, as_of, min_risk, filter, limit, None).await?.0)
}

/// One point of a customer's risk history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RiskPoint {
    pub at: cxgap_domain::Timestamp,
    pub risk: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CustomerRiskDetail {
    #[serde(flatten)]
    pub risk: report::CustomerRisk,
    /// Risk as assessed after each batch of the customer's feedback, oldest first.
    pub history: Vec<RiskPoint>,
}

/// How many history points a customer query returns.
pub const HISTORY_POINTS: usize = 100;

pub async fn customer(
    store: &AnalyticsStore,
    model: &RiskModel,
    tenant: &str,
    id: &str,
    as_of: Day,
) -> Result<Option<CustomerRiskDetail>, StoreError> {
    let mut state = store.load(tenant, Some(as_of.plus_days(-89)), false).await?;
    for (cid, c) in store.customers(tenant, &[id.to_string()]).await? {
        state.put_customer(&cid, c);
    }
    let Some(risk) = RiskView::new(&state, model, as_of).customer(id) else {
        return Ok(None);
    };
    let history = store
        .risk_history(tenant, id, HISTORY_POINTS)
        .await?
        .into_iter()
        .map(|(at, risk)| RiskPoint { at: cxgap_domain::Timestamp(at), risk })
        .collect();
    Ok(Some(CustomerRiskDetail { risk, history }))
}
