//! Bills (`GET /v1/ledger`: every change of a wallet, newest first, with the
//! balance it left) and the year in red packets (`GET /v1/summary`).

use anyhow::Result;
use serde_json::{Value, json};

use crate::helpers::*;

/// Every page of `path` (a bill query without `limit`), `limit` at a time.
async fn every_page(api: &Api, token: &str, path: &str, limit: usize) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={}", cursor.replace('%', "%25").replace('&', "%26").replace('+', "%2B")));
        }
        let page = api.get(&url, token).await.ok(200);
        pages.push(page["items"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn a_bill_lists_every_change_newest_first_with_the_balance_each_left() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 1_000), ("bob", 0)]).await?;
    let api = &server.api;
    let id = api.send_id(&alice, &json!({"kind": "fixed", "total_amount": 300, "count": 3})).await;
    let alices_share = api.opened(&alice, &id).await;
    let bobs_share = api.opened(&bob, &id).await;
    let withdrawal = api.post("/v1/withdrawals", &alice, &json!({"amount": 150})).await.ok(201);
    api.post(&format!("/v1/admin/withdrawals/{}/fail", withdrawal["id"].as_str().unwrap()), &api.admin, &json!({}))
        .await
        .ok(200);
    api.wait_balance(&bob, bobs_share).await;

    let pages = every_page(api, &alice, "/v1/ledger", 2).await;
    assert!(pages.len() >= 3, "paged two at a time: {pages:?}");
    let bill: Vec<Value> = pages.concat();
    let kinds: Vec<&str> = bill.iter().map(|item| item["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["withdrawal_return", "withdrawal", "credit", "send", "deposit"], "newest first");
    assert_eq!(bill[2]["amount"], alices_share);
    assert_eq!((&bill[3]["amount"], bill[3]["packet_id"].as_str()), (&json!(-300), Some(&*id)));
    assert_eq!(bill[4]["packet_id"], Value::Null);
    // Oldest to newest, each entry leaves the balance before it plus its amount.
    let mut balance = 0;
    for item in bill.iter().rev() {
        balance += item["amount"].as_i64().unwrap();
        assert_eq!(item["balance_after"], balance, "{item}");
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["amount", "at", "balance_after", "kind", "packet_id", "reference"]);
    }
    assert_eq!(balance as u64, api.balance(&alice).await, "the newest balance is the balance");
    let references: std::collections::HashSet<&str> = bill.iter().map(|i| i["reference"].as_str().unwrap()).collect();
    assert_eq!(references.len(), bill.len(), "no entry twice across pages");

    let sends = api.get("/v1/ledger?kind=send", &alice).await.ok(200);
    assert_eq!(sends["items"].as_array().unwrap().len(), 1);
    assert_eq!(sends["next_cursor"], Value::Null);
    let at = bill[3]["at"].as_i64().unwrap();
    let from = api.get(&format!("/v1/ledger?from={}", at + 1), &alice).await.ok(200);
    assert!(from["items"].as_array().unwrap().iter().all(|item| item["at"].as_i64().unwrap() > at));
    let to = api.get(&format!("/v1/ledger?to={at}"), &alice).await.ok(200);
    assert!(to["items"].as_array().unwrap().iter().all(|item| item["at"].as_i64().unwrap() < at));
    let bobs = api.get("/v1/ledger", &bob).await.ok(200);
    assert_eq!(bobs["items"].as_array().unwrap().len(), 1, "only one's own: {bobs}");
    assert_eq!(bobs["items"][0]["balance_after"], bobs_share);

    let server = server.restart().await?;
    assert_eq!(every_page(&server.api, &alice, "/v1/ledger", 100).await.concat(), bill, "the same after a restart");
    server.stop_and_audit().await
}

#[tokio::test]
async fn a_bad_bill_query_is_400_with_its_code() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 100)]).await?;
    let api = &server.api;
    for (query, code) in [
        ("kind=gift", "invalid_query"),
        ("from=-1", "invalid_query"),
        ("to=soon", "invalid_query"),
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("cursor=nope", "invalid_cursor"),
        ("cursor=12", "invalid_cursor"),
        ("cursor=012:deposit:x", "invalid_cursor"),
    ] {
        api.get(&format!("/v1/ledger?{query}"), &alice).await.error(400, code);
    }
    for query in ["", "?year=1999", "?year=10000", "?year=x"] {
        api.get(&format!("/v1/summary{query}"), &alice).await.error(400, "invalid_query");
    }
    server.stop_and_audit().await
}

#[tokio::test]
async fn a_years_summary_counts_what_was_sent_received_and_won() -> Result<()> {
    let (server, [alice, bob, carol]) = start_with([("alice", 1_000), ("bob", 0), ("carol", 0)]).await?;
    let api = &server.api;
    let single = api.send_id(&alice, &json!({"kind": "fixed", "total_amount": 100, "count": 1})).await;
    let pair = api.send_id(&alice, &json!({"kind": "lucky", "total_amount": 200, "count": 2})).await;
    let bobs = api.opened(&bob, &single).await + api.opened(&bob, &pair).await;
    let carols = api.opened(&carol, &pair).await;
    api.wait_balance(&bob, bobs).await;
    api.wait_balance(&carol, carols).await;
    let detail = api.detail(&alice, &pair).await;
    let best = detail["best_luck"]["user"].as_str().unwrap().to_owned();
    // The UTC year (an average Gregorian year of milliseconds; today is far from New Year).
    let year = 1970 + i64_of(&detail["created_at"]) / 31_556_952_000;

    let summary = |token: String| {
        let api = api.clone();
        async move { api.get(&format!("/v1/summary?year={year}"), &token).await.ok(200) }
    };
    let of_alice = summary(alice.clone()).await;
    assert_eq!(
        of_alice,
        json!({"year": year, "sent": {"count": 2, "amount": 300}, "received": {"count": 0, "amount": 0}, "best_luck_count": 0})
    );
    let of_bob = summary(bob.clone()).await;
    assert_eq!((&of_bob["received"]["count"], &of_bob["received"]["amount"]), (&json!(2), &json!(bobs)));
    let bobs_luck = 1 + i64::from(best == "bob");
    assert_eq!(of_bob["best_luck_count"], bobs_luck, "the single share, and the pair's best if his");
    assert_eq!(summary(carol.clone()).await["best_luck_count"], i64::from(best == "carol"));
    let before = api.get(&format!("/v1/summary?year={}", year - 1), &bob).await.ok(200);
    assert_eq!(before["received"]["count"], 0);
    assert_eq!(before["best_luck_count"], 0);
    server.stop_and_audit().await
}

#[tokio::test]
async fn on_postgresql_a_bill_and_a_summary_read_as_on_sqlite() -> Result<()> {
    let Some((server, _clock, [alice, bob])) =
        start_on_postgres_with_clock("bills", [("alice", 1_000), ("bob", 0)]).await?
    else {
        return Ok(());
    };
    let api = &server.api;
    let id = api.send_id(&alice, &json!({"kind": "fixed", "total_amount": 200, "count": 1})).await;
    assert_eq!(api.opened(&bob, &id).await, 200);
    api.wait_balance(&bob, 200).await;
    let bill = every_page(api, &alice, "/v1/ledger", 1).await.concat();
    let kinds: Vec<&str> = bill.iter().map(|item| item["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["send", "deposit"]);
    assert_eq!((&bill[0]["balance_after"], &bill[1]["balance_after"]), (&json!(800), &json!(1_000)));
    let bobs = api.get("/v1/ledger", &bob).await.ok(200);
    assert_eq!(bobs["items"][0]["balance_after"], 200);
    let year = 1970 + i64_of(&bill[0]["at"]) / 31_556_952_000;
    let summary = api.get(&format!("/v1/summary?year={year}"), &bob).await.ok(200);
    assert_eq!((&summary["received"]["amount"], &summary["best_luck_count"]), (&json!(200), &json!(1)));
    server.stop_and_audit().await
}
