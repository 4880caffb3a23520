//! Cash-out: a withdrawal takes its money from the balance at once; an
//! admin settles it once, completed (gone) or failed (back, exactly once).

use anyhow::Result;
use serde_json::{Value, json};

use crate::helpers::*;

async fn withdraw(api: &Api, token: &str, amount: u64) -> Value {
    api.post("/v1/withdrawals", token, &json!({ "amount": amount })).await.ok(201)
}

fn wd_id(withdrawal: &Value) -> String {
    withdrawal["id"].as_str().expect("a withdrawal id").to_owned()
}

async fn settle(api: &Api, id: &str, how: &str) -> Response {
    api.post(&format!("/v1/admin/withdrawals/{id}/{how}"), &api.admin, &json!({})).await
}

#[tokio::test]
async fn a_withdrawal_takes_its_money_at_once_and_a_failed_one_returns_it_exactly_once() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 1_000), ("bob", 0)]).await?;
    let api = &server.api;
    let first = withdraw(api, &alice, 300).await;
    assert_eq!((&first["amount"], &first["status"], &first["user"]), (&json!(300), &json!("pending"), &json!("alice")));
    assert_eq!(first["settled_at"], Value::Null);
    let id = wd_id(&first);
    assert!(id.starts_with("wd-"), "{id}");
    assert_eq!(api.balance(&alice).await, 700, "out of the balance at once");
    assert_eq!(api.get(&format!("/v1/withdrawals/{id}"), &alice).await.ok(200), first);
    api.get(&format!("/v1/withdrawals/{id}"), &bob).await.error(404, "withdrawal_not_found");

    let failed = settle(api, &id, "fail").await.ok(200);
    assert_eq!(failed["status"], "failed");
    assert!(failed["settled_at"].as_i64().is_some());
    assert_eq!(api.balance(&alice).await, 1_000, "back once");
    assert_eq!(settle(api, &id, "fail").await.ok(200), failed, "failing again answers the same");
    assert_eq!(api.balance(&alice).await, 1_000, "and returns nothing more");
    settle(api, &id, "complete").await.error(409, "withdrawal_settled");

    let second = wd_id(&withdraw(api, &alice, 200).await);
    assert_eq!(settle(api, &second, "complete").await.ok(200)["status"], "completed");
    settle(api, &second, "fail").await.error(409, "withdrawal_settled");
    assert_eq!(settle(api, &second, "complete").await.ok(200)["status"], "completed");
    assert_eq!(api.balance(&alice).await, 800, "gone for good");
    assert_eq!(api.get(&format!("/v1/withdrawals/{second}"), &alice).await.ok(200)["status"], "completed");
    server.stop_and_audit().await
}

#[tokio::test]
async fn a_withdrawal_past_the_balance_or_of_no_amount_is_refused_and_moves_nothing() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000)]).await?;
    let api = &server.api;
    api.post("/v1/withdrawals", &alice, &json!({"amount": 1_001})).await.error(409, "insufficient_balance");
    for bad in [json!({"amount": 0}), json!({"amount": -5}), json!({"amount": "5"}), json!({"amount": 1.5}), json!({})]
    {
        let answer = api.post("/v1/withdrawals", &alice, &bad).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
    }
    api.post("/v1/withdrawals", &alice, &json!({"amount": 10, "to": "x"})).await.error(400, "invalid_json");
    let unknown = "wd-20270128-0-99-9f3a1c2e77b04d15";
    for id in [unknown, "20270128-0-99-9f3a1c2e77b04d15", "wd-nope"] {
        api.get(&format!("/v1/withdrawals/{id}"), &alice).await.error(404, "withdrawal_not_found");
        settle(api, id, "complete").await.error(404, "withdrawal_not_found");
    }
    let id = wd_id(&withdraw(api, &alice, 100).await);
    api.post(&format!("/v1/admin/withdrawals/{id}/fail"), &alice, &json!({})).await.error(403, "admin_only");
    assert_eq!(api.balance(&alice).await, 900);
    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_under_one_key_withdraw_once() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000)]).await?;
    let api = &server.api;
    let body = json!({"amount": 250});
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let (api, alice, body) = (api.clone(), alice.clone(), body.clone());
            tokio::spawn(async move { api.post_keyed("/v1/withdrawals", &alice, "cash-1", &body).await })
        })
        .collect();
    let mut ids = Vec::new();
    for answer in tries {
        let answer = answer.await?;
        if answer.status == 429 {
            continue; // one user's writes in flight are bounded; a retry would follow
        }
        ids.push(wd_id(&answer.ok(201)));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one withdrawal: {ids:?}");
    assert_eq!(api.balance(&alice).await, 750, "its money taken once");
    api.post_keyed("/v1/withdrawals", &alice, "cash-1", &json!({"amount": 1}))
        .await
        .error(409, "idempotency_key_reused");
    server.stop_and_audit().await
}

#[tokio::test]
async fn a_pending_withdrawal_is_settled_after_a_restart_and_a_settled_one_stays_settled() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000)]).await?;
    let api = &server.api;
    let pending = wd_id(&withdraw(api, &alice, 300).await);
    let done = wd_id(&withdraw(api, &alice, 100).await);
    settle(api, &done, "complete").await.ok(200);

    let server = server.restart().await?;
    let api = &server.api;
    assert_eq!(api.balance(&alice).await, 600);
    settle(api, &done, "fail").await.error(409, "withdrawal_settled");
    assert_eq!(settle(api, &pending, "fail").await.ok(200)["status"], "failed");
    assert_eq!(api.balance(&alice).await, 900);
    server.stop_and_audit().await
}

#[tokio::test]
async fn on_postgresql_withdrawals_settle_once_and_survive_a_restart() -> Result<()> {
    let Some((server, _clock, [alice])) = start_on_postgres_with_clock("withdrawals", [("alice", 1_000)]).await? else {
        return Ok(());
    };
    let api = &server.api;
    let failed = wd_id(&withdraw(api, &alice, 300).await);
    let pending = wd_id(&withdraw(api, &alice, 200).await);
    settle(api, &failed, "fail").await.ok(200);
    settle(api, &failed, "complete").await.error(409, "withdrawal_settled");
    let server = server.restart().await?;
    let api = &server.api;
    assert_eq!(api.balance(&alice).await, 800);
    assert_eq!(settle(api, &pending, "complete").await.ok(200)["status"], "completed");
    assert_eq!(api.get(&format!("/v1/withdrawals/{failed}"), &alice).await.ok(200)["status"], "failed");
    server.stop_and_audit().await
}
