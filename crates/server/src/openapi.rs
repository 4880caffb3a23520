//! The API's OpenAPI 3.1 description, made from the code: every route is
//! registered through `utoipa_axum`'s `OpenApiRouter` with `routes!`, which
//! takes only handlers that carry `#[utoipa::path]`, so a route cannot be
//! served without its entry in the spec. `spec()` is the document;
//! `GET /openapi.json` serves it (serialized once, on first request).
//!
//! **Adding a route.** Three steps, all in the code:
//!
//! 1. The handler, in `routes/<resource>.rs`, answering a type that derives
//!    `serde::Serialize` and `utoipa::ToSchema` (not a `json!` value: the
//!    spec could not describe it).
//! 2. `#[utoipa::path(...)]` on it: the method and `path`, a `tag`
//!    (`TAG_*` here), `security` (`USER`, `ADMIN` or `PEER`; none for an
//!    open route), `params` (path, query, headers), `request_body`, and
//!    `responses`: the success, then the route's error answers, an
//!    `errors!` type that lists the codes the route can answer (groups
//!    here, single codes from `error`). Every route also answers 408
//!    `request_timeout` and 413 `body_too_large` (the layer every request
//!    passes); `errors!` adds them.
//! 3. `.routes(routes!(handler))` in `api()` below.
//!
//! The spec test (`crates/hongbao/tests/api/openapi.rs`) then checks that
//! the route answers where the spec says and refuses other methods, and
//! `tests/openapi/run.sh` sends it generated requests (schemathesis).
//! An answer that is not JSON names its content type in the tuple, as a
//! Prometheus text route would:
//!
//! ```text
//! #[utoipa::path(get, path = "/metrics", tag = TAG_OPERATIONS,
//!     responses((status = 200, description = "Prometheus text format",
//!                content_type = "text/plain; version=0.0.4", body = String),
//!               OpenErrors))]
//! pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse { … }
//! ```
//!
//! (and an HTML page: `content_type = "text/html; charset=utf-8", body = String`).
//!
//! **Error answers.** One schema, `ErrorBody` (`{"error":{"code","message"}}`);
//! each route's answer of a status narrows its `code` to an `enum` of the
//! codes that route answers with that status, lists them in the
//! description, and gives one example each. So a generated request that
//! draws a code the route does not list fails the schema check, as it
//! should.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{
    ADMIN_ONLY, BODY_TOO_LARGE, CODES, ErrorCode, INTERNAL, INVALID_BODY, INVALID_JSON, INVALID_TOKEN, MISSING_TOKEN,
    OVERLOADED, RATE_LIMITED, REQUEST_TIMEOUT, SET_MOVING, SET_UNAVAILABLE, SHUTTING_DOWN, TOKEN_EXPIRED,
    TOO_MANY_REQUESTS, UNKNOWN_KEY,
};
use crate::{AppState, cluster, routes};

pub const TAG_PACKETS: &str = "packets";
pub const TAG_ACCOUNT: &str = "account";
pub const TAG_ADMIN: &str = "admin";
pub const TAG_CLUSTER: &str = "cluster";
pub const TAG_OPERATIONS: &str = "operations";

/// The security schemes' names, for `security((USER = []))`.
pub const USER: &str = "user_token";
pub const ADMIN: &str = "admin_token";
pub const PEER: &str = "peer_token";

/// A user route's token (`auth::Caller`): refused 401, and 429 for a client
/// IP past its failed authentications.
pub const USER_AUTH: &[ErrorCode] = &[MISSING_TOKEN, INVALID_TOKEN, TOKEN_EXPIRED, UNKNOWN_KEY, RATE_LIMITED];
/// An admin route's token (`auth::Admin`): a user's token is 403.
pub const ADMIN_AUTH: &[ErrorCode] =
    &[MISSING_TOKEN, INVALID_TOKEN, TOKEN_EXPIRED, UNKNOWN_KEY, RATE_LIMITED, ADMIN_ONLY];
/// A JSON body (`body::JsonBody`).
pub const JSON_BODY: &[ErrorCode] = &[INVALID_JSON, INVALID_BODY];
/// A user's write permits (`admission`).
pub const USER_WRITE: &[ErrorCode] = &[TOO_MANY_REQUESTS, OVERLOADED];
/// Whatever the engine may answer a command or a read (`EngineError`).
pub const ENGINE: &[ErrorCode] = &[OVERLOADED, SET_UNAVAILABLE, SHUTTING_DOWN, SET_MOVING, INTERNAL];
/// The layer every request passes (`deadline`, `body`).
const EVERY_ROUTE: &[ErrorCode] = &[REQUEST_TIMEOUT, BODY_TOO_LARGE];

/// A type for `responses(...)`: the error answers of a route, from groups
/// of codes (`&[ErrorCode]`).
macro_rules! errors {
    ($name:ident: $($group:expr),* $(,)?) => {
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::openapi::error_answers(&[$($group),*])
            }
        }
    };
}
pub(crate) use errors;

errors!(OpenErrors:);

/// The document's frame: its info, tags and security schemes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hongbao",
        description = "Red packets (lucky money), correct to the fen. JSON in and out; money in integer fen; \
                       times in Unix milliseconds. Errors are `{\"error\":{\"code\",\"message\"}}` with a stable \
                       code; each route lists the codes it answers. Any path not listed here answers 404 \
                       `not_found`; a listed path with a method not listed answers 405 `method_not_allowed`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = TAG_PACKETS, description = "Send, grab, open and read packets; what a user sent and received"),
        (name = TAG_ACCOUNT, description = "The caller's wallet"),
        (name = TAG_ADMIN, description = "Tokens and deposits (an admin's token)"),
        (name = TAG_CLUSTER, description = "Nodes sharing the sets"),
        (name = TAG_OPERATIONS, description = "Probes and this document"),
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&SecuritySchemes),
)]
struct Frame;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hb2")
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            USER,
            bearer("A user's token (`hongbao token`, or POST /v1/admin/tokens); the caller is its user"),
        );
        components.add_security_scheme(
            ADMIN,
            bearer("An admin's token (data/admin.token for the first admin, or `hongbao admin add`)"),
        );
        components.add_security_scheme(
            PEER,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                cluster::PEER,
                "A node's peer token, made from the cluster's shared keys (node-to-node routes only)",
            ))),
        );
    }
}

/// Every route of the API, with its spec.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Frame::openapi())
        .routes(routes!(document))
        .routes(routes!(routes::health::live))
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::health::ready))
        .routes(routes!(crate::metrics::scrape))
        .routes(routes!(crate::console::page))
        .routes(routes!(crate::console::page_slash))
        .routes(routes!(crate::console::script))
        .routes(routes!(crate::console::stylesheet))
        .routes(routes!(routes::admin::token))
        .routes(routes!(routes::admin::deposit))
        .routes(routes!(routes::admin::reverse))
        .routes(routes!(cluster::status))
        .routes(routes!(cluster::take_mail))
        .routes(routes!(routes::account::account))
        .routes(routes!(routes::bills::ledger))
        .routes(routes!(routes::bills::summary))
        .routes(routes!(routes::events::events))
        .routes(routes!(routes::events::firehose))
        .routes(routes!(routes::accounts::freeze))
        .routes(routes!(routes::accounts::unfreeze))
        .routes(routes!(routes::withdrawals::withdraw))
        .routes(routes!(routes::withdrawals::get))
        .routes(routes!(routes::withdrawals::complete))
        .routes(routes!(routes::withdrawals::fail))
        .routes(routes!(routes::packets::send))
        .routes(routes!(routes::lists::sent))
        .routes(routes!(routes::lists::received))
        .routes(routes!(routes::packets::detail))
        .routes(routes!(routes::packets::grab))
        .routes(routes!(routes::packets::open))
}

/// The API's OpenAPI 3.1 document.
pub fn spec() -> OpenApi {
    api().into_openapi()
}

/// The document as served: made once per process.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| match spec().to_json() {
    Ok(json) => Bytes::from(json),
    Err(error) => {
        tracing::error!(%error, "the OpenAPI document could not be serialized");
        Bytes::from_static(b"{}")
    }
});

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = TAG_OPERATIONS,
    responses(
        (status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object),
        OpenErrors,
    ),
)]
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.clone())
}

/// The schema of `ErrorDetail::code`: a string, one of `CODES`.
pub fn every_code() -> ObjectBuilder {
    let described = CODES.iter().map(|code| format!("`{}` ({}): {}", code.code, code.status.as_u16(), code.meaning));
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(CODES.iter().map(|code| code.code)))
        .description(Some(format!("The stable error code: {}", described.collect::<Vec<_>>().join("; "))))
}

/// The error answers of a route whose codes are `groups` (and those of
/// every route), one per status: `ErrorBody` with `code` narrowed to the
/// route's codes of that status, an example of each, and `Retry-After`
/// on 429 and 503.
pub fn error_answers(groups: &[&[ErrorCode]]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in groups.iter().copied().flatten().chain(EVERY_ROUTE) {
        let codes = by_status.entry(code.status.as_u16()).or_default();
        if !codes.contains(code) {
            codes.push(*code);
        }
    }
    by_status.into_iter().map(|(status, codes)| (status.to_string(), RefOr::T(error_answer(status, &codes)))).collect()
}

fn error_answer(status: u16, codes: &[ErrorCode]) -> Response {
    let narrowed = ObjectBuilder::new().property(
        "error",
        ObjectBuilder::new().property(
            "code",
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(codes.iter().map(|code| code.code))),
        ),
    );
    let schema = AllOfBuilder::new().item(Ref::from_schema_name("ErrorBody")).item(narrowed);
    let examples = codes.iter().map(|code| {
        let value = serde_json::json!({ "error": { "code": code.code, "message": code.meaning } });
        (code.code, ExampleBuilder::new().summary(code.meaning).value(Some(value)).build())
    });
    let content = ContentBuilder::new().schema(Some(schema)).examples_from_iter(examples).build();
    let description = codes.iter().map(|code| format!("`{}`: {}", code.code, code.meaning)).collect::<Vec<_>>();
    let mut answer = ResponseBuilder::new().description(description.join("; ")).content("application/json", content);
    if status == 429 || status == 503 {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1));
        let retry = HeaderBuilder::new().schema(seconds).description(Some("Seconds to wait before retrying"));
        answer = answer.header("Retry-After", retry.build());
    }
    answer.build()
}
