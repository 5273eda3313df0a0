//! Harness for the ingest service tests: a real tansu broker, a fresh PostgreSQL database,
//! the service on port 0, two tenants with keys.

#![allow(dead_code)]

use cxgap_ingest::tenants::TenantStore;
use cxgap_ingest::{App, IngestConfig};
use cxgap_proto::common as pb;
use cxgap_proto::ingest::ingest_service_client::IngestServiceClient;
use cxgap_runtime::Shutdown;
use cxgap_testkit::{Broker, TestDb};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tonic::transport::Channel;

pub const TOPIC: &str = "cxgap.feedback.v1";
pub const PEPPER: &str = "test-pepper-0123456789";

pub struct Env {
    pub broker: Broker,
    pub db: TestDb,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub store: TenantStore,
    pub acme: String,
    pub acme_key: String,
    pub globex: String,
    pub globex_key: String,
}

pub async fn start(overrides: &[(&str, &str)]) -> Env {
    let broker = Broker::start().expect("tansu starts");
    let db = TestDb::new().await.expect("test database");
    let mut settings: BTreeMap<String, String> = [
        ("CXGAP_KAFKA_BROKERS", broker.bootstrap()),
        ("CXGAP_DATABASE_URL", db.url.clone()),
        ("CXGAP_API_KEY_PEPPER", PEPPER.into()),
        ("CXGAP_GRPC_ADDR", "127.0.0.1:0".into()),
        ("CXGAP_HTTP_ADDR", "127.0.0.1:0".into()),
        ("CXGAP_TOPIC_PARTITIONS", "3".into()),
        ("CXGAP_DELIVERY_TIMEOUT_MS", "3000".into()),
        ("CXGAP_SHUTDOWN_GRACE_SECONDS", "10".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in overrides {
        settings.insert(k.to_string(), v.to_string());
    }
    let config = IngestConfig::load(&settings).expect("valid test config");
    let store = TenantStore::connect(&db.url, PEPPER).await.expect("store");
    let acme = store.create_tenant("acme").await.unwrap().tenant_id;
    let globex = store.create_tenant("globex").await.unwrap().tenant_id;
    let acme_key = store.create_key("acme", "test").await.unwrap().1;
    let globex_key = store.create_key("globex", "test").await.unwrap().1;
    let app = App::build(config).await.expect("ingest builds");
    let (grpc, http) = (app.grpc_addr(), app.http_addr());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    Env { broker, db, grpc, http, shutdown, task, store, acme, acme_key, globex, globex_key }
}

impl Env {
    pub async fn client(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::connect(format!("http://{}", self.grpc)).await.expect("gRPC connects")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.expect("gRPC connects")
    }

    pub fn fetch(&self) -> Vec<cxgap_testkit::broker::Fetched> {
        self.broker.fetch_all(TOPIC).expect("topic readable")
    }

    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> cxgap_testkit::http::HttpResponse {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("content-type", content_type)];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        cxgap_testkit::http::request(self.http, "POST", path, &headers, body).await.expect("HTTP request")
    }

    pub async fn get(&self, path: &str) -> cxgap_testkit::http::HttpResponse {
        cxgap_testkit::http::request(self.http, "GET", path, &[], b"").await.expect("HTTP request")
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.expect("run task")
    }
}

pub fn authed<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

pub fn now_pb() -> prost_types::Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    prost_types::Timestamp { seconds: ms / 1000 - 60, nanos: 0 }
}

/// A valid event; tests change what they need.
pub fn event(id: &str, customer: &str) -> pb::FeedbackEvent {
    pb::FeedbackEvent {
        event_id: id.into(),
        customer_id: customer.into(),
        segment: Some(pb::Segment {
            attributes: [("tier".to_string(), "gold".to_string())].into(),
            customer_value: Some(1200.0),
        }),
        channel: pb::Channel::Chat as i32,
        journey_stage: pb::JourneyStage::Support as i32,
        touchpoint: "helpline".into(),
        occurred_at: Some(now_pb()),
        nps: Some(4),
        ratings: vec![pb::DimensionRating { dimension: pb::Dimension::Empathy as i32, expectation: 6, perception: 3 }],
        comment: "Waited forever".into(),
        operational: Some(pb::Operational {
            wait_seconds: Some(600.0),
            promised_wait_seconds: Some(120.0),
            resolved: Some(false),
            contact_reason: Some("billing".into()),
        }),
        ..Default::default()
    }
}

/// The same event as a JSON body of the HTTP API.
pub fn event_json(id: &str, customer: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id, "customer_id": customer, "channel": "WEB", "journey_stage": "PURCHASE",
        "touchpoint": "checkout", "occurred_at": "2026-01-15T10:00:00Z", "nps": 9, "csat": 5,
        "segment": {"tier": "silver"}, "customer_value": 300
    })
}
