//! Stopping and starting again: a stopped engine behind a live server, and
//! a restart on the same data directory.

use std::time::Instant;

use anyhow::Result;
use hyper::header::RETRY_AFTER;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_engine_answers_writes_503_shutting_down_with_retry_after_and_is_not_ready() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000)]).await?;
    let api = &server.api;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await;

    // Stop the sets behind a server that still answers HTTP.
    let engine = server.running.engine.clone();
    tokio::task::spawn_blocking(move || engine.shutdown()).await?;

    let refused = [
        api.post("/v1/admin/deposits", &api.admin, &json!({ "user": "alice", "amount": 1 })).await,
        api.post("/v1/packets", &alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await,
        api.open(&alice, &id).await,
        api.grab(&alice, &id).await,
    ];
    for response in &refused {
        response.error(503, "shutting_down");
        assert!(
            response
                .headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.parse::<u64>().is_ok()),
            "{}: a 503 carries Retry-After in seconds: {:?}",
            response.what,
            response.headers
        );
    }
    // Reads of committed state still work; the node says it is not ready.
    assert_eq!(api.balance(&alice).await, 900);
    api.request("GET", "/readyz", None, &[], None).await.error(503, "not_ready");
    assert_eq!(api.request("GET", "/livez", None, &[], None).await.ok(200), json!({ "status": "ok" }));

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_balances_packets_tokens_the_admin_token_and_idempotency_keys() -> Result<()> {
    let (server, [alice, bob, carol]) = start_with([("alice", 0), ("bob", 0), ("carol", 0)]).await?;
    // The first server's admin token, kept to present to the second.
    let admin = server.api.admin.clone();
    let api = &server.api;
    let deposit = json!({ "user": "alice", "amount": 5_000 });
    let deposited = api.post_keyed("/v1/admin/deposits", &admin, "dep-r", &deposit).await.ok(200);
    let spec = json!({ "kind": "lucky", "total_amount": 1000, "count": 4 });
    let packet = api.post_keyed("/v1/packets", &alice, "send-r", &spec).await.ok(201);
    let id = id_of(&packet);
    let bob_share = api.opened(&bob, &id).await;
    // A packet that expires around the restart is refunded after it.
    let expiring =
        api.send_id(&alice, &json!({ "kind": "fixed", "total_amount": 400, "count": 4, "expires_in_s": 1 })).await;
    let path = server.running.data.path.clone();

    let server = server.restart().await?;
    let api = &server.api;
    assert_eq!(server.running.admin_token.as_deref(), Some(admin.as_str()), "admin.token still holds the first token");
    // A served data directory is locked against a second server.
    let second = hongbao::ServeOptions::new(path, "127.0.0.1:0".parse()?);
    assert!(hongbao::start(second).await.is_err(), "two servers on one data directory");
    // The keys survive: old tokens still work, the first admin's too.
    api.request("GET", "/v1/account", Some(&alice), &[], None).await.ok(200);
    api.wait_balance(&bob, bob_share).await;
    let replayed = api.post_keyed("/v1/admin/deposits", &admin, "dep-r", &deposit).await.ok(200);
    assert_eq!(replayed, deposited);
    let replayed = api.post_keyed("/v1/packets", &alice, "send-r", &spec).await.ok(201);
    assert_eq!(replayed, packet);
    assert_eq!(api.opened(&bob, &id).await, bob_share);
    let carol_share = api.opened(&carol, &id).await;
    let detail = api.detail(&carol, &id).await;
    assert_eq!(claim_users(&detail), ["bob", "carol"]);
    assert_eq!(u64_of(&detail["remaining_amount"]), 1000 - bob_share - carol_share);
    api.wait_balance(&carol, carol_share).await;

    let deadline = Instant::now() + POLL_BOUND;
    while api.grab_status(&carol, &expiring).await != "expired" {
        assert!(Instant::now() < deadline, "the packet did not expire");
        tokio::time::sleep(POLL_EVERY).await;
    }
    api.open(&carol, &expiring).await.error(410, "packet_expired");
    api.wait_balance(&alice, 5_000 - 1000).await;

    let sent = api.get("/v1/packets/sent", &alice).await.ok(200);
    let sent: Vec<String> = sent["items"].as_array().expect("items").iter().map(id_of).collect();
    assert_eq!(sent, [expiring, id.clone()]);
    let received = api.get("/v1/packets/received", &bob).await.ok(200);
    assert_eq!(received["items"][0]["packet_id"], id.as_str(), "{received}");
    assert_eq!(received["items"].as_array().map(Vec::len), Some(1));

    server.stop_and_audit().await
}
