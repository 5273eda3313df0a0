//! The ingest service against a real broker (tansu) and real PostgreSQL.

mod support;

use cxgap_domain::Timestamp;
use cxgap_proto::common as pb;
use cxgap_proto::convert;
use cxgap_proto::ingest::{SubmitFeedbackBatchRequest, SubmitFeedbackRequest};
use prost::Message;
use std::collections::HashMap;
use support::*;

const FAR: Timestamp = Timestamp(i64::MAX / 4);

#[tokio::test]
async fn every_accepted_event_is_on_the_topic_exactly_once_as_sent() {
    let env = start(&[]).await;
    let mut client = env.client().await;
    let mut sent: HashMap<String, cxgap_domain::FeedbackEvent> = HashMap::new();
    let mut remember = |e: &pb::FeedbackEvent| {
        sent.insert(e.event_id.clone(), convert::feedback_from_pb(e.clone(), FAR).unwrap());
    };

    // gRPC: single, batch, client stream.
    for i in 0..5 {
        let e = event(&format!("g-one-{i}"), &format!("c{i}"));
        remember(&e);
        let r = client.submit_feedback(authed(SubmitFeedbackRequest { event: Some(e) }, &env.acme_key)).await.unwrap();
        assert!(!r.get_ref().duplicate);
    }
    let batch: Vec<pb::FeedbackEvent> =
        (0..20).map(|i| event(&format!("g-batch-{i}"), &format!("c{}", i % 7))).collect();
    batch.iter().for_each(&mut remember);
    let r = client
        .submit_feedback_batch(authed(
            SubmitFeedbackBatchRequest { events: batch.clone(), atomic: false },
            &env.acme_key,
        ))
        .await
        .unwrap();
    assert_eq!((r.get_ref().accepted, r.get_ref().duplicates), (20, 0));
    let stream: Vec<SubmitFeedbackRequest> = (0..30)
        .map(|i| SubmitFeedbackRequest { event: Some(event(&format!("g-stream-{i}"), &format!("c{}", i % 5))) })
        .collect();
    stream.iter().for_each(|m| remember(m.event.as_ref().unwrap()));
    let r = client.stream_feedback(authed(tokio_stream::iter(stream), &env.acme_key)).await.unwrap();
    assert_eq!(r.get_ref().accepted, 30);

    // Retries are harmless: answered as duplicates, not published again.
    let again = client
        .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("g-one-0", "c0")) }, &env.acme_key))
        .await
        .unwrap();
    assert!(again.get_ref().duplicate);
    let r = client
        .submit_feedback_batch(authed(SubmitFeedbackBatchRequest { events: batch, atomic: false }, &env.acme_key))
        .await
        .unwrap();
    assert_eq!((r.get_ref().accepted, r.get_ref().duplicates), (0, 20));

    // HTTP: single, batch, CSV import.
    let mut http_ids = Vec::new();
    for i in 0..5 {
        let id = format!("h-one-{i}");
        let body = event_json(&id, "h-cust").to_string();
        let r = env.post("/v1/feedback", Some(&env.acme_key), "application/json", body.as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        http_ids.push(id);
    }
    let events: Vec<_> = (0..20).map(|i| event_json(&format!("h-batch-{i}"), "h-cust")).collect();
    http_ids.extend((0..20).map(|i| format!("h-batch-{i}")));
    let r = env
        .post(
            "/v1/feedback/batch",
            Some(&env.acme_key),
            "application/json",
            serde_json::json!({"events": events}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 20);
    let mut csv = String::from("event_id,customer_id,channel,journey_stage,occurred_at,nps,comment,segment.tier\n");
    for i in 0..20 {
        csv.push_str(&format!(
            "csv-{i},csv-cust-{},PHONE,SUPPORT,2026-01-0{}T08:00:00Z,{},\"slow, \"\"again\"\"\",gold\n",
            i % 3,
            1 + i % 9,
            i % 11
        ));
        http_ids.push(format!("csv-{i}"));
    }
    let r = env.post("/v1/feedback/import", Some(&env.acme_key), "text/csv", csv.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 20);

    let records = env.fetch();
    assert_eq!(records.len(), sent.len() + http_ids.len(), "each accepted event exactly once");
    let mut seen = HashMap::new();
    for rec in &records {
        let id = String::from_utf8(rec.header("cxgap-id").unwrap().to_vec()).unwrap();
        assert!(seen.insert(id.clone(), ()).is_none(), "{id} twice on the topic");
        assert_eq!(rec.header("cxgap-schema"), Some(&b"cxgap.common.v1.FeedbackEvent"[..]));
        assert_eq!(rec.header("cxgap-schema-version"), Some(&b"1"[..]));
        let wire = pb::FeedbackEvent::decode(rec.payload.as_slice()).unwrap();
        assert_eq!(wire.tenant_id, env.acme, "the key's tenant");
        assert_eq!(rec.key, format!("{}/{}", env.acme, wire.customer_id).into_bytes());
        assert!(wire.received_at.is_some());
        if let Some(expected) = sent.get(&id) {
            assert_eq!(&convert::feedback_from_pb(wire.clone(), FAR).unwrap(), expected, "{id} as sent");
        } else {
            assert!(http_ids.contains(&id), "{id} was never sent");
        }
    }
    // A quoted CSV comment survives intact.
    let csv0 = records.iter().find(|r| r.header("cxgap-id") == Some(&b"csv-0"[..])).unwrap();
    assert_eq!(pb::FeedbackEvent::decode(csv0.payload.as_slice()).unwrap().comment, "slow, \"again\"");
    env.stop().await.unwrap();
}

#[tokio::test]
async fn a_tenant_id_in_the_payload_never_overrides_the_key() {
    let env = start(&[]).await;
    let mut client = env.client().await;
    let mut e = event("spoof-1", "c1");
    e.tenant_id = env.globex.clone();
    client.submit_feedback(authed(SubmitFeedbackRequest { event: Some(e) }, &env.acme_key)).await.unwrap();
    let mut body = event_json("spoof-2", "c2");
    body["tenant_id"] = serde_json::json!(env.globex);
    let r = env.post("/v1/feedback", Some(&env.acme_key), "application/json", body.to_string().as_bytes()).await;
    assert_eq!(r.status, 400, "tenant_id is not a field of the HTTP body: {}", r.text());
    assert_eq!(r.json()["error"]["violations"][0]["field"], "tenant_id");
    // The same event id under two tenants is two events.
    client
        .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("spoof-1", "c1")) }, &env.globex_key))
        .await
        .unwrap();
    let recs = env.fetch();
    let tenants: Vec<String> =
        recs.iter().map(|r| pb::FeedbackEvent::decode(r.payload.as_slice()).unwrap().tenant_id).collect();
    assert_eq!(recs.len(), 2);
    assert!(tenants.contains(&env.acme) && tenants.contains(&env.globex));
    env.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_health_readiness_and_metrics() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let env = start(&[]).await;
    // Reflection: what a client generated by another toolchain (grpcurl, Python, Go) needs.
    let mut refl = ServerReflectionClient::new(env.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("{msg:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["cxgap.ingest.v1.IngestService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    // And the file descriptor of a service, so the client can build calls from it.
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("cxgap.ingest.v1.IngestService".into())),
    };
    let mut resp = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    assert!(
        matches!(msg.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty())
    );

    let mut health = tonic_health::pb::health_client::HealthClient::new(env.channel().await);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest { service: "cxgap.ingest.v1.IngestService".into() })
        .await
        .unwrap();
    assert_eq!(r.get_ref().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    assert_eq!(env.get("/healthz").await.status, 200);
    let ready = env.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    let mut client = env.client().await;
    client
        .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("m-1", "c")) }, &env.acme_key))
        .await
        .unwrap();
    let metrics = env.get("/metrics").await.text();
    assert!(metrics.contains(r#"cxgap_ingest_events_total{channel="CHAT",result="accepted"} 1"#), "{metrics}");
    assert!(metrics.contains("cxgap_ingest_produce_seconds_count 1"), "{metrics}");
    assert!(metrics.contains(r#"cxgap_ingest_requests_total{transport="grpc",code="OK"}"#), "{metrics}");
    env.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_work_and_stops_serving() {
    let env = start(&[]).await;
    let mut client = env.client().await;
    let events: Vec<pb::FeedbackEvent> = (0..200).map(|i| event(&format!("s-{i}"), &format!("c{i}"))).collect();
    let key = env.acme_key.clone();
    let inflight = tokio::spawn(async move {
        client.submit_feedback_batch(authed(SubmitFeedbackBatchRequest { events, atomic: false }, &key)).await
    });
    // Wait until the request is being served, then ask the service to stop.
    cxgap_testkit::eventually(std::time::Duration::from_secs(10), "the batch to arrive", || async {
        let m = env.get("/metrics").await.text();
        m.contains("cxgap_ingest_produce_seconds_count").then_some(())
    })
    .await;
    let (grpc, http) = (env.grpc, env.http);
    let records_before_stop = {
        env.shutdown.cancel();
        let r = inflight.await.unwrap();
        r.map(|r| r.into_inner().accepted).unwrap_or(0)
    };
    let broker = &env.broker;
    let on_topic = broker.fetch_all(TOPIC).unwrap().len() as u32;
    assert!(on_topic >= records_before_stop, "every acknowledged event is on the topic");
    env.task.await.unwrap().expect("clean shutdown");
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err(), "gRPC stopped");
    assert!(tokio::net::TcpStream::connect(http).await.is_err(), "HTTP stopped");
}
