//! The cxgap gap engine: everything ARCHITECTURE §4 defines, as pure code with no I/O.
//!
//! Feedback enters as a [`FeedbackDraft`], is checked by [`FeedbackDraft::validate`] (every
//! violation at once, each naming its field) and applied to a [`GapState`]. The state is a
//! set of exact integer accumulators, so applying the same events in any order, with any
//! duplicates, yields an identical [`state::Snapshot`]. Reports ([`report::gap_report`],
//! [`report::trend`], [`report::perception_gaps`]) and churn risk ([`report::RiskView`])
//! are read from it; [`rules`] evaluates the alert conditions.

pub mod aggregate;
pub mod alerts;
pub mod calendar;
pub mod customer;
pub mod model;
pub mod nps;
pub mod report;
pub mod risk;
pub mod rules;
pub mod score;
pub mod sentiment;
pub mod servqual;
pub mod signals;
mod slots;
pub mod state;
pub mod stats;
pub mod validate;

pub use calendar::{Day, Timestamp};
pub use model::{Channel, Dimension, FeedbackEvent, Instrument, InternalAssessment, JourneyStage};
pub use state::{Applied, GapState};
pub use validate::{AssessmentDraft, FeedbackDraft, Violation, Violations};
