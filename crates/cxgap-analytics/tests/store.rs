//! Store and processor conformance, run against each backend (PostgreSQL and SQLite): a
//! stream with duplicates, out-of-order events and a bad record yields exactly the state
//! the offline engine computes; replays change nothing; a zombie is fenced.

use cxgap_analytics::processor::{ProcessError, Processor, ProcessorConfig};
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
        // Values that must survive PostgreSQL's array literals and SQLite alike.
        attributes: vec![
            ("tier".into(), ["gold", "silver"][i % 2].into()),
            ("desk".into(), ["north", r#"say "hi", {x}\y"#, "NULL", ""][i % 4].into()),
        ],
        customer_value: Some((i % 5) as f64 * 1000.0),
        channel: Some(Channel::ALL[i % 10]),
        journey_stage: Some(JourneyStage::ALL[i % 9]),
        touchpoint: ["helpline", "checkout", "", "help, \"desk\""][i % 4].into(),
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
    format!(
        "{:?}\n{:?}",
        report::gap_report(s, &q),
        RiskView::new(s, &model, as_of).at_risk(0.0, &report::CustomerFilter::default(), 100)
    )
}

async fn conformance(store: AnalyticsStore) {
    let dlq = MemoryBus::new();
    dlq.ensure_topics(&[TopicSpec { name: "dlq".into(), partitions: 1, replication: 1 }]).await.unwrap();
    let config = ProcessorConfig { group: "g".into(), topic: "feedback".into(), dlq_topic: "dlq".into() };
    let p = Processor::new(store.clone(), config.clone(), dlq.clone());

    // 120 distinct events, 30 of them sent twice, one garbage record, one record whose
    // customer id holds U+0000 (which PostgreSQL's text cannot: validation turns it away
    // instead of the batch failing on every retry), one foreign tenant.
    let events: Vec<FeedbackEvent> = (0..120).map(event).collect();
    let mut stream: Vec<Record> = events.iter().map(|e| record("acme", e)).collect();
    stream.extend(events.iter().step_by(4).map(|e| record("acme", e)));
    stream.insert(50, Record { payload: b"\xff\xfe not protobuf".to_vec(), ..record("acme", &events[0]) });
    let nul = FeedbackEvent { event_id: "nul".into(), customer_id: "c\u{0}1".into(), ..event(500) };
    stream.insert(70, record("acme", &nul));
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

    // The garbage and the NUL went to the dead-letter topic with their reasons.
    let dead = dlq.records("dlq");
    assert_eq!(dead.len(), 2);
    assert!(String::from_utf8_lossy(dead[0].record.header(headers::REASON).unwrap()).contains("undecodable"));
    let reason = String::from_utf8_lossy(dead[1].record.header(headers::REASON).unwrap()).into_owned();
    assert!(reason.contains("invalid FeedbackEvent") && reason.contains("customer_id"), "{reason}");

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

    signals(&store, &p, &offline).await;
    groups(&store, &p).await;
    group_offsets(&store).await;
    restart(&store, &p, Processor::new(store.clone(), config, dlq)).await;
}

/// A restart. Which tenants are due for evaluation lives in memory: an instance that
/// stops between a batch's commit and the evaluation after it leaves that tenant's
/// aggregate figures undecided, and a new instance knows no tenant's stage gaps. At
/// start-up the new one (`fresh`) decides them for every stored tenant, as the stopped
/// one (`stopped`) would have.
async fn restart(store: &AnalyticsStore, stopped: &Processor<MemoryBus>, fresh: Processor<MemoryBus>) {
    use cxgap_analytics::processor::ASSESSMENT_SCHEMA;
    use cxgap_analytics::signals::{evaluate_dirty, start};
    use cxgap_domain::{Instrument, InternalAssessment};
    use cxgap_proto::signals as spb;
    let aggregates = async |tenant: &str| {
        let mut n = 0;
        for row in store.unpublished(100_000).await.unwrap() {
            let s = spb::Signal::decode(row.payload.as_slice()).unwrap();
            n += usize::from(s.tenant_id == tenant && matches!(s.body, Some(spb::signal::Body::Aggregate(_))));
        }
        n
    };
    // A helpline assessment gives the stages the helpline's events are in a stage gap.
    let assessment = InternalAssessment {
        assessment_id: "a1".into(),
        touchpoint: "helpline".into(),
        journey_stage: None,
        assessor: "ops".into(),
        assessed_at: Timestamp(Day(D0).start().0),
        instrument: Instrument::Nps,
        score: 9,
    };
    let mut records: Vec<Record> = (0..60).map(|i| record("umbrella", &event(i))).collect();
    records.push(Record {
        payload: convert::assessment_to_pb(&assessment, "umbrella").encode_to_vec(),
        headers: vec![
            (headers::ID.into(), b"a1".to_vec()),
            (headers::SCHEMA.into(), ASSESSMENT_SCHEMA.as_bytes().to_vec()),
            (headers::TENANT.into(), b"umbrella".to_vec()),
        ],
        ..records[0].clone()
    });
    let batch: Vec<Consumed> = records
        .into_iter()
        .enumerate()
        .map(|(i, record)| Consumed { record, partition: 20, offset: i as i64 })
        .collect();
    stopped.process(20, &batch).await.unwrap();
    // The stopping instance's evaluation never runs.
    assert_eq!(aggregates("umbrella").await, 0);
    assert_eq!(store.tenants().await.unwrap(), ["acme", "globex", "initech", "umbrella"]);
    assert!(fresh.signals.stage_gaps("umbrella").iter().all(Option::is_none));

    assert!(start(store, &fresh.signals).await);
    assert!(aggregates("umbrella").await > 0, "the stopped instance's figures are decided");
    let gaps = fresh.signals.stage_gaps("umbrella");
    assert!(gaps.iter().any(Option::is_some), "{gaps:?}");
    // What the stopped instance would have decided: the same figures (nothing new to
    // store) and the same stage gaps.
    assert_eq!(evaluate_dirty(store, &stopped.signals).await.unwrap(), 0);
    assert_eq!(stopped.signals.stage_gaps("umbrella"), gaps);
    for tenant in ["acme", "globex", "initech"] {
        stopped.signals.committed([tenant.to_string()]);
        evaluate_dirty(store, &stopped.signals).await.unwrap();
        assert_eq!(stopped.signals.stage_gaps(tenant), fresh.signals.stage_gaps(tenant), "{tenant}");
    }
}

/// A group's offsets move together or not at all: one partition not at its expected
/// offset fences the whole transaction, naming that partition; partitions stored and
/// new move in one transaction.
async fn group_offsets(store: &AnalyticsStore) {
    let offsets = || async { store.offsets("m", "feedback").await.unwrap() };
    let mut tx = store.begin_batch("m", "feedback", 10, None, 4, 0).await.unwrap();
    tx.move_offsets("m", "feedback", &[(11, None, 5), (12, None, 6)]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(offsets().await, [(10, 4), (11, 5), (12, 6)]);

    for (wrong, at) in [(11, 4), (12, 7)] {
        let mut tx = store.begin_batch("m", "feedback", 10, Some(4), 8, 0).await.unwrap();
        let mut moves = vec![(11, Some(5), 9), (12, Some(6), 9), (13, None, 2)];
        moves.iter_mut().find(|m| m.0 == wrong).unwrap().1 = Some(at);
        let refused = tx.move_offsets("m", "feedback", &moves).await;
        assert!(matches!(refused, Err(StoreError::Fenced { partition }) if partition == wrong), "{refused:?}");
        drop(tx);
        assert_eq!(offsets().await, [(10, 4), (11, 5), (12, 6)], "nothing moved");
    }

    let mut tx = store.begin_batch("m", "feedback", 10, Some(4), 8, 0).await.unwrap();
    tx.move_offsets("m", "feedback", &[(11, Some(5), 9), (12, Some(6), 10), (13, None, 2)]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(offsets().await, [(10, 8), (11, 9), (12, 10), (13, 2)]);
}

/// Partition batches applied as one group come out as the same records applied one
/// partition at a time; a group that one partition refuses (a gap) applies nothing of any.
async fn groups(store: &AnalyticsStore, p: &Processor<MemoryBus>) {
    let events: Vec<FeedbackEvent> = (0..90).map(event).collect();
    let mut logs: std::collections::BTreeMap<i32, Vec<Consumed>> = Default::default();
    for e in &events {
        // A customer's records share a partition, as the record key makes them.
        let partition = 1 + e.customer_id[1..].parse::<i32>().unwrap() % 3;
        let log = logs.entry(partition).or_default();
        log.push(Consumed { record: record("initech", e), partition, offset: log.len() as i64 });
    }
    let part = |p: i32, from: usize, to: usize| (p, &logs[&p][from..to.min(logs[&p].len())]);
    let stats = p.process_group(&[part(1, 0, 5), part(2, 0, 5), part(3, 0, 5)]).await.unwrap();
    assert_eq!((stats.records, stats.applied), (15, 15));

    let before = report_text(&store.load("initech", None, true).await.unwrap());
    let refused = p.process_group(&[part(1, 5, 10), part(2, 5, 10), part(3, 7, 10)]).await;
    assert!(matches!(refused, Err(ProcessError::Gap(g)) if g.partition == 3), "{refused:?}");
    assert_eq!(report_text(&store.load("initech", None, true).await.unwrap()), before, "nothing applied");
    assert_eq!(store.next_offset("g", "feedback", 1).await.unwrap(), Some(5));

    // A group that replays part of what it holds, then the rest one partition at a time.
    let stats = p.process_group(&[part(1, 3, 20), part(2, 0, 20)]).await.unwrap();
    assert_eq!((stats.replayed, stats.applied), (7, 30));
    for (partition, log) in &logs {
        p.process(*partition, log).await.unwrap();
    }
    let mut offline = GapState::new();
    for e in &events {
        offline.apply(e);
    }
    let stored = store.load("initech", None, true).await.unwrap();
    assert_eq!(stored.snapshot().cells, offline.snapshot().cells);
    assert_eq!(stored.snapshot().customers, offline.snapshot().customers);
    assert_eq!(report_text(&stored), report_text(&offline));
}

/// The outbox: one customer signal per customer per batch that changed it, the newest
/// saying exactly how many events the customer has; the relay publishes each once and
/// marks it; aggregate figures equal the offline engine's and are not re-stored unchanged.
async fn signals(store: &AnalyticsStore, p: &Processor<MemoryBus>, offline: &GapState) {
    use cxgap_analytics::signals::{evaluate_dirty, relay};
    use cxgap_proto::signals as spb;
    let pending = store.unpublished(10_000).await.unwrap();
    assert!(!pending.is_empty());
    assert!(pending.windows(2).all(|w| (w[0].created_at, &w[0].id) < (w[1].created_at, &w[1].id)), "oldest first");
    assert_eq!(store.prune_signals(i64::MAX).await.unwrap(), 0, "signals in the outbox outlive their retention");
    let bus = MemoryBus::new();
    bus.ensure_topics(&[TopicSpec { name: "signals".into(), partitions: 2, replication: 1 }]).await.unwrap();
    let delay = prometheus_client::metrics::histogram::Histogram::new([0.001, 1.0]);
    assert_eq!(relay(store, &bus, "signals", 10_000, Some(&delay)).await.unwrap(), pending.len());
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("publish_delay", "", delay);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(&format!("publish_delay_count {}", pending.len())), "each published signal timed: {text}");
    assert_eq!(relay(store, &bus, "signals", 10_000, None).await.unwrap(), 0, "published rows are not sent again");
    let published = bus.records("signals");
    assert_eq!(published.len(), pending.len());
    let mut newest: std::collections::BTreeMap<(String, String), u64> = Default::default();
    let mut ids = std::collections::HashSet::new();
    let mut c1_risks = Vec::new();
    for c in &published {
        let s = spb::Signal::decode(c.record.payload.as_slice()).unwrap();
        assert_eq!(c.record.header(headers::ID).unwrap(), s.signal_id.as_bytes());
        assert!(ids.insert(s.signal_id.clone()), "signal ids are unique");
        let Some(spb::signal::Body::Customer(cs)) = s.body else { panic!("a batch emits customer signals only") };
        assert!((0.0..=1.0).contains(&cs.risk) && !cs.feedback.is_empty() && !cs.drivers.is_empty());
        if s.tenant_id == "acme" && cs.customer_id == "c1" {
            c1_risks.push(cs.risk);
        }
        let e = newest.entry((s.tenant_id, cs.customer_id)).or_default();
        *e = (*e).max(cs.events);
    }
    for (id, c, _) in offline.customers() {
        assert_eq!(newest.get(&("acme".to_string(), id.to_string())), Some(&c.events), "customer {id}");
    }
    assert_eq!(newest.keys().filter(|(t, _)| t == "globex").count(), 1);
    let history = store.risk_history("acme", "c1", 100).await.unwrap();
    assert!(!history.is_empty() && history.windows(2).all(|w| w[0].0 <= w[1].0), "{history:?}");
    // The stored risk is the published one, to the last bit.
    assert!(history.iter().all(|(_, r)| c1_risks.contains(r)), "{history:?} against {c1_risks:?}");

    // Aggregates: both tenants changed; figures decided once, equal to the offline engine.
    let stored = evaluate_dirty(store, &p.signals).await.unwrap();
    assert!(stored > 0);
    p.signals.committed(["acme".to_string()]);
    assert_eq!(evaluate_dirty(store, &p.signals).await.unwrap(), 0, "unchanged figures are not stored again");
    relay(store, &bus, "signals", 10_000, None).await.unwrap();
    let as_of = Day(D0 + 59);
    // The newest helpline figures published for acme.
    let helpline_signal = || {
        bus.records("signals")
            .into_iter()
            .filter_map(|c| match spb::Signal::decode(c.record.payload.as_slice()).unwrap() {
                spb::Signal { tenant_id, body: Some(spb::signal::Body::Aggregate(a)), .. } if tenant_id == "acme" => {
                    Some(a)
                }
                _ => None,
            })
            .rfind(|a| a.subject == "helpline" && a.window_days == 30)
            .expect("a helpline signal")
    };
    let expected = cxgap_domain::signals::aggregate_figures(offline, as_of, &[30]);
    let helpline = expected.iter().find(|f| f.subject == "helpline").unwrap();
    let got = helpline_signal();
    assert_eq!(got.current, helpline.current.to_row().unwrap().to_vec());
    assert_eq!(got.previous, helpline.previous.to_row().unwrap().to_vec());

    // More events after that evaluation: the next one (on PostgreSQL it reads only the
    // cells that changed) decides the figures of everything, as the offline engine does.
    let next = store.next_offset("g", "feedback", 0).await.unwrap().unwrap();
    let more: Vec<FeedbackEvent> = (120..160).map(event).collect();
    let batch: Vec<Consumed> = more
        .iter()
        .enumerate()
        .map(|(i, e)| Consumed { record: record("acme", e), partition: 0, offset: next + i as i64 })
        .collect();
    p.process(0, &batch).await.unwrap();
    assert!(evaluate_dirty(store, &p.signals).await.unwrap() > 0);
    relay(store, &bus, "signals", 10_000, None).await.unwrap();
    let mut offline = offline.clone();
    for e in &more {
        offline.apply(e);
    }
    let expected = cxgap_domain::signals::aggregate_figures(&offline, as_of, &[30]);
    let helpline = expected.iter().find(|f| f.subject == "helpline").unwrap();
    let newer = helpline_signal();
    assert_ne!(newer.current, got.current, "the new events are in the helpline's window");
    assert_eq!(newer.current, helpline.current.to_row().unwrap().to_vec());
    assert_eq!(newer.previous, helpline.previous.to_row().unwrap().to_vec());
    assert_eq!(store.prune_signals(0).await.unwrap(), 0, "nothing is older than the epoch");
    assert!(store.unpublished(10).await.unwrap().is_empty());
    assert!(store.prune_signals(i64::MAX).await.unwrap() > 0, "published signals past their retention go");
    assert!(store.risk_history("acme", "c1", 100).await.unwrap().is_empty());
}

/// Signals waiting for the relay when the outbox moved to a table of its own (migration
/// 1006) are in it afterwards, and only they: nothing decided before is lost or sent twice.
async fn outbox_migration(url: &str) {
    static ALL: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
    let before: Vec<sqlx::migrate::Migration> = ALL.migrations.iter().filter(|m| m.version < 1006).cloned().collect();
    let old = sqlx::migrate::Migrator { migrations: before.into(), ..sqlx::migrate::Migrator::DEFAULT };
    let pool = cxgap_runtime::db::connect(url, cxgap_runtime::db::pool_size(url), &old).await.unwrap();
    for (id, created_at, published) in [("s-sent", 1i64, 1i32), ("s-waiting-b", 2, 0), ("s-waiting-a", 2, 0)] {
        sqlx::query(
            "INSERT INTO analytics_signals (signal_id, tenant_id, kind, subject, msg_key, created_at, risk, payload, \
             published) VALUES ($1, 'acme', 'customer', 'c1', 'acme/c1', $2, 0.5, 'AAEC', $3)",
        )
        .bind(id)
        .bind(created_at)
        .bind(published)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    let store = AnalyticsStore::connect(url).await.unwrap();
    let waiting = store.unpublished(10).await.unwrap();
    let ids: Vec<&str> = waiting.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["s-waiting-a", "s-waiting-b"]);
    assert_eq!((waiting[0].tenant.as_str(), waiting[0].key.as_str()), ("acme", "acme/c1"));
    assert_eq!(waiting[0].payload, [0, 1, 2]);
    store.mark_published(&[&waiting[1]]).await.unwrap();
    let ids: Vec<String> = store.unpublished(10).await.unwrap().into_iter().map(|u| u.id).collect();
    assert_eq!(ids, ["s-waiting-a"], "only the row marked leaves the outbox");
    assert_eq!(store.prune_signals(i64::MAX).await.unwrap(), 2, "the signals already sent go; the waiting one stays");
}

#[tokio::test]
async fn outbox_migration_keeps_waiting_signals() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    outbox_migration(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    outbox_migration(&format!("sqlite:{}", dir.path().join("analytics.sqlite").display())).await;
}

#[tokio::test]
async fn postgres_backend() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    conformance(AnalyticsStore::connect(&db.url).await.unwrap()).await;
    // The PostgreSQL-only migrations ran here (SQLite, below, skips them).
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let options: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT relname::text, reloptions FROM pg_class \
         WHERE relname IN ('analytics_cells', 'analytics_customers') ORDER BY relname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        options,
        [
            ("analytics_cells".to_string(), vec!["fillfactor=60".to_string()]),
            ("analytics_customers".to_string(), vec!["fillfactor=70".to_string()])
        ]
    );
}

type Cells = [(cxgap_domain::state::CellCoords, cxgap_domain::aggregate::CellAgg)];

/// A batch of acme's cells on `partition`, moving its offset from `expected` by one.
fn cells_batch(partition: i32, expected: Option<i64>, cells: &Cells) -> BatchWrite {
    BatchWrite {
        group: "g".into(),
        topic: "feedback".into(),
        partition,
        expected,
        next: expected.unwrap_or(0) + 1,
        now_ms: 0,
        tenants: vec![cxgap_analytics::store::TenantWrite {
            tenant: "acme".into(),
            cells: cells.to_vec(),
            ..Default::default()
        }],
    }
}

fn cell_keys(cells: &Cells) -> std::collections::BTreeSet<cxgap_domain::state::CellCoords> {
    cells.iter().map(|(k, _)| k.clone()).collect()
}

/// What another instance's evaluation reads of acme's window (see `cells_since`).
async fn read(reader: &AnalyticsStore, since: Option<i64>, kept: usize) -> cxgap_analytics::store::CellRead {
    let gate = tokio::sync::RwLock::new(());
    reader.cells_since("acme", Day(D0), since, kept, &gate, || Some(())).await.unwrap().0
}

/// The transactions of the change log's rows, oldest first.
async fn logged_xids(conn: &mut sqlx::PgConnection) -> Vec<i64> {
    sqlx::query_scalar("SELECT changed_xid FROM analytics_cell_changes ORDER BY changed_xid")
        .fetch_all(conn)
        .await
        .unwrap()
}

/// The evaluation's incremental read: a batch that commits after a read began, even one
/// whose transaction is older than a batch already seen, is in the next read; a state kept
/// and refreshed that way equals one loaded whole; a read takes only the changed cells,
/// by key from the change log, or by the cells' stamps when they are many or the log was
/// pruned past the mark.
#[tokio::test]
async fn changed_cells_include_late_commits() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    let store = AnalyticsStore::connect(&db.url).await.unwrap();
    // Another instance: an instance reads back only the changes of others.
    let reader = AnalyticsStore::connect(&db.url).await.unwrap();
    // As many cells kept as to take every read below by key.
    const MANY: usize = 1 << 20;
    let mut s = GapState::new();
    for i in 0..40 {
        s.apply(&event(i));
    }
    let cells = s.snapshot().cells;
    let (a, b) = cells.split_at(cells.len() / 2);
    store.commit(&cells_batch(0, None, a)).await.unwrap();
    let first = read(&reader, None, 0).await;
    assert!(first.whole);
    assert_eq!(first.cells.len(), a.len());

    // Batch B writes and stays open while the next read runs.
    let late = cells_batch(1, None, b);
    let mut tx = store.begin_batch("g", "feedback", 1, None, 1, 0).await.unwrap();
    tx.write(&late.tenants[0]).await.unwrap();
    let second = read(&reader, first.mark, MANY).await;
    assert!(!second.whole && second.keyed);
    assert!(cell_keys(&second.cells).is_disjoint(&cell_keys(b)), "an open transaction's cells are not read");
    // A later batch commits first, adding to a cell of A; then B commits.
    store.commit(&cells_batch(0, Some(1), &a[..1])).await.unwrap();
    tx.commit().await.unwrap();

    let third = read(&reader, second.mark, MANY).await;
    assert!(!third.whole);
    let got = cell_keys(&third.cells);
    assert!(cell_keys(b).is_subset(&got), "the batch that committed late is read");
    assert!(got.contains(&a[0].0), "the cell added to is read");

    // Exactly the changed cells: by key while they are at most a sixteenth of the cells
    // kept, by the cells' stamps above that. The marks here are the batches' own
    // transactions, from the log: a mark from a snapshot is held back by any transaction
    // open on the server, other tests' too, which can only make a read take more.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let b_xid = Some(logged_xids(&mut conn).await[1]);
    let mut changed = cell_keys(b);
    changed.insert(a[0].0.clone());
    let logged = b.len() + 1;
    let crowded = read(&reader, b_xid, logged * 16 - 1).await;
    assert!(!crowded.whole && !crowded.keyed);
    assert_eq!(cell_keys(&crowded.cells), changed, "only the changed cells are read, not the window");
    let by_key = read(&reader, b_xid, logged * 16).await;
    assert!(!by_key.whole && by_key.keyed);
    assert_eq!(cell_keys(&by_key.cells), changed);

    let mut kept = GapState::new();
    for read in [&first, &second, &third] {
        for (coords, agg) in &read.cells {
            kept.set_cell(coords, agg);
        }
    }
    let whole = store.load("acme", Some(Day(D0)), false).await.unwrap();
    assert_eq!(kept.snapshot().cells, whole.snapshot().cells);
    assert_ne!(whole.snapshot().cells, s.snapshot().cells, "A's first cell counts twice");

    // Pruning the log: a read from a mark below the pruned part goes by the stamps; one
    // from a later mark still goes by key. Both read only what changed since.
    store.commit(&cells_batch(0, Some(2), &a[1..2])).await.unwrap();
    let (pruned, _) = store.prune_cell_changes(0).await.unwrap();
    assert_eq!(pruned, 0, "the first call only takes a mark");
    store.commit(&cells_batch(0, Some(3), &a[2..3])).await.unwrap();
    let xids = logged_xids(&mut conn).await;
    let (c1, last) = (xids[3], xids[4]);
    let (pruned, _) = store.prune_cell_changes(last).await.unwrap();
    assert_eq!(pruned, 4, "the four batches before it leave the log");
    let stale = read(&reader, Some(c1), MANY).await;
    assert!(!stale.whole && !stale.keyed, "changes logged before the floor may be gone");
    assert_eq!(cell_keys(&stale.cells), [a[1].0.clone(), a[2].0.clone()].into());
    let fresh = read(&reader, Some(last), MANY).await;
    assert!(!fresh.whole && fresh.keyed);
    assert_eq!(cell_keys(&fresh.cells), [a[2].0.clone()].into(), "the batch after the mark, and only it");
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM analytics_cell_changes").fetch_one(&mut conn).await.unwrap();
    assert_eq!(left, 1);
}

/// The aggregate evaluation's kept window: an instance takes its own batches' cells from
/// memory and reads back only what other instances changed; through its own batches,
/// another's, both, or neither since the last evaluation, and after a batch whose commit
/// it is unsure of, the window it keeps equals the stored one.
#[tokio::test]
async fn an_instance_keeps_its_own_cells_from_memory_and_reads_back_the_others() {
    use cxgap_analytics::signals::evaluate_dirty;
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    let dlq = MemoryBus::new();
    dlq.ensure_topics(&[TopicSpec { name: "dlq".into(), partitions: 1, replication: 1 }]).await.unwrap();
    let config = ProcessorConfig { group: "g".into(), topic: "feedback".into(), dlq_topic: "dlq".into() };
    let (store_a, store_b) =
        (AnalyticsStore::connect(&db.url).await.unwrap(), AnalyticsStore::connect(&db.url).await.unwrap());
    let a = Processor::new(store_a.clone(), config.clone(), dlq.clone());
    let b = Processor::new(store_b.clone(), config, dlq);
    let mut next = [0i64; 2];
    let mut send = async |p: &Processor<MemoryBus>, partition: i32, events: std::ops::Range<usize>| {
        let batch: Vec<Consumed> = events
            .enumerate()
            .map(|(k, i)| Consumed {
                record: record("acme", &event(i)),
                partition,
                offset: next[partition as usize] + k as i64,
            })
            .collect();
        next[partition as usize] += batch.len() as i64;
        p.process(partition, &batch).await.unwrap();
    };
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let check = async |what: &str| {
        // Batches of either instance mark the tenant for A's next evaluation only when
        // they are A's: here it is evaluated every time.
        a.signals.committed(["acme".to_string()]);
        evaluate_dirty(&store_a, &a.signals).await.unwrap();
        let (from, kept) = a.signals.kept_cells("acme").expect("a kept window");
        let stored = store_a.load("acme", Some(from), false).await.unwrap().snapshot().cells;
        assert!(!stored.is_empty());
        let differ = kept.iter().zip(&stored).filter(|(k, s)| k != s).count();
        assert!(
            kept.len() == stored.len() && differ == 0,
            "{what}: {} kept cells against {} stored, {differ} differ",
            kept.len(),
            stored.len()
        );
    };
    send(&a, 0, 0..40).await;
    check("a whole first read").await;
    send(&a, 0, 40..60).await;
    send(&a, 0, 60..70).await;
    // Of A's batches since a mark, A reads back nothing and B every changed cell.
    let since = Some(logged_xids(&mut conn).await[1]);
    let own = read(&store_a, since, 1 << 20).await;
    assert!(own.cells.is_empty() && !own.whole && own.keyed);
    let others = read(&store_b, since, 1 << 20).await;
    assert_eq!(others.cells.len(), 30, "{} cells", others.cells.len());
    check("its own batches, from memory").await;
    send(&b, 1, 70..100).await;
    check("another instance's batch, read back").await;
    // Events 180 apart fall in the same cell: B adds to A's cells, then A to B's and its own.
    send(&a, 0, 100..130).await;
    send(&b, 1, 280..300).await;
    send(&a, 0, 290..310).await;
    check("both, interleaved, on the same cells").await;
    check("neither").await;
    a.signals.unsure(["acme".to_string()]);
    send(&a, 0, 160..170).await;
    check("after a batch whose commit was in doubt: read whole").await;
}

/// A batch of more cells than the change log keeps keys for logs its count alone, and the
/// next read goes by the cells' stamps; it still reads exactly what changed.
#[tokio::test]
async fn large_batches_log_no_keys_and_reads_after_them_go_by_the_stamps() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    let store = AnalyticsStore::connect(&db.url).await.unwrap();
    let reader = AnalyticsStore::connect(&db.url).await.unwrap();
    let mut s = GapState::new();
    for i in 0..400 {
        s.apply(&event(i));
    }
    // The same cells on later days too: more cells than the events' combinations give.
    let cells: Vec<_> = (0..4)
        .flat_map(|k| {
            s.snapshot().cells.into_iter().map(move |(c, agg)| ((Day(c.0.0 + 60 * k), c.1, c.2, c.3, c.4), agg))
        })
        .collect();
    assert!(cells.len() > 600, "{} cells", cells.len());
    let write = |expected, cells: &Cells| cells_batch(0, expected, cells);
    store.commit(&write(None, &cells[..10])).await.unwrap();
    let first = read(&reader, None, 0).await;
    store.commit(&write(Some(1), &cells[10..11])).await.unwrap();
    assert!(first.whole);
    // Marks from the batches' own transactions, as in `changed_cells_include_late_commits`.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let second = read(&reader, logged_xids(&mut conn).await.last().copied(), 1 << 20).await;
    assert!(second.keyed && cell_keys(&second.cells) == cell_keys(&cells[10..11]));
    store.commit(&write(Some(2), &cells[11..600])).await.unwrap();
    let third = read(&reader, logged_xids(&mut conn).await.last().copied(), 1 << 20).await;
    assert!(!third.whole && !third.keyed, "589 cells are more than the log keeps keys for");
    assert_eq!(cell_keys(&third.cells), cell_keys(&cells[11..600]));
    let logged: Vec<(i32, bool)> =
        sqlx::query_as("SELECT cells, days IS NULL FROM analytics_cell_changes ORDER BY changed_xid")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(logged, [(10, false), (1, false), (589, true)]);
}

/// A cell's sums are kept as a row per partition that writes to it (migration 1009): a
/// partition's batch does not wait on another's open batch that touched the same cells,
/// and every read (whole, by key, by the stamps, the offline load) adds a cell's rows up.
#[tokio::test]
async fn partitions_keep_their_own_rows_of_a_cell_and_reads_add_them_up() {
    use std::collections::BTreeMap;
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    let store = AnalyticsStore::connect(&db.url).await.unwrap();
    let reader = AnalyticsStore::connect(&db.url).await.unwrap();
    let mut s = GapState::new();
    for i in 0..40 {
        s.apply(&event(i));
    }
    let cells = s.snapshot().cells;
    let mut twice = GapState::new();
    for (coords, agg) in cells.iter().chain(&cells) {
        twice.merge_cell(coords, agg);
    }
    let want: BTreeMap<_, _> = twice.snapshot().cells.into_iter().collect();
    let sums = |read: &cxgap_analytics::store::CellRead| {
        let got: BTreeMap<_, _> = read.cells.iter().cloned().collect();
        assert_eq!(got.len(), read.cells.len(), "a cell came more than once");
        got
    };

    store.commit(&cells_batch(0, None, &cells)).await.unwrap();
    let first = read(&reader, None, 0).await;
    // Partition 0's next batch holds its rows of every cell, uncommitted, while partition 1
    // adds to the same cells.
    let mut open = store.begin_batch("g", "feedback", 0, Some(1), 2, 0).await.unwrap();
    open.write(&cells_batch(0, Some(1), &cells).tenants[0]).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(20), store.commit(&cells_batch(1, None, &cells)))
        .await
        .expect("partition 1's batch waited on partition 0's open batch")
        .unwrap();
    drop(open);

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition_id, count(*) FROM analytics_cells GROUP BY partition_id ORDER BY partition_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows, [(0, cells.len() as i64), (1, cells.len() as i64)]);

    let whole = read(&reader, None, 0).await;
    assert!(whole.whole);
    assert_eq!(sums(&whole), want);
    let by_key = read(&reader, first.mark, 1 << 20).await;
    assert!(!by_key.whole && by_key.keyed);
    assert_eq!(sums(&by_key), want, "partition 1 changed every cell: each is read whole");
    let by_stamp = read(&reader, first.mark, 1).await;
    assert!(!by_stamp.whole && !by_stamp.keyed);
    assert_eq!(sums(&by_stamp), want);
    let loaded: BTreeMap<_, _> =
        store.load("acme", Some(Day(D0)), false).await.unwrap().snapshot().cells.into_iter().collect();
    assert_eq!(loaded, want);
}

#[tokio::test]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("analytics.sqlite").display());
    conformance(AnalyticsStore::connect(&url).await.unwrap()).await;
}
