//! The real `hongbao serve` process on PostgreSQL, killed with SIGKILL while
//! it is busy: the journal is the commit, the tables follow it, so a kill
//! with the tables behind must lose nothing that was acknowledged. Each test
//! makes its own database on the server `HONGBAO_TEST_PG` names, and says it
//! was skipped (passing) without it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Child;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hongbao_store_pg::testing::TestDatabase;
use serde_json::Value;

mod common;

use common::*;

/// Packets alice sends under the load, each with room for `PACKET_COUNT` opens.
const PACKETS: usize = 200;
const PACKET_TOTAL: u64 = 2_000;
const PACKET_COUNT: u64 = 100;
/// Acknowledged opens before the kill: enough that the materializer has
/// work in hand when it lands.
const OPENS_BEFORE_KILL: usize = 400;
const OPENERS: usize = 6;

/// What the clients saw acknowledged, and every key they tried.
#[derive(Default)]
struct Seen {
    /// Acknowledged sends' packet ids.
    packets: Mutex<Vec<String>>,
    send_keys: Mutex<Vec<String>>,
    /// (packet, user, amount) of each acknowledged open.
    opens: Mutex<Vec<(String, String, u64)>>,
    deposit_keys: Mutex<Vec<String>>,
    /// Set once the server is dead: the clients stop.
    killed: AtomicBool,
}

fn serve_on(data: &Path, url: &str) -> (Child, String) {
    // One sender and many openers go faster than people do: the per-user
    // limits are lifted, as chaos lifts them.
    let flags = ["--store", url, "--rate-limit", "send=1e6/1e6", "--rate-limit", "open=1e6/1e6"];
    serve_with(data, &flags)
}

fn keyed(token: &str, key: &str) -> String {
    format!("{token}\r\nidempotency-key: {key}")
}

#[test]
fn a_sigkill_during_materialization_on_postgresql_loses_nothing_acknowledged() {
    let Some(database) =
        TestDatabase::create("a_sigkill_during_materialization_on_postgresql_loses_nothing_acknowledged")
    else {
        return;
    };
    let (dir, url) = (tempfile::tempdir().unwrap(), database.url());
    let data = dir.path().join("data");
    let (mut child, addr) = serve_on(&data, &url);
    let (admin, alice) = (admin_token(&data), user_token(&data, "alice"));
    let funds = format!(r#"{{"user":"alice","amount":{}}}"#, PACKETS as u64 * PACKET_TOTAL);
    assert_eq!(request(&addr, "POST", "/v1/admin/deposits", &admin, &funds).0, 200);

    // Sends, deposits and opens from their own threads; the kill lands while
    // they are in flight and the tables are materializing what was journaled.
    let seen = Seen::default();
    std::thread::scope(|scope| {
        scope.spawn(|| send_packets(&seen, &addr, &alice));
        scope.spawn(|| deposit_to_bob(&seen, &addr, &admin));
        for opener in 0..OPENERS {
            let (seen, addr, data) = (&seen, &addr, &data);
            scope.spawn(move || open_packets(seen, addr, data, opener));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.opens.lock().unwrap().len() < OPENS_BEFORE_KILL {
            assert!(Instant::now() < deadline, "{OPENS_BEFORE_KILL} opens were not acknowledged within 60 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&child, "KILL");
        seen.killed.store(true, Ordering::Relaxed);
    });
    wait(&mut child);

    let (mut child, addr) = serve_on(&data, &url);
    check_after_restart(&seen, &addr, &admin, &alice, &data);
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
    let output = hongbao(&["audit", "--data", data.to_str().unwrap(), "--store", &url]).output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && report.starts_with("audit ok"), "{report}");
}

/// Every acknowledged open is a claim of its packet, every acknowledged
/// send a packet; every key retried lands once (a request the kill cut off
/// may or may not have been applied, but never twice).
fn check_after_restart(seen: &Seen, addr: &str, admin: &str, alice: &str, data: &Path) {
    let opens = seen.opens.lock().unwrap();
    let packets = seen.packets.lock().unwrap();
    for id in packets.iter() {
        let (status, body) = request(addr, "GET", &format!("/v1/packets/{id}"), alice, "");
        assert_eq!(status, 200, "acknowledged send {id} lost: {body}");
        let detail: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(detail["total_amount"], PACKET_TOTAL, "{body}");
        let claims = detail["claims"].as_array().unwrap();
        for (packet, user, amount) in opens.iter().filter(|(packet, ..)| packet == id) {
            let held = claims.iter().any(|claim| claim["user"] == *user && claim["amount"] == *amount);
            assert!(held, "acknowledged open of {packet} by {user} for {amount} lost: {body}");
        }
    }
    assert!(opens.iter().all(|(packet, ..)| packets.contains(packet)));
    let send_keys = seen.send_keys.lock().unwrap();
    let send = format!(r#"{{"kind":"lucky","total_amount":{PACKET_TOTAL},"count":{PACKET_COUNT}}}"#);
    for key in send_keys.iter() {
        let (status, body) = request(addr, "POST", "/v1/packets", &keyed(alice, key), &send);
        assert_eq!(status, 201, "send {key} retried: {body}");
    }
    let left = (PACKETS - send_keys.len()) as u64 * PACKET_TOTAL;
    let (_, account) = request(addr, "GET", "/v1/account", alice, "");
    assert!(account.contains(&format!(r#""balance":{left}"#)), "one packet per send key: {account}");
    let deposit_keys = seen.deposit_keys.lock().unwrap();
    for key in deposit_keys.iter() {
        let (status, body) =
            request(addr, "POST", "/v1/admin/deposits", &keyed(admin, key), r#"{"user":"bob","amount":1}"#);
        assert_eq!(status, 200, "deposit {key} retried: {body}");
    }
    let (_, account) = request(addr, "GET", "/v1/account", &user_token(data, "bob"), "");
    assert!(account.contains(&format!(r#""balance":{}"#, deposit_keys.len())), "one fen per key: {account}");
}

/// Alice's packets, one send key each, until all are sent or the server dies.
fn send_packets(seen: &Seen, addr: &str, alice: &str) {
    let body = format!(r#"{{"kind":"lucky","total_amount":{PACKET_TOTAL},"count":{PACKET_COUNT}}}"#);
    for n in 0..PACKETS {
        let key = format!("send-{n}");
        seen.send_keys.lock().unwrap().push(key.clone());
        let Ok((status, answer)) = try_request(addr, "POST", "/v1/packets", &keyed(alice, &key), &body) else {
            return;
        };
        if status == 201 {
            let packet: Value = serde_json::from_str(&answer).unwrap();
            seen.packets.lock().unwrap().push(packet["id"].as_str().unwrap().to_owned());
        } else {
            // Shed under the load: not applied, and retried after the restart.
            assert_eq!(status, 503, "{answer}");
        }
    }
}

/// Keyed deposits of one fen to bob until the server dies.
fn deposit_to_bob(seen: &Seen, addr: &str, admin: &str) {
    for n in 0.. {
        let key = format!("deposit-{n}");
        seen.deposit_keys.lock().unwrap().push(key.clone());
        let head = keyed(admin, &key);
        let Ok((status, body)) = try_request(addr, "POST", "/v1/admin/deposits", &head, r#"{"user":"bob","amount":1}"#)
        else {
            return;
        };
        assert!(status == 200 || status == 503, "{status} {body}");
        if seen.killed.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Opens by fresh users, each of a packet picked in turn, until the server dies.
fn open_packets(seen: &Seen, addr: &str, data: &Path, opener: usize) {
    for n in 0.. {
        if seen.killed.load(Ordering::Relaxed) {
            return;
        }
        let packet = {
            let packets = seen.packets.lock().unwrap();
            if packets.is_empty() { None } else { Some(packets[(opener * 7 + n) % packets.len()].clone()) }
        };
        let Some(packet) = packet else {
            std::thread::yield_now();
            continue;
        };
        let user = format!("o{opener}-{n}");
        let token = hongbao::user_token(data, &user, Duration::from_secs(3600)).unwrap();
        let Ok((status, body)) = try_request(addr, "POST", &format!("/v1/packets/{packet}/open"), &token, "") else {
            return;
        };
        if status == 200 {
            let answer: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["status"], "opened", "{body}");
            seen.opens.lock().unwrap().push((packet, user, answer["amount"].as_u64().unwrap()));
        } else {
            // A packet every share of which is opened, or an open shed under the load.
            assert!((status == 409 && body.contains("packet_empty")) || status == 503, "{status} {body}");
        }
    }
}
