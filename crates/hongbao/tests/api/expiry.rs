//! Expiry and refunds. These servers run on a clock that moves only when
//! the test moves it, so what is opened before expiry is opened before it
//! however slow the machine, and expiry comes when the test says.

use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_packet_refunds_what_was_left_once_and_keeps_the_shares_opened_before() -> Result<()> {
    let (server, clock, [alice, bob, carol]) = start_with_clock([("alice", 5_000), ("bob", 0), ("carol", 0)]).await?;
    let api = &server.api;

    let spec = json!({
        "kind": "lucky", "total_amount": 1000, "count": 4,
        "greeting": "快", "expires_in_s": 1,
    });
    let packet = api.post_keyed("/v1/packets", &alice, "expiring", &spec).await.ok(201);
    let id = id_of(&packet);
    assert_eq!(i64_of(&packet["expires_at"]) - i64_of(&packet["created_at"]), 1000);
    assert_eq!(api.balance(&alice).await, 4_000);
    let bob_share = api.opened(&bob, &id).await;

    clock.advance_ms(999);
    assert_eq!(api.grab_status(&carol, &id).await, "available", "open until its expiry");
    clock.advance_ms(1);
    assert_eq!(api.grab_status(&carol, &id).await, "expired", "expired at its expiry");
    api.open(&carol, &id).await.error(410, "packet_expired");
    api.open(&alice, &id).await.error(410, "packet_expired");
    assert_eq!(api.grab_status(&carol, &id).await, "expired");
    assert_eq!(api.opened(&bob, &id).await, bob_share, "an opened share stays opened after expiry");
    assert_eq!(api.grab_status(&bob, &id).await, "opened");

    // What was left goes back to alice, once.
    let refund = 1000 - bob_share;
    api.wait_balance(&alice, 4_000 + refund).await;
    api.wait_balance(&bob, bob_share).await;
    assert_eq!(api.balance(&carol).await, 0);
    let deadline = Instant::now() + POLL_BOUND;
    let detail = loop {
        let detail = api.detail(&carol, &id).await;
        if detail["refunded_amount"] != 0 {
            break detail;
        }
        assert!(Instant::now() < deadline, "no refund shown: {detail}");
        tokio::time::sleep(POLL_EVERY).await;
    };
    assert_eq!(detail["status"], "expired");
    assert_eq!(u64_of(&detail["refunded_amount"]), refund);
    assert_eq!(detail["remaining_amount"], 0);
    assert_eq!(detail["remaining_count"], 3);
    assert_eq!(claim_users(&detail), ["bob"]);
    assert_eq!(detail["best_luck"], Value::Null);

    // A replay of the send after its packet settled answers the same packet
    // and charges nothing.
    let replay = api.post_keyed("/v1/packets", &alice, "expiring", &spec).await.ok(201);
    assert_eq!(replay, packet);
    assert_eq!(api.balance(&alice).await, 4_000 + refund);

    let sent = api.get("/v1/packets/sent", &alice).await.ok(200);
    assert_eq!(sent["items"].as_array().map(Vec::len), Some(1), "{sent}");
    let item = &sent["items"][0];
    assert_eq!(item["id"], id.as_str(), "{sent}");
    assert_eq!(item["status"], "expired");
    assert_eq!(u64_of(&item["refunded_amount"]), refund);
    assert_eq!(item["remaining_amount"], 0);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_judged_before_expiry_and_an_unopened_packet_is_refunded_whole() -> Result<()> {
    let (server, clock, [alice, carol]) = start_with_clock([("alice", 1_000), ("carol", 0)]).await?;
    let api = &server.api;

    let spec = json!({
        "kind": "fixed", "total_amount": 500, "count": 5,
        "password": "open sesame", "expires_in_s": 1,
    });
    let locked = api.send_id(&alice, &spec).await;
    assert_eq!(api.balance(&alice).await, 500);
    clock.advance_ms(1_000);
    assert_eq!(api.grab_status(&carol, &locked).await, "expired");
    api.open_with(&carol, &locked, &json!({ "password": "nope" })).await.error(403, "wrong_password");
    api.open_with(&carol, &locked, &json!({ "password": "open sesame" })).await.error(410, "packet_expired");

    api.wait_balance(&alice, 1_000).await;
    let detail = api.detail(&alice, &locked).await;
    assert_eq!(detail["refunded_amount"], 500, "{detail}");
    assert_eq!(api.balance(&carol).await, 0);
    let sent = api.get("/v1/packets/sent", &alice).await.ok(200);
    assert_eq!(sent["items"].as_array().map(Vec::len), Some(1), "{sent}");
    assert_eq!(sent["items"][0]["id"], locked.as_str(), "{sent}");
    assert_eq!(sent["items"][0]["status"], "expired");

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_opened_packet_leaves_nothing_to_refund_at_its_expiry() -> Result<()> {
    let (server, clock, [alice, carol]) = start_with_clock([("alice", 1_000), ("carol", 0)]).await?;
    let api = &server.api;

    let fixed =
        api.send_id(&alice, &json!({ "kind": "fixed", "total_amount": 200, "count": 1, "expires_in_s": 1 })).await;
    assert_eq!(api.opened(&carol, &fixed).await, 200);
    api.wait_balance(&carol, 200).await;
    assert_eq!(api.balance(&alice).await, 800);
    // An unopened packet from the same sender (so in the same set) that
    // expires with it: its refund shows the expiry has been settled.
    let witness =
        api.send_id(&alice, &json!({ "kind": "fixed", "total_amount": 300, "count": 3, "expires_in_s": 1 })).await;
    assert_eq!(api.balance(&alice).await, 500);

    clock.advance_ms(1_000);
    api.wait_balance(&alice, 800).await;
    assert_eq!(api.detail(&alice, &witness).await["refunded_amount"], 300);
    let detail = api.detail(&alice, &fixed).await;
    assert_eq!(detail["refunded_amount"], 0, "{detail}");
    assert_eq!(detail["status"], "empty", "{detail}");
    assert_eq!(api.balance(&alice).await, 800, "nothing more came back");
    assert_eq!(api.balance(&carol).await, 200);

    server.stop_and_audit().await
}
