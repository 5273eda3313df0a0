//! The dashboard in a real headless browser (Debian's `chromium`, installed by `.ci/run`)
//! during a `cxgap demo` run: while the generated stream flows, the page shows the figures
//! the engine serves, the riskiest customers and the live alerts with their actions, and an
//! alert acknowledged through the page is acknowledged in the API and on the demo's stream.

use cxgap_testkit::eventually;
use serde_json::Value;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c;
        }
    }
    panic!("no headless browser: install Debian's chromium (.ci/run does)");
}

/// The page as the browser rendered it after its scripts ran.
fn render(browser: &str, url: &str) -> Option<String> {
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", url])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

async fn get(addr: SocketAddr, path: &str, auth: &str) -> Option<Value> {
    let r = cxgap_testkit::http::request(addr, "GET", path, &[("authorization", auth)], b"").await.ok()?;
    (r.status == 200).then(|| r.json())
}

#[tokio::test]
async fn the_dashboard_shows_a_live_demo_and_acknowledges_an_alert() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["demo", "--customers", "400", "--speed", "0.5", "--seed", "11", "--any-port"])
        .args(["--data-dir", dir.path().join("demo").to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let seen = |pred: &dyn Fn(&str) -> bool| lines.lock().unwrap().iter().find(|l| pred(l)).cloned();
    // "  dashboard:   http://127.0.0.1:PORT/dashboard#key=KEY"
    let dashboard = eventually(Duration::from_secs(60), "the demo to print its dashboard URL", || async {
        seen(&|l| l.trim_start().starts_with("dashboard:"))
    })
    .await;
    let url = dashboard.split_whitespace().nth(1).unwrap().to_string();
    let (base, key) = url.split_once("/dashboard#key=").unwrap();
    let analytics: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let auth = format!("Bearer {key}");
    let config = eventually(Duration::from_secs(30), "the dashboard config", || async {
        get(analytics, "/dashboard/config.json", "").await
    })
    .await;
    let alerting: SocketAddr =
        config["alerting_url"].as_str().unwrap().trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    eventually(Duration::from_secs(180), "the demo's history to be sent", || async {
        seen(&|l| l.starts_with("sent ") && l.contains("events of history"))
    })
    .await;
    eventually(Duration::from_secs(180), "firing alerts", || async {
        let list = get(alerting, "/v1/alerts?state=firing", &auth).await?;
        (list.as_array()?.len() >= 3).then_some(())
    })
    .await;

    // The page, rendered while the stream flows: its event count lies between the engine's
    // counts just before and just after, and it shows the heatmap, the overrated helpline,
    // customers the at-risk API ranks on top, and alerts with their actions.
    let count = |r: &Value| r["overall"]["events"].as_u64().unwrap();
    let before = count(&get(analytics, "/v1/report?window=30d", &auth).await.unwrap());
    let dom = eventually(Duration::from_secs(90), "the rendered dashboard", || async {
        let dom = render(browser, &url)?;
        dom.contains("data-alert=").then_some(dom)
    })
    .await;
    let after = count(&get(analytics, "/v1/report?window=30d", &auth).await.unwrap());
    let shown: u64 = dom.split("<div class=\"v\">").nth(1).unwrap().split('<').next().unwrap().parse().unwrap();
    assert!(before > 0 && before <= shown && shown <= after, "{before} <= {shown} <= {after}");
    assert!(dom.contains("class=\"cell\""), "heatmap cells");
    let perception = dom.split("id=\"perception\"").nth(1).unwrap().split("</section>").next().unwrap();
    assert!(perception.contains("helpline"), "the overrated helpline: {perception}");
    let top = get(analytics, "/v1/at-risk?limit=10", &auth).await.unwrap();
    let top: Vec<&str> = top.as_array().unwrap().iter().filter_map(|c| c["customer_id"].as_str()).collect();
    assert!(top.iter().any(|c| dom.contains(&format!(">{c}<"))), "the at-risk table shows {top:?}");
    assert!(dom.contains("data-act=\"ack\""), "alerts with an acknowledge button");
    // The alert to acknowledge: one about a touchpoint or a segment. A customer's alert
    // fired while its touchpoint had an open alert is muted (inhibition), and so is its
    // acknowledgement, which the demo's stream then rightly never shows; the live rules
    // open and close touchpoint alerts all the time, so which customer alerts are muted is
    // a matter of luck. The link pins the alert on the page even when fifty newer alerts
    // push it off the list.
    let unmutable = || async {
        let list = get(alerting, "/v1/alerts?state=firing", &auth).await?;
        list.as_array()?
            .iter()
            .find(|a| a["subject"].as_str().is_some_and(|s| !s.starts_with("customer:")))
            .and_then(|a| a["alert_id"].as_str().map(str::to_string))
    };
    let mut first =
        eventually(Duration::from_secs(120), "a firing alert about a touchpoint or a segment", unmutable).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut history = Vec::new();
    let row = loop {
        let dom = render(browser, &format!("{url}&ack={first}")).unwrap_or_default();
        let row = dom
            .split(&format!("data-alert=\"{first}\""))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_default()
            .to_string();
        if row.contains("acknowledged") {
            break row;
        }
        let state = get(alerting, &format!("/v1/alerts/{first}"), &auth).await.map(|a| a["state"].clone());
        let error = dom
            .split("id=\"error\"")
            .nth(1)
            .and_then(|e| e.split_once('>'))
            .and_then(|(_, e)| e.split('<').next())
            .unwrap_or_default()
            .to_string();
        history.push(format!("{first}: api state {state:?}, page error {error:?}"));
        assert!(std::time::Instant::now() < deadline, "the page never acknowledged an alert: {history:#?}");
        if state.as_ref().is_some_and(|s| s == "resolved")
            && let Some(other) = unmutable().await
        {
            first = other;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!row.contains("data-act=\"ack\""), "{row}");
    let acked = get(alerting, &format!("/v1/alerts/{first}"), &auth).await.unwrap();
    // The live rules may resolve it between the page's render and this read (seen once:
    // episode 2, resolved); the acknowledgement itself is checked on the stream below.
    let state = acked["state"].as_str().unwrap_or_default();
    assert!(["acknowledged", "resolved"].contains(&state), "acknowledged through the page: {acked}");
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
    // The demo's terminal, fed by its gRPC stream subscription, reports the acknowledgement.
    // The stream delivers the log in order, behind every notification the demo's live
    // rules logged before it.
    eventually(Duration::from_secs(60), "the acknowledgement on the demo's alert stream", || async {
        seen(&|l| l.starts_with("[alert ACKNOWLEDGED"))
    })
    .await;
    let preflight =
        cxgap_testkit::http::request(alerting, "OPTIONS", "/v1/alerts", &[("origin", "http://x")], b"").await.unwrap();
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success(), "the demo stops cleanly on Ctrl-C");
}
