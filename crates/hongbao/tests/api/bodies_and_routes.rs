//! Requests as HTTP: body sizes and content types, unknown routes and
//! wrong methods.

use anyhow::Result;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_their_routes_limit_are_413_and_change_nothing_and_the_limit_exactly_is_accepted() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000)]).await?;
    let api = &server.api;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await;

    // Bodies over 16 KiB (a send's: room for a 500-member group) are
    // refused before they are read.
    let too_big = |prefix: &str, limit: usize| {
        let mut body = format!("{prefix}\"");
        body.push_str(&"a".repeat(limit));
        body.push_str("\"}");
        body.into_bytes()
    };
    let send = r#"{"kind":"lucky","total_amount":100,"count":1,"greeting":"#;
    api.post_raw("/v1/packets", &alice, &too_big(send, SEND_BODY_BYTES_MAX)).await.error(413, "body_too_large");
    api.post_raw("/v1/admin/deposits", &api.admin, &too_big(r#"{"amount":100,"user":"#, BODY_BYTES_MAX))
        .await
        .error(413, "body_too_large");
    api.post_raw(&format!("/v1/packets/{id}/open"), &alice, &too_big(r#"{"password":"#, BODY_BYTES_MAX))
        .await
        .error(413, "body_too_large");
    assert_eq!(api.balance(&alice).await, 900, "nothing was sent or deposited");
    assert_eq!(api.detail(&alice, &id).await["remaining_count"], 1);

    // Exactly the limit is still accepted; one byte more is not.
    let padded = |len: usize| {
        let mut body = br#"{"kind":"lucky","total_amount":100,"count":1}"#.to_vec();
        body.resize(len, b' ');
        body
    };
    api.post_raw("/v1/packets", &alice, &padded(SEND_BODY_BYTES_MAX + 1)).await.error(413, "body_too_large");
    api.post_raw("/v1/packets", &alice, &padded(SEND_BODY_BYTES_MAX)).await.ok(201);
    assert_eq!(api.balance(&alice).await, 800);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_json_whatever_the_content_type_says_and_an_opens_body_may_be_blank() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 1_000), ("bob", 0)]).await?;
    let api = &server.api;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await;

    let body = json_bytes(&json!({ "kind": "lucky", "total_amount": 100, "count": 1 }));
    let plain =
        api.request("POST", "/v1/packets", Some(&alice), &[("content-type", "text/plain")], Some(body)).await.ok(201);
    assert_eq!(plain["total_amount"], 100);
    let opened = api.post_raw(&format!("/v1/packets/{id}/open"), &bob, b" \n ").await.ok(200);
    assert_eq!(share_of(opened), 100);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_and_known_routes_answer_a_wrong_method_405_before_authentication() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000)]).await?;
    let api = &server.api;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await;

    for path in [
        "/",
        "/nope",
        "/v1",
        "/v1/nope",
        "/v2/account",
        "/v1/packets/x/y",
        "/v1/packets/x/grab/more",
        "/v1/admin",
        "/v1/account/",
        "/V1/account",
    ] {
        for method in ["GET", "POST"] {
            api.request(method, path, Some(&alice), &[], None).await.error(404, "not_found");
        }
    }
    let wrong_methods = [
        ("POST", "/healthz".to_owned()),
        ("GET", "/v1/admin/tokens".to_owned()),
        ("PUT", "/v1/admin/deposits".to_owned()),
        ("POST", "/v1/account".to_owned()),
        ("DELETE", "/v1/account".to_owned()),
        ("GET", "/v1/packets".to_owned()),
        ("POST", "/v1/packets/sent".to_owned()),
        ("DELETE", "/v1/packets/received".to_owned()),
        ("DELETE", format!("/v1/packets/{id}")),
        ("POST", format!("/v1/packets/{id}")),
        ("GET", format!("/v1/packets/{id}/open")),
        ("GET", format!("/v1/packets/{id}/grab")),
    ];
    for (method, path) in &wrong_methods {
        for token in [Some(alice.as_str()), None] {
            api.request(method, path, token, &[], None).await.error(405, "method_not_allowed");
        }
    }

    server.stop_and_audit().await
}
