//! Rate limits: a token bucket per user for each kind of route, so one
//! user (or a script holding one token) cannot monopolise a set's queue or
//! search the id space, and one per client IP for failed authentication,
//! checked before a token is even looked at. A refusal is 429
//! `rate_limited` with `Retry-After` saying when the bucket next holds a
//! token (whole seconds, rounded up).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hongbao_domain::UserId;

use crate::auth::Origin;
use crate::error::ApiError;
use crate::shards::{SHARDS, Shards, shard_of};

/// Buckets kept per shard before idle ones are dropped: bounds memory
/// whatever the number of users or addresses.
const BUCKETS_PER_SHARD_MAX: usize = 65_536;

/// A sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_s: f64,
    /// Requests at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    /// A rate that never refuses anyone (for load generators' own servers).
    pub const UNLIMITED: Rate = Rate { per_s: 1e12, burst: 1e12 };

    /// Whether this is a rate a bucket can hold: positive, burst at least 1.
    pub fn is_valid(self) -> bool {
        self.per_s > 0.0 && self.per_s.is_finite() && self.burst >= 1.0 && self.burst.is_finite()
    }
}

/// The kinds of user route, each with its own bucket per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Open,
    Grab,
    Send,
    /// A packet's detail, the caller's account.
    Read,
    /// The sent and received lists.
    List,
}

impl Route {
    /// Every route, in declaration order (so `route as usize` indexes it).
    pub const ALL: [Route; 5] = [Route::Open, Route::Grab, Route::Send, Route::Read, Route::List];

    pub fn name(self) -> &'static str {
        match self {
            Route::Open => "open",
            Route::Grab => "grab",
            Route::Send => "send",
            Route::Read => "read",
            Route::List => "list",
        }
    }
}

/// Every limit, with defaults a person never meets and a script does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// A person opens a few packets a second at most.
    pub open: Rate,
    /// Grabs are cheap checks a client may repeat while a packet is live.
    pub grab: Rate,
    /// Sending is deliberate: a few a second is already a bot.
    pub send: Rate,
    pub read: Rate,
    /// A page of a list is up to 100 rows: fewer pages than reads.
    pub list: Rate,
    /// Failed authentications per client IP: generous for a carrier NAT in
    /// front of many phones, fatal to a token search.
    pub auth_failures_per_ip: Rate,
}

impl Default for Rates {
    fn default() -> Rates {
        Rates {
            open: Rate { per_s: 20.0, burst: 50.0 },
            grab: Rate { per_s: 50.0, burst: 100.0 },
            send: Rate { per_s: 5.0, burst: 20.0 },
            read: Rate { per_s: 50.0, burst: 100.0 },
            list: Rate { per_s: 10.0, burst: 30.0 },
            auth_failures_per_ip: Rate { per_s: 20.0, burst: 100.0 },
        }
    }
}

impl Rates {
    pub fn of(&self, route: Route) -> Rate {
        match route {
            Route::Open => self.open,
            Route::Grab => self.grab,
            Route::Send => self.send,
            Route::Read => self.read,
            Route::List => self.list,
        }
    }

    pub fn set(&mut self, route: Route, rate: Rate) {
        match route {
            Route::Open => self.open = rate,
            Route::Grab => self.grab = rate,
            Route::Send => self.send = rate,
            Route::Read => self.read = rate,
            Route::List => self.list = rate,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets for one rate, keyed by user or address.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: Rate,
    shards: Shards<HashMap<K, Bucket>>,
    /// Each shard's bucket count, kept under its lock, read without it.
    lens: Vec<AtomicUsize>,
}

impl<K: Hash + Eq + Clone + AsRef<[u8]>> Buckets<K> {
    pub fn new(rate: Rate) -> Buckets<K> {
        assert!(rate.is_valid(), "invalid rate {rate:?}");
        Buckets { rate, shards: Shards::default(), lens: (0..SHARDS).map(|_| AtomicUsize::new(0)).collect() }
    }

    fn index(key: &K) -> usize {
        shard_of(key.as_ref())
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, HashMap<K, Bucket>> {
        self.shards.lock(index)
    }

    /// Runs `f` on `key`'s bucket, refilled to `now`.
    fn with<T>(&self, key: &K, now: Instant, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let index = Self::index(key);
        let mut buckets = self.lock(index);
        let answer = self.with_locked(&mut buckets, key, now, f);
        self.lens[index].store(buckets.len(), Ordering::Relaxed);
        answer
    }

    fn with_locked<T>(
        &self,
        buckets: &mut HashMap<K, Bucket>,
        key: &K,
        now: Instant,
        f: impl FnOnce(&mut Bucket) -> T,
    ) -> T {
        let Rate { per_s, burst } = self.rate;
        if buckets.len() >= BUCKETS_PER_SHARD_MAX && !buckets.contains_key(key) {
            // A bucket that has refilled is the same as no bucket: drop those.
            buckets.retain(|_, bucket| bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_s < burst);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: burst, at: now });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * per_s;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = bucket.at.max(now);
        f(bucket)
    }

    /// How long until the bucket holds one token again.
    fn wait(&self, bucket: &Bucket) -> Duration {
        Duration::from_secs_f64(((1.0 - bucket.tokens) / self.rate.per_s).max(0.0))
    }

    /// Takes one token for `key` at `now`, or says how long until one is there.
    pub fn admit(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.with(key, now, |bucket| {
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                Ok(())
            } else {
                Err(self.wait(bucket))
            }
        })
    }

    /// Whether `key` has a token, without taking it (and without making a
    /// bucket for a key that has none: that is a full bucket).
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let index = Self::index(key);
        if self.lens[index].load(Ordering::Relaxed) == 0 {
            // No bucket in this shard, so none for `key`: a full bucket.
            // (Skips the lock on the path every authenticated request takes.)
            return Ok(());
        }
        let buckets = self.lock(index);
        let Some(bucket) = buckets.get(key) else { return Ok(()) };
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate.per_s;
        let refilled = Bucket { tokens: (bucket.tokens + refill).min(self.rate.burst), at: now };
        if refilled.tokens >= 1.0 { Ok(()) } else { Err(self.wait(&refilled)) }
    }

    /// Takes a token if there is one; an empty bucket stays empty.
    pub fn charge(&self, key: &K, now: Instant) {
        self.with(key, now, |bucket| bucket.tokens = (bucket.tokens - 1.0).max(0.0));
    }
}

/// An address as hashable bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpKey([u8; 16]);

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> IpKey {
        IpKey(match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        })
    }
}

impl AsRef<[u8]> for IpKey {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A user's name as bucket key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserKey(UserId);

impl AsRef<[u8]> for UserKey {
    fn as_ref(&self) -> &[u8] {
        self.0.as_str().as_bytes()
    }
}

/// Every bucket of a server.
#[derive(Debug)]
pub struct RateLimits {
    /// One per route, in `Route::ALL`'s order (indexed by the route).
    routes: Vec<Buckets<UserKey>>,
    auth_failures: Buckets<IpKey>,
}

fn rate_limited(wait: Duration) -> ApiError {
    ApiError::rate_limited("too many requests of this kind; retry after the time in Retry-After", wait)
}

impl RateLimits {
    pub fn new(rates: Rates) -> RateLimits {
        RateLimits {
            routes: Route::ALL.iter().map(|&route| Buckets::new(rates.of(route))).collect(),
            auth_failures: Buckets::new(rates.auth_failures_per_ip),
        }
    }

    /// Takes one of `user`'s tokens for `route`: 429 `rate_limited` if none.
    /// Takes a token of `user`'s budget for `route`: 429 `rate_limited`
    /// when there is none. A request another node forwarded was charged
    /// there: the user's budget is spent once per request in a cluster.
    /// (Each node keeps its own budgets: a user whose requests are spread
    /// over n nodes may make up to n times the rate.)
    pub fn admit(&self, route: Route, user: &UserId, origin: Origin, now: Instant) -> Result<(), ApiError> {
        if origin == Origin::Peer {
            return Ok(());
        }
        self.routes[route as usize].admit(&UserKey(user.clone()), now).map_err(rate_limited)
    }

    /// Whether `ip` may still try a token: 429 `rate_limited` if it has
    /// spent its failures.
    pub fn auth_failures_allowed(&self, ip: IpAddr, now: Instant) -> Result<(), ApiError> {
        self.auth_failures.check(&IpKey::from(ip), now).map_err(rate_limited)
    }

    /// Counts a failed authentication against `ip`.
    pub fn auth_failed(&self, ip: IpAddr, now: Instant) {
        self.auth_failures.charge(&IpKey::from(ip), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_and_the_real_wait() {
        let buckets = Buckets::new(Rate { per_s: 10.0, burst: 5.0 });
        let alice = UserKey(UserId::parse("alice").unwrap());
        let bob = UserKey(UserId::parse("bob").unwrap());
        let start = Instant::now();
        assert!((0..5).all(|_| buckets.admit(&alice, start).is_ok()));
        assert_eq!(buckets.admit(&alice, start), Err(Duration::from_millis(100)), "the burst is spent");
        assert!(buckets.admit(&bob, start).is_ok(), "users have their own buckets");
        let wait = buckets.admit(&alice, start + Duration::from_millis(50)).unwrap_err();
        assert!(wait > Duration::from_millis(49) && wait < Duration::from_millis(51), "{wait:?}");
        assert!(buckets.admit(&alice, start + Duration::from_millis(150)).is_ok(), "refilled at 10 per second");
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| buckets.admit(&alice, later).is_ok()).count(), 5, "never more than the burst");
    }

    #[test]
    fn failures_are_charged_and_checked_apart() {
        let limits =
            RateLimits::new(Rates { auth_failures_per_ip: Rate { per_s: 1.0, burst: 2.0 }, ..Rates::default() });
        let (attacker, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        let now = Instant::now();
        assert!((0..5).all(|_| limits.auth_failures_allowed(attacker, now).is_ok()), "checking takes nothing");
        limits.auth_failed(attacker, now);
        assert!((0..5).all(|_| limits.auth_failures_allowed(attacker, now).is_ok()), "one failure of a burst of 2");
        limits.auth_failed(attacker, now);
        limits.auth_failed(attacker, now); // an empty bucket stays empty
        let refused = limits.auth_failures_allowed(attacker, now).unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.code, refused.retry_after_s), (429, "rate_limited", Some(1)));
        assert!(limits.auth_failures_allowed(other, now).is_ok(), "addresses have their own buckets");
        assert!(limits.auth_failures_allowed(attacker, now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn each_route_has_its_own_bucket() {
        assert!(Route::ALL.iter().enumerate().all(|(i, &route)| route as usize == i), "ALL indexes the buckets");
        let one = Rate { per_s: 0.001, burst: 1.0 };
        let limits = RateLimits::new(Rates { open: one, grab: one, ..Rates::default() });
        let alice = UserId::parse("alice").unwrap();
        let now = Instant::now();
        assert!(limits.admit(Route::Open, &alice, Origin::Client, now).is_ok());
        assert!(
            limits.admit(Route::Grab, &alice, Origin::Client, now).is_ok(),
            "a spent open bucket leaves grabs alone"
        );
        let refused = limits.admit(Route::Open, &alice, Origin::Client, now).unwrap_err();
        assert_eq!(refused.retry_after_s, Some(1000), "Retry-After says the real wait");
        // A request another node forwarded was charged there, not again here.
        assert!(limits.admit(Route::Open, &alice, Origin::Peer, now).is_ok());
    }
}
