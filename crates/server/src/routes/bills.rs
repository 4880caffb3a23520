//! The caller's bill (账单: every entry of their wallet, newest first) and
//! their year in red packets (WeChat's yearly "收到的红包").

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use hongbao_domain::Millis;
use hongbao_domain::ledger::EntryKind;
use hongbao_engine::{LedgerQuery, parse_ledger_cursor};
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, INVALID_CURSOR, INVALID_LIMIT, INVALID_QUERY};
use crate::openapi::{ENGINE, TAG_ACCOUNT, USER_AUTH, errors};
use crate::rate_limit::Route;
use crate::routes::lists::page_limit;
use crate::views::{LedgerItemView, PageView, SummaryView, TotalView};

/// A bill page's query (read as text, so that a bad value is this API's 400).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerParams {
    /// Items per page, 1 to 100; 20 when absent.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    /// Only entries of this kind: `deposit`, `send`, `credit`, `refund`,
    /// `withdrawal`, `withdrawal_return` or `reversal`.
    kind: Option<String>,
    /// Only entries at or after this instant (Unix milliseconds).
    #[param(value_type = Option<i64>, minimum = 0)]
    from: Option<String>,
    /// Only entries before this instant (Unix milliseconds).
    #[param(value_type = Option<i64>, minimum = 0)]
    to: Option<String>,
}

errors!(LedgerErrors: USER_AUTH, &[INVALID_QUERY, INVALID_LIMIT, INVALID_CURSOR], ENGINE);

fn instant(name: &str, text: Option<&str>) -> Result<Option<Millis>, ApiError> {
    text.map(|text| {
        text.parse::<i64>()
            .ok()
            .filter(|ms| *ms >= 0)
            .map(Millis)
            .ok_or_else(|| ApiError::invalid_query(format!("{name} must be Unix milliseconds, 0 or more")))
    })
    .transpose()
}

/// The caller's wallet entries, newest first: every change of the balance,
/// with the balance it left.
#[utoipa::path(
    get,
    path = "/v1/ledger",
    tag = TAG_ACCOUNT,
    security(("user_token" = [])),
    params(LedgerParams),
    responses((status = 200, description = "A page of the caller's bill", body = PageView<LedgerItemView>), LedgerErrors),
)]
pub async fn ledger(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    params: Result<Query<LedgerParams>, QueryRejection>,
) -> Result<Json<PageView<LedgerItemView>>, ApiError> {
    let Query(params) = params.map_err(|rejection| ApiError::invalid_query(rejection.body_text()))?;
    let limit = page_limit(params.limit.as_deref())?;
    let before = params
        .cursor
        .as_deref()
        .map(|text| parse_ledger_cursor(text).ok_or_else(ApiError::invalid_cursor))
        .transpose()?;
    let kind = params
        .kind
        .as_deref()
        .map(|text| {
            EntryKind::parse(text).ok_or_else(|| {
                let kinds: Vec<&str> = EntryKind::ALL.iter().map(|kind| kind.as_str()).collect();
                ApiError::invalid_query(format!("kind must be one of {}", kinds.join(", ")))
            })
        })
        .transpose()?;
    let (from, to) = (instant("from", params.from.as_deref())?, instant("to", params.to.as_deref())?);
    state.rates.admit(Route::List, &user, origin, Instant::now())?;
    let page = state.engine.ledger(user, LedgerQuery { before, kind, from, to, limit }).await?;
    Ok(Json(PageView { items: page.items.iter().map(LedgerItemView::from).collect(), next_cursor: page.next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {
    /// The year (UTC), 2000 to 9998.
    #[param(value_type = u32, minimum = 2000, maximum = 9998)]
    year: Option<String>,
}

errors!(SummaryErrors: USER_AUTH, &[INVALID_QUERY], ENGINE);

/// The caller's year in red packets: sent, received, and how often theirs
/// was the best luck.
#[utoipa::path(
    get,
    path = "/v1/summary",
    tag = TAG_ACCOUNT,
    security(("user_token" = [])),
    params(SummaryParams),
    responses((status = 200, description = "The caller's year", body = SummaryView), SummaryErrors),
)]
pub async fn summary(
    State(state): State<AppState>,
    Caller(user, origin): Caller,
    params: Result<Query<SummaryParams>, QueryRejection>,
) -> Result<Json<SummaryView>, ApiError> {
    let Query(params) = params.map_err(|rejection| ApiError::invalid_query(rejection.body_text()))?;
    let year = params
        .year
        .as_deref()
        .and_then(|text| text.parse::<u32>().ok())
        .filter(|year| (2000..=9998).contains(year))
        .ok_or_else(|| ApiError::invalid_query("year must be a year from 2000 to 9998".into()))?;
    state.rates.admit(Route::List, &user, origin, Instant::now())?;
    let summary = state.engine.summary(user, year).await?;
    let totals = summary.totals;
    Ok(Json(SummaryView {
        year,
        sent: TotalView { count: totals.sent_count, amount: totals.sent_fen },
        received: TotalView { count: totals.received_count, amount: totals.received_fen },
        best_luck_count: summary.best_luck_count,
    }))
}
