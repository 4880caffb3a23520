//! The per-user limit on opens: a token bucket per user, so one user (or a
//! script holding one token) cannot monopolise a set's queue in the minute
//! everyone opens. Refused opens get 429 `rate_limited` with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use hongbao_domain::UserId;
use hongbao_domain::hash::fnv1a64;

/// Shards of the bucket map, so concurrent opens rarely share a lock.
const SHARDS: usize = 16;
/// Buckets kept per shard before idle ones are dropped: bounds memory
/// whatever the number of users.
const BUCKETS_PER_SHARD_MAX: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpenRate {
    /// Opens a user may make per second, sustained.
    pub per_s: f64,
    /// Opens a user may make at once after a quiet spell.
    pub burst: f64,
}

impl Default for OpenRate {
    /// A person opens a few packets a second at most; 20 per second with a
    /// burst of 50 never stops one, and stops a script.
    fn default() -> OpenRate {
        OpenRate { per_s: 20.0, burst: 50.0 }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: OpenRate,
    shards: Vec<Mutex<HashMap<UserId, Bucket>>>,
}

impl RateLimiter {
    pub fn new(rate: OpenRate) -> RateLimiter {
        RateLimiter { rate, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    /// Takes one token for `user` at `now`; `false` if the bucket is empty.
    pub fn admit(&self, user: &UserId, now: Instant) -> bool {
        let shard = &self.shards[(fnv1a64(user.as_str().as_bytes()) % SHARDS as u64) as usize];
        let mut buckets = shard.lock().expect("rate limiter lock");
        if buckets.len() >= BUCKETS_PER_SHARD_MAX && !buckets.contains_key(user) {
            // A bucket that has refilled is the same as no bucket: drop those.
            let (per_s, burst) = (self.rate.per_s, self.rate.burst);
            buckets.retain(|_, bucket| bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_s < burst);
        }
        let bucket = buckets.entry(user.clone()).or_insert(Bucket { tokens: self.rate.burst, at: now });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate.per_s;
        bucket.tokens = (bucket.tokens + refill).min(self.rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(OpenRate { per_s: 10.0, burst: 5.0 });
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let start = Instant::now();
        assert!((0..5).all(|_| limiter.admit(&alice, start)));
        assert!(!limiter.admit(&alice, start), "the burst is spent");
        assert!(limiter.admit(&bob, start), "users have their own buckets");
        assert!(!limiter.admit(&alice, start + Duration::from_millis(50)));
        assert!(limiter.admit(&alice, start + Duration::from_millis(150)), "refilled at 10 per second");
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| limiter.admit(&alice, later)).count(), 5, "never more than the burst");
    }
}
