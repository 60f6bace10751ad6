//! Per-trigger delivery rates: a token bucket per webhook trigger, in this process.
//!
//! Each process keeps its own buckets, so N processes behind a load balancer accept up to N
//! times a trigger's rate; the tenant's `runs_per_hour`, counted in the database, is the
//! bound that holds across processes.

use std::collections::HashMap;
use std::sync::Mutex;

/// Buckets kept before idle (full) ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
    /// Its own capacity (tokens a minute), for judging it idle.
    capacity: f64,
}

impl Bucket {
    /// Whether it has refilled by `now_ms`: forgetting it then changes nothing.
    fn full_at(&self, now_ms: i64) -> bool {
        self.tokens + (now_ms - self.at_ms).max(0) as f64 * self.capacity / 60_000.0
            >= self.capacity
    }
}

impl RateLimits {
    /// Takes one token from `id`'s bucket (capacity and refill: `per_minute` a minute), or
    /// says in how many seconds one will be there.
    pub(crate) fn take(&self, id: &str, per_minute: u32, now_ms: i64) -> Result<(), u64> {
        let capacity = f64::from(per_minute.max(1));
        let per_ms = capacity / 60_000.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(id) {
            buckets.retain(|_, b| !b.full_at(now_ms));
        }
        let bucket = buckets.entry(id.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at_ms: now_ms,
            capacity,
        });
        bucket.capacity = capacity;
        let elapsed = (now_ms - bucket.at_ms).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * per_ms).min(capacity);
        bucket.at_ms = bucket.at_ms.max(now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - bucket.tokens) / per_ms;
            Err((wait_ms / 1000.0).ceil().max(1.0) as u64)
        }
    }

    /// Puts back a token [`RateLimits::take`] took for something that turned out not to
    /// count (a redelivery answered with its run).
    pub(crate) fn give_back(&self, id: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(id) {
            bucket.tokens = (bucket.tokens + 1.0).min(bucket.capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_rate_and_refills() {
        let limits = RateLimits::default();
        for _ in 0..60 {
            assert_eq!(limits.take("t", 60, 0), Ok(()));
        }
        assert_eq!(limits.take("t", 60, 0), Err(1));
        // Another trigger has its own bucket.
        assert_eq!(limits.take("u", 60, 0), Ok(()));
        // One token a second comes back.
        assert_eq!(limits.take("t", 60, 1_000), Ok(()));
        assert_eq!(limits.take("t", 60, 1_000), Err(1));
    }

    #[test]
    fn a_token_given_back_can_be_taken_again() {
        let limits = RateLimits::default();
        assert!(limits.take("t", 1, 0).is_ok());
        assert!(limits.take("t", 1, 0).is_err());
        limits.give_back("t");
        assert!(limits.take("t", 1, 0).is_ok());
        limits.give_back("t");
        limits.give_back("t");
        assert!(limits.take("t", 1, 0).is_ok());
        assert!(limits.take("t", 1, 0).is_err(), "never above its capacity");
    }

    #[test]
    fn a_slow_rate_says_how_long_to_wait() {
        let limits = RateLimits::default();
        assert_eq!(limits.take("t", 1, 0), Ok(()));
        assert_eq!(limits.take("t", 1, 0), Err(60));
        assert_eq!(limits.take("t", 1, 30_000), Err(30));
    }
}
