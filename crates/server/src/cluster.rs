//! One node of several: what the HTTP layer does when a set is held by
//! another node. The node's lease keeper (`hongbao_node::cluster`) knows
//! who holds what (`Directory`); this module forwards requests to the
//! holder, carries mail between sets on different nodes (`Courier`), and
//! takes mail from other nodes (`POST /v1/internal/mail`).
//!
//! **Forwarding.** A handler that finds its set held elsewhere answers with
//! `Elsewhere(set)` (from `EngineError::NotHere`, before anything was
//! queued). The layer here then sends the same request (its buffered body,
//! its headers, marked `x-hongbao-forwarded`) to the holder over kept-alive
//! connections, and answers what the holder answered. While the set moves
//! (no holder yet, or the holder says it no longer holds it) it asks again
//! every `RETRY_EVERY` for at most `FORWARD_WAIT_MAX`, then answers 503
//! `set_moving` with `Retry-After`. A forwarded request is never forwarded
//! again: a node that does not hold the set answers 503 with
//! `x-hongbao-elsewhere`, and the first node asks again.
//!
//! A write is sent to a new holder again only when it is known unapplied:
//! the holder refused it as not held, or the connection failed before the
//! request went out. Any other failure after the request went out (a
//! timeout: the holder may be paused) answers 408, as any request whose
//! outcome is unknown: the `Idempotency-Key` or the repeat of an open
//! settles it. Reads are sent again on any failure.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hongbao_domain::ledger::claim_ref;
use hongbao_domain::{Amount, Millis, PacketId, SetId, UserId};
use hongbao_engine::{Credit, Engine, Mail, RemotePost};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::AppState;
use crate::auth::{Admin, SharedAuth};
use crate::error::{ApiError, CLUSTER_UNAVAILABLE, INTERNAL, INVALID_BODY, INVALID_PEER};
use crate::openapi::{ADMIN_AUTH, TAG_CLUSTER, errors};

/// Marks a request one node sent another: never forwarded again.
pub const FORWARDED: &str = "x-hongbao-forwarded";
/// On a 503: the set this node does not hold (the sender asks again).
pub const ELSEWHERE: &str = "x-hongbao-elsewhere";
/// A node's peer token, on node-to-node routes.
pub const PEER: &str = "x-hongbao-peer";

/// The longest a request waits for its set to find a holder: past a
/// takeover (the lease, then the new holder's recovery).
pub const FORWARD_WAIT_MAX: Duration = Duration::from_secs(5);
/// How often a request asks again while its set moves.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// The longest one forwarded request may take before its answer counts as
/// lost (the holder may be paused).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer token lives; a new one is made well before.
const PEER_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Mail waiting for the courier; past it mail is dropped (and resent by
/// its set's outbox).
const COURIER_QUEUE: usize = 65_536;
/// Messages per node-to-node request at most.
const MAIL_PER_REQUEST_MAX: usize = 1024;

/// Marks a request forwarded by a node that proved itself with a peer
/// token (a request extension; see `auth::Origin`).
#[derive(Clone, Copy, Debug)]
pub struct PeerForwarded;

/// The set a handler found held elsewhere (a response extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elsewhere(pub SetId);

/// Where a set is served now, as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    Here,
    /// Another node, at this address (`host:port`).
    Node(String),
    /// No live node holds it now (it is moving).
    Unknown,
}

/// Who holds which set: kept by the node's lease keeper.
pub trait Directory: Send + Sync + Debug + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;
    fn holder(&self, set: SetId) -> Holder;
    /// Asks the coordinator again soon (a forward found the set moved).
    fn refresh(&self);
    /// The cluster as the coordinator sees it, for `GET /v1/admin/cluster`.
    /// Blocks (it reads the database).
    fn status(&self) -> Result<Value, String>;
}

type HttpClient = Client<HttpConnector, http_body_util::Full<Bytes>>;

/// The node's part in a cluster, shared by the forwarding layer, the
/// courier and the node-to-node route.
#[derive(Debug)]
pub struct Cluster {
    pub directory: Arc<dyn Directory>,
    auth: Arc<SharedAuth>,
    client: HttpClient,
}

impl Cluster {
    pub fn new(directory: Arc<dyn Directory>, auth: Arc<SharedAuth>) -> Cluster {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Cluster { directory, auth, client }
    }

    fn peer_token(&self) -> String {
        let expires = Millis(system_now().0 + PEER_TOKEN_TTL.as_millis() as i64);
        self.auth.current().issue_peer(self.directory.node_id(), expires)
    }

    /// Sends `request` to `addr`; answers the holder's response, or why not
    /// (`sent`: whether the request may have reached the holder).
    async fn send(&self, request: hyper::Request<http_body_util::Full<Bytes>>) -> Result<Response, Failed> {
        match tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(request)).await {
            Err(_) => Err(Failed { sent: true, why: "no answer in time".into() }),
            Ok(Err(error)) => Err(Failed { sent: !error.is_connect(), why: error.to_string() }),
            Ok(Ok(response)) => {
                let (parts, body) = response.into_parts();
                if is_event_stream(&parts.headers) {
                    // An event stream goes on as long as the client reads
                    // it: passed through as it comes, never gathered.
                    return Ok(Response::from_parts(parts, Body::new(body)));
                }
                match tokio::time::timeout(FORWARD_TIMEOUT, body.collect()).await {
                    Ok(Ok(body)) => Ok(Response::from_parts(parts, Body::from(body.to_bytes()))),
                    _ => Err(Failed { sent: true, why: "the answer's body was cut".into() }),
                }
            }
        }
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"))
}

/// Peer tokens live on the wall clock: nodes share it, whatever clock
/// their engines run on (a test's manual one).
fn system_now() -> Millis {
    use hongbao_engine::Clock;
    hongbao_engine::SystemClock.now()
}

/// The node a request's peer token names, if it carries a valid one.
fn peer_of(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let token = headers.get(PEER)?.to_str().ok()?;
    state.auth.current().verify_peer(token, system_now())
}

struct Failed {
    sent: bool,
    why: String,
}

/// The forwarding layer (see the module doc). Without a cluster it passes
/// the request through untouched.
pub(crate) async fn forward(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED) {
        return next.run(arrived(&state, request)).await;
    }
    let (parts, body) = request.into_parts();
    let deadline = state.config.timeouts.body;
    let limit = state.send_body_max;
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Err(_) => return ApiError::request_timeout("the body", deadline).into_response(),
        Ok(Err(_)) => return ApiError::body_too_large(limit).into_response(),
        Ok(Ok(bytes)) => bytes,
    };
    let response = next.clone().run(rebuilt(&parts, bytes.clone())).await;
    let Some(&Elsewhere(set)) = response.extensions().get::<Elsewhere>() else {
        return response;
    };
    let started = Instant::now();
    loop {
        match cluster.directory.holder(set) {
            Holder::Here => {
                let response = next.clone().run(rebuilt(&parts, bytes.clone())).await;
                if response.extensions().get::<Elsewhere>().is_none() {
                    return response;
                }
            }
            Holder::Node(addr) => {
                if let Some(answer) = forward_once(&cluster, set, &addr, &parts, &bytes).await {
                    return answer;
                }
            }
            Holder::Unknown => {}
        }
        if started.elapsed() >= FORWARD_WAIT_MAX {
            return ApiError::set_moving().into_response();
        }
        cluster.directory.refresh();
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// A request another node forwarded: marked as the peer's when its peer
/// token proves it (the user's limits were charged there).
fn arrived(state: &AppState, mut request: Request) -> Request {
    if peer_of(state, request.headers()).is_some() {
        request.extensions_mut().insert(PeerForwarded);
    }
    request
}

/// The client's request again, from its parts and its buffered body.
fn rebuilt(parts: &axum::http::request::Parts, bytes: Bytes) -> Request {
    let mut request = Request::new(Body::from(bytes));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// Sends the request to `addr` once: the answer to give the client, or
/// `None` to ask again (the node no longer holds the set, or the request
/// is known not to have been applied there).
async fn forward_once(
    cluster: &Cluster,
    set: SetId,
    addr: &str,
    parts: &axum::http::request::Parts,
    bytes: &Bytes,
) -> Option<Response> {
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let Some(outgoing) = outgoing(&parts.method, addr, path, &parts.headers, cluster, bytes) else {
        return Some(ApiError::set_moving().into_response());
    };
    match cluster.send(outgoing).await {
        Ok(answer) if !answer.headers().contains_key(ELSEWHERE) => Some(answer),
        Ok(_) => None,
        Err(failed) if failed.sent && parts.method != Method::GET => {
            tracing::warn!(%set, %addr, why = failed.why, "a forwarded write's answer was lost");
            let what = "the answer of the node holding this data";
            Some(ApiError::request_timeout(what, FORWARD_TIMEOUT).into_response())
        }
        Err(failed) => {
            tracing::debug!(%set, %addr, why = failed.why, "forwarding failed; asking again");
            None
        }
    }
}

/// The request to send the holder: the client's method, path, headers and
/// body, marked as forwarded. Hop-by-hop headers stay behind.
fn outgoing(
    method: &Method,
    addr: &str,
    path: &str,
    headers: &HeaderMap,
    cluster: &Cluster,
    body: &Bytes,
) -> Option<hyper::Request<http_body_util::Full<Bytes>>> {
    let mut request = hyper::Request::builder().method(method.clone()).uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        let hop = ["connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length", PEER];
        if !hop.contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    request = request.header(FORWARDED, HeaderValue::from_str(cluster.directory.node_id()).ok()?);
    request = request.header(PEER, HeaderValue::from_str(&cluster.peer_token()).ok()?);
    request.body(http_body_util::Full::new(body.clone())).ok()
}

// ---------------------------------------------------------------------------
// Mail between nodes
// ---------------------------------------------------------------------------

/// Carries mail for sets held by other nodes: queued without waiting (a
/// writer thread posts it), sent by a task in requests of up to
/// `MAIL_PER_REQUEST_MAX` messages per holder. Mail that cannot go (no
/// holder now, a failed request) is dropped: the outbox resends credits,
/// and an acknowledgement is sent again with the next resend.
#[derive(Debug)]
pub struct Courier {
    queue: mpsc::Sender<(SetId, Mail)>,
}

impl Courier {
    /// Starts the courier's task on the current runtime.
    pub fn start(cluster: Arc<Cluster>) -> Courier {
        let (queue, mail) = mpsc::channel(COURIER_QUEUE);
        tokio::spawn(carry(cluster, mail));
        Courier { queue }
    }
}

impl RemotePost for Courier {
    fn post(&self, target: SetId, mail: Mail) {
        let _ = self.queue.try_send((target, mail));
    }
}

async fn carry(cluster: Arc<Cluster>, mut mail: mpsc::Receiver<(SetId, Mail)>) {
    let mut taken = Vec::new();
    while mail.recv_many(&mut taken, MAIL_PER_REQUEST_MAX).await > 0 {
        let mut by_node: Vec<(String, Vec<Value>)> = Vec::new();
        for (set, message) in taken.drain(..) {
            let Holder::Node(addr) = cluster.directory.holder(set) else { continue };
            let encoded = encode_mail(set, &message);
            match by_node.iter_mut().find(|(node, _)| *node == addr) {
                Some((_, messages)) => messages.push(encoded),
                None => by_node.push((addr, vec![encoded])),
            }
        }
        for (addr, body, count) in by_node.iter().flat_map(|(addr, messages)| {
            mail_bodies(messages).into_iter().map(move |(count, body)| (addr.clone(), body, count))
        }) {
            let cluster = cluster.clone();
            // The requests of a round go out together, without waiting for
            // one holder before the next.
            tokio::spawn(async move {
                let request = hyper::Request::post(format!("http://{addr}/v1/internal/mail"))
                    .header(PEER, cluster.peer_token())
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(body));
                let Ok(request) = request else { return };
                match cluster.send(request).await {
                    Ok(answer) if answer.status().is_success() => {}
                    // Refused by a live node (other keys? a bug?): said
                    // aloud, unlike a node that is down or moving.
                    Ok(answer) => {
                        tracing::warn!(%addr, count, status = %answer.status(), "mail refused; the outbox resends")
                    }
                    Err(failed) => tracing::debug!(%addr, count, why = failed.why, "mail not sent; the outbox resends"),
                }
            });
        }
    }
}

/// `{"mail":[…]}` bodies of `messages`, each under the API's body limit
/// (a bigger one would be refused 413 and its mail resent forever in the
/// same too-big batches), with how many messages each holds.
fn mail_bodies(messages: &[Value]) -> Vec<(usize, Bytes)> {
    const OPEN: &str = "{\"mail\":[";
    const CLOSE: &str = "]}";
    let limit = crate::BODY_BYTES_MAX - 256;
    let mut bodies = Vec::new();
    let (mut body, mut count) = (String::from(OPEN), 0);
    for message in messages {
        let text = message.to_string();
        if count > 0 && body.len() + 1 + text.len() + CLOSE.len() > limit {
            body.push_str(CLOSE);
            bodies.push((count, Bytes::from(std::mem::replace(&mut body, String::from(OPEN)))));
            count = 0;
        }
        if count > 0 {
            body.push(',');
        }
        body.push_str(&text);
        count += 1;
    }
    if count > 0 {
        body.push_str(CLOSE);
        bodies.push((count, Bytes::from(body)));
    }
    bodies
}

fn encode_mail(set: SetId, mail: &Mail) -> Value {
    match mail {
        Mail::Credit { credit, from, .. } => json!({
            "set": set.0, "kind": "credit", "from": from.0, "reference": credit.reference,
            "user": credit.user.as_str(), "amount": credit.amount.fen(),
            "packet_id": credit.packet_id.to_string(), "at": credit.at.0,
        }),
        Mail::CreditAck { reference } => json!({ "set": set.0, "kind": "ack", "reference": reference }),
    }
}

/// A message as another node sent it; `None` if it is not one. A credit's
/// reference must be its claim's; mail that crossed nodes is never `first`
/// (see `Mail::Credit`).
fn decode_mail(value: &Value, sets: u16) -> Option<(SetId, Mail)> {
    let set = SetId(u16::try_from(value["set"].as_u64()?).ok().filter(|set| *set < sets)?);
    let reference = value["reference"].as_str()?.to_owned();
    match value["kind"].as_str()? {
        "ack" => Some((set, Mail::CreditAck { reference })),
        "credit" => {
            let from = SetId(u16::try_from(value["from"].as_u64()?).ok().filter(|from| *from < sets)?);
            let user = UserId::parse(value["user"].as_str()?).ok()?;
            let amount = Amount::from_fen(value["amount"].as_u64()?)?;
            let packet_id: PacketId = value["packet_id"].as_str()?.parse().ok()?;
            let at = Millis(value["at"].as_i64()?);
            if reference != claim_ref(packet_id, &user) || SetId::of_user(&user, sets) != set {
                return None;
            }
            let credit = Credit { reference, user, amount, packet_id, at };
            Some((set, Mail::Credit { credit, from, first: false }))
        }
        _ => None,
    }
}

/// `POST /v1/internal/mail`: mail from another node of the cluster, for
/// sets held here. Answers how many messages were taken; the rest (a set
/// not held here, a full mailbox) are resent by their senders.
#[utoipa::path(
    post,
    path = "/v1/internal/mail",
    tag = TAG_CLUSTER,
    security(("peer_token" = [])),
    request_body = schema::MailBody,
    responses((status = 200, description = "How many messages were taken", body = schema::MailTaken), MailErrors),
)]
pub async fn take_mail(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if peer_of(&state, &headers).is_none() {
        return Err(ApiError::invalid_peer());
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| ApiError::invalid_body(e.to_string()))?;
    let messages = value["mail"].as_array().ok_or_else(|| ApiError::invalid_body("mail must be an array".into()))?;
    let engine: &Engine = &state.engine;
    let sets = engine.sets();
    let (mut taken, mut refused) = (0, 0);
    for message in messages {
        let (set, mail) = decode_mail(message, sets)
            .ok_or_else(|| ApiError::invalid_body("a message is not mail between sets".into()))?;
        match engine.deliver(set, mail) {
            true => taken += 1,
            false => refused += 1,
        }
    }
    Ok(Json(json!({ "taken": taken, "not_taken": refused })))
}

/// `GET /v1/admin/cluster`: nodes, sets, owners, epochs and lease ages.
#[utoipa::path(
    get,
    path = "/v1/admin/cluster",
    tag = TAG_CLUSTER,
    security(("admin_token" = [])),
    responses((status = 200, description = "The cluster as this node sees it", body = schema::ClusterAnswer), StatusErrors),
)]
pub async fn status(State(state): State<AppState>, Admin(admin): Admin) -> Result<Response, ApiError> {
    tracing::debug!(%admin, "admin read the cluster's status");
    let Some(cluster) = state.cluster.clone() else {
        let sets: Vec<u16> = state.engine.held_sets().iter().map(|set| set.0).collect();
        return Ok(Json(json!({ "mode": "single", "sets": sets })).into_response());
    };
    let read = tokio::task::spawn_blocking(move || cluster.directory.status()).await;
    match read {
        Ok(Ok(mut status)) => {
            // This node's own count: a node that was paused past its lease
            // and came back shows here how many writes the fence refused.
            status["fenced_writes"] = json!(state.engine.fenced_writes());
            Ok(Json(status).into_response())
        }
        Ok(Err(why)) => {
            tracing::warn!(%why, "reading the cluster's status failed");
            Err(ApiError::of(CLUSTER_UNAVAILABLE, "the cluster's status could not be read; retry shortly"))
        }
        Err(join) => Err(ApiError::from(hongbao_engine::EngineError::Storage(join.to_string()))),
    }
}

errors!(MailErrors: &[INVALID_PEER, INVALID_BODY]);
errors!(StatusErrors: ADMIN_AUTH, &[CLUSTER_UNAVAILABLE, INTERNAL]);

/// The schemas of this module's JSON, which it writes and reads as
/// `serde_json::Value`s (`encode_mail`, `decode_mail`, and the
/// `Directory`'s status): each field here is one it writes.
pub mod schema {
    use serde::Serialize;
    use utoipa::ToSchema;

    /// `POST /v1/internal/mail`'s body.
    #[derive(Serialize, ToSchema)]
    pub struct MailBody {
        pub mail: Vec<MailMessage>,
    }

    /// A message between sets on different nodes.
    #[derive(Serialize, ToSchema)]
    #[serde(untagged)]
    pub enum MailMessage {
        Credit(Credit),
        Ack(Ack),
    }

    /// A share opened in one set, for a wallet in another.
    #[derive(Serialize, ToSchema)]
    pub struct Credit {
        /// The set it is for.
        pub set: u16,
        #[schema(schema_with = credit)]
        pub kind: String,
        /// The set it is from.
        pub from: u16,
        /// The claim's ledger reference.
        pub reference: String,
        pub user: String,
        /// In fen.
        pub amount: u64,
        pub packet_id: String,
        /// When the share was opened, Unix milliseconds.
        pub at: i64,
    }

    /// A credit's acknowledgement, back to its sender's set.
    #[derive(Serialize, ToSchema)]
    pub struct Ack {
        pub set: u16,
        #[schema(schema_with = ack)]
        pub kind: String,
        pub reference: String,
    }

    fn credit() -> utoipa::openapi::schema::ObjectBuilder {
        crate::views::one_of(["credit"])
    }

    fn ack() -> utoipa::openapi::schema::ObjectBuilder {
        crate::views::one_of(["ack"])
    }

    /// The answer to mail: messages taken, and not (a set not held here, a
    /// full mailbox: their senders send them again).
    #[derive(Serialize, ToSchema)]
    pub struct MailTaken {
        pub not_taken: u64,
        pub taken: u64,
    }

    /// `GET /v1/admin/cluster`: a node alone, or one of several.
    #[derive(Serialize, ToSchema)]
    #[serde(untagged)]
    pub enum ClusterAnswer {
        Single(Single),
        Cluster(Cluster),
    }

    /// A node alone: every set is its own.
    #[derive(Serialize, ToSchema)]
    pub struct Single {
        #[schema(schema_with = single)]
        pub mode: String,
        pub sets: Vec<u16>,
    }

    fn single() -> utoipa::openapi::schema::ObjectBuilder {
        crate::views::one_of(["single"])
    }

    /// A node of several, as the coordinator sees the cluster.
    #[derive(Serialize, ToSchema)]
    pub struct Cluster {
        pub node_id: String,
        pub lease_ms: i64,
        /// Writes this node's fence refused (it had lost the set).
        pub fenced_writes: u64,
        pub nodes: Vec<Node>,
        pub sets: Vec<SetLease>,
    }

    #[derive(Serialize, ToSchema)]
    pub struct Node {
        pub node_id: String,
        /// Where the other nodes reach it.
        pub advertise: String,
        pub live: bool,
        pub heartbeat_age_ms: i64,
        /// Unix milliseconds.
        pub started_at: i64,
        pub sets: Vec<u16>,
    }

    /// A set's lease; the times are null for a set no node holds now.
    #[derive(Serialize, ToSchema)]
    pub struct SetLease {
        pub set: u16,
        pub owner: Option<String>,
        pub epoch: i64,
        pub lease_age_ms: Option<i64>,
        pub expires_in_ms: Option<i64>,
        pub held_for_ms: Option<i64>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit(n: u32) -> Mail {
        let user = UserId::parse(&format!("user-{n:0>40}")).unwrap();
        let packet_id: PacketId = "20270128-3-1742-9f3a1c2e77b04d15".parse().unwrap();
        let reference = claim_ref(packet_id, &user);
        let credit = Credit { reference, user, amount: Amount::from_fen(100).unwrap(), packet_id, at: Millis(1) };
        Mail::Credit { credit, from: SetId(3), first: true }
    }

    #[test]
    fn mail_goes_in_bodies_the_api_takes_and_comes_back_whole_and_never_first() {
        let messages: Vec<Value> = (0..1000).map(|n| encode_mail(SetId(1), &credit(n))).collect();
        let bodies = mail_bodies(&messages);
        assert!(bodies.len() > 1, "1000 credits do not fit one body");
        assert_eq!(bodies.iter().map(|(count, _)| count).sum::<usize>(), 1000);
        for (count, body) in &bodies {
            assert!(body.len() <= crate::BODY_BYTES_MAX, "a body of {} bytes", body.len());
            let value: Value = serde_json::from_slice(body).unwrap();
            let mail = value["mail"].as_array().unwrap();
            assert_eq!(mail.len(), *count);
            for message in mail {
                // Decoded for the set the user lives in (of 8 sets here).
                let sets = 8;
                let Some((set, Mail::Credit { first, .. })) = decode_mail(message, sets) else {
                    let user = UserId::parse(message["user"].as_str().unwrap()).unwrap();
                    assert_ne!(SetId::of_user(&user, sets).0, 1, "refused only as another set's: {message}");
                    continue;
                };
                assert_eq!(set, SetId(1));
                assert!(!first, "mail that crossed nodes is never a first delivery");
            }
        }
        assert!(mail_bodies(&[]).is_empty());
    }
}
