//! Where mail between sets goes. A set held by this node has a mailbox here
//! (bounded; a full one drops the message, and the sender's outbox resends
//! it). A set another node holds is reached through `RemotePost`, which the
//! node implements over HTTP; a node that holds every set (one node, or the
//! simulation) has none. Every message is safe to lose or to deliver twice
//! (`writer/credits.rs`), so the postman never waits and never retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use hongbao_domain::SetId;

use crate::command::Mail;

/// Carries mail to sets held by other nodes. `post` must not block (it runs
/// on a set's writer thread): queue the message, or drop it.
pub trait RemotePost: Send + Sync + 'static {
    fn post(&self, target: SetId, mail: Mail);
}

pub(crate) struct Postman {
    /// Every set's mailbox on this node, read by its writer while it is held here.
    local: Vec<Sender<Mail>>,
    /// Whether this node holds each set now.
    here: Vec<AtomicBool>,
    remote: Option<Arc<dyn RemotePost>>,
}

impl Postman {
    /// A postman for a node that holds every set.
    pub(crate) fn local(mailboxes: Vec<Sender<Mail>>) -> Postman {
        let here = mailboxes.iter().map(|_| AtomicBool::new(true)).collect();
        Postman { local: mailboxes, here, remote: None }
    }

    /// A postman for one node of several: no set is held until `hold`.
    pub(crate) fn shared(mailboxes: Vec<Sender<Mail>>, remote: Arc<dyn RemotePost>) -> Postman {
        let here = mailboxes.iter().map(|_| AtomicBool::new(false)).collect();
        Postman { local: mailboxes, here, remote: Some(remote) }
    }

    /// Whether other nodes hold some sets (mail may cross nodes).
    pub(crate) fn is_shared(&self) -> bool {
        self.remote.is_some()
    }

    pub(crate) fn hold(&self, set: SetId, held: bool) {
        self.here[set.index()].store(held, Ordering::Release);
    }

    /// Whether mail for `set` is delivered to its mailbox on this node.
    pub(crate) fn holds(&self, set: SetId) -> bool {
        self.here[set.index()].load(Ordering::Acquire)
    }

    pub(crate) fn post(&self, target: SetId, mail: Mail) {
        match &self.remote {
            Some(remote) if !self.holds(target) => remote.post(target, mail),
            // A full or closed mailbox drops the message; the outbox resends it.
            _ => drop(self.local[target.index()].try_send(mail)),
        }
    }

    /// Mail that came from another node, for a set held here; false if it
    /// is not held here (or its mailbox is full): the sender resends.
    pub(crate) fn deliver(&self, target: SetId, mail: Mail) -> bool {
        self.holds(target) && self.local[target.index()].try_send(mail).is_ok()
    }
}
