//! Opens at once over HTTP: many users racing for one packet's shares, and
//! one user opening one packet many times.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::*;

/// Tokens for `users` new users, `user000` on, fetched at once: (user, token).
async fn many_users(api: &Api, users: usize) -> Vec<(String, String)> {
    let mut tasks = JoinSet::new();
    for n in 0..users {
        let api = api.clone();
        tasks.spawn(async move {
            let user = format!("user{n:03}");
            let token = api.token(&user).await;
            (user, token)
        });
    }
    tasks.join_all().await
}

/// Every user opens packet `id` at the same moment: (user, token, answer).
async fn open_at_once(api: &Api, id: &str, users: Vec<(String, String)>) -> Vec<(String, String, Response)> {
    let start_line = Arc::new(tokio::sync::Barrier::new(users.len()));
    let mut tasks = JoinSet::new();
    for (user, token) in users {
        let api = api.clone();
        let id = id.to_owned();
        let start_line = start_line.clone();
        tasks.spawn(async move {
            start_line.wait().await;
            let response = api.open(&token, &id).await;
            (user, token, response)
        });
    }
    tasks.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_yield_exactly_count_winners_summing_to_the_total() -> Result<()> {
    const USERS: usize = 200;
    const SHARES: usize = 50;
    const TOTAL: u64 = 5_000;

    let (server, [alice]) = start_with([("alice", TOTAL)]).await?;
    let api = &server.api;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": TOTAL, "count": SHARES })).await;
    assert_eq!(api.balance(&alice).await, 0);

    let users = many_users(api, USERS).await;
    let mut winners = HashMap::new();
    let mut losers = Vec::new();
    for (user, token, response) in open_at_once(api, &id, users).await {
        if response.status == 200 {
            winners.insert(user, (token, share_of(response.body)));
        } else {
            response.error(409, "packet_empty");
            losers.push(token);
        }
    }
    assert_eq!(winners.len(), SHARES);
    assert_eq!(losers.len(), USERS - SHARES);
    let sum: u64 = winners.values().map(|(_, share)| share).sum();
    assert_eq!(sum, TOTAL);

    let detail = api.detail(&alice, &id).await;
    assert_eq!(detail["status"], "empty");
    assert_eq!(detail["remaining_amount"], 0);
    let claims = detail["claims"].as_array().expect("claims");
    assert_eq!(claims.len(), SHARES);
    for claim in claims {
        let user = claim["user"].as_str().expect("a user");
        let (_, share) = winners.get(user).unwrap_or_else(|| panic!("{user} has a claim but was not answered 200"));
        assert_eq!(u64_of(&claim["amount"]), *share, "{user}");
    }
    let amounts: Vec<u64> = claims.iter().map(|claim| u64_of(&claim["amount"])).collect();
    let best = (0..amounts.len()).min_by_key(|&i| (Reverse(amounts[i]), i)).expect("claims");
    assert_eq!(detail["best_luck"], claims[best]);

    for (token, share) in winners.values() {
        api.wait_balance(token, *share).await;
        assert_eq!(api.opened(token, &id).await, *share, "a repeat open");
    }
    for token in &losers {
        assert_eq!(api.balance(token).await, 0);
        assert_eq!(api.grab_status(token, &id).await, "empty");
    }

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_opening_one_packet_twenty_times_at_once_gets_one_share() -> Result<()> {
    let (server, [alice, twin]) = start_with([("alice", 300), ("twin", 0)]).await?;
    let api = &server.api;

    // The opens past the user's writes in flight are refused 429, unapplied.
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 300, "count": 3 })).await;
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let api = api.clone();
        let (id, twin) = (id.clone(), twin.clone());
        tasks.spawn(async move {
            let answer = api.open(&twin, &id).await;
            if answer.status == 429 {
                answer.error(429, "too_many_requests");
                None
            } else {
                Some(share_of(answer.ok(200)))
            }
        });
    }
    let answers = tasks.join_all().await;
    let shares: Vec<u64> = answers.iter().flatten().copied().collect();
    assert!(!shares.is_empty() && shares.iter().all(|share| *share == shares[0]), "{answers:?}");
    let detail = api.detail(&twin, &id).await;
    assert_eq!(detail["claims"].as_array().map(Vec::len), Some(1), "{detail}");
    assert_eq!(detail["remaining_count"], 2);
    api.wait_balance(&twin, shares[0]).await;

    server.stop_and_audit().await
}
