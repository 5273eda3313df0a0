//! The gRPC face of ingest (`cxgap.ingest.v1.IngestService`).

use crate::error::IngestError;
use crate::ingestor::{Ingestor, Outcome, Rejection, now};
use cxgap_auth::Authenticator;
use cxgap_bus::Publisher;
use cxgap_proto::convert;
use cxgap_proto::ingest::{
    EventRejection, FieldViolation, StreamFeedbackResponse, SubmitAssessmentRequest, SubmitAssessmentResponse,
    SubmitFeedbackBatchRequest, SubmitFeedbackBatchResponse, SubmitFeedbackRequest, SubmitFeedbackResponse,
    ingest_service_server::IngestService,
};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct GrpcIngest<P> {
    pub ingestor: Arc<Ingestor<P>>,
    pub auth: Arc<Authenticator>,
    /// Checked here rather than by tonic, whose own limit answers OUT_OF_RANGE; the
    /// contract says RESOURCE_EXHAUSTED. Tonic keeps a larger hard cap.
    pub max_request_bytes: usize,
}

impl<P> std::fmt::Debug for GrpcIngest<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcIngest").finish_non_exhaustive()
    }
}

fn rejection_pb(r: Rejection) -> EventRejection {
    EventRejection {
        index: r.index as u32,
        event_id: r.event_id,
        violations: r
            .violations
            .0
            .into_iter()
            .map(|v| FieldViolation { field: v.field, description: v.description })
            .collect(),
    }
}

impl<P: Publisher> GrpcIngest<P> {
    async fn tenant<T>(&self, req: &Request<T>) -> Result<String, IngestError> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        Ok(self.auth.tenant(header).await?)
    }

    fn check_size(&self, msg: &impl prost::Message) -> Result<(), IngestError> {
        let size = msg.encoded_len();
        if size > self.max_request_bytes {
            return Err(IngestError::TooLarge(format!(
                "message of {size} bytes exceeds the limit of {} bytes",
                self.max_request_bytes
            )));
        }
        Ok(())
    }

    fn done<T>(&self, r: Result<T, IngestError>) -> Result<Response<T>, Status> {
        let code = r.as_ref().err().map_or("OK", IngestError::code);
        self.ingestor.metrics.request("grpc", code);
        r.map(Response::new).map_err(|e| e.to_status())
    }
}

#[tonic::async_trait]
impl<P: Publisher> IngestService for GrpcIngest<P> {
    async fn submit_feedback(
        &self,
        req: Request<SubmitFeedbackRequest>,
    ) -> Result<Response<SubmitFeedbackResponse>, Status> {
        let r = async {
            let tenant = self.tenant(&req).await?;
            self.check_size(req.get_ref())?;
            let Some(ev) = req.into_inner().event else {
                let mut v = cxgap_domain::Violations::default();
                v.push("event", "is required");
                return Err(IngestError::invalid(v));
            };
            let id = ev.event_id.clone();
            let duplicate = self.ingestor.submit_one(&tenant, id.clone(), convert::feedback_from_pb(ev, now())).await?;
            Ok(SubmitFeedbackResponse { event_id: id, duplicate })
        }
        .await;
        self.done(r)
    }

    async fn submit_feedback_batch(
        &self,
        req: Request<SubmitFeedbackBatchRequest>,
    ) -> Result<Response<SubmitFeedbackBatchResponse>, Status> {
        let r = async {
            let tenant = self.tenant(&req).await?;
            self.check_size(req.get_ref())?;
            let body = req.into_inner();
            let t = now();
            let items =
                body.events.into_iter().map(|e| (e.event_id.clone(), convert::feedback_from_pb(e, t))).collect();
            let out = self.ingestor.submit(&tenant, items, body.atomic).await?;
            Ok(SubmitFeedbackBatchResponse {
                accepted: out.accepted,
                duplicates: out.duplicates,
                rejected: out.rejected.into_iter().map(rejection_pb).collect(),
            })
        }
        .await;
        self.done(r)
    }

    async fn stream_feedback(
        &self,
        req: Request<Streaming<SubmitFeedbackRequest>>,
    ) -> Result<Response<StreamFeedbackResponse>, Status> {
        let r = async {
            let tenant = self.tenant(&req).await?;
            let mut stream = req.into_inner();
            let chunk = self.ingestor.limits().max_batch_events.min(500);
            let mut total = StreamFeedbackResponse::default();
            let mut buf = Vec::with_capacity(chunk);
            let mut offset = 0usize;
            loop {
                let msg = stream.message().await.map_err(|s| IngestError::Unavailable(format!("stream broke: {s}")))?;
                let end = msg.is_none();
                if let Some(m) = msg {
                    self.check_size(&m)?;
                    let ev = m.event.unwrap_or_default();
                    buf.push((ev.event_id.clone(), convert::feedback_from_pb(ev, now())));
                }
                if buf.len() >= chunk || (end && !buf.is_empty()) {
                    let n = buf.len();
                    let out: Outcome = self.ingestor.submit(&tenant, std::mem::take(&mut buf), false).await?;
                    total.accepted += out.accepted as u64;
                    total.duplicates += out.duplicates as u64;
                    total.rejected.extend(out.rejected.into_iter().map(|mut r| {
                        r.index += offset;
                        rejection_pb(r)
                    }));
                    offset += n;
                }
                if end {
                    return Ok(total);
                }
            }
        }
        .await;
        self.done(r)
    }

    async fn submit_assessment(
        &self,
        req: Request<SubmitAssessmentRequest>,
    ) -> Result<Response<SubmitAssessmentResponse>, Status> {
        let r = async {
            let tenant = self.tenant(&req).await?;
            self.check_size(req.get_ref())?;
            let a = req.into_inner().assessment.unwrap_or_default();
            let a = convert::assessment_from_pb(&a, now()).map_err(IngestError::invalid)?;
            let id = a.assessment_id.clone();
            self.ingestor.submit_assessment(&tenant, a).await?;
            Ok(SubmitAssessmentResponse { assessment_id: id })
        }
        .await;
        self.done(r)
    }
}
