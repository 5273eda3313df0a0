//! Feedback through ingest, the topic and `cxgap analytics` (a real process): the report
//! it serves equals what `cxgap analyze` computes offline on the same events, with
//! duplicates and disorder on the topic, and after the analytics process is SIGKILLed
//! mid-stream and restarted.

use cxgap_auth::TenantStore;
use cxgap_testkit::{Broker, TestDb, eventually, free_port};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PEPPER: &str = "pipeline-test-pepper-0123";
const AS_OF: &str = "2026-08-30";

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/feedback.csv")
}

struct Pipeline {
    broker: Broker,
    db: TestDb,
    ingest: Vec<(SocketAddr, cxgap_runtime::Shutdown)>,
    key: String,
    other_key: String,
    tenant: String,
}

async fn ingest_instance(broker: &Broker, db: &TestDb) -> (SocketAddr, cxgap_runtime::Shutdown) {
    let settings: BTreeMap<String, String> = [
        ("CXGAP_KAFKA_BROKERS", broker.bootstrap()),
        ("CXGAP_DATABASE_URL", db.url.clone()),
        ("CXGAP_API_KEY_PEPPER", PEPPER.to_string()),
        ("CXGAP_GRPC_ADDR", "127.0.0.1:0".into()),
        ("CXGAP_HTTP_ADDR", "127.0.0.1:0".into()),
        ("CXGAP_TOPIC_PARTITIONS", "4".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let app = cxgap_ingest::App::build(cxgap_ingest::IngestConfig::load(&settings).unwrap()).await.unwrap();
    let addr = app.http_addr();
    let stop = cxgap_runtime::Shutdown::new();
    tokio::spawn(app.run(stop.clone()));
    (addr, stop)
}

impl Pipeline {
    async fn start() -> Pipeline {
        let broker = Broker::start().unwrap();
        let db = TestDb::new().await.unwrap();
        let tenants = TenantStore::connect(&db.url, PEPPER).await.unwrap();
        let tenant = tenants.create_tenant("acme").await.unwrap().tenant_id;
        tenants.create_tenant("globex").await.unwrap();
        let key = tenants.create_key("acme", "").await.unwrap().1;
        let other_key = tenants.create_key("globex", "").await.unwrap().1;
        // Two ingest replicas: each has its own recent-id cache, so the same events sent
        // to both reach the topic twice, as retries through a load balancer would.
        let a = ingest_instance(&broker, &db).await;
        let b = ingest_instance(&broker, &db).await;
        Pipeline { broker, db, ingest: vec![a, b], key, other_key, tenant }
    }

    fn analytics(&self, http: u16, batch: usize) -> Child {
        self.analytics_with(http, free_port(), batch)
    }

    fn analytics_with(&self, http: u16, grpc: u16, batch: usize) -> Child {
        Command::new(env!("CARGO_BIN_EXE_cxgap"))
            .arg("analytics")
            .env("CXGAP_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("CXGAP_KAFKA_BROKERS", self.broker.bootstrap())
            .env("CXGAP_DATABASE_URL", &self.db.url)
            .env("CXGAP_API_KEY_PEPPER", PEPPER)
            .env("CXGAP_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("CXGAP_TOPIC_PARTITIONS", "4")
            .env("CXGAP_BATCH_MAX_EVENTS", batch.to_string())
            .env("CXGAP_BATCH_MAX_WAIT_MS", "50")
            .env("CXGAP_KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("CXGAP_LOG_FORMAT", "plain")
            .env("CXGAP_LOG", std::env::var("TESTKIT_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(if std::env::var("TESTKIT_LOG").is_ok() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .unwrap()
    }

    async fn import(&self, replica: usize, csv: &[u8]) {
        let auth = format!("Bearer {}", self.key);
        let r = cxgap_testkit::http::request(
            self.ingest[replica].0,
            "POST",
            "/v1/feedback/import",
            &[("authorization", &auth)],
            csv,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

async fn get(addr: SocketAddr, path: &str, key: &str) -> Option<Value> {
    let auth = format!("Bearer {key}");
    let r = cxgap_testkit::http::request(addr, "GET", path, &[("authorization", &auth)], b"").await.ok()?;
    (r.status == 200).then(|| r.json())
}

async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let r = cxgap_testkit::http::request(addr, "GET", "/metrics", &[], b"").await.ok()?;
    r.text().lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// Waits until analytics has processed `records` records (applied or skipped).
async fn processed(addr: SocketAddr, records: f64) {
    eventually(Duration::from_secs(120), "analytics to process every record", || async {
        let applied = metric(addr, "cxgap_analytics_events_applied_total").await?;
        let dups = metric(addr, "cxgap_analytics_duplicates_total").await?;
        (applied + dups >= records).then_some(())
    })
    .await;
}

fn analyze(extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["analyze", example().to_str().unwrap(), "--format", "json", "--window", "all", "--as-of", AS_OF])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn reversed_csv(csv: &str) -> String {
    let mut lines: Vec<&str> = csv.lines().collect();
    let header = lines.remove(0);
    lines.reverse();
    format!("{header}\n{}\n", lines.join("\n"))
}

/// Events in the stored state right now.
async fn events_stored(p: &Pipeline) -> u64 {
    let store = cxgap_analytics::AnalyticsStore::connect(&p.db.url).await.unwrap();
    let q = cxgap_domain::report::ReportQuery::new(
        cxgap_domain::Day::parse(AS_OF).unwrap(),
        cxgap_domain::report::Window::All,
    );
    cxgap_domain::report::gap_report(&store.load(&p.tenant, None, false).await.unwrap(), &q).overall.events
}

/// The signals on the topic, by customer: the newest signal's event count. Records that
/// share an id (republished after a crash) must be the same signal.
fn customer_signals(broker: &Broker) -> BTreeMap<String, u64> {
    use cxgap_proto::signals as spb;
    use prost::Message;
    let mut by_id: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    for r in broker.fetch_all("cxgap.signals.v1").unwrap() {
        let s = spb::Signal::decode(r.payload.as_slice()).expect("signals decode");
        if let Some(earlier) = by_id.insert(s.signal_id.clone(), r.payload.clone()) {
            assert_eq!(earlier, r.payload, "a republished signal {} is the same signal", s.signal_id);
        }
        if let Some(spb::signal::Body::Customer(c)) = s.body {
            let e = newest.entry(c.customer_id).or_default();
            *e = (*e).max(c.events);
        }
    }
    newest
}

/// Every customer's newest signal counts exactly that customer's events in the CSV.
async fn assert_signals_count_every_event(broker: &Broker, csv: &str) {
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let col = rows.headers().unwrap().iter().position(|h| h == "customer_id").unwrap();
    for r in rows.records() {
        *expected.entry(r.unwrap()[col].to_string()).or_default() += 1;
    }
    eventually(Duration::from_secs(60), "a signal for every customer's last feedback", || async {
        (customer_signals(broker) == expected).then_some(())
    })
    .await;
}

async fn assert_matches_analyze(addr: SocketAddr, key: &str) {
    let offline = analyze(&[]);
    let served = get(addr, &format!("/v1/report?window=all&as_of={AS_OF}"), key).await.expect("report");
    assert_eq!(served, offline["report"], "analytics report equals cxgap analyze");
    let offline = analyze(&["--by", "channel,stage"]);
    let served = get(addr, &format!("/v1/report?window=all&as_of={AS_OF}&by=channel,stage"), key).await.unwrap();
    assert_eq!(served, offline["breakdowns"][0], "grouped report equals cxgap analyze --by");
}

#[tokio::test]
async fn duplicates_and_disorder_on_the_topic_give_exactly_the_offline_report() {
    let p = Pipeline::start().await;
    let csv = std::fs::read_to_string(example()).unwrap();
    let rows = csv.lines().count() - 1;
    let (http, grpc) = (free_port(), free_port());
    let mut analytics = p.analytics_with(http, grpc, 100);
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    p.import(0, csv.as_bytes()).await;
    p.import(1, reversed_csv(&csv).as_bytes()).await;
    processed(addr, (2 * rows) as f64).await;
    assert_eq!(metric(addr, "cxgap_analytics_duplicates_total").await, Some(rows as f64));
    assert_matches_analyze(addr, &p.key).await;

    // Tenant isolation: another tenant's key sees none of it.
    let other = get(addr, &format!("/v1/report?window=all&as_of={AS_OF}"), &p.other_key).await.unwrap();
    assert_eq!(other["overall"]["events"], 0);
    let r = cxgap_testkit::http::request(addr, "GET", "/v1/report", &[], b"").await.unwrap();
    assert_eq!(r.status, 401);
    // Churn risk with drivers, for one customer and the ranked list.
    let risk = get(addr, &format!("/v1/customers/C000/risk?as_of={AS_OF}"), &p.key).await.unwrap();
    assert!(risk["risk"].as_f64().unwrap() > 0.5 && !risk["drivers"].as_array().unwrap().is_empty(), "{risk}");
    let ranked = get(addr, &format!("/v1/at-risk?as_of={AS_OF}&limit=10"), &p.key).await.unwrap();
    assert_eq!(ranked, analyze(&[])["at_risk"], "at-risk list equals cxgap analyze's");
    // Filtered by the channels and journey stages of the customers' feedback, as
    // cxgap analyze filters its list; touchpoints cannot select customers.
    let filtered = get(addr, &format!("/v1/at-risk?as_of={AS_OF}&limit=10&channel=chat,phone&stage=support"), &p.key)
        .await
        .unwrap();
    assert_eq!(filtered, analyze(&["--channel", "chat,phone", "--stage", "support"])["at_risk"]);
    assert_ne!(filtered, ranked, "the filter leaves some of the top customers out");
    assert!(!filtered.as_array().unwrap().is_empty(), "and keeps some");
    let auth = format!("Bearer {}", p.key);
    let r =
        cxgap_testkit::http::request(addr, "GET", "/v1/at-risk?touchpoint=checkout", &[("authorization", &auth)], b"")
            .await
            .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("touchpoint: touchpoints cannot select customers"), "{}", r.text());

    // The same report over gRPC (cxgap.analytics.v1.AnalyticsService).
    use cxgap_proto::analytics as apb;
    let mut client = apb::analytics_service_client::AnalyticsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let (y, m, d) = cxgap_domain::Day::parse(AS_OF).unwrap().ymd();
    let request = |key: Option<&str>| {
        let mut r = tonic::Request::new(apb::GetGapReportRequest {
            group_by: vec![apb::Grouping { by: apb::GroupBy::Channel as i32, segment_key: String::new() }],
            window: cxgap_proto::common::Window::All as i32,
            as_of: Some(cxgap_proto::common::Date { year: y, month: m, day: d }),
            ..Default::default()
        });
        if let Some(k) = key {
            r.metadata_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        r
    };
    let g = client.get_gap_report(request(Some(&p.key))).await.unwrap().into_inner();
    let overall = g.overall.unwrap();
    let http_by_channel = analyze(&["--by", "channel"])["breakdowns"][0].clone();
    assert_eq!(overall.events, rows as u64);
    assert_eq!(
        overall.nps.unwrap().wald.unwrap().value,
        http_by_channel["overall"]["nps"]["wald"]["value"].as_f64().unwrap()
    );
    assert_eq!(g.groups.len(), http_by_channel["groups"].as_array().unwrap().len());
    for (row, json) in g.groups.iter().zip(http_by_channel["groups"].as_array().unwrap()) {
        assert_eq!(row.key[0].value, json["key"][0][1].as_str().unwrap());
        assert_eq!(row.summary.as_ref().unwrap().events, json["summary"]["events"].as_u64().unwrap());
    }
    assert_eq!(client.get_gap_report(request(None)).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let other = client.get_gap_report(request(Some(&p.other_key))).await.unwrap().into_inner();
    assert_eq!(other.overall.unwrap().events, 0, "another tenant sees nothing over gRPC either");

    // The at-risk list page by page equals the list in one go; a forged token is refused.
    let list = |limit: u32, page_token: String| {
        let mut r = tonic::Request::new(apb::ListAtRiskCustomersRequest { limit, page_token, ..Default::default() });
        r.metadata_mut().insert("authorization", format!("Bearer {}", p.key).parse().unwrap());
        r
    };
    let whole = client.list_at_risk_customers(list(1000, String::new())).await.unwrap().into_inner();
    assert!(whole.next_page_token.is_empty() && whole.customers.len() > 20);
    let (mut paged, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = client.list_at_risk_customers(list(7, token)).await.unwrap().into_inner();
        pages += 1;
        paged.extend(page.customers.into_iter().map(|c| c.customer_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let ids: Vec<String> = whole.customers.iter().map(|c| c.customer_id.clone()).collect();
    assert_eq!(paged, ids);
    assert_eq!(pages, ids.len().div_ceil(7));
    let forged = client.list_at_risk_customers(list(7, "bm90LWEtdG9rZW4".into())).await.unwrap_err();
    assert_eq!(forged.code(), tonic::Code::InvalidArgument, "{forged:?}");
    // Filtered as over HTTP (the same customers; gRPC ranks them as of today); touchpoints
    // refused by name.
    let filtered_list = |filter: apb::Filter| {
        let mut r = tonic::Request::new(apb::ListAtRiskCustomersRequest {
            limit: 1000,
            filter: Some(filter),
            ..Default::default()
        });
        r.metadata_mut().insert("authorization", format!("Bearer {}", p.key).parse().unwrap());
        r
    };
    use cxgap_proto::convert::{channel_to_pb, stage_to_pb};
    let by_channel_and_stage = apb::Filter {
        channels: vec![channel_to_pb(cxgap_domain::Channel::Chat), channel_to_pb(cxgap_domain::Channel::Phone)],
        journey_stages: vec![stage_to_pb(cxgap_domain::JourneyStage::Support)],
        ..Default::default()
    };
    let served = client.list_at_risk_customers(filtered_list(by_channel_and_stage)).await.unwrap().into_inner();
    let mut served: Vec<String> = served.customers.into_iter().map(|c| c.customer_id).collect();
    let over_http = get(addr, "/v1/at-risk?limit=1000&channel=chat,phone&stage=support", &p.key).await.unwrap();
    let mut over_http: Vec<String> =
        over_http.as_array().unwrap().iter().map(|c| c["customer_id"].as_str().unwrap().to_string()).collect();
    served.sort();
    over_http.sort();
    assert_eq!(served, over_http);
    assert!(!served.is_empty() && served.len() < ids.len(), "{} of {}", served.len(), ids.len());
    let by_touchpoint = apb::Filter { touchpoints: vec!["checkout".into()], ..Default::default() };
    let refused = client.list_at_risk_customers(filtered_list(by_touchpoint)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("filter.touchpoints cannot select customers"), "{refused:?}");
    // Risk history: one point per batch that changed the customer.
    let mut r = tonic::Request::new(apb::GetCustomerRiskRequest { customer_id: "C000".into() });
    r.metadata_mut().insert("authorization", format!("Bearer {}", p.key).parse().unwrap());
    let c = client.get_customer_risk(r).await.unwrap().into_inner();
    assert!(!c.history.is_empty(), "C000 has a risk history");
    analytics.kill().unwrap();
    let _ = analytics.wait();
    for (_, stop) in &p.ingest {
        stop.cancel();
    }
}

#[tokio::test]
async fn analytics_killed_mid_stream_and_restarted_counts_everything_once() {
    let p = Pipeline::start().await;
    let csv = std::fs::read_to_string(example()).unwrap();
    let rows = csv.lines().count() - 1;
    let http = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    // Small batches, so the kill lands mid-stream.
    let mut analytics = p.analytics(http, 5);
    p.import(0, csv.as_bytes()).await;
    eventually(Duration::from_secs(60), "some progress before the kill", || async {
        let applied = metric(addr, "cxgap_analytics_events_applied_total").await?;
        (applied >= 20.0).then_some(applied)
    })
    .await;
    Command::new("kill").args(["-KILL", &analytics.id().to_string()]).status().unwrap();
    let _ = analytics.wait();
    let at_kill = events_stored(&p).await;
    eprintln!("killed with {at_kill} of {rows} events applied");
    assert!(at_kill > 0 && (at_kill as usize) < rows, "the kill landed mid-stream ({at_kill} of {rows})");

    // While it is down, the duplicates arrive; then a new process takes over.
    p.import(1, reversed_csv(&csv).as_bytes()).await;
    let mut analytics = p.analytics(http, 10);
    // The restarted process counts only what it did itself; wait on the report instead.
    eventually(Duration::from_secs(120), "every event to be counted", || async {
        let r = get(addr, &format!("/v1/report?window=all&as_of={AS_OF}"), &p.key).await?;
        (r["overall"]["events"] == rows).then_some(())
    })
    .await;
    // Let it drain the rest of the duplicates before comparing.
    eventually(Duration::from_secs(60), "the duplicates to be skipped", || async {
        let dups = metric(addr, "cxgap_analytics_duplicates_total").await?;
        let replayed = metric(addr, "cxgap_analytics_replayed_total").await.unwrap_or(0.0);
        let applied = metric(addr, "cxgap_analytics_events_applied_total").await?;
        (applied + dups + replayed >= rows as f64).then_some(())
    })
    .await;
    assert_matches_analyze(addr, &p.key).await;
    assert_signals_count_every_event(&p.broker, &csv).await;
    analytics.kill().unwrap();
    let _ = analytics.wait();
    for (_, stop) in &p.ingest {
        stop.cancel();
    }
}

/// Two instances share the partitions (database-coordinated assignment); the one doing
/// the most work is SIGKILLed mid-stream, its lease lapses, and the other takes its
/// partitions over from their stored offsets and finishes with the exact report.
#[tokio::test]
async fn two_instances_one_killed_mid_stream_the_other_takes_over() {
    let p = Pipeline::start().await;
    let csv = std::fs::read_to_string(example()).unwrap();
    let rows = csv.lines().count() - 1;
    let ports = [free_port(), free_port()];
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| format!("127.0.0.1:{p}").parse().unwrap()).collect();
    let mut instances = [p.analytics(ports[0], 5), p.analytics(ports[1], 5)];
    p.import(0, csv.as_bytes()).await;
    let busy = eventually(Duration::from_secs(60), "both instances to make progress", || async {
        let a = metric(addrs[0], "cxgap_analytics_events_applied_total").await?;
        let b = metric(addrs[1], "cxgap_analytics_events_applied_total").await?;
        (a >= 10.0 && b >= 10.0).then_some(if a >= b { 0 } else { 1 })
    })
    .await;
    Command::new("kill").args(["-KILL", &instances[busy].id().to_string()]).status().unwrap();
    let _ = instances[busy].wait();
    let at_kill = events_stored(&p).await;
    eprintln!("killed the busier instance with {at_kill} of {rows} events applied");
    assert!(at_kill < rows as u64, "the kill landed mid-stream ({at_kill} of {rows})");
    let survivor = addrs[1 - busy];
    p.import(1, reversed_csv(&csv).as_bytes()).await;
    eventually(Duration::from_secs(120), "the survivor to count every event", || async {
        let r = get(survivor, &format!("/v1/report?window=all&as_of={AS_OF}"), &p.key).await?;
        (r["overall"]["events"] == rows).then_some(())
    })
    .await;
    assert_matches_analyze(survivor, &p.key).await;
    assert_signals_count_every_event(&p.broker, &csv).await;
    let other = &mut instances[1 - busy];
    other.kill().unwrap();
    let _ = other.wait();
    for (_, stop) in &p.ingest {
        stop.cancel();
    }
}
