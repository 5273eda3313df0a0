//! Field-level decoding of one record into a domain draft. Syntax errors (not a number,
//! unknown channel, bad timestamp) are recorded against their column here; the domain's
//! validation adds the semantic rules without repeating a field already reported.

use crate::{RecordError, Schema};
use cxgap_domain::validate::RatingDraft;
use cxgap_domain::{
    AssessmentDraft, Channel, Dimension, FeedbackDraft, FeedbackEvent, Instrument, InternalAssessment, JourneyStage,
    Timestamp, Violations,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn present(v: &str) -> Option<&str> {
    let t = v.trim();
    (!t.is_empty()).then_some(t)
}

fn int(v: &mut Violations, field: &str, raw: &str) -> Option<i64> {
    let t = present(raw)?;
    match t.parse::<i64>() {
        Ok(x) => Some(x),
        Err(_) => {
            v.push(field, format!("{t:?} is not a whole number"));
            None
        }
    }
}

fn number(v: &mut Violations, field: &str, raw: &str) -> Option<f64> {
    let t = present(raw)?;
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() => Some(x),
        _ => {
            v.push(field, format!("{t:?} is not a number"));
            None
        }
    }
}

fn boolean(v: &mut Violations, field: &str, raw: &str) -> Option<bool> {
    let t = present(raw)?;
    match t.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => {
            v.push(field, format!("{t:?} is not true/false"));
            None
        }
    }
}

/// RFC 3339 (`2026-03-01T09:30:00Z`, any offset) or a bare date (`2026-03-01`, midnight UTC).
pub(crate) fn timestamp(v: &mut Violations, field: &str, raw: &str) -> Option<Timestamp> {
    let t = present(raw)?;
    if let Ok(dt) = OffsetDateTime::parse(t, &Rfc3339) {
        return Some(Timestamp((dt.unix_timestamp_nanos() / 1_000_000) as i64));
    }
    if let Some(day) = cxgap_domain::Day::parse(t).filter(|_| t.len() == 10) {
        return Some(day.start());
    }
    v.push(field, format!("{t:?} is not an RFC 3339 timestamp (2026-03-01T09:30:00Z) or a date (2026-03-01)"));
    None
}

fn vocab<T>(
    v: &mut Violations,
    field: &str,
    raw: &str,
    parse: fn(&str) -> Option<T>,
    allowed: fn() -> String,
) -> Option<T> {
    let t = present(raw)?;
    let r = parse(t);
    if r.is_none() {
        v.push(field, format!("{t:?} is not one of {}", allowed()));
    }
    r
}

/// Decodes a feedback record given as (column, value) pairs; empty values are absent.
pub fn decode_feedback(fields: &[(&str, &str)], now: Timestamp, pre: Violations) -> Result<FeedbackEvent, Violations> {
    let mut v = pre;
    let mut d = FeedbackDraft::default();
    let mut ratings: [(Option<i64>, Option<i64>); 5] = [(None, None); 5];
    for &(k, raw) in fields {
        if v.has(k) {
            continue;
        }
        match k {
            "event_id" => d.event_id = raw.trim().to_string(),
            "customer_id" => d.customer_id = raw.trim().to_string(),
            "channel" => d.channel = vocab(&mut v, k, raw, Channel::parse, Channel::allowed),
            "journey_stage" => d.journey_stage = vocab(&mut v, k, raw, JourneyStage::parse, JourneyStage::allowed),
            "touchpoint" => d.touchpoint = raw.trim().to_string(),
            "occurred_at" => d.occurred_at = timestamp(&mut v, k, raw),
            "nps" => d.nps = int(&mut v, k, raw),
            "csat" => d.csat = int(&mut v, k, raw),
            "ces" => d.ces = int(&mut v, k, raw),
            "comment" => d.comment = raw.to_string(),
            "wait_seconds" => d.wait_seconds = number(&mut v, "operational.wait_seconds", raw),
            "promised_wait_seconds" => {
                d.promised_wait_seconds = number(&mut v, "operational.promised_wait_seconds", raw)
            }
            "resolved" => d.resolved = boolean(&mut v, "operational.resolved", raw),
            "contact_reason" => d.contact_reason = raw.trim().to_string(),
            "customer_value" => d.customer_value = number(&mut v, "segment.customer_value", raw),
            _ => {
                if let Some(key) = k.strip_prefix("segment.") {
                    if present(raw).is_some() {
                        d.attributes.push((key.to_string(), raw.trim().to_string()));
                    }
                } else if let Some((dim, part)) = k.rsplit_once('_') {
                    let Some(dim) = Dimension::parse(dim) else { continue };
                    let x = int(&mut v, k, raw);
                    match part {
                        "expectation" => ratings[dim.index()].0 = x,
                        _ => ratings[dim.index()].1 = x,
                    }
                }
            }
        }
    }
    for (i, (e, p)) in ratings.iter().enumerate() {
        if e.is_some() || p.is_some() {
            d.ratings.push(RatingDraft { dimension: Some(Dimension::ALL[i]), expectation: *e, perception: *p });
        }
    }
    // Name rating problems by column, as the user wrote them, not by position.
    let order: Vec<Dimension> = d.ratings.iter().filter_map(|r| r.dimension).collect();
    d.validate(now, v).map_err(|mut v| {
        for viol in &mut v.0 {
            if let Some(rest) = viol.field.strip_prefix("ratings[")
                && let Some((idx, part)) = rest.split_once("].")
                && let Some(dim) = idx.parse::<usize>().ok().and_then(|i| order.get(i))
            {
                viol.field = format!("{}_{part}", dim.lower());
            }
        }
        let mut seen = std::collections::HashSet::new();
        v.0.retain(|x| seen.insert(x.field.clone()));
        v
    })
}

pub fn decode_assessment(
    fields: &[(&str, &str)],
    now: Timestamp,
    pre: Violations,
) -> Result<InternalAssessment, Violations> {
    let mut v = pre;
    let mut d = AssessmentDraft::default();
    for &(k, raw) in fields {
        if v.has(k) {
            continue;
        }
        match k {
            "assessment_id" => d.assessment_id = raw.trim().to_string(),
            "touchpoint" => d.touchpoint = raw.trim().to_string(),
            "journey_stage" => d.journey_stage = vocab(&mut v, k, raw, JourneyStage::parse, JourneyStage::allowed),
            "assessor" => d.assessor = raw.trim().to_string(),
            "assessed_at" => d.assessed_at = timestamp(&mut v, k, raw),
            "instrument" => {
                d.instrument = vocab(&mut v, k, raw, Instrument::parse, || {
                    format!("nps, csat, ces, {}", Dimension::allowed().to_lowercase())
                })
            }
            "score" => d.score = int(&mut v, k, raw),
            _ => {}
        }
    }
    d.validate(now, v)
}

/// One JSON-lines record: a flat object with the CSV's column names as keys (numbers may be
/// JSON numbers or strings), and optionally `"segment": {"tier": "gold", ...}`.
pub(crate) fn decode_json<S: Schema>(line_text: &str, line: u64, now: Timestamp) -> Result<S::Output, RecordError> {
    let record = match crate::json::Record::parse(line_text.as_bytes()) {
        Ok(x) => x,
        Err(e) => {
            let mut v = Violations::default();
            v.push("record", format!("is not valid JSON: {e}"));
            return Err(RecordError { line, event_id: None, violations: v });
        }
    };
    record.decode::<S>(now).map_err(|violations| RecordError { line, event_id: record.id(), violations })
}
