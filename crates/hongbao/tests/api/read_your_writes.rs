//! Reads see every acknowledged write: the tables follow the journal behind
//! the commit point, so a read waits until they hold what was answered
//! before it began. Many clients write and read back at once, each checking
//! its own writes, with nothing polled.

use anyhow::Result;
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::*;

const CLIENTS: usize = 16;
const ROUNDS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_write_is_in_the_next_read_of_any_client() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let mut tasks = JoinSet::new();
    for client in 0..CLIENTS {
        let api = api.clone();
        tasks.spawn(async move {
            // Each client has its own giver: sends are rate-limited per user.
            let giver = api.token(&format!("giver{client:02}")).await;
            api.deposit(&format!("giver{client:02}"), 1_000).await;
            let user = format!("reader{client:02}");
            let token = api.token(&user).await;
            for round in 0..ROUNDS {
                // A deposit answered is in the account read next.
                let mut balance = api.deposit(&user, 7).await;
                assert_eq!(api.balance(&token).await, balance, "{user}, round {round}: the deposit");
                // A send answered is in the sender's list read next.
                let id = api.send_id(&token, &json!({ "kind": "fixed", "total_amount": 2, "count": 1 })).await;
                balance -= 2;
                let sent = api.get("/v1/packets/sent?limit=1", &token).await.ok(200);
                assert_eq!(sent["items"][0]["id"], id.as_str(), "{user}, round {round}: the send");
                assert_eq!(api.balance(&token).await, balance, "{user}, round {round}: the debit");
                // An open answered is in the packet and in the opener's list.
                let theirs = api.send_id(&giver, &json!({ "kind": "lucky", "total_amount": 10, "count": 1 })).await;
                let share = share_of(api.open(&token, &theirs).await.ok(200));
                let detail = api.detail(&token, &theirs).await;
                assert_eq!(claim_users(&detail), [user.as_str()], "{user}, round {round}: the claim");
                let received = api.get("/v1/packets/received?limit=1", &token).await.ok(200);
                assert_eq!(received["items"][0]["packet_id"], theirs.as_str(), "{user}, round {round}: received");
                assert_eq!(u64_of(&received["items"][0]["amount"]), share);
                // The credit may land later in another set; the deposit
                // above reads its own set only after all of it was answered.
                balance += share;
                api.wait_balance(&token, balance).await;
            }
        });
    }
    tasks.join_all().await;
    server.stop_and_audit().await
}
