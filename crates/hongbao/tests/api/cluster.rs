//! Several nodes on one PostgreSQL data set: each holds a share of the sets
//! by lease, any node answers any request (forwarding it to the set's
//! holder), credits cross nodes, and a node that stops hands its sets over.
//! The nodes run in this process (the real binary's kills and pauses are in
//! `cluster_binary.rs`). Run when `HONGBAO_TEST_PG` names a server.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hongbao::cluster::ClusterOptions;
use hongbao_domain::SetId;
use serde_json::{Value, json};

use crate::helpers::*;

/// A node of the test's cluster.
struct Node {
    running: hongbao::Running,
    api: Api,
}

fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts node `name` on `<root>/<name>`, sharing the first node's keys.
async fn start_node(root: &Path, name: &str, url: &str, admin: Option<&str>) -> Result<Node> {
    let data = root.join(name);
    if admin.is_some() {
        std::fs::create_dir_all(&data)?;
        std::fs::copy(root.join("a").join("keys.json"), data.join("keys.json")).context("sharing the keys")?;
    }
    let addr = free_port()?;
    let mut options = hongbao::ServeOptions::new(data, addr);
    options.store = hongbao::StoreChoice::Postgres(hongbao_store_pg::SetMap::single(url));
    options.sets = Some(6);
    options.cluster = Some(ClusterOptions {
        node_id: name.to_owned(),
        advertise: addr.to_string(),
        lease: Duration::from_millis(1000),
    });
    let running = hongbao::start(options).await?;
    let admin = admin.map(str::to_owned).or_else(|| running.admin_token.clone()).expect("the first node's admin token");
    Ok(Node { api: Api { addr: running.addr, admin }, running })
}

/// Waits until the nodes hold every set between them, each some.
async fn shared_out(nodes: &[&Node]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let held: Vec<Vec<SetId>> = nodes.iter().map(|node| node.running.engine.held_sets()).collect();
        if held.iter().map(Vec::len).sum::<usize>() == 6 && held.iter().all(|sets| !sets.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "the sets were not shared out: {held:?}");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A freeze holds across nodes: a frozen user whose set one node holds is
/// refused an open judged by the other (the packet's set's holder), once
/// the keepers' next tick has read it.
async fn a_freeze_holds_across_nodes(a: &Node, b: &Node, alice: &str) -> Result<()> {
    let packet = id_of(&a.api.send(alice, &json!({ "kind": "fixed", "total_amount": 100, "count": 1 })).await);
    let packet_set: u16 = packet.split('-').nth(1).unwrap().parse()?;
    let packet_holder_is_a = a.running.engine.held_sets().contains(&SetId(packet_set));
    let other = if packet_holder_is_a { b } else { a };
    let held_by_other = other.running.engine.held_sets();
    let name = (0..100)
        .map(|n| format!("frozen{n}"))
        .find(|name| held_by_other.contains(&SetId::of_user(&hongbao_domain::UserId::parse(name).unwrap(), 6)))
        .expect("a user of the other node's sets");
    let frozen = a.api.token(&name).await;
    let path = format!("/v1/admin/accounts/{name}/freeze");
    a.api.post(&path, &a.api.admin, &json!({})).await.ok(200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for node in [a, b] {
        node.api.open(&frozen, &packet).await.error(403, "account_frozen");
    }
    let path = format!("/v1/admin/accounts/{name}/unfreeze");
    b.api.post(&path, &b.api.admin, &json!({})).await.ok(200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.api.opened(&frozen, &packet).await, 100, "unfrozen everywhere");

    Ok(())
}

fn owners(status: &Value) -> Vec<Option<String>> {
    let sets = status["sets"].as_array().expect("sets");
    sets.iter().map(|set| set["owner"].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_the_sets_answer_any_request_and_hand_their_sets_over_when_they_stop() -> Result<()> {
    let made = tokio::task::spawn_blocking(|| hongbao_store_pg::testing::TestDatabase::create("cluster_nodes")).await?;
    let Some(database) = made else { return Ok(()) };
    let root = tempfile::tempdir()?;
    let a = start_node(root.path(), "a", &database.url(), None).await?;
    let b = start_node(root.path(), "b", &database.url(), Some(&a.api.admin)).await?;
    shared_out(&[&a, &b]).await;

    // Users made through a, their packet sent through b, opened through both.
    let [alice, bob, carol] = a.api.users([("alice", 10_000), ("bob", 0), ("carol", 0)]).await;
    let spec = json!({ "kind": "lucky", "total_amount": 1000, "count": 3 });
    let id = id_of(&b.api.send(&alice, &spec).await);
    let bob_share = a.api.opened(&bob, &id).await;
    let carol_share = b.api.opened(&carol, &id).await;
    assert_eq!(b.api.opened(&bob, &id).await, bob_share, "a repeat open through the other node answers the same share");
    // Credits reach the openers' sets whichever node holds them.
    for api in [&a.api, &b.api] {
        api.wait_balance(&bob, bob_share).await;
        api.wait_balance(&carol, carol_share).await;
        api.wait_balance(&alice, 9_000).await;
    }
    assert_eq!(a.api.detail(&carol, &id).await, b.api.detail(&bob, &id).await, "one packet, whoever reads it");
    let received = b.api.get("/v1/packets/received", &carol).await.ok(200);
    assert_eq!(received["items"][0]["packet_id"], id.as_str());

    // The cluster as either node sees it: both live, every set owned.
    let status = a.api.get("/v1/admin/cluster", &a.api.admin).await.ok(200);
    assert_eq!(status["node_id"], "a");
    assert_eq!(status["fenced_writes"], 0);
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{status}");
    assert!(nodes.iter().all(|node| node["live"] == true), "{status}");
    let held: usize = nodes.iter().map(|node| node["sets"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(held, 6, "{status}");
    assert!(owners(&status).iter().all(|owner| owner.is_some()), "{status}");
    b.api.get("/v1/admin/cluster", &bob).await.error(403, "admin_only");

    a_freeze_holds_across_nodes(&a, &b, &alice).await?;

    // Mail between nodes takes a peer token: neither none nor a user's.
    let mail = json!({ "mail": [{ "set": 0, "kind": "ack", "reference": "claim:x:y" }] });
    a.api.request("POST", "/v1/internal/mail", None, &[], Some(json_bytes(&mail))).await.error(401, "invalid_peer");
    let headers = [("x-hongbao-peer", alice.as_str())];
    a.api
        .request("POST", "/v1/internal/mail", None, &headers, Some(json_bytes(&mail)))
        .await
        .error(401, "invalid_peer");

    // a stops: its sets are drained, handed over, and b serves everything.
    let a_sets = a.running.engine.held_sets();
    a.running.stop().await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.running.engine.held_sets().len() < 6 {
        assert!(Instant::now() < deadline, "b did not take a's sets {a_sets:?}");
        tokio::time::sleep(POLL_EVERY).await;
    }
    b.api.wait_balance(&bob, bob_share).await;
    let dave = b.api.token("dave").await;
    assert_eq!(b.api.opened(&dave, &id).await, 1000 - bob_share - carol_share, "the last share");
    b.api.wait_balance(&dave, 1000 - bob_share - carol_share).await;

    let path = b.running.data.path.clone();
    b.running.stop().await?;
    let store = hongbao::StoreChoice::Postgres(hongbao_store_pg::SetMap::single(database.url()));
    let report =
        tokio::task::spawn_blocking(move || hongbao::audit_data(&path, &store, hongbao::ColdDays::Rows)).await??;
    assert!(report.ok(), "{report}");
    Ok(())
}
