//! Deposit reversals: an admin takes a deposit back with a compensating
//! entry, once, and only while the balance holds it.

use anyhow::Result;
use serde_json::json;

use crate::helpers::*;

async fn reverse(api: &Api, reference: &str) -> Response {
    let path = format!("/v1/admin/deposits/{}/reverse", reference.replace(':', "%3A"));
    api.post(&path, &api.admin, &json!({})).await
}

#[tokio::test]
async fn a_deposit_is_taken_back_once_and_only_while_the_balance_holds_it() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 0)]).await?;
    let api = &server.api;
    let deposit = |key: &'static str, amount: u64| {
        let api = api.clone();
        async move {
            api.post_keyed("/v1/admin/deposits", &api.admin, key, &json!({"user": "alice", "amount": amount}))
                .await
                .ok(200)
        }
    };
    deposit("top-1", 500).await;
    deposit("top-2", 300).await;
    assert_eq!(api.balance(&alice).await, 800);

    let reversed = reverse(api, "deposit:alice:key:top-1").await.ok(200);
    assert_eq!(
        reversed,
        json!({"reference": "deposit:alice:key:top-1", "user": "alice", "amount": 500, "balance": 300})
    );
    assert_eq!(reverse(api, "deposit:alice:key:top-1").await.ok(200)["amount"], 500, "a repeat answers the same");
    assert_eq!(api.balance(&alice).await, 300, "taken back once");

    // The balance no longer holds the second one's 300 once alice spends.
    api.send(&alice, &json!({"kind": "fixed", "total_amount": 100, "count": 1})).await;
    reverse(api, "deposit:alice:key:top-2").await.error(409, "insufficient_balance");
    assert_eq!(api.balance(&alice).await, 200, "a refused reversal moves nothing");
    for unknown in ["deposit:alice:key:nope", "deposit:bob:key:top-1", "send:x", "deposit:al%20ice:key:1"] {
        reverse(api, unknown).await.error(404, "deposit_not_found");
    }
    api.post("/v1/admin/deposits/deposit%3Aalice%3Akey%3Atop-2/reverse", &alice, &json!({}))
        .await
        .error(403, "admin_only");

    let bill = api.get("/v1/ledger?kind=reversal", &alice).await.ok(200);
    assert_eq!(bill["items"][0]["amount"], -500);
    assert_eq!(bill["items"][0]["reference"], "reversal:deposit:alice:key:top-1");
    // Reversed once, across a restart too.
    let server = server.restart().await?;
    assert_eq!(reverse(&server.api, "deposit:alice:key:top-1").await.ok(200)["balance"], 200);
    server.stop_and_audit().await
}

#[tokio::test]
async fn on_postgresql_a_deposit_is_taken_back_once() -> Result<()> {
    let Some((server, _clock, [alice])) = start_on_postgres_with_clock("reversals", [("alice", 0)]).await? else {
        return Ok(());
    };
    let api = &server.api;
    api.post_keyed("/v1/admin/deposits", &api.admin, "t", &json!({"user": "alice", "amount": 400})).await.ok(200);
    assert_eq!(reverse(api, "deposit:alice:key:t").await.ok(200)["balance"], 0);
    let server = server.restart().await?;
    assert_eq!(reverse(&server.api, "deposit:alice:key:t").await.ok(200)["amount"], 400);
    assert_eq!(server.api.balance(&alice).await, 0);
    server.stop_and_audit().await
}
