//! When to try a failed webhook delivery again: a configurable schedule (by default
//! 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, as Standard Webhooks senders commonly use),
//! each delay spread by ±20 % jitter so endpoints recovering from an outage are not hit by
//! every sender at once, and never sooner than the receiver's `Retry-After`.

use std::time::Duration;

pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";
/// A `Retry-After` beyond this is capped: a receiver cannot park a delivery for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(Vec<Duration>);

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

impl Schedule {
    /// `5s,5m,30m,2h` — each entry a whole number with ms, s, m, h or d.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let delays: Vec<Duration> = s
            .split(',')
            .map(|p| parse_duration(p).ok_or_else(|| format!("retry delay {:?} is not like 5s, 30m or 2h", p.trim())))
            .collect::<Result<_, _>>()?;
        if delays.is_empty() {
            return Err("the retry schedule needs at least one delay".into());
        }
        Ok(Schedule(delays))
    }

    /// How many attempts in all: the first and one per delay.
    pub fn attempts(&self) -> u32 {
        self.0.len() as u32 + 1
    }

    /// The delay after failed attempt number `attempt` (1-based), or `None` when that was
    /// the last: the delivery is dead-lettered. `unit` in [0, 1) picks the jitter.
    pub fn next_delay(&self, attempt: u32, unit: f64, retry_after: Option<Duration>) -> Option<Duration> {
        let base = *self.0.get(attempt.checked_sub(1)? as usize)?;
        let jittered = base.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0));
        Some(match retry_after {
            Some(r) => jittered.max(r.min(MAX_RETRY_AFTER)),
            None => jittered,
        })
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::parse(DEFAULT_SCHEDULE).expect("the default schedule parses")
    }
}

/// `Retry-After` as seconds or an HTTP date, relative to `now` (Unix seconds).
pub fn parse_retry_after(value: &str, now: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, &format).ok()?.assume_utc().unix_timestamp();
    Some(Duration::from_secs((at - now).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_with_jitter_and_retry_after() {
        let s = Schedule::default();
        assert_eq!(s.attempts(), 8);
        assert_eq!(s.next_delay(1, 0.5, None), Some(Duration::from_secs(5)));
        assert_eq!(s.next_delay(1, 0.0, None), Some(Duration::from_secs(4)));
        assert_eq!(s.next_delay(2, 1.0, None), Some(Duration::from_secs(360)));
        assert_eq!(s.next_delay(7, 0.5, None), Some(Duration::from_secs(36_000)));
        assert_eq!(s.next_delay(8, 0.5, None), None, "after the eighth attempt: dead letter");
        assert_eq!(s.next_delay(1, 0.5, Some(Duration::from_secs(60))), Some(Duration::from_secs(60)));
        assert_eq!(s.next_delay(1, 0.5, Some(Duration::from_secs(10 * 86_400))), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn schedules_parse_or_say_what_is_wrong() {
        assert_eq!(Schedule::parse("100ms, 1s").unwrap().next_delay(1, 0.5, None), Some(Duration::from_millis(100)));
        assert!(Schedule::parse("5s,soon").unwrap_err().contains("\"soon\""));
        assert!(Schedule::parse("").is_err());
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
        // 1994-11-06 08:49:37 UTC = 784111777
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_700), Some(Duration::from_secs(77)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_800), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("later", 0), None);
    }
}
