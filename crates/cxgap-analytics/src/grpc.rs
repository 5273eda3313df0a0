//! The gRPC face of the query API (`cxgap.analytics.v1.AnalyticsService`): the same
//! queries as HTTP, converted to the wire messages.

use crate::queries;
use crate::store::{AnalyticsStore, StoreError};
use cxgap_auth::{AuthError, Authenticator};
use cxgap_domain::aggregate::{DeliveryGap, Summary};
use cxgap_domain::report::{self, Filter, Granularity, GroupBy, Metric, ReportQuery, Window};
use cxgap_domain::risk::RiskModel;
use cxgap_domain::stats::Estimate;
use cxgap_domain::{Channel, Day, Instrument, JourneyStage};
use cxgap_proto::analytics as pb;
use cxgap_proto::analytics::analytics_service_server::AnalyticsService;
use cxgap_proto::common as cpb;
use cxgap_proto::convert::{channel_to_pb, dimension_to_pb, timestamp_to_pb};
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct GrpcQuery {
    pub store: AnalyticsStore,
    pub auth: Arc<Authenticator>,
    pub model: RiskModel,
}

fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Unauthenticated(m) => Status::unauthenticated(m),
        AuthError::Unavailable(m) => Status::unavailable(m),
    }
}

fn store_status(e: StoreError) -> Status {
    Status::unavailable(e.to_string())
}

fn est(e: Estimate) -> cpb::Estimate {
    cpb::Estimate { value: e.value, n: e.n, lower: e.lower, upper: e.upper }
}

fn date(d: Day) -> cpb::Date {
    let (year, month, day) = d.ymd();
    cpb::Date { year, month, day }
}

fn window(w: i32) -> Result<Window, Status> {
    match cpb::Window::try_from(w) {
        Ok(cpb::Window::Unspecified | cpb::Window::Window30d) => Ok(Window::Days(30)),
        Ok(cpb::Window::Window7d) => Ok(Window::Days(7)),
        Ok(cpb::Window::Window90d) => Ok(Window::Days(90)),
        Ok(cpb::Window::All) => Ok(Window::All),
        Err(_) => Err(Status::invalid_argument(format!("window: {w} is not a known value"))),
    }
}

fn window_pb(w: Window) -> i32 {
    (match w {
        Window::Days(7) => cpb::Window::Window7d,
        Window::Days(90) => cpb::Window::Window90d,
        Window::All => cpb::Window::All,
        Window::Days(_) => cpb::Window::Window30d,
    }) as i32
}

fn as_of(d: Option<&cpb::Date>) -> Result<Day, Status> {
    match d {
        None => {
            let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            Ok(cxgap_domain::Timestamp(ms as i64).day())
        }
        Some(d) => Day::from_ymd(d.year, d.month, d.day)
            .ok_or_else(|| Status::invalid_argument(format!("as_of: {}-{}-{} is not a date", d.year, d.month, d.day))),
    }
}

fn filter(f: Option<&pb::Filter>) -> Result<Filter, Status> {
    let Some(f) = f else { return Ok(Filter::default()) };
    let pick = |n: i32, all: &[Channel]| -> Option<Channel> { all.get((n as usize).checked_sub(1)?).copied() };
    let mut out = Filter::default();
    for (i, c) in f.channels.iter().enumerate() {
        out.channels.push(
            pick(*c, Channel::ALL)
                .ok_or_else(|| Status::invalid_argument(format!("filter.channels[{i}]: unknown {c}")))?,
        );
    }
    for (i, s) in f.journey_stages.iter().enumerate() {
        let stage = JourneyStage::ALL.get((*s as usize).wrapping_sub(1)).copied();
        out.journey_stages
            .push(stage.ok_or_else(|| Status::invalid_argument(format!("filter.journey_stages[{i}]: unknown {s}")))?);
    }
    out.touchpoints = f.touchpoints.clone();
    out.segment = f.segment.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    out.segment.sort();
    Ok(out)
}

fn grouping(g: &pb::Grouping) -> Result<GroupBy, Status> {
    match pb::GroupBy::try_from(g.by) {
        Ok(pb::GroupBy::Channel) => Ok(GroupBy::Channel),
        Ok(pb::GroupBy::JourneyStage) => Ok(GroupBy::JourneyStage),
        Ok(pb::GroupBy::Touchpoint) => Ok(GroupBy::Touchpoint),
        Ok(pb::GroupBy::Dimension) => Ok(GroupBy::Dimension),
        Ok(pb::GroupBy::Segment) if !g.segment_key.is_empty() => Ok(GroupBy::Segment(g.segment_key.clone())),
        Ok(pb::GroupBy::Segment) => Err(Status::invalid_argument("group_by: SEGMENT needs a segment_key")),
        _ => Err(Status::invalid_argument(format!("group_by: {} is not a grouping", g.by))),
    }
}

fn grouping_pb(name: &str) -> pb::Grouping {
    let (by, key) = match name {
        "channel" => (pb::GroupBy::Channel, ""),
        "journey_stage" => (pb::GroupBy::JourneyStage, ""),
        "touchpoint" => (pb::GroupBy::Touchpoint, ""),
        "dimension" => (pb::GroupBy::Dimension, ""),
        other => (pb::GroupBy::Segment, other.strip_prefix("segment.").unwrap_or(other)),
    };
    pb::Grouping { by: by as i32, segment_key: key.to_string() }
}

fn delivery(d: DeliveryGap) -> pb::DeliveryGap {
    pb::DeliveryGap {
        wait_ratio: d.wait_ratio.map(est),
        sla_breach_share: d.sla_breach_share.map(est),
        unresolved_share: d.unresolved_share.map(est),
        mean_wait_seconds: d.mean_wait_seconds.map(est),
    }
}

fn summary(s: &Summary) -> pb::Summary {
    pb::Summary {
        events: s.events,
        nps: s.nps.map(|n| pb::NpsFigure {
            wald: Some(est(n.wald)),
            adjusted_wald: Some(est(n.adjusted_wald)),
            promoters: n.promoters,
            passives: n.passives,
            detractors: n.detractors,
        }),
        csat_percent: s.csat_percent.map(est),
        csat_mean: s.csat_mean.map(est),
        ces: s.ces.map(est),
        experience: s.experience.map(est),
        sentiment: s.sentiment.map(est),
        dimensions: s
            .dimensions
            .iter()
            .map(|d| pb::DimensionGap {
                dimension: dimension_to_pb(d.dimension),
                expectation: Some(est(d.expectation)),
                perception: Some(est(d.perception)),
                gap: Some(est(d.gap)),
            })
            .collect(),
        service_quality_unweighted: s.service_quality.map(|e| e.value),
        service_quality_weighted: s.service_quality_weighted.map(|e| e.value),
        delivery: s.delivery.map(delivery),
        low_n: s.low_n,
    }
}

fn perception(p: &report::PerceptionGap) -> pb::PerceptionGap {
    pb::PerceptionGap {
        touchpoint: p.touchpoint.clone(),
        dimension: match p.instrument {
            Instrument::Dimension(d) => dimension_to_pb(d),
            _ => 0,
        },
        internal_score: p.internal,
        customer_score: p.customer.map(est),
        gap: p.gap.map(est),
    }
}

fn customer_detail(c: &queries::CustomerRiskDetail) -> pb::CustomerRisk {
    pb::CustomerRisk {
        history: c.history.iter().map(|p| pb::RiskPoint { at: Some(timestamp_to_pb(p.at)), risk: p.risk }).collect(),
        ..customer(&c.risk)
    }
}

fn customer(c: &report::CustomerRisk) -> pb::CustomerRisk {
    pb::CustomerRisk {
        customer_id: c.customer_id.clone(),
        risk: c.risk,
        health: c.health,
        drivers: c
            .drivers
            .iter()
            .map(|d| pb::Driver { feature: d.feature.to_string(), value: d.value, contribution: d.contribution })
            .collect(),
        history: Vec::new(),
        segment: c.attributes.0.iter().cloned().collect(),
        customer_value: c.customer_value,
        last_seen: Some(timestamp_to_pb(c.last_seen)),
        events: c.events,
    }
}

impl GrpcQuery {
    async fn tenant<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        self.auth.tenant(header).await.map_err(auth_status)
    }
}

#[tonic::async_trait]
impl AnalyticsService for GrpcQuery {
    async fn get_gap_report(&self, req: Request<pb::GetGapReportRequest>) -> Result<Response<pb::GapReport>, Status> {
        let tenant = self.tenant(&req).await?;
        let r = req.into_inner();
        let mut q = ReportQuery::new(as_of(r.as_of.as_ref())?, window(r.window)?);
        q.filter = filter(r.filter.as_ref())?;
        q.group_by = r.group_by.iter().map(grouping).collect::<Result<_, _>>()?;
        if r.min_n > 0 {
            q.min_n = r.min_n as u64;
        }
        let rep = queries::gap_report(&self.store, &tenant, &q).await.map_err(store_status)?;
        Ok(Response::new(pb::GapReport {
            as_of: Some(date(rep.as_of)),
            window: window_pb(rep.window),
            overall: Some(summary(&rep.overall)),
            groups: rep
                .groups
                .iter()
                .map(|g| pb::GroupRow {
                    key: g
                        .key
                        .iter()
                        .map(|(name, v)| pb::GroupKey { grouping: Some(grouping_pb(name)), value: v.to_string() })
                        .collect(),
                    summary: Some(summary(&g.summary)),
                })
                .collect(),
            consistency: rep
                .consistency
                .iter()
                .map(|c| pb::ConsistencyGap {
                    scope: c.scope.clone(),
                    spread: c.spread,
                    stddev: c.stddev,
                    best_channel: channel_to_pb(c.best),
                    worst_channel: channel_to_pb(c.worst),
                    channels: c.channels.len() as u32,
                })
                .collect(),
            perception: rep.perception.iter().map(perception).collect(),
        }))
    }

    async fn get_trend(&self, req: Request<pb::GetTrendRequest>) -> Result<Response<pb::Trend>, Status> {
        let tenant = self.tenant(&req).await?;
        let r = req.into_inner();
        let metric = match cpb::Metric::try_from(r.metric) {
            Ok(cpb::Metric::Unspecified | cpb::Metric::Nps) => Metric::Nps,
            Ok(cpb::Metric::CsatPercent) => Metric::CsatPercent,
            Ok(cpb::Metric::Ces) => Metric::Ces,
            Ok(cpb::Metric::Experience) => Metric::Experience,
            Ok(cpb::Metric::ServiceQuality) => Metric::ServiceQuality,
            Ok(cpb::Metric::Sentiment) => Metric::Sentiment,
            Err(_) => return Err(Status::invalid_argument(format!("metric: {} is not a known value", r.metric))),
        };
        let granularity = match pb::Granularity::try_from(r.granularity) {
            Ok(pb::Granularity::Day) => Granularity::Day,
            Ok(_) => Granularity::Week,
            Err(_) => return Err(Status::invalid_argument("granularity: not a known value")),
        };
        let w = if r.window == 0 { Window::Days(90) } else { window(r.window)? };
        let t = queries::trend(
            &self.store,
            &tenant,
            metric,
            granularity,
            w,
            as_of(r.as_of.as_ref())?,
            &filter(r.filter.as_ref())?,
        )
        .await
        .map_err(store_status)?;
        Ok(Response::new(pb::Trend {
            metric: r.metric.max(1),
            points: t
                .points
                .iter()
                .map(|p| pb::TrendPoint { start: Some(date(p.start)), estimate: p.estimate.map(est) })
                .collect(),
            comparison: t.comparison.map(|c| pb::WindowComparison {
                current: Some(est(c.current)),
                previous: Some(est(c.previous)),
                difference: c.difference,
                z: c.z,
                p_value: c.p_value,
                significant: c.significant(0.05),
            }),
        }))
    }

    async fn get_perception_gap(
        &self,
        req: Request<pb::GetPerceptionGapRequest>,
    ) -> Result<Response<pb::PerceptionGapReport>, Status> {
        let tenant = self.tenant(&req).await?;
        let r = req.into_inner();
        let w = if r.window == 0 { Window::Days(90) } else { window(r.window)? };
        let gaps =
            queries::perception(&self.store, &tenant, w, as_of(r.as_of.as_ref())?).await.map_err(store_status)?;
        Ok(Response::new(pb::PerceptionGapReport { gaps: gaps.iter().map(perception).collect() }))
    }

    async fn get_customer_risk(
        &self,
        req: Request<pb::GetCustomerRiskRequest>,
    ) -> Result<Response<pb::CustomerRisk>, Status> {
        let tenant = self.tenant(&req).await?;
        let id = req.into_inner().customer_id;
        let c = queries::customer(&self.store, &self.model, &tenant, &id, as_of(None)?).await.map_err(store_status)?;
        c.map(|c| Response::new(customer_detail(&c))).ok_or_else(|| Status::not_found(format!("customer {id:?}")))
    }

    async fn list_at_risk_customers(
        &self,
        req: Request<pb::ListAtRiskCustomersRequest>,
    ) -> Result<Response<pb::ListAtRiskCustomersResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let r = req.into_inner();
        let after = match r.page_token.as_str() {
            "" => None,
            t => Some(queries::PageToken::parse(t).map_err(Status::invalid_argument)?),
        };
        if !(0.0..=1.0).contains(&r.min_risk) {
            return Err(Status::invalid_argument("min_risk must be between 0 and 1"));
        }
        let limit = if r.limit == 0 { 50 } else { (r.limit as usize).min(1000) };
        let customers = report::CustomerFilter::of(&filter(r.filter.as_ref())?)
            .map_err(|e| Status::invalid_argument(format!("filter.{e}")))?;
        let (list, next) = queries::at_risk_page(
            &self.store,
            &self.model,
            &tenant,
            as_of(None)?,
            r.min_risk,
            &customers,
            limit,
            after.as_ref(),
        )
        .await
        .map_err(store_status)?;
        Ok(Response::new(pb::ListAtRiskCustomersResponse {
            customers: list.iter().map(customer).collect(),
            next_page_token: next.map(|t| t.encode()).unwrap_or_default(),
        }))
    }
}
