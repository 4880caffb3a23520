//! The rules of opening and grabbing: unknown ids, exclusive packets,
//! passwords, fixed shares and best luck.

use anyhow::Result;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_altered_ids_are_404_on_open_grab_and_detail_and_open_nothing() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 10_000), ("bob", 0)]).await?;
    let api = &server.api;

    // Ids that name no packet, malformed or not.
    let real = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await;
    let nonce = real.rsplit('-').next().expect("a nonce");
    let other_nonce = format!("{:016x}", u64::from_str_radix(nonce, 16).expect("a hex nonce") ^ 1);
    let set: u16 = real.split('-').nth(1).expect("a set").parse()?;
    let other_set = ((set + 1) % hongbao::SETS_DEFAULT).to_string();
    let unknown = [
        "nope".to_owned(),
        "0".to_owned(),
        "20270128-0-1-zzzzzzzz".to_owned(),
        format!("{real}-1"),
        format!("{real}x"),
        altered_id(&real, 3, &other_nonce),
        altered_id(&real, 2, "999999"),
        altered_id(&real, 1, "999"),
        altered_id(&real, 1, &other_set),
        altered_id(&real, 0, "20000101"),
        altered_id(&real, 3, "ABCDEF12"),
        altered_id(&real, 3, &nonce[..8]),
    ];
    for id in &unknown {
        api.open(&bob, id).await.error(404, "packet_not_found");
        api.grab(&bob, id).await.error(404, "packet_not_found");
        api.get(&format!("/v1/packets/{id}"), &bob).await.error(404, "packet_not_found");
    }
    assert_eq!(api.detail(&bob, &real).await["remaining_count"], 1, "nothing was opened by the unknown ids");
    assert_eq!(api.balance(&alice).await, 10_000 - 100);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_packet_grabs_and_opens_only_for_its_recipient() -> Result<()> {
    let (server, [alice, bob, carol]) = start_with([("alice", 10_000), ("bob", 0), ("carol", 0)]).await?;
    let api = &server.api;

    let exclusive =
        api.send(&alice, &json!({ "kind": "exclusive", "total_amount": 888, "count": 1, "recipient": "bob" })).await;
    assert_eq!(exclusive["recipient"], "bob");
    let id = id_of(&exclusive);
    for token in [&carol, &alice] {
        api.grab(token, &id).await.error(403, "not_recipient");
        api.open(token, &id).await.error(403, "not_recipient");
    }
    assert_eq!(api.grab_status(&bob, &id).await, "available");
    assert_eq!(api.opened(&bob, &id).await, 888);
    assert_eq!(api.opened(&bob, &id).await, 888);
    assert_eq!(api.grab_status(&bob, &id).await, "opened");
    api.open(&carol, &id).await.error(403, "not_recipient");
    let detail = api.detail(&carol, &id).await;
    assert_eq!(detail["kind"], "exclusive");
    assert_eq!(detail["status"], "empty");
    // The claim's time lies within the packet's life.
    let at = i64_of(&detail["claims"][0]["at"]);
    let (created_at, expires_at) = (i64_of(&exclusive["created_at"]), i64_of(&exclusive["expires_at"]));
    assert!((created_at..expires_at).contains(&at), "{at} outside [{created_at}, {expires_at}): {detail}");
    assert_eq!(detail["claims"], json!([{ "user": "bob", "amount": 888, "at": at }]));
    assert_eq!(detail["best_luck"], detail["claims"][0]);

    api.wait_balance(&bob, 888).await;
    assert_eq!(api.balance(&alice).await, 10_000 - 888);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_packet_opens_only_with_its_exact_password_checked_before_whether_any_is_left() -> Result<()> {
    let (server, [alice, bob, carol, dave]) =
        start_with([("alice", 10_000), ("bob", 0), ("carol", 0), ("dave", 0)]).await?;
    let api = &server.api;

    // Password: wrong or missing is 403 until the right one.
    let password = "芝麻开门";
    let locked =
        api.send(&alice, &json!({ "kind": "lucky", "total_amount": 300, "count": 2, "password": password })).await;
    assert!(locked.get("password").is_none(), "{locked}");
    let id = id_of(&locked);
    let detail = api.detail(&bob, &id).await;
    assert_eq!(detail["has_password"], true);
    assert!(detail.get("password").is_none(), "{detail}");
    api.open(&bob, &id).await.error(403, "wrong_password");
    for body in [
        json!({}),
        json!({ "password": null }),
        json!({ "password": "" }),
        json!({ "password": "芝麻" }),
        json!({ "password": format!("{password} ") }),
    ] {
        api.open_with(&bob, &id, &body).await.error(403, "wrong_password");
    }
    api.open_with(&bob, &id, &json!({ "password": password, "extra": 1 })).await.error(400, "invalid_json");
    api.post_raw(&format!("/v1/packets/{id}/open"), &bob, b"{").await.error(400, "invalid_json");
    api.open_with(&bob, &id, &json!({ "password": 1234 })).await.error(400, "invalid_json");
    assert_eq!(api.grab_status(&bob, &id).await, "available");
    let bob_share = share_of(api.open_with(&bob, &id, &json!({ "password": password })).await.ok(200));
    assert_eq!(api.opened(&bob, &id).await, bob_share, "a repeat open needs no password");
    let carol_share = share_of(api.open_with(&carol, &id, &json!({ "password": password })).await.ok(200));
    assert_eq!(bob_share + carol_share, 300);
    // The password is checked before whether anything is left.
    api.open_with(&dave, &id, &json!({ "password": "nope" })).await.error(403, "wrong_password");
    api.open_with(&dave, &id, &json!({ "password": password })).await.error(409, "packet_empty");

    api.wait_balance(&bob, bob_share).await;
    api.wait_balance(&carol, carol_share).await;
    assert_eq!(api.balance(&alice).await, 10_000 - 300);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_shares_are_even_and_best_luck_ties_go_to_the_earliest() -> Result<()> {
    let (server, [alice, bob, carol, dave, erin]) =
        start_with([("alice", 10_000), ("bob", 0), ("carol", 0), ("dave", 0), ("erin", 0)]).await?;
    let api = &server.api;

    let id = api.send_id(&alice, &json!({ "kind": "fixed", "total_amount": 1000, "count": 4 })).await;
    for token in [&carol, &bob, &dave, &erin] {
        assert_eq!(api.opened(token, &id).await, 250);
    }
    api.open(&alice, &id).await.error(409, "packet_empty");
    assert_eq!(api.grab_status(&alice, &id).await, "empty");
    let detail = api.detail(&alice, &id).await;
    assert_eq!(detail["kind"], "fixed");
    assert_eq!(detail["best_luck"], detail["claims"][0]);
    assert_eq!(detail["best_luck"]["user"], "carol");

    for token in [&carol, &bob, &dave, &erin] {
        api.wait_balance(token, 250).await;
    }
    assert_eq!(api.balance(&alice).await, 10_000 - 1000);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_luck_is_set_only_once_every_share_is_opened() -> Result<()> {
    let (server, [alice, erin]) = start_with([("alice", 10_000), ("erin", 0)]).await?;
    let api = &server.api;

    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 500, "count": 3 })).await;
    let share = api.opened(&erin, &id).await;
    let detail = api.detail(&alice, &id).await;
    assert_eq!(detail["status"], "available");
    assert_eq!(detail["best_luck"], Value::Null);
    assert_eq!(detail["remaining_count"], 2);
    assert_eq!(u64_of(&detail["remaining_amount"]), 500 - share);

    api.wait_balance(&erin, share).await;
    assert_eq!(api.balance(&alice).await, 10_000 - 500);

    server.stop_and_audit().await
}
