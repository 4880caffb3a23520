//! One chaos client: a seeded stream of deposits, sends (some expiring in
//! seconds), grabs, opens, withdrawals and their settling by the admin. Every request is retried across server deaths
//! with the same idempotency key until it is answered, so a retry can only
//! be replayed, never applied twice. With several nodes each attempt goes to
//! the next live node in turn: any node takes any request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hongbao_bench::client::Connection;
use hongbao_domain::UserId;
use hongbao_domain::hash::mix64;
use hongbao_engine::{Clock, SystemClock};
use hongbao_server::Auth;
use hongbao_server::token::expiry;
use hyper::Method;
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::journal::{Acked, Journal};
use hongbao_bench::child::Server;

/// How long a request keeps retrying past the end of the run: long enough
/// to outlive a restart, short enough to end.
const RETRY_GRACE: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(20);
const SENDERS: u64 = 20;
/// Openers: many enough that none of them meets the per-user open limit.
const OPENERS: u64 = 1_000;

/// Where the clients send their requests: one server, or the nodes of a
/// cluster.
pub trait Targets: Send + Sync {
    /// How many servers there are.
    fn count(&self) -> usize;
    /// Server `index`'s address and how many times it was restarted, or
    /// `None` while it is known to be dead.
    fn target(&self, index: usize) -> Option<(SocketAddr, u64)>;
}

impl Targets for Server {
    fn count(&self) -> usize {
        1
    }

    fn target(&self, _index: usize) -> Option<(SocketAddr, u64)> {
        Some(self.addr())
    }
}

pub struct Context {
    targets: Arc<dyn Targets>,
    journal: Arc<Journal>,
    auth: Arc<Auth>,
    admin: String,
    seed: u64,
    client: u64,
    /// One kept-alive connection per target, with the restart it was made to.
    connections: Vec<Option<(u64, Connection)>>,
    /// The target the next attempt goes to (round robin).
    next: usize,
}

impl Context {
    pub fn new(
        targets: Arc<dyn Targets>,
        journal: Arc<Journal>,
        auth: Arc<Auth>,
        admin: String,
        seed: u64,
        client: u64,
    ) -> Context {
        let connections = (0..targets.count()).map(|_| None).collect();
        // Clients start on different nodes, so the load is spread from the start.
        let next = client as usize;
        Context { targets, journal, auth, admin, seed, client, connections, next }
    }

    /// The next live target in turn, and its address and restarts.
    fn next_target(&mut self) -> Option<(usize, SocketAddr, u64)> {
        let count = self.targets.count();
        (0..count).find_map(|_| {
            let index = self.next % count;
            self.next = self.next.wrapping_add(1);
            self.targets.target(index).map(|(addr, restarts)| (index, addr, restarts))
        })
    }

    fn token(&self, user: &str) -> String {
        // Valid for a day: longer than any run.
        let expires_at = expiry(SystemClock.now(), std::time::Duration::from_secs(24 * 3600));
        self.auth.issue(&UserId::parse(user).expect("valid user"), expires_at)
    }

    /// Sends until answered (any status but 503), across restarts, with the
    /// same idempotency key every time. An attempt that fails (a node killed,
    /// a set moving) is not acknowledged; the next goes to the next node.
    async fn request(
        &mut self,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<Value>,
        give_up: Instant,
    ) -> Option<(u16, Value)> {
        let headers: Vec<(&str, &str)> = key.map(|key| ("idempotency-key", key)).into_iter().collect();
        let body = body.map(|value| Bytes::from(value.to_string()));
        while Instant::now() < give_up {
            if let Some((index, addr, restarts)) = self.next_target() {
                let slot = &mut self.connections[index];
                if slot.as_ref().is_none_or(|(seen, _)| *seen != restarts) {
                    *slot = Connection::open(addr).await.ok().map(|connection| (restarts, connection));
                }
                if let Some((_, connection)) = slot {
                    match connection.request_with(Method::POST, path, Some(token), &headers, body.clone()).await {
                        Ok((status, answer)) if status != 503 => {
                            return Some((status.as_u16(), serde_json::from_slice(&answer).unwrap_or(Value::Null)));
                        }
                        Ok(_) => {}
                        Err(_) => *slot = None,
                    }
                }
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        None
    }
}

pub async fn run(mut context: Context, deadline: Instant) -> Result<()> {
    let give_up = deadline + RETRY_GRACE;
    let mut n = 0u64;
    while Instant::now() < deadline {
        let draw = mix64(context.seed ^ (context.client << 40) ^ n);
        n += 1;
        match draw % 100 {
            0..10 => deposit(&mut context, draw, n, give_up).await,
            10..25 => send(&mut context, draw, n, give_up).await,
            25..37 => grab(&mut context, draw, give_up).await,
            37..41 => withdraw(&mut context, draw, n, give_up).await,
            41..44 => settle(&mut context, draw, give_up).await,
            _ => open(&mut context, draw, give_up).await,
        }
    }
    Ok(())
}

async fn deposit(context: &mut Context, draw: u64, n: u64, give_up: Instant) {
    let user = format!("u{}", (draw >> 8) % SENDERS);
    let amount = 1_000 + (draw >> 16) % 4_000;
    let key = format!("d{}-{n}", context.client);
    let admin = context.admin.clone();
    let body = json!({ "user": user, "amount": amount });
    let path = "/v1/admin/deposits";
    let answer = context.request(path, &admin, Some(&key), Some(body), give_up).await;
    if let Some((200, _)) = answer {
        context.journal.ack(Acked::Deposit { user, key, amount: amount as i64 });
    }
}

async fn send(context: &mut Context, draw: u64, n: u64, give_up: Instant) {
    let sender = format!("u{}", (draw >> 8) % SENDERS);
    let count = 1 + (draw >> 16) % 10;
    let total = count * (10 + (draw >> 24) % 190);
    let expires_in_s = if (draw >> 32).is_multiple_of(3) { 1 + (draw >> 40) % 3 } else { 600 };
    let key = format!("s{}-{n}", context.client);
    context.journal.tried_send(&sender, &key);
    let token = context.token(&sender);
    let body = json!({ "kind": "lucky", "total_amount": total, "count": count, "expires_in_s": expires_in_s });
    if let Some((201, packet)) = context.request("/v1/packets", &token, Some(&key), Some(body), give_up).await
        && let Some(id) = packet["id"].as_str()
    {
        context.journal.ack(Acked::Send { id: id.to_owned(), sender, total: total as i64 });
    }
}

/// A sender cashes some money out (retried under one key: once at most).
async fn withdraw(context: &mut Context, draw: u64, n: u64, give_up: Instant) {
    let user = format!("u{}", (draw >> 8) % SENDERS);
    let amount = 50 + (draw >> 16) % 500;
    let key = format!("w{}-{n}", context.client);
    context.journal.tried_withdrawal(&user, &key);
    let token = context.token(&user);
    let body = json!({ "amount": amount });
    if let Some((201, withdrawal)) = context.request("/v1/withdrawals", &token, Some(&key), Some(body), give_up).await
        && let Some(id) = withdrawal["id"].as_str()
    {
        context.journal.ack(Acked::Withdraw { id: id.to_owned(), user, amount: amount as i64 });
    }
}

/// The admin settles a withdrawal one way or the other; settling it again
/// either way is as likely as settling it first.
async fn settle(context: &mut Context, draw: u64, give_up: Instant) {
    let Some(id) = context.journal.withdrawal(draw) else { return };
    let how = if (draw >> 20).is_multiple_of(2) { "complete" } else { "fail" };
    let admin = context.admin.clone();
    let path = format!("/v1/admin/withdrawals/{id}/{how}");
    if let Some((200, settled)) = context.request(&path, &admin, None, Some(json!({})), give_up).await
        && let Some(status) = settled["status"].as_str()
    {
        context.journal.ack(Acked::Settle { id, status: status.to_owned() });
    }
}

async fn grab(context: &mut Context, draw: u64, give_up: Instant) {
    let Some(packet) = context.journal.packet(draw) else { return };
    let token = context.token(&format!("o{}", (draw >> 8) % OPENERS));
    let _ = context.request(&format!("/v1/packets/{packet}/grab"), &token, None, None, give_up).await;
}

async fn open(context: &mut Context, draw: u64, give_up: Instant) {
    let Some(packet) = context.journal.packet(draw) else { return };
    let user = format!("o{}", (draw >> 8) % OPENERS);
    let token = context.token(&user);
    let answer = context.request(&format!("/v1/packets/{packet}/open"), &token, None, None, give_up).await;
    if let Some((200, opened)) = answer
        && let Some(amount) = opened["amount"].as_u64()
    {
        context.journal.ack(Acked::Open { packet, user, amount: amount as i64 });
    }
}
