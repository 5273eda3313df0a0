//! The columns of the export format, documented in the README.

pub const FEEDBACK_COLUMNS: &[&str] = &[
    "event_id",
    "customer_id",
    "channel",
    "journey_stage",
    "touchpoint",
    "occurred_at",
    "nps",
    "csat",
    "ces",
    "reliability_expectation",
    "reliability_perception",
    "assurance_expectation",
    "assurance_perception",
    "tangibles_expectation",
    "tangibles_perception",
    "empathy_expectation",
    "empathy_perception",
    "responsiveness_expectation",
    "responsiveness_perception",
    "comment",
    "wait_seconds",
    "promised_wait_seconds",
    "resolved",
    "contact_reason",
    "customer_value",
];

pub const ASSESSMENT_COLUMNS: &[&str] =
    &["assessment_id", "touchpoint", "journey_stage", "assessor", "assessed_at", "instrument", "score"];
