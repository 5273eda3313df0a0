//! `cxgap alerting` as a real process on loopback, fed signals through the real broker:
//! a webhook receiver that is down while alerts are decided receives every notification,
//! with a verifiable signature, after the service is SIGKILLed and restarted; a gRPC
//! subscriber that reconnects with its cursor misses nothing; a condition that stays true
//! is one alert; acknowledgements notify; silenced alerts are not delivered.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cxgap_alerting::webhook;
use cxgap_auth::TenantStore;
use cxgap_bus::kafka::{KafkaConfig, KafkaPublisher};
use cxgap_bus::{Publisher, Record, TopicSpec, headers};
use cxgap_proto::alerting as apb;
use cxgap_proto::alerting::alerting_service_client::AlertingServiceClient;
use cxgap_proto::signals as spb;
use cxgap_testkit::{Broker, TestDb, eventually, free_port};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

const PEPPER: &str = "alerting-test-pepper-01234";

/// What the receiver does with its next requests once up; then 200.
#[derive(Debug, Clone, Copy)]
enum Act {
    Throttle,
    Hang,
    Gone,
}

#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    script: Mutex<std::collections::VecDeque<Act>>,
    refused: Mutex<usize>,
    /// webhook-id → (timestamp, signature, body), every delivery kept.
    got: Mutex<Vec<(String, String, String, String)>>,
}

async fn receive(State(r): State<Arc<Receiver>>, h: HeaderMap, body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !r.up.load(Ordering::SeqCst) {
        *r.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let act = r.script.lock().unwrap().pop_front();
    match act {
        Some(Act::Throttle) => return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
        Some(Act::Hang) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return StatusCode::OK.into_response();
        }
        Some(Act::Gone) => return StatusCode::GONE.into_response(),
        None => {}
    }
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    r.got.lock().unwrap().push((get("webhook-id"), get("webhook-timestamp"), get("webhook-signature"), body));
    StatusCode::OK.into_response()
}

fn alerting(broker: &Broker, db: &TestDb, grpc: u16, http: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .arg("alerting")
        .env("CXGAP_KAFKA_BROKERS", broker.bootstrap())
        .env("CXGAP_DATABASE_URL", &db.url)
        .env("CXGAP_API_KEY_PEPPER", PEPPER)
        .env("CXGAP_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("CXGAP_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("CXGAP_TOPIC_PARTITIONS", "2")
        .env("CXGAP_KAFKA_SESSION_TIMEOUT_MS", "6000")
        .env("CXGAP_WEBHOOK_ALLOW", "127.0.0.0/8")
        .env("CXGAP_WEBHOOK_RETRY_SCHEDULE", "300ms,500ms,1s,2s,4s,8s,15s,30s")
        .env("CXGAP_WEBHOOK_TIMEOUT_MS", "1000")
        .env("CXGAP_LOG_FORMAT", "plain")
        .env("CXGAP_LOG", std::env::var("TESTKIT_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(if std::env::var("TESTKIT_LOG").is_ok() { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .unwrap()
}

fn signal(tenant: &str, id: &str, customer: &str, risk: f64) -> Record {
    let s = spb::Signal {
        signal_id: id.into(),
        tenant_id: tenant.into(),
        emitted_at: Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 }),
        body: Some(spb::signal::Body::Customer(spb::CustomerRiskChanged {
            customer_id: customer.into(),
            risk,
            customer_value: Some(25_000.0),
            segment: [("tier".to_string(), "gold".to_string())].into(),
            ..Default::default()
        })),
    };
    Record {
        topic: "cxgap.signals.v1".into(),
        key: format!("{tenant}/{customer}").into_bytes(),
        payload: s.encode_to_vec(),
        headers: vec![(headers::ID.into(), id.as_bytes().to_vec())],
    }
}

fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

async fn client(grpc: u16) -> AlertingServiceClient<Channel> {
    eventually(Duration::from_secs(30), "the alerting gRPC API", || async {
        AlertingServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await.ok()
    })
    .await
}

/// Reads `n` notifications from a Subscribe stream; returns (id, cursor) pairs.
async fn read_stream(stream: &mut tonic::Streaming<apb::Notification>, n: usize) -> Vec<(String, String, i32)> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.message()).await;
        let m = next.expect("a notification in time").expect("stream healthy").expect("stream open");
        out.push((m.notification_id, m.cursor, m.state));
    }
    out
}

#[tokio::test]
async fn every_notification_reaches_every_subscriber_across_a_sigkill() {
    let broker = Broker::start().unwrap();
    broker.create_topic("cxgap.signals.v1", 2).await.unwrap();
    let db = TestDb::new().await.unwrap();
    let tenants = TenantStore::connect(&db.url, PEPPER).await.unwrap();
    let tenant = tenants.create_tenant("acme").await.unwrap().tenant_id;
    let key = tenants.create_key("acme", "").await.unwrap().1;

    let rx = Arc::new(Receiver::default());
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (grpc, http) = (free_port(), free_port());
    let mut service = alerting(&broker, &db, grpc, http);
    let mut api = client(grpc).await;
    let secret = webhook::new_secret();
    let sub = |id: &str, target| apb::Subscription {
        subscription_id: id.into(),
        name: id.into(),
        target: Some(target),
        ..Default::default()
    };
    use apb::subscription::Target as T;
    api.create_subscription(authed(
        &key,
        apb::CreateSubscriptionRequest {
            subscription: Some(sub(
                "hook",
                T::Webhook(apb::WebhookTarget { url: hook, secrets: vec![secret.clone()] }),
            )),
        },
    ))
    .await
    .unwrap();
    api.create_subscription(authed(
        &key,
        apb::CreateSubscriptionRequest { subscription: Some(sub("stream", T::GrpcStream(apb::GrpcStreamTarget {}))) },
    ))
    .await
    .unwrap();
    api.create_subscription(authed(
        &key,
        apb::CreateSubscriptionRequest {
            subscription: Some(sub("bus", T::Kafka(apb::KafkaTarget { topic: "cxgap.alerts.v1".into() }))),
        },
    ))
    .await
    .unwrap();
    // Bad input is refused with the reason.
    let bad = api
        .create_subscription(authed(
            &key,
            apb::CreateSubscriptionRequest {
                subscription: Some(sub(
                    "bad",
                    T::Webhook(apb::WebhookTarget { url: "ftp://x/".into(), secrets: vec![secret.clone()] }),
                )),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("http or https"), "{bad:?}");
    let mut stream = api
        .subscribe(authed(&key, apb::SubscribeRequest { subscription_id: "stream".into(), cursor: String::new() }))
        .await
        .unwrap()
        .into_inner();

    // Ten customers cross the threshold; five recover; one stays high across twenty
    // signals (and a signal is published twice). The receiver is down throughout.
    let publisher = KafkaPublisher::new(KafkaConfig::new(broker.bootstrap())).unwrap();
    publisher
        .ensure_topics(&[TopicSpec { name: "cxgap.signals.v1".into(), partitions: 2, replication: 1 }])
        .await
        .unwrap();
    let mut records: Vec<Record> = (0..10).map(|i| signal(&tenant, &format!("a{i}"), &format!("c{i}"), 0.9)).collect();
    records.extend((0..5).map(|i| signal(&tenant, &format!("b{i}"), &format!("c{i}"), 0.3)));
    records.extend((0..20).map(|i| signal(&tenant, &format!("h{i}"), "c5", 0.95)));
    records.push(signal(&tenant, "a7", "c7", 0.9));
    for r in publisher.publish(records).await {
        r.unwrap();
    }
    const EXPECTED: usize = 15; // 10 fired + 5 resolved; c5 staying high adds nothing
    let first = read_stream(&mut stream, 5).await;
    let store = cxgap_alerting::store::AlertStore::connect(&db.url).await.unwrap();
    eventually(Duration::from_secs(60), "every alert change decided", || async {
        (store.notifications_after(&tenant, 0, 1000).await.ok()?.len() == EXPECTED).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "deliveries attempted against the receiver that is down", || async {
        (*rx.refused.lock().unwrap() >= 3).then_some(())
    })
    .await;

    // Decided but not delivered: kill the service, bring the receiver up, restart.
    Command::new("kill").args(["-KILL", &service.id().to_string()]).status().unwrap();
    let _ = service.wait();
    drop(stream);
    let pending = store.delivery_counts().await.unwrap();
    // The webhook's fifteen wait in the outbox (Kafka deliveries may be done or not).
    assert!(pending.get("pending").copied().unwrap_or(0) >= EXPECTED as i64, "{pending:?}");
    assert!(rx.got.lock().unwrap().is_empty(), "nothing reached the webhook before the kill");
    // Up again, it still throttles once (Retry-After: 1) and hangs once past the timeout.
    rx.script.lock().unwrap().extend([Act::Throttle, Act::Hang]);
    rx.up.store(true, Ordering::SeqCst);
    let mut service = alerting(&broker, &db, grpc, http);
    let mut api = client(grpc).await;
    let ids = eventually(Duration::from_secs(90), "every notification at the webhook", || async {
        let got = rx.got.lock().unwrap();
        let ids: BTreeSet<String> = got.iter().map(|g| g.0.clone()).collect();
        (ids.len() == EXPECTED).then_some(ids)
    })
    .await;
    let ids_at_hook = || ids.clone();
    let keyb = webhook::decode_secret(&secret).unwrap();
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    for (id, ts, sig, body) in rx.got.lock().unwrap().iter() {
        webhook::verify(&keyb, id, ts, sig, body.as_bytes(), ts.parse().unwrap()).expect("valid signature");
        if let Some(before) = bodies.insert(id.clone(), body.clone()) {
            assert_eq!(&before, body, "a duplicate delivery carries the same notification");
        }
    }
    let c5 = bodies.values().filter(|b| b.contains("\"customer:c5\"")).count();
    assert_eq!(c5, 1, "a condition that stays true is one notification");

    // The Kafka subscription has each notification on cxgap.alerts.v1, keyed by alert id.
    let on_topic = eventually(Duration::from_secs(60), "every notification on cxgap.alerts.v1", || async {
        let got = broker.fetch_all("cxgap.alerts.v1").ok()?;
        let ids: BTreeSet<String> =
            got.iter().filter_map(|r| r.header(headers::ID).map(|h| String::from_utf8_lossy(h).into_owned())).collect();
        (ids == ids_at_hook()).then_some(got)
    })
    .await;
    for r in &on_topic {
        let body: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(r.key, body["data"]["alert_id"].as_str().unwrap().as_bytes());
    }

    // The stream resumes from the cursor it had: the other ten arrive, none twice.
    let cursor = first.last().unwrap().1.clone();
    let mut stream = api
        .subscribe(authed(&key, apb::SubscribeRequest { subscription_id: "stream".into(), cursor }))
        .await
        .unwrap()
        .into_inner();
    let rest = read_stream(&mut stream, EXPECTED - first.len()).await;
    let streamed: BTreeSet<String> = first.iter().chain(&rest).map(|x| x.0.clone()).collect();
    assert_eq!(streamed, ids, "the stream saw exactly what the webhook saw");

    // Acknowledge c5's alert: subscribers hear it; acknowledging again is refused.
    let alerts = api
        .list_alerts(authed(
            &key,
            apb::ListAlertsRequest { states: vec![apb::AlertState::Firing as i32], ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(alerts.len(), 5, "c5–c9 still firing");
    let c5_alert = alerts.iter().find(|a| a.subject == "customer:c5").unwrap();
    let acked = api
        .acknowledge_alert(authed(
            &key,
            apb::AcknowledgeAlertRequest {
                alert_id: c5_alert.alert_id.clone(),
                by: "ana".into(),
                note: "calling".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.state, apb::AlertState::Acknowledged as i32);
    assert_eq!(acked.history.len(), 2);
    let again = api
        .acknowledge_alert(authed(
            &key,
            apb::AcknowledgeAlertRequest { alert_id: c5_alert.alert_id.clone(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    let ack = read_stream(&mut stream, 1).await;
    assert_eq!(ack[0].2, apb::AlertState::Acknowledged as i32);

    // An endpoint that answers 410 Gone gets its subscription disabled, with the reason.
    let gone = Arc::new(Receiver { up: AtomicBool::new(true), ..Default::default() });
    gone.script.lock().unwrap().push_back(Act::Gone);
    let gone_app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(gone.clone());
    let gone_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_url = format!("http://{}/hook", gone_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(gone_listener, gone_app).await });
    api.create_subscription(authed(
        &key,
        apb::CreateSubscriptionRequest {
            subscription: Some(sub(
                "gone",
                T::Webhook(apb::WebhookTarget { url: gone_url, secrets: vec![secret.clone()] }),
            )),
        },
    ))
    .await
    .unwrap();

    // A silence mutes c20; c21, published after it, is delivered — c20 never is.
    let silence = apb::Silence {
        matchers: vec![apb::Matcher { label: "customer".into(), value: "c20".into(), ..Default::default() }],
        ends_at: Some(prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 }),
        created_by: "ops".into(),
        ..Default::default()
    };
    api.create_silence(authed(&key, apb::CreateSilenceRequest { silence: Some(silence) })).await.unwrap();
    for r in publisher.publish(vec![signal(&tenant, "s20", "c20", 0.9), signal(&tenant, "s21", "c21", 0.9)]).await {
        r.unwrap();
    }
    let next = read_stream(&mut stream, 1).await;
    eventually(Duration::from_secs(30), "c21 at the webhook", || async {
        rx.got.lock().unwrap().iter().any(|g| g.3.contains("\"customer:c21\"")).then_some(())
    })
    .await;
    assert!(!rx.got.lock().unwrap().iter().any(|g| g.3.contains("\"customer:c20\"")), "silenced");
    let firing_now = api
        .list_alerts(authed(
            &key,
            apb::ListAlertsRequest { states: vec![apb::AlertState::Firing as i32], ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert!(firing_now.iter().any(|a| a.subject == "customer:c20"), "a silenced alert still exists");
    assert_ne!(next[0].0, "", "the stream got c21");
    let subs = eventually(Duration::from_secs(30), "the 410 endpoint's subscription disabled", || async {
        let list =
            api.clone().list_subscriptions(authed(&key, apb::ListSubscriptionsRequest {})).await.ok()?.into_inner();
        let g = list.subscriptions.into_iter().find(|s| s.subscription_id == "gone")?;
        g.disabled.then_some(g)
    })
    .await;
    assert!(subs.disabled_reason.contains("410"), "{subs:?}");
    let dead = api
        .list_dead_letters(authed(&key, apb::ListDeadLettersRequest { subscription_id: "gone".into() }))
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(dead.len(), 1, "the c21 notification is a dead letter for the gone endpoint");

    // Rules from a declarative file through the CLI; a bad file names the rule and field.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cxgap"))
            .args(args)
            .env("CXGAP_ALERTING_URL", format!("http://127.0.0.1:{grpc}"))
            .env("CXGAP_API_KEY", &key)
            .output()
            .unwrap()
    };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/rules.yaml");
    let out = cli(&["rules", "apply", example, "--prune"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = cli(&["rules", "list", "--format", "yaml"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("helpline-sla-surge") && listed.contains("fire_at: 0.75"), "{listed}");
    assert!(!listed.contains("perception-gap"), "--prune deleted the rules the file does not name");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "rules:\n- id: x y\n  name: n\n  severity: warning\n  kind: risk_threshold\n  fire_at: 0.5\n  clear_at: 0.9\n",
    )
    .unwrap();
    let out = cli(&["rules", "apply", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("rule 1 (\"x y\")") && err.contains("clear_at"), "{err}");
    service.kill().unwrap();
    let _ = service.wait();
}
