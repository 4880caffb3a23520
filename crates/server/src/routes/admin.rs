//! Admin routes: issue user tokens, and deposit (the stand-in for a bank
//! top-up). Every admin action is logged with the admin's name.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use hongbao_domain::outcome::ReverseOutcome;
use hongbao_domain::{Amount, DepositOutcome, Limits, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};

use crate::AppState;
use crate::auth::Admin;
use crate::body::{IdempotencyKey, JsonBody, idempotency_key};
use crate::error::{
    ApiError, BALANCE_LIMIT_EXCEEDED, DEPOSIT_NOT_FOUND, IDEMPOTENCY_KEY_REUSED, INSUFFICIENT_BALANCE, INVALID_AMOUNT,
    INVALID_IDEMPOTENCY_KEY, INVALID_TTL, INVALID_USER, OVERLOADED,
};
use crate::openapi::{ADMIN_AUTH, ENGINE, JSON_BODY, TAG_ADMIN, errors};
use crate::token::{TokenLifetimes, USER_TOKEN_TTL_MAX, expiry};
use crate::views::BalanceView;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// 1 to 64 of A-Z a-z 0-9 _ . -
    #[schema(schema_with = crate::views::user_name)]
    user: String,
    /// The token's lifetime in seconds, 1 to 31,622,400 (366 days); 30 days when absent.
    #[schema(schema_with = ttl)]
    ttl_s: Option<i64>,
}

/// A user's new token.
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    /// When it expires, Unix milliseconds.
    expires_at: i64,
    token: String,
    user: String,
}

errors!(TokenErrors: ADMIN_AUTH, JSON_BODY, &[INVALID_USER, INVALID_TTL]);

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

#[utoipa::path(
    post,
    path = "/v1/admin/tokens",
    tag = TAG_ADMIN,
    security(("admin_token" = [])),
    request_body = TokenRequest,
    responses((status = 200, description = "A token for the user", body = TokenView), TokenErrors),
)]
pub async fn token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Result<Json<TokenView>, ApiError> {
    let user = parse_user(&request.user)?;
    let ttl = parse_ttl(request.ttl_s, state.config.tokens)?;
    let expires_at = expiry(state.engine.now(), ttl);
    let token = state.auth.current().issue(&user, expires_at);
    tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %user, expires_at = expires_at.0, "admin issued a user token");
    Ok(Json(TokenView { expires_at: expires_at.0, token, user: user.as_str().to_owned() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// 1 to 64 of A-Z a-z 0-9 _ . -
    #[schema(schema_with = crate::views::user_name)]
    user: String,
    /// In fen, from 1 to the deposit limit (10,000,000.00).
    #[schema(schema_with = deposit_amount)]
    amount: i64,
}

fn ttl() -> ObjectBuilder {
    let types = SchemaType::Array(vec![Type::Integer, Type::Null]);
    ObjectBuilder::new().schema_type(types).minimum(Some(1)).maximum(Some(USER_TOKEN_TTL_MAX.as_secs()))
}

fn deposit_amount() -> ObjectBuilder {
    let max = Limits::default().deposit_max.fen();
    ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(max))
}

errors!(
    DepositErrors: ADMIN_AUTH,
    JSON_BODY,
    &[INVALID_USER, INVALID_AMOUNT, INVALID_IDEMPOTENCY_KEY, OVERLOADED, IDEMPOTENCY_KEY_REUSED, BALANCE_LIMIT_EXCEEDED],
    ENGINE,
);

#[utoipa::path(
    post,
    path = "/v1/admin/deposits",
    tag = TAG_ADMIN,
    security(("admin_token" = [])),
    params(IdempotencyKey),
    request_body = DepositRequest,
    responses((status = 200, description = "The user's balance after the deposit", body = BalanceView), DepositErrors),
)]
pub async fn deposit(
    State(state): State<AppState>,
    Admin(admin): Admin,
    headers: HeaderMap,
    JsonBody(request): JsonBody<DepositRequest>,
) -> Result<Json<BalanceView>, ApiError> {
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
            Ok(Json(BalanceView { balance: balance.fen(), user: user.as_str().to_owned() }))
        }
        DepositOutcome::KeyReused => Err(ApiError::key_reused()),
        DepositOutcome::BalanceLimit => {
            tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %user, amount = amount.fen(), key, "admin deposit refused: balance limit");
            Err(ApiError::balance_limit_exceeded(limits.balance_max.fen()))
        }
    }
}

/// A deposit's reference in a path (`deposit:<user>:key:<key>` or
/// `deposit:<user>:auto:<16 hex digits>`, as the ledger shows it).
#[derive(utoipa::IntoParams)]
#[into_params(names("reference"), parameter_in = Path)]
pub struct DepositPath(#[allow(dead_code)] String);

/// A reversed deposit.
#[derive(Serialize, ToSchema)]
pub struct ReversalView {
    /// The deposit's reference.
    reference: String,
    user: String,
    /// What was taken back: the deposit's amount.
    amount: u64,
    /// The balance right after the reversal (now, on a repeat).
    balance: u64,
}

errors!(
    ReverseErrors: ADMIN_AUTH,
    &[DEPOSIT_NOT_FOUND, INSUFFICIENT_BALANCE, OVERLOADED],
    ENGINE,
);

/// Takes a deposit back (a compensating entry, `reversal:<reference>`), once.
#[utoipa::path(
    post,
    path = "/v1/admin/deposits/{reference}/reverse",
    tag = TAG_ADMIN,
    security(("admin_token" = [])),
    params(DepositPath),
    responses((status = 200, description = "The deposit, reversed (as before, on a repeat)", body = ReversalView), ReverseErrors),
)]
pub async fn reverse(
    State(state): State<AppState>,
    Admin(admin): Admin,
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ReversalView>, ApiError> {
    let axum::extract::Path(reference) = path.map_err(|_| ApiError::deposit_not_found())?;
    let Some(user) = hongbao_domain::ledger::deposit_user(&reference) else {
        return Err(ApiError::deposit_not_found());
    };
    let _permit = state.writes.admit(None)?;
    match state.engine.reverse_deposit(reference.clone()).await? {
        ReverseOutcome::Reversed { amount, balance, replayed } => {
            tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %user, reference, amount = amount.fen(), replayed, "admin reversed a deposit");
            Ok(Json(ReversalView { reference, user: user.to_string(), amount: amount.fen(), balance: balance.fen() }))
        }
        ReverseOutcome::NotFound => Err(ApiError::deposit_not_found()),
        ReverseOutcome::InsufficientBalance => {
            tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %user, reference, "admin reversal refused: the balance does not cover it");
            Err(ApiError::insufficient_balance())
        }
    }
}
