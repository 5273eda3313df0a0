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

pub async fn at_risk(
    store: &AnalyticsStore,
    model: &RiskModel,
    tenant: &str,
    as_of: Day,
    min_risk: f64,
    segment: &[(String, String)],
    limit: usize,
) -> Result<Vec<report::CustomerRisk>, StoreError> {
    let state = store.load(tenant, Some(as_of.plus_days(-89)), true).await?;
    Ok(RiskView::new(&state, model, as_of).at_risk(min_risk, segment, limit))
}

pub async fn customer(
    store: &AnalyticsStore,
    model: &RiskModel,
    tenant: &str,
    id: &str,
    as_of: Day,
) -> Result<Option<report::CustomerRisk>, StoreError> {
    let mut state = store.load(tenant, Some(as_of.plus_days(-89)), false).await?;
    for (cid, c) in store.customers(tenant, &[id.to_string()]).await? {
        state.put_customer(&cid, &c);
    }
    Ok(RiskView::new(&state, model, as_of).customer(id))
}
