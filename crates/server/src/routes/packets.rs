//! Packets: send, grab (抢, non-binding), open (拆, binding), and detail.
//! Each handler checks its input first, then takes a token from the
//! caller's bucket for its route, then (for writes) its write permits,
//! then calls the engine.

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hongbao_domain::packet::SpecInput;
use hongbao_domain::{GrabOutcome, PacketId, PacketSpec, SendOutcome};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::body::{JsonBody, OptionalJsonBody, idempotency_key};
use crate::error::ApiError;
use crate::rate_limit::Route;
use crate::views::{PacketDetail, PacketView};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    kind: String,
    total_amount: i64,
    count: i64,
    greeting: Option<String>,
    password: Option<String>,
    recipient: Option<String>,
    expires_in_s: Option<i64>,
}

/// Any id that does not name a packet is 404, malformed or not.
fn packet_id(path: Result<Path<String>, PathRejection>) -> Result<PacketId, ApiError> {
    let Path(text) = path.map_err(|_| ApiError::packet_not_found())?;
    text.parse().map_err(|_| ApiError::packet_not_found())
}

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
    }
}

pub async fn grab(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = packet_id(path)?;
    state.rates.admit(Route::Grab, &user, origin, Instant::now())?;
    let _permit = state.writes.admit(Some(&user))?;
    match state.engine.grab(id, user).await? {
        GrabOutcome::NotFound => Err(ApiError::packet_not_found()),
        GrabOutcome::NotRecipient => Err(ApiError::not_recipient()),
        outcome => Ok(Json(json!({ "status": outcome.code() }))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    password: Option<String>,
}

pub async fn open(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    path: Result<Path<String>, PathRejection>,
    OptionalJsonBody(request): OptionalJsonBody<OpenRequest>,
) -> Result<Json<Value>, ApiError> {
    let id = packet_id(path)?;
    state.rates.admit(Route::Open, &user, origin, Instant::now())?;
    let _permit = state.writes.admit(Some(&user))?;
    let outcome = state.engine.open(id, user, request.password).await?;
    match outcome.amount() {
        Some(amount) => Ok(Json(json!({ "status": outcome.code(), "amount": amount.fen() }))),
        None => Err(ApiError::open_refused(&outcome)),
    }
}

pub async fn detail(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PacketDetail>, ApiError> {
    let id = packet_id(path)?;
    state.rates.admit(Route::Read, &user, origin, Instant::now())?;
    let packet = state.engine.packet(id).await?.ok_or_else(ApiError::packet_not_found)?;
    Ok(Json(PacketDetail::of(&packet, state.engine.now())))
}
