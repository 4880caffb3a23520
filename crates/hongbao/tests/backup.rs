//! `hongbao backup` and `hongbao migrate` on the real binary: a backup of a
//! served directory taken under load audits clean, serves, holds every
//! write acknowledged before it began, and its credits in flight reach
//! their wallets once it serves; a stopped directory's backup audits as
//! the directory does; bad targets are refused; a directory of an older
//! schema is refused by `serve` until it is migrated, and a migration is
//! all sets or none.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::*;
use serde_json::Value;

/// Limits loose enough that the load is bounded by the server, not by them.
const LOOSE: &[&str] = &[
    "--rate-limit",
    "open=100000/100000",
    "--rate-limit",
    "send=100000/100000",
    "--rate-limit",
    "read=100000/100000",
    "--rate-limit",
    "list=100000/100000",
    "--user-writes-in-flight-max",
    "64",
];

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn backup(data: &Path, to: &Path) -> Output {
    hongbao(&["backup", "--data", path(data), "--to", path(to)]).output().unwrap()
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// The number before `what` in an audit report ("3 credits pending").
fn counted(report: &str, what: &str) -> u64 {
    let before = &report[..report.find(what).unwrap_or_else(|| panic!("no {what:?} in {report}"))];
    before.trim_end().rsplit(' ').next().unwrap().parse().unwrap()
}

fn token(addr: &str, admin: &str, user: &str) -> String {
    let (status, body) = request(addr, "POST", "/v1/admin/tokens", admin, &format!(r#"{{"user":"{user}"}}"#));
    assert_eq!(status, 200, "{body}");
    json(&body)["token"].as_str().unwrap().to_owned()
}

fn deposit(addr: &str, admin: &str, user: &str, amount: u64) {
    let body = format!(r#"{{"user":"{user}","amount":{amount}}}"#);
    let (status, answer) = request(addr, "POST", "/v1/admin/deposits", admin, &body);
    assert_eq!(status, 200, "{answer}");
}

fn stop(mut child: std::process::Child) {
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
}

/// What the load saw acknowledged, with when.
#[derive(Default)]
struct Acked {
    sent: Vec<(String, Instant)>,
    /// (packet, user, amount, when)
    opened: Vec<(String, String, u64, Instant)>,
}

/// Senders make small packets and openers (who never send) open them, all
/// over HTTP, until `stop`.
fn load(addr: &str, tokens: &HashMap<String, String>, stop: &AtomicBool, acked: &Mutex<Acked>) {
    std::thread::scope(|scope| {
        for sender in ["s0", "s1"] {
            let token = &tokens[sender];
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let body = r#"{"kind":"lucky","total_amount":200,"count":10}"#;
                    if let Ok((201, answer)) = try_request(addr, "POST", "/v1/packets", token, body) {
                        let id = json(&answer)["id"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().sent.push((id, Instant::now()));
                    }
                }
            });
        }
        for thread in 0..4 {
            scope.spawn(move || {
                let mut turn = thread;
                while !stop.load(Ordering::Relaxed) {
                    turn += 1;
                    let id = {
                        let acked = acked.lock().unwrap();
                        let recent = &acked.sent[acked.sent.len().saturating_sub(8)..];
                        recent.get(turn % recent.len().max(1)).map(|(id, _)| id.clone())
                    };
                    let Some(id) = id else { continue };
                    let user = format!("o{}", (turn * 7 + thread) % 24);
                    let path = format!("/v1/packets/{id}/open");
                    if let Ok((200, answer)) = try_request(addr, "POST", &path, &tokens[&user], "") {
                        let amount = json(&answer)["amount"].as_u64().unwrap();
                        acked.lock().unwrap().opened.push((id, user, amount, Instant::now()));
                    }
                }
            });
        }
    });
}

/// The sum of the shares `user` received, over every page of the list.
fn received_sum(addr: &str, token: &str) -> u64 {
    let (mut sum, mut cursor) = (0, None::<String>);
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/packets/received?limit=100&cursor={cursor}"),
            None => "/v1/packets/received?limit=100".to_owned(),
        };
        let (status, body) = request(addr, "GET", &path, token, "");
        assert_eq!(status, 200, "{body}");
        let page = json(&body);
        sum += page["items"].as_array().unwrap().iter().map(|item| item["amount"].as_u64().unwrap()).sum::<u64>();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return sum,
        }
    }
}

fn balance(addr: &str, token: &str) -> u64 {
    let (status, body) = request(addr, "GET", "/v1/account", token, "");
    assert_eq!(status, 200, "{body}");
    json(&body)["balance"].as_u64().unwrap()
}

#[test]
fn a_backup_taken_under_load_audits_clean_serves_and_holds_every_write_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, addr) = serve_with(&data, LOOSE);
    let admin = admin_token(&data);
    let users = ["s0", "s1"].map(String::from).into_iter().chain((0..24).map(|n| format!("o{n}")));
    let tokens: HashMap<String, String> = users.map(|user| (user.clone(), token(&addr, &admin, &user))).collect();
    for sender in ["s0", "s1"] {
        deposit(&addr, &admin, sender, 10_000_000);
    }
    let acked = Mutex::new(Acked::default());
    let (copy, began, report) = backups_under_load(&data, dir.path(), &addr, &tokens, &acked);
    stop(server);
    let (ok, original) = audit(&data);
    assert!(ok, "{original}");
    let acked = acked.into_inner().unwrap();
    assert!(acked.opened.len() > 100, "too little load to test: {} opens", acked.opened.len());
    println!("copy: {report}");
    check_the_copy(&copy, &acked, began, &tokens);
    let (ok, after) = audit(&copy);
    assert!(ok, "{after}");
    assert_eq!(counted(&after, "credits pending"), 0, "{after}");
}

/// Backups taken under load until one holds a credit in flight (sent by
/// the open's set, not yet acknowledged by the opener's): most do. Each
/// audits clean. Answers that copy, when its backup began, and its audit.
fn backups_under_load(
    data: &Path,
    root: &Path,
    addr: &str,
    tokens: &HashMap<String, String>,
    acked: &Mutex<Acked>,
) -> (PathBuf, Instant, String) {
    let stop_load = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| load(addr, tokens, &stop_load, acked));
        std::thread::sleep(Duration::from_millis(800));
        let mut taken = None;
        for attempt in 0..8 {
            let copy = root.join(format!("copy-{attempt}"));
            let began = Instant::now();
            let output = backup(data, &copy);
            assert!(output.status.success(), "{}", text(&output));
            println!("{}", text(&output).trim());
            assert!(text(&output).contains("writers paused"), "{}", text(&output));
            let (ok, report) = audit(&copy);
            assert!(ok, "the copy taken under load: {report}");
            if counted(&report, "credits pending") > 0 {
                taken = Some((copy, began, report));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        stop_load.store(true, Ordering::Relaxed);
        taken.expect("no backup out of 8 under load held a credit in flight")
    })
}

/// Serves the copy: every send and open acknowledged before its backup
/// began is there, and every share in it reaches its opener's wallet (those
/// whose credit was in flight when the copy was taken included).
fn check_the_copy(copy: &Path, acked: &Acked, began: Instant, tokens: &HashMap<String, String>) {
    let (copy_server, copy_addr) = serve_with(copy, LOOSE);
    let any = &tokens["o0"];
    let mut packets: HashMap<String, Value> = HashMap::new();
    let mut detail = |id: &str| -> Value {
        let read = || {
            let (status, body) = request(&copy_addr, "GET", &format!("/v1/packets/{id}"), any, "");
            assert_eq!(status, 200, "packet {id}, acknowledged before the backup: {body}");
            json(&body)
        };
        packets.entry(id.to_owned()).or_insert_with(read).clone()
    };
    for (id, _) in acked.sent.iter().filter(|(_, at)| *at < began) {
        detail(id);
    }
    for (id, user, amount, _) in acked.opened.iter().filter(|(.., at)| *at < began) {
        let packet = detail(id);
        let held =
            packet["claims"].as_array().unwrap().iter().any(|claim| {
                claim["user"].as_str() == Some(user.as_str()) && claim["amount"].as_u64() == Some(*amount)
            });
        assert!(held, "{user}'s share of {amount} in {id}, acknowledged before the backup, is in the copy");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for user in (0..24).map(|n| format!("o{n}")) {
        let token = &tokens[&user];
        let owed = received_sum(&copy_addr, token);
        while balance(&copy_addr, token) != owed {
            assert!(Instant::now() < deadline, "{user}'s balance never reached the {owed} fen received");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    stop(copy_server);
}

/// Serves a little traffic on a new directory and stops.
fn traffic(data: &Path) {
    let (server, addr) = serve(data);
    let admin = admin_token(data);
    deposit(&addr, &admin, "alice", 5_000);
    deposit(&addr, &admin, "carol", 700);
    let alice = token(&addr, &admin, "alice");
    let (status, body) =
        request(&addr, "POST", "/v1/packets", &alice, r#"{"kind":"lucky","total_amount":900,"count":3}"#);
    assert_eq!(status, 201, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_owned();
    let bob = token(&addr, &admin, "bob");
    let (status, body) = request(&addr, "POST", &format!("/v1/packets/{id}/open"), &bob, "");
    assert_eq!(status, 200, "{body}");
    stop(server);
}

#[test]
fn a_backup_of_a_stopped_directory_audits_as_the_directory_does_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (data, copy) = (dir.path().join("data"), dir.path().join("copy"));
    traffic(&data);
    std::fs::create_dir(&copy).unwrap(); // an empty directory is a target too
    let output = backup(&data, &copy);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("not served"), "{}", text(&output));
    let ((ok, original), (copied_ok, copied)) = (audit(&data), audit(&copy));
    assert!(ok && copied_ok, "{original}\n{copied}");
    assert_eq!(copied, original, "the copy holds what the directory holds");
    assert!(!copy.join("admin.token").exists(), "a credential is not copied");
    let (server, addr) = serve(&copy);
    let carol = user_token(&copy, "carol");
    assert_eq!(balance(&addr, &carol), 700);
    stop(server);
}

#[test]
fn a_backup_of_a_directory_left_by_a_sigkill_audits_as_the_directory_does() {
    let dir = tempfile::tempdir().unwrap();
    let (data, copy) = (dir.path().join("data"), dir.path().join("copy"));
    let (mut server, addr) = serve(&data);
    let admin = admin_token(&data);
    for n in 0..20 {
        deposit(&addr, &admin, &format!("u{n}"), 100 + n);
    }
    signal(&server, "KILL");
    let _ = wait(&mut server);
    let output = backup(&data, &copy);
    assert!(output.status.success(), "{}", text(&output));
    let ((ok, original), (copied_ok, copied)) = (audit(&data), audit(&copy));
    assert!(ok && copied_ok, "{original}\n{copied}");
    assert_eq!(copied, original, "the copy holds what the directory holds, its WAL and journal tail included");
    assert!(original.contains("20 accounts"), "{original}");
}

#[test]
fn a_backup_to_a_bad_target_or_from_a_non_data_directory_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    traffic(&data);
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("precious"), "keep me").unwrap();
    let inside = data.join("backup");
    let sneaky: PathBuf = [path(&dir.path().join("elsewhere")), "..", "data", "b"].iter().collect();
    let cases = [
        (data.clone(), full.clone(), "exists and is not empty"),
        (data.clone(), inside.clone(), "inside the data directory"),
        (data.clone(), sneaky, "inside the data directory"),
        (dir.path().join("nothing"), dir.path().join("b"), "is not a hongbao data directory"),
        (full.clone(), dir.path().join("b"), "is not a hongbao data directory"),
    ];
    for (from, to, why) in cases {
        let output = backup(&from, &to);
        assert!(!output.status.success(), "{} to {}", from.display(), to.display());
        assert!(text(&output).contains(why), "{} to {}: {}", from.display(), to.display(), text(&output));
    }
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1, "the full target is untouched");
    assert!(!inside.exists() && !dir.path().join("b").exists(), "nothing made for a refused backup");
}

/// Turns every set of a stopped directory back into the first schema (the
/// wallet's, the groups' and the cold days' migrations undone), as a build
/// before cold days left it.
fn downgrade(data: &Path, sets: u16) {
    for set in 0..sets {
        let connection = rusqlite::Connection::open(data.join(format!("set-{set:03}.db"))).unwrap();
        connection
            .execute_batch(
                "DROP TABLE withdrawals; DROP TABLE frozen_accounts; DROP TABLE reversals;
                 DROP TRIGGER ledger_credits; DROP TRIGGER ledger_debits; DROP INDEX ledger_by_user;
                 ALTER TABLE ledger DROP COLUMN balance_after;
                 CREATE TRIGGER ledger_credits AFTER INSERT ON ledger WHEN NEW.amount > 0 BEGIN
                     INSERT INTO accounts (user, balance) VALUES (NEW.user, NEW.amount)
                     ON CONFLICT (user) DO UPDATE SET balance = balance + excluded.balance;
                 END;
                 CREATE TRIGGER ledger_debits AFTER INSERT ON ledger WHEN NEW.amount < 0 BEGIN
                     SELECT RAISE(ROLLBACK, 'a debit of an account that does not exist')
                     WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE user = NEW.user);
                     UPDATE accounts SET balance = balance + NEW.amount WHERE user = NEW.user;
                 END;
                 DROP TRIGGER claims_allowed;
                 ALTER TABLE packets DROP COLUMN members; ALTER TABLE packets DROP COLUMN group_id;
                 CREATE TRIGGER claims_allowed BEFORE INSERT ON claims BEGIN
                     SELECT CASE
                         WHEN p.seq IS NULL THEN RAISE(ROLLBACK, 'claim on an unknown packet')
                         WHEN p.recipient IS NOT NULL AND p.recipient <> NEW.user
                             THEN RAISE(ROLLBACK, 'claim by someone other than the recipient')
                         WHEN NEW.at >= p.expires_at OR p.refunded_amount <> 0
                             THEN RAISE(ROLLBACK, 'claim at or after expiry, or after the refund')
                         WHEN NEW.idx <> p.count - p.remaining_count THEN RAISE(ROLLBACK, 'claim out of share order')
                     END
                     FROM (SELECT NEW.packet_seq AS wanted) LEFT JOIN packets p ON p.seq = wanted;
                 END;
                 DROP TRIGGER ledger_no_delete; DROP TRIGGER packets_no_delete; DROP TRIGGER claims_no_delete;
                 DROP TRIGGER ledger_day_not_cold; DROP TRIGGER packets_day_not_cold;
                 DROP INDEX ledger_deposits_by_at;
                 DROP TABLE cold_days; DROP TABLE ledger_day_totals; DROP TABLE cold_lists;
                 CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN
                     SELECT RAISE(ROLLBACK, 'ledger entries are immutable');
                 END;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        // The ledger's and the keys' CHECKs as the first schema made them.
        connection
            .execute_batch(
                r#"PRAGMA writable_schema = ON;
                UPDATE sqlite_schema SET sql = replace(replace(replace(sql,
                    'CHECK (kind IN (''deposit'', ''send'', ''credit'', ''refund'', ''withdrawal'', ''withdrawal_return'', ''reversal''))',
                    'CHECK (kind IN (''deposit'', ''send'', ''credit'', ''refund''))'),
                    'CHECK ((kind IN (''send'', ''withdrawal'', ''reversal'')) = (amount < 0))',
                    'CHECK ((kind = ''send'') = (amount < 0))'),
                    'CHECK ((kind IN (''send'', ''credit'', ''refund'')) = (packet_id IS NOT NULL))',
                    'CHECK ((kind = ''deposit'') = (packet_id IS NULL))')
                WHERE type = 'table' AND name = 'ledger';
                UPDATE sqlite_schema SET sql = replace(sql, 'CHECK (op IN (''deposit'', ''send'', ''withdraw''))', 'CHECK (op IN (''deposit'', ''send''))')
                WHERE type = 'table' AND name = 'idempotency';
                PRAGMA writable_schema = OFF;"#,
            )
            .unwrap();
    }
}

fn versions(data: &Path, sets: u16) -> Vec<i64> {
    (0..sets)
        .map(|set| {
            let connection = rusqlite::Connection::open(data.join(format!("set-{set:03}.db"))).unwrap();
            connection.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap()
        })
        .collect()
}

fn serve_output(data: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["serve", "--data", path(data), "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    hongbao(&args).output().unwrap()
}

#[test]
fn serve_refuses_a_directory_of_an_older_schema_until_it_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    traffic(&data);
    downgrade(&data, 4);
    let refused = serve_output(&data, &[]);
    assert!(!refused.status.success());
    let why = text(&refused);
    assert!(why.contains(&format!("hongbao migrate --data {}", data.display())) && why.contains("--migrate"), "{why}");
    assert_eq!(versions(&data, 4), [1, 1, 1, 1], "a refused start changes nothing");

    let migrated = hongbao(&["migrate", "--data", path(&data)]).output().unwrap();
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert!(text(&migrated).contains("migrate ok: set 0 (from 1)"), "{}", text(&migrated));
    assert_eq!(versions(&data, 4), [4, 4, 4, 4]);
    let (ok, report) = audit(&data);
    assert!(ok, "{report}");
    let again = hongbao(&["migrate", "--data", path(&data)]).output().unwrap();
    assert!(again.status.success() && text(&again).contains("nothing to do"), "{}", text(&again));
    let (server, addr) = serve(&data);
    assert_eq!(balance(&addr, &user_token(&data, "carol")), 700);
    stop(server);

    // `serve --migrate` migrates, then serves.
    downgrade(&data, 4);
    let (server, addr) = serve_with(&data, &["--migrate"]);
    assert_eq!(balance(&addr, &user_token(&data, "carol")), 700);
    stop(server);
    assert_eq!(versions(&data, 4), [4, 4, 4, 4]);
}

#[test]
fn a_migration_that_fails_on_one_set_leaves_every_set_as_it_was_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    traffic(&data);
    downgrade(&data, 4);
    // Set 2 has a table in the way of its migration: sets 0 and 1 migrate
    // first, and are put back.
    let set_2 = rusqlite::Connection::open(data.join("set-002.db")).unwrap();
    set_2.execute_batch("CREATE TABLE cold_lists (x INTEGER)").unwrap();
    drop(set_2);
    let failed = hongbao(&["migrate", "--data", path(&data)]).output().unwrap();
    assert!(!failed.status.success());
    assert!(
        text(&failed).contains("set 2 did not migrate") && text(&failed).contains("no set changed"),
        "{}",
        text(&failed)
    );
    assert_eq!(versions(&data, 4), [1, 1, 1, 1]);
    let left: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().into_string().ok())
        .filter(|name| name.contains("pre-migration"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let (ok, report) = audit(&data);
    assert!(ok, "the sets put back hold what they held: {report}");

    let set_1 = rusqlite::Connection::open(data.join("set-001.db")).unwrap();
    set_1.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(set_1);
    for output in [hongbao(&["migrate", "--data", path(&data)]).output().unwrap(), serve_output(&data, &[])] {
        assert!(!output.status.success());
        assert!(
            text(&output).contains("set 1 has schema version 99, newer than this build knows"),
            "{}",
            text(&output)
        );
    }
    assert_eq!(versions(&data, 4), [1, 99, 1, 1], "nothing migrated beside a newer set");
}

#[test]
fn a_postgresql_directory_backup_copies_the_keys_and_says_the_sets_need_postgresqls_tools() {
    let Some(database) = hongbao_store_pg::testing::TestDatabase::create("backup") else {
        println!("skipped: HONGBAO_TEST_PG is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (data, copy) = (dir.path().join("data"), dir.path().join("copy"));
    let url = database.url();
    let (server, _) = serve_with(&data, &["--store", &url]);
    assert!(!data.join("control.sock").exists(), "a directory on PostgreSQL has no control socket");
    let output = backup(&data, &copy);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("NOT in this copy") && text(&output).contains("pg_dump"), "{}", text(&output));
    let keys = |dir: &Path| std::fs::read_to_string(dir.join("keys.json")).unwrap();
    assert_eq!(keys(&copy), keys(&data));
    assert_eq!(std::fs::read_to_string(copy.join("hongbao.meta")).unwrap(), "format=1\nsets=4\nstore=postgres\n");
    stop(server);
    let migrated = hongbao(&["migrate", "--data", path(&data), "--store", &url]).output().unwrap();
    assert!(migrated.status.success() && text(&migrated).contains("nothing to do"), "{}", text(&migrated));
}
