//! The sent and received lists: paging, and the limits and cursors they
//! refuse.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::{Value, json};

use crate::helpers::*;

fn packet_id_of(item: &Value) -> String {
    item["packet_id"].as_str().expect("packet_id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_concatenate_to_the_whole_list_newest_first_without_duplicates() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 10_000), ("bob", 0)]).await?;
    let api = &server.api;

    let mut ids = Vec::new();
    for n in 0..5 {
        let spec = json!({
            "kind": "fixed", "total_amount": 200, "count": 2, "greeting": format!("packet {n}"),
        });
        ids.push(api.send_id(&alice, &spec).await);
    }
    for id in &ids {
        assert_eq!(api.opened(&bob, id).await, 100);
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    let pages = api.pages(&alice, "sent", 2).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1], "{pages:?}");
    let listed: Vec<String> = pages.iter().flatten().map(id_of).collect();
    assert_eq!(listed, newest_first, "sent pages newest first, no duplicates");
    for item in pages.iter().flatten() {
        assert_eq!(item["sender"], "alice");
        assert_eq!(item["status"], "available");
        assert_eq!(item["remaining_amount"], 100);
        assert_eq!(item["remaining_count"], 1);
        assert_eq!(item["refunded_amount"], 0);
    }
    let whole = api.get("/v1/packets/sent", &alice).await.ok(200);
    assert_eq!(whole["next_cursor"], Value::Null);
    assert_eq!(
        whole["items"].as_array().map(|items| items.iter().map(id_of).collect::<Vec<_>>()),
        Some(newest_first.clone()),
        "the default page holds all five"
    );
    let singles: Vec<String> = api.pages(&alice, "sent", 1).await.iter().flatten().map(id_of).collect();
    assert_eq!(singles, newest_first);

    let pages = api.pages(&bob, "received", 2).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1], "{pages:?}");
    let listed: Vec<String> = pages.iter().flatten().map(packet_id_of).collect();
    assert_eq!(listed, newest_first, "received pages newest first, no duplicates");
    for (item, n) in pages.iter().flatten().zip((0..5).rev()) {
        assert_eq!(item["sender"], "alice");
        assert_eq!(item["amount"], 100);
        assert_eq!(item["greeting"], format!("packet {n}"));
    }

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_from_many_senders_pages_in_the_order_of_one_whole_page() -> Result<()> {
    let (server, [carol]) = start_with([("carol", 0)]).await?;
    let api = &server.api;

    // Received from several senders, most likely in several sets: paging
    // follows the same order as one whole page.
    let senders = ["sam", "sue", "sid", "sol", "sky", "stu"].map(|sender| (sender, 1_000));
    let mut carol_ids = BTreeSet::new();
    for token in api.users(senders).await {
        for _ in 0..2 {
            let id = api.send_id(&token, &json!({ "kind": "lucky", "total_amount": 50, "count": 1 })).await;
            api.opened(&carol, &id).await;
            carol_ids.insert(id);
        }
    }
    let whole = api.get("/v1/packets/received?limit=100", &carol).await.ok(200);
    assert_eq!(whole["next_cursor"], Value::Null);
    let whole = whole["items"].as_array().expect("items").clone();
    assert_eq!(whole.len(), 12);
    let ats: Vec<i64> = whole.iter().map(|item| item["at"].as_i64().expect("at")).collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]), "newest first: {ats:?}");
    let listed: BTreeSet<String> = whole.iter().map(packet_id_of).collect();
    assert_eq!(listed, carol_ids);
    for limit in [1, 2, 5] {
        let pages = api.pages(&carol, "received", limit).await;
        assert!(pages.iter().rev().skip(1).all(|page| page.len() == limit));
        let paged: Vec<Value> = pages.into_iter().flatten().collect();
        assert_eq!(paged, whole, "pages of {limit}");
    }

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_outside_1_to_100_or_a_malformed_cursor_is_400() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000)]).await?;
    let api = &server.api;
    api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await;

    for list in ["sent", "received"] {
        for limit in ["0", "101", "x", "-1", "", "1.5", "99999999999999999999"] {
            api.get(&format!("/v1/packets/{list}?limit={limit}"), &alice).await.error(400, "invalid_limit");
        }
        for limit in ["1", "100"] {
            api.get(&format!("/v1/packets/{list}?limit={limit}"), &alice).await.ok(200);
        }
    }
    for cursor in ["abc", "-1", "1.5", "", "0x10"] {
        api.get(&format!("/v1/packets/sent?cursor={cursor}"), &alice).await.error(400, "invalid_cursor");
    }
    for cursor in ["abc", "", "1.nope", "x.20270128-0-1-00000000", "12345", "12.20270128-0-1"] {
        api.get(&format!("/v1/packets/received?cursor={cursor}"), &alice).await.error(400, "invalid_cursor");
    }

    server.stop_and_audit().await
}
