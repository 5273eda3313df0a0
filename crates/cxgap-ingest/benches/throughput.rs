//! gRPC batch ingest against a bare rdkafka producer, on the same tansu broker in the same
//! run. `cargo bench -p cxgap-ingest` (needs `tansu` on PATH and PostgreSQL, as the tests
//! do). `CXGAP_BENCH_EVENTS` sets the count (default 100 000).

use cxgap_ingest::tenants::TenantStore;
use cxgap_ingest::{App, IngestConfig};
use cxgap_proto::common as pb;
use cxgap_proto::ingest::SubmitFeedbackBatchRequest;
use cxgap_proto::ingest::ingest_service_client::IngestServiceClient;
use cxgap_testkit::{Broker, TestDb};
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Instant;

fn event(i: usize) -> pb::FeedbackEvent {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    pb::FeedbackEvent {
        event_id: format!("bench-{i}"),
        customer_id: format!("cust-{}", i % 10_000),
        segment: Some(pb::Segment {
            attributes: [("tier".to_string(), "gold".to_string())].into(),
            customer_value: Some(1000.0),
        }),
        channel: 1 + (i % 10) as i32,
        journey_stage: 1 + (i % 9) as i32,
        touchpoint: "checkout".into(),
        occurred_at: Some(prost_types::Timestamp { seconds: ms / 1000 - 60, nanos: 0 }),
        nps: Some((i % 11) as u32),
        comment: if i.is_multiple_of(3) { "The agent was helpful but the wait was long".into() } else { String::new() },
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("CXGAP_BENCH_EVENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let batch = 500;
    let clients = 4;
    let broker = Broker::start()?;
    let db = TestDb::new().await?;
    broker.create_topic("bare", 12).await?;
    let settings = [
        ("CXGAP_KAFKA_BROKERS", broker.bootstrap()),
        ("CXGAP_DATABASE_URL", db.url.clone()),
        ("CXGAP_API_KEY_PEPPER", "bench-pepper-0123456789".into()),
        ("CXGAP_GRPC_ADDR", "127.0.0.1:0".into()),
        ("CXGAP_HTTP_ADDR", "127.0.0.1:0".into()),
        ("CXGAP_RATE_LIMIT_PER_SECOND", "1000000000".into()),
        ("CXGAP_RATE_LIMIT_BURST", "1000000000".into()),
        ("CXGAP_LOG_FORMAT", "plain".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = IngestConfig::load(&settings)?;
    let store = TenantStore::connect(&db.url, "bench-pepper-0123456789").await?;
    store.create_tenant("bench").await?;
    let key = store.create_key("bench", "").await?.1;
    let app = App::build(config).await?;
    let grpc = app.grpc_addr();
    let shutdown = cxgap_runtime::Shutdown::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let events: Vec<pb::FeedbackEvent> = (0..n).map(event).collect();

    // Baseline: the same payloads and headers through a bare idempotent producer.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let t = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for e in &events {
        let payload = e.encode_to_vec();
        let key = format!("bench/{}", e.customer_id);
        let headers = OwnedHeaders::new().insert(Header { key: "cxgap-id", value: Some(e.event_id.as_bytes()) });
        let mut rec = FutureRecord::to("bare").key(&key).payload(&payload).headers(headers);
        loop {
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((_, back)) => {
                    rec = back;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        }
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    let bare = n as f64 / t.elapsed().as_secs_f64();

    // cxgap: the same events through gRPC SubmitFeedbackBatch, `clients` connections.
    let t = Instant::now();
    let chunks: Vec<Vec<pb::FeedbackEvent>> = events.chunks(batch).map(|c| c.to_vec()).collect();
    let per_client = chunks.len().div_ceil(clients);
    let mut tasks = Vec::new();
    for part in chunks.chunks(per_client).map(|c| c.to_vec()) {
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = IngestServiceClient::connect(format!("http://{grpc}")).await?;
            let mut accepted = 0u64;
            for events in part {
                let mut req = tonic::Request::new(SubmitFeedbackBatchRequest { events, atomic: false });
                req.metadata_mut().insert("authorization", format!("Bearer {key}").parse()?);
                accepted += client.submit_feedback_batch(req).await?.into_inner().accepted as u64;
            }
            anyhow::Ok(accepted)
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    let ingest = n as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(accepted as usize == n, "accepted {accepted} of {n}");

    println!(
        "events: {n}; gRPC batches of {batch} over {clients} connections; 2-core machine, broker on the same host"
    );
    println!("bare rdkafka producer (idempotent, acks=all): {bare:>10.0} events/s");
    println!("cxgap gRPC batch ingest (validate, auth, ack): {ingest:>10.0} events/s");
    println!("ratio ingest / bare producer: {:.2}", ingest / bare);
    shutdown.cancel();
    task.await??;
    Ok(())
}
