//! The broker fails mid-stream: callers hear UNAVAILABLE (never a silent accept) and
//! every acknowledged event is on the topic once the broker is back.

mod support;

use cxgap_proto::ingest::SubmitFeedbackRequest;
use std::collections::HashSet;
use std::time::Duration;
use support::*;
use tonic::Code;

#[tokio::test]
async fn broker_stopped_mid_stream_is_unavailable_and_loses_nothing_acknowledged() {
    let env = start(&[("CXGAP_DELIVERY_TIMEOUT_MS", "1500")]).await;
    let mut client = env.client().await;
    let mut acked: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let send = async |client: &mut cxgap_proto::ingest::ingest_service_client::IngestServiceClient<_>, id: String| {
        let r = client
            .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event(&id, "c1")) }, &env.acme_key))
            .await;
        match r {
            Ok(_) => Ok(id),
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{id}: only UNAVAILABLE is acceptable here, got {s:?}");
                Err(id)
            }
        }
    };
    for i in 0..40 {
        acked.push(send(&mut client, format!("before-{i}")).await.expect("broker is up"));
    }

    // Stop the broker: the process is frozen, connections hang.
    env.broker.pause();
    for i in 0..3 {
        match send(&mut client, format!("during-{i}")).await {
            Ok(id) => panic!("{id} acknowledged while the broker was stopped"),
            Err(id) => refused.push(id),
        }
    }
    let ready = env.get("/readyz").await;
    assert_eq!(ready.status, 503, "not ready without a broker: {}", ready.text());
    assert!(ready.text().contains("broker"), "{}", ready.text());

    env.broker.resume();
    // The caller's retry of a refused event is safe; keep sending until the producer has
    // recovered, then everything is acknowledged again.
    let key = env.acme_key.clone();
    cxgap_testkit::eventually(Duration::from_secs(30), "the producer to recover", || {
        let mut c = client.clone();
        let key = key.clone();
        async move {
            c.submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("probe", "c1")) }, &key)).await.ok()
        }
    })
    .await;
    acked.push("probe".into());
    for id in refused.clone() {
        acked.push(send(&mut client, id).await.expect("retry after recovery"));
    }
    for i in 0..40 {
        acked.push(send(&mut client, format!("after-{i}")).await.expect("broker is back"));
    }
    assert_eq!(env.get("/readyz").await.status, 200);

    let on_topic: Vec<String> =
        env.fetch().iter().map(|r| String::from_utf8(r.header("cxgap-id").unwrap().to_vec()).unwrap()).collect();
    let set: HashSet<&String> = on_topic.iter().collect();
    for id in &acked {
        assert!(set.contains(id), "{id} was acknowledged but is not on the topic");
    }
    // Acknowledged events are there once; a refused event may also have landed before
    // its retry (the caller was told UNAVAILABLE, so a duplicate is allowed there only).
    for id in &acked {
        let n = on_topic.iter().filter(|x| *x == id).count();
        assert!(n == 1 || refused.contains(id), "{id} is on the topic {n} times");
    }
    env.stop().await.unwrap();
}

#[tokio::test]
async fn broker_killed_and_restarted_recovers() {
    let env = start(&[("CXGAP_DELIVERY_TIMEOUT_MS", "1500")]).await;
    let mut env = env;
    let mut client = env.client().await;
    client
        .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("k-0", "c")) }, &env.acme_key))
        .await
        .unwrap();
    env.broker.kill();
    let s = client
        .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("k-1", "c")) }, &env.acme_key))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert_eq!(env.get("/readyz").await.status, 503);

    // A new, empty broker on the same address (in-memory storage), topic declared again
    // as an operator (or Strimzi) would.
    env.broker.restart().unwrap();
    env.broker.create_topic(TOPIC, 3).await.unwrap();
    let key = env.acme_key.clone();
    cxgap_testkit::eventually(Duration::from_secs(60), "publishing to work again", || {
        let mut c = client.clone();
        let key = key.clone();
        async move { c.submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("k-1", "c")) }, &key)).await.ok() }
    })
    .await;
    let ids: Vec<Vec<u8>> = env.fetch().iter().map(|r| r.header("cxgap-id").unwrap().to_vec()).collect();
    assert!(ids.contains(&b"k-1".to_vec()));
    env.stop().await.unwrap();
}
