//! Packets: send, grab (抢, non-binding), open (拆, binding), and detail.
//! Each handler checks its input first, then takes a token from the
//! caller's bucket for its route, then (for writes) its write permits,
//! then calls the engine.

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hongbao_domain::packet::{GroupInput, SpecInput};
use hongbao_domain::{GrabOutcome, PacketId, PacketSpec, SendOutcome};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::body::{IdempotencyKey, JsonBody, OptionalJsonBody, idempotency_key};
use crate::error::{
    ACCOUNT_FROZEN, AMOUNT_NOT_DIVISIBLE, ApiError, DAILY_LIMIT, IDEMPOTENCY_KEY_REUSED, INSUFFICIENT_BALANCE,
    INVALID_AMOUNT, INVALID_COUNT, INVALID_EXPIRY, INVALID_GREETING, INVALID_GROUP, INVALID_IDEMPOTENCY_KEY,
    INVALID_KIND, INVALID_PASSWORD, INVALID_RECIPIENT, NOT_IN_GROUP, NOT_RECIPIENT, PACKET_EMPTY, PACKET_EXPIRED,
    PACKET_NOT_FOUND, SHARE_TOO_SMALL, WRONG_PASSWORD,
};
use crate::openapi::{ENGINE, JSON_BODY, TAG_PACKETS, USER_AUTH, USER_WRITE, errors};
use crate::rate_limit::Route;
use crate::views::{GrabView, OpenView, PacketDetail, PacketView};

/// A packet to send, within the server's limits (a total of at most 20000
/// fen, at most 100 shares, each at least 1 fen, an expiry of 1 s to 7
/// days, a greeting of at most 100 characters; the spec's bounds are made
/// from `Limits::default()`, which no flag changes).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// `lucky` (random shares), `fixed` (equal shares: the total divides by
    /// the count) or `exclusive` (one share, for `recipient` only).
    #[schema(schema_with = crate::views::kinds)]
    kind: String,
    /// In fen; at least 1 fen a share.
    #[schema(schema_with = bounds::total_amount)]
    total_amount: i64,
    /// How many shares (1 for exclusive).
    #[schema(schema_with = bounds::count)]
    count: i64,
    /// Printable text (no control characters); absent or empty for none.
    #[schema(schema_with = bounds::greeting)]
    greeting: Option<String>,
    /// Openers must give it; printable text.
    #[schema(schema_with = bounds::password)]
    password: Option<String>,
    /// An exclusive packet's one opener (and only there): a user other than the sender.
    #[schema(schema_with = bounds::recipient)]
    recipient: Option<String>,
    /// Seconds until it expires (and what is left goes back); one day when absent.
    #[schema(schema_with = bounds::expires_in_s)]
    expires_in_s: Option<i64>,
    /// The chat group it is sent to: only its members may grab, open and
    /// read it (the sender may read it too). Absent: anyone with its id.
    group: Option<GroupRequest>,
}

/// A packet's group, as the chat app knows it when the packet is sent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    /// The chat app's id of the group: 1 to 64 of A-Z a-z 0-9 _ . : @ -
    #[schema(pattern = "^[A-Za-z0-9_.:@-]{1,64}$")]
    id: String,
    /// Its members' user names, 1 to 500 (the sender need not be one).
    #[schema(min_items = 1, max_items = 500)]
    members: Vec<String>,
}

/// The spec's bounds of a send, from the server's limits.
mod bounds {
    use hongbao_domain::Limits;
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};

    fn integer(min: u64, max: u64, nullable: bool) -> ObjectBuilder {
        let types = if nullable { vec![Type::Integer, Type::Null] } else { vec![Type::Integer] };
        ObjectBuilder::new().schema_type(SchemaType::Array(types)).minimum(Some(min)).maximum(Some(max))
    }

    fn text(min: usize, max: usize) -> ObjectBuilder {
        let types = SchemaType::Array(vec![Type::String, Type::Null]);
        ObjectBuilder::new().schema_type(types).min_length(Some(min)).max_length(Some(max))
    }

    pub fn total_amount() -> ObjectBuilder {
        let limits = Limits::default();
        integer(limits.share_min.fen(), limits.total_amount_max.fen(), false)
    }

    pub fn count() -> ObjectBuilder {
        integer(1, u64::from(Limits::default().count_max), false)
    }

    pub fn greeting() -> ObjectBuilder {
        text(0, Limits::default().greeting_chars_max)
    }

    pub fn password() -> ObjectBuilder {
        text(1, Limits::default().password_chars_max)
    }

    pub fn recipient() -> ObjectBuilder {
        crate::views::user_name().schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
    }

    pub fn expires_in_s() -> ObjectBuilder {
        let limits = Limits::default();
        integer(u64::from(limits.expires_in_s_min), u64::from(limits.expires_in_s_max), true)
    }
}

errors!(
    SendErrors: USER_AUTH,
    JSON_BODY,
    &[
        INVALID_KIND,
        INVALID_AMOUNT,
        INVALID_COUNT,
        AMOUNT_NOT_DIVISIBLE,
        SHARE_TOO_SMALL,
        INVALID_GREETING,
        INVALID_PASSWORD,
        INVALID_RECIPIENT,
        INVALID_EXPIRY,
        INVALID_GROUP,
        INVALID_IDEMPOTENCY_KEY,
        INSUFFICIENT_BALANCE,
        IDEMPOTENCY_KEY_REUSED,
        ACCOUNT_FROZEN,
        DAILY_LIMIT,
    ],
    USER_WRITE,
    ENGINE,
);
errors!(GrabErrors: USER_AUTH, &[PACKET_NOT_FOUND, NOT_RECIPIENT, NOT_IN_GROUP, ACCOUNT_FROZEN], USER_WRITE, ENGINE);
errors!(
    OpenErrors: USER_AUTH,
    JSON_BODY,
    &[PACKET_NOT_FOUND, NOT_RECIPIENT, NOT_IN_GROUP, ACCOUNT_FROZEN, WRONG_PASSWORD, PACKET_EMPTY, PACKET_EXPIRED],
    USER_WRITE,
    ENGINE,
);
errors!(DetailErrors: USER_AUTH, &[PACKET_NOT_FOUND, NOT_IN_GROUP], ENGINE);

/// A packet's id in a path.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct PacketPath(
    /// `day-set-sequence-nonce`, as the send answered; any id that names no
    /// packet (malformed too) is 404 `packet_not_found`.
    #[allow(dead_code)]
    String,
);

/// Any id that does not name a packet is 404, malformed or not.
fn packet_id(path: Result<Path<String>, PathRejection>) -> Result<PacketId, ApiError> {
    let Path(text) = path.map_err(|_| ApiError::packet_not_found())?;
    text.parse().map_err(|_| ApiError::packet_not_found())
}

#[utoipa::path(
    post,
    path = "/v1/packets",
    tag = TAG_PACKETS,
    security(("user_token" = [])),
    params(IdempotencyKey),
    request_body = SendRequest,
    responses((status = 201, description = "The packet, sent", body = PacketView), SendErrors),
)]
pub async fn send(
    State(state): State<AppState>,
    Caller(sender, origin): Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SendRequest>,
) -> Result<(StatusCode, Json<PacketView>), ApiError> {
    let input = SpecInput {
        kind: request.kind,
        total_amount: request.total_amount,
        count: request.count,
        greeting: request.greeting,
        password: request.password,
        recipient: request.recipient,
        expires_in_s: request.expires_in_s,
        group: request.group.map(|group| GroupInput { id: group.id, members: group.members }),
    };
    let limits = state.engine.limits();
    let spec = PacketSpec::parse(&input, &sender, limits).map_err(|error| ApiError::invalid_spec(&error, limits))?;
    let key = idempotency_key(&headers)?;
    state.rates.admit(Route::Send, &sender, origin, Instant::now())?;
    let _permit = state.writes.admit(Some(&sender))?;
    match state.engine.send(sender, spec, key).await? {
        SendOutcome::Sent { packet, .. } => Ok((StatusCode::CREATED, Json(PacketView::from(&*packet)))),
        SendOutcome::InsufficientBalance => Err(ApiError::insufficient_balance()),
        SendOutcome::KeyReused => Err(ApiError::key_reused()),
        SendOutcome::AccountFrozen => Err(ApiError::account_frozen()),
        SendOutcome::DailyLimit => Err(ApiError::daily_limit(state.engine.limits(), state.engine.now())),
    }
}

/// 抢: whether the caller may open the packet (binding nothing).
#[utoipa::path(
    post,
    path = "/v1/packets/{id}/grab",
    tag = TAG_PACKETS,
    security(("user_token" = [])),
    params(PacketPath),
    responses((status = 200, description = "Where the packet stands for the caller", body = GrabView), GrabErrors),
)]
pub async fn grab(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<GrabView>, ApiError> {
    let id = packet_id(path)?;
    state.rates.admit(Route::Grab, &user, origin, Instant::now())?;
    let _permit = state.writes.admit(Some(&user))?;
    match state.engine.grab(id, user).await? {
        GrabOutcome::NotFound => Err(ApiError::packet_not_found()),
        GrabOutcome::NotRecipient => Err(ApiError::not_recipient()),
        GrabOutcome::NotInGroup => Err(ApiError::not_in_group()),
        GrabOutcome::AccountFrozen => Err(ApiError::account_frozen()),
        outcome => Ok(Json(GrabView { status: outcome.code() })),
    }
}

/// An open's body, which may be absent.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// The packet's password, if it has one.
    password: Option<String>,
}

/// 拆: opens the packet, binding: the caller's share (the same share
/// again on a repeat).
#[utoipa::path(
    post,
    path = "/v1/packets/{id}/open",
    tag = TAG_PACKETS,
    security(("user_token" = [])),
    params(PacketPath),
    request_body(content = Option<OpenRequest>, description = "Only for a packet with a password; may be empty"),
    responses((status = 200, description = "The caller's share", body = OpenView), OpenErrors),
)]
pub async fn open(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    path: Result<Path<String>, PathRejection>,
    OptionalJsonBody(request): OptionalJsonBody<OpenRequest>,
) -> Result<Json<OpenView>, ApiError> {
    let id = packet_id(path)?;
    state.rates.admit(Route::Open, &user, origin, Instant::now())?;
    let _permit = state.writes.admit(Some(&user))?;
    let outcome = state.engine.open(id, user, request.password).await?;
    match outcome.amount() {
        Some(amount) => Ok(Json(OpenView { amount: amount.fen(), status: outcome.code() })),
        None => Err(ApiError::open_refused(&outcome)),
    }
}

/// The packet with its live state.
#[utoipa::path(
    get,
    path = "/v1/packets/{id}",
    tag = TAG_PACKETS,
    security(("user_token" = [])),
    params(PacketPath),
    responses((status = 200, description = "The packet", body = PacketDetail), DetailErrors),
)]
pub async fn detail(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PacketDetail>, ApiError> {
    let id = packet_id(path)?;
    state.rates.admit(Route::Read, &user, origin, Instant::now())?;
    let packet = state.engine.packet(id).await?.ok_or_else(ApiError::packet_not_found)?;
    if !packet.info.readable_by(&user) {
        return Err(ApiError::not_in_group());
    }
    Ok(Json(PacketDetail::of(&packet, state.engine.now())))
}
