//! Deterministic feedback workloads: the same event `i` as protobuf (gRPC, the bare
//! producer), as JSON (HTTP) and as a validated domain event (the engine), so every path
//! carries the same data.

use cxgap_domain::validate::RatingDraft;
use cxgap_domain::{Channel, Dimension, FeedbackDraft, FeedbackEvent, JourneyStage, Timestamp, Violations};
use cxgap_proto::common as pb;
use serde_json::{Value, json};

/// SplitMix64 of (seed, i): the same run, the same events.
pub fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

const CHANNELS: [&str; 10] =
    ["SURVEY", "EMAIL", "CHAT", "PHONE", "SOCIAL", "REVIEW", "IN_STORE", "WEB", "MOBILE_APP", "SUPPORT_TICKET"];
const STAGES: [&str; 9] =
    ["AWARENESS", "CONSIDERATION", "PURCHASE", "DELIVERY", "ONBOARDING", "USAGE", "SUPPORT", "BILLING", "RENEWAL"];
const TOUCHPOINTS: [&str; 8] = ["checkout", "helpline", "app", "courier", "invoice", "setup", "store", "chatbot"];
const COMMENTS: [&str; 4] = [
    "Great service, thanks!",
    "Waited 40 minutes on the helpline, nobody answered. Awful!",
    "The invoice was wrong again",
    "Quick and easy checkout",
];

/// One feedback event of the workload, before it takes a wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub event_id: String,
    pub customer_id: String,
    pub tier: &'static str,
    pub region: &'static str,
    pub value: f64,
    pub channel: usize,
    pub stage: usize,
    pub touchpoint: &'static str,
    /// Milliseconds before now.
    pub age_ms: i64,
    pub nps: Option<u32>,
    pub csat: Option<u32>,
    pub comment: &'static str,
    /// Expectation and perception per service-quality dimension.
    pub ratings: bool,
}

/// Event `i` of run `run` among `customers` customers, over the last 60 days: NPS for
/// eight in ten, CSAT for a third, comments for three in ten, and expectation and
/// perception on every dimension for the other two in ten.
pub fn spec(run: &str, i: u64, customers: u64) -> Spec {
    let r = |k: u64| mix(0xc0ffee, i * 16 + k);
    let c = r(0) % customers.max(1);
    let kind = r(1) % 10;
    Spec {
        event_id: format!("{run}-{i}"),
        customer_id: format!("cust-{c}"),
        tier: ["gold", "silver", "bronze"][(c % 3) as usize],
        region: ["emea", "amer", "apac"][(c / 3 % 3) as usize],
        value: (c % 50) as f64 * 200.0,
        channel: (r(2) % 10) as usize,
        stage: (r(3) % 9) as usize,
        touchpoint: TOUCHPOINTS[(r(4) % 8) as usize],
        age_ms: 60_000 + (r(5) % (60 * 86_400_000)) as i64,
        nps: (kind < 8).then(|| (r(6) % 11) as u32),
        csat: kind.is_multiple_of(3).then(|| 1 + (r(7) % 5) as u32),
        comment: if r(8) % 10 < 3 { COMMENTS[(r(9) % 4) as usize] } else { "" },
        ratings: kind >= 8,
    }
}

/// A high-value detractor with an angry comment: the `hot-detractor` rule fires on it.
pub fn probe(run: &str, i: u64) -> Spec {
    Spec {
        event_id: format!("{run}-probe-{i}"),
        customer_id: format!("probe-{run}-{i}"),
        tier: "gold",
        region: "emea",
        value: 1_000_000.0,
        channel: 3,
        stage: 6,
        touchpoint: "helpline",
        age_ms: 1_000,
        nps: Some(0),
        csat: None,
        comment: "Terrible support, nobody calls back, I am cancelling",
        ratings: false,
    }
}

fn rating(i: u64, d: usize) -> (u32, u32) {
    let r = mix(0xbeef, i * 8 + d as u64);
    (1 + (r % 7) as u32, 1 + ((r >> 8) % 7) as u32)
}

impl Spec {
    fn index(&self) -> u64 {
        self.event_id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
    }

    pub fn to_pb(&self, now_ms: i64) -> pb::FeedbackEvent {
        let at = now_ms - self.age_ms;
        let ratings = if self.ratings {
            (0..Dimension::ALL.len())
                .map(|d| {
                    let (e, p) = rating(self.index(), d);
                    pb::DimensionRating { dimension: 1 + d as i32, expectation: e, perception: p }
                })
                .collect()
        } else {
            Vec::new()
        };
        pb::FeedbackEvent {
            event_id: self.event_id.clone(),
            customer_id: self.customer_id.clone(),
            segment: Some(pb::Segment {
                attributes: [("tier".to_string(), self.tier.to_string()), ("region".into(), self.region.into())].into(),
                customer_value: Some(self.value),
            }),
            channel: 1 + self.channel as i32,
            journey_stage: 1 + self.stage as i32,
            touchpoint: self.touchpoint.into(),
            occurred_at: Some(prost_types::Timestamp { seconds: at.div_euclid(1000), nanos: 0 }),
            nps: self.nps,
            csat: self.csat,
            ratings,
            comment: self.comment.into(),
            ..Default::default()
        }
    }

    pub fn to_json(&self, now_ms: i64) -> Value {
        let secs = (now_ms - self.age_ms).div_euclid(1000);
        let mut e = json!({
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "channel": CHANNELS[self.channel],
            "journey_stage": STAGES[self.stage],
            "touchpoint": self.touchpoint,
            "occurred_at": rfc3339(secs),
            "customer_value": self.value,
            "segment": {"tier": self.tier, "region": self.region},
        });
        if let Some(n) = self.nps {
            e["nps"] = json!(n);
        }
        if let Some(c) = self.csat {
            e["csat"] = json!(c);
        }
        if !self.comment.is_empty() {
            e["comment"] = json!(self.comment);
        }
        if self.ratings {
            for (d, dim) in Dimension::ALL.iter().enumerate() {
                let (ex, p) = rating(self.index(), d);
                let name = dim.as_str().to_lowercase();
                e[format!("{name}_expectation")] = json!(ex);
                e[format!("{name}_perception")] = json!(p);
            }
        }
        e
    }

    /// The validated domain event, as analytics holds it.
    pub fn to_domain(&self, now_ms: i64) -> FeedbackEvent {
        let ratings = if self.ratings {
            Dimension::ALL
                .iter()
                .enumerate()
                .map(|(d, dim)| {
                    let (e, p) = rating(self.index(), d);
                    RatingDraft {
                        dimension: Some(*dim),
                        expectation: Some(i64::from(e)),
                        perception: Some(i64::from(p)),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        FeedbackDraft {
            event_id: self.event_id.clone(),
            customer_id: self.customer_id.clone(),
            attributes: vec![("tier".into(), self.tier.into()), ("region".into(), self.region.into())],
            customer_value: Some(self.value),
            channel: Some(Channel::ALL[self.channel]),
            journey_stage: Some(JourneyStage::ALL[self.stage]),
            touchpoint: self.touchpoint.into(),
            occurred_at: Some(Timestamp(now_ms - self.age_ms)),
            nps: self.nps.map(i64::from),
            csat: self.csat.map(i64::from),
            ratings,
            comment: self.comment.into(),
            ..Default::default()
        }
        .validate(Timestamp(now_ms), Violations::default())
        .expect("generated events are valid")
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` of Unix seconds (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_event_in_every_format() {
        let now = 1_790_000_000_000;
        for i in 0..200 {
            let s = spec("w", i, 50);
            let d = s.to_domain(now);
            let p = s.to_pb(now);
            let j = s.to_json(now);
            assert_eq!(d.event_id, p.event_id);
            assert_eq!(j["event_id"], p.event_id.as_str());
            assert_eq!(d.nps.map(u32::from), p.nps);
            assert_eq!(p.ratings.len(), if s.ratings { Dimension::ALL.len() } else { 0 });
            let flat = j.as_object().unwrap().keys().filter(|k| k.ends_with("_expectation")).count();
            assert_eq!(flat, p.ratings.len());
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    }
}
