//! The `Idempotency-Key` header: never a panic, and a key accepted is 1 to
//! 64 characters of `[A-Za-z0-9_.:-]`.
#![no_main]

use hongbao_server::body::idempotency_key;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let mut headers = HeaderMap::new();
    headers.insert("idempotency-key", value);
    if let Ok(Some(key)) = idempotency_key(&headers) {
        assert!((1..=64).contains(&key.len()), "{key:?}");
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)), "{key:?}");
    }
});
