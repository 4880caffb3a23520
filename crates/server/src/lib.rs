//! hongbao's HTTP API: axum routes that translate JSON to engine commands
//! and outcomes back to JSON. Every error is `{"error":{"code","message"}}`
//! with a stable code; bad input is a 4xx, never a 500 or a panic. Every
//! request has deadlines (`listener`, `deadline`, `body`), every user route
//! a rate limit (`rate_limit`), and every write a permit (`admission`).
//! Every route is registered with its OpenAPI description (`openapi`),
//! served at `GET /openapi.json`.

pub mod admission;
pub mod auth;
pub mod body;
pub mod cluster;
pub mod console;
mod deadline;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
mod shards;
pub mod token;
mod views;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use hongbao_engine::Engine;
use tokio::net::TcpListener;

pub use auth::SharedAuth;
pub use error::ApiError;
pub use token::Auth;

use admission::{USER_WRITES_IN_FLIGHT_MAX, WRITES_IN_FLIGHT_MAX, WriteGate};
use listener::Timeouts;
use rate_limit::{RateLimits, Rates};

/// The largest request body. Every request hongbao takes is a small JSON
/// object; anything bigger is refused with 413 before it is buffered.
/// (A send may be larger: `send_body_bytes_max`.)
pub const BODY_BYTES_MAX: usize = 16 * 1024;

/// The largest body of a send: room for a group of the most members the
/// limits allow, each a longest name quoted with its comma, beside the
/// rest (49,884 bytes for 500 members).
pub fn send_body_bytes_max(limits: &hongbao_domain::Limits) -> usize {
    BODY_BYTES_MAX + limits.group_members_max * (hongbao_domain::user::USER_LEN_MAX + 3)
}

/// The server's settings (each has a `serve` flag).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerConfig {
    pub timeouts: Timeouts,
    pub rates: Rates,
    /// Writes in flight on the node before more are refused with 503.
    pub writes_in_flight_max: usize,
    /// Writes in flight of one user before more are refused with 429.
    pub user_writes_in_flight_max: usize,
    /// The lifetimes of the user tokens admins issue.
    pub tokens: token::TokenLifetimes,
    /// The bounds on event streams (`routes/events.rs`).
    pub streams: routes::events::StreamLimits,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            timeouts: Timeouts::default(),
            rates: Rates::default(),
            writes_in_flight_max: WRITES_IN_FLIGHT_MAX,
            user_writes_in_flight_max: USER_WRITES_IN_FLIGHT_MAX,
            tokens: token::TokenLifetimes::default(),
            streams: routes::events::StreamLimits::default(),
        }
    }
}

/// What every handler shares, behind one reference count: axum clones a
/// route's state for every request it serves, so the state is one `Arc`
/// (a state of six `Arc`s cost 3% of a `floor-http` profile).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub engine: Engine,
    pub auth: Arc<SharedAuth>,
    pub config: ServerConfig,
    pub rates: RateLimits,
    pub writes: Arc<WriteGate>,
    /// The permits of open event streams.
    pub streams: Arc<WriteGate>,
    /// The largest body a send takes (`send_body_bytes_max`).
    pub send_body_max: usize,
    /// Set when the server starts to stop: `/readyz` then says so.
    pub draining: AtomicBool,
    /// Woken when the server starts to stop: event streams end.
    pub stop: tokio::sync::Notify,
    /// This node's part in a cluster; none when it holds every set.
    pub cluster: Option<Arc<cluster::Cluster>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(engine: Engine, auth: Arc<SharedAuth>, config: ServerConfig) -> AppState {
        AppState::in_cluster(engine, auth, config, None)
    }

    /// The state of one node of several (`cluster`), or of a node alone.
    pub fn in_cluster(
        engine: Engine,
        auth: Arc<SharedAuth>,
        config: ServerConfig,
        cluster: Option<Arc<cluster::Cluster>>,
    ) -> AppState {
        let send_body_max = send_body_bytes_max(engine.limits());
        AppState(Arc::new(Shared {
            send_body_max,
            engine,
            auth,
            config,
            rates: RateLimits::new(config.rates),
            writes: Arc::new(WriteGate::new(config.writes_in_flight_max, config.user_writes_in_flight_max)),
            streams: Arc::new(WriteGate::of(
                error::InFlight::Streams,
                config.streams.node_max,
                config.streams.user_max,
            )),
            draining: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
            cluster,
        }))
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let bounds = deadline::Bounds { deadline: state.config.timeouts.request, send_body_max: state.send_body_max };
    let router = Router::from(openapi::api())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.send_body_max));
    // Only a node of several forwards: a node alone pays nothing for it.
    let router = match state.cluster.is_some() {
        true => router.layer(middleware::from_fn_with_state(state.clone(), cluster::forward)),
        false => router,
    };
    router.layer(middleware::from_fn(move |request, next| observe::around(bounds, request, next))).with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// accepting, lets requests in flight finish within the drain deadline,
/// and closes what is left (see `listener`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeouts = state.config.timeouts;
    let upkeep = tokio::spawn(metrics::upkeep());
    let draining = state.clone();
    let shutdown = async move {
        shutdown.await;
        draining.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        draining.stop.notify_waiters();
    };
    let served = listener::serve(listener, router(state), timeouts, shutdown).await;
    upkeep.abort();
    served
}
