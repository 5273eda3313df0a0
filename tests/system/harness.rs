//! The distributed deployment on one machine: a throwaway PostgreSQL server, a tansu
//! broker, the three services as separate `cxgap` processes on fixed loopback ports (so a
//! killed one comes back where clients expect it), a webhook receiver and a gRPC
//! subscriber that resumes from its cursor. Everything is torn down on drop.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cxgap_proto::alerting as apb;
use cxgap_proto::alerting::alerting_service_client::AlertingServiceClient;
use cxgap_proto::ingest as ipb;
use cxgap_proto::ingest::ingest_service_client::IngestServiceClient;
use cxgap_testkit::{Broker, PgServer, eventually, free_port};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

pub const PEPPER: &str = "system-test-pepper-0123456";
pub const PARTITIONS: u32 = 4;

/// The `cxgap` binary under test: `CXGAP_SYSTEM_BIN` (e.g. target/release/cxgap) or the
/// one cargo built for this test run.
pub fn binary() -> String {
    std::env::var("CXGAP_SYSTEM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cxgap").to_string())
}

pub fn today() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}-{:02}", now.year(), now.month() as u8, now.day())
}

/// One service process and the ports it keeps across restarts.
pub struct Service {
    pub kind: &'static str,
    pub http: u16,
    pub grpc: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Every run of this instance appends its log here, for the failure message.
    log: std::path::PathBuf,
}

impl Service {
    fn new(kind: &'static str, env: Vec<(String, String)>, logs: &std::path::Path) -> Service {
        let (http, grpc) = (free_port(), free_port());
        let log = logs.join(format!("{kind}-{http}.log"));
        Service { kind, http, grpc, env, child: None, log }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.kind);
        // Info from cxgap's own crates is a few lines per second: cheap to keep and what a
        // failed scenario needs to be diagnosed after the fact.
        let level = std::env::var("TESTKIT_LOG").unwrap_or_else(|_| "warn,cxgap=info".into());
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        use std::io::Write;
        let _ = writeln!(file, "==== cxgap {} starting", self.kind);
        let child = Command::new(binary())
            .arg(self.kind)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CXGAP_HTTP_ADDR", format!("127.0.0.1:{}", self.http))
            .env("CXGAP_GRPC_ADDR", format!("127.0.0.1:{}", self.grpc))
            .env("CXGAP_LOG_FORMAT", "plain")
            .env("CXGAP_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("starting cxgap {}: {e}", self.kind));
        self.child = Some(child);
    }

    /// The last `lines` lines of this instance's log (all its runs).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "---- {} ({}), last {} lines:\n{}",
            self.kind,
            self.log.display(),
            all.len() - from,
            all[from..].join("\n")
        )
    }

    /// SIGKILL: no drain, no goodbye — what a node failure or the OOM killer does.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn ready(&self) {
        let addr = format!("127.0.0.1:{}", self.http).parse().unwrap();
        eventually(Duration::from_secs(90), &format!("{} to be ready", self.kind), || async {
            let r = cxgap_testkit::http::request(addr, "GET", "/readyz", &[], b"").await.ok()?;
            (r.status == 200).then_some(())
        })
        .await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every webhook request, as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

#[derive(Default)]
pub struct Receiver {
    pub got: Mutex<Vec<Delivery>>,
}

async fn receive(State(r): State<Arc<Receiver>>, h: HeaderMap, body: String) -> StatusCode {
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    r.got.lock().unwrap().push(Delivery {
        id: get("webhook-id"),
        timestamp: get("webhook-timestamp"),
        signature: get("webhook-signature"),
        body,
    });
    StatusCode::OK
}

/// A gRPC subscriber that reconnects after any failure and resumes from its cursor.
pub struct Subscriber {
    pub got: Arc<Mutex<Vec<String>>>,
    pub reconnects: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct System {
    /// Holds the services' logs (their tails go into failure messages) until the end.
    _logs: tempfile::TempDir,
    pub pg: PgServer,
    pub db_url: String,
    pub broker: Broker,
    pub key: String,
    pub ingest: Service,
    pub analytics: Vec<Service>,
    pub alerting: Service,
    pub receiver: Arc<Receiver>,
    pub secret: String,
    pub subscriber: Option<Subscriber>,
}

pub fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

impl System {
    /// PostgreSQL, tansu, a tenant with a key, the three services, and the subscribers:
    /// a signed webhook, a Kafka topic and a gRPC stream (plus `audit`, a stream read from
    /// the start to learn what was notified).
    pub async fn start(analytics_instances: usize) -> System {
        let logs = tempfile::Builder::new().prefix("cxgap-system-").tempdir().unwrap();
        let pg = PgServer::start().expect("a throwaway PostgreSQL");
        let db_url = pg.create_database("cxgap").await.unwrap();
        let broker = Broker::start().unwrap();
        let tenants = cxgap_auth::TenantStore::connect(&db_url, PEPPER).await.unwrap();
        tenants.create_tenant("acme").await.unwrap();
        let key = tenants.create_key("acme", "system test").await.unwrap().1;
        drop(tenants);
        let common = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = vec![
                ("CXGAP_KAFKA_BROKERS".into(), broker.bootstrap()),
                ("CXGAP_DATABASE_URL".into(), db_url.clone()),
                ("CXGAP_API_KEY_PEPPER".into(), PEPPER.into()),
                ("CXGAP_TOPIC_PARTITIONS".into(), PARTITIONS.to_string()),
                ("CXGAP_KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into()),
            ];
            v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            v
        };
        let mut ingest = Service::new("ingest", common(&[("CXGAP_RATE_LIMIT_PER_SECOND", "100000")]), logs.path());
        ingest.start();
        ingest.ready().await;
        let mut analytics = Vec::new();
        for _ in 0..analytics_instances {
            let mut a = Service::new(
                "analytics",
                common(&[
                    ("CXGAP_BATCH_MAX_EVENTS", "100"),
                    ("CXGAP_BATCH_MAX_WAIT_MS", "50"),
                    ("CXGAP_SIGNAL_INTERVAL_MS", "500"),
                ]),
                logs.path(),
            );
            a.start();
            analytics.push(a);
        }
        for a in &analytics {
            a.ready().await;
        }
        let mut alerting = Service::new(
            "alerting",
            common(&[
                ("CXGAP_WEBHOOK_ALLOW", "127.0.0.0/8"),
                ("CXGAP_WEBHOOK_RETRY_SCHEDULE", "200ms,500ms,1s,2s,4s,8s,15s,30s"),
                ("CXGAP_WEBHOOK_TIMEOUT_MS", "2000"),
            ]),
            logs.path(),
        );
        alerting.start();
        alerting.ready().await;

        let receiver = Arc::new(Receiver::default());
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let secret = cxgap_alerting::webhook::new_secret();
        let mut sys = System {
            _logs: logs,
            pg,
            db_url,
            broker,
            key,
            ingest,
            analytics,
            alerting,
            receiver,
            secret: secret.clone(),
            subscriber: None,
        };
        use apb::subscription::Target as T;
        let mut api = sys.alerting_client().await;
        for (id, target) in [
            ("hook", T::Webhook(apb::WebhookTarget { url: hook, secrets: vec![secret] })),
            ("bus", T::Kafka(apb::KafkaTarget { topic: "cxgap.alerts.v1".into() })),
            ("stream", T::GrpcStream(apb::GrpcStreamTarget {})),
            ("audit", T::GrpcStream(apb::GrpcStreamTarget {})),
        ] {
            let sub = apb::Subscription {
                subscription_id: id.into(),
                name: id.into(),
                target: Some(target),
                ..Default::default()
            };
            api.create_subscription(authed(&sys.key, apb::CreateSubscriptionRequest { subscription: Some(sub) }))
                .await
                .unwrap();
        }
        sys.subscriber = Some(sys.subscribe("stream"));
        sys
    }

    pub async fn alerting_client(&self) -> AlertingServiceClient<Channel> {
        let url = format!("http://127.0.0.1:{}", self.alerting.grpc);
        eventually(Duration::from_secs(60), "the alerting gRPC API", || async {
            AlertingServiceClient::connect(url.clone()).await.ok()
        })
        .await
    }

    /// A stream subscriber that survives alerting restarts: it reconnects and resumes from
    /// the cursor of the last notification it got.
    fn subscribe(&self, subscription: &str) -> Subscriber {
        let got = Arc::new(Mutex::new(Vec::new()));
        let reconnects = Arc::new(AtomicU64::new(0));
        let (url, key, sub) = (format!("http://127.0.0.1:{}", self.alerting.grpc), self.key.clone(), subscription);
        let sub = sub.to_string();
        let (g, r) = (got.clone(), reconnects.clone());
        let task = tokio::spawn(async move {
            let mut cursor = "0".to_string();
            loop {
                if let Ok(mut api) = AlertingServiceClient::connect(url.clone()).await {
                    let req = apb::SubscribeRequest { subscription_id: sub.clone(), cursor: cursor.clone() };
                    if let Ok(resp) = api.subscribe(authed(&key, req)).await {
                        let mut stream = resp.into_inner();
                        while let Ok(Some(n)) = stream.message().await {
                            cursor = n.cursor.clone();
                            g.lock().unwrap().push(n.notification_id);
                        }
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Subscriber { got, reconnects, task }
    }

    /// Analytics has published every signal it decided (its outbox is empty) and alerting
    /// has consumed every record of the signals topic (its stored offsets reach the end
    /// of each partition, read from the broker until quiet).
    pub async fn settled(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        loop {
            let state = self.catch_up_state().await;
            if state.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "analytics and alerting did not catch up: {state}\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The end of every service's log, for a failure message.
    pub fn log_tails(&self) -> String {
        let mut out: Vec<String> = vec![self.ingest.log_tail(40)];
        out.extend(self.analytics.iter().map(|a| a.log_tail(60)));
        out.push(self.alerting.log_tail(150));
        out.join("\n")
    }

    /// What is still outstanding, or empty when caught up.
    async fn catch_up_state(&self) -> String {
        let pool = match sqlx::PgPool::connect(&self.db_url).await {
            Ok(p) => p,
            Err(e) => return format!("database: {e}"),
        };
        let pending: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM analytics_outbox").fetch_one(&pool).await;
        let offsets: Result<Vec<(i64, i64)>, _> =
            sqlx::query_as("SELECT partition_id, next_offset FROM alerting_offsets WHERE topic = 'cxgap.signals.v1'")
                .fetch_all(&pool)
                .await;
        let seen: Result<Vec<String>, _> =
            sqlx::query_scalar("SELECT signal_id FROM alerting_signals_seen").fetch_all(&pool).await;
        pool.close().await;
        let (Ok(pending), Ok(offsets), Ok(seen)) = (pending, offsets, seen) else {
            return "database query failed".into();
        };
        if pending > 0 {
            return format!("{pending} signals not yet published by analytics");
        }
        let records = match self.broker.fetch_all("cxgap.signals.v1") {
            Ok(r) => r,
            Err(e) => return format!("reading the signals topic: {e}"),
        };
        let mut end = std::collections::BTreeMap::new();
        for r in &records {
            let e = end.entry(i64::from(r.partition)).or_insert(0);
            *e = (*e).max(r.offset + 1);
        }
        let behind: Vec<_> = end
            .iter()
            .filter(|(p, e)| !offsets.iter().any(|(op, next)| op == *p && next >= *e))
            .map(|(p, e)| (*p, *e, offsets.iter().find(|(op, _)| op == p).map(|x| x.1)))
            .collect();
        if !behind.is_empty() {
            return format!("alerting behind on (partition, end, stored) {behind:?}");
        }
        // Every signal was evaluated, not just every offset passed.
        let seen: BTreeSet<String> = seen.into_iter().collect();
        let missed: Vec<(i32, i64)> = records
            .iter()
            .filter(|r| {
                !r.header(cxgap_bus::headers::ID).is_some_and(|id| seen.contains(String::from_utf8_lossy(id).as_ref()))
            })
            .map(|r| (r.partition, r.offset))
            .collect();
        if !missed.is_empty() {
            return format!("{} signals on the topic never evaluated, at {missed:?}", missed.len());
        }
        String::new()
    }

    /// Every notification the alerting service decided, from its ordered log (read from
    /// the start), once analytics and alerting have caught up and the log stopped growing.
    pub async fn notified(&self) -> BTreeSet<String> {
        self.settled().await;
        let mut last = BTreeSet::new();
        let mut stable = 0;
        loop {
            let mut api = self.alerting_client().await;
            let req = apb::SubscribeRequest { subscription_id: "audit".into(), cursor: "0".into() };
            let mut stream = api.subscribe(authed(&self.key, req)).await.unwrap().into_inner();
            let mut now = BTreeSet::new();
            while let Ok(Ok(Some(n))) = tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                now.insert(n.notification_id);
            }
            if !now.is_empty() && now == last {
                stable += 1;
                if stable == 2 {
                    return now;
                }
            } else {
                stable = 0;
            }
            last = now;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Checks that each subscriber got every notification of `expected` (at least once),
    /// that webhook signatures verify and duplicates repeat the same body. Returns the
    /// duplicate deliveries seen (webhook, Kafka, stream).
    pub async fn assert_delivered(&self, expected: &BTreeSet<String>) -> (usize, usize, usize) {
        let key = cxgap_alerting::webhook::decode_secret(&self.secret).unwrap();
        let hook = eventually(Duration::from_secs(120), "every notification at the webhook", || async {
            let got = self.receiver.got.lock().unwrap().clone();
            let ids: BTreeSet<String> = got.iter().map(|d| d.id.clone()).collect();
            expected.is_subset(&ids).then_some(got)
        })
        .await;
        let mut bodies = std::collections::BTreeMap::new();
        for d in &hook {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let ts: i64 = d.timestamp.parse().unwrap();
            cxgap_alerting::webhook::verify(&key, &d.id, &d.timestamp, &d.signature, d.body.as_bytes(), ts)
                .unwrap_or_else(|e| panic!("signature of {}: {e}", d.id));
            assert!((now - ts).abs() < 600, "the signed timestamp is current");
            if let Some(before) = bodies.insert(d.id.clone(), d.body.clone()) {
                assert_eq!(before, d.body, "a duplicate delivery carries the same notification");
            }
        }
        let on_topic = eventually(Duration::from_secs(120), "every notification on cxgap.alerts.v1", || async {
            let got = self.broker.fetch_all("cxgap.alerts.v1").ok()?;
            let ids: Vec<String> = got
                .iter()
                .filter_map(|r| r.header(cxgap_bus::headers::ID).map(|h| String::from_utf8_lossy(h).into_owned()))
                .collect();
            let set: BTreeSet<String> = ids.iter().cloned().collect();
            expected.is_subset(&set).then_some(ids)
        })
        .await;
        let sub = self.subscriber.as_ref().unwrap();
        let streamed = eventually(Duration::from_secs(120), "every notification on the gRPC stream", || async {
            let got = sub.got.lock().unwrap().clone();
            let set: BTreeSet<String> = got.iter().cloned().collect();
            expected.is_subset(&set).then_some(got)
        })
        .await;
        let dups = |ids: &[String]| ids.len() - ids.iter().collect::<BTreeSet<_>>().len();
        let hook_ids: Vec<String> = hook.iter().map(|d| d.id.clone()).collect();
        (dups(&hook_ids), dups(&on_topic), dups(&streamed))
    }

    /// The report analytics serves over HTTP (any instance that answers).
    pub async fn report(&self) -> Option<Value> {
        let auth = format!("Bearer {}", self.key);
        for a in &self.analytics {
            let addr = format!("127.0.0.1:{}", a.http).parse().unwrap();
            let path = format!("/v1/report?window=all&as_of={}", today());
            if let Ok(r) = cxgap_testkit::http::request(addr, "GET", &path, &[("authorization", &auth)], b"").await
                && r.status == 200
            {
                return Some(r.json());
            }
        }
        None
    }

    /// Waits until the served report counts `events`, then returns it.
    pub async fn report_with(&self, events: u64) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        let mut last = None;
        loop {
            if let Some(r) = self.report().await {
                if r["overall"]["events"].as_u64() == Some(events) {
                    return r;
                }
                last = r["overall"]["events"].as_u64();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the report to count {events} events; it counts {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl System {
    /// Where the acknowledged events that analytics has not applied are: their partition
    /// and offset on the feedback topic, next to the offsets analytics stored. For the
    /// failure message of a test that lost something.
    pub async fn explain_missing(&self, acknowledged: &BTreeSet<String>) -> String {
        let Ok(pool) = sqlx::PgPool::connect(&self.db_url).await else { return "database unreachable".into() };
        let applied: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM analytics_processed").fetch_all(&pool).await.unwrap_or_default();
        let offsets: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT partition_id, next_offset FROM analytics_offsets WHERE topic = 'cxgap.feedback.v1' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        let applied: BTreeSet<String> = applied.into_iter().collect();
        let missing: BTreeSet<&String> = acknowledged.difference(&applied).collect();
        let on_topic = self.broker.fetch_all("cxgap.feedback.v1").unwrap_or_default();
        let mut located: Vec<(i32, i64, String)> = on_topic
            .iter()
            .filter_map(|r| {
                let id = String::from_utf8_lossy(r.header(cxgap_bus::headers::ID)?).into_owned();
                missing.contains(&id).then_some((r.partition, r.offset, id))
            })
            .collect();
        located.sort();
        format!(
            "{} acknowledged events not applied; on the topic at {:?}; analytics' stored offsets {:?}; topic holds {} records\n{}",
            missing.len(),
            located,
            offsets,
            on_topic.len(),
            self.log_tails()
        )
    }
}

/// What `cxgap analyze` computes offline from the events as JSON lines.
pub fn ground_truth(events: &[Value]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acknowledged.jsonl");
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let out = Command::new(binary())
        .args(["analyze", file.to_str().unwrap(), "--format", "json", "--window", "all", "--as-of", &today()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["report"].clone()
}

/// SplitMix64 of (seed, i): the same run, the same events.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const CHANNELS: [&str; 10] =
    ["SURVEY", "EMAIL", "CHAT", "PHONE", "SOCIAL", "REVIEW", "IN_STORE", "WEB", "MOBILE_APP", "SUPPORT_TICKET"];
const STAGES: [&str; 9] =
    ["AWARENESS", "CONSIDERATION", "PURCHASE", "DELIVERY", "ONBOARDING", "USAGE", "SUPPORT", "BILLING", "RENEWAL"];

const TOUCHPOINTS: [&str; 5] = ["checkout", "helpline", "app", "invoice", "delivery"];

/// Feedback event `i` of a run, uniquely identified, over the last 58 days, from 300
/// customers in three regions. APAC turns sour in the last 30 days (a segment NPS drop
/// the significance rule must find); detractors with a complaint and high value are hot.
pub fn event(run: &str, seed: u64, i: u64) -> Value {
    let r = |k: u64| mix(seed, i * 16 + k);
    let customer = r(0) % 300;
    let region = ["apac", "emea", "amer"][(customer % 3) as usize];
    let tier = ["smb", "mid", "enterprise", "smb"][(customer % 4) as usize];
    let days_ago = 1 + r(1) % 58;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let at = now - (days_ago as i64) * 86_400 - (r(2) % 36_000) as i64;
    let at = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
    let occurred = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        at.month() as u8,
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let sour = region == "apac" && days_ago <= 29;
    let nps = if sour { r(3) % 7 } else { 5 + r(3) % 6 };
    let mut e = json!({
        "event_id": format!("{run}-{i:06}"),
        "customer_id": format!("C{customer:03}"),
        "channel": CHANNELS[(r(4) % 10) as usize],
        "journey_stage": STAGES[(r(5) % 9) as usize],
        "touchpoint": TOUCHPOINTS[(r(6) % 5) as usize],
        "occurred_at": occurred,
        "nps": nps,
        "csat": 1 + (nps / 2).min(4),
        "customer_value": 1000 + (customer % 10) * 3000,
        "segment": {"region": region, "tier": tier},
    });
    if nps <= 3 && r(7) % 3 == 0 {
        e["comment"] = json!("Terrible support, still waiting and nobody calls back");
    } else if nps >= 9 && r(7) % 3 == 0 {
        e["comment"] = json!("Great service, quick and friendly");
    }
    if r(8) % 4 == 0 {
        e["promised_wait_seconds"] = json!(300);
        e["wait_seconds"] = json!(60 + r(9) % 600);
    }
    e
}

pub fn to_pb(e: &Value) -> cxgap_proto::common::FeedbackEvent {
    let now = cxgap_domain::Timestamp(time::OffsetDateTime::now_utc().unix_timestamp() * 1000);
    let text = e.to_string();
    let ev = cxgap_import::json::Record::parse(text.as_bytes())
        .expect("serde_json writes JSON")
        .decode::<cxgap_import::Feedback>(now)
        .unwrap_or_else(|v| panic!("the generator made an invalid event {e}: {v}"));
    cxgap_proto::convert::feedback_to_pb(&ev, "", now)
}

/// What a producer saw: every event it tried to send (retries included) and the ones the
/// service acknowledged (accepted, or already there).
#[derive(Debug, Default, Clone)]
pub struct Produced {
    pub sent: u64,
    pub acknowledged: BTreeSet<String>,
    pub failed_calls: u64,
}

/// Streams `events` over gRPC in batches, each retried until acknowledged, like a client
/// that must not lose feedback. `progress` counts acknowledged events as they go.
pub async fn produce(
    sys_url: String,
    key: String,
    events: Vec<Value>,
    batch: usize,
    pace: Duration,
    progress: Arc<AtomicU64>,
) -> Produced {
    let mut out = Produced::default();
    let mut client: Option<IngestServiceClient<Channel>> = None;
    for chunk in events.chunks(batch) {
        let pbs: Vec<_> = chunk.iter().map(to_pb).collect();
        loop {
            if client.is_none() {
                let endpoint = tonic::transport::Endpoint::from_shared(sys_url.clone())
                    .unwrap()
                    .connect_timeout(Duration::from_secs(2));
                client = endpoint.connect().await.ok().map(IngestServiceClient::new);
            }
            let Some(c) = client.as_mut() else {
                out.failed_calls += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            out.sent += pbs.len() as u64;
            let req = authed(&key, ipb::SubmitFeedbackBatchRequest { events: pbs.clone(), atomic: false });
            match tokio::time::timeout(Duration::from_secs(20), c.submit_feedback_batch(req)).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    assert!(r.rejected.is_empty(), "valid events refused: {:?}", r.rejected);
                    for e in chunk {
                        out.acknowledged.insert(e["event_id"].as_str().unwrap().to_string());
                    }
                    progress.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    break;
                }
                _ => {
                    out.failed_calls += 1;
                    client = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        tokio::time::sleep(pace).await;
    }
    out
}
