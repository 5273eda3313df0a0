//! Turning untrusted input into validated events. Every rule of ARCHITECTURE §3 is checked
//! and every violation is returned at once, each naming its field, so a caller can fix a
//! record in one round trip. Decoders (CSV, JSON, protobuf) record their own syntax errors
//! in the same [`Violations`] so a field is never reported twice.

use crate::calendar::Timestamp;
use crate::model::{
    Attributes, Channel, Dimension, FeedbackEvent, Instrument, InternalAssessment, JourneyStage, Operational, Rating,
};
use serde::Serialize;
use std::fmt;

pub const MAX_ID_CHARS: usize = 128;
pub const MAX_TOUCHPOINT_CHARS: usize = 128;
pub const MAX_COMMENT_CHARS: usize = 10_000;
pub const MAX_ATTRIBUTES: usize = 32;
pub const MAX_ATTRIBUTE_CHARS: usize = 128;
/// How far in the future `occurred_at` may be, for clock skew between client and server.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Violations(pub Vec<Violation>);

impl Violations {
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation { field: field.into(), description: description.into() });
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|v| v.field == field)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.0.iter()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RatingDraft {
    pub dimension: Option<Dimension>,
    pub expectation: Option<i64>,
    pub perception: Option<i64>,
}

/// A feedback event as it arrived: typed where the wire format is, unchecked otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedbackDraft {
    pub event_id: String,
    pub customer_id: String,
    pub attributes: Vec<(String, String)>,
    pub customer_value: Option<f64>,
    pub channel: Option<Channel>,
    pub journey_stage: Option<JourneyStage>,
    pub touchpoint: String,
    pub occurred_at: Option<Timestamp>,
    pub nps: Option<i64>,
    pub csat: Option<i64>,
    pub ces: Option<i64>,
    pub ratings: Vec<RatingDraft>,
    pub comment: String,
    pub wait_seconds: Option<f64>,
    pub promised_wait_seconds: Option<f64>,
    pub resolved: Option<bool>,
    pub contact_reason: String,
}

/// Length in characters exceeds `max`; the byte length bounds it, so short strings are
/// not decoded.
fn longer_than(value: &str, max: usize) -> bool {
    value.len() > max && value.chars().count() > max
}

fn check_id(v: &mut Violations, field: &str, value: &str) {
    if v.has(field) {
        return;
    }
    if value.is_empty() {
        v.push(field, "is required");
    } else if longer_than(value, MAX_ID_CHARS) {
        v.push(field, format!("is longer than {MAX_ID_CHARS} characters"));
    } else if value.chars().any(char::is_control) {
        v.push(field, "must be printable characters (no control characters)");
    }
}

fn check_scale(v: &mut Violations, field: &str, value: Option<i64>, lo: i64, hi: i64) -> Option<u8> {
    let x = value?;
    if (lo..=hi).contains(&x) {
        Some(x as u8)
    } else {
        v.push(field, format!("{x} is outside {lo}–{hi}"));
        None
    }
}

/// Takes the text by value: a valid one is kept, not copied.
/// What a text that holds U+0000 is told. PostgreSQL's `text` and `jsonb` cannot hold
/// that character, so an event carrying it would fail its analytics batch on every retry
/// and hold its partition up; it is turned away here instead, at ingest and wherever else
/// events are read.
const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

fn check_text(v: &mut Violations, field: &str, value: String, max: usize) -> Option<String> {
    if longer_than(&value, max) {
        v.push(field, format!("is longer than {max} characters"));
        None
    } else if value.contains('\0') {
        v.push(field, NUL_MESSAGE);
        None
    } else if value.trim().is_empty() {
        None
    } else {
        Some(value)
    }
}

fn check_seconds(v: &mut Violations, field: &str, value: Option<f64>) -> Option<f64> {
    let x = value?;
    if x.is_finite() && x >= 0.0 {
        Some(x)
    } else {
        v.push(field, format!("{x} must be a non-negative number of seconds"));
        None
    }
}

impl FeedbackDraft {
    /// Checks every rule against `now` (for the future-timestamp bound); `pre` carries
    /// violations the decoder already found, whose fields are not reported again.
    pub fn validate(self, now: Timestamp, pre: Violations) -> Result<FeedbackEvent, Violations> {
        let mut v = pre;
        check_id(&mut v, "event_id", &self.event_id);
        if !v.has("customer_id") {
            if self.customer_id.is_empty() {
                v.push("customer_id", "is required");
            } else if longer_than(&self.customer_id, MAX_ID_CHARS) {
                v.push("customer_id", format!("is longer than {MAX_ID_CHARS} characters"));
            } else if self.customer_id.contains('\0') {
                v.push("customer_id", NUL_MESSAGE);
            }
        }
        if self.channel.is_none() && !v.has("channel") {
            v.push("channel", format!("is required; one of {}", Channel::allowed()));
        }
        if self.journey_stage.is_none() && !v.has("journey_stage") {
            v.push("journey_stage", format!("is required; one of {}", JourneyStage::allowed()));
        }
        match self.occurred_at {
            None if !v.has("occurred_at") => v.push("occurred_at", "is required"),
            Some(t) if t.0 > now.0 + MAX_FUTURE_MS => v.push("occurred_at", "is more than 5 minutes in the future"),
            _ => {}
        }
        // Read before the texts move out below.
        let measured = self.nps.is_some()
            || self.csat.is_some()
            || self.ces.is_some()
            || !self.ratings.is_empty()
            || !self.comment.trim().is_empty();
        let touchpoint = check_text(&mut v, "touchpoint", self.touchpoint, MAX_TOUCHPOINT_CHARS);
        let attributes = check_attributes(&mut v, self.attributes);
        if let Some(x) = self.customer_value
            && (!x.is_finite() || x < 0.0)
        {
            v.push("segment.customer_value", format!("{x} must be a non-negative number"));
        }
        let nps = check_scale(&mut v, "nps", self.nps, 0, 10);
        let csat = check_scale(&mut v, "csat", self.csat, 1, 5);
        let ces = check_scale(&mut v, "ces", self.ces, 1, 7);
        let ratings = check_ratings(&mut v, &self.ratings);
        let comment = check_text(&mut v, "comment", self.comment, MAX_COMMENT_CHARS);
        let wait = check_seconds(&mut v, "operational.wait_seconds", self.wait_seconds);
        let promised = check_seconds(&mut v, "operational.promised_wait_seconds", self.promised_wait_seconds);
        let contact_reason =
            check_text(&mut v, "operational.contact_reason", self.contact_reason, MAX_TOUCHPOINT_CHARS);
        if !measured {
            v.push("event", "needs at least one of nps, csat, ces, ratings or comment");
        }
        if !v.is_empty() {
            return Err(v);
        }
        Ok(FeedbackEvent {
            event_id: self.event_id,
            customer_id: self.customer_id,
            attributes,
            customer_value: self.customer_value,
            channel: self.channel.expect("checked above"),
            journey_stage: self.journey_stage.expect("checked above"),
            touchpoint,
            occurred_at: self.occurred_at.expect("checked above"),
            nps,
            csat,
            ces,
            ratings,
            comment,
            operational: Operational {
                wait_seconds: wait,
                promised_wait_seconds: promised,
                resolved: self.resolved,
                contact_reason,
            },
        })
    }
}

/// Ratings by dimension. A valid rating is taken as it is; field names are spelled out
/// only for a rating with something wrong.
fn check_ratings(v: &mut Violations, drafts: &[RatingDraft]) -> [Option<Rating>; 5] {
    let mut ratings: [Option<Rating>; 5] = [None; 5];
    let on_scale = |x: Option<i64>| x.filter(|x| (1..=7).contains(x)).map(|x| x as u8);
    for (i, r) in drafts.iter().enumerate() {
        if let (Some(dim), Some(expectation), Some(perception)) =
            (r.dimension, on_scale(r.expectation), on_scale(r.perception))
            && ratings[dim.index()].is_none()
        {
            ratings[dim.index()] = Some(Rating { expectation, perception });
            continue;
        }
        let base = format!("ratings[{i}]");
        let dim_field = format!("{base}.dimension");
        let Some(dim) = r.dimension else {
            if !v.has(&dim_field) {
                v.push(dim_field, format!("is required; one of {}", Dimension::allowed()));
            }
            continue;
        };
        let e_field = format!("{base}.expectation");
        let p_field = format!("{base}.perception");
        if r.expectation.is_none() && !v.has(&e_field) {
            v.push(&e_field, "is required (1–7)");
        }
        if r.perception.is_none() && !v.has(&p_field) {
            v.push(&p_field, "is required (1–7)");
        }
        let e = check_scale(v, &e_field, r.expectation, 1, 7);
        let p = check_scale(v, &p_field, r.perception, 1, 7);
        if ratings[dim.index()].is_some() {
            v.push(dim_field, format!("{dim} is rated twice"));
        } else if let (Some(expectation), Some(perception)) = (e, p) {
            ratings[dim.index()] = Some(Rating { expectation, perception });
        }
    }
    ratings
}

/// Attributes with an empty value are dropped (an unset attribute); the rest are kept
/// sorted by key, moved rather than copied.
fn check_attributes(v: &mut Violations, given: Vec<(String, String)>) -> Attributes {
    if given.len() > MAX_ATTRIBUTES {
        v.push("segment.attributes", format!("has {} attributes; at most {MAX_ATTRIBUTES}", given.len()));
    }
    let bad = |s: &str| longer_than(s, MAX_ATTRIBUTE_CHARS) || s.chars().any(char::is_control);
    let mut attrs: Vec<(String, String)> = Vec::with_capacity(given.len());
    for (k, val) in given {
        if k.is_empty() || bad(&k) {
            v.push(
                format!("segment.attributes[{k}]"),
                format!("key must be 1–{MAX_ATTRIBUTE_CHARS} printable characters"),
            );
        } else if bad(&val) {
            v.push(
                format!("segment.attributes[{k}]"),
                format!("value must be at most {MAX_ATTRIBUTE_CHARS} printable characters"),
            );
        } else if !val.is_empty() {
            attrs.push((k, val));
        }
    }
    attrs.sort();
    if let Some(w) = attrs.windows(2).find(|w| w[0].0 == w[1].0) {
        v.push(format!("segment.attributes[{}]", w[0].0), "is given twice");
    }
    Attributes(attrs)
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssessmentDraft {
    pub assessment_id: String,
    pub touchpoint: String,
    pub journey_stage: Option<JourneyStage>,
    pub assessor: String,
    pub assessed_at: Option<Timestamp>,
    pub instrument: Option<Instrument>,
    pub score: Option<i64>,
}

impl AssessmentDraft {
    pub fn validate(self, now: Timestamp, pre: Violations) -> Result<InternalAssessment, Violations> {
        let mut v = pre;
        check_id(&mut v, "assessment_id", &self.assessment_id);
        let touchpoint = check_text(&mut v, "touchpoint", self.touchpoint, MAX_TOUCHPOINT_CHARS);
        if touchpoint.is_none() && !v.has("touchpoint") {
            v.push("touchpoint", "is required");
        }
        let assessor = check_text(&mut v, "assessor", self.assessor, MAX_ID_CHARS);
        match self.assessed_at {
            None if !v.has("assessed_at") => v.push("assessed_at", "is required"),
            Some(t) if t.0 > now.0 + MAX_FUTURE_MS => v.push("assessed_at", "is more than 5 minutes in the future"),
            _ => {}
        }
        let mut score = None;
        match self.instrument {
            None if !v.has("instrument") => v.push(
                "instrument",
                format!("is required; one of nps, csat, ces, {}", Dimension::allowed().to_lowercase()),
            ),
            None => {}
            Some(ins) => {
                let (lo, hi) = ins.range();
                if self.score.is_none() && !v.has("score") {
                    v.push("score", format!("is required ({lo}–{hi} for {})", ins.name()));
                }
                score = check_scale(&mut v, "score", self.score, lo as i64, hi as i64);
            }
        }
        if !v.is_empty() {
            return Err(v);
        }
        Ok(InternalAssessment {
            assessment_id: self.assessment_id,
            touchpoint: touchpoint.expect("checked above"),
            journey_stage: self.journey_stage,
            assessor: assessor.unwrap_or_default(),
            assessed_at: self.assessed_at.expect("checked above"),
            instrument: self.instrument.expect("checked above"),
            score: score.expect("checked above"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_780_000_000_000);

    fn good() -> FeedbackDraft {
        FeedbackDraft {
            event_id: "e-1".into(),
            customer_id: "c-1".into(),
            channel: Some(Channel::Chat),
            journey_stage: Some(JourneyStage::Support),
            occurred_at: Some(Timestamp(NOW.0 - 1000)),
            nps: Some(9),
            ..Default::default()
        }
    }

    fn fields(r: Result<FeedbackEvent, Violations>) -> Vec<String> {
        r.unwrap_err().0.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_good_event_validates() {
        let ev = good().validate(NOW, Violations::default()).unwrap();
        assert_eq!(ev.nps, Some(9));
        assert_eq!(ev.touchpoint, None);
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let d = FeedbackDraft {
            event_id: String::new(),
            customer_id: String::new(),
            channel: None,
            journey_stage: None,
            occurred_at: Some(Timestamp(NOW.0 + MAX_FUTURE_MS + 1)),
            nps: Some(11),
            csat: Some(0),
            ces: Some(8),
            ratings: vec![RatingDraft {
                dimension: Some(Dimension::Empathy),
                expectation: Some(0),
                perception: Some(8),
            }],
            comment: "x".repeat(MAX_COMMENT_CHARS + 1),
            wait_seconds: Some(-1.0),
            ..Default::default()
        };
        let got = fields(d.validate(NOW, Violations::default()));
        for want in [
            "event_id",
            "customer_id",
            "channel",
            "journey_stage",
            "occurred_at",
            "nps",
            "csat",
            "ces",
            "ratings[0].expectation",
            "ratings[0].perception",
            "comment",
            "operational.wait_seconds",
        ] {
            assert!(got.iter().any(|f| f == want), "{want} not in {got:?}");
        }
    }

    #[test]
    fn a_measurement_or_comment_is_required() {
        let d = FeedbackDraft { nps: None, ..good() };
        assert_eq!(fields(d.validate(NOW, Violations::default())), vec!["event"]);
        let d = FeedbackDraft { nps: None, comment: "late again".into(), ..good() };
        assert!(d.validate(NOW, Violations::default()).is_ok());
    }

    #[test]
    fn decoder_violations_are_not_repeated() {
        let mut pre = Violations::default();
        pre.push("channel", "\"FAX\" is not one of ...");
        let d = FeedbackDraft { channel: None, ..good() };
        let v = d.validate(NOW, pre).unwrap_err();
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn ids_must_be_printable_and_short() {
        let d = FeedbackDraft { event_id: "a\tb".into(), ..good() };
        assert_eq!(fields(d.validate(NOW, Violations::default())), vec!["event_id"]);
        let d = FeedbackDraft { event_id: "order 42 / survey".into(), ..good() };
        assert!(d.validate(NOW, Violations::default()).is_ok());
        let d = FeedbackDraft { event_id: "x".repeat(129), ..good() };
        assert_eq!(fields(d.validate(NOW, Violations::default())), vec!["event_id"]);
        let d = FeedbackDraft { event_id: "é".repeat(128), ..good() };
        assert!(d.validate(NOW, Violations::default()).is_ok());
    }

    #[test]
    fn texts_postgresql_cannot_store_are_rejected_by_name() {
        // U+0000 anywhere in a text that is stored; other control characters in free text
        // (a comment's line breaks) are kept.
        let d = FeedbackDraft {
            customer_id: "c\u{0}1".into(),
            touchpoint: "check\0out".into(),
            comment: "late\0".into(),
            contact_reason: "\0".into(),
            ..good()
        };
        let err = d.validate(NOW, Violations::default()).unwrap_err();
        let got: Vec<_> = err.0.iter().map(|v| (v.field.as_str(), v.description.as_str())).collect();
        assert_eq!(
            got,
            [
                ("customer_id", NUL_MESSAGE),
                ("touchpoint", NUL_MESSAGE),
                ("comment", NUL_MESSAGE),
                ("operational.contact_reason", NUL_MESSAGE)
            ]
        );
        let d = FeedbackDraft { comment: "late\nagain\tand again".into(), ..good() };
        assert!(d.validate(NOW, Violations::default()).is_ok());
        let a = AssessmentDraft {
            assessment_id: "a-1".into(),
            touchpoint: "checkout".into(),
            assessor: "ops\0".into(),
            assessed_at: Some(NOW),
            instrument: Some(Instrument::Nps),
            score: Some(7),
            ..Default::default()
        };
        let err = a.validate(NOW, Violations::default()).unwrap_err();
        assert_eq!(err.0.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), ["assessor"]);
    }

    #[test]
    fn a_dimension_rated_twice_is_rejected() {
        let r = RatingDraft { dimension: Some(Dimension::Tangibles), expectation: Some(5), perception: Some(4) };
        let d = FeedbackDraft { ratings: vec![r.clone(), r], ..good() };
        assert_eq!(fields(d.validate(NOW, Violations::default())), vec!["ratings[1].dimension"]);
    }

    #[test]
    fn history_is_allowed_but_not_the_far_future() {
        let d = FeedbackDraft { occurred_at: Some(Timestamp(0)), ..good() };
        assert!(d.validate(NOW, Violations::default()).is_ok());
        let d = FeedbackDraft { occurred_at: Some(Timestamp(NOW.0 + MAX_FUTURE_MS)), ..good() };
        assert!(d.validate(NOW, Violations::default()).is_ok());
    }

    #[test]
    fn attributes_are_sorted_and_checked() {
        let d = FeedbackDraft {
            attributes: vec![("tier".into(), "gold".into()), ("region".into(), "emea".into())],
            ..good()
        };
        let ev = d.validate(NOW, Violations::default()).unwrap();
        assert_eq!(ev.attributes.get("region"), Some("emea"));
        let many = (0..33).map(|i| (format!("k{i}"), "v".to_string())).collect();
        let d = FeedbackDraft { attributes: many, ..good() };
        assert_eq!(fields(d.validate(NOW, Violations::default())), vec!["segment.attributes"]);
        let d = FeedbackDraft { attributes: vec![("tier".into(), "a".into()), ("tier".into(), "b".into())], ..good() };
        assert_eq!(fields(d.validate(NOW, Violations::default())), vec!["segment.attributes[tier]"]);
    }

    #[test]
    fn assessments_check_scale_by_instrument() {
        let d = AssessmentDraft {
            assessment_id: "a1".into(),
            touchpoint: "checkout".into(),
            assessed_at: Some(NOW),
            instrument: Some(Instrument::Csat),
            score: Some(6),
            ..Default::default()
        };
        let v = d.clone().validate(NOW, Violations::default()).unwrap_err();
        assert_eq!(v.0[0].field, "score");
        let ok = AssessmentDraft { score: Some(5), ..d }.validate(NOW, Violations::default()).unwrap();
        assert_eq!(ok.score, 5);
    }
}
