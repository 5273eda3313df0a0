//! `cxgap ingest`, `cxgap tenants` and `cxgap keys` as real processes: configured from
//! the environment, serving until SIGTERM, then draining and exiting 0.

use cxgap_testkit::{Broker, TestDb, free_port};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PEPPER: &str = "process-test-pepper-0123";

fn cxgap(db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cxgap"));
    c.env("CXGAP_DATABASE_URL", db).env("CXGAP_API_KEY_PEPPER", PEPPER);
    c
}

fn run(mut c: Command) -> String {
    let out = c.output().expect("cxgap runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_ingest_process_serves_and_stops_cleanly_on_sigterm() {
    let broker = Broker::start().unwrap();
    let db = TestDb::new().await.unwrap();
    let mut c = cxgap(&db.url);
    c.args(["tenants", "create", "acme"]);
    let tenant = run(c).split('\t').next().unwrap().to_string();
    let mut c = cxgap(&db.url);
    c.args(["keys", "create", "acme", "--label", "process-test"]);
    let key = run(c).trim().to_string();
    let mut c = cxgap(&db.url);
    c.args(["keys", "list"]);
    assert!(run(c).contains("process-test\t"), "the key is listed, without its secret");

    let (grpc, http) = (free_port(), free_port());
    let mut c = cxgap(&db.url);
    let mut child = c
        .arg("ingest")
        .args(["--kafka-brokers", &broker.bootstrap()])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}"), "--http-addr", &format!("127.0.0.1:{http}")])
        .env("CXGAP_LOG_FORMAT", "plain")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    cxgap_testkit::eventually(Duration::from_secs(30), "the service to be ready", || async {
        let r = cxgap_testkit::http::request(addr, "GET", "/readyz", &[], b"").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let body = r#"{"event_id":"p-1","customer_id":"c","channel":"EMAIL","journey_stage":"BILLING","occurred_at":"2026-01-01","csat":2}"#;
    let auth = format!("Bearer {key}");
    let r = cxgap_testkit::http::request(addr, "POST", "/v1/feedback", &[("authorization", &auth)], body.as_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "ingest did not stop within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("SIGTERM") && stderr.contains("ingest stopped"), "{stderr}");

    let recs = broker.fetch_all("cxgap.feedback.v1").unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs[0].key.starts_with(format!("{tenant}/").as_bytes()));
}

#[test]
fn bad_configuration_exits_non_zero_naming_each_problem() {
    let out = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .arg("ingest")
        .env_remove("CXGAP_KAFKA_BROKERS")
        .env_remove("CXGAP_DATABASE_URL")
        .env_remove("CXGAP_API_KEY_PEPPER")
        .args(["--set", "CXGAP_MAX_BATCH_EVENTS=0", "--grpc-addr", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in
        ["CXGAP_KAFKA_BROKERS is required", "CXGAP_MAX_BATCH_EVENTS=\"0\"", "CXGAP_GRPC_ADDR=\"not-an-address\""]
    {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
}
