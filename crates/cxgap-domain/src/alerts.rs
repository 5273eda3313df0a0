//! The alert lifecycle, as pure decisions: firing → acknowledged → resolved. An alert's
//! identity is its fingerprint (tenant, rule, subject), so a condition that stays true is
//! one alert, not a flood: it notifies when it starts, again only after the repeat
//! interval while nobody acknowledged it, and once when it resolves. A condition that
//! returns after resolution opens a new episode of the same alert.

use crate::customer::stable_hash;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        match s {
            "firing" => Some(AlertState::Firing),
            "acknowledged" => Some(AlertState::Acknowledged),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }

    pub fn is_open(self) -> bool {
        self != AlertState::Resolved
    }
}

/// Where one alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertStatus {
    pub state: AlertState,
    /// Incremented each time the condition starts anew after a resolution.
    pub episode: u32,
    /// When this episode started (ms since the epoch).
    pub started_at: i64,
    /// When subscribers were last told about it.
    pub last_notified_at: i64,
}

/// What a rule's verdict does to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The condition started: a new alert or a new episode. Notify.
    Fired,
    /// Still firing, unacknowledged, and the repeat interval passed. Notify again.
    Repeated,
    /// The condition cleared. Notify.
    AutoResolved,
    /// Nothing subscribers need to hear (the summary may still be refreshed).
    Unchanged,
}

/// The lifecycle step for a verdict on the condition at `now`.
pub fn on_verdict(cur: Option<&AlertStatus>, firing: bool, now: i64, repeat_ms: i64) -> (Change, Option<AlertStatus>) {
    match (cur, firing) {
        (None, false) => (Change::Unchanged, None),
        (None, true) => (
            Change::Fired,
            Some(AlertStatus { state: AlertState::Firing, episode: 1, started_at: now, last_notified_at: now }),
        ),
        (Some(s), true) if s.state == AlertState::Resolved => (
            Change::Fired,
            Some(AlertStatus {
                state: AlertState::Firing,
                episode: s.episode + 1,
                started_at: now,
                last_notified_at: now,
            }),
        ),
        (Some(s), true) if s.state == AlertState::Firing && now - s.last_notified_at >= repeat_ms => {
            (Change::Repeated, Some(AlertStatus { last_notified_at: now, ..*s }))
        }
        (Some(s), true) => (Change::Unchanged, Some(*s)),
        (Some(s), false) if s.state.is_open() => {
            (Change::AutoResolved, Some(AlertStatus { state: AlertState::Resolved, last_notified_at: now, ..*s }))
        }
        (Some(s), false) => (Change::Unchanged, Some(*s)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alert is {state}, so it cannot be {action}")]
pub struct InvalidTransition {
    pub state: &'static str,
    pub action: &'static str,
}

/// A person acknowledges a firing alert: it stays open but stops repeating.
pub fn acknowledge(cur: &AlertStatus, now: i64) -> Result<AlertStatus, InvalidTransition> {
    match cur.state {
        AlertState::Firing => Ok(AlertStatus { state: AlertState::Acknowledged, last_notified_at: now, ..*cur }),
        s => Err(InvalidTransition { state: s.as_str(), action: "acknowledged" }),
    }
}

/// A person resolves an open alert. If the condition still holds, the next verdict opens
/// a new episode.
pub fn resolve(cur: &AlertStatus, now: i64) -> Result<AlertStatus, InvalidTransition> {
    match cur.state {
        AlertState::Firing | AlertState::Acknowledged => {
            Ok(AlertStatus { state: AlertState::Resolved, last_notified_at: now, ..*cur })
        }
        s => Err(InvalidTransition { state: s.as_str(), action: "resolved" }),
    }
}

/// A notification's id: the alert, its episode, the new state and when, so a redelivery
/// of the same notification has the same id and distinct notifications never share one.
pub fn notification_id(alert_id: &str, episode: u32, state: AlertState, at_ms: i64) -> String {
    let mut buf = Vec::with_capacity(alert_id.len() + 32);
    buf.extend_from_slice(alert_id.as_bytes());
    buf.extend_from_slice(&episode.to_be_bytes());
    buf.extend_from_slice(state.as_str().as_bytes());
    buf.extend_from_slice(&at_ms.to_be_bytes());
    format!("ntf_{:016x}", stable_hash(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_condition_that_stays_true_is_one_alert_repeated_only_after_the_interval() {
        let (c, s) = on_verdict(None, true, 0, 4 * HOUR);
        assert_eq!(c, Change::Fired);
        let mut s = s.unwrap();
        let mut notified = 1;
        for minute in 1..=600 {
            let (c, next) = on_verdict(Some(&s), true, minute * 60_000, 4 * HOUR);
            s = next.unwrap();
            notified += (c != Change::Unchanged) as u32;
        }
        assert_eq!(notified, 3, "fired at 0, repeated at 4 h and 8 h over 10 h");
        assert_eq!(s.episode, 1);
    }

    #[test]
    fn acknowledged_alerts_stop_repeating_and_resolve_when_the_condition_clears() {
        let (_, s) = on_verdict(None, true, 0, HOUR);
        let acked = acknowledge(&s.unwrap(), 10).unwrap();
        let (c, s) = on_verdict(Some(&acked), true, 5 * HOUR, HOUR);
        assert_eq!(c, Change::Unchanged);
        let (c, s) = on_verdict(s.as_ref(), false, 6 * HOUR, HOUR);
        assert_eq!(c, Change::AutoResolved);
        let s = s.unwrap();
        assert_eq!(s.state, AlertState::Resolved);
        assert_eq!(on_verdict(Some(&s), false, 7 * HOUR, HOUR).0, Change::Unchanged);
        let (c, again) = on_verdict(Some(&s), true, 8 * HOUR, HOUR);
        assert_eq!((c, again.unwrap().episode), (Change::Fired, 2), "a returning condition is a new episode");
        assert!(acknowledge(&s, 0).is_err() && resolve(&s, 0).is_err());
        assert_eq!(
            acknowledge(&acked, 0).unwrap_err().to_string(),
            "alert is acknowledged, so it cannot be acknowledged"
        );
    }

    #[test]
    fn notification_ids_are_stable_and_distinct() {
        let a = notification_id("fp1", 1, AlertState::Firing, 5);
        assert_eq!(a, notification_id("fp1", 1, AlertState::Firing, 5));
        assert_ne!(a, notification_id("fp1", 2, AlertState::Firing, 5));
        assert_ne!(a, notification_id("fp1", 1, AlertState::Resolved, 5));
        assert_ne!(a, notification_id("fp2", 1, AlertState::Firing, 5));
    }
}
