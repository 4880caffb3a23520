//! The one layer every request passes: it names the request, runs it under
//! its deadline (`deadline`), then counts it (`metrics`) and logs it.
//!
//! - **Request id.** A client's `x-request-id` is kept if it is 1 to 64
//!   characters of `A-Z a-z 0-9 - _ . :` (anything else is replaced, not
//!   refused: an id is a courtesy, not an input); otherwise one is made.
//!   The answer echoes it, and every log line written while the request
//!   runs carries it, through the `request` span.
//! - **Access log.** One line per answered request at INFO under the target
//!   `hongbao::access` (method, route, path, status, code, duration, user
//!   agent's address), turned off with `RUST_LOG=…,hongbao::access=off`.
//!
//! One layer, not three: each `from_fn` layer clones the route's service
//! and boxes a future per request (see `deadline`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::AnsweredCode;

/// The target of admin actions' log lines, which every log filter keeps
/// (the binary adds `hongbao::admin=info` to whatever filter it is given).
pub const ADMIN_LOG: &str = "hongbao::admin";

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id kept from a client.
pub const REQUEST_ID_LEN_MAX: usize = 64;

/// Whether a client's request id is kept as it is.
pub fn valid_request_id(id: &[u8]) -> bool {
    (1..=REQUEST_ID_LEN_MAX).contains(&id.len())
        && id.iter().all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(byte))
}

/// A new request id: this process's random prefix and a counter, so ids are
/// unique across restarts and nodes without a random draw per request.
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| getrandom::u32().unwrap_or_else(|_| std::process::id()));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("{prefix:08x}-{n:012x}")).expect("hex digits and a dash are a header value")
}

/// A method as a metric label: the standard ones by name, any other (a
/// client may send any token as a method) as `other`, so no client can
/// grow the number of series.
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 8] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
    ];
    const NAMES: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"];
    KNOWN.iter().position(|known| known == method).map_or("other", |at| NAMES[at])
}

pub(crate) async fn around(bounds: crate::deadline::Bounds, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match request.headers().get(&REQUEST_ID) {
        Some(id) if valid_request_id(id.as_bytes()) => id.clone(),
        _ => {
            let id = new_request_id();
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let route =
        request.extensions().get::<MatchedPath>().map_or(crate::metrics::UNMATCHED, MatchedPath::as_str).to_owned();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", id = %id.to_str().unwrap_or_default(), method = %method, route = %route);
    let mut response = crate::deadline::request_deadline(bounds, request, next).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status();
    let code = match response.extensions().get::<AnsweredCode>() {
        Some(AnsweredCode(code)) => code,
        None if status.is_success() || status.is_redirection() => "ok",
        None => "error",
    };
    crate::metrics::record(&route, method_label(&method), status, code, took);
    span.in_scope(|| {
        tracing::info!(
            target: "hongbao::access",
            status = status.as_u16(),
            code,
            path = %path,
            duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            "answered"
        );
    });
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_in_their_form() {
        assert!(valid_request_id(b"abc-123_x.y:z"));
        assert!(valid_request_id(&[b'a'; REQUEST_ID_LEN_MAX]));
        for bad in [&b""[..], &[b'a'; REQUEST_ID_LEN_MAX + 1], b"a b", b"a\"b", "é".as_bytes(), b"a\nb"] {
            assert!(!valid_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_method_label_is_one_of_a_few() {
        assert_eq!(method_label(&Method::POST), "POST");
        let invented = Method::from_bytes(b"FOOBAR").unwrap();
        assert_eq!(method_label(&invented), "other");
    }

    #[test]
    fn made_request_ids_are_unique_and_valid() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert!(valid_request_id(a.as_bytes()) && valid_request_id(b.as_bytes()));
    }
}
