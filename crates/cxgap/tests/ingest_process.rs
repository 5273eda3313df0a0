//! `cxgap ingest`, `cxgap tenants` and `cxgap keys` as real processes: configured from
//! the environment, serving until SIGTERM, then draining and exiting 0; and with TLS on
//! its own ports, mutual TLS included (certificates from openssl, clients curl and the
//! `cxgap` CLI).

use cxgap_testkit::process::{curl, stop};
use cxgap_testkit::tls::Pki;
use cxgap_testkit::{Broker, TestDb, free_port};
use std::process::{Command, Stdio};
use std::time::Duration;

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

    let (status, stderr) = stop(&mut child).await;
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

#[tokio::test]
async fn the_ingest_process_serves_its_ports_over_tls_and_mutual_tls() {
    let broker = Broker::start().unwrap();
    let db = TestDb::new().await.unwrap();
    let mut c = cxgap(&db.url);
    c.args(["tenants", "create", "acme"]);
    run(c);
    let mut c = cxgap(&db.url);
    c.args(["keys", "create", "acme", "--label", "tls-test"]);
    let key = run(c).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cluster").unwrap();
    let stranger = Pki::new(dir.path(), "stranger").unwrap();
    let (server, client, impostor) =
        (pki.server("ingest").unwrap(), pki.client("ana").unwrap(), stranger.client("eve").unwrap());
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (ca, cert, client_key) = (path(pki.ca()), path(&client.cert), path(&client.key));

    // A key that is not the certificate's stops the service before it serves.
    let mut c = cxgap(&db.url);
    let out = c
        .args(["ingest", "--check-config", "--kafka-brokers", &broker.bootstrap()])
        .env("CXGAP_TLS_CERT_FILE", &server.cert)
        .env("CXGAP_TLS_KEY_FILE", &client.key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server TLS") && err.contains("do not make a server identity"), "{err}");

    // The service with TLS on both ports; with `client_ca`, mutual TLS.
    let start = |client_ca: Option<&std::path::Path>| {
        let (grpc, http) = (free_port(), free_port());
        let mut c = cxgap(&db.url);
        c.arg("ingest")
            .args(["--kafka-brokers", &broker.bootstrap()])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}"), "--http-addr", &format!("127.0.0.1:{http}")])
            .env("CXGAP_TLS_CERT_FILE", &server.cert)
            .env("CXGAP_TLS_KEY_FILE", &server.key)
            .env("CXGAP_LOG_FORMAT", "plain")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(ca) = client_ca {
            c.env("CXGAP_TLS_CLIENT_CA_FILE", ca);
        }
        (c.spawn().unwrap(), grpc, http)
    };
    let (mut child, grpc, http) = start(Some(pki.ca()));
    let readyz = format!("https://127.0.0.1:{http}/readyz");
    let trusted = ["--cacert", &ca, "--cert", &cert, "--key", &client_key];
    cxgap_testkit::eventually(Duration::from_secs(30), "readiness over mutual TLS", || async {
        (curl(&readyz, &trusted) == Ok(200)).then_some(())
    })
    .await;
    // Without a client certificate the kubelet's probes are answered and nothing else is.
    assert_eq!(curl(&readyz, &["--cacert", &ca]), Ok(200));
    assert_eq!(curl(&format!("https://127.0.0.1:{http}/healthz"), &["--cacert", &ca]), Ok(200));
    assert_eq!(curl(&format!("https://127.0.0.1:{http}/metrics"), &["--cacert", &ca]), Ok(401));
    assert_eq!(curl(&format!("https://127.0.0.1:{http}/metrics"), &trusted), Ok(200));
    // A certificate another CA signed fails the handshake; plaintext gets no answer.
    let (eve_cert, eve_key) = (path(&impostor.cert), path(&impostor.key));
    let eve = curl(&readyz, &["--cacert", &ca, "--cert", &eve_cert, "--key", &eve_key]);
    assert!(eve.is_err(), "a stranger's client certificate was answered: {eve:?}");
    assert_ne!(curl(&format!("http://127.0.0.1:{http}/readyz"), &[]), Ok(200));
    assert!(curl(&readyz, &[]).is_err(), "the server's certificate is checked against the system's CAs");

    // The API over both ports: HTTP and gRPC (the CLI), each with the client certificate.
    let body = r#"{"event_id":"tls-1","customer_id":"c","channel":"EMAIL","journey_stage":"BILLING","occurred_at":"2026-01-01","csat":2}"#;
    let auth = format!("authorization: Bearer {key}");
    let post = |tls: &[&str]| {
        let request = ["-H", &auth, "-H", "content-type: application/json", "--data", body];
        curl(&format!("https://127.0.0.1:{http}/v1/feedback"), &[tls, &request[..]].concat())
    };
    assert_eq!(post(&["--cacert", &ca]), Ok(401), "the API without a client certificate");
    assert_eq!(post(&trusted), Ok(200));
    let send = |grpc: u16, id: &str, tls: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_cxgap"))
            .args(["send", &body.replace("tls-1", id)])
            .env("CXGAP_INGEST_URL", format!("https://127.0.0.1:{grpc}"))
            .env("CXGAP_API_KEY", &key)
            .env("CXGAP_CA_FILE", &ca)
            .env_remove("CXGAP_CLIENT_CERT")
            .env_remove("CXGAP_CLIENT_KEY")
            .envs(tls.iter().copied())
            .output()
            .unwrap()
    };
    let out = send(grpc, "tls-x", &[]);
    assert!(!out.status.success(), "gRPC without a client certificate: {}", String::from_utf8_lossy(&out.stdout));
    let out = send(grpc, "tls-2", &[("CXGAP_CLIENT_CERT", &cert), ("CXGAP_CLIENT_KEY", &client_key)]);
    assert!(out.status.success(), "gRPC over mutual TLS: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tls-2: accepted"));
    let (status, stderr) = stop(&mut child).await;
    assert!(status.success(), "exit {status:?}: {stderr}");

    // TLS without client certificates: both ports answer a client that trusts the CA.
    let (mut child, grpc, http) = start(None);
    let metrics = format!("https://127.0.0.1:{http}/metrics");
    cxgap_testkit::eventually(Duration::from_secs(30), "metrics over TLS", || async {
        (curl(&metrics, &["--cacert", &ca]) == Ok(200)).then_some(())
    })
    .await;
    let out = send(grpc, "tls-3", &[]);
    assert!(out.status.success(), "gRPC over TLS: {}", String::from_utf8_lossy(&out.stderr));
    let (status, stderr) = stop(&mut child).await;
    assert!(status.success(), "exit {status:?}: {stderr}");
    let mut ids: Vec<String> = broker
        .fetch_all("cxgap.feedback.v1")
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(r.header("cxgap-id").unwrap_or_default()).into_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["tls-1", "tls-2", "tls-3"], "exactly the accepted events reached the topic");
}
