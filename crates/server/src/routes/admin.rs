//! Admin routes: issue user tokens, and deposit (the stand-in for a bank
//! top-up). Every admin action is logged with the admin's name.

use std::time::Duration;

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
use crate::token::{TokenLifetimes, expiry};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    user: String,
    ttl_s: Option<i64>,
}

fn parse_user(name: &str) -> Result<UserId, ApiError> {
    UserId::parse(name).map_err(|_| ApiError::invalid_user())
}

/// A token lifetime in seconds: 1 to the configured longest.
pub fn parse_ttl(ttl_s: Option<i64>, lifetimes: TokenLifetimes) -> Result<Duration, ApiError> {
    let max = lifetimes.max.as_secs();
    match ttl_s {
        None => Ok(lifetimes.default),
        Some(seconds) => u64::try_from(seconds)
            .ok()
            .filter(|seconds| (1..=max).contains(seconds))
            .map(Duration::from_secs)
            .ok_or_else(|| ApiError::invalid_ttl(max)),
    }
}

pub async fn token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Result<Json<Value>, ApiError> {
    let user = parse_user(&request.user)?;
    let ttl = parse_ttl(request.ttl_s, state.config.tokens)?;
    let expires_at = expiry(state.engine.now(), ttl);
    let token = state.auth.current().issue(&user, expires_at);
    tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %user, expires_at = expires_at.0, "admin issued a user token");
    Ok(Json(json!({ "user": user.as_str(), "token": token, "expires_at": expires_at.0 })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    user: String,
    amount: i64,
}

pub async fn deposit(
    State(state): State<AppState>,
    Admin(admin): Admin,
    headers: HeaderMap,
    JsonBody(request): JsonBody<DepositRequest>,
) -> Result<Json<Value>, ApiError> {
    let user = parse_user(&request.user)?;
    let limits = state.engine.limits();
    let amount = Amount::from_signed(request.amount)
        .filter(|amount| !amount.is_zero() && *amount <= limits.deposit_max)
        .ok_or_else(|| ApiError::invalid_amount(limits.deposit_max.fen()))?;
    let key = idempotency_key(&headers)?;
    let _permit = state.writes.admit(None)?;
    let outcome = state.engine.deposit(user.clone(), amount, key.clone()).await?;
    let key = key.as_deref().unwrap_or("");
    match outcome {
        DepositOutcome::Deposited { balance, .. } => {
            tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %user, amount = amount.fen(), key, "admin deposited");
            Ok(Json(json!({ "user": user.as_str(), "balance": balance.fen() })))
        }
        DepositOutcome::KeyReused => Err(ApiError::key_reused()),
        DepositOutcome::BalanceLimit => {
            tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %user, amount = amount.fen(), key, "admin deposit refused: balance limit");
            Err(ApiError::balance_limit_exceeded(limits.balance_max.fen()))
        }
    }
}
