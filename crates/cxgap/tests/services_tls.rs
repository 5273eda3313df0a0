//! `cxgap analytics` and `cxgap alerting` as real processes serving mutual TLS on both
//! their ports, as the `production-tls` overlay runs them (ingest's own test,
//! `ingest_process.rs`, goes further into the cases): probes answered without a client
//! certificate, everything else only with one the CA signed, and the CLI's queries over
//! gRPC. Certificates from openssl; clients curl and the `cxgap` CLI.

use cxgap_testkit::process::{curl, stop};
use cxgap_testkit::tls::{Pair, Pki};
use cxgap_testkit::{Broker, TestDb, free_port};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const PEPPER: &str = "services-tls-test-pepper";

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn cxgap(db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cxgap"));
    c.env("CXGAP_DATABASE_URL", db).env("CXGAP_API_KEY_PEPPER", PEPPER);
    c
}

/// The service with mutual TLS on both ports.
fn start(service: &str, broker: &Broker, db: &TestDb, server: &Pair, ca: &Path) -> (Child, u16, u16) {
    let (grpc, http) = (free_port(), free_port());
    let child = cxgap(&db.url)
        .arg(service)
        .env("CXGAP_KAFKA_BROKERS", broker.bootstrap())
        .env("CXGAP_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("CXGAP_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("CXGAP_TOPIC_PARTITIONS", "2")
        .env("CXGAP_TLS_CERT_FILE", &server.cert)
        .env("CXGAP_TLS_KEY_FILE", &server.key)
        .env("CXGAP_TLS_CLIENT_CA_FILE", ca)
        .env("CXGAP_LOG_FORMAT", "plain")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, grpc, http)
}

#[tokio::test]
async fn analytics_and_alerting_serve_their_ports_over_mutual_tls() {
    let broker = Broker::start().unwrap();
    let db = TestDb::new().await.unwrap();
    let out = cxgap(&db.url).args(["tenants", "create", "acme"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cxgap(&db.url).args(["keys", "create", "acme", "--label", "tls"]).output().unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cluster").unwrap();
    let stranger = Pki::new(dir.path(), "stranger").unwrap();
    let (server, client, impostor) =
        (pki.server("pods").unwrap(), pki.client("ana").unwrap(), stranger.client("eve").unwrap());
    let (ca, cert, client_key) = (path(pki.ca()), path(&client.cert), path(&client.key));
    let trusted = ["--cacert", ca.as_str(), "--cert", &cert, "--key", &client_key];

    // The CLI's query of each service, over gRPC: with `certificate`, the client's.
    let query = |service: &str, grpc: u16, certificate: bool| -> Output {
        let (url, args): (&str, &[&str]) = match service {
            "analytics" => ("CXGAP_ANALYTICS_URL", &["report", "--by", "channel"]),
            _ => ("CXGAP_ALERTING_URL", &["rules", "list"]),
        };
        let mut c = Command::new(env!("CARGO_BIN_EXE_cxgap"));
        c.args(args)
            .env(url, format!("https://127.0.0.1:{grpc}"))
            .env("CXGAP_API_KEY", &key)
            .env("CXGAP_CA_FILE", &ca)
            .env_remove("CXGAP_CLIENT_CERT")
            .env_remove("CXGAP_CLIENT_KEY");
        if certificate {
            c.env("CXGAP_CLIENT_CERT", &cert).env("CXGAP_CLIENT_KEY", &client_key);
        }
        c.output().unwrap()
    };

    for service in ["analytics", "alerting"] {
        let (mut child, grpc, http) = start(service, &broker, &db, &server, pki.ca());
        let url = |p: &str| format!("https://127.0.0.1:{http}{p}");
        cxgap_testkit::eventually(Duration::from_secs(60), &format!("{service}'s readiness over mutual TLS"), || {
            let ready = curl(&url("/readyz"), &trusted);
            async move { (ready == Ok(200)).then_some(()) }
        })
        .await;
        // The kubelet's probes need no client certificate; nothing else is answered without.
        assert_eq!(curl(&url("/readyz"), &["--cacert", &ca]), Ok(200), "{service}");
        assert_eq!(curl(&url("/healthz"), &["--cacert", &ca]), Ok(200), "{service}");
        assert_eq!(curl(&url("/metrics"), &["--cacert", &ca]), Ok(401), "{service}");
        assert_eq!(curl(&url("/metrics"), &trusted), Ok(200), "{service}");
        // A client certificate another CA signed fails the handshake; plaintext is not TLS.
        let (eve_cert, eve_key) = (path(&impostor.cert), path(&impostor.key));
        let eve = curl(&url("/readyz"), &["--cacert", &ca, "--cert", &eve_cert, "--key", &eve_key]);
        assert!(eve.is_err(), "{service} answered a stranger's client certificate: {eve:?}");
        assert_ne!(curl(&format!("http://127.0.0.1:{http}/readyz"), &[]), Ok(200), "{service} in the clear");

        let refused = query(service, grpc, false);
        assert!(!refused.status.success(), "{service}'s gRPC without a client certificate");
        let answered = query(service, grpc, true);
        let stdout = String::from_utf8_lossy(&answered.stdout);
        assert!(
            answered.status.success(),
            "{service}'s gRPC over mutual TLS: {}",
            String::from_utf8_lossy(&answered.stderr)
        );
        // The service's answer, as the CLI prints it.
        let printed = if service == "analytics" { "events" } else { "severity" };
        assert!(stdout.contains(printed), "{service}'s answer: {stdout}");
        let (status, stderr) = stop(&mut child).await;
        assert!(status.success(), "{service} exit {status:?}: {stderr}");
    }
}
