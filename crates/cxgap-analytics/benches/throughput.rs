//! Analytics with exactly-once state in PostgreSQL against a bare rdkafka consumer reading
//! the same topic, on one tansu broker in one run. `cargo bench -p cxgap-analytics` (needs
//! `tansu` and PostgreSQL, as the tests do). `CXGAP_BENCH_EVENTS` sets the count (50 000).

use cxgap_analytics::consumer::{self, BatchLimits};
use cxgap_analytics::metrics::Metrics;
use cxgap_analytics::processor::{Processor, ProcessorConfig};
use cxgap_analytics::store::AnalyticsStore;
use cxgap_bus::kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber};
use cxgap_bus::{Publisher, Record, TopicSpec, headers};
use cxgap_domain::{Channel, Day, FeedbackDraft, JourneyStage, Timestamp, Violations};
use cxgap_proto::convert;
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::time::{Duration, Instant};

const TOPIC: &str = "cxgap.feedback.v1";

fn record(i: usize) -> Record {
    let ev = FeedbackDraft {
        event_id: format!("bench-{i}"),
        customer_id: format!("cust-{}", i % 5_000),
        attributes: vec![("tier".into(), ["gold", "silver", "bronze"][i % 3].into())],
        channel: Some(Channel::ALL[i % 10]),
        journey_stage: Some(JourneyStage::ALL[i % 9]),
        touchpoint: ["checkout", "helpline", "app"][i % 3].into(),
        occurred_at: Some(Day(20_500 + (i % 30) as i32).start()),
        nps: Some((i % 11) as i64),
        comment: if i.is_multiple_of(3) { "slow but friendly".into() } else { String::new() },
        ..Default::default()
    }
    .validate(Timestamp(i64::MAX / 4), Violations::default())
    .unwrap();
    Record {
        topic: TOPIC.into(),
        key: format!("bench/{}", ev.customer_id).into_bytes(),
        payload: convert::feedback_to_pb(&ev, "bench", Timestamp(0)).encode_to_vec(),
        headers: vec![
            (headers::ID.into(), ev.event_id.into_bytes()),
            (headers::SCHEMA.into(), b"cxgap.common.v1.FeedbackEvent".to_vec()),
            (headers::TENANT.into(), b"bench".to_vec()),
        ],
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("CXGAP_BENCH_EVENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let broker = cxgap_testkit::Broker::start()?;
    let db = cxgap_testkit::TestDb::new().await?;
    let kafka = KafkaConfig::new(broker.bootstrap());
    let publisher = KafkaPublisher::new(kafka.clone())?;
    publisher.ensure_topics(&[TopicSpec { name: TOPIC.into(), partitions: 4, replication: 1 }]).await?;
    publisher.ensure_topics(&[TopicSpec { name: "dlq".into(), partitions: 1, replication: 1 }]).await?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        for r in publisher.publish(chunk.iter().map(|i| record(*i)).collect()).await {
            r?;
        }
    }

    // Baseline: a bare consumer reading every record (no decoding, no state).
    let bare: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    bare.subscribe(&[TOPIC])?;
    let t = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..n {
        let m = bare.recv().await?;
        bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
    }
    let bare_rate = n as f64 / t.elapsed().as_secs_f64();

    // cxgap analytics: decode, dedup against PostgreSQL, apply, one transaction per batch.
    let store = AnalyticsStore::connect(&db.url).await?;
    let processor = std::sync::Arc::new(Processor::new(
        store.clone(),
        ProcessorConfig { group: "cxgap-analytics".into(), topic: TOPIC.into(), dlq_topic: "dlq".into() },
        publisher.clone(),
    ));
    let sub = KafkaSubscriber::new(&kafka, "cxgap-analytics", &[TOPIC])?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = registry;
    let shutdown = cxgap_runtime::Shutdown::new();
    let t = Instant::now();
    let task = tokio::spawn(consumer::run(
        sub,
        processor,
        BatchLimits { max_events: 500, max_wait: Duration::from_millis(50) },
        metrics,
        shutdown.clone(),
        None,
    ));
    loop {
        let done: i64 = store.offsets("cxgap-analytics", TOPIC).await?.iter().map(|(_, o)| o).sum();
        if done as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    shutdown.cancel();
    task.await??;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    for l in text.lines().filter(|l| {
        l.starts_with("cxgap_analytics_batch_seconds_sum") || l.starts_with("cxgap_analytics_batch_seconds_count")
    }) {
        println!("{l}");
    }

    println!(
        "events: {n} ({bytes} payload bytes) on 4 partitions; one tansu broker and PostgreSQL on this 2-core machine"
    );
    println!("bare rdkafka consumer:                          {bare_rate:>10.0} events/s");
    println!("cxgap analytics, exactly-once state in Postgres: {rate:>10.0} events/s");
    println!("ratio analytics / bare consumer: {:.2}", rate / bare_rate);
    Ok(())
}
