//! The dashboard in a real headless browser (Debian's `chromium`, installed by `.ci/run`):
//! served by `cxgap run`, it shows the figures the engine computed on the example export
//! and the live alerts with their actions; the alerts API it calls acknowledges.

use cxgap_testkit::{eventually, free_port};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c;
        }
    }
    panic!("no headless browser: install Debian's chromium (.ci/run does)");
}

#[tokio::test]
async fn the_dashboard_shows_real_figures_and_alerts_in_a_browser() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let (ingest, analytics, alerting) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["run", "--data-dir", dir.path().to_str().unwrap(), "--log", "error"])
        .args(["--ingest-http", &format!("127.0.0.1:{ingest}"), "--ingest-grpc", &format!("127.0.0.1:{}", free_port())])
        .args(["--analytics-http", &format!("127.0.0.1:{analytics}")])
        .args(["--analytics-grpc", &format!("127.0.0.1:{}", free_port())])
        .args(["--alerting-http", &format!("127.0.0.1:{alerting}")])
        .args(["--alerting-grpc", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let key_file = dir.path().join("api-key");
    let key = eventually(Duration::from_secs(60), "the API key", || async {
        std::fs::read_to_string(&key_file).ok().map(|k| k.trim().to_string()).filter(|k| !k.is_empty())
    })
    .await;
    let auth = format!("Bearer {key}");
    let csv = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/feedback.csv")).unwrap();
    let ingest: SocketAddr = format!("127.0.0.1:{ingest}").parse().unwrap();
    let alerting: SocketAddr = format!("127.0.0.1:{alerting}").parse().unwrap();
    eventually(Duration::from_secs(60), "the import", || async {
        let r = cxgap_testkit::http::request(ingest, "POST", "/v1/feedback/import", &[("authorization", &auth)], &csv)
            .await
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let alerts: Vec<Value> = eventually(Duration::from_secs(120), "open alerts over HTTP", || async {
        let r =
            cxgap_testkit::http::request(alerting, "GET", "/v1/alerts?state=firing", &[("authorization", &auth)], b"")
                .await
                .ok()?;
        let list: Vec<Value> = serde_json::from_value(r.json()).ok()?;
        (list.len() >= 3).then_some(list)
    })
    .await;

    // The page, rendered by the browser: the engine's NPS for the whole export (−12.0,
    // as `cxgap analyze` prints), the heatmap, the at-risk table and the alerts with actions.
    let url = format!("http://127.0.0.1:{analytics}/dashboard#key={key}&window=all");
    let dom = eventually(Duration::from_secs(90), "the rendered dashboard", || async {
        let out = Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", &url])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let dom = String::from_utf8_lossy(&out.stdout).to_string();
        (dom.contains("392") && dom.contains("data-alert=")).then_some(dom)
    })
    .await;
    assert!(dom.contains(">-12.0<"), "NPS of the export");
    assert!(dom.contains("class=\"cell\""), "heatmap cells");
    assert!(dom.contains("C000"), "the at-risk table names the riskiest customer");
    let first = alerts[0]["alert_id"].as_str().unwrap();
    assert!(dom.contains(&format!("data-alert=\"{first}\"")), "the alert is on the page");
    assert!(dom.contains("data-act=\"ack\""), "with its acknowledge button");

    // Acknowledge through the page: a link that presses the alert's ack button in the
    // browser; the page's own request acknowledges it, and it re-renders as acknowledged.
    let ack_url = format!("http://127.0.0.1:{analytics}/dashboard#key={key}&window=all&ack={first}");
    let dom = eventually(Duration::from_secs(90), "the page to acknowledge the alert", || async {
        let out = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=10000",
                "--dump-dom",
                &ack_url,
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let dom = String::from_utf8_lossy(&out.stdout).to_string();
        dom.contains(&format!("data-alert=\"{first}\"")).then_some(dom)
    })
    .await;
    let row = dom.split(&format!("data-alert=\"{first}\"")).nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.contains("acknowledged") && !row.contains("data-act=\"ack\""), "{row}");
    let r = cxgap_testkit::http::request(
        alerting,
        "GET",
        "/v1/alerts?state=acknowledged",
        &[("authorization", &auth)],
        b"",
    )
    .await
    .unwrap();
    let acked: Vec<Value> = serde_json::from_value(r.json()).unwrap();
    assert!(acked.iter().any(|a| a["alert_id"] == first), "acknowledged through the page");
    let again = cxgap_testkit::http::request(
        alerting,
        "POST",
        &format!("/v1/alerts/{first}/ack"),
        &[("authorization", &auth)],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(again.status, 409, "{}", again.text());
    let preflight =
        cxgap_testkit::http::request(alerting, "OPTIONS", "/v1/alerts", &[("origin", "http://x")], b"").await.unwrap();
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
}
