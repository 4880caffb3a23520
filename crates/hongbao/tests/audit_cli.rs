//! `hongbao audit` on a real data directory: it passes after real work, and
//! fails, naming the violation, on a directory corrupted on purpose.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use hongbao::{ServeOptions, start};
use hongbao_domain::packet::SpecInput;
use hongbao_domain::{Amount, Limits, OpenOutcome, PacketSpec, SendOutcome, SetId, UserId};
use hongbao_store_sqlite::set_path;

fn audit(data: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hongbao")).arg("audit").arg("--data").arg(data).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// Serves some real traffic on a fresh data directory and stops.
async fn traffic(data: &Path) -> String {
    let running = start(ServeOptions::new(data.to_owned(), "127.0.0.1:0".parse().unwrap())).await.unwrap();
    let engine = running.engine.clone();
    engine.deposit(user("alice"), Amount::from_fen(5_000).unwrap(), None).await.unwrap();
    let input = SpecInput { kind: "lucky".into(), total_amount: 3_000, count: 5, ..SpecInput::default() };
    let spec = PacketSpec::parse(&input, &user("alice"), &Limits::default()).unwrap();
    let SendOutcome::Sent { packet, .. } = engine.send(user("alice"), spec, None).await.unwrap() else {
        panic!("send failed")
    };
    for name in ["bob", "carol", "dave"] {
        let outcome = engine.open(packet.id, user(name), None).await.unwrap();
        assert!(matches!(outcome, OpenOutcome::Opened(_)), "{outcome:?}");
    }
    running.stop().await.unwrap();
    packet.id.to_string()
}

fn execute(data: &Path, sql: &str) {
    for set in 0..8 {
        let connection = rusqlite::Connection::open(set_path(data, SetId(set))).unwrap();
        connection.execute_batch(sql).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_passes_after_real_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    traffic(&data).await;
    let (ok, text) = audit(&data);
    assert!(ok, "{text}");
    assert!(text.starts_with("audit ok"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_fails_when_a_balance_is_bent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    traffic(&data).await;
    execute(&data, "UPDATE accounts SET balance = balance + 1 WHERE user = 'alice'");
    let (ok, text) = audit(&data);
    assert!(!ok, "{text}");
    assert!(text.contains("balance of alice is"), "{text}");
    assert!(text.contains("money is not conserved"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_fails_when_a_share_is_not_its_draw() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let id = traffic(&data).await;
    // Move one fen between two shares: sums still match, the draws do not.
    execute(
        &data,
        &format!(
            "DROP TRIGGER claims_no_update;
             UPDATE claims SET amount = amount + 1 WHERE packet_seq = (SELECT seq FROM packets WHERE id = '{id}') AND idx = 0;
             UPDATE claims SET amount = amount - 1 WHERE packet_seq = (SELECT seq FROM packets WHERE id = '{id}') AND idx = 1;"
        ),
    );
    let (ok, text) = audit(&data);
    assert!(!ok, "{text}");
    assert!(text.contains("but its rule gives"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_fails_when_a_credit_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    traffic(&data).await;
    execute(
        &data,
        "DROP TRIGGER ledger_no_delete;
         DELETE FROM ledger WHERE kind = 'credit' AND user = 'bob';
         DELETE FROM outbox WHERE user = 'bob';
         UPDATE accounts SET balance = 0 WHERE user = 'bob';",
    );
    let (ok, text) = audit(&data);
    assert!(!ok, "{text}");
    assert!(text.contains("was never credited"), "{text}");
}

#[test]
fn audit_refuses_a_directory_that_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = audit(dir.path());
    assert!(!ok);
    assert!(text.contains("not a hongbao data directory"), "{text}");
}
