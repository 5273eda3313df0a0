//! Kafka over TLS, for real: tansu behind a TLS terminator (socat, with a certificate made
//! here by openssl's CA; see `cxgap_testkit::tls`), advertising the terminator's port, so every connection a client makes
//! is encrypted; and behind one that asks for a client certificate (mutual TLS). Then
//! SASL/SCRAM: tansu requiring every client to authenticate, in the clear and behind the
//! terminator. The client's settings come from the services' own `CXGAP_KAFKA_*` settings.

use cxgap_bus::kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber};
use cxgap_bus::{Publisher, Record, Subscriber, TopicSpec};
use cxgap_runtime::settings::Settings;
use cxgap_testkit::tls::{Pki, Terminator};
use std::collections::BTreeMap;
use std::time::Duration;

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

/// A broker reached only through TLS, its certificate signed by `pki`; when `mutual`, its
/// listener asks for a client certificate that CA signed. Holds what must stay alive and
/// the address to bootstrap from.
struct SecureBroker {
    _broker: cxgap_testkit::broker::Broker,
    _terminator: Terminator,
    bootstrap: String,
}

fn secure_broker(pki: &Pki, mutual: bool) -> SecureBroker {
    let (plain, tls) = (cxgap_testkit::free_port(), cxgap_testkit::free_port());
    let broker = cxgap_testkit::broker::Broker::start_advertising(plain, tls).unwrap();
    let client_ca = mutual.then(|| pki.ca());
    let terminator = Terminator::start(tls, plain, &pki.server("broker").unwrap(), client_ca).unwrap();
    SecureBroker { _broker: broker, _terminator: terminator, bootstrap: format!("127.0.0.1:{tls}") }
}

#[tokio::test]
async fn publishes_and_consumes_over_tls_and_refuses_an_unknown_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "kafka").unwrap();
    let other = Pki::new(dir.path(), "other").unwrap();
    let secure = secure_broker(&pki, false);
    let bootstrap = &secure.bootstrap;
    let (ca, other) = (pki.ca().to_str().unwrap(), other.ca().to_str().unwrap());

    let trusted = kafka(bootstrap, &[("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_CA_LOCATION", ca)]);
    publish_five(&trusted).await;
    read_five(&trusted, "tls-test").await;

    // A broker whose certificate the client's CA did not sign is not talked to, and
    // neither is a TLS port in the clear: the publish fails, nothing is sent.
    for values in [vec![("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_CA_LOCATION", other)], vec![]] {
        let refused = KafkaPublisher::new(kafka(bootstrap, &values)).unwrap();
        let r = refused.publish(vec![record(9)]).await;
        assert!(r[0].is_err(), "{values:?}: {:?}", r[0]);
    }
}

/// Creates the one-partition topic `secure` and publishes `v0`…`v4` to it.
async fn publish_five(config: &KafkaConfig) {
    let publisher = KafkaPublisher::new(config.clone()).unwrap();
    publisher.ensure_topics(&[TopicSpec { name: "secure".into(), partitions: 1, replication: 1 }]).await.unwrap();
    let sent = publisher.publish((0..5).map(record).collect()).await;
    let offsets: Vec<i64> = sent.into_iter().map(|r| r.expect("published").offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4]);
}

/// Reads `secure` from the start in a group of its own: `v0`…`v4` first. Returns the
/// subscriber, to ask for more.
async fn read_five(config: &KafkaConfig, group: &str) -> KafkaSubscriber {
    let mut sub = KafkaSubscriber::new(config, group, &["secure"]).unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let c = tokio::time::timeout(Duration::from_secs(30), sub.next()).await.expect("records arrive").unwrap();
        got.push(String::from_utf8(c.record.payload).unwrap());
    }
    assert_eq!(got, ["v0", "v1", "v2", "v3", "v4"]);
    sub
}

/// Publishes one record, then reads it back in a group of its own.
async fn round_trip(config: &KafkaConfig, i: usize) {
    let publisher = KafkaPublisher::new(config.clone()).unwrap();
    let sent = publisher.publish(vec![record(i)]).await;
    let offset = sent.into_iter().next().unwrap().expect("published over mutual TLS").offset;
    let mut sub = KafkaSubscriber::new(config, &format!("mtls-{i}"), &["secure"]).unwrap();
    loop {
        let c = tokio::time::timeout(Duration::from_secs(30), sub.next()).await.expect("records arrive").unwrap();
        if c.offset == offset {
            assert_eq!(c.record.payload, format!("v{i}").into_bytes());
            break;
        }
    }
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_the_broker_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "kafka").unwrap();
    let other = Pki::new(dir.path(), "other").unwrap();
    // The listener trusts client certificates signed by the same CA as its own.
    let secure = secure_broker(&pki, true);
    let bootstrap = &secure.bootstrap;
    let ca = pki.ca().to_str().unwrap();
    let (client, stranger) = (pki.client("analytics").unwrap(), other.client("analytics").unwrap());
    let encrypted = client.encrypted_key("correct horse").unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let mtls = |cert: String, key: String, password: &str| {
        kafka(
            bootstrap,
            &[
                ("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"),
                ("CXGAP_KAFKA_SSL_CA_LOCATION", ca),
                ("CXGAP_KAFKA_SSL_CERTIFICATE_LOCATION", &cert),
                ("CXGAP_KAFKA_SSL_KEY_LOCATION", &key),
                ("CXGAP_KAFKA_SSL_KEY_PASSWORD", password),
            ],
        )
    };

    let trusted = mtls(s(&client.cert), s(&client.key), "");
    let publisher = KafkaPublisher::new(trusted.clone()).unwrap();
    publisher.ensure_topics(&[TopicSpec { name: "secure".into(), partitions: 1, replication: 1 }]).await.unwrap();
    round_trip(&trusted, 1).await;
    // The same certificate with its key encrypted, and the key's password given.
    round_trip(&mtls(s(&client.cert), s(&encrypted), "correct horse"), 2).await;

    // No client certificate, or one signed by a CA the broker does not trust: the
    // handshake fails and nothing is sent.
    let without = kafka(bootstrap, &[("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_CA_LOCATION", ca)]);
    for (what, config) in
        [("no certificate", without), ("an untrusted one", mtls(s(&stranger.cert), s(&stranger.key), ""))]
    {
        let refused = KafkaPublisher::new(config).unwrap();
        let r = refused.publish(vec![record(9)]).await;
        assert!(r[0].is_err(), "{what}: {:?}", r[0]);
    }
}

#[tokio::test]
async fn scram_users_publish_and_consume_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = cxgap_testkit::broker::Broker::start_authenticated(
        dir.path(),
        &[("ingest", "ingest-secret", "scram512"), ("analytics", "analytics-secret", "scram256")],
    )
    .unwrap();
    let bootstrap = broker.bootstrap();
    let sasl = |user: &str, password: &str, mechanism: &str| {
        kafka(
            &bootstrap,
            &[
                ("CXGAP_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                ("CXGAP_KAFKA_SASL_MECHANISM", mechanism),
                ("CXGAP_KAFKA_SASL_USERNAME", user),
                ("CXGAP_KAFKA_SASL_PASSWORD", password),
            ],
        )
    };

    publish_five(&sasl("ingest", "ingest-secret", "SCRAM-SHA-512")).await;

    // A wrong password, a mechanism the user has no credential for, no credentials at
    // all: each publish fails.
    for (what, config) in [
        ("a wrong password", sasl("ingest", "guessed", "SCRAM-SHA-512")),
        ("the other mechanism", sasl("ingest", "ingest-secret", "SCRAM-SHA-256")),
        ("an unknown user", sasl("mallory", "ingest-secret", "SCRAM-SHA-512")),
        ("no credentials", kafka(&bootstrap, &[])),
    ] {
        let refused = KafkaPublisher::new(config).unwrap();
        let r = refused.publish(vec![record(9)]).await;
        assert!(r[0].is_err(), "{what}: {:?}", r[0]);
    }

    // The other user, with the other mechanism, reads exactly what the first wrote:
    // nothing of the refused publishes reached the topic.
    let mut sub = read_five(&sasl("analytics", "analytics-secret", "SCRAM-SHA-256"), "sasl-test").await;
    assert!(tokio::time::timeout(Duration::from_secs(2), sub.next()).await.is_err(), "no record beyond the five");
}

#[tokio::test]
async fn scram_over_tls_publishes_and_consumes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "kafka").unwrap();
    let (plain, tls) = (cxgap_testkit::free_port(), cxgap_testkit::free_port());
    let _broker = cxgap_testkit::broker::Broker::start_authenticated_advertising(
        plain,
        tls,
        dir.path(),
        &[("ingest", "ingest-secret", "scram512")],
    )
    .unwrap();
    let _terminator = Terminator::start(tls, plain, &pki.server("broker").unwrap(), None).unwrap();
    let bootstrap = format!("127.0.0.1:{tls}");
    let sasl_ssl = |password: &str| {
        kafka(
            &bootstrap,
            &[
                ("CXGAP_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("CXGAP_KAFKA_SSL_CA_LOCATION", pki.ca().to_str().unwrap()),
                ("CXGAP_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                ("CXGAP_KAFKA_SASL_USERNAME", "ingest"),
                ("CXGAP_KAFKA_SASL_PASSWORD", password),
            ],
        )
    };
    publish_five(&sasl_ssl("ingest-secret")).await;
    read_five(&sasl_ssl("ingest-secret"), "sasl-tls-test").await;
    let refused = KafkaPublisher::new(sasl_ssl("guessed")).unwrap();
    let r = refused.publish(vec![record(9)]).await;
    assert!(r[0].is_err(), "a wrong password over TLS: {:?}", r[0]);
}
