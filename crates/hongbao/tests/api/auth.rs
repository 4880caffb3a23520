//! Authentication: who may call what, and that a token is refused whole
//! when any signed part of it was changed.

use anyhow::Result;
use serde_json::{Value, json};

use crate::helpers::*;

/// `token` with its user part replaced and its signature kept.
fn with_user(token: &str, user: &str) -> String {
    TokenParts { user, ..TokenParts::of(token) }.token()
}

/// `token` with its expiry one millisecond later and its signature kept.
fn with_later_expiry(token: &str) -> String {
    let parts = TokenParts::of(token);
    TokenParts { expires_at: parts.expires_at + 1, ..parts }.token()
}

/// A token for `user` from another data directory (signed with another
/// secret).
async fn foreign_token(user: &str) -> Result<String> {
    let other = start().await?;
    let token = other.api.token(user).await;
    other.stop_and_audit().await?;
    Ok(token)
}

/// Every user route, with a body where it takes one.
fn user_routes(id: &str) -> [(&'static str, String, Option<Value>); 7] {
    [
        ("GET", "/v1/account".to_owned(), None),
        ("POST", "/v1/packets".to_owned(), Some(json!({ "kind": "lucky", "total_amount": 100, "count": 1 }))),
        ("GET", "/v1/packets/sent".to_owned(), None),
        ("GET", "/v1/packets/received".to_owned(), None),
        ("GET", format!("/v1/packets/{id}"), None),
        ("POST", format!("/v1/packets/{id}/grab"), None),
        ("POST", format!("/v1/packets/{id}/open"), None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_missing_bad_and_foreign_tokens_and_changes_nothing() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 5_000), ("bob", 0)]).await?;
    let api = &server.api;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 2 })).await;

    let foreign = foreign_token("alice").await?;
    assert_ne!(foreign, alice);
    // Alice's real token with bob's name in it, and with a later expiry:
    // well formed, from a key of this server, refused for the signature.
    let forged = with_user(&alice, "bob");
    assert_eq!(forged, alice.replacen(".alice.", ".bob.", 1));
    assert_eq!(user_of(&forged), "bob");
    let extended = with_later_expiry(&alice);
    assert_ne!(extended, alice);
    let bad_headers: Vec<String> = vec![
        "Bearer alice.AAAA".to_owned(),
        format!("Bearer {forged}"),
        format!("Bearer {extended}"),
        format!("Bearer {foreign}"),
        format!("Bearer {}", server.api.admin),
        format!("Bearer {alice}x"),
        "Bearer alice".to_owned(),
        "Bearer ".to_owned(),
        "Bearer".to_owned(),
        format!("Basic {alice}"),
        alice.clone(),
    ];
    for (method, path, body) in &user_routes(&id) {
        let body = body.as_ref().map(json_bytes);
        api.request(method, path, None, &[], body.clone()).await.error(401, "missing_token");
        for header in &bad_headers {
            let response = api.request(method, path, None, &[("authorization", header.as_str())], body.clone()).await;
            response.error(401, "invalid_token");
        }
    }

    // Admin routes: no token, a bad token, a user token.
    let admin_routes = [
        ("/v1/admin/tokens", json!({ "user": "mallory" })),
        ("/v1/admin/deposits", json!({ "user": "bob", "amount": 100 })),
    ];
    for (path, body) in &admin_routes {
        let body = json_bytes(body);
        api.request("POST", path, None, &[], Some(body.clone())).await.error(401, "missing_token");
        for header in ["Bearer admin.nope", "Bearer alice.AAAA", "Basic x"] {
            api.request("POST", path, None, &[("authorization", header)], Some(body.clone()))
                .await
                .error(401, "invalid_token");
        }
        for token in [&alice, &bob] {
            api.request("POST", path, Some(token), &[], Some(body.clone())).await.error(403, "admin_only");
        }
        for token in [&forged, &extended] {
            api.request("POST", path, Some(token), &[], Some(body.clone())).await.error(401, "invalid_token");
        }
    }
    assert_eq!(api.balance(&bob).await, 0, "a refused deposit deposits nothing");

    // Nothing above changed anything.
    assert_eq!(api.balance(&alice).await, 4_900);
    let detail = api.detail(&bob, &id).await;
    assert_eq!(detail["claims"], json!([]), "{detail}");
    assert_eq!(detail["remaining_count"], 2);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_is_always_the_tokens_user_never_a_field_of_the_body() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 5_000), ("bob", 0)]).await?;
    let api = &server.api;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 2 })).await;

    api.post("/v1/packets", &bob, &json!({ "kind": "lucky", "total_amount": 100, "count": 1, "sender": "alice" }))
        .await
        .error(400, "invalid_json");
    assert_eq!(api.balance(&alice).await, 4_900);
    let packet = api.send(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await;
    assert_eq!(packet["sender"], "alice");
    let bob_share = api.opened(&bob, &id).await;
    let detail = api.detail(&alice, &id).await;
    assert_eq!(detail["claims"][0]["user"], "bob", "{detail}");
    api.wait_balance(&bob, bob_share).await;
    assert_eq!(api.balance(&alice).await, 4_800);
    // Each user's lists are their own.
    let sent = api.get("/v1/packets/sent", &bob).await.ok(200);
    assert_eq!(sent["items"], json!([]), "{sent}");

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotted_user_name_verifies_and_its_user_part_swapped_inside_a_signed_token_is_refused() -> Result<()> {
    let (server, [alice, dotted]) = start_with([("alice", 0), ("first.last", 0)]).await?;
    let api = &server.api;
    // User names may hold dots; the signature is after the last one.
    assert_eq!(user_of(&dotted), "first.last");
    assert_eq!(api.balance(&dotted).await, 0);
    for forged in [
        with_user(&dotted, "first"),
        with_user(&dotted, "last"),
        with_user(&dotted, "first.last.x"),
        with_user(&alice, "first.last"),
        with_user(&dotted, "alice"),
    ] {
        api.request("GET", "/v1/account", Some(&forged), &[], None).await.error(401, "invalid_token");
    }

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_admin_token_is_accepted_with_any_case_of_the_bearer_scheme() -> Result<()> {
    let (server, _) = start_with([("bob", 700)]).await?;
    let api = &server.api;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let header = format!("{scheme} {}", api.admin);
        let body = api
            .request(
                "POST",
                "/v1/admin/tokens",
                None,
                &[("authorization", header.as_str())],
                Some(json_bytes(&json!({ "user": "bob" }))),
            )
            .await
            .ok(200);
        let token = body["token"].as_str().expect("a token");
        assert_eq!(api.balance(token).await, 700, "{scheme}: a token for bob, who was deposited 700");
    }

    server.stop_and_audit().await
}
