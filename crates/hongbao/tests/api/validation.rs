//! Every 400 of a send, a deposit and a token request: each refused with
//! its own code, and none of them charging, depositing or making anything.

use anyhow::Result;
use serde_json::{Value, json};

use crate::helpers::*;

/// Sends that must be refused, each with its code.
fn invalid_sends() -> Vec<(Value, &'static str)> {
    let lucky = |total: Value, count: Value| json!({ "kind": "lucky", "total_amount": total, "count": count });
    let with = |mut spec: Value, field: &str, value: Value| {
        spec[field] = value;
        spec
    };
    let base = lucky(json!(100), json!(2));
    vec![
        (with(base.clone(), "kind", json!("golden")), "invalid_kind"),
        (with(base.clone(), "kind", json!("")), "invalid_kind"),
        (with(base.clone(), "kind", json!("Lucky")), "invalid_kind"),
        (lucky(json!(0), json!(1)), "invalid_amount"),
        (lucky(json!(-5), json!(1)), "invalid_amount"),
        (lucky(json!(20_001), json!(10)), "invalid_amount"),
        (lucky(json!(100), json!(0)), "invalid_count"),
        (lucky(json!(100), json!(-1)), "invalid_count"),
        (lucky(json!(1000), json!(101)), "invalid_count"),
        (json!({ "kind": "exclusive", "total_amount": 100, "count": 2, "recipient": "bob" }), "invalid_count"),
        (json!({ "kind": "fixed", "total_amount": 1001, "count": 10 }), "amount_not_divisible"),
        (lucky(json!(5), json!(10)), "share_too_small"),
        (with(base.clone(), "greeting", json!("恭".repeat(101))), "invalid_greeting"),
        (with(base.clone(), "greeting", json!("bell\u{7}")), "invalid_greeting"),
        (with(base.clone(), "password", json!("")), "invalid_password"),
        (with(base.clone(), "password", json!("p".repeat(65))), "invalid_password"),
        (with(base.clone(), "password", json!("tab\there")), "invalid_password"),
        (json!({ "kind": "exclusive", "total_amount": 100, "count": 1 }), "invalid_recipient"),
        (json!({ "kind": "exclusive", "total_amount": 100, "count": 1, "recipient": "alice" }), "invalid_recipient"),
        (json!({ "kind": "exclusive", "total_amount": 100, "count": 1, "recipient": "a b" }), "invalid_recipient"),
        (with(base.clone(), "recipient", json!("bob")), "invalid_recipient"),
        (json!({ "kind": "fixed", "total_amount": 100, "count": 2, "recipient": "bob" }), "invalid_recipient"),
        (with(base.clone(), "expires_in_s", json!(0)), "invalid_expiry"),
        (with(base.clone(), "expires_in_s", json!(-1)), "invalid_expiry"),
        (with(base.clone(), "expires_in_s", json!(604_801)), "invalid_expiry"),
        (with(base.clone(), "colour", json!("red")), "invalid_json"),
        (with(base.clone(), "sender", json!("bob")), "invalid_json"),
        (json!({ "kind": "lucky", "total_amount": 100 }), "invalid_json"),
        (json!({ "total_amount": 100, "count": 1 }), "invalid_json"),
        (lucky(json!(1.5), json!(1)), "invalid_json"),
        (lucky(json!("100"), json!(1)), "invalid_json"),
        (lucky(json!(100), json!(1.0)), "invalid_json"),
        (lucky(json!(u64::MAX), json!(1)), "invalid_json"),
        (with(base.clone(), "greeting", json!(7)), "invalid_json"),
        (with(base.clone(), "kind", json!(null)), "invalid_json"),
        (json!([]), "invalid_json"),
        (json!(null), "invalid_json"),
        (json!("lucky"), "invalid_json"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_send_is_400_with_its_code_and_charges_nothing() -> Result<()> {
    let (server, [alice, _bob]) = start_with([("alice", 30_000), ("bob", 0)]).await?;
    let api = &server.api;

    for (spec, code) in &invalid_sends() {
        let response = api.post("/v1/packets", &alice, spec).await;
        assert_eq!(response.code(), Some(*code), "{spec} answered {} {}", response.status, response.body);
        response.error(400, code);
    }
    for raw in [&b""[..], b"{", b"{\"kind\":", b"not json", b"{} {}", b"\xff\xfe"] {
        api.post_raw("/v1/packets", &alice, raw).await.error(400, "invalid_json");
    }
    assert_eq!(api.balance(&alice).await, 30_000, "no refused send charges");
    let sent = api.get("/v1/packets/sent", &alice).await.ok(200);
    assert_eq!(sent["items"], json!([]), "no refused send makes a packet");

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_deposit_or_token_request_is_400_with_its_code_and_deposits_nothing() -> Result<()> {
    let (server, [bob]) = start_with([("bob", 0)]).await?;
    let api = &server.api;
    let admin = api.admin.as_str();

    let deposit_cases: Vec<(Value, &str)> = vec![
        (json!({ "user": "bob", "amount": 0 }), "invalid_amount"),
        (json!({ "user": "bob", "amount": -1 }), "invalid_amount"),
        (json!({ "user": "bob", "amount": 1_000_000_001 }), "invalid_amount"),
        (json!({ "user": "bob", "amount": 1.5 }), "invalid_json"),
        (json!({ "user": "bob", "amount": "100" }), "invalid_json"),
        (json!({ "user": "bob" }), "invalid_json"),
        (json!({ "amount": 100 }), "invalid_json"),
        (json!({ "user": "bob", "amount": 100, "note": "x" }), "invalid_json"),
        (json!({ "user": "a b", "amount": 100 }), "invalid_user"),
        (json!({ "user": "", "amount": 100 }), "invalid_user"),
        (json!({ "user": "u".repeat(65), "amount": 100 }), "invalid_user"),
        (json!({ "user": "阿丽", "amount": 100 }), "invalid_user"),
    ];
    for (body, code) in &deposit_cases {
        api.post("/v1/admin/deposits", admin, body).await.error(400, code);
    }
    api.post_raw("/v1/admin/deposits", admin, b"{").await.error(400, "invalid_json");
    assert_eq!(api.balance(&bob).await, 0, "no refused deposit deposits");

    for (body, code) in [
        (json!({ "user": "a b" }), "invalid_user"),
        (json!({ "user": "" }), "invalid_user"),
        (json!({ "user": "ali/ce" }), "invalid_user"),
        (json!({ "user": "bob", "admin": true }), "invalid_json"),
        (json!({}), "invalid_json"),
    ] {
        api.post("/v1/admin/tokens", admin, &body).await.error(400, code);
    }

    server.stop_and_audit().await
}
