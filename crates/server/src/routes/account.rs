//! The caller's own wallet.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::rate_limit::Route;

pub async fn account(State(state): State<AppState>, Caller(user, origin): Caller) -> Result<Json<Value>, ApiError> {
    state.rates.admit(Route::Read, &user, origin, Instant::now())?;
    let balance = state.engine.balance(user.clone()).await?;
    Ok(Json(json!({ "user": user.as_str(), "balance": balance.fen() })))
}
