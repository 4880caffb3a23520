//! `hongbao audit` after a crash: the tables lag the journal, and the audit
//! must see every journaled batch without writing anything.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;

use hongbao_domain::ledger::EntryKind;
use hongbao_domain::{Millis, SetId, UserId};
use hongbao_engine::journal::record::encode;
use hongbao_engine::{Effects, LedgerEntry, Store};
use hongbao_store_sqlite::{ColdDays, journal_path, open_set, snapshot};

fn deposit(reference: &str, fen: i64) -> Effects {
    let entry = LedgerEntry {
        reference: reference.into(),
        user: UserId::parse("alice").unwrap(),
        amount: fen,
        kind: EntryKind::Deposit,
        packet_id: None,
        at: Millis(1),
        balance_after: None,
    };
    Effects { next_seq: 1, ledger: vec![entry], ..Effects::default() }
}

#[test]
fn the_audit_replays_the_journal_past_the_tables_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = open_set(dir.path(), SetId(0)).unwrap();
    // Two batches journaled, none materialized: as a SIGKILL leaves a set.
    stores.journal.recover(0, &mut |_, _| Ok(())).unwrap();
    for (position, effects) in [(1, deposit("deposit:alice:key:a", 300)), (2, deposit("deposit:alice:key:b", 200))] {
        let mut record = Vec::new();
        encode(&effects, &mut record);
        stores.journal.append(position, &record).unwrap();
    }
    drop(stores);
    let journal = journal_path(dir.path(), SetId(0));
    let files = |path: &std::path::Path| std::fs::read_dir(path).unwrap().count();
    let (db_files, journal_files) = (files(dir.path()), files(&journal));
    // Read-only, as a backup or a disk remounted after a failure may be (as
    // root, permissions stop nothing: the file count below is the check).
    for path in [dir.path(), journal.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
    }

    let rows = snapshot(dir.path(), SetId(0), ColdDays::Rows).unwrap();
    assert_eq!(rows.accounts.len(), 1);
    assert_eq!(rows.accounts[0].balance, 500, "both journaled deposits are seen");
    assert_eq!(rows.ledger.len(), 2);

    for path in [dir.path(), journal.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!((files(dir.path()), files(&journal)), (db_files, journal_files), "nothing was created");
    let mut tables = open_set(dir.path(), SetId(0)).unwrap().materializer;
    assert_eq!(tables.materialized().unwrap(), 0, "the tables were not written");
}
