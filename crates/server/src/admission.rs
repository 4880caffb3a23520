//! Admission of writes at the HTTP layer: a bound on the writes (deposits,
//! sends, grabs, opens) a node has in flight. Past it a write is refused at
//! once with 503 `overloaded` and `Retry-After`, before its token is checked
//! or its body read, so a flood holds neither memory nor queue slots.
//!
//! The bound is fixed. An adaptive one (shrinking when writes are answered
//! slowly, as TCP's congestion window does) was tried under 3× overload with
//! the server on one core: the slowness was in requests waiting for CPU
//! before any handler ran, which no limit on writes in flight changes, so the
//! limit fell to its floor and admitted opens fell from 2,403/s to 538/s
//! while their p99 stayed in the hundreds of milliseconds (see RELIABILITY.md).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hongbao_engine::EngineError;

use crate::AppState;
use crate::error::ApiError;

/// Writes in flight per node by default: about 50 ms of this node's
/// measured capacity (20,000 opens/s on 2 cores), and room for a
/// 1000-member group opening at once.
pub const WRITES_IN_FLIGHT_MAX: usize = 1024;

pub(crate) async fn admit_write(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.writes.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::from(EngineError::Overloaded).into_response(),
    }
}
