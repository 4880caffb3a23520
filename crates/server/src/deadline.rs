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

//!
//! The deadline is captured by value, not read from `AppState`: a state
//! extractor in a layer every request passes clones the whole state (six
//! reference counts) per request, and that measured 3% of a `floor-http`
//! profile.

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// What the layer every request passes checks: the whole request's
/// deadline, and the largest body a send takes (others take
/// `BODY_BYTES_MAX`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub(crate) deadline: Duration,
    pub(crate) send_body_max: usize,
}

/// The layer every request passes: a body declared too large is refused
/// 413 at once (see `body`), then the rest runs under the deadline. (One
/// layer, not two: each `from_fn` layer clones the route's service and
/// boxes a future per request.)
pub(crate) async fn request_deadline(bounds: Bounds, request: Request, next: Next) -> Response {
    if let Some(limit) = crate::body::declares_too_large(&request, bounds.send_body_max) {
        return ApiError::body_too_large(limit).into_response();
    }
    let deadline = bounds.deadline;
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::request_timeout("the whole request", deadline).into_response(),
    }
}
