//! The walkthrough: one lucky packet from its send to its last share, as
//! its sender and its openers see it.

use std::cmp::Reverse;

use anyhow::Result;
use serde_json::{Value, json};

use crate::helpers::*;

const GREETING: &str = "恭喜发财，大吉大利";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lucky_packet_opened_by_all_splits_exactly_lists_and_credits_each_share() -> Result<()> {
    let (server, [alice, bob, carol, dave]) =
        start_with([("alice", 10_000), ("bob", 0), ("carol", 0), ("dave", 0)]).await?;
    let api = &server.api;
    let health = api.request("GET", "/healthz", None, &[], None).await;
    assert_eq!(health.ok(200), json!({ "status": "ok" }));
    assert_eq!(api.get("/v1/account", &alice).await.ok(200), json!({ "user": "alice", "balance": 10_000 }));
    assert_eq!(api.get("/v1/account", &bob).await.ok(200), json!({ "user": "bob", "balance": 0 }));

    let packet = send_the_packet(api, &alice).await;
    let id = id_of(&packet);
    // The debit is part of the send: durable before the 201.
    assert_eq!(api.balance(&alice).await, 9_000);

    assert_eq!(api.grab_status(&bob, &id).await, "available");
    let bob_share = api.opened(&bob, &id).await;
    assert_eq!(api.opened(&bob, &id).await, bob_share, "a repeat open answers the same share");
    assert_eq!(api.grab_status(&bob, &id).await, "opened");
    let carol_share = api.opened(&carol, &id).await;
    let alice_share = api.opened(&alice, &id).await;
    let shares = [bob_share, carol_share, alice_share];
    assert_eq!(shares.iter().sum::<u64>(), 1000, "{shares:?}");

    api.open(&dave, &id).await.error(409, "packet_empty");
    assert_eq!(api.grab_status(&dave, &id).await, "empty");
    assert_eq!(api.grab_status(&carol, &id).await, "opened");
    assert_eq!(
        api.opened(&bob, &id).await,
        bob_share,
        "a repeat open after the last share still answers the same share"
    );

    let ats = check_the_emptied_detail(api, &dave, &packet, shares).await;

    api.wait_balance(&alice, 9_000 + alice_share).await;
    api.wait_balance(&bob, bob_share).await;
    api.wait_balance(&carol, carol_share).await;
    assert_eq!(api.balance(&dave).await, 0);

    check_the_lists(api, [&alice, &bob, &dave], &id, bob_share, ats[0]).await;
    server.stop_and_audit().await
}

/// Alice's lucky packet of 1000 fen in 3 shares, checked as answered;
/// answers the packet.
async fn send_the_packet(api: &Api, alice: &str) -> Value {
    let packet =
        api.send(alice, &json!({ "kind": "lucky", "total_amount": 1000, "count": 3, "greeting": GREETING })).await;
    assert_eq!(packet["sender"], "alice");
    assert_eq!(packet["kind"], "lucky");
    assert_eq!(packet["total_amount"], 1000);
    assert_eq!(packet["count"], 3);
    assert_eq!(packet["greeting"], GREETING);
    assert_eq!(packet["recipient"], Value::Null);
    assert!(packet.get("password").is_none(), "{packet}");
    let created_at = packet["created_at"].as_i64().expect("created_at");
    let expires_at = packet["expires_at"].as_i64().expect("expires_at");
    assert_eq!(expires_at - created_at, 86_400_000, "the default expiry is a day");
    packet
}

/// The detail of the packet once bob, carol and alice (in that order) took
/// `shares`, as anyone sees it; answers the claims' times.
async fn check_the_emptied_detail(api: &Api, viewer: &str, packet: &Value, shares: [u64; 3]) -> Vec<i64> {
    let detail = api.detail(viewer, &id_of(packet)).await;
    for field in ["id", "sender", "kind", "total_amount", "count", "greeting", "recipient", "created_at", "expires_at"]
    {
        assert_eq!(detail[field], packet[field], "{field}: {detail}");
    }
    assert_eq!(detail["has_password"], false);
    assert_eq!(detail["status"], "empty");
    assert_eq!(detail["remaining_amount"], 0);
    assert_eq!(detail["remaining_count"], 0);
    assert_eq!(detail["refunded_amount"], 0);
    assert_eq!(claim_users(&detail), ["bob", "carol", "alice"], "claims in open order");
    let claims = detail["claims"].as_array().expect("claims");
    let amounts: Vec<u64> = claims.iter().map(|claim| u64_of(&claim["amount"])).collect();
    assert_eq!(amounts, shares);
    let ats: Vec<i64> = claims.iter().map(|claim| claim["at"].as_i64().expect("at")).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
    let (created_at, expires_at) = (i64_of(&packet["created_at"]), i64_of(&packet["expires_at"]));
    assert!(ats.iter().all(|at| (created_at..expires_at).contains(at)), "{ats:?}");
    let best = (0..claims.len()).min_by_key(|&i| (Reverse(amounts[i]), i)).expect("claims");
    assert_eq!(detail["best_luck"], claims[best], "best luck is the largest share, the earliest among equals");
    ats
}

/// The sent and received lists once the packet `id` is empty: alice's sent
/// list holds it, bob's received list holds his share (taken `at`), and
/// neither list holds anything else for anyone.
async fn check_the_lists(api: &Api, [alice, bob, dave]: [&str; 3], id: &str, bob_share: u64, at: i64) {
    let sent = api.get("/v1/packets/sent", alice).await.ok(200);
    assert_eq!(sent["next_cursor"], Value::Null, "{sent}");
    let items = sent["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{sent}");
    assert_eq!(items[0]["id"], id);
    assert_eq!(items[0]["status"], "empty");
    assert_eq!(items[0]["remaining_amount"], 0);
    assert_eq!(items[0]["remaining_count"], 0);
    assert_eq!(items[0]["total_amount"], 1000);
    assert_eq!(items[0]["greeting"], GREETING);
    let bob_sent = api.get("/v1/packets/sent", bob).await.ok(200);
    assert_eq!(bob_sent, json!({ "items": [], "next_cursor": null }));

    let received = api.get("/v1/packets/received", bob).await.ok(200);
    assert_eq!(received["next_cursor"], Value::Null, "{received}");
    assert_eq!(
        received["items"],
        json!([{
            "packet_id": id,
            "sender": "alice",
            "greeting": GREETING,
            "amount": bob_share,
            "at": at,
        }])
    );
    let dave_received = api.get("/v1/packets/received", dave).await.ok(200);
    assert_eq!(dave_received, json!({ "items": [], "next_cursor": null }));
}
