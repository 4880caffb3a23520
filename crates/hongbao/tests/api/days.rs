//! Days: a day whose packets are all settled goes cold past the retention
//! and everything about it stays readable through the API; the audit counts
//! it by its ledger totals, or reads it whole. On SQLite its rows leave the
//! sets' tables for a file per set and day; on PostgreSQL its partitions
//! leave the hot tables for the archive schema (those run when
//! `HONGBAO_TEST_PG` names a server, and pass saying so when it does not).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use hongbao_domain::SetId;
use hongbao_engine::ManualClock;
use serde_json::{Value, json};

use crate::helpers::*;

const DAY_MS: i64 = 86_400_000;

fn received_ids(list: &Value) -> Vec<String> {
    list["items"].as_array().expect("items").iter().map(|item| item["packet_id"].as_str().unwrap().to_owned()).collect()
}

const USERS: [(&str, u64); 3] = [("alice", 10_000), ("bob", 0), ("carol", 0)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_day_goes_cold_past_the_retention_and_stays_readable_while_lists_are_read() -> Result<()> {
    let test = "a_settled_day_goes_cold";
    let Some((server, clock, users)) = start_on_postgres_with_clock(test, USERS).await? else {
        return Ok(());
    };
    a_settled_day_goes_cold(server, clock, users, |_, _| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_settled_day_goes_cold_past_the_retention_and_stays_readable_while_lists_are_read() -> Result<()> {
    let (server, clock, users) = start_with_clock(USERS).await?;
    a_settled_day_goes_cold(server, clock, users, |server, old| {
        // The day's rows left its set's tables for the set's file of the day.
        let (day, set) = (old[..8].parse().unwrap(), SetId(old.split('-').nth(1).unwrap().parse().unwrap()));
        let data = &server.running.data.path;
        assert!(hongbao_store_sqlite::cold_day_path(data, set, day).exists());
        let tables = rusqlite::Connection::open(hongbao_store_sqlite::set_path(data, set)).unwrap();
        let hot: i64 = tables.query_row("SELECT count(*) FROM packets WHERE id = ?1", [old], |row| row.get(0)).unwrap();
        assert_eq!(hot, 0, "the cold packet is no longer in the tables");
    })
    .await
}

/// The scenario on either store; `moved` checks, once the day went cold,
/// where the store keeps it (given the server and the old packet's id).
async fn a_settled_day_goes_cold(
    server: Server,
    clock: ManualClock,
    [alice, bob, carol]: [String; 3],
    moved: impl Fn(&Server, &str),
) -> Result<()> {
    let api = &server.api;
    let spec = json!({ "kind": "lucky", "total_amount": 1000, "count": 3, "expires_in_s": 60 });
    let old = id_of(&api.send(&alice, &spec).await);
    let old_day: u32 = old[..8].parse()?;
    let bob_share = api.opened(&bob, &old).await;
    let carol_share = api.opened(&carol, &old).await;
    // Their credits landed (and their sets' tables hold them) before the
    // clock jumps: the keeper's hour for late credits passes at once here.
    api.wait_balance(&bob, bob_share).await;
    api.wait_balance(&carol, carol_share).await;
    // Past its expiry, what was left goes back to alice: the day is settled.
    clock.advance_ms(61_000);
    api.wait_balance(&alice, 9_000 + 1000 - bob_share - carol_share).await;
    let before = api.detail(&bob, &old).await;
    assert_eq!(before["status"], "expired");
    let bill = api.get("/v1/ledger?limit=100", &alice).await.ok(200);
    assert_eq!(bill["items"].as_array().map(Vec::len), Some(3), "deposit, send, refund: {bill}");

    // Within the retention nothing moves.
    clock.advance_ms(6 * DAY_MS);
    let kept = server.running.keep_days_now().await?;
    assert!(kept.cooled.is_empty(), "a day inside the retention stayed hot: {kept:?}");

    // Past it, the day goes cold while bob reads his list over and over.
    clock.advance_ms(2 * DAY_MS);
    let reading = Arc::new(AtomicBool::new(true));
    let reader = tokio::spawn({
        let (api, bob, reading, old) = (api.clone(), bob.clone(), reading.clone(), old.clone());
        async move {
            let mut reads = 0;
            while reading.load(Ordering::SeqCst) || reads == 0 {
                let answer = api.get("/v1/packets/received", &bob).await;
                if answer.status == 429 {
                    // Bob reads faster than the per-user read limit allows:
                    // the limiter answering is not what this test is about.
                    answer.error(429, "rate_limited");
                    tokio::time::sleep(POLL_EVERY).await;
                    continue;
                }
                let list = answer.ok(200);
                assert_eq!(received_ids(&list), [old.as_str()], "a read while the day went cold");
                reads += 1;
            }
            reads
        }
    });
    let kept = server.running.keep_days_now().await?;
    reading.store(false, Ordering::SeqCst);
    assert!(reader.await? > 0);
    // (With it, any empty day made ahead of time past the retention too.)
    assert!(kept.cooled.contains(&old_day), "the settled day past the retention went cold: {kept:?}");
    assert!(server.running.keep_days_now().await?.cooled.is_empty(), "a cold day moves once");
    moved(&server, &old);

    // Cold, it reads as it did hot: the packet, the lists, the bill.
    assert_eq!(api.detail(&carol, &old).await, before);
    assert_eq!(api.get("/v1/ledger?limit=100", &alice).await.ok(200), bill, "the bill of a cold day");
    let sent = api.get("/v1/packets/sent", &alice).await.ok(200);
    assert_eq!(sent["items"][0]["id"], old.as_str());
    let received = api.get("/v1/packets/received", &carol).await.ok(200);
    assert_eq!(received_ids(&received), [old.as_str()]);
    api.open(&alice, &old).await.error(410, "packet_expired");
    assert_eq!(api.opened(&bob, &old).await, bob_share, "a repeat open of a cold packet answers its share");

    // Today's packets are hot, and open as ever.
    let new = id_of(&api.send(&alice, &spec).await);
    assert_ne!(new[..8], old[..8]);
    let share = api.opened(&bob, &new).await;
    api.wait_balance(&bob, bob_share + share).await;

    // The audit counts the cold day by its totals; read whole, it agrees.
    let (by_totals, by_rows) = server.stop_and_audit_cold_days().await?;
    assert!(by_totals.cold_entries >= 5, "the cold day's deposit, send, two credits and refund: {by_totals}");
    assert_eq!(by_rows.cold_entries, 0, "{by_rows}");
    assert_eq!(by_rows.ledger_entries, by_totals.ledger_entries, "{by_rows}");
    assert_eq!(by_rows.packets, by_totals.packets + 1, "the cold packet, read whole: {by_rows}");
    Ok(())
}
