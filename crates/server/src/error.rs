//! The one HTTP error type: a status, a stable code and a message, sent as
//! `{"error":{"code":"...","message":"..."}}` (`ErrorBody`). Details of 5xx
//! errors are logged, never sent.
//!
//! Every code the API answers is one `ErrorCode` constant here, with its
//! status and what it means, and `CODES` lists them all: the constructors
//! below build errors from them, the OpenAPI spec's error answers are made
//! from them (`openapi`), and the tests check the README's table and the
//! spec against `CODES`. A code the domain names (a send rule's, an open's
//! refusal, a token's verdict) is the domain's own spelling, read by a
//! `const fn`, so it is still spelled once.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hongbao_domain::{Limits, OpenOutcome, SetId, SpecError};
use hongbao_engine::EngineError;
use serde::Serialize;

use crate::token::TokenError;

/// One error code: the status it is answered with, and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode {
    pub status: StatusCode,
    pub code: &'static str,
    pub meaning: &'static str,
}

const fn code(status: StatusCode, code: &'static str, meaning: &'static str) -> ErrorCode {
    ErrorCode { status, code, meaning }
}

const fn spec(error: &SpecError, meaning: &'static str) -> ErrorCode {
    code(StatusCode::BAD_REQUEST, error.code(), meaning)
}

pub const INVALID_JSON: ErrorCode =
    code(StatusCode::BAD_REQUEST, "invalid_json", "the body is not the JSON this route takes");
pub const INVALID_BODY: ErrorCode =
    code(StatusCode::BAD_REQUEST, "invalid_body", "the body could not be read, or is not what the route takes");
pub const INVALID_USER: ErrorCode =
    code(StatusCode::BAD_REQUEST, "invalid_user", "a user name that is not 1 to 64 of A-Z a-z 0-9 _ . -");
pub const INVALID_AMOUNT: ErrorCode = spec(&SpecError::InvalidAmount, "an amount outside the limits");
pub const INVALID_KIND: ErrorCode = spec(&SpecError::InvalidKind, "kind is not lucky, fixed or exclusive");
pub const INVALID_COUNT: ErrorCode =
    spec(&SpecError::InvalidCount, "a count outside the limits (or not 1 for exclusive)");
pub const AMOUNT_NOT_DIVISIBLE: ErrorCode =
    spec(&SpecError::AmountNotDivisible, "a fixed packet's total does not divide by its count");
pub const SHARE_TOO_SMALL: ErrorCode = spec(&SpecError::ShareTooSmall, "a share would be under the smallest share");
pub const INVALID_GREETING: ErrorCode =
    spec(&SpecError::InvalidGreeting, "a greeting over the limit, or with control characters");
pub const INVALID_PASSWORD: ErrorCode =
    spec(&SpecError::InvalidPassword, "a password that is empty, over the limit, or with control characters");
pub const INVALID_RECIPIENT: ErrorCode =
    spec(&SpecError::InvalidRecipient, "a recipient missing (exclusive), given (others), invalid or the sender");
pub const INVALID_EXPIRY: ErrorCode = spec(&SpecError::InvalidExpiry, "expires_in_s outside the limits");
pub const INVALID_GROUP: ErrorCode = spec(
    &SpecError::InvalidGroup,
    "a group whose id or members are invalid, too many members, or an exclusive recipient outside it",
);
pub const INVALID_IDEMPOTENCY_KEY: ErrorCode = code(
    StatusCode::BAD_REQUEST,
    "invalid_idempotency_key",
    "an Idempotency-Key that is not 1 to 64 of A-Z a-z 0-9 _ . : -",
);
pub const INVALID_LIMIT: ErrorCode =
    code(StatusCode::BAD_REQUEST, "invalid_limit", "limit is not a whole number from 1 to 100");
pub const INVALID_CURSOR: ErrorCode =
    code(StatusCode::BAD_REQUEST, "invalid_cursor", "cursor is not a next_cursor this list answered");
pub const INVALID_EVENT_ID: ErrorCode =
    code(StatusCode::BAD_REQUEST, "invalid_event_id", "Last-Event-ID is not an id this stream sent");
pub const INVALID_QUERY: ErrorCode = code(StatusCode::BAD_REQUEST, "invalid_query", "the query string cannot be read");
pub const INVALID_TTL: ErrorCode =
    code(StatusCode::BAD_REQUEST, "invalid_ttl", "ttl_s outside 1 to 31,622,400 seconds");
pub const MISSING_TOKEN: ErrorCode = code(StatusCode::UNAUTHORIZED, "missing_token", "no Authorization header");
pub const INVALID_TOKEN: ErrorCode = code(
    StatusCode::UNAUTHORIZED,
    TokenError::Invalid.code(),
    "not Bearer <token>, or not a token of this service (or a revoked admin's)",
);
pub const TOKEN_EXPIRED: ErrorCode =
    code(StatusCode::UNAUTHORIZED, TokenError::Expired.code(), "the token is past its expiry");
pub const UNKNOWN_KEY: ErrorCode =
    code(StatusCode::UNAUTHORIZED, TokenError::UnknownKey.code(), "the token was signed by a key since removed");
pub const INVALID_PEER: ErrorCode =
    code(StatusCode::UNAUTHORIZED, "invalid_peer", "a node-to-node route without a valid peer token");
pub const ADMIN_ONLY: ErrorCode = code(StatusCode::FORBIDDEN, "admin_only", "a user's token on an admin route");
pub const NOT_RECIPIENT: ErrorCode =
    code(StatusCode::FORBIDDEN, OpenOutcome::NotRecipient.code(), "an exclusive packet for someone else");
pub const ACCOUNT_FROZEN: ErrorCode = code(
    StatusCode::FORBIDDEN,
    OpenOutcome::AccountFrozen.code(),
    "the caller's account is frozen: no sends, opens, grabs or withdrawals (credits still arrive)",
);
pub const NOT_IN_GROUP: ErrorCode =
    code(StatusCode::FORBIDDEN, OpenOutcome::NotInGroup.code(), "a packet sent to a group the caller is not in");
pub const WRONG_PASSWORD: ErrorCode =
    code(StatusCode::FORBIDDEN, OpenOutcome::WrongPassword.code(), "the packet has a password and this is not it");
pub const DEPOSIT_NOT_FOUND: ErrorCode = code(
    StatusCode::NOT_FOUND,
    "deposit_not_found",
    "no deposit has this reference (or its day has gone cold: past the retention)",
);
pub const WITHDRAWAL_NOT_FOUND: ErrorCode =
    code(StatusCode::NOT_FOUND, "withdrawal_not_found", "no withdrawal of the caller's has this id");
pub const WITHDRAWAL_SETTLED: ErrorCode = code(
    StatusCode::CONFLICT,
    "withdrawal_settled",
    "the withdrawal was settled the other way before (completed, or failed and returned)",
);
pub const PACKET_NOT_FOUND: ErrorCode =
    code(StatusCode::NOT_FOUND, OpenOutcome::NotFound.code(), "no packet has this id (malformed ids too)");
pub const NOT_FOUND: ErrorCode = code(StatusCode::NOT_FOUND, "not_found", "no such route");
pub const METHOD_NOT_ALLOWED: ErrorCode =
    code(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "the route does not take this method");
pub const REQUEST_TIMEOUT: ErrorCode = code(
    StatusCode::REQUEST_TIMEOUT,
    "request_timeout",
    "the body, or the whole request, past its deadline (a write's outcome is then unknown: retry it with its Idempotency-Key)",
);
pub const INSUFFICIENT_BALANCE: ErrorCode =
    code(StatusCode::CONFLICT, "insufficient_balance", "the balance does not cover the total");
pub const PACKET_EMPTY: ErrorCode =
    code(StatusCode::CONFLICT, OpenOutcome::Empty.code(), "every share has been opened");
pub const IDEMPOTENCY_KEY_REUSED: ErrorCode =
    code(StatusCode::CONFLICT, "idempotency_key_reused", "the Idempotency-Key was used for a different request");
pub const BALANCE_LIMIT_EXCEEDED: ErrorCode =
    code(StatusCode::CONFLICT, "balance_limit_exceeded", "the deposit would take the balance past its limit");
pub const PACKET_EXPIRED: ErrorCode = code(StatusCode::GONE, OpenOutcome::Expired.code(), "the packet has expired");
pub const BODY_TOO_LARGE: ErrorCode = code(
    StatusCode::PAYLOAD_TOO_LARGE,
    "body_too_large",
    "a body over 16 KiB (refused from Content-Length alone when it declares so)",
);
pub const RATE_LIMITED: ErrorCode = code(
    StatusCode::TOO_MANY_REQUESTS,
    "rate_limited",
    "the user's rate for this route, or the client IP's failed authentications, is spent; see Retry-After",
);
pub const DAILY_LIMIT: ErrorCode = code(
    StatusCode::TOO_MANY_REQUESTS,
    "daily_limit",
    "the user's packets of the day (UTC) would pass the daily count or amount; see Retry-After",
);
pub const TOO_MANY_REQUESTS: ErrorCode = code(
    StatusCode::TOO_MANY_REQUESTS,
    "too_many_requests",
    "the user has as many writes in flight (or event streams open) as one user may",
);
pub const INTERNAL: ErrorCode = code(
    StatusCode::INTERNAL_SERVER_ERROR,
    "internal",
    "a bug or a failed storage read (logged; never the client's fault)",
);
pub const OVERLOADED: ErrorCode =
    code(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the node is at capacity; retry after Retry-After");
pub const SET_UNAVAILABLE: ErrorCode =
    code(StatusCode::SERVICE_UNAVAILABLE, "set_unavailable", "the data's set is recovering from a storage failure");
pub const SHUTTING_DOWN: ErrorCode = code(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the node is stopping");
pub const NOT_READY: ErrorCode = code(
    StatusCode::SERVICE_UNAVAILABLE,
    "not_ready",
    "the node is stopping, or a set recovers from a storage failure",
);
pub const SET_MOVING: ErrorCode =
    code(StatusCode::SERVICE_UNAVAILABLE, "set_moving", "the data's set is between nodes; not applied, retry");
pub const CLUSTER_UNAVAILABLE: ErrorCode =
    code(StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable", "the cluster's status could not be read");
pub const METRICS_UNAVAILABLE: ErrorCode = code(
    StatusCode::SERVICE_UNAVAILABLE,
    "metrics_unavailable",
    "the process records metrics with another recorder than hongbao's (only when embedded)",
);

/// Every code the API answers, by status.
pub const CODES: &[ErrorCode] = &[
    INVALID_JSON,
    INVALID_BODY,
    INVALID_USER,
    INVALID_AMOUNT,
    INVALID_KIND,
    INVALID_COUNT,
    AMOUNT_NOT_DIVISIBLE,
    SHARE_TOO_SMALL,
    INVALID_GREETING,
    INVALID_PASSWORD,
    INVALID_RECIPIENT,
    INVALID_EXPIRY,
    INVALID_GROUP,
    INVALID_IDEMPOTENCY_KEY,
    INVALID_LIMIT,
    INVALID_CURSOR,
    INVALID_QUERY,
    INVALID_EVENT_ID,
    INVALID_TTL,
    MISSING_TOKEN,
    INVALID_TOKEN,
    TOKEN_EXPIRED,
    UNKNOWN_KEY,
    INVALID_PEER,
    ADMIN_ONLY,
    NOT_RECIPIENT,
    NOT_IN_GROUP,
    ACCOUNT_FROZEN,
    WRONG_PASSWORD,
    PACKET_NOT_FOUND,
    WITHDRAWAL_NOT_FOUND,
    DEPOSIT_NOT_FOUND,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    REQUEST_TIMEOUT,
    INSUFFICIENT_BALANCE,
    PACKET_EMPTY,
    IDEMPOTENCY_KEY_REUSED,
    BALANCE_LIMIT_EXCEEDED,
    WITHDRAWAL_SETTLED,
    PACKET_EXPIRED,
    BODY_TOO_LARGE,
    RATE_LIMITED,
    TOO_MANY_REQUESTS,
    DAILY_LIMIT,
    INTERNAL,
    OVERLOADED,
    SET_UNAVAILABLE,
    SHUTTING_DOWN,
    NOT_READY,
    SET_MOVING,
    CLUSTER_UNAVAILABLE,
    METRICS_UNAVAILABLE,
];

/// What a user has too many of in flight (`admission`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InFlight {
    Writes,
    Streams,
}

/// An error's body: `{"error":{"code","message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// The stable code (one of `CODES`; each route lists the ones it answers).
    #[schema(schema_with = crate::openapi::every_code)]
    pub code: &'a str,
    /// For people: what is wrong, and what to do.
    pub message: &'a str,
}

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
    /// An error with one of `CODES`.
    pub fn of(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(code.status, code.code, message)
    }

    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_s: None, elsewhere: None }
    }

    /// 429 `rate_limited`, retry after `wait` (whole seconds, rounded up).
    pub fn rate_limited(message: impl Into<String>, wait: Duration) -> ApiError {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError { retry_after_s: Some(seconds.max(1)), ..ApiError::of(RATE_LIMITED, message) }
    }

    /// 429 `too_many_requests`: the caller has as many writes in flight as
    /// one user may.
    pub fn too_many_requests(in_flight_max: usize, what: InFlight) -> ApiError {
        let message = match what {
            InFlight::Writes => {
                format!("at most {in_flight_max} writes of one user may be in flight; wait for an answer first")
            }
            InFlight::Streams => format!("at most {in_flight_max} event streams of one user may be open"),
        };
        ApiError { retry_after_s: Some(1), ..ApiError::of(TOO_MANY_REQUESTS, message) }
    }

    /// 400 `invalid_event_id`.
    pub fn invalid_event_id(detail: &str) -> ApiError {
        ApiError::of(INVALID_EVENT_ID, format!("Last-Event-ID is not an id this stream sent: {detail}"))
    }

    /// 408 `request_timeout`: the request (or its body) took longer than its deadline.
    pub fn request_timeout(what: &str, deadline: Duration) -> ApiError {
        ApiError::of(REQUEST_TIMEOUT, format!("{what} did not arrive within {} ms", deadline.as_millis()))
    }

    /// 413 `body_too_large`: the route takes at most `limit` bytes.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError::of(BODY_TOO_LARGE, format!("this route's request bodies are at most {limit} bytes"))
    }

    /// 400 `invalid_user`.
    pub fn invalid_user() -> ApiError {
        ApiError::of(INVALID_USER, "user must be 1 to 64 characters from A-Z a-z 0-9 _ . -")
    }

    /// 400 `invalid_ttl`: a token lifetime outside 1 to `max_s` seconds.
    pub fn invalid_ttl(max_s: u64) -> ApiError {
        ApiError::of(INVALID_TTL, format!("ttl_s must be from 1 to {max_s} seconds"))
    }

    /// 400 `invalid_amount`: a deposit outside 1 to `max_fen`.
    pub fn invalid_amount(max_fen: u64) -> ApiError {
        ApiError::of(INVALID_AMOUNT, format!("amount must be an integer number of fen from 1 to {max_fen}"))
    }

    /// 400 with the send rule's own code (`SpecError::code`).
    pub fn invalid_spec(error: &SpecError, limits: &Limits) -> ApiError {
        ApiError::bad_request(error.code(), error.message(limits))
    }

    /// 400 `invalid_limit`: a page length outside 1 to `max`.
    pub fn invalid_limit(max: usize) -> ApiError {
        ApiError::of(INVALID_LIMIT, format!("limit must be from 1 to {max}"))
    }

    /// 400 `invalid_query`.
    pub fn invalid_query(detail: String) -> ApiError {
        ApiError::of(INVALID_QUERY, detail)
    }

    /// 400 `invalid_cursor`.
    pub fn invalid_cursor() -> ApiError {
        ApiError::of(INVALID_CURSOR, "cursor must be a next_cursor from an earlier page")
    }

    /// 400 `invalid_body`: the body could not be read.
    pub fn invalid_body(detail: String) -> ApiError {
        ApiError::of(INVALID_BODY, detail)
    }

    /// 400 `invalid_json`.
    pub fn invalid_json(detail: String) -> ApiError {
        ApiError::of(INVALID_JSON, detail)
    }

    /// 400 `invalid_idempotency_key`.
    pub fn invalid_idempotency_key(len_max: usize) -> ApiError {
        ApiError::of(
            INVALID_IDEMPOTENCY_KEY,
            format!("Idempotency-Key must be 1 to {len_max} characters from A-Z a-z 0-9 _ . : -"),
        )
    }

    /// 401 `missing_token`.
    pub fn missing_token() -> ApiError {
        ApiError::of(MISSING_TOKEN, "send Authorization: Bearer <token>")
    }

    /// 401 `invalid_token`: the header is not `Bearer <token>`.
    pub fn malformed_authorization() -> ApiError {
        ApiError::of(INVALID_TOKEN, "the Authorization header must be Bearer <token>")
    }

    /// 403 `admin_only`.
    pub fn admin_only() -> ApiError {
        ApiError::of(ADMIN_ONLY, "this route needs an admin token")
    }

    /// 404 `not_found`: no such route.
    pub fn route_not_found() -> ApiError {
        ApiError::of(NOT_FOUND, "no such route")
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> ApiError {
        ApiError::of(METHOD_NOT_ALLOWED, "this route does not take that method")
    }

    /// 409 `insufficient_balance`.
    pub fn insufficient_balance() -> ApiError {
        ApiError::of(INSUFFICIENT_BALANCE, "the balance does not cover total_amount")
    }

    /// 409 `balance_limit_exceeded`.
    pub fn balance_limit_exceeded(max_fen: u64) -> ApiError {
        ApiError::of(BALANCE_LIMIT_EXCEEDED, format!("the balance may not exceed {max_fen} fen"))
    }

    /// 403 `not_recipient`.
    pub fn not_recipient() -> ApiError {
        ApiError::of(NOT_RECIPIENT, "this packet is for someone else")
    }

    /// 404 `deposit_not_found`.
    pub fn deposit_not_found() -> ApiError {
        ApiError::of(DEPOSIT_NOT_FOUND, "no deposit has this reference, or its day is past the retention")
    }

    /// 404 `withdrawal_not_found`.
    pub fn withdrawal_not_found() -> ApiError {
        ApiError::of(WITHDRAWAL_NOT_FOUND, "no withdrawal of yours has this id")
    }

    /// 409 `withdrawal_settled`: settled the other way, as `was`.
    pub fn withdrawal_settled(was: &str) -> ApiError {
        ApiError::of(WITHDRAWAL_SETTLED, format!("this withdrawal is {was} already; nothing changed"))
    }

    /// 429 `daily_limit`, with `Retry-After` the start of the next UTC day.
    pub fn daily_limit(limits: &hongbao_domain::Limits, now: hongbao_domain::Millis) -> ApiError {
        let day = hongbao_domain::time::DAY_MS;
        let next_day_in_s = ((day - now.0.rem_euclid(day)) as u64).div_ceil(1000);
        let message = format!(
            "a user may send at most {} packets and {} fen a day (UTC); this one would pass that",
            limits.daily_send_count_max,
            limits.daily_send_amount_max.fen()
        );
        ApiError { retry_after_s: Some(next_day_in_s.max(1)), ..ApiError::of(DAILY_LIMIT, message) }
    }

    /// 403 `account_frozen`.
    pub fn account_frozen() -> ApiError {
        ApiError::of(ACCOUNT_FROZEN, "this account is frozen; its balance is kept and credits still arrive")
    }

    /// 403 `not_in_group`.
    pub fn not_in_group() -> ApiError {
        ApiError::of(NOT_IN_GROUP, "this packet was sent to a group you are not in")
    }

    /// The refusal of an open, its code the outcome's own. (An open that
    /// succeeded is no refusal: answering one as such is a bug, logged and
    /// answered 500, never a panic.)
    pub fn open_refused(outcome: &OpenOutcome) -> ApiError {
        match outcome {
            OpenOutcome::Empty => ApiError::of(PACKET_EMPTY, "every share of this packet has been opened"),
            OpenOutcome::Expired => ApiError::of(PACKET_EXPIRED, "this packet has expired"),
            OpenOutcome::NotRecipient => ApiError::not_recipient(),
            OpenOutcome::NotInGroup => ApiError::not_in_group(),
            OpenOutcome::AccountFrozen => ApiError::account_frozen(),
            OpenOutcome::WrongPassword => {
                ApiError::of(WRONG_PASSWORD, "this packet needs its password, and that is not it")
            }
            OpenOutcome::NotFound => ApiError::packet_not_found(),
            OpenOutcome::Opened(_) | OpenOutcome::AlreadyOpened { .. } => {
                tracing::error!(?outcome, "an open that succeeded was answered as a refusal");
                ApiError::of(INTERNAL, "internal error")
            }
        }
    }

    /// 503 `not_ready`, saying why.
    pub fn not_ready(message: String) -> ApiError {
        ApiError { retry_after_s: Some(1), ..ApiError::of(NOT_READY, message) }
    }

    /// 409 `idempotency_key_reused`.
    pub fn key_reused() -> ApiError {
        ApiError::of(IDEMPOTENCY_KEY_REUSED, "this Idempotency-Key was used for a different request")
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
        ApiError::of(SET_MOVING, "this part of the service is moving to another node; retry shortly")
    }

    /// 401 `invalid_peer`: a node-to-node request without a valid peer token.
    pub fn invalid_peer() -> ApiError {
        ApiError::of(INVALID_PEER, "node-to-node routes need a valid peer token")
    }

    /// 503 `metrics_unavailable`: another recorder than hongbao's was
    /// installed in the process (only when embedded).
    pub fn metrics_unavailable() -> ApiError {
        ApiError::of(METRICS_UNAVAILABLE, "metrics are not recorded by this process")
    }

    pub fn packet_not_found() -> ApiError {
        ApiError::of(PACKET_NOT_FOUND, "no packet has this id")
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::Overloaded => {
                ApiError::of(OVERLOADED, "the service is at capacity; retry after the time in Retry-After")
            }
            EngineError::Unavailable => ApiError::of(
                SET_UNAVAILABLE,
                "this part of the service is recovering from a storage failure; retry shortly",
            ),
            EngineError::ShuttingDown => ApiError::of(SHUTTING_DOWN, "the service is shutting down"),
            EngineError::NotHere(set) => ApiError { elsewhere: Some(set), ..ApiError::set_moving() },
            EngineError::Fenced => ApiError::of(
                SET_MOVING,
                "the write was not applied: its part of the service moved to another node; retry it",
            ),
            EngineError::Storage(detail) => {
                tracing::error!(%detail, "storage read failed");
                ApiError::of(INTERNAL, "internal error")
            }
        }
    }
}

/// The code of an error answer, kept on the response for the layer that
/// counts and logs it (`observe`).
#[derive(Clone, Copy, Debug)]
pub struct AnsweredCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody { error: ErrorDetail { code: self.code, message: &self.message } });
        let mut response = (self.status, body).into_response();
        response.extensions_mut().insert(AnsweredCode(self.code));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(error: &ApiError) -> bool {
        CODES.iter().any(|code| (code.status, code.code) == (error.status, error.code))
    }

    #[test]
    fn every_code_is_listed_once() {
        for (n, code) in CODES.iter().enumerate() {
            assert!(!CODES[n + 1..].iter().any(|other| other.code == code.code), "{} listed twice", code.code);
            assert!(code.status.is_client_error() || code.status.is_server_error(), "{}", code.code);
        }
    }

    /// The errors made from the domain's codes, and every constructor
    /// here, answer a listed code with its listed status.
    #[test]
    fn every_error_the_api_makes_has_a_listed_code_and_status() {
        let limits = Limits::default();
        let spec_errors = [
            SpecError::InvalidKind,
            SpecError::InvalidAmount,
            SpecError::InvalidCount,
            SpecError::AmountNotDivisible,
            SpecError::ShareTooSmall,
            SpecError::InvalidGreeting,
            SpecError::InvalidPassword,
            SpecError::InvalidRecipient,
            SpecError::InvalidExpiry,
            SpecError::InvalidGroup,
        ];
        let refusals = [
            OpenOutcome::Empty,
            OpenOutcome::Expired,
            OpenOutcome::NotRecipient,
            OpenOutcome::NotInGroup,
            OpenOutcome::AccountFrozen,
            OpenOutcome::WrongPassword,
            OpenOutcome::NotFound,
            OpenOutcome::AlreadyOpened { amount: hongbao_domain::Amount::ZERO },
        ];
        let engine = [
            EngineError::Overloaded,
            EngineError::Unavailable,
            EngineError::ShuttingDown,
            EngineError::NotHere(SetId(0)),
            EngineError::Fenced,
            EngineError::Storage("x".into()),
        ];
        let tokens = [TokenError::Invalid, TokenError::UnknownKey, TokenError::Expired];
        let second = Duration::from_secs(1);
        let mut errors = vec![
            ApiError::rate_limited("x", second),
            ApiError::too_many_requests(1, InFlight::Writes),
            ApiError::request_timeout("x", second),
            ApiError::body_too_large(crate::BODY_BYTES_MAX),
            ApiError::invalid_user(),
            ApiError::invalid_ttl(1),
            ApiError::invalid_amount(1),
            ApiError::invalid_limit(1),
            ApiError::invalid_query("x".into()),
            ApiError::invalid_cursor(),
            ApiError::invalid_body("x".into()),
            ApiError::invalid_json("x".into()),
            ApiError::invalid_idempotency_key(1),
            ApiError::missing_token(),
            ApiError::malformed_authorization(),
            ApiError::admin_only(),
            ApiError::route_not_found(),
            ApiError::method_not_allowed(),
            ApiError::insufficient_balance(),
            ApiError::balance_limit_exceeded(1),
            ApiError::not_recipient(),
            ApiError::not_ready("x".into()),
            ApiError::key_reused(),
            ApiError::set_moving(),
            ApiError::invalid_peer(),
            ApiError::packet_not_found(),
        ];
        errors.extend(spec_errors.iter().map(|error| ApiError::invalid_spec(error, &limits)));
        errors.extend(refusals.iter().map(ApiError::open_refused));
        errors.extend(engine.into_iter().map(ApiError::from));
        errors.extend(tokens.into_iter().map(|error| ApiError::unauthorized(error.code(), error.message())));
        for error in &errors {
            assert!(listed(error), "{} {} is not in CODES", error.status, error.code);
        }
    }
}
