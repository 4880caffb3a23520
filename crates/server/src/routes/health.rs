//! Probes for whoever runs the node: `/livez` (the process answers) and
//! `/readyz` (it should be sent traffic). `/healthz` is an alias of
//! `/livez`, as it always meant "the process answers".

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready while every set serves writes and the node is not stopping; 503
/// `not_ready` otherwise, saying why. (While the node starts, nothing
/// listens yet: the address is bound only once every set has recovered.)
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.draining.load(Ordering::Relaxed) || state.engine.is_stopped() {
        return Err(ApiError::not_ready("the node is stopping".to_owned()));
    }
    let unavailable = state.engine.unavailable_sets();
    if !unavailable.is_empty() {
        let sets = unavailable.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        return Err(ApiError::not_ready(format!("sets {sets} are recovering from a storage failure")));
    }
    Ok(Json(json!({ "status": "ready", "sets": state.engine.sets() })))
}
