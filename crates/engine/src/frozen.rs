//! Frozen accounts (an admin's freeze, when fraud is suspected): a frozen
//! user may not send, open, grab or withdraw; their balance stays, and
//! credits still arrive. A user's freeze is kept by the user's set (its
//! tables, its memory), but an open is judged by the packet's set: so every
//! set's writer publishes its frozen users here, the node's one registry,
//! when a freeze or unfreeze is durable and when it loads its set, and
//! every writer reads it. On a node of several, the registry holds the
//! users of the sets this node holds (see DESIGN.md).

use std::collections::HashSet;
use std::sync::RwLock;

use hongbao_domain::{SetId, UserId};

#[derive(Debug, Default)]
pub struct FrozenUsers {
    users: RwLock<HashSet<UserId>>,
}

impl FrozenUsers {
    pub fn contains(&self, user: &UserId) -> bool {
        self.users.read().expect("frozen lock").contains(user)
    }

    pub(crate) fn set(&self, user: &UserId, frozen: bool) {
        let mut users = self.users.write().expect("frozen lock");
        match frozen {
            true => drop(users.insert(user.clone())),
            false => drop(users.remove(user)),
        }
    }

    /// `set`'s frozen users are exactly `users` (its writer loaded them).
    pub(crate) fn load(&self, set: SetId, sets: u16, users: &HashSet<UserId>) {
        let mut all = self.users.write().expect("frozen lock");
        all.retain(|user| SetId::of_user(user, sets) != set);
        all.extend(users.iter().cloned());
    }
}
