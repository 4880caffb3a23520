//! The live console at `/console`: a small single-page app (one HTML page,
//! one script, one stylesheet, hand-written in `console/`) compiled into the
//! binary with `include_str!`, so the node serves it with no web server
//! and no files beside it. It needs no credentials to load: everything it
//! shows comes from the public API and `/metrics`, called from the browser
//! (the demo chat with the admin token the operator pastes in).
//!
//! Every answer carries a strict `Content-Security-Policy` (scripts, styles
//! and connections from this origin only, no inline code, no framing) and
//! `X-Content-Type-Options: nosniff`; the page has no inline script or
//! style, so the policy costs it nothing. `Cache-Control: no-cache` makes a
//! browser ask again each time, so a new binary's page and script never
//! mix with an old one's (the three files are 40 KB together).
//!
//! Rejected: server-rendered pages (maud + htmx) would add two crates and
//! a page per refresh; a built SPA would add a JavaScript build step to a
//! Rust repository. The console is three files with no build and no new
//! dependency.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;

use crate::openapi::TAG_OPERATIONS;

/// What the console may load and call: its own origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

const HTML: &str = "text/html; charset=utf-8";

crate::openapi::errors!(ConsoleErrors:);

/// The console's page.
#[utoipa::path(get, path = "/console", tag = TAG_OPERATIONS,
    responses((status = 200, description = "The live console", content_type = HTML, body = String), ConsoleErrors))]
pub async fn page() -> impl IntoResponse {
    asset(HTML, INDEX_HTML)
}

/// The console's page, at its directory's address.
#[utoipa::path(get, path = "/console/", tag = TAG_OPERATIONS,
    responses((status = 200, description = "The live console", content_type = HTML, body = String), ConsoleErrors))]
pub async fn page_slash() -> impl IntoResponse {
    asset(HTML, INDEX_HTML)
}

/// The console's script.
#[utoipa::path(get, path = "/console/console.js", tag = TAG_OPERATIONS,
    responses((status = 200, description = "The console's script",
               content_type = "text/javascript; charset=utf-8", body = String), ConsoleErrors))]
pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

/// The console's stylesheet.
#[utoipa::path(get, path = "/console/console.css", tag = TAG_OPERATIONS,
    responses((status = 200, description = "The console's stylesheet",
               content_type = "text/css; charset=utf-8", body = String), ConsoleErrors))]
pub async fn stylesheet() -> impl IntoResponse {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

/// One of the console's files with its type and the headers every one carries.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, body)
}
