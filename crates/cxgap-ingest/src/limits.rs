//! Per-tenant token-bucket rate limiting, so one tenant's flood cannot starve the others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        RateLimiter { per_second, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `n` tokens, or says how long until they will be there.
    pub fn acquire(&self, tenant: &str, n: usize, now: Instant) -> Result<(), Duration> {
        let n = n as f64;
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let (tokens, last) = buckets.entry(tenant.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= n {
            *tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - *tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_tenant() {
        let l = RateLimiter::new(10.0, 20.0);
        let t0 = Instant::now();
        assert!(l.acquire("a", 20, t0).is_ok());
        let wait = l.acquire("a", 5, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9);
        assert!(l.acquire("b", 20, t0).is_ok(), "tenants have their own buckets");
        assert!(l.acquire("a", 5, t0 + Duration::from_millis(500)).is_ok());
    }
}
