//! hongbao's HTTP API: axum routes that translate JSON to engine commands
//! and outcomes back to JSON. Every error is `{"error":{"code","message"}}`
//! with a stable code; bad input is a 4xx, never a 500 or a panic.

pub mod admission;
pub mod auth;
pub mod body;
pub mod error;
pub mod rate_limit;
mod routes;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use hongbao_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use auth::Auth;
pub use error::ApiError;

/// The largest request body. Every request hongbao takes is a small JSON
/// object; anything bigger is refused with 413 before it is buffered.
pub const BODY_BYTES_MAX: usize = 16 * 1024;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Engine,
    pub auth: Arc<Auth>,
    pub opens: Arc<rate_limit::RateLimiter>,
    /// Permits for writes in flight (see `admission`).
    pub writes: Arc<Semaphore>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let writes = Router::new()
        .route("/v1/admin/deposits", post(routes::admin::deposit))
        .route("/v1/packets", post(routes::packets::send))
        .route("/v1/packets/{id}/grab", post(routes::packets::grab))
        .route("/v1/packets/{id}/open", post(routes::packets::open))
        .route_layer(middleware::from_fn_with_state(state.clone(), admission::admit_write));
    Router::new()
        .route("/healthz", get(routes::health))
        .route("/v1/admin/tokens", post(routes::admin::token))
        .route("/v1/account", get(routes::account::account))
        .route("/v1/packets/sent", get(routes::lists::sent))
        .route("/v1/packets/received", get(routes::lists::received))
        .route("/v1/packets/{id}", get(routes::packets::detail))
        .merge(writes)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// accepting and lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
