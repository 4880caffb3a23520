//! The client, the server and the small parsers every API test uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hongbao_engine::{Clock, ManualClock, SystemClock};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;

/// How long anything asynchronous may take before a test gives up.
pub const POLL_BOUND: Duration = Duration::from_secs(5);
/// How often a test looks again.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// The API's body limit, in bytes.
pub const BODY_BYTES_MAX: usize = 16 * 1024;
/// A send's body limit: room for 500 members of 64-character names.
pub const SEND_BODY_BYTES_MAX: usize = BODY_BYTES_MAX + 500 * 67;

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// One HTTP answer, with what was asked for failure messages.
pub struct Response {
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// The body of an answer that must have `status`.
    #[track_caller]
    pub fn ok(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.what, self.body);
        self.body
    }

    /// Asserts an error answer: the status, the code, and the error shape
    /// `{"error":{"code","message"}}` with nothing else in it.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) {
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
pub struct Api {
    pub addr: SocketAddr,
    pub admin: String,
}

impl Api {
    /// Sends one request on a new connection. `token` becomes
    /// `Authorization: Bearer <token>`; `headers` are added as given.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response {
        let (what, status, headers, bytes) = self.request_bytes(method, path, token, headers, body).await;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{what}: {status} with a body that is not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes))
            })
        };
        Response { what, status, headers, body }
    }

    /// A GET whose answer is text (`/metrics`): its status, headers and body.
    pub async fn get_text(&self, path: &str) -> (u16, HeaderMap, String) {
        let (what, status, headers, bytes) = self.request_bytes("GET", path, None, &[], None).await;
        let text = String::from_utf8(bytes.to_vec()).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
        (status, headers, text)
    }

    async fn request_bytes(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> (String, u16, HeaderMap, Bytes) {
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
        (what, status, headers, bytes)
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request("GET", path, Some(token), &[], None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request("POST", path, Some(token), &[], Some(json_bytes(body))).await
    }

    pub async fn post_raw(&self, path: &str, token: &str, body: &[u8]) -> Response {
        self.request("POST", path, Some(token), &[], Some(body.to_vec())).await
    }

    pub async fn post_keyed(&self, path: &str, token: &str, key: &str, body: &Value) -> Response {
        self.request("POST", path, Some(token), &[("idempotency-key", key)], Some(json_bytes(body))).await
    }

    /// A user token from the admin route.
    pub async fn token(&self, user: &str) -> String {
        let body = self.post("/v1/admin/tokens", &self.admin, &json!({ "user": user })).await.ok(200);
        assert_eq!(body["user"], user, "{body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// Deposits `amount` for `user`; answers the new balance.
    pub async fn deposit(&self, user: &str, amount: u64) -> u64 {
        let body =
            self.post("/v1/admin/deposits", &self.admin, &json!({ "user": user, "amount": amount })).await.ok(200);
        assert_eq!(body["user"], user, "{body}");
        body["balance"].as_u64().expect("a balance")
    }

    /// New users: a token for each, and for each its first deposit (none
    /// where it is 0), which must answer a balance of just that deposit.
    pub async fn users<const N: usize>(&self, users: [(&str, u64); N]) -> [String; N] {
        let mut tokens = Vec::with_capacity(N);
        for (user, _) in &users {
            tokens.push(self.token(user).await);
        }
        for (user, amount) in users {
            if amount > 0 {
                assert_eq!(self.deposit(user, amount).await, amount, "{user}'s first deposit is its balance");
            }
        }
        tokens.try_into().unwrap_or_else(|_| unreachable!("one token per user"))
    }

    pub async fn balance(&self, token: &str) -> u64 {
        let body = self.get("/v1/account", token).await.ok(200);
        assert_eq!(body["user"], user_of(token), "the caller is the token's user");
        body["balance"].as_u64().expect("a balance")
    }

    /// Polls the caller's balance until it is `expected` (credits to another
    /// set arrive asynchronously).
    pub async fn wait_balance(&self, token: &str, expected: u64) {
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
    pub async fn send(&self, token: &str, spec: &Value) -> Value {
        self.post("/v1/packets", token, spec).await.ok(201)
    }

    /// Sends a packet that must be accepted; answers its id.
    pub async fn send_id(&self, token: &str, spec: &Value) -> String {
        id_of(&self.send(token, spec).await)
    }

    pub async fn open(&self, token: &str, id: &str) -> Response {
        let path = format!("/v1/packets/{id}/open");
        self.request("POST", &path, Some(token), &[], None).await
    }

    pub async fn open_with(&self, token: &str, id: &str, body: &Value) -> Response {
        self.post(&format!("/v1/packets/{id}/open"), token, body).await
    }

    /// Opens a packet that must open; answers the share.
    pub async fn opened(&self, token: &str, id: &str) -> u64 {
        share_of(self.open(token, id).await.ok(200))
    }

    pub async fn grab(&self, token: &str, id: &str) -> Response {
        let path = format!("/v1/packets/{id}/grab");
        self.request("POST", &path, Some(token), &[], None).await
    }

    /// The status a grab answers (it must answer 200).
    pub async fn grab_status(&self, token: &str, id: &str) -> String {
        let body = self.grab(token, id).await.ok(200);
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        body["status"].as_str().expect("a status").to_owned()
    }

    pub async fn detail(&self, token: &str, id: &str) -> Value {
        self.get(&format!("/v1/packets/{id}"), token).await.ok(200)
    }

    /// Every item of a list, page by page with `limit`, checking each page's
    /// shape; answers the pages.
    pub async fn pages(&self, token: &str, list: &str, limit: usize) -> Vec<Vec<Value>> {
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

// ---------------------------------------------------------------------------
// Small parsers
// ---------------------------------------------------------------------------

pub fn json_bytes(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).expect("JSON")
}

/// A user token's parts: `hb2.<key id>.<expires at, ms>.<user>.<signature>`
/// (the user may hold dots; the signature is after the last one).
pub struct TokenParts<'a> {
    pub key: &'a str,
    pub expires_at: i64,
    pub user: &'a str,
    pub signature: &'a str,
}

impl TokenParts<'_> {
    pub fn of(token: &str) -> TokenParts<'_> {
        let (signed, signature) = token.rsplit_once('.').expect("a signed token");
        let mut parts = signed.splitn(4, '.');
        assert_eq!(parts.next(), Some("hb2"), "a user token: {token}");
        let key = parts.next().expect("a key id in the token");
        let expires_at = parts.next().expect("an expiry in the token").parse().expect("an expiry in ms");
        let user = parts.next().expect("a user in the token");
        TokenParts { key, expires_at, user, signature }
    }

    /// The token these parts spell (a forgery, once a part is changed).
    pub fn token(&self) -> String {
        format!("hb2.{}.{}.{}.{}", self.key, self.expires_at, self.user, self.signature)
    }
}

/// The user a token names.
pub fn user_of(token: &str) -> &str {
    TokenParts::of(token).user
}

pub fn id_of(packet: &Value) -> String {
    packet["id"].as_str().expect("a packet id").to_owned()
}

pub fn share_of(opened: Value) -> u64 {
    assert_eq!(opened["status"], "opened", "{opened}");
    assert_eq!(opened.as_object().map(|o| o.len()), Some(2), "{opened}");
    let amount = opened["amount"].as_u64().expect("an amount");
    assert!(amount >= 1, "a share holds at least 1 fen: {opened}");
    amount
}

pub fn u64_of(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("{value} is not a u64"))
}

pub fn i64_of(value: &Value) -> i64 {
    value.as_i64().unwrap_or_else(|| panic!("{value} is not an i64"))
}

/// The users of a packet's claims, in claim order.
pub fn claim_users(detail: &Value) -> Vec<&str> {
    let claims = detail["claims"].as_array().expect("claims");
    claims.iter().map(|claim| claim["user"].as_str().expect("a user")).collect()
}

/// A well-formed id that names no packet: `id` with one part changed.
pub fn altered_id(id: &str, part: usize, replacement: &str) -> String {
    let mut parts: Vec<String> = id.split('-').map(str::to_owned).collect();
    assert_eq!(parts.len(), 4, "ids are day-set-seq-nonce: {id}");
    parts[part] = replacement.to_owned();
    parts.join("-")
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

pub struct Server {
    pub dir: TempDir,
    pub running: hongbao::Running,
    pub api: Api,
    /// Where the sets live; on PostgreSQL, the test's database (dropped
    /// with the server).
    pub store: hongbao::StoreChoice,
    pub database: Option<Arc<hongbao_store_pg::testing::TestDatabase>>,
}

/// A new server on a new data directory, on the wall clock.
pub async fn start() -> Result<Server> {
    start_in(tempfile::tempdir()?).await
}

/// Starts a server on `<dir>/data`, new or not.
pub async fn start_in(dir: TempDir) -> Result<Server> {
    start_on(dir, Arc::new(SystemClock)).await
}

async fn start_on(dir: TempDir, clock: Arc<dyn Clock>) -> Result<Server> {
    start_stored(dir, clock, None).await
}

/// Starts a server on `<dir>/data`, its sets in `database` when given.
async fn start_stored(
    dir: TempDir,
    clock: Arc<dyn Clock>,
    database: Option<Arc<hongbao_store_pg::testing::TestDatabase>>,
) -> Result<Server> {
    start_configured(dir, clock, database, |_| {}).await
}

/// `start_with_options` with the sets on a fresh PostgreSQL database; `None`
/// when `HONGBAO_TEST_PG` is unset.
pub async fn start_on_postgres_with_options(
    test: &str,
    configure: impl FnOnce(&mut hongbao::ServeOptions),
) -> Result<Option<Server>> {
    let test = test.to_owned();
    let made = tokio::task::spawn_blocking(move || hongbao_store_pg::testing::TestDatabase::create(&test)).await?;
    let Some(database) = made else { return Ok(None) };
    let dir = tempfile::tempdir()?;
    Ok(Some(start_configured(dir, Arc::new(SystemClock), Some(Arc::new(database)), configure).await?))
}

/// A new server on the wall clock whose options `configure` changes first
/// (limits, say).
pub async fn start_with_options(configure: impl FnOnce(&mut hongbao::ServeOptions)) -> Result<Server> {
    start_configured(tempfile::tempdir()?, Arc::new(SystemClock), None, configure).await
}

async fn start_configured(
    dir: TempDir,
    clock: Arc<dyn Clock>,
    database: Option<Arc<hongbao_store_pg::testing::TestDatabase>>,
    configure: impl FnOnce(&mut hongbao::ServeOptions),
) -> Result<Server> {
    let mut options = hongbao::ServeOptions::new(dir.path().join("data"), "127.0.0.1:0".parse()?);
    configure(&mut options);
    options.clock = clock;
    options.store = match &database {
        None => hongbao::StoreChoice::Sqlite,
        Some(database) => hongbao::StoreChoice::Postgres(hongbao_store_pg::SetMap::single(database.url())),
    };
    let store = options.store.clone();
    let running = hongbao::start(options).await?;
    let api = Api { addr: running.addr, admin: running.admin_token.clone().expect("the first admin's token") };
    Ok(Server { dir, running, api, store, database })
}

/// `start_with_clock` with the sets on a fresh PostgreSQL database; `None`
/// (the test passes, saying it was skipped) when `HONGBAO_TEST_PG` is unset.
pub async fn start_on_postgres_with_clock<const N: usize>(
    test: &str,
    users: [(&str, u64); N],
) -> Result<Option<(Server, ManualClock, [String; N])>> {
    let test = test.to_owned();
    let made = tokio::task::spawn_blocking(move || hongbao_store_pg::testing::TestDatabase::create(&test)).await?;
    let Some(database) = made else { return Ok(None) };
    let clock = ManualClock::new(SystemClock.now());
    let server = start_stored(tempfile::tempdir()?, Arc::new(clock.clone()), Some(Arc::new(database))).await?;
    let tokens = server.api.users(users).await;
    Ok(Some((server, clock, tokens)))
}

/// The set-up most tests start from: a new server, and `users` made on it
/// (`Api::users`: a token each, and each one's first deposit); answers the
/// server and the users' tokens, in order.
pub async fn start_with<const N: usize>(users: [(&str, u64); N]) -> Result<(Server, [String; N])> {
    let server = start().await?;
    let tokens = server.api.users(users).await;
    Ok((server, tokens))
}

/// `start_with` on a clock that moves only when the test moves it, from
/// the wall clock's now: expiry without waiting for it.
pub async fn start_with_clock<const N: usize>(users: [(&str, u64); N]) -> Result<(Server, ManualClock, [String; N])> {
    let clock = ManualClock::new(SystemClock.now());
    let server = start_on(tempfile::tempdir()?, Arc::new(clock.clone())).await?;
    let tokens = server.api.users(users).await;
    Ok((server, clock, tokens))
}

impl Server {
    /// Stops the server (everything durable), then audits the data directory.
    pub async fn stop_and_audit(self) -> Result<()> {
        let Server { dir, running, store, database, .. } = self;
        stop_audited(running, &store, hongbao::ColdDays::Rows).await?;
        drop((dir, database));
        Ok(())
    }

    /// Stops the server, audits its data directory, and starts a new server
    /// on it (and its database), on the wall clock.
    pub async fn restart(self) -> Result<Server> {
        self.restart_with(|_| {}).await
    }

    /// `restart`, the new server's options changed by `configure`.
    pub async fn restart_with(self, configure: impl FnOnce(&mut hongbao::ServeOptions)) -> Result<Server> {
        let Server { dir, running, store, database, .. } = self;
        stop_audited(running, &store, hongbao::ColdDays::Rows).await?;
        start_configured(dir, Arc::new(SystemClock), database, configure).await
    }

    /// Stops the server and audits it twice, its cold days counted by
    /// their totals and then read whole; answers both reports.
    pub async fn stop_and_audit_cold_days(
        self,
    ) -> Result<(hongbao_domain::audit::AuditReport, hongbao_domain::audit::AuditReport)> {
        let Server { dir, running, store, database, .. } = self;
        let path = running.data.path.clone();
        let by_totals = stop_audited(running, &store, hongbao::ColdDays::Totals).await?;
        let by_rows =
            tokio::task::spawn_blocking(move || hongbao::audit_data(&path, &store, hongbao::ColdDays::Rows)).await??;
        assert!(by_rows.ok(), "{by_rows}");
        drop((dir, database));
        Ok((by_totals, by_rows))
    }
}

async fn stop_audited(
    running: hongbao::Running,
    store: &hongbao::StoreChoice,
    cold: hongbao::ColdDays,
) -> Result<hongbao_domain::audit::AuditReport> {
    let path = running.data.path.clone();
    running.stop().await?;
    let store = store.clone();
    let report = tokio::task::spawn_blocking(move || hongbao::audit_data(&path, &store, cold)).await??;
    assert!(report.ok(), "{report}");
    Ok(report)
}
