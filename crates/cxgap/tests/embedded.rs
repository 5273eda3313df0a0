//! `cxgap run` (embedded mode) as a real process: no broker, no database server. Feedback
//! imported over HTTP gives exactly `cxgap analyze`'s report, alerts come out of the same
//! engine, and everything is still there after a restart.

use cxgap_testkit::{eventually, free_port};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AS_OF: &str = "2026-08-30";

struct Ports {
    ingest: u16,
    analytics: u16,
    alerting_grpc: u16,
}

fn run(dir: &Path, p: &Ports) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["run", "--data-dir", dir.to_str().unwrap()])
        .args(["--ingest-http", &format!("127.0.0.1:{}", p.ingest)])
        .args(["--ingest-grpc", &format!("127.0.0.1:{}", free_port())])
        .args(["--analytics-http", &format!("127.0.0.1:{}", p.analytics)])
        .args(["--analytics-grpc", &format!("127.0.0.1:{}", free_port())])
        .args(["--alerting-http", &format!("127.0.0.1:{}", free_port())])
        .args(["--alerting-grpc", &format!("127.0.0.1:{}", p.alerting_grpc)])
        .args(["--log", &std::env::var("TESTKIT_LOG").unwrap_or_else(|_| "warn".into())])
        .stdout(Stdio::null())
        .stderr(if std::env::var("TESTKIT_LOG").is_ok() { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .unwrap()
}

async fn report(addr: SocketAddr, key: &str) -> Option<Value> {
    let auth = format!("Bearer {key}");
    let r = cxgap_testkit::http::request(
        addr,
        "GET",
        &format!("/v1/report?window=all&as_of={AS_OF}"),
        &[("authorization", &auth)],
        b"",
    )
    .await
    .ok()?;
    (r.status == 200).then(|| r.json())
}

fn analyze() -> Value {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/feedback.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["analyze", example.to_str().unwrap(), "--format", "json", "--window", "all", "--as-of", AS_OF])
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["report"].clone()
}

fn stop(mut child: Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "cxgap run exits cleanly on SIGTERM: {status:?}");
}

#[tokio::test]
async fn embedded_mode_serves_the_exact_report_and_keeps_it_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports { ingest: free_port(), analytics: free_port(), alerting_grpc: free_port() };
    let child = run(dir.path(), &ports);
    let key_file = dir.path().join("api-key");
    let key = eventually(Duration::from_secs(60), "the API key of the first run", || async {
        std::fs::read_to_string(&key_file).ok().map(|k| k.trim().to_string()).filter(|k| !k.is_empty())
    })
    .await;
    let ingest: SocketAddr = format!("127.0.0.1:{}", ports.ingest).parse().unwrap();
    let analytics: SocketAddr = format!("127.0.0.1:{}", ports.analytics).parse().unwrap();
    let csv = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/feedback.csv")).unwrap();
    let auth = format!("Bearer {key}");
    let r = eventually(Duration::from_secs(60), "ingest to accept the import", || async {
        let r = cxgap_testkit::http::request(ingest, "POST", "/v1/feedback/import", &[("authorization", &auth)], &csv)
            .await
            .ok()?;
        (r.status == 200).then_some(r)
    })
    .await;
    assert!(r.text().contains("392"), "{}", r.text());
    let offline = analyze();
    eventually(Duration::from_secs(120), "the served report to equal cxgap analyze's", || async {
        (report(analytics, &key).await? == offline).then_some(())
    })
    .await;

    // Alerts come out of the same engine: customers silent since August are at risk now.
    use cxgap_proto::alerting as apb;
    let alerts = eventually(Duration::from_secs(60), "churn alerts", || async {
        let mut client = apb::alerting_service_client::AlertingServiceClient::connect(format!(
            "http://127.0.0.1:{}",
            ports.alerting_grpc
        ))
        .await
        .ok()?;
        let mut req = tonic::Request::new(apb::ListAlertsRequest::default());
        req.metadata_mut().insert("authorization", auth.parse().unwrap());
        let list = client.list_alerts(req).await.ok()?.into_inner().alerts;
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert!(alerts.iter().any(|a| a.subject.starts_with("customer:")), "{alerts:?}");
    stop(child);

    // Restarted on the same directory: same key, same report, nothing lost or doubled.
    let child = run(dir.path(), &ports);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key);
    eventually(Duration::from_secs(60), "the report after the restart", || async {
        (report(analytics, &key).await? == offline).then_some(())
    })
    .await;
    // The restart prunes the bus of what analytics applied in the first run: each
    // feedback partition keeps only its last record, which holds the next offset.
    sqlx::any::install_default_drivers();
    let bus = sqlx::AnyPool::connect(&format!("sqlite:{}", dir.path().join("bus.db").display())).await.unwrap();
    let held = eventually(Duration::from_secs(30), "the applied feedback pruned from the bus", || async {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT part, COUNT(*), MAX(off) + 1 FROM bus_log WHERE topic = 'cxgap.feedback.v1' GROUP BY part",
        )
        .fetch_all(&bus)
        .await
        .ok()?;
        rows.iter().all(|(_, count, _)| *count == 1).then_some(rows)
    })
    .await;
    let sent: i64 = held.iter().map(|(_, _, end)| end).sum();
    assert!(sent >= 392, "offsets still count every record sent: {held:?}");
    bus.close().await;
    stop(child);
}
