//! The client commands against a running `cxgap run`, all as real processes speaking
//! gRPC: import (and refusing a bad file whole), send, report equal to `cxgap analyze`,
//! risk, at-risk, alerts list/ack/resolve/watch, subscribe. The key comes from the data
//! directory, as it does for a newcomer who ran `cxgap run` in the same place. The same
//! commands reach the services through TLS terminators (socat, openssl's certificates), as
//! they reach a production deployment through its ingress.

use cxgap_testkit::tls::{Pki, Terminator};
use cxgap_testkit::{eventually, free_port};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const AS_OF: &str = "2026-08-30";

struct Cxgap {
    child: Child,
    dir: tempfile::TempDir,
    ingest: String,
    analytics: String,
    alerting: String,
    grpc_ports: [u16; 3],
}

impl Cxgap {
    fn start() -> Cxgap {
        let dir = tempfile::tempdir().unwrap();
        let (ig, ag, lg) = (free_port(), free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_cxgap"))
            .args(["run", "--data-dir", dir.path().to_str().unwrap()])
            .args(["--ingest-http", &format!("127.0.0.1:{}", free_port())])
            .args(["--ingest-grpc", &format!("127.0.0.1:{ig}")])
            .args(["--analytics-http", &format!("127.0.0.1:{}", free_port())])
            .args(["--analytics-grpc", &format!("127.0.0.1:{ag}")])
            .args(["--alerting-http", &format!("127.0.0.1:{}", free_port())])
            .args(["--alerting-grpc", &format!("127.0.0.1:{lg}")])
            .args(["--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Cxgap {
            child,
            dir,
            ingest: format!("http://127.0.0.1:{ig}"),
            analytics: format!("http://127.0.0.1:{ag}"),
            alerting: format!("http://127.0.0.1:{lg}"),
            grpc_ports: [ig, ag, lg],
        }
    }

    /// Waits for the API key and for all three gRPC listeners. The key is written before the
    /// services bind, and the CLI checks a file before it connects, so neither alone says
    /// the services are up.
    async fn ready(&self) {
        let key_file = self.dir.path().join("api-key");
        eventually(Duration::from_secs(60), "the first run's API key", || async { key_file.exists().then_some(()) })
            .await;
        for port in self.grpc_ports {
            eventually(Duration::from_secs(60), &format!("a gRPC listener on port {port}"), || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
            })
            .await;
        }
    }

    /// `cxgap ARGS` pointed at this instance; the key comes from its data directory.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, &[])
    }

    /// `cxgap ARGS` with `env` over the settings of [`Cxgap::cli`].
    fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxgap"));
        cmd.args(args);
        for name in ["CXGAP_API_KEY", "CXGAP_CA_FILE", "CXGAP_CLIENT_CERT", "CXGAP_CLIENT_KEY"] {
            cmd.env_remove(name);
        }
        cmd.env("CXGAP_DATA_DIR", self.dir.path())
            .env("CXGAP_INGEST_URL", &self.ingest)
            .env("CXGAP_ANALYTICS_URL", &self.analytics)
            .env("CXGAP_ALERTING_URL", &self.alerting)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(out.status.success(), "cxgap {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("cxgap {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    }
}

impl Drop for Cxgap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn client_commands_drive_a_running_cxgap() {
    let cx = Cxgap::start();
    let feedback = example("feedback.csv");
    let assessments = example("assessments.csv");
    let feedback = feedback.to_str().unwrap();
    cx.ready().await;

    // A bad export is refused whole: every bad line named, nothing sent.
    let bad = cx.dir.path().join("bad.csv");
    let mut csv = std::fs::read_to_string(feedback).unwrap();
    csv.push_str("ev-bad-1,C900,WEB,PURCHASE,checkout,2026-08-01T10:00:00Z,11,,,,,,,,,,,,,,,,,,,,\n");
    csv.push_str("ev-bad-2,C901,TELEPATHY,PURCHASE,checkout,2026-08-01T10:00:00Z,5,,,,,,,,,,,,,,,,,,,,\n");
    std::fs::write(&bad, csv).unwrap();
    let out = cx.cli(&["import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("line 394") && err.contains("nps"), "{err}");
    assert!(err.contains("line 395") && err.contains("channel"), "{err}");
    assert!(err.contains("nothing was sent"), "{err}");

    let imported = cx.json(&[
        "import",
        feedback,
        "--assessments",
        assessments.to_str().unwrap(),
        "--batch",
        "100",
        "--format",
        "json",
    ]);
    assert_eq!(imported["accepted"], 392, "{imported}");
    assert_eq!(imported["duplicates"], 0, "{imported}");
    assert!(imported["assessments"].as_u64().unwrap() > 0, "{imported}");
    let again = cx.json(&["import", feedback, "--format", "json"]);
    assert_eq!((again["accepted"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(392)), "{again}");

    // The report over gRPC equals the offline analysis of the same file, figure for figure.
    let offline = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["analyze", feedback, "--format", "json", "--window", "all", "--as-of", AS_OF])
        .output()
        .unwrap();
    let offline: Value = serde_json::from_slice(&offline.stdout).unwrap();
    let offline = &offline["report"]["overall"];
    let served = eventually(Duration::from_secs(120), "the served report to count all 392 events", || async {
        let r = cx.json(&["report", "--window", "all", "--as-of", AS_OF, "--format", "json"]);
        (r["overall"]["events"] == 392).then_some(r)
    })
    .await;
    for figure in ["events", "nps", "csat_percent", "csat_mean", "ces", "experience", "sentiment"] {
        assert_eq!(served["overall"][figure], offline[figure], "{figure}");
    }
    assert!(!served["perception"].as_array().unwrap().is_empty(), "assessments give perception gaps");
    let table = cx.cli(&["report", "--window", "all", "--as-of", AS_OF, "--by", "channel"]);
    let table = text(&table.stdout);
    assert!(table.contains("NPS [95%]") && table.contains("-12.0 [") && table.contains("MOBILE_APP"), "{table}");
    // Filtered, the served report equals the offline analysis with the same filter.
    let only = ["--channel", "web,chat", "--stage", "support,purchase", "--segment", "tier=gold"];
    let offline_only = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["analyze", feedback, "--format", "json", "--window", "all", "--as-of", AS_OF])
        .args(only)
        .output()
        .unwrap();
    let offline_only: Value = serde_json::from_slice(&offline_only.stdout).unwrap();
    let served_only =
        cx.json(&[&["report", "--window", "all", "--as-of", AS_OF, "--format", "json"][..], &only].concat());
    let events = served_only["overall"]["events"].as_u64().unwrap();
    assert!(events > 0 && events < 392, "{served_only}");
    for figure in ["events", "nps", "csat_percent", "experience"] {
        assert_eq!(served_only["overall"][figure], offline_only["report"]["overall"][figure], "{figure}");
    }
    let table = text(&cx.cli(&[&["report", "--window", "all", "--as-of", AS_OF][..], &only].concat()).stdout);
    assert!(table.contains("only channel WEB, CHAT; stage SUPPORT, PURCHASE; segment tier=gold"), "{table}");
    let out = cx.cli(&["report", "--stage", "lunch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("\"lunch\" is not a journey stage"), "{}", text(&out.stderr));
    let out = cx.cli(&["report", "--by", "colour"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("\"colour\" is not a grouping"), "{}", text(&out.stderr));

    // At-risk list and one customer's detail agree.
    let at_risk = eventually(Duration::from_secs(60), "at-risk customers", || async {
        let v = cx.json(&["at-risk", "--limit", "5", "--format", "json"]);
        (v.as_array()?.len() == 5).then_some(v)
    })
    .await;
    let first = &at_risk[0];
    let id = first["customer_id"].as_str().unwrap();
    let detail = cx.json(&["risk", id, "--format", "json"]);
    assert_eq!(detail["risk"], first["risk"]);
    assert!(!detail["drivers"].as_array().unwrap().is_empty(), "{detail}");
    let out = cx.cli(&["risk", "no-such-customer"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no-such-customer"), "{}", text(&out.stderr));
    let gold = cx.json(&["at-risk", "--limit", "50", "--segment", "tier=gold", "--format", "json"]);
    let gold = gold.as_array().unwrap();
    assert!(!gold.is_empty() && gold.iter().all(|c| c["segment"]["tier"] == "gold"), "{gold:?}");
    let table = text(&cx.cli(&["at-risk", "--limit", "3"]).stdout);
    assert!(table.contains(id) && table.contains("top drivers"), "{table}");

    // Send: one event, then the same again is a harmless duplicate; a bad one names its field.
    let event = r#"{"event_id":"ev-cli-1","customer_id":"C001","channel":"WEB","journey_stage":"SUPPORT","touchpoint":"helpline","occurred_at":"2026-08-29T10:00:00Z","nps":2,"comment":"still waiting"}"#;
    let sent = cx.json(&["send", event, "--format", "json"]);
    assert_eq!(sent[0]["duplicate"], false, "{sent}");
    let sent = cx.json(&["send", event, "--format", "json"]);
    assert_eq!(sent[0]["duplicate"], true, "{sent}");
    let out = cx.cli(&["send", &event.replace("\"nps\":2", "\"nps\":12")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nps"), "{}", text(&out.stderr));
    eventually(Duration::from_secs(60), "the sent event in the report", || async {
        let r = cx.json(&["report", "--window", "all", "--as-of", AS_OF, "--format", "json"]);
        (r["overall"]["events"] == 393).then_some(())
    })
    .await;

    // Alerts: list, acknowledge (twice is refused), resolve, and the stream shows them.
    let firing = eventually(Duration::from_secs(60), "firing alerts", || async {
        let v = cx.json(&["alerts", "list", "--state", "firing", "--format", "json"]);
        (!v.as_array()?.is_empty()).then_some(v)
    })
    .await;
    let alert = firing[0]["alert_id"].as_str().unwrap().to_string();
    let acked = cx.json(&["alerts", "ack", &alert, "--by", "ana", "--note", "calling them", "--format", "json"]);
    assert_eq!(acked["state"], "acknowledged", "{acked}");
    let history = acked["history"].as_array().unwrap();
    assert!(history.iter().any(|h| h["by"] == "ana" && h["note"] == "calling them"), "{acked}");
    let out = cx.cli(&["alerts", "ack", &alert]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("FailedPrecondition"), "{}", text(&out.stderr));
    let listed = cx.json(&["alerts", "list", "--state", "acknowledged", "--format", "json"]);
    assert!(listed.as_array().unwrap().iter().any(|a| a["alert_id"] == alert), "{listed}");
    let resolved = cx.json(&["alerts", "resolve", &alert, "--format", "json"]);
    assert_eq!(resolved["state"], "resolved");
    let watched = cx.cli(&["alerts", "watch", "--from-start", "--count", "3", "--format", "json"]);
    assert!(watched.status.success(), "{}", text(&watched.stderr));
    let lines: Vec<Value> = text(&watched.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|n| n["notification_id"].as_str().is_some_and(|s| !s.is_empty())), "{lines:?}");

    // Subscriptions: a webhook gets a generated secret; list shows it; delete removes it.
    let out = cx.cli(&["subscribe", "webhook", "http://127.0.0.1:9/hook", "--id", "ops", "--min-severity", "critical"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("whsec_"), "{}", text(&out.stdout));
    let subs = cx.json(&["subscribe", "list", "--format", "json"]);
    let ops = subs.as_array().unwrap().iter().find(|s| s["subscription_id"] == "ops").expect("listed");
    assert_eq!(ops["filter"]["min_severity"], "critical");
    assert_eq!(ops["target"]["webhook"], "http://127.0.0.1:9/hook");
    let out = cx.cli(&["subscribe", "webhook", "ftp://example.com/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("InvalidArgument"), "{}", text(&out.stderr));
    assert!(cx.cli(&["subscribe", "delete", "ops"]).status.success());
    let subs = cx.json(&["subscribe", "list", "--format", "json"]);
    assert!(!subs.as_array().unwrap().iter().any(|s| s["subscription_id"] == "ops"), "{subs}");

    // Without a key anywhere, the message says where a key comes from.
    let out = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["report"])
        .env_remove("CXGAP_API_KEY")
        .env("CXGAP_DATA_DIR", cx.dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no API key"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn client_commands_reach_the_services_over_tls() {
    let cx = Cxgap::start();
    cx.ready().await;
    let pki = Pki::new(cx.dir.path(), "cxgap").unwrap();
    let stranger = Pki::new(cx.dir.path(), "stranger").unwrap();
    let server = pki.server("ingress").unwrap();
    let client = pki.client("ana").unwrap();
    let [ig, ag, lg] = cx.grpc_ports;
    // TLS in front of ingest and analytics; mutual TLS (a client certificate from this
    // CA required) in front of alerting.
    let ingest = Terminator::start(free_port(), ig, &server, None).unwrap();
    let analytics = Terminator::start(free_port(), ag, &server, None).unwrap();
    let alerting = Terminator::start(free_port(), lg, &server, Some(pki.ca())).unwrap();
    let url = |t: &Terminator| format!("https://127.0.0.1:{}", t.port());
    let (ingest, analytics, alerting) = (url(&ingest), url(&analytics), url(&alerting));
    let (ca, cert, key) = (pki.ca().to_str().unwrap(), client.cert.to_str().unwrap(), client.key.to_str().unwrap());
    let secure = [
        ("CXGAP_INGEST_URL", ingest.as_str()),
        ("CXGAP_ANALYTICS_URL", analytics.as_str()),
        ("CXGAP_ALERTING_URL", alerting.as_str()),
        ("CXGAP_CA_FILE", ca),
    ];

    let feedback = example("feedback.csv");
    let out = cx.cli_with(&["import", feedback.to_str().unwrap(), "--format", "json"], &secure);
    assert!(out.status.success(), "import over TLS: {}", text(&out.stderr));
    let imported: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(imported["accepted"], 392, "{imported}");
    eventually(Duration::from_secs(120), "the report over TLS to count all 392 events", || async {
        let out = cx.cli_with(&["report", "--window", "all", "--as-of", AS_OF, "--format", "json"], &secure);
        assert!(out.status.success(), "report over TLS: {}", text(&out.stderr));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        (r["overall"]["events"] == 392).then_some(())
    })
    .await;

    // Mutual TLS: with the client certificate alerting answers; without it, it does not.
    let with_cert = [&secure[..], &[("CXGAP_CLIENT_CERT", cert), ("CXGAP_CLIENT_KEY", key)]].concat();
    let out = cx.cli_with(&["subscribe", "list", "--format", "json"], &with_cert);
    assert!(out.status.success(), "alerting over mutual TLS: {}", text(&out.stderr));
    let out = cx.cli_with(&["subscribe", "list", "--format", "json"], &secure);
    assert_eq!(out.status.code(), Some(2), "no client certificate, yet: {}", text(&out.stdout));
    // TLS 1.3 finishes the client's side of the handshake before the server checks for a
    // certificate, so the refusal reads either as the server's alert or as the connection
    // closed under the first call.
    let err = text(&out.stderr);
    assert!(err.contains("transport error"), "{err}");
    assert!(!err.contains("CertificateRequired") || err.contains("--client-cert and --client-key"), "{err}");
    let out = cx.cli_with(&["subscribe", "list"], &[&secure[..], &[("CXGAP_CLIENT_CERT", cert)]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--client-key"), "{}", text(&out.stderr));

    // A server certificate no trusted CA signed is not talked to, and the message says why.
    let untrusted = [&secure[..3], &[("CXGAP_CA_FILE", stranger.ca().to_str().unwrap())]].concat();
    let out = cx.cli_with(&["report", "--window", "all"], &untrusted);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("cannot reach the analytics service") && err.contains("certificate"), "{err}");
    assert!(err.contains("give the CA that signed it with --ca-file"), "{err}");
    // Nor is a TLS port spoken to in the clear, nor is a CA given beside an http:// URL.
    let out = cx.cli_with(&["report"], &[("CXGAP_ANALYTICS_URL", &analytics.replace("https", "http"))]);
    assert_eq!(out.status.code(), Some(2), "plaintext to a TLS port: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("transport error"), "{}", text(&out.stderr));
    let out = cx.cli_with(&["report"], &[("CXGAP_CA_FILE", ca)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is http://, which is never encrypted"), "{}", text(&out.stderr));
    let out = cx.cli_with(&["report"], &[&secure[..], &[("CXGAP_CA_FILE", key)]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("holds no PEM block \"CERTIFICATE\""), "{}", text(&out.stderr));
}
