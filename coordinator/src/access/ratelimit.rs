//! Requests per minute per API key: a token bucket holding up to the per-minute budget, refilled
//! continuously. In memory: a restart refills every bucket, which errs on the side of the caller
//! for at most one minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Takes one request from `id`'s budget of `per_minute`; `Err(wait)` when none is left.
    pub fn take(&self, id: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        if per_minute == 0 {
            return Err(Duration::MAX);
        }
        let capacity = f64::from(per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = buckets.entry(id.to_string()).or_insert((capacity, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * per_second).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_second))
        }
    }

    /// Forgets a key (revoked, or its policy changed).
    pub fn forget(&self, id: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_exact_and_refills() {
        let limiter = RateLimiter::default();
        let now = Instant::now();
        for _ in 0..3 {
            limiter.take("a", 3, now).unwrap();
        }
        let wait = limiter.take("a", 3, now).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        limiter.take("b", 3, now).unwrap();
        limiter.take("a", 3, now + Duration::from_secs(20)).unwrap();
        assert!(limiter.take("a", 0, now).is_err());
    }
}
