//! The HTTP JSON face of ingest. Bodies use the export format's field names (see the
//! README); errors are JSON naming every bad field. CSV history imports stream: the body
//! is decoded record by record on a blocking thread and published in chunks, so a file of
//! any size never sits in memory.

use crate::error::IngestError;
use crate::ingestor::{Ingestor, Outcome, now};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use cxgap_auth::Authenticator;
use cxgap_bus::Publisher;
use cxgap_domain::Violations;
use cxgap_import::json::{Batch, BatchError, Record};
use cxgap_import::{Assessments, Feedback, Format, RecordError};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

pub struct HttpState<P> {
    pub ingestor: Arc<Ingestor<P>>,
    pub auth: Arc<Authenticator>,
}

impl<P> std::fmt::Debug for HttpState<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState").finish_non_exhaustive()
    }
}

impl<P> Clone for HttpState<P> {
    fn clone(&self) -> Self {
        HttpState { ingestor: self.ingestor.clone(), auth: self.auth.clone() }
    }
}

#[derive(Debug, Serialize)]
struct ViolationJson {
    field: String,
    description: String,
}

fn violations_json(v: Violations) -> Vec<ViolationJson> {
    v.0.into_iter().map(|x| ViolationJson { field: x.field, description: x.description }).collect()
}

#[derive(Debug, Serialize)]
struct RejectionJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    event_id: String,
    violations: Vec<ViolationJson>,
}

#[derive(Debug, Serialize, Default)]
struct BatchJson {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<RejectionJson>,
}

impl BatchJson {
    fn add(&mut self, out: Outcome) {
        self.accepted += out.accepted as u64;
        self.duplicates += out.duplicates as u64;
        self.rejected.extend(out.rejected.into_iter().map(|r| RejectionJson {
            index: Some(r.index),
            line: None,
            event_id: r.event_id,
            violations: violations_json(r.violations),
        }));
    }
}

fn not_json(e: impl std::fmt::Display) -> IngestError {
    IngestError::bad_field("body", format!("is not valid JSON: {e}"))
}

fn parse_record(body: &Bytes) -> Result<Record<'_>, IngestError> {
    Record::parse(body).map_err(not_json)
}

impl<P: Publisher> HttpState<P> {
    async fn tenant(&self, headers: &HeaderMap) -> Result<String, IngestError> {
        Ok(self.auth.tenant(headers.get("authorization").and_then(|v| v.to_str().ok())).await?)
    }

    fn done<T: Serialize>(&self, r: Result<T, IngestError>) -> Result<Json<T>, IngestError> {
        self.ingestor.metrics.request("http", r.as_ref().err().map_or("OK", IngestError::code));
        r.map(Json)
    }
}

async fn submit_one<P: Publisher>(
    State(s): State<HttpState<P>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, IngestError> {
    let r = async {
        let tenant = s.tenant(&headers).await?;
        let record = parse_record(&body)?;
        let id = record.id().unwrap_or_default();
        let ev = record.decode::<Feedback>(now());
        let duplicate = s.ingestor.submit_one(&tenant, id.clone(), ev).await?;
        Ok(serde_json::json!({"event_id": id, "duplicate": duplicate}))
    }
    .await;
    s.done(r)
}

async fn submit_batch<P: Publisher>(
    State(s): State<HttpState<P>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BatchJson>, IngestError> {
    let r = async {
        let tenant = s.tenant(&headers).await?;
        let Batch { records, atomic } = Batch::parse(&body).map_err(|e| match e {
            BatchError::Json(e) => not_json(e),
            BatchError::Field(field, description) => IngestError::bad_field(field, description),
        })?;
        let t = now();
        let items = records.iter().map(|r| (r.id().unwrap_or_default(), r.decode::<Feedback>(t))).collect();
        let mut out = BatchJson::default();
        out.add(s.ingestor.submit(&tenant, items, atomic).await?);
        Ok(out)
    }
    .await;
    s.done(r)
}

enum Chunk {
    Records(Vec<Result<cxgap_domain::FeedbackEvent, RecordError>>),
    Fatal(String),
}

async fn import_csv<P: Publisher>(
    State(s): State<HttpState<P>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchJson>, IngestError> {
    let r = async {
        let tenant = s.tenant(&headers).await?;
        let chunk_size = s.ingestor.limits().max_batch_events.min(500);
        let stream = body.into_data_stream().map(|r| r.map_err(std::io::Error::other));
        let reader = SyncIoBridge::new(StreamReader::new(stream));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(4);
        let decoder = tokio::task::spawn_blocking(move || {
            let records = match cxgap_import::feedback(reader, Format::Csv, now()) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Chunk::Fatal(e.to_string()));
                    return;
                }
            };
            let mut buf = Vec::with_capacity(chunk_size);
            for item in records {
                match item {
                    Ok(rec) => buf.push(rec),
                    Err(e) => {
                        let _ = tx.blocking_send(Chunk::Fatal(e.to_string()));
                        return;
                    }
                }
                if buf.len() == chunk_size && tx.blocking_send(Chunk::Records(std::mem::take(&mut buf))).is_err() {
                    return; // the publisher gave up; stop reading
                }
            }
            if !buf.is_empty() {
                let _ = tx.blocking_send(Chunk::Records(buf));
            }
        });
        let mut out = BatchJson::default();
        while let Some(chunk) = rx.recv().await {
            let records = match chunk {
                Chunk::Fatal(msg) => {
                    return Err(IngestError::bad_field("body", msg));
                }
                Chunk::Records(r) => r,
            };
            let mut valid = Vec::with_capacity(records.len());
            for rec in records {
                match rec {
                    Ok(ev) => valid.push((ev.event_id.clone(), Ok(ev))),
                    Err(e) => out.rejected.push(RejectionJson {
                        index: None,
                        line: Some(e.line),
                        event_id: e.event_id.unwrap_or_default(),
                        violations: violations_json(e.violations),
                    }),
                }
            }
            if !valid.is_empty() {
                let accepted_before = out.accepted;
                let o = s.ingestor.submit(&tenant, valid, false).await.map_err(|e| match e {
                    IngestError::Unavailable(m) => IngestError::Unavailable(format!(
                        "{m}; {accepted_before} events were accepted before this, resubmitting the file is safe"
                    )),
                    other => other,
                })?;
                out.add(o);
            }
        }
        let _ = decoder.await;
        Ok(out)
    }
    .await;
    s.done(r)
}

async fn submit_assessment<P: Publisher>(
    State(s): State<HttpState<P>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, IngestError> {
    let r = async {
        let tenant = s.tenant(&headers).await?;
        let a = parse_record(&body)?.decode::<Assessments>(now()).map_err(IngestError::invalid)?;
        let id = a.assessment_id.clone();
        s.ingestor.submit_assessment(&tenant, a).await?;
        Ok(serde_json::json!({"assessment_id": id}))
    }
    .await;
    s.done(r)
}

pub fn router<P: Publisher>(state: HttpState<P>, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/v1/feedback", post(submit_one::<P>))
        .route("/v1/feedback/batch", post(submit_batch::<P>))
        .route("/v1/assessments", post(submit_assessment::<P>))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .route("/v1/feedback/import", post(import_csv::<P>).layer(DefaultBodyLimit::disable()))
        .with_state(state)
}
