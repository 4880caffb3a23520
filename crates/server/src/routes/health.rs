//! Probes for whoever runs the node: `/livez` (the process answers) and
//! `/readyz` (it should be sent traffic). `/healthz` is an alias of
//! `/livez`, as it always meant "the process answers".

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::ObjectBuilder;

use crate::AppState;
use crate::error::{ApiError, NOT_READY};
use crate::openapi::{TAG_OPERATIONS, errors};
use crate::views::one_of;

/// The process answers.
#[derive(Serialize, ToSchema)]
pub struct LiveView {
    #[schema(schema_with = ok)]
    status: &'static str,
}

/// The node should be sent traffic.
#[derive(Serialize, ToSchema)]
pub struct ReadyView {
    /// The data directory's sets.
    sets: u16,
    #[schema(schema_with = ready_status)]
    status: &'static str,
}

fn ok() -> ObjectBuilder {
    one_of(["ok"])
}

fn ready_status() -> ObjectBuilder {
    one_of(["ready"])
}

errors!(LiveErrors:);
errors!(ReadyErrors: &[NOT_READY]);

#[utoipa::path(get, path = "/livez", tag = TAG_OPERATIONS, responses((status = 200, body = LiveView), LiveErrors))]
pub async fn live() -> Json<LiveView> {
    Json(LiveView { status: "ok" })
}

/// `/livez` under its older name.
#[utoipa::path(get, path = "/healthz", tag = TAG_OPERATIONS, responses((status = 200, body = LiveView), LiveErrors))]
pub async fn healthz() -> Json<LiveView> {
    live().await
}

/// Ready while every set serves writes and the node is not stopping; 503
/// `not_ready` otherwise, saying why. (While the node starts, nothing
/// listens yet: the address is bound only once every set has recovered.)
#[utoipa::path(get, path = "/readyz", tag = TAG_OPERATIONS, responses((status = 200, body = ReadyView), ReadyErrors))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<ReadyView>, ApiError> {
    if state.draining.load(Ordering::Relaxed) || state.engine.is_stopped() {
        return Err(ApiError::not_ready("the node is stopping".to_owned()));
    }
    let unavailable = state.engine.unavailable_sets();
    if !unavailable.is_empty() {
        let sets = unavailable.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        return Err(ApiError::not_ready(format!("sets {sets} are recovering from a storage failure")));
    }
    Ok(Json(ReadyView { sets: state.engine.sets(), status: "ready" }))
}
