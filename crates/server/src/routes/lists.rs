//! What a user sent and received, newest first, cursor-paged.

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use hongbao_engine::parse_received_cursor;
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, INVALID_CURSOR, INVALID_LIMIT, INVALID_QUERY};
use crate::openapi::{ENGINE, TAG_PACKETS, USER_AUTH, errors};
use crate::rate_limit::Route;
use crate::views::{PageView, ReceivedView, SentView};

/// Items per page when the caller names no limit.
const PAGE_LEN_DEFAULT: usize = 20;
/// The most items per page: bounds the work and the answer of one request.
const PAGE_LEN_MAX: usize = 100;

/// A page's query (read as text, so that a bad value is this API's 400).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Items per page, 1 to 100; 20 when absent.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

errors!(ListErrors: USER_AUTH, &[INVALID_QUERY, INVALID_LIMIT, INVALID_CURSOR], ENGINE);

/// A page's length from `?limit=`: 1 to 100, 20 when absent.
pub(crate) fn page_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(PAGE_LEN_DEFAULT),
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=PAGE_LEN_MAX).contains(n))
            .ok_or_else(|| ApiError::invalid_limit(PAGE_LEN_MAX)),
    }
}

fn limit(query: &ListQuery) -> Result<usize, ApiError> {
    page_limit(query.limit.as_deref())
}

fn query(query: Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery, ApiError> {
    query.map(|Query(query)| query).map_err(|rejection| ApiError::invalid_query(rejection.body_text()))
}

/// What the caller sent, newest first.
#[utoipa::path(
    get,
    path = "/v1/packets/sent",
    tag = TAG_PACKETS,
    security(("user_token" = [])),
    params(ListQuery),
    responses((status = 200, description = "A page of sent packets", body = PageView<SentView>), ListErrors),
)]
pub async fn sent(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    list: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<PageView<SentView>>, ApiError> {
    let list = query(list)?;
    let limit = limit(&list)?;
    let cursor =
        list.cursor.as_deref().map(|text| text.parse::<u64>().map_err(|_| ApiError::invalid_cursor())).transpose()?;
    state.rates.admit(Route::List, &user, origin, Instant::now())?;
    let page = state.engine.sent(user, cursor, limit).await?;
    let now = state.engine.now();
    Ok(Json(PageView {
        items: page.items.iter().map(|item| SentView::of(item, now)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// What the caller received, newest first.
#[utoipa::path(
    get,
    path = "/v1/packets/received",
    tag = TAG_PACKETS,
    security(("user_token" = [])),
    params(ListQuery),
    responses((status = 200, description = "A page of received shares", body = PageView<ReceivedView>), ListErrors),
)]
pub async fn received(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    list: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<PageView<ReceivedView>>, ApiError> {
    let list = query(list)?;
    let limit = limit(&list)?;
    let cursor = list
        .cursor
        .as_deref()
        .map(|text| parse_received_cursor(text).ok_or_else(ApiError::invalid_cursor))
        .transpose()?;
    state.rates.admit(Route::List, &user, origin, Instant::now())?;
    let page = state.engine.received(user, cursor, limit).await?;
    Ok(Json(PageView { items: page.items.iter().map(ReceivedView::from).collect(), next_cursor: page.next_cursor }))
}
