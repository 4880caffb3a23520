//! What teams deploy in front of the Redis script: a web service. The
//! `redis-lua` run sends the script from the bench straight to Redis, which
//! no phone does; here the same script runs behind an HTTP service, built on
//! hongbao's own HTTP stack (`hongbao_server::listener::serve`: the same
//! hyper connection settings, deadlines and axum routing) and checking the
//! same bearer tokens (`hongbao_server::Auth::verify`, HMAC-SHA256), driven
//! by the very client of `open-http`. What separates it from `open-http` is
//! then what is behind the route: one Lua script, against hongbao's engine,
//! journal and group commit. (`redis-lua-http-durable` runs it on a Redis
//! with `appendfsync always`.)
//!
//! The service answers as hongbao does: 200 `{"status":"opened","amount":n}`,
//! 409 `packet_empty`, 404 `packet_not_found`, 401 for a bad token. It has
//! no per-user rate limits or write gate (a team would put those in a
//! gateway, if anywhere), and nobody audits its answers: the bench has no
//! store to check them against. A packet id's sequence number is the index
//! of its Redis list (`shares:{seq}`, as `redis_lua::load` fills them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use hongbao_domain::{OpenOutcome, PacketId, SetId, UserId};
use hongbao_engine::{Clock, SystemClock};
use hongbao_server::listener::{Timeouts, serve};
use hongbao_server::{ApiError, Auth};
use redis::Script;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::hongbao::Plan;

/// The day in the ids of the service's packets: any valid day will do.
const DAY: u32 = 20_270_128;

/// What the service's one route needs.
struct Service {
    auth: Arc<Auth>,
    pipes: Vec<MultiplexedConnection>,
    /// Round-robin over `pipes`, as a connection pool hands them out.
    next_pipe: AtomicUsize,
    script: Script,
    packets: u64,
}

/// The service, serving on a loopback port until stopped.
pub struct Front {
    pub addr: SocketAddr,
    /// The keys its tokens are checked with; the client signs with them too.
    pub auth: Arc<Auth>,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
}

impl Front {
    /// Serves opens of `packets` packets over `pipes`, with a fresh signing
    /// key made as a new data directory makes its own.
    pub async fn start(pipes: Vec<MultiplexedConnection>, packets: usize) -> Result<Front> {
        let keys = tempfile::tempdir().context("making a directory for the service's keys")?;
        let auth = Arc::new(Auth::new(hongbao_node::keys::load_or_create(keys.path())?)?);
        let service = Arc::new(Service {
            auth: auth.clone(),
            pipes,
            next_pipe: AtomicUsize::new(0),
            script: crate::redis_lua::script(),
            packets: packets as u64,
        });
        let router = Router::new().route("/v1/packets/{id}/open", post(open)).with_state(service);
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the service's port")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, router, Timeouts::default(), async move {
            let _ = stopped.await;
        }));
        Ok(Front { addr, auth, stop, served })
    }

    /// Stops accepting, lets requests in flight finish, and waits for it.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.served.await.context("the service's task failed")??;
        Ok(())
    }
}

/// The ids a client opens: packet `p` is `<DAY>-0-<p>-<nonce>`, which the
/// service maps back to Redis list `p`.
pub fn plan(packets: usize) -> Plan {
    let ids = (0..packets as u64)
        .map(|seq| PacketId::new(DAY, SetId(0), seq, seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    Plan::new(ids)
}

/// The caller a request's bearer token names, refused as hongbao's
/// `Caller` extractor refuses it (401 with the token's own code).
fn caller(headers: &HeaderMap, auth: &Auth) -> Result<UserId, ApiError> {
    let value = headers.get(AUTHORIZATION).ok_or_else(ApiError::missing_token)?;
    let text = value.to_str().map_err(|_| ApiError::malformed_authorization())?;
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => token.trim(),
        _ => return Err(ApiError::malformed_authorization()),
    };
    auth.verify(token, SystemClock.now()).map_err(|error| ApiError::unauthorized(error.code(), error.message()))
}

/// `POST /v1/packets/{id}/open`: the token, the id, then the script.
async fn open(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let user = caller(&headers, &service.auth)?;
    let Path(text) = path.map_err(|_| ApiError::packet_not_found())?;
    let id: PacketId = text.parse().map_err(|_| ApiError::packet_not_found())?;
    if id.day != DAY || id.seq >= service.packets {
        return Err(ApiError::packet_not_found());
    }
    let pipe = service.next_pipe.fetch_add(1, Ordering::Relaxed) % service.pipes.len();
    let mut connection = service.pipes[pipe].clone();
    let answer: redis::RedisResult<i64> = service
        .script
        .key(format!("shares:{}", id.seq))
        .key(format!("claimed:{}", id.seq))
        .key("credits")
        .arg(user.as_str())
        .invoke_async(&mut connection)
        .await;
    match answer {
        Ok(amount) if amount > 0 => Ok(Json(json!({ "status": "opened", "amount": amount }))),
        Ok(-2) => Err(ApiError::open_refused(&OpenOutcome::Empty)),
        // The script keeps the share but answers -1 without it; a bench
        // user never opens a packet twice, so this is never reached.
        Ok(_) => Err(ApiError::conflict("already_opened", "this user already opened this packet")),
        Err(error) => {
            tracing::error!(%error, "the open script failed");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use hongbao_server::token::expiry;
    use std::time::Duration;

    #[test]
    fn a_plan_names_the_packets_the_service_maps_back_to_redis_lists() {
        let plan = plan(5);
        for (index, path) in plan.paths.iter().enumerate() {
            let text = path.strip_prefix("/v1/packets/").and_then(|rest| rest.strip_suffix("/open")).unwrap();
            let id: PacketId = text.parse().unwrap();
            assert_eq!((id.day, id.seq), (DAY, index as u64));
        }
    }

    #[test]
    fn the_service_takes_the_tokens_hongbao_takes_and_refuses_the_rest() {
        let keys = tempfile::tempdir().unwrap();
        let auth = Auth::new(hongbao_node::keys::load_or_create(keys.path()).unwrap()).unwrap();
        let user = UserId::parse("u7").unwrap();
        let token = auth.issue(&user, expiry(SystemClock.now(), Duration::from_secs(60)));
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(caller(&with(&format!("Bearer {token}")), &auth), Ok(user));
        assert_eq!(caller(&HeaderMap::new(), &auth).unwrap_err().code, "missing_token");
        assert_eq!(caller(&with(&token), &auth).unwrap_err().code, "invalid_token");
        assert_eq!(caller(&with(&format!("Bearer {token}x")), &auth).unwrap_err().code, "invalid_token");
        let stale = auth.issue(&UserId::parse("u7").unwrap(), hongbao_domain::Millis(1));
        assert_eq!(caller(&with(&format!("Bearer {stale}")), &auth).unwrap_err().code, "token_expired");
    }
}
