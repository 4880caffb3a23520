//! An admin's hold on an account: freezing it (when fraud is suspected)
//! stops its sends, opens, grabs and withdrawals; its balance is kept and
//! credits still arrive. Unfreezing lifts it. Both are logged with the
//! admin's name, and both are idempotent.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use hongbao_domain::UserId;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, INVALID_USER, OVERLOADED};
use crate::openapi::{ADMIN_AUTH, ENGINE, TAG_ADMIN, errors};

/// A user in a path.
#[derive(utoipa::IntoParams)]
#[into_params(names("user"), parameter_in = Path)]
pub struct UserPath(
    /// 1 to 64 of A-Z a-z 0-9 _ . -
    #[allow(dead_code)]
    String,
);

/// An account's hold.
#[derive(Serialize, ToSchema)]
pub struct FrozenView {
    pub user: String,
    pub frozen: bool,
    /// Whether this request changed it (false: it was so already).
    pub changed: bool,
}

errors!(FreezeErrors: ADMIN_AUTH, &[INVALID_USER, OVERLOADED], ENGINE);

async fn hold(
    state: AppState,
    admin: crate::token::AdminName,
    path: Result<Path<String>, PathRejection>,
    frozen: bool,
) -> Result<Json<FrozenView>, ApiError> {
    let Path(name) = path.map_err(|_| ApiError::invalid_user())?;
    let user = UserId::parse(&name).map_err(|_| ApiError::invalid_user())?;
    let _permit = state.writes.admit(None)?;
    let changed = state.engine.set_frozen(user.clone(), frozen).await?;
    let what = if frozen { "admin froze an account" } else { "admin unfroze an account" };
    tracing::info!(target: crate::observe::ADMIN_LOG, %admin, %user, changed, "{what}");
    Ok(Json(FrozenView { user: user.as_str().to_owned(), frozen, changed }))
}

/// Freezes the account: no sends, opens, grabs or withdrawals.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{user}/freeze",
    tag = TAG_ADMIN,
    security(("admin_token" = [])),
    params(UserPath),
    responses((status = 200, description = "The account, frozen", body = FrozenView), FreezeErrors),
)]
pub async fn freeze(
    State(state): State<AppState>,
    Admin(admin): Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<FrozenView>, ApiError> {
    hold(state, admin, path, true).await
}

/// Unfreezes the account.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{user}/unfreeze",
    tag = TAG_ADMIN,
    security(("admin_token" = [])),
    params(UserPath),
    responses((status = 200, description = "The account, no longer frozen", body = FrozenView), FreezeErrors),
)]
pub async fn unfreeze(
    State(state): State<AppState>,
    Admin(admin): Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<FrozenView>, ApiError> {
    hold(state, admin, path, false).await
}
