//! The one HTTP error type: a status, a stable code and a message, sent as
//! `{"error":{"code":"...","message":"..."}}`. Details of 5xx errors are
//! logged, never sent.
//!
//! Every error the API answers has its constructor here, so a code is
//! spelled once (or comes from the domain's outcome, as an open's refusal
//! does from `OpenOutcome::code`), and the README's table of codes can be
//! checked against one file.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hongbao_domain::{Limits, OpenOutcome, SetId, SpecError};
use hongbao_engine::EngineError;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After`; 503s without one say 1.
    pub retry_after_s: Option<u64>,
    /// The set another node holds, when that is why: the answer carries
    /// it (`cluster::Elsewhere`) so the node can forward the request.
    pub elsewhere: Option<SetId>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_s: None, elsewhere: None }
    }

    /// 429 `rate_limited`, retry after `wait` (whole seconds, rounded up).
    pub fn rate_limited(message: impl Into<String>, wait: Duration) -> ApiError {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after_s: Some(seconds.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// 429 `too_many_requests`: the caller has as many writes in flight as
    /// one user may.
    pub fn too_many_requests(in_flight_max: usize) -> ApiError {
        ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("at most {in_flight_max} writes of one user may be in flight; wait for an answer first"),
            )
        }
    }

    /// 408 `request_timeout`: the request (or its body) took longer than its deadline.
    pub fn request_timeout(what: &str, deadline: Duration) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("{what} did not arrive within {} ms", deadline.as_millis()),
        )
    }

    /// 413 `body_too_large`.
    pub fn body_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are at most {} bytes", crate::BODY_BYTES_MAX),
        )
    }

    /// 400 `invalid_user`.
    pub fn invalid_user() -> ApiError {
        ApiError::bad_request("invalid_user", "user must be 1 to 64 characters from A-Z a-z 0-9 _ . -")
    }

    /// 400 `invalid_ttl`: a token lifetime outside 1 to `max_s` seconds.
    pub fn invalid_ttl(max_s: u64) -> ApiError {
        ApiError::bad_request("invalid_ttl", format!("ttl_s must be from 1 to {max_s} seconds"))
    }

    /// 400 `invalid_amount`: a deposit outside 1 to `max_fen`.
    pub fn invalid_amount(max_fen: u64) -> ApiError {
        ApiError::bad_request("invalid_amount", format!("amount must be an integer number of fen from 1 to {max_fen}"))
    }

    /// 400 with the send rule's own code (`SpecError::code`).
    pub fn invalid_spec(error: &SpecError, limits: &Limits) -> ApiError {
        ApiError::bad_request(error.code(), error.message(limits))
    }

    /// 400 `invalid_limit`: a page length outside 1 to `max`.
    pub fn invalid_limit(max: usize) -> ApiError {
        ApiError::bad_request("invalid_limit", format!("limit must be from 1 to {max}"))
    }

    /// 400 `invalid_query`.
    pub fn invalid_query(detail: String) -> ApiError {
        ApiError::bad_request("invalid_query", detail)
    }

    /// 400 `invalid_cursor`.
    pub fn invalid_cursor() -> ApiError {
        ApiError::bad_request("invalid_cursor", "cursor must be a next_cursor from an earlier page")
    }

    /// 400 `invalid_body`: the body could not be read.
    pub fn invalid_body(detail: String) -> ApiError {
        ApiError::bad_request("invalid_body", detail)
    }

    /// 400 `invalid_json`.
    pub fn invalid_json(detail: String) -> ApiError {
        ApiError::bad_request("invalid_json", detail)
    }

    /// 400 `invalid_idempotency_key`.
    pub fn invalid_idempotency_key(len_max: usize) -> ApiError {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {len_max} characters from A-Z a-z 0-9 _ . : -"),
        )
    }

    /// 401 `missing_token`.
    pub fn missing_token() -> ApiError {
        ApiError::unauthorized("missing_token", "send Authorization: Bearer <token>")
    }

    /// 401 `invalid_token`: the header is not `Bearer <token>`.
    pub fn malformed_authorization() -> ApiError {
        ApiError::unauthorized("invalid_token", "the Authorization header must be Bearer <token>")
    }

    /// 403 `admin_only`.
    pub fn admin_only() -> ApiError {
        ApiError::forbidden("admin_only", "this route needs an admin token")
    }

    /// 404 `not_found`: no such route.
    pub fn route_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
    }

    /// 409 `insufficient_balance`.
    pub fn insufficient_balance() -> ApiError {
        ApiError::conflict("insufficient_balance", "the balance does not cover total_amount")
    }

    /// 409 `balance_limit_exceeded`.
    pub fn balance_limit_exceeded(max_fen: u64) -> ApiError {
        ApiError::conflict("balance_limit_exceeded", format!("the balance may not exceed {max_fen} fen"))
    }

    /// 403 `not_recipient`.
    pub fn not_recipient() -> ApiError {
        ApiError::forbidden(OpenOutcome::NotRecipient.code(), "this packet is for someone else")
    }

    /// The refusal of an open, its code the outcome's own. (An open that
    /// succeeded is no refusal: answering one as such is a bug, logged and
    /// answered 500, never a panic.)
    pub fn open_refused(outcome: &OpenOutcome) -> ApiError {
        let code = outcome.code();
        match outcome {
            OpenOutcome::Empty => ApiError::conflict(code, "every share of this packet has been opened"),
            OpenOutcome::Expired => ApiError::new(StatusCode::GONE, code, "this packet has expired"),
            OpenOutcome::NotRecipient => ApiError::not_recipient(),
            OpenOutcome::WrongPassword => {
                ApiError::forbidden(code, "this packet needs its password, and that is not it")
            }
            OpenOutcome::NotFound => ApiError::packet_not_found(),
            OpenOutcome::Opened(_) | OpenOutcome::AlreadyOpened { .. } => {
                tracing::error!(?outcome, "an open that succeeded was answered as a refusal");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }

    /// 503 `not_ready`, saying why.
    pub fn not_ready(message: String) -> ApiError {
        ApiError { retry_after_s: Some(1), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message) }
    }

    /// 409 `idempotency_key_reused`.
    pub fn key_reused() -> ApiError {
        ApiError::conflict("idempotency_key_reused", "this Idempotency-Key was used for a different request")
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 503 `set_moving`: the set is between nodes (or its holder cannot
    /// be reached) for longer than a request waits.
    pub fn set_moving() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "set_moving",
            "this part of the service is moving to another node; retry shortly",
        )
    }

    /// 401 `invalid_peer`: a node-to-node request without a valid peer token.
    pub fn invalid_peer() -> ApiError {
        ApiError::unauthorized("invalid_peer", "node-to-node routes need a valid peer token")
    }

    /// 503 `metrics_unavailable`: another recorder than hongbao's was
    /// installed in the process (only when embedded).
    pub fn metrics_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "metrics are not recorded by this process",
        )
    }

    pub fn packet_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, OpenOutcome::NotFound.code(), "no packet has this id")
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::Overloaded => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the service is at capacity; retry after the time in Retry-After",
            ),
            EngineError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "set_unavailable",
                "this part of the service is recovering from a storage failure; retry shortly",
            ),
            EngineError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the service is shutting down")
            }
            EngineError::NotHere(set) => ApiError { elsewhere: Some(set), ..ApiError::set_moving() },
            EngineError::Fenced => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "set_moving",
                "the write was not applied: its part of the service moved to another node; retry it",
            ),
            EngineError::Storage(detail) => {
                tracing::error!(%detail, "storage read failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

/// The code of an error answer, kept on the response for the layer that
/// counts and logs it (`observe`).
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        let retry_after_s = self.retry_after_s.or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        if let Some(seconds) = retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(set) = self.elsewhere {
            response.headers_mut().insert(crate::cluster::ELSEWHERE, HeaderValue::from(set.0));
            response.extensions_mut().insert(crate::cluster::Elsewhere(set));
        }
        response
    }
}
