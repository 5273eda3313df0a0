//! Kafka over TLS, for real: tansu behind a TLS terminator (socat, with a certificate made
//! here by openssl), advertising the terminator's port, so every connection a client makes
//! is encrypted. The client's settings come from the services' own `CXGAP_KAFKA_*` settings.

use cxgap_bus::kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber};
use cxgap_bus::{Publisher, Record, Subscriber, TopicSpec};
use cxgap_runtime::settings::Settings;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A self-signed certificate for 127.0.0.1 in `dir`: (certificate, key).
fn certificate(dir: &Path, name: &str) -> (String, String) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()])
        .output()
        .expect("openssl (Debian package openssl; .ci/run installs it)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert.to_str().unwrap().into(), key.to_str().unwrap().into())
}

struct Terminator(Child);

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// TLS on `port`, forwarded in the clear to `to`.
fn terminator(port: u16, to: u16, cert: &str, key: &str) -> Terminator {
    let child = Command::new("socat")
        .arg(format!("OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={cert},key={key},verify=0"))
        .arg(format!("TCP:127.0.0.1:{to}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (Debian package socat; .ci/run installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "socat did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Terminator(child)
}

/// The bus settings a service would build from these `CXGAP_KAFKA_*` values.
fn kafka(bootstrap: &str, values: &[(&str, &str)]) -> KafkaConfig {
    let values: BTreeMap<String, String> = values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut s = Settings::new(&values, &[], "test");
    let security = s.kafka_security();
    let mut config = KafkaConfig::new(bootstrap);
    config.extra = s.finish(security).unwrap().properties;
    config.delivery_timeout = Duration::from_secs(5);
    config
}

fn record(i: usize) -> Record {
    Record {
        topic: "secure".into(),
        key: format!("k{i}").into_bytes(),
        payload: format!("v{i}").into_bytes(),
        headers: vec![],
    }
}

#[tokio::test]
async fn publishes_and_consumes_over_tls_and_refuses_an_unknown_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "broker");
    let (other, _) = certificate(dir.path(), "other");
    let (plain, tls) = (cxgap_testkit::free_port(), cxgap_testkit::free_port());
    let _broker = cxgap_testkit::broker::Broker::start_advertising(plain, tls).unwrap();
    let _terminator = terminator(tls, plain, &cert, &key);
    let bootstrap = format!("127.0.0.1:{tls}");

    let trusted =
        kafka(&bootstrap, &[("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_CA_LOCATION", &cert)]);
    let publisher = KafkaPublisher::new(trusted.clone()).unwrap();
    publisher.ensure_topics(&[TopicSpec { name: "secure".into(), partitions: 1, replication: 1 }]).await.unwrap();
    let sent = publisher.publish((0..5).map(record).collect()).await;
    let offsets: Vec<i64> = sent.into_iter().map(|r| r.expect("published over TLS").offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4]);
    let mut sub = KafkaSubscriber::new(&trusted, "tls-test", &["secure"]).unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let c = tokio::time::timeout(Duration::from_secs(30), sub.next()).await.expect("records arrive").unwrap();
        got.push(String::from_utf8(c.record.payload).unwrap());
    }
    assert_eq!(got, ["v0", "v1", "v2", "v3", "v4"]);

    // A broker whose certificate the client's CA did not sign is not talked to, and
    // neither is a TLS port in the clear: the publish fails, nothing is sent.
    for values in
        [vec![("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_CA_LOCATION", other.as_str())], vec![]]
    {
        let refused = KafkaPublisher::new(kafka(&bootstrap, &values)).unwrap();
        let r = refused.publish(vec![record(9)]).await;
        assert!(r[0].is_err(), "{values:?}: {:?}", r[0]);
    }
}
