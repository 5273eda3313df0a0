//! The alerting store, processor and deliverer against each backend (PostgreSQL and
//! SQLite) and a real HTTP receiver on loopback: a condition that stays true is one alert;
//! hysteresis, auto-resolve, acknowledgement, silences; a receiver that fails, throttles,
//! times out and finally answers receives every notification with a valid signature;
//! 410 disables the endpoint; exhausted retries are dead-lettered and can be replayed.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cxgap_alerting::delivery::{Deliverer, DeliveryConfig, Outcome};
use cxgap_alerting::model::{Filter, Matcher, Silence, Subscription, Target};
use cxgap_alerting::processor::{Processor, ProcessorConfig};
use cxgap_alerting::retry::Schedule;
use cxgap_alerting::ssrf::Guard;
use cxgap_alerting::store::AlertStore;
use cxgap_alerting::webhook;
use cxgap_bus::memory::MemoryBus;
use cxgap_bus::{Consumed, Record};
use cxgap_domain::alerts::AlertState;
use cxgap_proto::signals as pb;
use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the receiver does with its next requests; then 200 forever.
#[derive(Debug, Clone, Copy)]
enum Act {
    Fail,
    Throttle,
    Hang,
    Gone,
    Redirect,
}

#[derive(Default)]
struct Receiver {
    script: Mutex<VecDeque<Act>>,
    got: Mutex<Vec<(String, String, String, String)>>,
    attempts: Mutex<usize>,
    /// Every request: its webhook-id, when, and what the receiver did.
    log: Mutex<Vec<(String, std::time::Instant, Option<Act>)>>,
}

async fn receive(State(r): State<Arc<Receiver>>, h: HeaderMap, body: String) -> Response {
    *r.attempts.lock().unwrap() += 1;
    let act = r.script.lock().unwrap().pop_front();
    let id = h.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    r.log.lock().unwrap().push((id, std::time::Instant::now(), act));
    match act {
        Some(Act::Fail) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Some(Act::Throttle) => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
        Some(Act::Hang) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        Some(Act::Gone) => StatusCode::GONE.into_response(),
        Some(Act::Redirect) => {
            (StatusCode::TEMPORARY_REDIRECT, [("location", "http://169.254.169.254/")]).into_response()
        }
        None => {
            let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            r.got.lock().unwrap().push((get("webhook-id"), get("webhook-timestamp"), get("webhook-signature"), body));
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

async fn receiver(script: &[Act]) -> (SocketAddr, Arc<Receiver>) {
    let r = Arc::new(Receiver { script: Mutex::new(script.iter().copied().collect()), ..Default::default() });
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, r)
}

/// A store on a fresh SQLite file in `dir` and a processor over it.
async fn sqlite_processor(dir: &tempfile::TempDir) -> (AlertStore, Processor) {
    processor(&format!("sqlite:{}", dir.path().join("alerts.db").display())).await
}

async fn processor(url: &str) -> (AlertStore, Processor) {
    let store = AlertStore::connect(url).await.unwrap();
    let p = Processor {
        store: store.clone(),
        config: ProcessorConfig { group: "g".into(), topic: "signals".into(), repeat_ms: 3_600_000 },
    };
    (store, p)
}

/// A high-risk customer's signal whose feedback came at `touchpoint`.
fn customer_signal_at(id: &str, customer: &str, touchpoint: &str) -> pb::Signal {
    let mut s = customer_signal(id, customer, 0.9, 1.0);
    if let Some(pb::signal::Body::Customer(c)) = &mut s.body {
        c.feedback.push(pb::FeedbackNote { event_id: id.into(), touchpoint: touchpoint.into(), ..Default::default() });
    }
    s
}

fn customer_signal(id: &str, customer: &str, risk: f64, value: f64) -> pb::Signal {
    pb::Signal {
        signal_id: id.into(),
        tenant_id: "acme".into(),
        emitted_at: Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 }),
        body: Some(pb::signal::Body::Customer(pb::CustomerRiskChanged {
            customer_id: customer.into(),
            risk,
            customer_value: Some(value),
            segment: [("tier".to_string(), "gold".to_string())].into(),
            ..Default::default()
        })),
    }
}

struct Stream {
    next: i64,
}

impl Stream {
    fn batch(&mut self, signals: &[pb::Signal]) -> Vec<Consumed> {
        signals
            .iter()
            .map(|s| {
                let c = Consumed {
                    record: Record {
                        topic: "signals".into(),
                        key: vec![],
                        payload: s.encode_to_vec(),
                        headers: vec![],
                    },
                    partition: 0,
                    offset: self.next,
                };
                self.next += 1;
                c
            })
            .collect()
    }
}

fn deliverer(store: &AlertStore, schedule: &str) -> Deliverer<MemoryBus> {
    Deliverer {
        store: store.clone(),
        config: DeliveryConfig {
            schedule: Schedule::parse(schedule).unwrap(),
            timeout: Duration::from_millis(300),
            guard: Guard::new("127.0.0.0/8").unwrap(),
            concurrency: 4,
        },
        kafka: MemoryBus::new(),
        wake: Default::default(),
        metrics: Default::default(),
    }
}

/// Runs the deliverer until nothing is due or pending within `limit`.
async fn drain(d: &Deliverer<MemoryBus>, limit: Duration) {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let due = d.store.due(now, 100).await.unwrap();
        for x in &due {
            d.run_one(x).await.unwrap();
        }
        let counts = d.store.delivery_counts().await.unwrap();
        if counts.get("pending").copied().unwrap_or(0) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn conformance(store: AlertStore) {
    let p = Processor {
        store: store.clone(),
        config: ProcessorConfig { group: "g".into(), topic: "signals".into(), repeat_ms: 3_600_000 },
    };
    let mut stream = Stream { next: 0 };
    let secret = webhook::new_secret();
    let (addr, rx) = receiver(&[Act::Fail, Act::Throttle, Act::Hang, Act::Redirect]).await;
    // The first signal creates the tenant (and its default rules); subscribe before alerts.
    p.process(0, &stream.batch(&[customer_signal("s0", "c0", 0.1, 1.0)])).await.unwrap();
    let sub = Subscription {
        id: "ops-hook".into(),
        name: "ops".into(),
        filter: Filter { kinds: vec!["risk_threshold".into()], ..Default::default() },
        target: Target::Webhook { url: format!("http://{addr}/hook"), secrets: vec![secret.clone()] },
        grouping: None,
    };
    store.put_subscription("acme", &sub, 0).await.unwrap();

    // Risk crosses 0.7, stays high (and the same signal arrives twice), dips to 0.65
    // (above clear_at: still firing), then falls below 0.6: one firing, one resolution.
    let risks = [0.8, 0.9, 0.75, 0.65, 0.5];
    let mut signals: Vec<pb::Signal> =
        risks.iter().enumerate().map(|(i, r)| customer_signal(&format!("s{}", i + 1), "c1", *r, 50_000.0)).collect();
    signals.insert(2, signals[1].clone());
    let stats = p.process(0, &stream.batch(&signals)).await.unwrap();
    assert_eq!((stats.signals, stats.duplicates, stats.notifications), (5, 1, 2), "{stats:?}");
    let alerts = store.alerts("acme", &[], 100, None).await.unwrap();
    let risk = alerts.iter().find(|a| a.rule_id == "churn-risk-high").unwrap();
    assert_eq!((risk.state, risk.episode, risk.subject.as_str()), (AlertState::Resolved, 1, "customer:c1"));
    let history: Vec<AlertState> = store.history(&risk.alert_id).await.unwrap().iter().map(|t| t.state).collect();
    assert_eq!(history, [AlertState::Firing, AlertState::Resolved]);
    // Fired again and resolved again within one batch: the stored alert's second episode,
    // its transitions numbered on from the first episode's.
    let again = [customer_signal("s6", "c1", 0.9, 50_000.0), customer_signal("s7", "c1", 0.5, 50_000.0)];
    let stats = p.process(0, &stream.batch(&again)).await.unwrap();
    assert_eq!(stats.notifications, 2, "{stats:?}");
    let risk = store.alert("acme", &risk.alert_id).await.unwrap().unwrap();
    assert_eq!((risk.state, risk.episode), (AlertState::Resolved, 2));
    let history: Vec<AlertState> = store.history(&risk.alert_id).await.unwrap().iter().map(|t| t.state).collect();
    assert_eq!(history, [AlertState::Firing, AlertState::Resolved, AlertState::Firing, AlertState::Resolved]);
    // A replayed batch (below the stored offset) changes nothing.
    let again = p.process(0, &stream.batch(&[])).await.unwrap();
    assert_eq!(again.records, 0);

    // Acknowledge: only a firing alert; the same change twice is refused with the reason.
    p.process(0, &stream.batch(&[customer_signal("s9", "c2", 0.95, 1e5)])).await.unwrap();
    let c2 = store.alerts("acme", &[AlertState::Firing], 100, None).await.unwrap();
    let c2 = c2.iter().find(|a| a.subject == "customer:c2" && a.rule_id == "churn-risk-high").unwrap();
    let acked = store.act("acme", &c2.alert_id, AlertState::Acknowledged, "ana", "calling them", 1).await.unwrap();
    assert_eq!(acked.state, AlertState::Acknowledged);
    let e = store.act("acme", &c2.alert_id, AlertState::Acknowledged, "ana", "", 2).await.unwrap_err();
    assert!(e.to_string().contains("cannot be acknowledged"), "{e}");
    assert!(store.act("globex", &c2.alert_id, AlertState::Resolved, "eve", "", 3).await.is_err(), "tenant-scoped");

    // Silences mute notifications (kept in the log, not delivered) while active.
    store
        .put_silence(
            "acme",
            &Silence {
                id: "maint".into(),
                matchers: vec![Matcher { label: "customer".into(), value: "c3".into(), regex: false, negate: false }],
                starts_at: 0,
                ends_at: i64::MAX,
                created_by: "ops".into(),
                comment: "known issue".into(),
            },
        )
        .await
        .unwrap();
    p.process(0, &stream.batch(&[customer_signal("s10", "c3", 0.99, 1.0)])).await.unwrap();
    let log = store.notifications_after("acme", 0, 1000).await.unwrap();
    let muted: Vec<_> = log.iter().filter(|n| !n.silenced_by.is_empty()).collect();
    assert!(!muted.is_empty() && muted.iter().all(|n| n.silenced_by == "maint"));
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq), "the log is ordered");

    // Deliveries: c1 fired + resolved twice, c2 fired + acknowledged; c3 muted. The receiver
    // fails, throttles (Retry-After: 1 s), hangs past the timeout and redirects first.
    let d = deliverer(&store, "100ms,100ms,100ms,100ms,100ms");
    drain(&d, Duration::from_secs(20)).await;
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!(counts.get("delivered"), Some(&6), "{counts:?}");
    let got = rx.got.lock().unwrap().clone();
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(ids.len(), 6, "every notification arrived");
    let key = webhook::decode_secret(&secret).unwrap();
    for (id, ts, sig, body) in &got {
        let now = ts.parse::<i64>().unwrap();
        webhook::verify(&key, id, ts, sig, body.as_bytes(), now).expect("signature verifies");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["notification_id"], id.as_str());
        assert!(json["type"].as_str().unwrap().starts_with("alert."));
    }
    assert!(*rx.attempts.lock().unwrap() >= 8, "the failures were retried");
    // The throttled delivery waited for its Retry-After (1 s), not the 100 ms schedule.
    let log = rx.log.lock().unwrap().clone();
    let throttled = log.iter().find(|(_, _, a)| matches!(a, Some(Act::Throttle))).unwrap();
    let retried = log.iter().filter(|(id, _, _)| *id == throttled.0).nth(1).unwrap();
    let waited = retried.1 - throttled.1;
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}");

    // 410 disables the endpoint; exhausted retries are dead letters that can be replayed.
    let (gone_addr, _gone) = receiver(&[Act::Gone]).await;
    let (flaky_addr, flaky) = receiver(&[Act::Fail, Act::Fail]).await;
    for (id, addr) in [("gone", gone_addr), ("flaky", flaky_addr)] {
        let s = Subscription {
            id: id.into(),
            name: id.into(),
            filter: Filter::default(),
            target: Target::Webhook { url: format!("http://{addr}/hook"), secrets: vec![secret.clone()] },
            grouping: None,
        };
        store.put_subscription("acme", &s, 0).await.unwrap();
    }
    p.process(0, &stream.batch(&[customer_signal("s11", "c4", 0.97, 1.0)])).await.unwrap();
    let d2 = deliverer(&store, "50ms");
    drain(&d2, Duration::from_secs(10)).await;
    let subs: BTreeMap<String, String> =
        store.subscriptions("acme").await.unwrap().into_iter().map(|(s, reason)| (s.id, reason)).collect();
    assert!(subs["gone"].contains("410"), "{subs:?}");
    let dead = store.dead_letters("acme", None).await.unwrap();
    let flaky_dead: Vec<_> = dead.iter().filter(|x| x.subscription_id == "flaky").collect();
    assert_eq!(flaky_dead.len(), 1, "{dead:?}");
    assert_eq!(flaky_dead[0].attempts, 2);
    assert!(flaky_dead[0].last_error.contains("HTTP 500"), "{:?}", flaky_dead[0]);
    // Replay takes the notification to every subscription it died at: the flaky one
    // (now answering) receives it; the disabled one dead-letters it again.
    assert_eq!(store.replay("acme", &flaky_dead[0].notification_id, 0).await.unwrap(), 2);
    drain(&d2, Duration::from_secs(10)).await;
    assert_eq!(flaky.got.lock().unwrap().len(), 1, "the replayed dead letter arrived");
    assert!(store.dead_letters("acme", Some("flaky")).await.unwrap().is_empty());
    let gone_dead = store.dead_letters("acme", Some("gone")).await.unwrap();
    assert_eq!(gone_dead.len(), 1);
    assert!(gone_dead[0].last_error.contains("disabled"), "{gone_dead:?}");
}

#[tokio::test]
async fn postgres_backend() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    conformance(AlertStore::connect(&db.url).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    conformance(AlertStore::connect(&format!("sqlite:{}", dir.path().join("a.db").display())).await.unwrap()).await;
}

#[tokio::test]
async fn redirects_are_not_followed_and_internal_targets_are_refused() {
    let (addr, _r) = receiver(&[Act::Redirect]).await;
    let guard = Guard::new("127.0.0.0/8").unwrap();
    let s = [webhook::new_secret()];
    let o = cxgap_alerting::delivery::deliver_webhook(
        &guard,
        &format!("http://{addr}/hook"),
        &s,
        "n1",
        "{}",
        Duration::from_secs(2),
    )
    .await;
    assert!(matches!(&o, Outcome::Failed { error, .. } if error.contains("redirects are not followed")), "{o:?}");
    let strict = Guard::default();
    let o = cxgap_alerting::delivery::deliver_webhook(
        &strict,
        &format!("http://{addr}/hook"),
        &s,
        "n1",
        "{}",
        Duration::from_secs(2),
    )
    .await;
    assert!(matches!(&o, Outcome::Dead { error } if error.contains("loopback")), "{o:?}");
}

#[tokio::test]
async fn grouping_sends_a_groups_notifications_together_and_spaces_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (store, p) = sqlite_processor(&dir).await;
    let mut stream = Stream { next: 0 };
    p.process(0, &stream.batch(&[customer_signal("s0", "c0", 0.1, 1.0)])).await.unwrap();
    // The first attempt of the first batch fails: its retry must be the same batch.
    let (addr, rx) = receiver(&[Act::Fail]).await;
    let secret = webhook::new_secret();
    let sub = Subscription {
        id: "grouped".into(),
        name: "grouped".into(),
        filter: Filter { kinds: vec!["risk_threshold".into()], ..Default::default() },
        target: Target::Webhook { url: format!("http://{addr}/hook"), secrets: vec![secret.clone()] },
        grouping: Some(cxgap_alerting::model::Grouping { by: vec!["rule".into()], wait_ms: 300, interval_ms: 1500 }),
    };
    store.put_subscription("acme", &sub, 0).await.unwrap();
    let three: Vec<pb::Signal> =
        (1..=3).map(|i| customer_signal(&format!("a{i}"), &format!("c{i}"), 0.9, 1.0)).collect();
    p.process(0, &stream.batch(&three)).await.unwrap();
    let d = deliverer(&store, "100ms,100ms");
    drain(&d, Duration::from_secs(10)).await;
    let two: Vec<pb::Signal> = (4..=5).map(|i| customer_signal(&format!("a{i}"), &format!("c{i}"), 0.9, 1.0)).collect();
    p.process(0, &stream.batch(&two)).await.unwrap();
    drain(&d, Duration::from_secs(10)).await;

    let log = rx.log.lock().unwrap().clone();
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "two requests: one per batch");
    assert_eq!(log.len(), 3, "plus the failed first attempt");
    assert_eq!(log[0].0, log[1].0, "the retry sends the same batch id");
    let key = webhook::decode_secret(&secret).unwrap();
    let mut sizes = Vec::new();
    for (id, ts, sig, body) in &got {
        webhook::verify(&key, id, ts, sig, body.as_bytes(), ts.parse().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["type"], "alert.group");
        assert_eq!(v["data"]["group"], "[rule=churn-risk-high]");
        sizes.push(v["data"]["notifications"].as_array().unwrap().len());
    }
    assert_eq!(sizes, [3, 2]);
    let gap = log[2].1 - log[1].1;
    assert!(gap >= Duration::from_millis(1400), "the second batch waited the group interval: {gap:?}");
    assert_eq!(store.delivery_counts().await.unwrap().get("delivered"), Some(&5));
}

#[tokio::test]
async fn a_touchpoint_wide_alert_inhibits_the_customer_alerts_it_explains() {
    let dir = tempfile::tempdir().unwrap();
    inhibition(sqlite_processor(&dir).await).await;
}

/// On PostgreSQL the batch reads the open alerts of all the touchpoints its signals name
/// in one keyed statement of its own.
#[tokio::test]
async fn a_touchpoint_wide_alert_inhibits_the_customer_alerts_it_explains_postgres() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    inhibition(processor(&db.url).await).await;
}

async fn inhibition((store, p): (AlertStore, Processor)) {
    let mut stream = Stream { next: 0 };
    let helpline = touchpoint_nps_collapsed("agg1", "helpline");
    p.process(
        0,
        &stream.batch(&[
            helpline,
            customer_signal_at("s1", "c1", "helpline"),
            customer_signal_at("s2", "c2", "checkout"),
        ]),
    )
    .await
    .unwrap();
    let log = store.notifications_after("acme", 0, 100).await.unwrap();
    let about = |c: &str| log.iter().find(|n| n.payload.contains(&format!("\"customer:{c}\""))).unwrap().clone();
    assert!(log.iter().any(|n| n.payload.contains("\"touchpoint:helpline\"") && n.silenced_by.is_empty()));
    assert!(about("c1").silenced_by.starts_with("inhibited:"), "{:?}", about("c1"));
    assert_eq!(about("c2").silenced_by, "", "another touchpoint's customer is told");

    // The checkout's NPS collapses too: c2's alert, told when it fired, is now at a
    // touchpoint with an open alert. An acknowledgement goes to whoever was told of the
    // firing: c2's is told, c1's (whose firing was muted) stays muted.
    let checkout = touchpoint_nps_collapsed("agg2", "checkout");
    p.process(0, &stream.batch(&[checkout])).await.unwrap();
    let log = store.notifications_after("acme", 0, 100).await.unwrap();
    assert!(log.iter().any(|n| n.payload.contains("\"touchpoint:checkout\"") && n.state == AlertState::Firing));
    let (c1, c2) =
        (about("c1").alert_id, log.iter().find(|n| n.payload.contains("\"customer:c2\"")).unwrap().alert_id.clone());
    store.act("acme", &c1, AlertState::Acknowledged, "ann", "", 10).await.unwrap();
    store.act("acme", &c2, AlertState::Acknowledged, "ann", "", 10).await.unwrap();
    let log = store.notifications_after("acme", 0, 100).await.unwrap();
    let ack = |id: &str| log.iter().find(|n| n.alert_id == id && n.state == AlertState::Acknowledged).unwrap().clone();
    assert!(ack(&c1).silenced_by.starts_with("inhibited:"), "{:?}", ack(&c1));
    assert_eq!(ack(&c2).silenced_by, "", "told of the firing, told of the acknowledgement: {:?}", ack(&c2));

    // Both touchpoints' alerts are stored now: one read finds each customer's own.
    let batch = [customer_signal_at("s3", "c3", "web"), customer_signal_at("s4", "c4", "checkout")];
    p.process(0, &stream.batch(&batch)).await.unwrap();
    let log = store.notifications_after("acme", 0, 100).await.unwrap();
    let checkout_alert = log.iter().find(|n| n.payload.contains("\"touchpoint:checkout\"")).unwrap().alert_id.clone();
    assert_eq!(about_in(&log, "c3").silenced_by, "", "no alert at the web touchpoint");
    assert_eq!(about_in(&log, "c4").silenced_by, format!("inhibited:{checkout_alert}"));
}

fn about_in(log: &[cxgap_alerting::store::Notification], customer: &str) -> cxgap_alerting::store::Notification {
    log.iter().find(|n| n.payload.contains(&format!("\"customer:{customer}\""))).unwrap().clone()
}

#[tokio::test]
async fn a_touchpoint_alert_raised_mid_batch_inhibits_the_customer_alerts_after_it() {
    // A batch reads a touchpoint's open alerts once (`BatchState`); the touchpoint's own
    // alert firing later in the same batch must be seen by the customer alerts after it.
    let dir = tempfile::tempdir().unwrap();
    let (store, p) = sqlite_processor(&dir).await;
    let mut stream = Stream { next: 0 };
    let at = |id: &str, customer: &str| customer_signal_at(id, customer, "helpline");
    let batch = [at("s1", "c1"), touchpoint_nps_collapsed("agg1", "helpline"), at("s2", "c2")];
    p.process(0, &stream.batch(&batch)).await.unwrap();
    let log = store.notifications_after("acme", 0, 100).await.unwrap();
    let about = |c: &str| log.iter().find(|n| n.payload.contains(&format!("\"customer:{c}\""))).unwrap().clone();
    assert_eq!(about("c1").silenced_by, "", "before the touchpoint's alert, c1 is told");
    assert!(about("c2").silenced_by.starts_with("inhibited:"), "{:?}", about("c2"));
}

/// Tenant acme's `touchpoint` NPS collapsed, window over window (70 responses each).
fn touchpoint_nps_collapsed(id: &str, touchpoint: &str) -> pb::Signal {
    use cxgap_domain::aggregate::CellAgg;
    let (mut cur, mut prev) = (CellAgg::default(), CellAgg::default());
    (cur.nps.detractors, cur.nps.promoters, cur.events) = (60, 10, 70);
    (prev.nps.detractors, prev.nps.promoters, prev.events) = (10, 60, 70);
    touchpoint_figures(id, touchpoint, &cur, &prev, Vec::new())
}

/// Tenant acme's 30-day figures of a touchpoint.
fn touchpoint_figures(
    id: &str,
    touchpoint: &str,
    current: &cxgap_domain::aggregate::CellAgg,
    previous: &cxgap_domain::aggregate::CellAgg,
    perception: Vec<pb::PerceptionFigure>,
) -> pb::Signal {
    pb::Signal {
        signal_id: id.into(),
        tenant_id: "acme".into(),
        emitted_at: None,
        body: Some(pb::signal::Body::Aggregate(pb::AggregateChanged {
            subject_kind: pb::SubjectKind::Touchpoint as i32,
            subject: touchpoint.into(),
            window_days: 30,
            current: current.to_row().unwrap().to_vec(),
            previous: previous.to_row().unwrap().to_vec(),
            perception,
            ..Default::default()
        })),
    }
}

/// Perception-gap alerts are per touchpoint and instrument (`touchpoint:helpline:nps`):
/// the next signal about the touchpoint finds them, so the gap that closes resolves its
/// alert and the one still open stays firing.
#[tokio::test]
async fn a_perception_gap_alert_resolves_when_its_instruments_gap_closes() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    let (store, p) = processor(&db.url).await;
    let mut stream = Stream { next: 0 };
    let state = |subject: &'static str| {
        let store = store.clone();
        async move {
            let alerts = store.alerts("acme", &[], 100, None).await.unwrap();
            let about: Vec<AlertState> = alerts.iter().filter(|a| a.subject == subject).map(|a| a.state).collect();
            assert!(about.len() <= 1, "one alert per subject: {alerts:?}");
            about.first().copied()
        }
    };
    p.process(0, &stream.batch(&[perception_gaps("agg1", &[("nps", 0.3), ("ces", 0.4)])])).await.unwrap();
    assert_eq!(state("touchpoint:helpline:nps").await, Some(AlertState::Firing));
    assert_eq!(state("touchpoint:helpline:ces").await, Some(AlertState::Firing));
    p.process(0, &stream.batch(&[perception_gaps("agg2", &[("nps", -0.1), ("ces", 0.4)])])).await.unwrap();
    assert_eq!(state("touchpoint:helpline:nps").await, Some(AlertState::Resolved));
    assert_eq!(state("touchpoint:helpline:ces").await, Some(AlertState::Firing));
}

/// Tenant acme's helpline with management's rating above customers' by a gap whose 95 %
/// interval starts at `lower`, per instrument (n = 50, above the default rule's 20).
fn perception_gaps(id: &str, gaps: &[(&str, f64)]) -> pb::Signal {
    use cxgap_proto::common as cpb;
    let perception = gaps
        .iter()
        .map(|&(instrument, lower)| pb::PerceptionFigure {
            instrument: instrument.into(),
            journey_stage: 0,
            internal: 0.9,
            customer: Some(cpb::Estimate { value: 0.5, n: 50, lower: 0.4, upper: 0.6 }),
            gap: Some(cpb::Estimate { value: lower + 0.1, n: 50, lower, upper: lower + 0.2 }),
        })
        .collect();
    let none = cxgap_domain::aggregate::CellAgg::default();
    touchpoint_figures(id, "helpline", &none, &none, perception)
}

/// A customer's stored risk history keeps only the points that can still be a window's
/// lowest, and a jump is judged from them as from every point: 0.5, 0.3, 0.5, 0.4 in
/// turn (none 25 points above an earlier one), then 0.45 and 0.7 in one batch, leave 0.3, 0.4, 0.45 and 0.7, and 0.7 fires the
/// jump rule as a rise of 40 points from 0.3.
async fn risk_history_stays_short(url: &str) {
    let store = AlertStore::connect(url).await.unwrap();
    let p = Processor {
        store: store.clone(),
        config: ProcessorConfig { group: "g".into(), topic: "signals".into(), repeat_ms: 3_600_000 },
    };
    let hour = 3_600;
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 86_400;
    let signal = |i: i64, risk: f64| {
        let mut s = customer_signal(&format!("j{i}"), "c7", risk, 10.0);
        s.emitted_at = Some(prost_types::Timestamp { seconds: start + i * hour, nanos: 0 });
        s
    };
    let mut stream = Stream { next: 0 };
    for (i, risk) in [0.5, 0.3, 0.5, 0.4].into_iter().enumerate() {
        p.process(0, &stream.batch(&[signal(i as i64, risk)])).await.unwrap();
    }
    assert!(store.alerts("acme", &[], 100, None).await.unwrap().iter().all(|a| a.rule_id != "churn-risk-jump"));
    p.process(0, &stream.batch(&[signal(4, 0.45), signal(5, 0.7)])).await.unwrap();

    let alerts = store.alerts("acme", &[AlertState::Firing], 100, None).await.unwrap();
    let jump = alerts.iter().find(|a| a.rule_id == "churn-risk-jump").expect("the jump fired");
    assert!(jump.summary.contains("rose 40 points to 70%"), "{}", jump.summary);
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let stored: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT at, risk FROM alerting_risk WHERE tenant_id = 'acme' AND customer_id = 'c7' ORDER BY at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let at = |i: i64| (start + i * hour) * 1000;
    assert_eq!(stored, [(at(1), 0.3), (at(3), 0.4), (at(4), 0.45), (at(5), 0.7)]);
    // Old points go with the periodic prune.
    assert_eq!(store.prune_risk(at(4)).await.unwrap(), 2);
}

/// A signal emitted out of order, as when partitions move to an analytics instance
/// whose clock is behind: 0.2 at 0 min and 0.1 at 3 min, each its own batch, then one
/// emitted at 1 min with 0.5. Its window holds the 0.2, so the jump fires as a rise of 30
/// points; had the stored history kept only what the later 0.1 leaves, it would not.
async fn late_signal_judged_against_its_window(url: &str) {
    let store = AlertStore::connect(url).await.unwrap();
    let p = Processor {
        store: store.clone(),
        config: ProcessorConfig { group: "g".into(), topic: "signals".into(), repeat_ms: 3_600_000 },
    };
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 86_400;
    let signal = |id: &str, minute: i64, risk: f64| {
        let mut s = customer_signal(id, "c8", risk, 10.0);
        s.emitted_at = Some(prost_types::Timestamp { seconds: start + minute * 60, nanos: 0 });
        s
    };
    let mut stream = Stream { next: 0 };
    p.process(0, &stream.batch(&[signal("l0", 0, 0.2)])).await.unwrap();
    p.process(0, &stream.batch(&[signal("l3", 3, 0.1)])).await.unwrap();
    assert!(store.alerts("acme", &[], 100, None).await.unwrap().iter().all(|a| a.rule_id != "churn-risk-jump"));
    p.process(0, &stream.batch(&[signal("l1", 1, 0.5)])).await.unwrap();

    let alerts = store.alerts("acme", &[AlertState::Firing], 100, None).await.unwrap();
    let jump = alerts.iter().find(|a| a.rule_id == "churn-risk-jump").expect("the late signal's jump fired");
    assert!(jump.summary.contains("rose 30 points to 50%"), "{}", jump.summary);
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let stored: Vec<(i64,)> =
        sqlx::query_as("SELECT at FROM alerting_risk WHERE tenant_id = 'acme' AND customer_id = 'c8' ORDER BY at")
            .fetch_all(&pool)
            .await
            .unwrap();
    let at = |minute: i64| ((start + minute * 60) * 1000,);
    assert_eq!(stored, [at(0), at(1), at(3)], "the last five minutes are kept whole");
}

#[tokio::test]
async fn late_signal_postgres() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    late_signal_judged_against_its_window(&db.url).await;
}

#[tokio::test]
async fn late_signal_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    late_signal_judged_against_its_window(&format!("sqlite:{}", dir.path().join("a.db").display())).await;
}

#[tokio::test]
async fn risk_history_postgres() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    risk_history_stays_short(&db.url).await;
}

#[tokio::test]
async fn risk_history_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    risk_history_stays_short(&format!("sqlite:{}", dir.path().join("a.db").display())).await;
}

/// Signals no rule can judge (a risk that is not a probability, a customer without an id, a
/// timestamp out of protobuf's range) are skipped and counted, one by one: the batch's valid
/// signals are applied and its offset moves on, so a faulty producer cannot stop the partition.
async fn invalid_signals_are_skipped(url: &str) {
    let (store, p) = processor(url).await;
    let mut stream = Stream { next: 0 };
    let with = |id: &str, edit: &dyn Fn(&mut pb::Signal, &mut pb::CustomerRiskChanged)| {
        let mut s = customer_signal(id, "bad", 0.9, 1.0);
        let mut body = match s.body.take() {
            Some(pb::signal::Body::Customer(c)) => c,
            _ => unreachable!(),
        };
        edit(&mut s, &mut body);
        s.body = Some(pb::signal::Body::Customer(body));
        s
    };
    let batch = [
        customer_signal("ok1", "c1", 0.9, 1.0),
        with("nan", &|_, c| c.risk = f64::NAN),
        with("above", &|_, c| c.risk = 1.5),
        with("below", &|_, c| c.previous_risk = Some(-0.1)),
        with("value", &|_, c| c.customer_value = Some(f64::INFINITY)),
        with("nobody", &|_, c| c.customer_id.clear()),
        with("when", &|s, _| s.emitted_at = Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 })),
        with("", &|_, _| ()),
        customer_signal("ok2", "c2", 0.95, 1.0),
    ];
    let stats = p.process(0, &stream.batch(&batch)).await.unwrap();
    assert_eq!((stats.records, stats.rejected, stats.signals), (9, 7, 2), "{stats:?}");
    let firing = store.alerts("acme", &[AlertState::Firing], 100, None).await.unwrap();
    let mut subjects: Vec<&str> =
        firing.iter().filter(|a| a.rule_id == "churn-risk-high").map(|a| a.subject.as_str()).collect();
    subjects.sort();
    assert_eq!(subjects, ["customer:c1", "customer:c2"]);
    // The offset moved past the whole batch: the next one follows on without a gap.
    let next = p.process(0, &stream.batch(&[customer_signal("ok3", "c3", 0.1, 1.0)])).await.unwrap();
    assert_eq!((next.records, next.signals, next.rejected), (1, 1, 0), "{next:?}");
}

#[tokio::test]
async fn invalid_signals_postgres() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    invalid_signals_are_skipped(&db.url).await;
}

#[tokio::test]
async fn invalid_signals_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    invalid_signals_are_skipped(&format!("sqlite:{}", dir.path().join("a.db").display())).await;
}

/// `signals` as records of `partition` from offset `from`.
fn on(partition: i32, from: i64, signals: &[pb::Signal]) -> Vec<Consumed> {
    signals
        .iter()
        .zip(from..)
        .map(|(s, offset)| Consumed {
            record: Record { topic: "signals".into(), key: vec![], payload: s.encode_to_vec(), headers: vec![] },
            partition,
            offset,
        })
        .collect()
}

/// Firing churn-risk alerts' subjects, sorted.
async fn firing(store: &AlertStore) -> Vec<String> {
    let mut subjects: Vec<String> = store
        .alerts("acme", &[AlertState::Firing], 100, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.rule_id == "churn-risk-high")
        .map(|a| a.subject)
        .collect();
    subjects.sort();
    subjects
}

/// Several partitions' batches in one transaction: every partition's offset moves and
/// every signal is evaluated; a gap in one partition fails the whole group and writes
/// nothing, after which the good partition applies on its own.
async fn grouped_partitions(url: &str) {
    let (store, p) = processor(url).await;
    let zero = on(0, 0, &[customer_signal("g1", "c1", 0.9, 50_000.0)]);
    let one = on(1, 0, &[customer_signal("g2", "c2", 0.95, 50_000.0), customer_signal("g3", "c3", 0.1, 1.0)]);
    let stats = p.process_group(&[(0, &zero), (1, &one)]).await.unwrap();
    assert_eq!((stats.records, stats.signals, stats.replayed), (3, 3, 0), "{stats:?}");
    assert_eq!(store.next_offset("g", "signals", 0).await.unwrap(), Some(1));
    assert_eq!(store.next_offset("g", "signals", 1).await.unwrap(), Some(2));
    assert_eq!(firing(&store).await, ["customer:c1", "customer:c2"]);

    // Partition 1 resumes at offset 5 where storage expects 2: a gap, so the group fails
    // and partition 0's signal, earlier in the same transaction, is not kept either.
    let zero = on(0, 1, &[customer_signal("g4", "c4", 0.99, 1.0)]);
    let one = on(1, 5, &[customer_signal("g5", "c5", 0.99, 1.0)]);
    let e = p.process_group(&[(0, &zero), (1, &one)]).await.unwrap_err();
    assert!(matches!(e, cxgap_alerting::store::StoreError::Gap(_)), "{e}");
    assert_eq!(store.next_offset("g", "signals", 0).await.unwrap(), Some(1));
    assert_eq!(store.next_offset("g", "signals", 1).await.unwrap(), Some(2));
    assert_eq!(firing(&store).await, ["customer:c1", "customer:c2"]);

    // On its own, as the consume loop then applies a refused group's partitions.
    let stats = p.process(0, &zero).await.unwrap();
    assert_eq!(stats.signals, 1);
    assert_eq!(store.next_offset("g", "signals", 0).await.unwrap(), Some(2));
    assert_eq!(firing(&store).await, ["customer:c1", "customer:c2", "customer:c4"]);
    // A group whose batches were all applied before is a replay: nothing moves.
    let stats = p.process_group(&[(0, &zero), (1, &on(1, 0, &[customer_signal("g2", "c2", 0.95, 50_000.0)]))]).await;
    assert_eq!(stats.unwrap().replayed, 2);
}

#[tokio::test]
async fn grouped_partitions_postgres() {
    let db = cxgap_testkit::TestDb::new().await.unwrap();
    grouped_partitions(&db.url).await;
}

#[tokio::test]
async fn grouped_partitions_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    grouped_partitions(&format!("sqlite:{}", dir.path().join("a.db").display())).await;
}
