//! The HTTP API end to end: a real server on a loopback port, driven by a
//! small hyper client (one connection per request), with the data directory
//! audited once the server has stopped.
//!
//! Nothing here waits a fixed time: whatever arrives asynchronously (credits
//! to another set, expiry, refunds) is polled for with a bound.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::too_many_lines)] // until this file is split by concern (issue 14)

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, RETRY_AFTER};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How long anything asynchronous may take before a test gives up.
const POLL_BOUND: Duration = Duration::from_secs(5);
/// How often a test looks again.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// The API's body limit, in bytes.
const BODY_BYTES_MAX: usize = 16 * 1024;

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// One HTTP answer, with what was asked for failure messages.
struct Response {
    what: String,
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Response {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// The body of an answer that must have `status`.
    #[track_caller]
    fn ok(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.what, self.body);
        self.body
    }

    /// Asserts an error answer: the status, the code, and the error shape
    /// `{"error":{"code","message"}}` with nothing else in it.
    #[track_caller]
    fn error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, Some(code)), "{}: {}", self.what, self.body);
        let outer = self.body.as_object().expect("an error body is an object");
        assert_eq!(outer.len(), 1, "{}: {}", self.what, self.body);
        let inner = self.body["error"].as_object().expect("error is an object");
        assert_eq!(inner.len(), 2, "{}: {}", self.what, self.body);
        assert!(
            self.body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()),
            "{}: an error needs a message: {}",
            self.what,
            self.body
        );
    }
}

#[derive(Clone)]
struct Api {
    addr: SocketAddr,
    admin: String,
}

impl Api {
    /// Sends one request on a new connection. `token` becomes
    /// `Authorization: Bearer <token>`; `headers` are added as given.
    async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response {
        let what = format!("{method} {path}");
        let stream = TcpStream::connect(self.addr).await.unwrap_or_else(|e| panic!("{what}: connecting: {e}"));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap_or_else(|e| panic!("{what}: handshake: {e}"));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder().method(method).uri(path).header(HOST, self.addr.to_string());
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let typed = headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE.as_str()));
        if body.is_some() && !typed {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap_or_else(|e| panic!("{what}: building the request: {e}"));
        let response = sender.send_request(request).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes =
            response.into_body().collect().await.unwrap_or_else(|e| panic!("{what}: reading the body: {e}")).to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{what}: {status} with a body that is not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes))
            })
        };
        Response { what, status, headers, body }
    }

    async fn get(&self, path: &str, token: &str) -> Response {
        self.request("GET", path, Some(token), &[], None).await
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request("POST", path, Some(token), &[], Some(json_bytes(body))).await
    }

    async fn post_raw(&self, path: &str, token: &str, body: &[u8]) -> Response {
        self.request("POST", path, Some(token), &[], Some(body.to_vec())).await
    }

    async fn post_keyed(&self, path: &str, token: &str, key: &str, body: &Value) -> Response {
        self.request("POST", path, Some(token), &[("idempotency-key", key)], Some(json_bytes(body))).await
    }

    /// A user token from the admin route.
    async fn token(&self, user: &str) -> String {
        let body = self.post("/v1/admin/tokens", &self.admin, &json!({ "user": user })).await.ok(200);
        assert_eq!(body["user"], user, "{body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// Deposits `amount` for `user`; answers the new balance.
    async fn deposit(&self, user: &str, amount: u64) -> u64 {
        let body =
            self.post("/v1/admin/deposits", &self.admin, &json!({ "user": user, "amount": amount })).await.ok(200);
        assert_eq!(body["user"], user, "{body}");
        body["balance"].as_u64().expect("a balance")
    }

    async fn balance(&self, token: &str) -> u64 {
        let body = self.get("/v1/account", token).await.ok(200);
        assert_eq!(body["user"], user_of(token), "the caller is the token's user");
        body["balance"].as_u64().expect("a balance")
    }

    /// Polls the caller's balance until it is `expected` (credits to another
    /// set arrive asynchronously).
    async fn wait_balance(&self, token: &str, expected: u64) {
        let deadline = Instant::now() + POLL_BOUND;
        loop {
            let balance = self.balance(token).await;
            if balance == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s balance is {balance}, not {expected}, after {POLL_BOUND:?}",
                user_of(token)
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Sends a packet that must be accepted; answers the packet.
    async fn send(&self, token: &str, spec: &Value) -> Value {
        self.post("/v1/packets", token, spec).await.ok(201)
    }

    /// Sends a packet that must be accepted; answers its id.
    async fn send_id(&self, token: &str, spec: &Value) -> String {
        id_of(&self.send(token, spec).await)
    }

    async fn open(&self, token: &str, id: &str) -> Response {
        let path = format!("/v1/packets/{id}/open");
        self.request("POST", &path, Some(token), &[], None).await
    }

    async fn open_with(&self, token: &str, id: &str, body: &Value) -> Response {
        self.post(&format!("/v1/packets/{id}/open"), token, body).await
    }

    /// Opens a packet that must open; answers the share.
    async fn opened(&self, token: &str, id: &str) -> u64 {
        share_of(self.open(token, id).await.ok(200))
    }

    async fn grab(&self, token: &str, id: &str) -> Response {
        let path = format!("/v1/packets/{id}/grab");
        self.request("POST", &path, Some(token), &[], None).await
    }

    /// The status a grab answers (it must answer 200).
    async fn grab_status(&self, token: &str, id: &str) -> String {
        let body = self.grab(token, id).await.ok(200);
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        body["status"].as_str().expect("a status").to_owned()
    }

    async fn detail(&self, token: &str, id: &str) -> Value {
        self.get(&format!("/v1/packets/{id}"), token).await.ok(200)
    }

    /// Every item of a list, page by page with `limit`, checking each page's
    /// shape; answers the pages.
    async fn pages(&self, token: &str, list: &str, limit: usize) -> Vec<Vec<Value>> {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/packets/{list}?limit={limit}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let body = self.get(&path, token).await.ok(200);
            let items = body["items"].as_array().expect("items").clone();
            assert!(items.len() <= limit, "{path}: {body}");
            pages.push(items);
            match &body["next_cursor"] {
                Value::Null => return pages,
                Value::String(next) => cursor = Some(next.clone()),
                other => panic!("{path}: next_cursor {other}"),
            }
            assert!(pages.len() <= 100, "{list} never ends");
        }
    }
}

fn json_bytes(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).expect("JSON")
}

/// The user a token names (`<user>.<signature>`).
/// The user a token names: `hb2.<key>.<expires at>.<user>.<signature>`.
fn user_of(token: &str) -> &str {
    let (signed, _) = token.rsplit_once('.').expect("a signed token");
    signed.splitn(4, '.').nth(3).expect("a user in the token")
}

fn id_of(packet: &Value) -> String {
    packet["id"].as_str().expect("a packet id").to_owned()
}

fn share_of(opened: Value) -> u64 {
    assert_eq!(opened["status"], "opened", "{opened}");
    assert_eq!(opened.as_object().map(|o| o.len()), Some(2), "{opened}");
    let amount = opened["amount"].as_u64().expect("an amount");
    assert!(amount >= 1, "a share holds at least 1 fen: {opened}");
    amount
}

fn u64_of(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("{value} is not a u64"))
}

/// A well-formed id that names no packet: `id` with one part changed.
fn altered_id(id: &str, part: usize, replacement: &str) -> String {
    let mut parts: Vec<String> = id.split('-').map(str::to_owned).collect();
    assert_eq!(parts.len(), 4, "ids are day-set-seq-nonce: {id}");
    parts[part] = replacement.to_owned();
    parts.join("-")
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

struct Server {
    dir: TempDir,
    running: hongbao::Running,
    api: Api,
}

async fn start() -> Result<Server> {
    start_in(tempfile::tempdir()?).await
}

/// Starts a server on `<dir>/data`, new or not.
async fn start_in(dir: TempDir) -> Result<Server> {
    let options = hongbao::ServeOptions::new(dir.path().join("data"), "127.0.0.1:0".parse()?);
    let running = hongbao::start(options).await?;
    let api = Api { addr: running.addr, admin: running.admin_token.clone().expect("the first admin's token") };
    Ok(Server { dir, running, api })
}

impl Server {
    /// Stops the server (everything durable), then audits the data directory.
    async fn stop_and_audit(self) -> Result<()> {
        let Server { dir, running, .. } = self;
        let path = running.data.path.clone();
        running.stop().await?;
        let report = hongbao::audit_dir(&path)?;
        assert!(report.ok(), "{report}");
        drop(dir);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// 1. The walkthrough
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough() -> Result<()> {
    let server = start().await?;
    let api = &server.api;

    let health = api.request("GET", "/healthz", None, &[], None).await;
    assert_eq!(health.ok(200), json!({ "status": "ok" }));

    let alice = api.token("alice").await;
    let bob = api.token("bob").await;
    let carol = api.token("carol").await;
    let dave = api.token("dave").await;
    assert_eq!(api.deposit("alice", 10_000).await, 10_000);
    assert_eq!(api.get("/v1/account", &alice).await.ok(200), json!({ "user": "alice", "balance": 10_000 }));
    assert_eq!(api.get("/v1/account", &bob).await.ok(200), json!({ "user": "bob", "balance": 0 }));

    let greeting = "恭喜发财，大吉大利";
    let packet =
        api.send(&alice, &json!({ "kind": "lucky", "total_amount": 1000, "count": 3, "greeting": greeting })).await;
    let id = id_of(&packet);
    assert_eq!(packet["sender"], "alice");
    assert_eq!(packet["kind"], "lucky");
    assert_eq!(packet["total_amount"], 1000);
    assert_eq!(packet["count"], 3);
    assert_eq!(packet["greeting"], greeting);
    assert_eq!(packet["recipient"], Value::Null);
    assert!(packet.get("password").is_none(), "{packet}");
    let created_at = packet["created_at"].as_i64().expect("created_at");
    let expires_at = packet["expires_at"].as_i64().expect("expires_at");
    assert_eq!(expires_at - created_at, 86_400_000, "the default expiry is a day");
    // The debit is part of the send: durable before the 201.
    assert_eq!(api.balance(&alice).await, 9_000);

    assert_eq!(api.grab_status(&bob, &id).await, "available");
    let bob_share = api.opened(&bob, &id).await;
    assert_eq!(api.opened(&bob, &id).await, bob_share, "a repeat open answers the same share");
    assert_eq!(api.grab_status(&bob, &id).await, "opened");
    let carol_share = api.opened(&carol, &id).await;
    let alice_share = api.opened(&alice, &id).await;
    let shares = [bob_share, carol_share, alice_share];
    assert_eq!(shares.iter().sum::<u64>(), 1000, "{shares:?}");

    api.open(&dave, &id).await.error(409, "packet_empty");
    assert_eq!(api.grab_status(&dave, &id).await, "empty");
    assert_eq!(api.grab_status(&carol, &id).await, "opened");
    assert_eq!(
        api.opened(&bob, &id).await,
        bob_share,
        "a repeat open after the last share still answers the same share"
    );

    let detail = api.detail(&dave, &id).await;
    for field in ["id", "sender", "kind", "total_amount", "count", "greeting", "recipient", "created_at", "expires_at"]
    {
        assert_eq!(detail[field], packet[field], "{field}: {detail}");
    }
    assert_eq!(detail["has_password"], false);
    assert_eq!(detail["status"], "empty");
    assert_eq!(detail["remaining_amount"], 0);
    assert_eq!(detail["remaining_count"], 0);
    assert_eq!(detail["refunded_amount"], 0);
    let claims = detail["claims"].as_array().expect("claims");
    let users: Vec<&str> = claims.iter().map(|claim| claim["user"].as_str().expect("a user")).collect();
    assert_eq!(users, ["bob", "carol", "alice"], "claims in open order");
    let amounts: Vec<u64> = claims.iter().map(|claim| u64_of(&claim["amount"])).collect();
    assert_eq!(amounts, shares);
    let ats: Vec<i64> = claims.iter().map(|claim| claim["at"].as_i64().expect("at")).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
    assert!(ats.iter().all(|at| (created_at..expires_at).contains(at)), "{ats:?}");
    let best = (0..claims.len()).min_by_key(|&i| (Reverse(amounts[i]), i)).expect("claims");
    assert_eq!(detail["best_luck"], claims[best], "best luck is the largest share, the earliest among equals");

    api.wait_balance(&alice, 9_000 + alice_share).await;
    api.wait_balance(&bob, bob_share).await;
    api.wait_balance(&carol, carol_share).await;
    assert_eq!(api.balance(&dave).await, 0);

    let sent = api.get("/v1/packets/sent", &alice).await.ok(200);
    assert_eq!(sent["next_cursor"], Value::Null, "{sent}");
    let items = sent["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{sent}");
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["status"], "empty");
    assert_eq!(items[0]["remaining_amount"], 0);
    assert_eq!(items[0]["remaining_count"], 0);
    assert_eq!(items[0]["total_amount"], 1000);
    assert_eq!(items[0]["greeting"], greeting);
    let bob_sent = api.get("/v1/packets/sent", &bob).await.ok(200);
    assert_eq!(bob_sent, json!({ "items": [], "next_cursor": null }));

    let received = api.get("/v1/packets/received", &bob).await.ok(200);
    assert_eq!(received["next_cursor"], Value::Null, "{received}");
    assert_eq!(
        received["items"],
        json!([{
            "packet_id": id,
            "sender": "alice",
            "greeting": greeting,
            "amount": bob_share,
            "at": ats[0],
        }])
    );
    let dave_received = api.get("/v1/packets/received", &dave).await.ok(200);
    assert_eq!(dave_received, json!({ "items": [], "next_cursor": null }));

    server.stop_and_audit().await
}

// ---------------------------------------------------------------------------
// 2. Authentication
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let alice = api.token("alice").await;
    let bob = api.token("bob").await;
    api.deposit("alice", 5_000).await;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 2 })).await;

    // Every user route needs a token.
    let user_routes = [
        ("GET", "/v1/account".to_owned(), None),
        ("POST", "/v1/packets".to_owned(), Some(json!({ "kind": "lucky", "total_amount": 100, "count": 1 }))),
        ("GET", "/v1/packets/sent".to_owned(), None),
        ("GET", "/v1/packets/received".to_owned(), None),
        ("GET", format!("/v1/packets/{id}"), None),
        ("POST", format!("/v1/packets/{id}/grab"), None),
        ("POST", format!("/v1/packets/{id}/open"), None),
    ];
    // A token from another data directory is signed with another secret.
    let foreign = {
        let other = start().await?;
        let token = other.api.token("alice").await;
        other.stop_and_audit().await?;
        token
    };
    assert_ne!(foreign, alice);
    let forged = format!("bob.{}", alice.rsplit_once('.').expect("user.signature").1);
    let bad_headers: Vec<(String, &str)> = vec![
        ("Bearer alice.AAAA".to_owned(), "invalid_token"),
        (format!("Bearer {forged}"), "invalid_token"),
        (format!("Bearer {foreign}"), "invalid_token"),
        (format!("Bearer {}", server.api.admin), "invalid_token"),
        (format!("Bearer {alice}x"), "invalid_token"),
        ("Bearer alice".to_owned(), "invalid_token"),
        ("Bearer ".to_owned(), "invalid_token"),
        ("Bearer".to_owned(), "invalid_token"),
        (format!("Basic {alice}"), "invalid_token"),
        (alice.clone(), "invalid_token"),
    ];
    for (method, path, body) in &user_routes {
        let body = body.as_ref().map(json_bytes);
        api.request(method, path, None, &[], body.clone()).await.error(401, "missing_token");
        for (header, code) in &bad_headers {
            api.request(method, path, None, &[("authorization", header.as_str())], body.clone()).await.error(401, code);
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
        api.request("POST", path, Some(&forged), &[], Some(body.clone())).await.error(401, "invalid_token");
    }
    assert_eq!(api.balance(&bob).await, 0, "a refused deposit deposits nothing");

    // Nothing above changed anything.
    assert_eq!(api.balance(&alice).await, 4_900);
    let detail = api.detail(&bob, &id).await;
    assert_eq!(detail["claims"], json!([]), "{detail}");
    assert_eq!(detail["remaining_count"], 2);

    // The caller is always the token's user: not a field of the body.
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

    // User names may hold dots; the signature is after the last one.
    let dotted = api.token("first.last").await;
    assert_eq!(api.balance(&dotted).await, 0);
    let swapped = format!("first.{}", dotted.rsplit_once('.').expect("a signature").1);
    api.request("GET", "/v1/account", Some(&swapped), &[], None).await.error(401, "invalid_token");

    // A good admin token is accepted with any case of the scheme.
    let lower = format!("bearer {}", api.admin);
    let body = api
        .request(
            "POST",
            "/v1/admin/tokens",
            None,
            &[("authorization", lower.as_str())],
            Some(json_bytes(&json!({ "user": "bob" }))),
        )
        .await
        .ok(200);
    let token = body["token"].as_str().expect("a token");
    assert_eq!(api.balance(token).await, bob_share, "a token for bob, who was credited his share");

    server.stop_and_audit().await
}

// ---------------------------------------------------------------------------
// 3. Idempotency
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_deposit_and_send() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let alice = api.token("alice").await;
    let deposits = "/v1/admin/deposits";
    let admin = api.admin.as_str();
    let ten_thousand = json!({ "user": "alice", "amount": 10_000 });

    let first = api.post_keyed(deposits, admin, "dep-1", &ten_thousand).await.ok(200);
    assert_eq!(first, json!({ "user": "alice", "balance": 10_000 }));
    let again = api.post_keyed(deposits, admin, "dep-1", &ten_thousand).await.ok(200);
    assert_eq!(again, first, "a replay answers the same");
    assert_eq!(api.balance(&alice).await, 10_000, "a replay deposits nothing");

    assert_eq!(api.deposit("alice", 500).await, 10_500);
    let later = api.post_keyed(deposits, admin, "dep-1", &ten_thousand).await.ok(200);
    assert_eq!(later, first, "a replay answers what the first request answered");
    assert_eq!(api.balance(&alice).await, 10_500);

    api.post_keyed(deposits, admin, "dep-1", &json!({ "user": "alice", "amount": 2_000 }))
        .await
        .error(409, "idempotency_key_reused");
    assert_eq!(api.balance(&alice).await, 10_500);

    let long_key = "k".repeat(65);
    for key in ["has space", "a/b", "a,b", long_key.as_str(), ""] {
        api.post_keyed(deposits, admin, key, &ten_thousand).await.error(400, "invalid_idempotency_key");
    }
    assert_eq!(api.balance(&alice).await, 10_500);
    let longest = "K".repeat(64);
    let allowed = format!("A-z_0.9:{}", &longest[..56]);
    assert_eq!(allowed.len(), 64);
    for key in [longest.as_str(), allowed.as_str()] {
        api.post_keyed(deposits, admin, key, &json!({ "user": "alice", "amount": 1 })).await.ok(200);
    }
    assert_eq!(api.balance(&alice).await, 10_502);

    // Sends.
    let spec = json!({ "kind": "fixed", "total_amount": 1000, "count": 2, "greeting": "once" });
    let sent = api.post_keyed("/v1/packets", &alice, "send-1", &spec).await.ok(201);
    let replay = api.post_keyed("/v1/packets", &alice, "send-1", &spec).await.ok(201);
    assert_eq!(replay, sent, "a replayed send answers the same packet");
    assert_eq!(api.balance(&alice).await, 9_502, "charged once");

    for other in [
        json!({ "kind": "fixed", "total_amount": 1000, "count": 4, "greeting": "once" }),
        json!({ "kind": "fixed", "total_amount": 1000, "count": 2, "greeting": "twice" }),
        json!({ "kind": "fixed", "total_amount": 1000, "count": 2 }),
        json!({ "kind": "lucky", "total_amount": 1000, "count": 2, "greeting": "once" }),
        json!({
            "kind": "fixed", "total_amount": 1000, "count": 2, "greeting": "once",
            "password": "secret",
        }),
    ] {
        api.post_keyed("/v1/packets", &alice, "send-1", &other).await.error(409, "idempotency_key_reused");
    }
    api.post_keyed("/v1/packets", &alice, "bad key", &spec).await.error(400, "invalid_idempotency_key");
    assert_eq!(api.balance(&alice).await, 9_502);

    // The same key sent many times at once still makes one packet.
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let api = api.clone();
        let alice = alice.clone();
        tasks.spawn(async move {
            let spec = json!({ "kind": "lucky", "total_amount": 700, "count": 7 });
            api.post_keyed("/v1/packets", &alice, "send-2", &spec).await.ok(201)
        });
    }
    let answers = tasks.join_all().await;
    let ids: BTreeSet<String> = answers.iter().map(id_of).collect();
    assert_eq!(ids.len(), 1, "one packet for one key: {ids:?}");
    assert!(answers.iter().all(|answer| answer == &answers[0]));
    assert_eq!(api.balance(&alice).await, 8_802, "charged once");

    let listed = api.get("/v1/packets/sent", &alice).await.ok(200);
    let listed: Vec<String> = listed["items"].as_array().expect("items").iter().map(id_of).collect();
    assert_eq!(listed, [id_of(&answers[0]), id_of(&sent)], "two packets in all");

    // A replayed packet is the same packet: opening it shows one set of shares.
    let bob = api.token("bob").await;
    assert_eq!(api.opened(&bob, &id_of(&sent)).await, 500);
    let detail = api.detail(&bob, &id_of(&replay)).await;
    assert_eq!(detail["remaining_count"], 1, "{detail}");
    api.wait_balance(&bob, 500).await;

    server.stop_and_audit().await
}

// ---------------------------------------------------------------------------
// 4. Every 4xx
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_deposit_and_token_validation() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let alice = api.token("alice").await;
    let bob = api.token("bob").await;
    api.deposit("alice", 30_000).await;

    let lucky = |total: Value, count: Value| json!({ "kind": "lucky", "total_amount": total, "count": count });
    let with = |mut spec: Value, field: &str, value: Value| {
        spec[field] = value;
        spec
    };
    let base = lucky(json!(100), json!(2));
    let cases: Vec<(Value, &str)> = vec![
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
    ];
    for (spec, code) in &cases {
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

    // The limits themselves are accepted.
    let biggest = api
        .send(
            &alice,
            &json!({
                "kind": "lucky", "total_amount": 20_000, "count": 100,
                "greeting": "恭".repeat(100), "password": "p".repeat(64),
                "expires_in_s": 604_800,
            }),
        )
        .await;
    assert_eq!(
        biggest["expires_at"].as_i64().expect("expires_at") - biggest["created_at"].as_i64().expect("created_at"),
        604_800_000
    );
    let smallest = api
        .send(&alice, &json!({ "kind": "fixed", "total_amount": 1, "count": 1, "greeting": "", "expires_in_s": 1 }))
        .await;
    assert_eq!(smallest["greeting"], Value::Null, "an empty greeting is none");
    assert_eq!(api.balance(&alice).await, 9_999);

    // Money.
    api.post("/v1/packets", &alice, &json!({ "kind": "lucky", "total_amount": 10_000, "count": 1 }))
        .await
        .error(409, "insufficient_balance");
    api.post("/v1/packets", &bob, &json!({ "kind": "lucky", "total_amount": 1, "count": 1 }))
        .await
        .error(409, "insufficient_balance");
    assert_eq!(api.balance(&alice).await, 9_999);
    assert_eq!(api.balance(&bob).await, 0);

    // Deposits.
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

    // Tokens.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_rules_for_open_and_grab() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let alice = api.token("alice").await;
    let bob = api.token("bob").await;
    let carol = api.token("carol").await;
    let dave = api.token("dave").await;
    let erin = api.token("erin").await;
    api.deposit("alice", 10_000).await;
    let mut credited: HashMap<String, u64> = HashMap::new();

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

    // Exclusive: only the recipient may grab or open.
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
    assert_eq!(detail["claims"], json!([{ "user": "bob", "amount": 888, "at": detail["claims"][0]["at"] }]));
    assert_eq!(detail["best_luck"], detail["claims"][0]);
    *credited.entry(bob.clone()).or_default() += 888;

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
    *credited.entry(bob.clone()).or_default() += bob_share;
    *credited.entry(carol.clone()).or_default() += carol_share;

    // Fixed: even shares; ties for best luck go to the earliest.
    let id = api.send_id(&alice, &json!({ "kind": "fixed", "total_amount": 1000, "count": 4 })).await;
    for token in [&carol, &bob, &dave, &erin] {
        assert_eq!(api.opened(token, &id).await, 250);
        *credited.entry(token.clone()).or_default() += 250;
    }
    api.open(&alice, &id).await.error(409, "packet_empty");
    assert_eq!(api.grab_status(&alice, &id).await, "empty");
    let detail = api.detail(&alice, &id).await;
    assert_eq!(detail["kind"], "fixed");
    assert_eq!(detail["best_luck"], detail["claims"][0]);
    assert_eq!(detail["best_luck"]["user"], "carol");

    // Best luck is only set once every share is opened.
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 500, "count": 3 })).await;
    let share = api.opened(&erin, &id).await;
    *credited.entry(erin.clone()).or_default() += share;
    let detail = api.detail(&alice, &id).await;
    assert_eq!(detail["status"], "available");
    assert_eq!(detail["best_luck"], Value::Null);
    assert_eq!(detail["remaining_count"], 2);
    assert_eq!(u64_of(&detail["remaining_amount"]), 500 - share);

    for (token, amount) in &credited {
        api.wait_balance(token, *amount).await;
    }
    assert_eq!(api.balance(&alice).await, 10_000 - 100 - 888 - 300 - 1000 - 500);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_packet_refunds_the_sender() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let alice = api.token("alice").await;
    let bob = api.token("bob").await;
    let carol = api.token("carol").await;
    api.deposit("alice", 5_000).await;

    let spec = json!({
        "kind": "lucky", "total_amount": 1000, "count": 4,
        "greeting": "快", "expires_in_s": 1,
    });
    let packet = api.post_keyed("/v1/packets", &alice, "expiring", &spec).await.ok(201);
    let id = id_of(&packet);
    assert_eq!(
        packet["expires_at"].as_i64().expect("expires_at") - packet["created_at"].as_i64().expect("created_at"),
        1000
    );
    let locked = api
        .send_id(
            &alice,
            &json!({
                "kind": "fixed", "total_amount": 500, "count": 5,
                "password": "open sesame", "expires_in_s": 1,
            }),
        )
        .await;
    assert_eq!(api.balance(&alice).await, 3_500);
    // Bob opens at once; a very slow machine may already be past expiry,
    // and the rest of the test holds either way.
    let bob_open = api.open(&bob, &id).await;
    let bob_share = match bob_open.status {
        200 => share_of(bob_open.body),
        _ => {
            bob_open.error(410, "packet_expired");
            0
        }
    };

    // Grabs are non-binding: poll with them until the packet is past expiry.
    let deadline = Instant::now() + POLL_BOUND;
    loop {
        let status = api.grab_status(&carol, &id).await;
        if status == "expired" {
            break;
        }
        assert_eq!(status, "available");
        assert!(Instant::now() < deadline, "the packet did not expire in {POLL_BOUND:?}");
        tokio::time::sleep(POLL_EVERY).await;
    }
    api.open(&carol, &id).await.error(410, "packet_expired");
    api.open(&alice, &id).await.error(410, "packet_expired");
    // The password is judged before expiry.
    let deadline = Instant::now() + POLL_BOUND;
    while api.grab_status(&carol, &locked).await != "expired" {
        assert!(Instant::now() < deadline, "the locked packet did not expire");
        tokio::time::sleep(POLL_EVERY).await;
    }
    api.open_with(&carol, &locked, &json!({ "password": "nope" })).await.error(403, "wrong_password");
    api.open_with(&carol, &locked, &json!({ "password": "open sesame" })).await.error(410, "packet_expired");
    assert_eq!(api.grab_status(&carol, &id).await, "expired");
    if bob_share > 0 {
        assert_eq!(api.opened(&bob, &id).await, bob_share, "an opened share stays opened after expiry");
        assert_eq!(api.grab_status(&bob, &id).await, "opened");
    }

    // What was left goes back to alice, once.
    let refund = 1000 - bob_share;
    api.wait_balance(&alice, 4_000 + refund).await;
    let locked_detail = api.detail(&alice, &locked).await;
    assert_eq!(locked_detail["refunded_amount"], 500, "{locked_detail}");
    api.wait_balance(&bob, bob_share).await;
    assert_eq!(api.balance(&carol).await, 0);
    let deadline = Instant::now() + POLL_BOUND;
    let detail = loop {
        let detail = api.detail(&carol, &id).await;
        if detail["refunded_amount"] != 0 {
            break detail;
        }
        assert!(Instant::now() < deadline, "no refund shown: {detail}");
        tokio::time::sleep(POLL_EVERY).await;
    };
    assert_eq!(detail["status"], "expired");
    assert_eq!(u64_of(&detail["refunded_amount"]), refund);
    assert_eq!(detail["remaining_amount"], 0);
    let claimed = u64::from(bob_share > 0);
    assert_eq!(u64_of(&detail["remaining_count"]), 4 - claimed);
    assert_eq!(detail["claims"].as_array().map(Vec::len), Some(claimed as usize));
    assert_eq!(detail["best_luck"], Value::Null);

    // A replay of the send after its packet settled answers the same packet
    // and charges nothing.
    let replay = api.post_keyed("/v1/packets", &alice, "expiring", &spec).await.ok(201);
    assert_eq!(replay, packet);
    assert_eq!(api.balance(&alice).await, 4_000 + refund);

    let sent = api.get("/v1/packets/sent", &alice).await.ok(200);
    assert_eq!(sent["items"].as_array().map(Vec::len), Some(2), "{sent}");
    assert_eq!(sent["items"][0]["id"], locked.as_str(), "{sent}");
    assert_eq!(sent["items"][0]["status"], "expired");
    let item = &sent["items"][1];
    assert_eq!(item["id"], id.as_str(), "{sent}");
    assert_eq!(item["status"], "expired");
    assert_eq!(u64_of(&item["refunded_amount"]), refund);
    assert_eq!(item["remaining_amount"], 0);

    // A fully opened packet leaves nothing to refund.
    let fixed = api
        .send_id(&alice, &json!({ "kind": "fixed", "total_amount": 200, "count": 1, "expires_in_s": 604_800 }))
        .await;
    assert_eq!(api.opened(&carol, &fixed).await, 200);
    api.wait_balance(&carol, 200).await;
    assert_eq!(api.balance(&alice).await, 3_800 + refund);
    let detail = api.detail(&alice, &fixed).await;
    assert_eq!(detail["refunded_amount"], 0);

    server.stop_and_audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_body_route_and_method_errors() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let alice = api.token("alice").await;
    api.deposit("alice", 1_000).await;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await;

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

    // Bodies over 16 KiB are refused before they are read.
    let too_big = |prefix: &str| {
        let mut body = format!("{prefix}\"");
        body.push_str(&"a".repeat(BODY_BYTES_MAX));
        body.push_str("\"}");
        body.into_bytes()
    };
    api.post_raw("/v1/packets", &alice, &too_big(r#"{"kind":"lucky","total_amount":100,"count":1,"greeting":"#))
        .await
        .error(413, "body_too_large");
    api.post_raw("/v1/admin/deposits", &api.admin, &too_big(r#"{"amount":100,"user":"#))
        .await
        .error(413, "body_too_large");
    api.post_raw(&format!("/v1/packets/{id}/open"), &alice, &too_big(r#"{"password":"#))
        .await
        .error(413, "body_too_large");
    assert_eq!(api.balance(&alice).await, 900, "nothing was sent or deposited");
    assert_eq!(api.detail(&alice, &id).await["remaining_count"], 1);

    // Exactly 16 KiB is still accepted; one byte more is not.
    let padded = |len: usize| {
        let mut body = br#"{"kind":"lucky","total_amount":100,"count":1}"#.to_vec();
        body.resize(len, b' ');
        body
    };
    api.post_raw("/v1/packets", &alice, &padded(BODY_BYTES_MAX + 1)).await.error(413, "body_too_large");
    api.post_raw("/v1/packets", &alice, &padded(BODY_BYTES_MAX)).await.ok(201);
    assert_eq!(api.balance(&alice).await, 800);

    // Bodies are JSON whatever the content type says; an open's body may be
    // blank.
    let body = json_bytes(&json!({ "kind": "lucky", "total_amount": 100, "count": 1 }));
    let plain =
        api.request("POST", "/v1/packets", Some(&alice), &[("content-type", "text/plain")], Some(body)).await.ok(201);
    assert_eq!(plain["total_amount"], 100);
    let bob = api.token("bob").await;
    let opened = api.post_raw(&format!("/v1/packets/{id}/open"), &bob, b" \n ").await.ok(200);
    assert_eq!(share_of(opened), 100);

    // Unknown routes.
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
    // Known routes, wrong methods (answered before authentication).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_engine_answers_writes_503_shutting_down_with_retry_after_and_is_not_ready() -> Result<()> {
    let server = start().await?;
    let api = server.api.clone();
    let alice = api.token("alice").await;
    api.deposit("alice", 1_000).await;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await;

    // Stop the sets behind a server that still answers HTTP.
    let engine = server.running.engine.clone();
    tokio::task::spawn_blocking(move || engine.shutdown()).await?;

    let refused = [
        api.post("/v1/admin/deposits", &api.admin, &json!({ "user": "alice", "amount": 1 })).await,
        api.post("/v1/packets", &alice, &json!({ "kind": "lucky", "total_amount": 100, "count": 1 })).await,
        api.open(&alice, &id).await,
        api.grab(&alice, &id).await,
    ];
    for response in &refused {
        response.error(503, "shutting_down");
        assert!(
            response
                .headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.parse::<u64>().is_ok()),
            "{}: a 503 carries Retry-After in seconds: {:?}",
            response.what,
            response.headers
        );
    }
    // Reads of committed state still work; the node says it is not ready.
    assert_eq!(api.balance(&alice).await, 900);
    api.request("GET", "/readyz", None, &[], None).await.error(503, "not_ready");
    assert_eq!(api.request("GET", "/livez", None, &[], None).await.ok(200), json!({ "status": "ok" }));

    server.stop_and_audit().await
}

// ---------------------------------------------------------------------------
// 5. Paging
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_sent_and_received() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let alice = api.token("alice").await;
    let bob = api.token("bob").await;
    let carol = api.token("carol").await;
    api.deposit("alice", 10_000).await;

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
    let listed: Vec<String> =
        pages.iter().flatten().map(|item| item["packet_id"].as_str().expect("packet_id").to_owned()).collect();
    assert_eq!(listed, newest_first, "received pages newest first, no duplicates");
    for (item, n) in pages.iter().flatten().zip((0..5).rev()) {
        assert_eq!(item["sender"], "alice");
        assert_eq!(item["amount"], 100);
        assert_eq!(item["greeting"], format!("packet {n}"));
    }

    // Received from several senders, most likely in several sets: paging
    // follows the same order as one whole page.
    let mut carol_ids = BTreeSet::new();
    for sender in ["sam", "sue", "sid", "sol", "sky", "stu"] {
        let token = api.token(sender).await;
        api.deposit(sender, 1_000).await;
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
    let listed: BTreeSet<String> =
        whole.iter().map(|item| item["packet_id"].as_str().expect("packet_id").to_owned()).collect();
    assert_eq!(listed, carol_ids);
    for limit in [1, 2, 5] {
        let pages = api.pages(&carol, "received", limit).await;
        assert!(pages.iter().rev().skip(1).all(|page| page.len() == limit));
        let paged: Vec<Value> = pages.into_iter().flatten().collect();
        assert_eq!(paged, whole, "pages of {limit}");
    }

    server.stop_and_audit().await
}

// ---------------------------------------------------------------------------
// 6. Concurrency
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_over_http() -> Result<()> {
    const USERS: usize = 200;
    const SHARES: usize = 50;
    const TOTAL: u64 = 5_000;

    let server = start().await?;
    let api = server.api.clone();
    let alice = api.token("alice").await;
    api.deposit("alice", TOTAL).await;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": TOTAL, "count": SHARES })).await;
    assert_eq!(api.balance(&alice).await, 0);

    let mut tasks = JoinSet::new();
    for n in 0..USERS {
        let api = api.clone();
        tasks.spawn(async move {
            let user = format!("user{n:03}");
            let token = api.token(&user).await;
            (user, token)
        });
    }
    let users = tasks.join_all().await;

    let start_line = Arc::new(tokio::sync::Barrier::new(USERS));
    let mut tasks = JoinSet::new();
    for (user, token) in users {
        let api = api.clone();
        let id = id.clone();
        let start_line = start_line.clone();
        tasks.spawn(async move {
            start_line.wait().await;
            let response = api.open(&token, &id).await;
            (user, token, response)
        });
    }
    let mut winners = HashMap::new();
    let mut losers = Vec::new();
    for (user, token, response) in tasks.join_all().await {
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

    // One user opening one packet many times at once gets one share (the
    // opens past the user's writes in flight are refused 429, unapplied).
    api.deposit("alice", 300).await;
    let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 300, "count": 3 })).await;
    let twin = api.token("twin").await;
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

// ---------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_state_keys_and_idempotency() -> Result<()> {
    let server = start().await?;
    let api = server.api.clone();
    let alice = api.token("alice").await;
    let bob = api.token("bob").await;
    let carol = api.token("carol").await;
    let deposit = json!({ "user": "alice", "amount": 5_000 });
    let deposited = api.post_keyed("/v1/admin/deposits", &api.admin, "dep-r", &deposit).await.ok(200);
    let spec = json!({ "kind": "lucky", "total_amount": 1000, "count": 4 });
    let packet = api.post_keyed("/v1/packets", &alice, "send-r", &spec).await.ok(201);
    let id = id_of(&packet);
    let bob_share = api.opened(&bob, &id).await;
    // A packet that expires around the restart is refunded after it.
    let expiring =
        api.send_id(&alice, &json!({ "kind": "fixed", "total_amount": 400, "count": 4, "expires_in_s": 1 })).await;

    let Server { dir, running, .. } = server;
    let path = running.data.path.clone();
    running.stop().await?;
    let report = hongbao::audit_dir(&path)?;
    assert!(report.ok(), "{report}");

    let server = start_in(dir).await?;
    let api = server.api.clone();
    assert_eq!(Some(&api.admin), server.running.admin_token.as_ref());
    // A served data directory is locked against a second server.
    let second = hongbao::ServeOptions::new(path.clone(), "127.0.0.1:0".parse()?);
    assert!(hongbao::start(second).await.is_err(), "two servers on one data directory");
    // The keys survive: old tokens still work.
    api.request("GET", "/v1/account", Some(&alice), &[], None).await.ok(200);
    api.wait_balance(&bob, bob_share).await;
    let replayed = api.post_keyed("/v1/admin/deposits", &api.admin, "dep-r", &deposit).await.ok(200);
    assert_eq!(replayed, deposited);
    let replayed = api.post_keyed("/v1/packets", &alice, "send-r", &spec).await.ok(201);
    assert_eq!(replayed, packet);
    assert_eq!(api.opened(&bob, &id).await, bob_share);
    let carol_share = api.opened(&carol, &id).await;
    let detail = api.detail(&carol, &id).await;
    let users: Vec<&str> = detail["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|claim| claim["user"].as_str().expect("a user"))
        .collect();
    assert_eq!(users, ["bob", "carol"]);
    assert_eq!(u64_of(&detail["remaining_amount"]), 1000 - bob_share - carol_share);
    api.wait_balance(&carol, carol_share).await;

    let deadline = Instant::now() + POLL_BOUND;
    while api.grab_status(&carol, &expiring).await != "expired" {
        assert!(Instant::now() < deadline, "the packet did not expire");
        tokio::time::sleep(POLL_EVERY).await;
    }
    api.open(&carol, &expiring).await.error(410, "packet_expired");
    api.wait_balance(&alice, 5_000 - 1000).await;

    let sent = api.get("/v1/packets/sent", &alice).await.ok(200);
    let sent: Vec<String> = sent["items"].as_array().expect("items").iter().map(id_of).collect();
    assert_eq!(sent, [expiring, id.clone()]);
    let received = api.get("/v1/packets/received", &bob).await.ok(200);
    assert_eq!(received["items"][0]["packet_id"], id.as_str(), "{received}");
    assert_eq!(received["items"].as_array().map(Vec::len), Some(1));

    server.stop_and_audit().await
}

// ---------------------------------------------------------------------------
// The balance limit
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_stop_at_the_balance_limit_but_credits_do_not() -> Result<()> {
    const DEPOSIT_MAX: u64 = 1_000_000_000;
    const BALANCE_MAX: u64 = 100_000_000_000;

    let server = start().await?;
    let api = server.api.clone();
    let alice = api.token("alice").await;
    let bob = api.token("bob").await;
    api.deposit("alice", 1_000).await;

    let mut tasks = JoinSet::new();
    for _ in 0..BALANCE_MAX / DEPOSIT_MAX {
        let api = api.clone();
        tasks.spawn(async move { api.deposit("bob", DEPOSIT_MAX).await });
    }
    let balances: BTreeSet<u64> = tasks.join_all().await.into_iter().collect();
    assert_eq!(balances.len() as u64, BALANCE_MAX / DEPOSIT_MAX, "{balances:?}");
    assert_eq!(balances.last(), Some(&BALANCE_MAX));
    api.post("/v1/admin/deposits", &api.admin, &json!({ "user": "bob", "amount": 1 }))
        .await
        .error(409, "balance_limit_exceeded");
    assert_eq!(api.balance(&bob).await, BALANCE_MAX);

    // A share is money already in flight: it lands even above the limit.
    let id =
        api.send_id(&alice, &json!({ "kind": "exclusive", "total_amount": 300, "count": 1, "recipient": "bob" })).await;
    assert_eq!(api.opened(&bob, &id).await, 300);
    api.wait_balance(&bob, BALANCE_MAX + 300).await;

    server.stop_and_audit().await
}
