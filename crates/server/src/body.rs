//! Request bodies and headers as the API reads them: JSON whatever the
//! content type says (so `curl -d` works), bounded in size and in time
//! (`Timeouts::body`), with every rejection a 4xx that says what is wrong.
//! A `Content-Length` over the limit is refused 413 from the header, before
//! a byte of the body is read.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// The longest `Idempotency-Key`.
const IDEMPOTENCY_KEY_LEN_MAX: usize = 64;

/// A JSON body; with `optional`, an empty body reads as `T::default()`.
pub struct JsonBody<T>(pub T);

/// The most bytes a request's body may hold: `BODY_BYTES_MAX`, but for a
/// send, which may carry a group's members (`send_body_bytes_max`).
pub(crate) fn body_limit(request: &Request, send_max: usize) -> usize {
    match request.method() == Method::POST && request.uri().path() == "/v1/packets" {
        true => send_max,
        false => crate::BODY_BYTES_MAX,
    }
}

/// The limit of `request`'s route if its body declares more: refused 413
/// from its header alone, on every route (one that reads no body would
/// otherwise leave it unread). Called by the one layer every request
/// passes (`deadline::request_deadline`).
pub(crate) fn declares_too_large(request: &Request, send_max: usize) -> Option<usize> {
    let limit = body_limit(request, send_max);
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok());
    let length = declared.and_then(|text| text.parse::<u64>().ok())?;
    (length > limit as u64).then_some(limit)
}

async fn read_bytes(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let deadline = state.config.timeouts.body;
    let limit = body_limit(&request, state.send_body_max);
    let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(request.into_body(), limit));
    let bytes =
        tokio::time::timeout(deadline, read).await.map_err(|_| ApiError::request_timeout("the body", deadline))?;
    match bytes {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::body_too_large(limit)),
        Err(error) => Err(ApiError::invalid_body(format!("the body could not be read: {error}"))),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| ApiError::invalid_json(error.to_string()))
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<JsonBody<T>, ApiError> {
        let bytes = read_bytes(request, state).await?;
        Ok(JsonBody(parse(&bytes)?))
    }
}

/// A JSON body that may be absent (empty, blank, or `null`).
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<OptionalJsonBody<T>, ApiError> {
        let bytes = read_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        // `null` is no body too (the spec's `null` or the object).
        Ok(OptionalJsonBody(parse::<Option<T>>(&bytes)?.unwrap_or_default()))
    }
}

/// The `Idempotency-Key` header, as the spec describes it (`params(IdempotencyKey)`).
#[derive(utoipa::IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
pub struct IdempotencyKey(
    /// Makes a retry safe: a second request with the same key answers as
    /// the first did (the same key with another request is 409
    /// `idempotency_key_reused`).
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,64}$", nullable = false)]
    #[allow(dead_code)]
    Option<String>,
);

/// The `Idempotency-Key` header: 1 to 64 characters from `[A-Za-z0-9_.:-]`.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_LEN_MAX && key.chars().all(allowed) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::invalid_idempotency_key(IDEMPOTENCY_KEY_LEN_MAX)),
    }
}
