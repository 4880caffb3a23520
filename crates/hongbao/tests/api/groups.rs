//! Group packets: only the members of the group a packet was sent to may
//! grab, open and read it (its sender may read it); everyone else is 403
//! `not_in_group` on every route, before anything about the packet shows.

use anyhow::Result;
use serde_json::{Value, json};

use crate::helpers::*;

fn family(members: &[&str]) -> Value {
    json!({"id": "family@chat", "members": members})
}

/// Every route of a packet, refused to `token` as not in its group.
async fn refused_everywhere(api: &Api, token: &str, id: &str) {
    api.grab(token, id).await.error(403, "not_in_group");
    api.open(token, id).await.error(403, "not_in_group");
    api.get(&format!("/v1/packets/{id}"), token).await.error(403, "not_in_group");
}

#[tokio::test]
async fn only_members_grab_open_and_read_a_group_packet_and_its_sender_reads_it() -> Result<()> {
    let (server, [alice, bob, carol, dave]) =
        start_with([("alice", 1_000), ("bob", 0), ("carol", 0), ("dave", 0)]).await?;
    let api = &server.api;
    let sent = api
        .send(&alice, &json!({"kind": "lucky", "total_amount": 300, "count": 3, "group": family(&["carol", "bob"])}))
        .await;
    assert_eq!(sent["group"], json!({"id": "family@chat", "member_count": 2}));
    let id = id_of(&sent);

    refused_everywhere(api, &dave, &id).await;
    // The sender is not a member: reads it, cannot open it.
    assert_eq!(api.detail(&alice, &id).await["group"]["id"], "family@chat");
    api.open(&alice, &id).await.error(403, "not_in_group");

    assert_eq!(api.grab_status(&bob, &id).await, "available");
    let bobs = api.opened(&bob, &id).await;
    let carols = api.opened(&carol, &id).await;
    let detail = api.detail(&carol, &id).await;
    assert_eq!(claim_users(&detail), ["bob", "carol"]);
    assert_eq!(detail["remaining_amount"], json!(300 - bobs - carols));
    // Still refused once opened by others, and with an id that is right.
    refused_everywhere(api, &dave, &id).await;
    api.wait_balance(&bob, bobs).await;

    // A packet without a group is as before: anyone with its id.
    let open_to_all = api.send_id(&alice, &json!({"kind": "fixed", "total_amount": 100, "count": 1})).await;
    assert!(api.detail(&dave, &open_to_all).await.get("group").is_none());
    assert_eq!(api.opened(&dave, &open_to_all).await, 100);
    server.stop_and_audit().await
}

#[tokio::test]
async fn a_group_is_checked_when_sent_and_its_members_are_one_key_of_the_request() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 10_000)]).await?;
    let api = &server.api;
    let send = |group: Value| json!({"kind": "lucky", "total_amount": 100, "count": 1, "group": group});
    let too_many: Vec<String> = (0..501).map(|n| format!("m{n}")).collect();
    for bad in [
        json!({"id": "", "members": ["bob"]}),
        json!({"id": "a b", "members": ["bob"]}),
        json!({"id": "g".repeat(65), "members": ["bob"]}),
        json!({"id": "family", "members": []}),
        json!({"id": "family", "members": ["bo b"]}),
        json!({"id": "family", "members": ["bob,carol"]}),
        json!({"id": "family", "members": too_many}),
    ] {
        api.post("/v1/packets", &alice, &send(bad.clone())).await.error(400, "invalid_group");
    }
    for malformed in [
        json!({"id": "family"}),
        json!({"members": ["bob"]}),
        json!("family"),
        json!({"id": "f", "members": ["b"], "x": 1}),
    ] {
        let answer = api.post("/v1/packets", &alice, &send(malformed.clone())).await;
        assert_eq!(answer.status, 400, "{malformed}: {}", answer.body);
    }
    // An exclusive packet in a group is for one of its members.
    let exclusive = |recipient: &str| {
        json!({"kind": "exclusive", "total_amount": 100, "count": 1, "recipient": recipient,
               "group": family(&["bob", "carol"])})
    };
    api.post("/v1/packets", &alice, &exclusive("dave")).await.error(400, "invalid_group");
    api.post("/v1/packets", &alice, &exclusive("bob")).await.ok(201);

    // The members are part of what an Idempotency-Key remembers.
    let first = send(family(&["bob", "carol"]));
    let same_reordered = send(family(&["carol", "bob", "bob"]));
    let other = send(family(&["bob", "dave"]));
    let id = id_of(&api.post_keyed("/v1/packets", &alice, "k1", &first).await.ok(201));
    assert_eq!(id_of(&api.post_keyed("/v1/packets", &alice, "k1", &same_reordered).await.ok(201)), id);
    api.post_keyed("/v1/packets", &alice, "k1", &other).await.error(409, "idempotency_key_reused");
    assert_eq!(api.balance(&alice).await, 10_000 - 200, "a refusal sends nothing");
    server.stop_and_audit().await
}

#[tokio::test]
async fn a_group_of_the_most_members_with_the_longest_names_fits_and_survives_a_restart() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000)]).await?;
    let api = &server.api;
    let names: Vec<String> = (0..500).map(|n| format!("{n:0>64}")).collect();
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    let body = json!({"kind": "lucky", "total_amount": 500, "count": 5, "group": family(&members)});
    assert!(json_bytes(&body).len() > BODY_BYTES_MAX, "a body past the other routes' limit");
    let id = api.send_id(&alice, &body).await;
    let last = api.token(&names[499]).await;
    let outsider = api.token(&format!("{:0>64}", 500)).await;
    let before = api.opened(&last, &id).await;

    let server = server.restart().await?;
    let api = &server.api;
    refused_everywhere(api, &outsider, &id).await;
    assert_eq!(api.opened(&last, &id).await, before, "the same share after the restart");
    let first = api.token(&names[0]).await;
    api.opened(&first, &id).await;
    assert_eq!(api.detail(&alice, &id).await["group"]["member_count"], 500);
    server.stop_and_audit().await
}

#[tokio::test]
async fn on_postgresql_a_group_packet_is_kept_and_guarded_as_on_sqlite() -> Result<()> {
    let Some((server, _clock, [alice, bob, dave])) =
        start_on_postgres_with_clock("groups", [("alice", 1_000), ("bob", 0), ("dave", 0)]).await?
    else {
        return Ok(());
    };
    let api = &server.api;
    let id = api
        .send_id(&alice, &json!({"kind": "fixed", "total_amount": 200, "count": 2, "group": family(&["bob"])}))
        .await;
    refused_everywhere(api, &dave, &id).await;
    assert_eq!(api.opened(&bob, &id).await, 100);
    let server = server.restart().await?;
    let api = &server.api;
    refused_everywhere(api, &dave, &id).await;
    assert_eq!(api.detail(&bob, &id).await["group"], json!({"id": "family@chat", "member_count": 1}));
    server.stop_and_audit().await
}
