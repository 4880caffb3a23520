//! The whole request's deadline (`Timeouts::request`): a request not
//! answered by then is answered 408 `request_timeout`, and everything its
//! handler held (a body half read, write permits) is dropped with it.
//!
//! A write the engine already took is decided all the same (its answer is
//! lost with the handler), so the client learns nothing either way, as on
//! any timeout: its `Idempotency-Key` (deposits, sends) or the repeat of its
//! open (which answers the same share) settles it.
//!
//! A `tokio::time::timeout` around the rest of the stack rather than
//! tower-http's `TimeoutLayer`: that layer answers with an empty body, and
//! wrapping it to keep the `{"error":{...}}` contract is longer than this.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

pub(crate) async fn request_deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let deadline = state.config.timeouts.request;
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::request_timeout("the whole request", deadline).into_response(),
    }
}
