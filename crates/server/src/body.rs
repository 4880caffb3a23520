//! Request bodies and headers as the API reads them: JSON whatever the
//! content type says (so `curl -d` works), bounded in size, with every
//! rejection a 4xx that says what is wrong.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The longest `Idempotency-Key`.
const IDEMPOTENCY_KEY_LEN_MAX: usize = 64;

/// A JSON body; with `optional`, an empty body reads as `T::default()`.
pub struct JsonBody<T>(pub T);

async fn read_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are at most {} bytes", crate::BODY_BYTES_MAX),
        ),
        _ => ApiError::bad_request("invalid_body", rejection.body_text()),
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| ApiError::bad_request("invalid_json", error.to_string()))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let bytes = read_bytes(request, state).await?;
        Ok(JsonBody(parse(&bytes)?))
    }
}

/// A JSON body that may be absent.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<OptionalJsonBody<T>, ApiError> {
        let bytes = read_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        Ok(OptionalJsonBody(parse(&bytes)?))
    }
}

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
        _ => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} characters from A-Z a-z 0-9 _ . : -"),
        )),
    }
}
