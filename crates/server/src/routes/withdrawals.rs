//! Cash-out: a user asks for a withdrawal (its money leaves the balance at
//! once and waits, `pending`); an admin settles it with the bank's answer,
//! `complete` or `fail` (the money comes back, exactly once). Every admin
//! action is logged with the admin's name.

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hongbao_domain::outcome::{SettleOutcome, WithdrawOutcome};
use hongbao_domain::withdrawal::{Settlement, WithdrawalId};
use hongbao_domain::{Amount, Limits};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::AppState;
use crate::auth::{Admin, Caller};
use crate::body::{IdempotencyKey, JsonBody, idempotency_key};
use crate::error::{
    ACCOUNT_FROZEN, ApiError, IDEMPOTENCY_KEY_REUSED, INSUFFICIENT_BALANCE, INVALID_AMOUNT, INVALID_IDEMPOTENCY_KEY,
    OVERLOADED, WITHDRAWAL_NOT_FOUND, WITHDRAWAL_SETTLED,
};
use crate::openapi::{ADMIN_AUTH, ENGINE, JSON_BODY, TAG_ACCOUNT, TAG_ADMIN, USER_AUTH, USER_WRITE, errors};
use crate::rate_limit::Route;
use crate::views::WithdrawalView;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    /// In fen, from 1 to the balance (and at most the largest deposit).
    #[schema(schema_with = amount)]
    amount: i64,
}

fn amount() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(Limits::default().deposit_max.fen()))
}

/// A withdrawal's id in a path.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct WithdrawalPath(
    /// `wd-day-set-sequence-nonce`, as the request answered; any id that
    /// names no withdrawal of the caller's (malformed too) is 404.
    #[allow(dead_code)]
    String,
);

fn withdrawal_id(path: Result<Path<String>, PathRejection>) -> Result<WithdrawalId, ApiError> {
    let Path(text) = path.map_err(|_| ApiError::withdrawal_not_found())?;
    text.parse().map_err(|()| ApiError::withdrawal_not_found())
}

errors!(
    WithdrawErrors: USER_AUTH,
    JSON_BODY,
    &[INVALID_AMOUNT, INVALID_IDEMPOTENCY_KEY, INSUFFICIENT_BALANCE, IDEMPOTENCY_KEY_REUSED, ACCOUNT_FROZEN],
    USER_WRITE,
    ENGINE,
);
errors!(ReadErrors: USER_AUTH, &[WITHDRAWAL_NOT_FOUND], ENGINE);
errors!(SettleErrors: ADMIN_AUTH, &[WITHDRAWAL_NOT_FOUND, WITHDRAWAL_SETTLED, OVERLOADED], ENGINE);

/// Asks for a withdrawal: its money leaves the balance now, pending.
#[utoipa::path(
    post,
    path = "/v1/withdrawals",
    tag = TAG_ACCOUNT,
    security(("user_token" = [])),
    params(IdempotencyKey),
    request_body = WithdrawalRequest,
    responses((status = 201, description = "The withdrawal, pending", body = WithdrawalView), WithdrawErrors),
)]
pub async fn withdraw(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<WithdrawalRequest>,
) -> Result<(StatusCode, Json<WithdrawalView>), ApiError> {
    let max = state.engine.limits().deposit_max;
    let amount = Amount::from_signed(request.amount)
        .filter(|amount| !amount.is_zero() && *amount <= max)
        .ok_or_else(|| ApiError::invalid_amount(max.fen()))?;
    let key = idempotency_key(&headers)?;
    state.rates.admit(Route::Send, &user, origin, Instant::now())?;
    let _permit = state.writes.admit(Some(&user))?;
    match state.engine.withdraw(user, amount, key).await? {
        WithdrawOutcome::Requested { withdrawal, .. } => {
            Ok((StatusCode::CREATED, Json(WithdrawalView::from(&withdrawal))))
        }
        WithdrawOutcome::InsufficientBalance => Err(ApiError::insufficient_balance()),
        WithdrawOutcome::KeyReused => Err(ApiError::key_reused()),
        WithdrawOutcome::AccountFrozen => Err(ApiError::account_frozen()),
    }
}

/// One of the caller's withdrawals.
#[utoipa::path(
    get,
    path = "/v1/withdrawals/{id}",
    tag = TAG_ACCOUNT,
    security(("user_token" = [])),
    params(WithdrawalPath),
    responses((status = 200, description = "The withdrawal", body = WithdrawalView), ReadErrors),
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WithdrawalView>, ApiError> {
    let id = withdrawal_id(path)?;
    state.rates.admit(Route::Read, &user, origin, Instant::now())?;
    match state.engine.withdrawal(id).await? {
        // Someone else's is as unknown as one that does not exist.
        Some(withdrawal) if withdrawal.user == user => Ok(Json(WithdrawalView::from(&withdrawal))),
        _ => Err(ApiError::withdrawal_not_found()),
    }
}

async fn settle(
    state: AppState,
    admin: crate::token::AdminName,
    path: Result<Path<String>, PathRejection>,
    how: Settlement,
) -> Result<Json<WithdrawalView>, ApiError> {
    let id = withdrawal_id(path)?;
    let _permit = state.writes.admit(None)?;
    let outcome = state.engine.settle_withdrawal(id, how).await?;
    let status = how.status().as_str();
    match outcome {
        SettleOutcome::Settled(withdrawal) => {
            let (user, amount) = (&withdrawal.user, withdrawal.amount.fen());
            tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %id, %user, amount, status, "admin settled a withdrawal");
            Ok(Json(WithdrawalView::from(&withdrawal)))
        }
        SettleOutcome::SettledOtherwise(withdrawal) => {
            let was = withdrawal.status.as_str();
            tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %id, status, was, "admin settling refused: settled before");
            Err(ApiError::withdrawal_settled(was))
        }
        SettleOutcome::NotFound => Err(ApiError::withdrawal_not_found()),
    }
}

/// The bank paid it out: the money is gone.
#[utoipa::path(
    post,
    path = "/v1/admin/withdrawals/{id}/complete",
    tag = TAG_ADMIN,
    security(("admin_token" = [])),
    params(WithdrawalPath),
    responses((status = 200, description = "The withdrawal, completed (as before, on a repeat)", body = WithdrawalView), SettleErrors),
)]
pub async fn complete(
    State(state): State<AppState>,
    Admin(admin): Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WithdrawalView>, ApiError> {
    settle(state, admin, path, Settlement::Complete).await
}

/// The bank refused it: the money goes back to the balance, once.
#[utoipa::path(
    post,
    path = "/v1/admin/withdrawals/{id}/fail",
    tag = TAG_ADMIN,
    security(("admin_token" = [])),
    params(WithdrawalPath),
    responses((status = 200, description = "The withdrawal, failed, its money back (as before, on a repeat)", body = WithdrawalView), SettleErrors),
)]
pub async fn fail(
    State(state): State<AppState>,
    Admin(admin): Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WithdrawalView>, ApiError> {
    settle(state, admin, path, Settlement::Fail).await
}
