//! Driving a server that is already running (`--target URL`): everything
//! goes through its HTTP API with its admin token. Users get their tokens
//! from `POST /v1/admin/tokens` before a run, packets are made with real
//! deposits and sends, and every acknowledged open is checked afterwards
//! against `GET /v1/packets/{id}`. The server's own invariants are for
//! `hongbao audit` on its data directory once it is stopped.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hongbao_domain::{PacketId, UserId};
use hongbao_engine::{Clock, SystemClock};
use hongbao_server::Auth;
use hongbao_server::token::expiry;
use hyper::Method;
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::client::Connection;
use crate::hongbao::{Ack, AuditResult, Plan};

/// Requests in flight while preparing a run.
const SETUP_PARALLEL: usize = 32;

/// Where user tokens come from: signed locally with an in-process server's
/// secret, or issued by a target server before the run.
pub enum Tokens {
    Signed(Arc<Auth>),
    Issued(HashMap<UserId, String>),
}

impl Tokens {
    pub fn of(&self, user: &UserId) -> String {
        match self {
            // Valid for a day: longer than any run.
            Tokens::Signed(auth) => auth.issue(user, expiry(SystemClock.now(), Duration::from_secs(24 * 3600))),
            // A user without a token gets none: the server answers 401 and
            // the request counts as an error.
            Tokens::Issued(tokens) => tokens.get(user).cloned().unwrap_or_default(),
        }
    }
}

pub struct Target {
    pub addr: SocketAddr,
    admin: String,
}

async fn call(connection: &mut Connection, path: &str, token: &str, body: Value) -> Result<Value> {
    let (status, answer) =
        connection.request(Method::POST, path, Some(token), Some(Bytes::from(body.to_string()))).await?;
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path} answered {status}: {answer}");
    }
    Ok(answer)
}

impl Target {
    /// `url` is `http://host:port`; the server must answer `/healthz`.
    pub async fn connect(url: &str, admin: String) -> Result<Target> {
        let authority = url.strip_prefix("http://").context("--target must be an http:// URL")?;
        let authority = authority.trim_end_matches('/');
        let addr = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to nothing"))?;
        let mut connection = Connection::open(addr).await?;
        let (status, _) = connection.request(Method::GET, "/healthz", None, None).await?;
        if status != 200 {
            bail!("{url}/healthz answered {status}");
        }
        Ok(Target { addr, admin })
    }

    /// Issues tokens for `users`, many requests at a time.
    pub async fn tokens(&self, users: Vec<UserId>) -> Result<Tokens> {
        let chunks: Vec<Vec<UserId>> =
            users.chunks(users.len().div_ceil(SETUP_PARALLEL).max(1)).map(<[_]>::to_vec).collect();
        let tasks: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (addr, admin) = (self.addr, self.admin.clone());
                tokio::spawn(async move {
                    let mut connection = Connection::open(addr).await?;
                    let mut tokens = Vec::with_capacity(chunk.len());
                    for user in chunk {
                        let answer =
                            call(&mut connection, "/v1/admin/tokens", &admin, json!({"user": user.as_str()})).await?;
                        let token = answer["token"].as_str().context("no token in the answer")?.to_owned();
                        tokens.push((user, token));
                    }
                    anyhow::Ok(tokens)
                })
            })
            .collect();
        let mut tokens = HashMap::new();
        for task in tasks {
            tokens.extend(task.await??);
        }
        Ok(Tokens::Issued(tokens))
    }

    /// Deposits `amount` for each of `users`.
    pub async fn fund(&self, users: &[UserId], amount: u64) -> Result<()> {
        let mut connection = Connection::open(self.addr).await?;
        for user in users {
            call(&mut connection, "/v1/admin/deposits", &self.admin, json!({"user": user.as_str(), "amount": amount}))
                .await?;
        }
        Ok(())
    }

    /// `packets` lucky packets of `count` shares from as many senders, and
    /// tokens for their senders and for the openers of a cycling plan.
    pub async fn prepare(&self, packets: usize, count: u32) -> Result<(Plan, Tokens)> {
        let senders: Vec<UserId> = (0..packets).map(|p| UserId::parse(&format!("ts{p}")).expect("valid")).collect();
        let openers = (0..=packets).map(|u| UserId::parse(&format!("u{u}")).expect("valid"));
        let tokens = self.tokens(senders.iter().cloned().chain(openers).collect()).await?;
        let total = u64::from(count) * 2;
        self.fund(&senders, total).await?;
        let mut connection = Connection::open(self.addr).await?;
        let mut ids = Vec::with_capacity(packets);
        for sender in &senders {
            let body = json!({"kind": "lucky", "total_amount": total, "count": count});
            let packet = call(&mut connection, "/v1/packets", &tokens.of(sender), body).await?;
            ids.push(packet["id"].as_str().and_then(|id| id.parse().ok()).context("no packet id in the answer")?);
        }
        Ok((Plan::cycling(ids), tokens))
    }

    /// Checks every acknowledged open against the packet's claims as the
    /// server shows them.
    pub async fn verify(&self, acked: &[Ack], tokens: &Tokens) -> Result<AuditResult> {
        let mut connection = Connection::open(self.addr).await?;
        let packets: HashSet<PacketId> = acked.iter().map(|ack| ack.packet).collect();
        let mut claims = HashMap::new();
        for id in packets {
            let reader = &acked.iter().find(|ack| ack.packet == id).expect("an ack of this packet").user;
            let path = format!("/v1/packets/{id}");
            let (status, body) = connection.request(Method::GET, &path, Some(&tokens.of(reader)), None).await?;
            let detail: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status != 200 {
                bail!("{path} answered {status}");
            }
            for claim in detail["claims"].as_array().into_iter().flatten() {
                let user = claim["user"].as_str().unwrap_or_default().to_owned();
                claims.insert((id, user), claim["amount"].as_u64().unwrap_or(0));
            }
        }
        let violations: Vec<String> = acked
            .iter()
            .filter(|ack| claims.get(&(ack.packet, ack.user.to_string())) != Some(&ack.amount))
            .map(|ack| {
                format!("acknowledged open of {} by {} for {} is not on the server", ack.packet, ack.user, ack.amount)
            })
            .collect();
        Ok(AuditResult {
            ok: violations.is_empty(),
            summary: "acknowledged opens checked through the API; run `hongbao audit` on the target's data \
                      directory once it is stopped"
                .into(),
            acked: acked.len(),
            violations,
        })
    }
}
