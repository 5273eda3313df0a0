//! Conversions between the wire messages and the domain. Inbound conversion never fails:
//! it produces a draft plus the violations it found (unknown enum numbers, bad
//! timestamps), and the domain's validation adds the rest, each naming its field.

use crate::common as pb;
use cxgap_domain::validate::RatingDraft;
use cxgap_domain::{
    AssessmentDraft, Channel, Dimension, FeedbackDraft, FeedbackEvent, Instrument, InternalAssessment, JourneyStage,
    Timestamp, Violations,
};

/// Proto enum numbers are the domain's index + 1 (0 is UNSPECIFIED). The field's name
/// and the allowed values are only spelled out for a violation: valid input formats nothing.
fn from_enum<T: Copy>(
    v: &mut Violations,
    field: impl FnOnce() -> String,
    n: i32,
    all: &[T],
    allowed: fn() -> String,
) -> Option<T> {
    match n {
        0 => None,
        n if n > 0 && (n as usize) <= all.len() => Some(all[n as usize - 1]),
        n => {
            v.push(field(), format!("{n} is not a known value; one of {}", allowed()));
            None
        }
    }
}

pub fn channel_to_pb(c: Channel) -> i32 {
    c.index() as i32 + 1
}

pub fn stage_to_pb(s: JourneyStage) -> i32 {
    s.index() as i32 + 1
}

pub fn dimension_to_pb(d: Dimension) -> i32 {
    d.index() as i32 + 1
}

pub fn timestamp_from_pb(v: &mut Violations, field: &str, t: Option<&prost_types::Timestamp>) -> Option<Timestamp> {
    let t = t?;
    if !(0..1_000_000_000).contains(&t.nanos) {
        v.push(field, format!("nanos {} is outside 0–999999999", t.nanos));
        return None;
    }
    match t.seconds.checked_mul(1000).and_then(|ms| ms.checked_add(t.nanos as i64 / 1_000_000)) {
        Some(ms) => Some(Timestamp(ms)),
        None => {
            v.push(field, "is out of range");
            None
        }
    }
}

pub fn timestamp_to_pb(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.0.div_euclid(1000), nanos: (t.0.rem_euclid(1000) * 1_000_000) as i32 }
}

/// The draft of an inbound event and the violations found while converting it. The
/// message's `tenant_id` is ignored: the caller's API key decides the tenant. Takes the
/// message by value: its strings move into the draft, and on into the event, uncopied.
pub fn feedback_draft(e: pb::FeedbackEvent) -> (FeedbackDraft, Violations) {
    let mut v = Violations::default();
    let segment = e.segment.unwrap_or_default();
    let op = e.operational.unwrap_or_default();
    let ratings = e
        .ratings
        .iter()
        .enumerate()
        .map(|(i, r)| RatingDraft {
            dimension: from_enum(
                &mut v,
                || format!("ratings[{i}].dimension"),
                r.dimension,
                Dimension::ALL,
                Dimension::allowed,
            ),
            expectation: Some(r.expectation as i64),
            perception: Some(r.perception as i64),
        })
        .collect();
    // The map is ordered (prost's btree_map), so the attributes, and any violations about
    // them, come sorted by key whatever order the client sent them in.
    let attributes: Vec<(String, String)> = segment.attributes.into_iter().collect();
    let draft = FeedbackDraft {
        event_id: e.event_id,
        customer_id: e.customer_id,
        attributes,
        customer_value: segment.customer_value,
        channel: from_enum(&mut v, || "channel".into(), e.channel, Channel::ALL, Channel::allowed),
        journey_stage: from_enum(
            &mut v,
            || "journey_stage".into(),
            e.journey_stage,
            JourneyStage::ALL,
            JourneyStage::allowed,
        ),
        touchpoint: e.touchpoint,
        occurred_at: timestamp_from_pb(&mut v, "occurred_at", e.occurred_at.as_ref()),
        nps: e.nps.map(i64::from),
        csat: e.csat.map(i64::from),
        ces: e.ces.map(i64::from),
        ratings,
        comment: e.comment,
        wait_seconds: op.wait_seconds,
        promised_wait_seconds: op.promised_wait_seconds,
        resolved: op.resolved,
        contact_reason: op.contact_reason.unwrap_or_default(),
    };
    (draft, v)
}

/// Converts and validates in one step.
pub fn feedback_from_pb(e: pb::FeedbackEvent, now: Timestamp) -> Result<FeedbackEvent, Violations> {
    let (draft, v) = feedback_draft(e);
    draft.validate(now, v)
}

/// The event as it is published on the feedback topic: tenant and receipt time filled in.
pub fn feedback_to_pb(e: &FeedbackEvent, tenant_id: &str, received_at: Timestamp) -> pb::FeedbackEvent {
    feedback_into_pb(e.clone(), tenant_id, received_at)
}

/// [`feedback_to_pb`] for an event the caller is done with: its strings move, uncopied.
pub fn feedback_into_pb(e: FeedbackEvent, tenant_id: &str, received_at: Timestamp) -> pb::FeedbackEvent {
    pb::FeedbackEvent {
        event_id: e.event_id,
        tenant_id: tenant_id.to_string(),
        customer_id: e.customer_id,
        segment: Some(pb::Segment {
            attributes: e.attributes.0.into_iter().collect(),
            customer_value: e.customer_value,
        }),
        channel: channel_to_pb(e.channel),
        journey_stage: stage_to_pb(e.journey_stage),
        touchpoint: e.touchpoint.unwrap_or_default(),
        occurred_at: Some(timestamp_to_pb(e.occurred_at)),
        nps: e.nps.map(u32::from),
        csat: e.csat.map(u32::from),
        ces: e.ces.map(u32::from),
        ratings: Dimension::ALL
            .iter()
            .filter_map(|d| {
                e.ratings[d.index()].map(|r| pb::DimensionRating {
                    dimension: dimension_to_pb(*d),
                    expectation: r.expectation.into(),
                    perception: r.perception.into(),
                })
            })
            .collect(),
        comment: e.comment.unwrap_or_default(),
        operational: Some(pb::Operational {
            wait_seconds: e.operational.wait_seconds,
            promised_wait_seconds: e.operational.promised_wait_seconds,
            resolved: e.operational.resolved,
            contact_reason: e.operational.contact_reason,
        }),
        received_at: Some(timestamp_to_pb(received_at)),
    }
}

pub fn assessment_from_pb(a: &pb::InternalAssessment, now: Timestamp) -> Result<InternalAssessment, Violations> {
    use pb::internal_assessment::Score;
    let mut v = Violations::default();
    let (instrument, score) = match &a.score {
        None => (None, None),
        Some(Score::Nps(s)) => (Some(Instrument::Nps), Some(*s as i64)),
        Some(Score::Csat(s)) => (Some(Instrument::Csat), Some(*s as i64)),
        Some(Score::Ces(s)) => (Some(Instrument::Ces), Some(*s as i64)),
        Some(Score::Dimension(d)) => (
            from_enum(&mut v, || "dimension.dimension".into(), d.dimension, Dimension::ALL, Dimension::allowed)
                .map(Instrument::Dimension),
            Some(d.perception as i64),
        ),
    };
    if instrument.is_none() && !v.has("dimension.dimension") {
        v.push("score", "one of nps, csat, ces or dimension is required");
        v.push("instrument", "is given by the score that is set");
    }
    AssessmentDraft {
        assessment_id: a.assessment_id.clone(),
        touchpoint: a.touchpoint.clone(),
        journey_stage: from_enum(
            &mut v,
            || "journey_stage".into(),
            a.journey_stage,
            JourneyStage::ALL,
            JourneyStage::allowed,
        ),
        assessor: a.assessor.clone(),
        assessed_at: timestamp_from_pb(&mut v, "assessed_at", a.assessed_at.as_ref()),
        instrument,
        score,
    }
    .validate(now, v)
}

pub fn assessment_to_pb(a: &InternalAssessment, tenant_id: &str) -> pb::InternalAssessment {
    use pb::internal_assessment::Score;
    let score = match a.instrument {
        Instrument::Nps => Score::Nps(a.score.into()),
        Instrument::Csat => Score::Csat(a.score.into()),
        Instrument::Ces => Score::Ces(a.score.into()),
        Instrument::Dimension(d) => {
            Score::Dimension(pb::DimensionScore { dimension: dimension_to_pb(d), perception: a.score.into() })
        }
    };
    pb::InternalAssessment {
        assessment_id: a.assessment_id.clone(),
        tenant_id: tenant_id.to_string(),
        touchpoint: a.touchpoint.clone(),
        journey_stage: a.journey_stage.map_or(0, stage_to_pb),
        assessed_at: Some(timestamp_to_pb(a.assessed_at)),
        assessor: a.assessor.clone(),
        score: Some(score),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_790_000_000_000);

    #[test]
    fn enums_line_up_with_the_proto_names() {
        for c in Channel::ALL {
            let name = pb::Channel::try_from(channel_to_pb(*c)).unwrap().as_str_name();
            assert_eq!(name, format!("CHANNEL_{}", c.as_str()));
        }
        for s in JourneyStage::ALL {
            let name = pb::JourneyStage::try_from(stage_to_pb(*s)).unwrap().as_str_name();
            assert_eq!(name, format!("JOURNEY_STAGE_{}", s.as_str()));
        }
        for d in Dimension::ALL {
            let name = pb::Dimension::try_from(dimension_to_pb(*d)).unwrap().as_str_name();
            assert_eq!(name, format!("DIMENSION_{}", d.as_str()));
        }
    }

    #[test]
    fn round_trip_through_the_wire_form() {
        let wire = pb::FeedbackEvent {
            event_id: "e1".into(),
            tenant_id: "someone-else".into(),
            customer_id: "c1".into(),
            segment: Some(pb::Segment {
                attributes: [("tier".to_string(), "gold".to_string())].into(),
                customer_value: Some(5000.0),
            }),
            channel: pb::Channel::Phone as i32,
            journey_stage: pb::JourneyStage::Support as i32,
            touchpoint: "helpline".into(),
            occurred_at: Some(timestamp_to_pb(Timestamp(NOW.0 - 1234))),
            nps: Some(2),
            ratings: vec![pb::DimensionRating {
                dimension: pb::Dimension::Empathy as i32,
                expectation: 7,
                perception: 2,
            }],
            comment: "rude".into(),
            operational: Some(pb::Operational {
                wait_seconds: Some(900.0),
                promised_wait_seconds: Some(300.0),
                resolved: Some(false),
                contact_reason: Some("billing".into()),
            }),
            ..Default::default()
        };
        let ev = feedback_from_pb(wire.clone(), NOW).unwrap();
        let back = feedback_to_pb(&ev, "tenant-a", NOW);
        assert_eq!(back.tenant_id, "tenant-a", "the key's tenant, never the payload's");
        assert_eq!(feedback_from_pb(back.clone(), NOW).unwrap(), ev);
        assert_eq!(back.occurred_at, wire.occurred_at);
    }

    #[test]
    fn an_event_encodes_to_the_same_bytes_whatever_order_its_attributes_came_in() {
        use prost::Message;
        let attrs = [("tier", "gold"), ("region", "emea"), ("plan", "annual"), ("seats", "40"), ("lang", "de")];
        let wire = |order: &mut dyn Iterator<Item = &(&str, &str)>| pb::FeedbackEvent {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            segment: Some(pb::Segment {
                attributes: order.map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                customer_value: None,
            }),
            channel: pb::Channel::Web as i32,
            journey_stage: pb::JourneyStage::Purchase as i32,
            occurred_at: Some(timestamp_to_pb(NOW)),
            csat: Some(4),
            ..Default::default()
        };
        let forward = feedback_from_pb(wire(&mut attrs.iter()), NOW).unwrap();
        let backward = feedback_from_pb(wire(&mut attrs.iter().rev()), NOW).unwrap();
        let bytes = feedback_into_pb(forward.clone(), "t", NOW).encode_to_vec();
        assert_eq!(bytes, feedback_into_pb(backward, "t", NOW).encode_to_vec());
        assert_eq!(bytes, feedback_to_pb(&forward, "t", NOW).encode_to_vec(), "borrowed and owned agree");
        let decoded = pb::FeedbackEvent::decode(bytes.as_slice()).unwrap();
        assert_eq!(feedback_from_pb(decoded, NOW).unwrap(), forward);
    }

    #[test]
    fn unknown_enums_and_bad_timestamps_are_named() {
        let wire = pb::FeedbackEvent {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            channel: 99,
            journey_stage: 0,
            occurred_at: Some(prost_types::Timestamp { seconds: 1, nanos: -5 }),
            ratings: vec![pb::DimensionRating { dimension: 42, expectation: 0, perception: 3 }],
            nps: Some(5),
            ..Default::default()
        };
        let v = feedback_from_pb(wire.clone(), NOW).unwrap_err();
        let fields: Vec<&str> = v.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["ratings[0].dimension", "channel", "occurred_at", "journey_stage"]);
    }

    #[test]
    fn assessments_round_trip() {
        let a = pb::InternalAssessment {
            assessment_id: "a1".into(),
            touchpoint: "helpline".into(),
            journey_stage: pb::JourneyStage::Support as i32,
            assessed_at: Some(timestamp_to_pb(NOW)),
            assessor: "coo".into(),
            score: Some(pb::internal_assessment::Score::Dimension(pb::DimensionScore {
                dimension: pb::Dimension::Responsiveness as i32,
                perception: 6,
            })),
            ..Default::default()
        };
        let d = assessment_from_pb(&a, NOW).unwrap();
        assert_eq!(assessment_to_pb(&d, "t").score, a.score);
        let none = pb::InternalAssessment { score: None, ..a };
        assert!(assessment_from_pb(&none, NOW).unwrap_err().has("score"));
    }
}
