//! Frozen accounts: an admin's freeze stops a user's sends, opens, grabs and
//! withdrawals; the balance stays and credits still arrive; an unfreeze
//! lifts it. A freeze survives a restart.

use anyhow::Result;
use serde_json::json;

use crate::helpers::*;

async fn hold(api: &Api, user: &str, how: &str) -> serde_json::Value {
    api.post(&format!("/v1/admin/accounts/{user}/{how}"), &api.admin, &json!({})).await.ok(200)
}

#[tokio::test]
async fn a_frozen_account_cannot_send_open_or_withdraw_but_keeps_its_money_and_credits() -> Result<()> {
    let (server, [alice, bob, carol]) = start_with([("alice", 1_000), ("bob", 500), ("carol", 0)]).await?;
    let api = &server.api;
    let opened_before = api.send_id(&alice, &json!({"kind": "fixed", "total_amount": 200, "count": 2})).await;
    let bobs_first = api.opened(&bob, &opened_before).await;
    api.wait_balance(&bob, 500 + bobs_first).await;
    let waiting = api.send_id(&alice, &json!({"kind": "fixed", "total_amount": 100, "count": 1})).await;
    let from_bob = api.send_id(&bob, &json!({"kind": "fixed", "total_amount": 100, "count": 1})).await;

    assert_eq!(hold(api, "bob", "freeze").await, json!({"user": "bob", "frozen": true, "changed": true}));
    assert_eq!(hold(api, "bob", "freeze").await["changed"], false, "freezing twice changes nothing");
    api.post("/v1/packets", &bob, &json!({"kind": "fixed", "total_amount": 100, "count": 1}))
        .await
        .error(403, "account_frozen");
    api.open(&bob, &waiting).await.error(403, "account_frozen");
    api.grab(&bob, &waiting).await.error(403, "account_frozen");
    api.post("/v1/withdrawals", &bob, &json!({"amount": 10})).await.error(403, "account_frozen");
    // A share opened before the freeze is still answered.
    assert_eq!(api.opened(&bob, &opened_before).await, bobs_first);
    // The balance is kept, readable, and credits still arrive.
    assert_eq!(api.balance(&bob).await, 400 + bobs_first);
    let carols = api.opened(&carol, &from_bob).await;
    assert_eq!(carols, 100, "others still open bob's packets");
    let to_bob =
        api.send_id(&alice, &json!({"kind": "exclusive", "total_amount": 50, "count": 1, "recipient": "carol"})).await;
    assert_eq!(api.opened(&carol, &to_bob).await, 50);
    api.post("/v1/admin/deposits", &api.admin, &json!({"user": "bob", "amount": 70})).await.ok(200);
    assert_eq!(api.balance(&bob).await, 470 + bobs_first, "a deposit still lands");

    // Frozen across a restart.
    let server = server.restart().await?;
    let api = &server.api;
    api.open(&bob, &waiting).await.error(403, "account_frozen");
    assert_eq!(hold(api, "bob", "unfreeze").await, json!({"user": "bob", "frozen": false, "changed": true}));
    assert_eq!(api.opened(&bob, &waiting).await, 100);
    api.post("/v1/withdrawals", &bob, &json!({"amount": 10})).await.ok(201);
    assert_eq!(hold(api, "bob", "unfreeze").await["changed"], false);
    api.post("/v1/admin/accounts/bo%20b/freeze", &api.admin, &json!({})).await.error(400, "invalid_user");
    api.post("/v1/admin/accounts/bob/freeze", &alice, &json!({})).await.error(403, "admin_only");
    server.stop_and_audit().await
}

#[tokio::test]
async fn on_postgresql_a_freeze_holds_across_a_restart() -> Result<()> {
    let Some((server, _clock, [alice, bob])) =
        start_on_postgres_with_clock("frozen", [("alice", 1_000), ("bob", 0)]).await?
    else {
        return Ok(());
    };
    let api = &server.api;
    let id = api.send_id(&alice, &json!({"kind": "fixed", "total_amount": 100, "count": 1})).await;
    hold(api, "bob", "freeze").await;
    let server = server.restart().await?;
    let api = &server.api;
    api.open(&bob, &id).await.error(403, "account_frozen");
    hold(api, "bob", "unfreeze").await;
    assert_eq!(api.opened(&bob, &id).await, 100);
    server.stop_and_audit().await
}
