//! Money: sends at every limit are accepted, sends beyond the balance are
//! refused, and deposits stop at the balance limit.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_at_every_limit_are_accepted_and_beyond_the_balance_are_409_charging_nothing() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 30_000), ("bob", 0)]).await?;
    let api = &server.api;

    let biggest = api
        .send(
            &alice,
            &json!({
                "kind": "lucky", "total_amount": 20_000, "count": 100,
                "greeting": "恭".repeat(100), "password": "p".repeat(64),
                "expires_in_s": 604_800,
            }),
        )
        .await;
    assert_eq!(
        biggest["expires_at"].as_i64().expect("expires_at") - biggest["created_at"].as_i64().expect("created_at"),
        604_800_000
    );
    let smallest = api
        .send(&alice, &json!({ "kind": "fixed", "total_amount": 1, "count": 1, "greeting": "", "expires_in_s": 1 }))
        .await;
    assert_eq!(smallest["greeting"], Value::Null, "an empty greeting is none");
    assert_eq!(api.balance(&alice).await, 9_999);

    api.post("/v1/packets", &alice, &json!({ "kind": "lucky", "total_amount": 10_000, "count": 1 }))
        .await
        .error(409, "insufficient_balance");
    api.post("/v1/packets", &bob, &json!({ "kind": "lucky", "total_amount": 1, "count": 1 }))
        .await
        .error(409, "insufficient_balance");
    assert_eq!(api.balance(&alice).await, 9_999);
    assert_eq!(api.balance(&bob).await, 0);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_stop_at_the_balance_limit_but_credits_do_not() -> Result<()> {
    const DEPOSIT_MAX: u64 = 1_000_000_000;
    const BALANCE_MAX: u64 = 100_000_000_000;

    let (server, [alice, bob]) = start_with([("alice", 1_000), ("bob", 0)]).await?;
    let api = &server.api;

    let mut tasks = JoinSet::new();
    for _ in 0..BALANCE_MAX / DEPOSIT_MAX {
        let api = api.clone();
        tasks.spawn(async move { api.deposit("bob", DEPOSIT_MAX).await });
    }
    let balances: BTreeSet<u64> = tasks.join_all().await.into_iter().collect();
    assert_eq!(balances.len() as u64, BALANCE_MAX / DEPOSIT_MAX, "{balances:?}");
    assert_eq!(balances.last(), Some(&BALANCE_MAX));
    api.post("/v1/admin/deposits", &api.admin, &json!({ "user": "bob", "amount": 1 }))
        .await
        .error(409, "balance_limit_exceeded");
    assert_eq!(api.balance(&bob).await, BALANCE_MAX);

    // A share is money already in flight: it lands even above the limit.
    let id =
        api.send_id(&alice, &json!({ "kind": "exclusive", "total_amount": 300, "count": 1, "recipient": "bob" })).await;
    assert_eq!(api.opened(&bob, &id).await, 300);
    api.wait_balance(&bob, BALANCE_MAX + 300).await;

    server.stop_and_audit().await
}
