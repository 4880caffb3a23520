//! The caller's own wallet.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

pub async fn account(State(state): State<AppState>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    let balance = state.engine.balance(user.clone()).await?;
    Ok(Json(json!({ "user": user.as_str(), "balance": balance.fen() })))
}
