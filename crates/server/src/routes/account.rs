//! The caller's own wallet.

use std::time::Instant;

use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::{ENGINE, TAG_ACCOUNT, USER_AUTH, errors};
use crate::rate_limit::Route;
use crate::views::BalanceView;

errors!(AccountErrors: USER_AUTH, ENGINE);

#[utoipa::path(
    get,
    path = "/v1/account",
    tag = TAG_ACCOUNT,
    security(("user_token" = [])),
    responses((status = 200, description = "The caller's balance", body = BalanceView), AccountErrors),
)]
pub async fn account(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
) -> Result<Json<BalanceView>, ApiError> {
    state.rates.admit(Route::Read, &user, origin, Instant::now())?;
    let balance = state.engine.balance(user.clone()).await?;
    Ok(Json(BalanceView { balance: balance.fen(), user: user.as_str().to_owned() }))
}
