//! Admin routes: issue user tokens, and deposit (the stand-in for a bank
//! top-up).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use hongbao_domain::{Amount, DepositOutcome, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Admin;
use crate::body::{JsonBody, idempotency_key};
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    user: String,
}

fn parse_user(name: &str) -> Result<UserId, ApiError> {
    UserId::parse(name)
        .map_err(|_| ApiError::bad_request("invalid_user", "user must be 1 to 64 characters from A-Z a-z 0-9 _ . -"))
}

pub async fn token(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Result<Json<Value>, ApiError> {
    let user = parse_user(&request.user)?;
    Ok(Json(json!({ "user": user.as_str(), "token": state.auth.token_for(&user) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    user: String,
    amount: i64,
}

pub async fn deposit(
    State(state): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    JsonBody(request): JsonBody<DepositRequest>,
) -> Result<Json<Value>, ApiError> {
    let user = parse_user(&request.user)?;
    let limits = state.engine.limits();
    let amount = Amount::from_signed(request.amount)
        .filter(|amount| !amount.is_zero() && *amount <= limits.deposit_max)
        .ok_or_else(|| {
            let max = limits.deposit_max.fen();
            ApiError::bad_request("invalid_amount", format!("amount must be an integer number of fen from 1 to {max}"))
        })?;
    let key = idempotency_key(&headers)?;
    match state.engine.deposit(user.clone(), amount, key).await? {
        DepositOutcome::Deposited { balance, .. } => {
            Ok(Json(json!({ "user": user.as_str(), "balance": balance.fen() })))
        }
        DepositOutcome::KeyReused => Err(key_reused()),
        DepositOutcome::BalanceLimit => Err(ApiError::conflict(
            "balance_limit_exceeded",
            format!("the balance may not exceed {} fen", limits.balance_max.fen()),
        )),
    }
}

pub fn key_reused() -> ApiError {
    ApiError::conflict("idempotency_key_reused", "this Idempotency-Key was used for a different request")
}
