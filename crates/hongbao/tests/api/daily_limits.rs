//! Daily limits: a user's packets of the (UTC) day, by count and by money;
//! past either, a send is 429 `daily_limit` with `Retry-After` the next
//! day's start, and nothing is sent.

use anyhow::Result;
use hongbao_domain::Amount;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_send_past_the_days_count_or_money_is_refused_and_sends_nothing() -> Result<()> {
    let limited = |options: &mut hongbao::ServeOptions| {
        options.engine.limits.daily_send_count_max = 3;
        options.engine.limits.daily_send_amount_max = Amount::from_fen(1_000).unwrap();
    };
    let server = start_with_options(limited).await?;
    let api = &server.api;
    let [alice, bob] = api.users([("alice", 10_000), ("bob", 10_000)]).await;
    let send = |total: u64| json!({"kind": "fixed", "total_amount": total, "count": 1});
    api.send(&alice, &send(600)).await;
    let refused = api.post("/v1/packets", &alice, &send(401)).await;
    refused.error(429, "daily_limit");
    let retry: u64 = refused.headers["retry-after"].to_str()?.parse()?;
    assert!((1..=86_400).contains(&retry), "until the next UTC day: {retry}");
    api.send(&alice, &send(400)).await;
    assert_eq!(api.balance(&alice).await, 9_000, "the refused send moved nothing");
    api.post("/v1/packets", &alice, &send(1)).await.error(429, "daily_limit");

    // The count: bob's fourth packet of the day, however small.
    for _ in 0..3 {
        api.send(&bob, &send(1)).await;
    }
    api.post("/v1/packets", &bob, &send(1)).await.error(429, "daily_limit");
    // Under a key too.
    let keyed = api.post_keyed("/v1/packets", &bob, "k", &send(1)).await;
    keyed.error(429, "daily_limit");

    // The day's count is the tables' after a restart.
    let server = server.restart_with(limited).await?;
    server.api.post("/v1/packets", &bob, &send(1)).await.error(429, "daily_limit");
    server.stop_and_audit().await
}

#[tokio::test]
async fn on_postgresql_the_days_count_is_read_back_after_a_restart() -> Result<()> {
    let limited = |options: &mut hongbao::ServeOptions| options.engine.limits.daily_send_count_max = 2;
    let Some(server) = start_on_postgres_with_options("daily_limits", limited).await? else { return Ok(()) };
    let [alice] = server.api.users([("alice", 1_000)]).await;
    let send = json!({"kind": "fixed", "total_amount": 10, "count": 1});
    server.api.send(&alice, &send).await;
    // Read back from the tables after the restart: one sent, one to go.
    let server = server.restart_with(limited).await?;
    server.api.send(&alice, &send).await;
    server.api.post("/v1/packets", &alice, &send).await.error(429, "daily_limit");
    server.stop_and_audit().await
}
