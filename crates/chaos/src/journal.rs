//! The client-side journal of acknowledged operations, and the check of the
//! store against it once the server is stopped.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Result;
use hongbao_domain::audit::StoredClaims;
use hongbao_domain::ledger::{DepositKey, deposit_ref};
use hongbao_node::{StoreChoice, StoreKind};

use crate::ChaosReport;

/// An operation the client saw acknowledged.
#[derive(Debug, Clone)]
pub enum Acked {
    Deposit {
        user: String,
        key: String,
        amount: i64,
    },
    Send {
        id: String,
        sender: String,
        total: i64,
    },
    Open {
        packet: String,
        user: String,
        amount: i64,
    },
    Withdraw {
        id: String,
        user: String,
        amount: i64,
    },
    /// An admin's settling answered 200 with this status.
    Settle {
        id: String,
        status: String,
    },
}

#[derive(Debug, Default)]
pub struct Journal {
    acked: Mutex<Vec<Acked>>,
    /// Every send key tried, acknowledged or not, per sender.
    send_keys: Mutex<HashMap<String, HashSet<String>>>,
    /// Packets known to exist (acknowledged sends), for opens and grabs.
    packets: Mutex<Vec<String>>,
    /// Every withdrawal key tried, acknowledged or not, per user.
    withdrawal_keys: Mutex<HashMap<String, HashSet<String>>>,
    /// Withdrawals known to exist (acknowledged), for the admin to settle.
    withdrawals: Mutex<Vec<String>>,
}

impl Journal {
    pub fn ack(&self, acked: Acked) {
        match &acked {
            Acked::Send { id, .. } => self.packets.lock().expect("journal lock").push(id.clone()),
            Acked::Withdraw { id, .. } => self.withdrawals.lock().expect("journal lock").push(id.clone()),
            _ => {}
        }
        self.acked.lock().expect("journal lock").push(acked);
    }

    pub fn tried_send(&self, sender: &str, key: &str) {
        self.send_keys.lock().expect("journal lock").entry(sender.to_owned()).or_default().insert(key.to_owned());
    }

    pub fn tried_withdrawal(&self, user: &str, key: &str) {
        let mut keys = self.withdrawal_keys.lock().expect("journal lock");
        keys.entry(user.to_owned()).or_default().insert(key.to_owned());
    }

    pub fn packet(&self, draw: u64) -> Option<String> {
        pick(&self.packets.lock().expect("journal lock"), draw)
    }

    pub fn withdrawal(&self, draw: u64) -> Option<String> {
        pick(&self.withdrawals.lock().expect("journal lock"), draw)
    }
}

fn pick(items: &[String], draw: u64) -> Option<String> {
    (!items.is_empty()).then(|| items[(draw % items.len() as u64) as usize].clone())
}

/// Checks a stopped data set against the journal (off the async runtime:
/// it waits on disks and databases).
pub fn check(journal: &Journal, data: &Path, store: &StoreChoice) -> Result<ChaosReport> {
    let snapshots = hongbao_node::read_data(data, store)?;
    let audit = hongbao_node::audit_snapshots(&snapshots);
    let mut ledger = HashMap::new();
    let mut packets = HashMap::new();
    let mut packets_by_sender: HashMap<String, usize> = HashMap::new();
    let mut withdrawals = HashMap::new();
    let mut withdrawals_by_user: HashMap<String, usize> = HashMap::new();
    let claims = StoredClaims::of(&snapshots);
    for snapshot in snapshots {
        for row in snapshot.withdrawals {
            *withdrawals_by_user.entry(row.user.clone()).or_default() += 1;
            withdrawals.insert(row.id, (row.user, row.amount, row.status));
        }
        for row in snapshot.ledger {
            ledger.insert(row.reference, (row.user, row.amount));
        }
        for row in snapshot.packets {
            *packets_by_sender.entry(row.sender.clone()).or_default() += 1;
            packets.insert(row.id, (row.total_amount, row.sender));
        }
    }
    let acked = journal.acked.lock().expect("journal lock").clone();
    let mut problems = Vec::new();
    for entry in &acked {
        let found = match entry {
            Acked::Deposit { user, key, amount } => {
                ledger.get(&deposit_ref(user, DepositKey::Keyed(key))) == Some(&(user.clone(), *amount))
            }
            Acked::Send { id, sender, total } => packets.get(id) == Some(&(*total, sender.clone())),
            Acked::Open { packet, user, amount } => claims.holds(packet, user, *amount),
            Acked::Withdraw { id, user, amount } => {
                withdrawals.get(id).is_some_and(|(held, fen, _)| held == user && fen == amount)
            }
            Acked::Settle { id, status } => withdrawals.get(id).is_some_and(|(.., held)| held == status),
        };
        if !found {
            problems.push(format!("lost: {entry:?}"));
        }
    }
    let lost = problems.len();
    // Each key makes at most one packet or withdrawal, however retried.
    let duplicated = duplicates(&journal.send_keys, &packets_by_sender, "packets", &mut problems)
        + duplicates(&journal.withdrawal_keys, &withdrawals_by_user, "withdrawals", &mut problems);
    Ok(ChaosReport {
        kills: 0,
        acked: acked.len(),
        lost,
        duplicated,
        audit_ok: audit.ok(),
        seed: 0,
        store: match store.kind() {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        },
        cluster: None,
        problems,
        audit: audit.to_string(),
        kept: None,
    })
}

/// How many more `what` a user has than keys tried for them.
fn duplicates(
    tried: &Mutex<HashMap<String, HashSet<String>>>,
    made: &HashMap<String, usize>,
    what: &str,
    problems: &mut Vec<String>,
) -> usize {
    let mut duplicated = 0;
    for (user, keys) in tried.lock().expect("journal lock").iter() {
        let made = made.get(user).copied().unwrap_or(0);
        if made > keys.len() {
            duplicated += made - keys.len();
            problems.push(format!("duplicated: {user} has {made} {what} from {} keys", keys.len()));
        }
    }
    duplicated
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check finds what the journal says was acknowledged but the store
    /// does not hold, and passes what it does hold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_check_counts_acknowledged_operations_missing_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let options = hongbao_node::ServeOptions::new(data.clone(), "127.0.0.1:0".parse().unwrap());
        let running = hongbao_node::start(options).await.unwrap();
        let user = hongbao_domain::UserId::parse("u1").unwrap();
        let amount = hongbao_domain::Amount::from_fen(500).unwrap();
        running.engine.deposit(user, amount, Some("k1".into())).await.unwrap();
        running.stop().await.unwrap();

        let journal = Journal::default();
        journal.ack(Acked::Deposit { user: "u1".into(), key: "k1".into(), amount: 500 });
        let report = check(&journal, &data, &StoreChoice::Sqlite).unwrap();
        assert_eq!((report.acked, report.lost, report.duplicated, report.audit_ok), (1, 0, 0, true));

        journal.ack(Acked::Deposit { user: "u1".into(), key: "k2".into(), amount: 500 });
        journal.ack(Acked::Open { packet: "20270128-0-1-00000001".into(), user: "o1".into(), amount: 3 });
        journal.ack(Acked::Deposit { user: "u1".into(), key: "k1".into(), amount: 501 });
        let report = check(&journal, &data, &StoreChoice::Sqlite).unwrap();
        assert_eq!(report.lost, 3, "{:?}", report.problems);
    }
}
