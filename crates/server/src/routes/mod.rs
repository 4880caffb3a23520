//! The handlers, one file per resource.

pub mod account;
pub mod accounts;
pub mod admin;
pub mod bills;
pub mod events;
pub mod health;
pub(crate) mod lists;
pub mod packets;
pub mod withdrawals;

use crate::error::ApiError;

pub async fn not_found() -> ApiError {
    ApiError::route_not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
