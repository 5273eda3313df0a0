//! A catalogue of bad inputs over gRPC and HTTP: each gets its asserted code and names
//! the bad field, and nothing at all reaches the topic.

mod support;

use cxgap_proto::common as pb;
use cxgap_proto::ingest::{
    SubmitAssessmentRequest, SubmitFeedbackBatchRequest, SubmitFeedbackRequest,
    ingest_service_client::IngestServiceClient,
};
use support::*;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

type Mutate = Box<dyn Fn(&mut pb::FeedbackEvent)>;

/// (case, path, API key, body, expected status, expected bad field)
type HttpCase<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, Option<&'a str>);

fn grpc_cases() -> Vec<(&'static str, Mutate, &'static str)> {
    let future = now_pb().seconds + 3600;
    vec![
        ("nps above 10", Box::new(|e| e.nps = Some(11)), "nps"),
        ("csat 0", Box::new(|e| e.csat = Some(0)), "csat"),
        ("ces 8", Box::new(|e| e.ces = Some(8)), "ces"),
        ("missing event_id", Box::new(|e| e.event_id.clear()), "event_id"),
        ("event_id of 129 characters", Box::new(|e| e.event_id = "x".repeat(129)), "event_id"),
        ("event_id with a control character", Box::new(|e| e.event_id = "a\u{7}b".into()), "event_id"),
        ("missing customer_id", Box::new(|e| e.customer_id.clear()), "customer_id"),
        // PostgreSQL's text cannot hold U+0000: analytics could never store such an event.
        ("customer_id with a NUL character", Box::new(|e| e.customer_id = "c\u{0}1".into()), "customer_id"),
        ("touchpoint with a NUL character", Box::new(|e| e.touchpoint = "check\u{0}out".into()), "touchpoint"),
        ("comment with a NUL character", Box::new(|e| e.comment = "late\u{0}".into()), "comment"),
        ("channel unspecified", Box::new(|e| e.channel = 0), "channel"),
        ("unknown channel number", Box::new(|e| e.channel = 99), "channel"),
        ("unknown journey stage number", Box::new(|e| e.journey_stage = 42), "journey_stage"),
        (
            "occurred_at an hour ahead",
            Box::new(move |e| e.occurred_at = Some(prost_types::Timestamp { seconds: future, nanos: 0 })),
            "occurred_at",
        ),
        ("missing occurred_at", Box::new(|e| e.occurred_at = None), "occurred_at"),
        (
            "negative nanos",
            Box::new(|e| e.occurred_at = Some(prost_types::Timestamp { seconds: 1, nanos: -1 })),
            "occurred_at",
        ),
        ("perception 9", Box::new(|e| e.ratings[0].perception = 9), "ratings[0].perception"),
        ("expectation 0", Box::new(|e| e.ratings[0].expectation = 0), "ratings[0].expectation"),
        ("unknown dimension", Box::new(|e| e.ratings[0].dimension = 77), "ratings[0].dimension"),
        ("comment over 10,000 characters", Box::new(|e| e.comment = "é".repeat(10_001)), "comment"),
        (
            "no measurement and no comment",
            Box::new(|e| {
                e.nps = None;
                e.ratings.clear();
                e.comment.clear();
            }),
            "event",
        ),
        (
            "negative wait",
            Box::new(|e| e.operational.as_mut().unwrap().wait_seconds = Some(-5.0)),
            "operational.wait_seconds",
        ),
        (
            "33 segment attributes",
            Box::new(|e| {
                e.segment.as_mut().unwrap().attributes = (0..33).map(|i| (format!("k{i}"), "v".to_string())).collect();
            }),
            "segment.attributes",
        ),
        (
            "negative customer value",
            Box::new(|e| e.segment.as_mut().unwrap().customer_value = Some(-1.0)),
            "segment.customer_value",
        ),
    ]
}

async fn expect_invalid(
    client: &mut IngestServiceClient<Channel>,
    key: &str,
    name: &str,
    e: pb::FeedbackEvent,
    field: &str,
) {
    let status = client.submit_feedback(authed(SubmitFeedbackRequest { event: Some(e) }, key)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
    let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("{name}: no BadRequest details"));
    assert!(
        bad.field_violations.iter().any(|v| v.field == field),
        "{name}: {field} not among {:?}",
        bad.field_violations
    );
}

#[tokio::test]
async fn bad_inputs_are_refused_with_their_code_and_nothing_is_published() {
    let env = start(&[
        ("CXGAP_MAX_BATCH_EVENTS", "50"),
        ("CXGAP_MAX_EVENT_BYTES", "4096"),
        ("CXGAP_MAX_REQUEST_BYTES", "131072"),
    ])
    .await;
    let mut client = env.client().await;
    let mut checked = 0;

    // ---- gRPC: per-field violations
    for (i, (name, mutate, field)) in grpc_cases().into_iter().enumerate() {
        let mut e = event(&format!("bad-{i}"), "c1");
        mutate(&mut e);
        expect_invalid(&mut client, &env.acme_key, name, e, field).await;
        checked += 1;
    }
    // Several problems at once are all reported.
    let mut e = event("multi", "");
    e.nps = Some(12);
    e.channel = 0;
    let status =
        client.submit_feedback(authed(SubmitFeedbackRequest { event: Some(e) }, &env.acme_key)).await.unwrap_err();
    let fields: Vec<String> =
        status.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert!(["customer_id", "channel", "nps"].iter().all(|f| fields.iter().any(|x| x == f)), "{fields:?}");
    checked += 1;
    // Missing event message.
    let status =
        client.submit_feedback(authed(SubmitFeedbackRequest { event: None }, &env.acme_key)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    checked += 1;

    // ---- gRPC: authentication
    let status = client
        .submit_feedback(tonic::Request::new(SubmitFeedbackRequest { event: Some(event("a1", "c")) }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "no key");
    let wrong = format!("cxk_000000000000_{}", "0".repeat(64));
    let status = client
        .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("a2", "c")) }, &wrong))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "unknown key");
    let (info, revoked) = env.store.create_key("acme", "to revoke").await.unwrap();
    env.store.revoke_key(&info.key_id).await.unwrap();
    let status = client
        .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("a3", "c")) }, &revoked))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "revoked key");
    let mut r = tonic::Request::new(SubmitFeedbackRequest { event: Some(event("a4", "c")) });
    r.metadata_mut().insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    assert_eq!(client.submit_feedback(r).await.unwrap_err().code(), Code::Unauthenticated, "not a bearer key");
    checked += 4;

    // ---- gRPC: sizes
    let big: Vec<pb::FeedbackEvent> = (0..51).map(|i| event(&format!("big-{i}"), "c")).collect();
    let status = client
        .submit_feedback_batch(authed(SubmitFeedbackBatchRequest { events: big, atomic: false }, &env.acme_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "batch over 50: {status:?}");
    let mut fat = event("fat", "c");
    fat.comment = "a".repeat(5000);
    let status =
        client.submit_feedback(authed(SubmitFeedbackRequest { event: Some(fat) }, &env.acme_key)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "event over 4 KiB: {status:?}");
    let huge: Vec<pb::FeedbackEvent> = (0..40)
        .map(|i| {
            let mut e = event(&format!("huge-{i}"), "c");
            e.comment = "b".repeat(4000);
            e
        })
        .collect();
    let status = client
        .submit_feedback_batch(authed(SubmitFeedbackBatchRequest { events: huge, atomic: false }, &env.acme_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "message over 128 KiB: {status:?}");
    checked += 3;

    // ---- gRPC: an atomic batch with one bad event publishes nothing, naming its index.
    let mut events: Vec<pb::FeedbackEvent> = (0..5).map(|i| event(&format!("atomic-{i}"), "c")).collect();
    events[3].csat = Some(9);
    let status = client
        .submit_feedback_batch(authed(SubmitFeedbackBatchRequest { events, atomic: true }, &env.acme_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "events[3].csat");
    checked += 1;

    // ---- gRPC: an assessment off its scale.
    let a = pb::InternalAssessment {
        assessment_id: "as-1".into(),
        touchpoint: "helpline".into(),
        assessed_at: Some(now_pb()),
        score: Some(pb::internal_assessment::Score::Csat(7)),
        ..Default::default()
    };
    let status = client
        .submit_assessment(authed(SubmitAssessmentRequest { assessment: Some(a) }, &env.acme_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "score");
    checked += 1;

    // ---- HTTP
    let key = Some(env.acme_key.as_str());
    let json = "application/json";
    let cases: Vec<HttpCase> = vec![
        ("not JSON", "/v1/feedback", key, b"{nope".to_vec(), 400, Some("body")),
        ("array for one event", "/v1/feedback", key, b"[]".to_vec(), 400, Some("record")),
        ("unknown field", "/v1/feedback", key, patch(&[("npss", 3.into())]), 400, Some("npss")),
        ("nps as a word", "/v1/feedback", key, patch(&[("nps", "ten".into())]), 400, Some("nps")),
        ("nps 11", "/v1/feedback", key, patch(&[("nps", 11.into())]), 400, Some("nps")),
        (
            "customer_id with an escaped NUL character",
            "/v1/feedback",
            key,
            patch(&[("customer_id", "c\u{0}1".into())]),
            400,
            Some("customer_id"),
        ),
        ("unknown channel", "/v1/feedback", key, patch(&[("channel", "FAX".into())]), 400, Some("channel")),
        (
            "future occurred_at",
            "/v1/feedback",
            key,
            patch(&[("occurred_at", "2999-01-01T00:00:00Z".into())]),
            400,
            Some("occurred_at"),
        ),
        ("bad timestamp", "/v1/feedback", key, patch(&[("occurred_at", "yesterday".into())]), 400, Some("occurred_at")),
        (
            "nested object value",
            "/v1/feedback",
            key,
            patch(&[("comment", serde_json::json!({"a": 1}))]),
            400,
            Some("comment"),
        ),
        ("segment not an object", "/v1/feedback", key, patch(&[("segment", "gold".into())]), 400, Some("segment")),
        ("no key", "/v1/feedback", None, patch(&[]), 401, None),
        ("malformed key", "/v1/feedback", Some("hunter2"), patch(&[]), 401, None),
        ("batch without events", "/v1/feedback/batch", key, br#"{"atomic": true}"#.to_vec(), 400, Some("events")),
        ("batch with an extra field", "/v1/feedback/batch", key, br#"{"events": [], "x": 1}"#.to_vec(), 400, Some("x")),
        (
            "atomic batch with a bad event",
            "/v1/feedback/batch",
            key,
            serde_json::json!({"atomic": true, "events": [event_json("hb-1", "c"), {"event_id": "hb-2"}]})
                .to_string()
                .into_bytes(),
            400,
            Some("events[1].customer_id"),
        ),
        (
            "batch over 50",
            "/v1/feedback/batch",
            key,
            serde_json::json!((0..51).map(|i| event_json(&format!("hb-{i}"), "c")).collect::<Vec<_>>())
                .to_string()
                .into_bytes(),
            413,
            None,
        ),
        ("body over 128 KiB", "/v1/feedback", key, vec![b' '; 140_000], 413, None),
        (
            "assessment without a score",
            "/v1/assessments",
            key,
            br#"{"assessment_id":"a","touchpoint":"t","assessed_at":"2026-01-01","instrument":"csat"}"#.to_vec(),
            400,
            Some("score"),
        ),
        (
            "CSV with an unknown column",
            "/v1/feedback/import",
            key,
            b"event_id,customer_id,chanel,journey_stage,occurred_at,nps\n".to_vec(),
            400,
            Some("body"),
        ),
    ];
    for (name, path, key, body, status, field) in cases {
        let r = env.post(path, key, if path.ends_with("import") { "text/csv" } else { json }, &body).await;
        assert_eq!(r.status, status, "{name}: {}", r.text());
        if let Some(field) = field {
            let v = r.json();
            let fields: Vec<&str> =
                v["error"]["violations"].as_array().unwrap().iter().map(|x| x["field"].as_str().unwrap()).collect();
            assert!(fields.contains(&field), "{name}: {field} not in {fields:?}");
            assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
        }
        checked += 1;
    }
    // CSV rows that are invalid are reported by line and field; none is published.
    let mut csv = b"event_id,customer_id,channel,journey_stage,occurred_at,nps,comment\n".to_vec();
    csv.extend_from_slice(b"r1,c,WEB,USAGE,2026-01-01,11,\n");
    csv.extend_from_slice(b"r2,c,WEB,USAGE,2026-01-01,5,caf\xe9\n");
    csv.extend_from_slice(b"r3,c,WEB,USAGE\n");
    let r = env.post("/v1/feedback/import", key, "text/csv", &csv).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["accepted"], 0);
    let rejected: Vec<(u64, String)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["line"].as_u64().unwrap(), x["violations"][0]["field"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(rejected, [(2, "nps".to_string()), (3, "comment".to_string()), (4, "record".to_string())]);
    checked += 3;

    assert!(checked >= 50, "catalogue size {checked}");
    assert!(env.fetch().is_empty(), "nothing invalid reached the topic");
    env.stop().await.unwrap();
}

/// A valid HTTP event with some fields replaced.
fn patch(fields: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut v = event_json("http-bad", "c");
    for (k, x) in fields {
        v[*k] = x.clone();
    }
    v.to_string().into_bytes()
}

#[tokio::test]
async fn over_the_rate_limit_is_resource_exhausted_with_a_retry_hint() {
    let env = start(&[
        ("CXGAP_RATE_LIMIT_PER_SECOND", "1"),
        ("CXGAP_RATE_LIMIT_BURST", "20"),
        ("CXGAP_MAX_BATCH_EVENTS", "20"),
    ])
    .await;
    let mut client = env.client().await;
    let events: Vec<pb::FeedbackEvent> = (0..20).map(|i| event(&format!("r-{i}"), "c")).collect();
    client
        .submit_feedback_batch(authed(SubmitFeedbackBatchRequest { events, atomic: false }, &env.acme_key))
        .await
        .unwrap();
    let status = client
        .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("r-over", "c")) }, &env.acme_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_details_retry_info().expect("RetryInfo").retry_delay.expect("delay");
    assert!(retry.as_secs_f64() > 0.0 && retry.as_secs_f64() <= 1.0, "{retry:?}");
    let r = env
        .post("/v1/feedback", Some(&env.acme_key), "application/json", &patch(&[("event_id", "r-http".into())]))
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    // Another tenant has its own budget.
    client
        .submit_feedback(authed(SubmitFeedbackRequest { event: Some(event("g-1", "c")) }, &env.globex_key))
        .await
        .unwrap();
    assert_eq!(env.fetch().len(), 21, "the refused events were not published");
    env.stop().await.unwrap();
}
