//! Store and processor conformance, run against each backend (PostgreSQL and SQLite): a
//! stream with duplicates, out-of-order events and a bad record yields exactly the state
//! the offline engine computes; replays change nothing; a zombie is fenced.

use cxgap_analytics::processor::{Processor, ProcessorConfig};
use cxgap_analytics::store::{AnalyticsStore, BatchWrite, StoreError};
use cxgap_bus::memory::MemoryBus;
use cxgap_bus::{Consumed, Publisher, Record, TopicSpec, headers};
use cxgap_domain::report::{self, GroupBy, ReportQuery, RiskView, Window};
use cxgap_domain::risk::RiskModel;
use cxgap_domain::{Channel, Day, FeedbackDraft, FeedbackEvent, GapState, JourneyStage, Timestamp, Violations};
use cxgap_proto::convert;
use prost::Message;

const D0: i32 = 20_500;

fn event(i: usize) -> FeedbackEvent {
    FeedbackDraft {
        event_id: format!("e{i}"),
        customer_id: format!("c{}", i % 7),
        attributes: vec![("tier".into(), ["gold", "silver"][i % 2].into())],
        customer_value: Some((i % 5) as f64 * 1000.0),
        channel: Some(Channel::ALL[i % 10]),
        journey_stage: Some(JourneyStage::ALL[i % 9]),
        touchpoint: ["helpline", "checkout", ""][i % 3].into(),
        // Event time deliberately out of order against the stream order.
        occurred_at: Some(Timestamp(Day(D0 + ((i * 7919) % 60) as i32).start().0 + i as i64)),
        nps: Some((i % 11) as i64),
        csat: i.is_multiple_of(3).then_some(1 + (i % 5) as i64),
        comment: if i.is_multiple_of(4) { "terrible wait".into() } else { String::new() },
        wait_seconds: i.is_multiple_of(6).then_some(400.0),
        promised_wait_seconds: i.is_multiple_of(6).then_some(300.0),
        resolved: i.is_multiple_of(6).then_some(i.is_multiple_of(12)),
        ..Default::default()
    }
    .validate(Timestamp(i64::MAX / 4), Violations::default())
    .unwrap()
}

fn record(tenant: &str, ev: &FeedbackEvent) -> Record {
    Record {
        topic: "feedback".into(),
        key: format!("{tenant}/{}", ev.customer_id).into_bytes(),
        payload: convert::feedback_to_pb(ev, tenant, Timestamp(0)).encode_to_vec(),
        headers: vec![
            (headers::ID.into(), ev.event_id.clone().into_bytes()),
            (headers::SCHEMA.into(), b"cxgap.common.v1.FeedbackEvent".to_vec()),
            (headers::TENANT.into(), tenant.as_bytes().to_vec()),
        ],
    }
}

fn consumed(records: Vec<Record>) -> Vec<Consumed> {
    records.into_iter().enumerate().map(|(i, record)| Consumed { record, partition: 0, offset: i as i64 }).collect()
}

fn report_text(s: &GapState) -> String {
    let as_of = Day(D0 + 59);
    let mut q = ReportQuery::new(as_of, Window::All);
    q.group_by = vec![GroupBy::Channel, GroupBy::Segment("tier".into())];
    let model = RiskModel::default();
    format!("{:?}\n{:?}", report::gap_report(s, &q), RiskView::new(s, &model, as_of).at_risk(0.0, &[], 100))
}

async fn conformance(store: AnalyticsStore) {
    let dlq = MemoryBus::new();
    dlq.ensure_topics(&[TopicSpec { name: "dlq".into(), partitions: 1, replication: 1 }]).await.unwrap();
    let config = ProcessorConfig { group: "g".into(), topic: "feedback".into(), dlq_topic: "dlq".into() };
    let p = Processor { store: store.clone(), config: config.clone(), dlq: dlq.clone() };

    // 120 distinct events, 30 of them sent twice, one garbage record, one foreign tenant.
    let events: Vec<FeedbackEvent> = (0..120).map(event).collect();
    let mut stream: Vec<Record> = events.iter().map(|e| record("acme", e)).collect();
    stream.extend(events.iter().step_by(4).map(|e| record("acme", e)));
    stream.insert(50, Record { payload: b"\xff\xfe not protobuf".to_vec(), ..record("acme", &events[0]) });
    stream.push(record("globex", &event(999)));
    let all = consumed(stream);

    // Applied in uneven batches; one batch is delivered twice (a redelivery).
    let cuts = [0, 17, 18, 64, 64, 100, all.len()];
    for w in cuts.windows(2) {
        p.process(0, &all[w[0]..w[1]]).await.unwrap();
    }
    let again = p.process(0, &all[17..64]).await.unwrap();
    assert_eq!((again.replayed, again.applied), (47, 0), "a redelivered batch changes nothing");
    assert_eq!(store.next_offset("g", "feedback", 0).await.unwrap(), Some(all.len() as i64));

    let mut offline = GapState::new();
    for e in &events {
        offline.apply(e);
    }
    let stored = store.load("acme", None, true).await.unwrap();
    assert_eq!(report_text(&stored), report_text(&offline), "stored state equals the offline engine");
    assert_eq!(stored.snapshot().cells, offline.snapshot().cells);
    assert_eq!(stored.snapshot().customers, offline.snapshot().customers);

    // The garbage went to the dead-letter topic with its reason.
    let dead = dlq.records("dlq");
    assert_eq!(dead.len(), 1);
    assert!(String::from_utf8_lossy(dead[0].record.header(headers::REASON).unwrap()).contains("undecodable"));

    // Tenants are isolated.
    let globex = store.load("globex", None, true).await.unwrap();
    let q = ReportQuery::new(Day(D0 + 100), Window::All);
    assert_eq!(report::gap_report(&globex, &q).overall.events, 1);
    assert_eq!(report::gap_report(&stored, &q).overall.events, 120);
    assert_eq!(globex.customer_count(), 1);

    // A zombie that still believes the old offset is fenced, and writes nothing.
    let zombie = BatchWrite {
        group: "g".into(),
        topic: "feedback".into(),
        partition: 0,
        expected: Some(64),
        next: 65,
        now_ms: 0,
        tenants: vec![cxgap_analytics::store::TenantWrite {
            tenant: "acme".into(),
            processed: vec!["zombie".into()],
            ..Default::default()
        }],
    };
    assert!(matches!(store.commit(&zombie).await, Err(StoreError::Fenced { partition: 0 })));
    let fresh_start = BatchWrite { expected: None, ..zombie };
    assert!(matches!(store.commit(&fresh_start).await, Err(StoreError::Fenced { .. })));
    assert!(store.processed("acme", &["zombie".into()]).await.unwrap().is_empty());
    assert_eq!(report_text(&store.load("acme", None, true).await.unwrap()), report_text(&offline));

    // The dedup window: pruning forgets old ids only.
    assert_eq!(store.prune_processed(0).await.unwrap(), 0);
}

#[tokio::test]
async fn postgres_backend() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    conformance(AnalyticsStore::connect(&db.url).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("analytics.sqlite").display());
    conformance(AnalyticsStore::connect(&url).await.unwrap()).await;
}
