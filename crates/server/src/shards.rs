//! A value split into shards, each behind its own lock, chosen by a stable
//! hash of a key: the per-user and per-address maps of the rate limits and
//! of the write gate, so concurrent requests rarely share a lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

use hongbao_domain::hash::fnv1a64;

/// Shards of every sharded map.
pub const SHARDS: usize = 16;

#[derive(Debug)]
pub struct Shards<T> {
    shards: Vec<Mutex<T>>,
}

impl<T: Default> Default for Shards<T> {
    fn default() -> Shards<T> {
        Shards { shards: (0..SHARDS).map(|_| Mutex::new(T::default())).collect() }
    }
}

/// The shard of a key's bytes.
pub fn shard_of(key: &[u8]) -> usize {
    (fnv1a64(key) % SHARDS as u64) as usize
}

impl<T> Shards<T> {
    /// Locks shard `index`. A panic while holding a shard left only counts
    /// behind (no money), so a poisoned lock is taken as it is.
    pub fn lock(&self, index: usize) -> MutexGuard<'_, T> {
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        (0..SHARDS).map(|index| self.lock(index))
    }
}
