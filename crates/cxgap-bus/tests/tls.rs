//! Kafka over TLS, for real: tansu behind a TLS terminator (socat, with a certificate made
//! here by openssl's CA; see `cxgap_testkit::tls`), advertising the terminator's port, so every connection a client makes
//! is encrypted. The client's settings come from the services' own `CXGAP_KAFKA_*` settings.

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

#[tokio::test]
async fn publishes_and_consumes_over_tls_and_refuses_an_unknown_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "kafka").unwrap();
    let other = Pki::new(dir.path(), "other").unwrap();
    let (plain, tls) = (cxgap_testkit::free_port(), cxgap_testkit::free_port());
    let _broker = cxgap_testkit::broker::Broker::start_advertising(plain, tls).unwrap();
    let _terminator = Terminator::start(tls, plain, &pki.server("broker").unwrap(), None).unwrap();
    let bootstrap = format!("127.0.0.1:{tls}");
    let (ca, other) = (pki.ca().to_str().unwrap(), other.ca().to_str().unwrap());

    let trusted = kafka(&bootstrap, &[("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_CA_LOCATION", ca)]);
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
    for values in [vec![("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_CA_LOCATION", other)], vec![]] {
        let refused = KafkaPublisher::new(kafka(&bootstrap, &values)).unwrap();
        let r = refused.publish(vec![record(9)]).await;
        assert!(r[0].is_err(), "{values:?}: {:?}", r[0]);
    }
}
