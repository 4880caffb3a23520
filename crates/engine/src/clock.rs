//! The two things the domain takes as arguments: time and randomness. The
//! engine reads them here, so tests and the simulation can inject their own.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hongbao_domain::Millis;
use hongbao_domain::hash::mix64;

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time: what packets' creation and expiry are stated in.
    fn now(&self) -> Millis;
    /// Time that never goes back, from an arbitrary start: what waits are
    /// measured in (a wall clock stepped by NTP must not shed a queue).
    fn monotonic(&self) -> Duration;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970");
        Millis(i64::try_from(since_epoch.as_millis()).expect("clock beyond year 292 million"))
    }

    fn monotonic(&self) -> Duration {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that moves only when told to: expiry tests without sleeping.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Millis) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        Millis(self.0.load(Ordering::SeqCst))
    }

    /// Moves with the manual time (which tests only ever advance).
    fn monotonic(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.load(Ordering::SeqCst)).unwrap_or(0))
    }
}

/// Where seeds and id nonces come from.
pub trait Entropy: Send + 'static {
    fn next_u64(&mut self) -> u64;
}

/// The operating system's generator: unpredictable seeds and nonces, so
/// packet ids cannot be guessed and shares cannot be foreseen.
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn next_u64(&mut self) -> u64 {
        getrandom::u64().expect("the operating system's random source failed")
    }
}

/// A reproducible sequence for tests and simulation (SplitMix64).
#[derive(Debug)]
pub struct SeededEntropy(u64);

impl SeededEntropy {
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy(seed)
    }
}

impl Entropy for SeededEntropy {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix64(self.0)
    }
}
