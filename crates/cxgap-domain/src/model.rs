//! The validated feedback event and internal assessment of ARCHITECTURE §3, and the
//! closed vocabularies (channels, journey stages, RATER dimensions) they use.

use crate::calendar::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn index(self) -> usize {
                self as usize
            }

            /// Accepts the canonical name in any case, with `-` or ` ` for `_`.
            pub fn parse(s: &str) -> Option<$name> {
                let norm: String = s
                    .trim()
                    .chars()
                    .map(|c| if c == '-' || c == ' ' { '_' } else { c.to_ascii_uppercase() })
                    .collect();
                match norm.as_str() {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            pub fn allowed() -> String {
                [$($text),+].join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary!(
    /// Where the feedback came from.
    Channel {
        Survey = "SURVEY",
        Email = "EMAIL",
        Chat = "CHAT",
        Phone = "PHONE",
        Social = "SOCIAL",
        Review = "REVIEW",
        InStore = "IN_STORE",
        Web = "WEB",
        MobileApp = "MOBILE_APP",
        SupportTicket = "SUPPORT_TICKET",
    }
);

vocabulary!(
    /// The journey stage the feedback is about.
    JourneyStage {
        Awareness = "AWARENESS",
        Consideration = "CONSIDERATION",
        Purchase = "PURCHASE",
        Delivery = "DELIVERY",
        Onboarding = "ONBOARDING",
        Usage = "USAGE",
        Support = "SUPPORT",
        Billing = "BILLING",
        Renewal = "RENEWAL",
    }
);

vocabulary!(
    /// SERVQUAL's RATER dimensions.
    Dimension {
        Reliability = "RELIABILITY",
        Assurance = "ASSURANCE",
        Tangibles = "TANGIBLES",
        Empathy = "EMPATHY",
        Responsiveness = "RESPONSIVENESS",
    }
);

impl Channel {
    /// Channels where the customer contacted the firm, for repeat-contact features.
    pub fn is_contact(self) -> bool {
        matches!(self, Channel::Chat | Channel::Phone | Channel::Email | Channel::SupportTicket)
    }
}

impl Dimension {
    pub fn lower(self) -> &'static str {
        match self {
            Dimension::Reliability => "reliability",
            Dimension::Assurance => "assurance",
            Dimension::Tangibles => "tangibles",
            Dimension::Empathy => "empathy",
            Dimension::Responsiveness => "responsiveness",
        }
    }
}

/// Expectation and perception of one RATER dimension, each 1–7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    pub expectation: u8,
    pub perception: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Operational {
    pub wait_seconds: Option<f64>,
    pub promised_wait_seconds: Option<f64>,
    pub resolved: Option<bool>,
    pub contact_reason: Option<String>,
}

impl Operational {
    pub fn sla_breached(&self) -> Option<bool> {
        match (self.wait_seconds, self.promised_wait_seconds) {
            (Some(w), Some(p)) => Some(w > p),
            _ => None,
        }
    }
}

/// Segment attributes, sorted by key so equal segments compare and hash equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attributes(pub Vec<(String, String)>);

/// The values alone (and how many), without the keys: a tenant's segments nearly always
/// share their keys, so hashing them is work that tells no two segments apart (equality
/// still compares them). The engine hashes a segment for every event and for every
/// customer it reads back from storage.
impl std::hash::Hash for Attributes {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_usize(self.0.len());
        for (_, value) in &self.0 {
            value.hash(h);
        }
    }
}

impl Attributes {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.0[i].1.as_str())
    }

    pub fn matches(&self, filter: &[(String, String)]) -> bool {
        filter.iter().all(|(k, v)| self.get(k) == Some(v.as_str()))
    }
}

/// A segment's attributes as a state hands them out: shared, so a batch's cells and
/// customers that sit in one segment refer to one copy. The state interns each segment
/// once; before, taking a batch's state apart for writing copied the attributes (a vector
/// and its strings) for every cell and customer, and the writer turned each copy into
/// JSON again. Compares, hashes and serializes as the attributes do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Segment(std::sync::Arc<Attributes>);

impl Segment {
    pub fn new(attributes: Attributes) -> Self {
        Segment(std::sync::Arc::new(attributes))
    }

    /// The address of the shared copy: handles with one address hold one copy, for as long
    /// as any of them lives (equal segments from different states may have two).
    pub fn address(&self) -> usize {
        std::sync::Arc::as_ptr(&self.0) as usize
    }
}

impl std::ops::Deref for Segment {
    type Target = Attributes;

    fn deref(&self) -> &Attributes {
        &self.0
    }
}

impl std::borrow::Borrow<Attributes> for Segment {
    fn borrow(&self) -> &Attributes {
        &self.0
    }
}

impl Serialize for Segment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Attributes::deserialize(d).map(Segment::new)
    }
}

/// A validated feedback event. Construct it through [`crate::FeedbackDraft::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    pub event_id: String,
    pub customer_id: String,
    pub attributes: Attributes,
    pub customer_value: Option<f64>,
    pub channel: Channel,
    pub journey_stage: JourneyStage,
    pub touchpoint: Option<String>,
    pub occurred_at: Timestamp,
    pub nps: Option<u8>,
    pub csat: Option<u8>,
    pub ces: Option<u8>,
    /// Indexed by [`Dimension::index`].
    pub ratings: [Option<Rating>; 5],
    pub comment: Option<String>,
    pub operational: Operational,
}

/// What an internal assessment scores, on the customers' scale for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Instrument {
    Nps,
    Csat,
    Ces,
    Dimension(Dimension),
}

impl Instrument {
    pub fn parse(s: &str) -> Option<Instrument> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nps" => Some(Instrument::Nps),
            "csat" => Some(Instrument::Csat),
            "ces" => Some(Instrument::Ces),
            other => Dimension::parse(other).map(Instrument::Dimension),
        }
    }

    pub fn range(self) -> (u8, u8) {
        match self {
            Instrument::Nps => (0, 10),
            Instrument::Csat => (1, 5),
            Instrument::Ces | Instrument::Dimension(_) => (1, 7),
        }
    }

    /// Maps a score on this instrument's scale onto the experience scale 0–1.
    pub fn normalise(self, score: f64) -> f64 {
        let (lo, hi) = self.range();
        (score - lo as f64) / (hi - lo) as f64
    }

    /// Every instrument: the three scores, then the service-quality dimensions.
    pub fn all() -> impl Iterator<Item = Instrument> {
        [Instrument::Nps, Instrument::Csat, Instrument::Ces]
            .into_iter()
            .chain(Dimension::ALL.iter().copied().map(Instrument::Dimension))
    }

    pub fn name(self) -> &'static str {
        match self {
            Instrument::Nps => "nps",
            Instrument::Csat => "csat",
            Instrument::Ces => "ces",
            Instrument::Dimension(d) => d.lower(),
        }
    }
}

/// The firm's own rating of a touchpoint: the management view held against customers'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InternalAssessment {
    pub assessment_id: String,
    pub touchpoint: String,
    pub journey_stage: Option<JourneyStage>,
    pub assessor: String,
    pub assessed_at: Timestamp,
    pub instrument: Instrument,
    pub score: u8,
}
