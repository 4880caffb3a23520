//! Idempotency keys on deposits and sends: a replay answers what the first
//! request answered and changes nothing; a key reused for another body is
//! refused.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::*;

const DEPOSITS: &str = "/v1/admin/deposits";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_deposit_key_answers_the_first_answer_deposits_once_and_a_changed_body_is_409() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 0)]).await?;
    let api = &server.api;
    let admin = api.admin.as_str();
    let ten_thousand = json!({ "user": "alice", "amount": 10_000 });

    let first = api.post_keyed(DEPOSITS, admin, "dep-1", &ten_thousand).await.ok(200);
    assert_eq!(first, json!({ "user": "alice", "balance": 10_000 }));
    let again = api.post_keyed(DEPOSITS, admin, "dep-1", &ten_thousand).await.ok(200);
    assert_eq!(again, first, "a replay answers the same");
    assert_eq!(api.balance(&alice).await, 10_000, "a replay deposits nothing");

    assert_eq!(api.deposit("alice", 500).await, 10_500);
    let later = api.post_keyed(DEPOSITS, admin, "dep-1", &ten_thousand).await.ok(200);
    assert_eq!(later, first, "a replay answers what the first request answered");
    assert_eq!(api.balance(&alice).await, 10_500);

    api.post_keyed(DEPOSITS, admin, "dep-1", &json!({ "user": "alice", "amount": 2_000 }))
        .await
        .error(409, "idempotency_key_reused");
    assert_eq!(api.balance(&alice).await, 10_500);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_1_to_64_of_letters_digits_and_dash_underscore_dot_colon_or_400() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 500)]).await?;
    let api = &server.api;
    let admin = api.admin.as_str();
    let ten_thousand = json!({ "user": "alice", "amount": 10_000 });

    let long_key = "k".repeat(65);
    for key in ["has space", "a/b", "a,b", long_key.as_str(), ""] {
        api.post_keyed(DEPOSITS, admin, key, &ten_thousand).await.error(400, "invalid_idempotency_key");
    }
    assert_eq!(api.balance(&alice).await, 500);
    let longest = "K".repeat(64);
    let allowed = format!("A-z_0.9:{}", &longest[..56]);
    assert_eq!(allowed.len(), 64);
    for key in [longest.as_str(), allowed.as_str()] {
        api.post_keyed(DEPOSITS, admin, key, &json!({ "user": "alice", "amount": 1 })).await.ok(200);
    }
    assert_eq!(api.balance(&alice).await, 502);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_send_key_answers_the_same_packet_charges_once_and_a_changed_body_is_409() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 10_000), ("bob", 0)]).await?;
    let api = &server.api;

    let spec = json!({ "kind": "fixed", "total_amount": 1000, "count": 2, "greeting": "once" });
    let sent = api.post_keyed("/v1/packets", &alice, "send-1", &spec).await.ok(201);
    let replay = api.post_keyed("/v1/packets", &alice, "send-1", &spec).await.ok(201);
    assert_eq!(replay, sent, "a replayed send answers the same packet");
    assert_eq!(api.balance(&alice).await, 9_000, "charged once");

    for other in [
        json!({ "kind": "fixed", "total_amount": 1000, "count": 4, "greeting": "once" }),
        json!({ "kind": "fixed", "total_amount": 1000, "count": 2, "greeting": "twice" }),
        json!({ "kind": "fixed", "total_amount": 1000, "count": 2 }),
        json!({ "kind": "lucky", "total_amount": 1000, "count": 2, "greeting": "once" }),
        json!({
            "kind": "fixed", "total_amount": 1000, "count": 2, "greeting": "once",
            "password": "secret",
        }),
    ] {
        api.post_keyed("/v1/packets", &alice, "send-1", &other).await.error(409, "idempotency_key_reused");
    }
    api.post_keyed("/v1/packets", &alice, "bad key", &spec).await.error(400, "invalid_idempotency_key");
    assert_eq!(api.balance(&alice).await, 9_000);
    let listed = api.get("/v1/packets/sent", &alice).await.ok(200);
    let listed: Vec<String> = listed["items"].as_array().expect("items").iter().map(id_of).collect();
    assert_eq!(listed, [id_of(&sent)], "one packet for the key and its replays");

    // A replayed packet is the same packet: opening it shows one set of shares.
    assert_eq!(api.opened(&bob, &id_of(&sent)).await, 500);
    let detail = api.detail(&bob, &id_of(&replay)).await;
    assert_eq!(detail["remaining_count"], 1, "{detail}");
    api.wait_balance(&bob, 500).await;

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_key_sent_eight_times_at_once_makes_one_packet_and_charges_once() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 10_000)]).await?;
    let api = &server.api;
    let spec = json!({ "kind": "fixed", "total_amount": 1000, "count": 2 });
    let first = api.post_keyed("/v1/packets", &alice, "send-1", &spec).await.ok(201);

    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let api = api.clone();
        let alice = alice.clone();
        tasks.spawn(async move {
            let spec = json!({ "kind": "lucky", "total_amount": 700, "count": 7 });
            api.post_keyed("/v1/packets", &alice, "send-2", &spec).await.ok(201)
        });
    }
    let answers = tasks.join_all().await;
    let ids: BTreeSet<String> = answers.iter().map(id_of).collect();
    assert_eq!(ids.len(), 1, "one packet for one key: {ids:?}");
    assert!(answers.iter().all(|answer| answer == &answers[0]));
    assert_eq!(api.balance(&alice).await, 8_300, "charged once");

    let listed = api.get("/v1/packets/sent", &alice).await.ok(200);
    let listed: Vec<String> = listed["items"].as_array().expect("items").iter().map(id_of).collect();
    assert_eq!(listed, [id_of(&answers[0]), id_of(&first)], "two packets in all: one per key");

    server.stop_and_audit().await
}
