//! Admission of writes (deposits, sends, grabs, opens) at the HTTP layer:
//! a bound on the writes a node has in flight, and a smaller one per user.
//!
//! A write takes its permits only once its token is checked and its body
//! read and parsed, right before the engine call, and holds them until the
//! engine answers. So a client that is slow to send (or never finishes) a
//! body holds no permit: 1,100 stalled bodies from one token once held all
//! 1,024 of the node's permits, and every user's writes were refused for as
//! long as the connections stayed open. Past the node's bound a write is
//! refused 503 `overloaded` with `Retry-After`; past the user's, 429
//! `too_many_requests`, so one user cannot take a node's share.
//!
//! The node's bound is fixed. An adaptive one (shrinking when writes are
//! answered slowly, as TCP's congestion window does) was tried under 3×
//! overload with the server on one core: the slowness was in requests
//! waiting for CPU before any handler ran, which no limit on writes in
//! flight changes, so the limit fell to its floor and admitted opens fell
//! from 2,403/s to 538/s while their p99 stayed in the hundreds of
//! milliseconds (see RELIABILITY.md).

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use hongbao_domain::UserId;
use hongbao_engine::EngineError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, InFlight};
use crate::shards::{Shards, shard_of};

/// Writes in flight per node by default: about 50 ms of this node's
/// measured capacity (20,000 opens/s on 2 cores), and room for a
/// 1000-member group opening at once.
pub const WRITES_IN_FLIGHT_MAX: usize = 1024;
/// Writes in flight per user by default: a person's app has one or two
/// (an open while a send is on its way); eight leaves room for a flaky
/// network's retries and stops no one but a script.
pub const USER_WRITES_IN_FLIGHT_MAX: usize = 8;

/// The permits for writes in flight.
#[derive(Debug)]
pub struct WriteGate {
    node: Arc<Semaphore>,
    user_max: usize,
    /// What it admits, for the refusal's message (the event streams have
    /// a gate of their own, `routes/events.rs`).
    what: InFlight,
    users: Shards<HashMap<UserId, usize>>,
}

/// A write's permits, given back when it is dropped.
#[derive(Debug)]
pub struct WritePermit {
    _node: OwnedSemaphorePermit,
    user: Option<(Arc<WriteGate>, UserId)>,
}

impl WriteGate {
    pub fn new(node_max: usize, user_max: usize) -> WriteGate {
        WriteGate::of(InFlight::Writes, node_max, user_max)
    }

    /// A gate for `what`, with the same two bounds.
    pub fn of(what: InFlight, node_max: usize, user_max: usize) -> WriteGate {
        assert!(node_max > 0 && user_max > 0, "in-flight bounds must be positive");
        WriteGate { node: Arc::new(Semaphore::new(node_max)), user_max, what, users: Shards::default() }
    }

    fn shard(&self, user: &UserId) -> MutexGuard<'_, HashMap<UserId, usize>> {
        self.users.lock(shard_of(user.as_str().as_bytes()))
    }

    /// Admits a write by `user` (an admin's write has no user bound):
    /// 429 past the user's bound, 503 past the node's.
    pub fn admit(self: &Arc<Self>, user: Option<&UserId>) -> Result<WritePermit, ApiError> {
        if let Some(user) = user {
            let mut users = self.shard(user);
            let in_flight = users.entry(user.clone()).or_insert(0);
            if *in_flight >= self.user_max {
                return Err(ApiError::too_many_requests(self.user_max, self.what));
            }
            *in_flight += 1;
        }
        let user = user.map(|user| (self.clone(), user.clone()));
        match self.node.clone().try_acquire_owned() {
            Ok(node) => Ok(WritePermit { _node: node, user }),
            Err(_) => {
                if let Some((gate, user)) = user {
                    gate.release(&user);
                }
                Err(ApiError::from(EngineError::Overloaded))
            }
        }
    }

    fn release(&self, user: &UserId) {
        let mut users = self.shard(user);
        let in_flight = users.get_mut(user).expect("a user's write in flight was counted");
        *in_flight -= 1;
        if *in_flight == 0 {
            users.remove(user);
        }
    }
}

impl Drop for WritePermit {
    fn drop(&mut self) {
        if let Some((gate, user)) = self.user.take() {
            gate.release(&user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_is_bounded_before_the_node_and_permits_come_back() {
        let gate = Arc::new(WriteGate::new(3, 2));
        let (alice, bob) = (UserId::parse("alice").unwrap(), UserId::parse("bob").unwrap());
        let first = gate.admit(Some(&alice)).unwrap();
        let _second = gate.admit(Some(&alice)).unwrap();
        assert_eq!(gate.admit(Some(&alice)).unwrap_err().code, "too_many_requests");
        let _bob = gate.admit(Some(&bob)).unwrap();
        assert_eq!(gate.admit(None).unwrap_err().code, "overloaded", "the node's three are taken");
        assert_eq!(gate.admit(Some(&bob)).unwrap_err().code, "overloaded");
        drop(first);
        let again = gate.admit(Some(&alice)).unwrap();
        let idle = |gate: &WriteGate| gate.users.iter().all(|shard| shard.is_empty());
        assert!(!idle(&gate), "writes in flight are counted");
        drop((again, _second, _bob));
        assert!(idle(&gate), "no entry stays for a user with nothing in flight");
        let held: Vec<_> = (0..3).map(|_| gate.admit(None).unwrap()).collect();
        assert_eq!(gate.admit(Some(&alice)).unwrap_err().code, "overloaded");
        assert!(idle(&gate), "a write refused at the node gives the user's slot back");
        drop(held);
        assert!(gate.admit(Some(&alice)).is_ok());
    }
}
