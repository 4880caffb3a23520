//! Prometheus metrics: the recorder (`metrics-exporter-prometheus`, installed
//! once per process), the HTTP API's own metrics, and `GET /metrics`.
//!
//! The engine records its sets' metrics (`hongbao_engine::telemetry`: queue
//! depth and delay, batch size, commit time, materialization lag, credits in
//! flight, money) through the same `metrics` facade; this module records
//! each request: its count by route, method, status and outcome code, its
//! latency by route, and the requests shed or rate limited.
//!
//! Latencies are summaries, not bucketed histograms: the exporter keeps each
//! as a rolling window of 3 × 20 s and renders its quantiles (0.5, 0.9,
//! 0.99, 0.999), which is what the console and an operator's first
//! dashboard read. Rejected: histograms with fixed buckets, which aggregate
//! across nodes but would need buckets chosen for latencies from 20 µs to
//! seconds, and whose quantiles are estimates.
//!
//! Cost: a request records two handles found by a registry lookup on its
//! labels (about a microsecond of a 45 µs open; BENCHMARKS.md, session 7).

use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "hongbao_http_requests_total";
pub const HTTP_DURATION: &str = "hongbao_http_request_duration_seconds";
pub const SHED_REQUESTS: &str = "hongbao_shed_requests_total";
pub const RATE_LIMITED_REQUESTS: &str = "hongbao_rate_limited_requests_total";

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// How often the recorder folds recorded samples into its summaries when
/// nobody scrapes (a scrape does it too), so memory stays bounded.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. `None` if
/// another recorder was installed first (an embedding program's).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_quantiles(&[0.5, 0.9, 0.99, 0.999])
        .and_then(|builder| builder.set_bucket_duration(Duration::from_secs(20)))
        .map(|builder| builder.set_bucket_count(NonZeroU32::new(3).expect("3 is not zero")));
    let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
        Ok(handle) => handle,
        Err(why) => {
            tracing::warn!(%why, "the Prometheus recorder was not installed; /metrics answers 503");
            return None;
        }
    };
    describe();
    Some(handle)
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route, method, status and outcome code.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time from a request's head to its answer, by route.");
    describe_counter!(
        SHED_REQUESTS,
        "Requests refused to shed load (503 overloaded, 429 too_many_requests), by reason."
    );
    describe_counter!(RATE_LIMITED_REQUESTS, "Requests refused by a rate limit (429 rate_limited), by route.");
    for (name, help) in hongbao_engine::telemetry::DESCRIPTIONS {
        match *name {
            hongbao_engine::telemetry::QUEUE_DELAY | hongbao_engine::telemetry::COMMIT_SECONDS => {
                describe_histogram!(*name, Unit::Seconds, *help);
            }
            hongbao_engine::telemetry::BATCH_COMMANDS => describe_histogram!(*name, *help),
            name if name.ends_with("_total") => describe_counter!(name, *help),
            name => describe_gauge!(name, *help),
        }
    }
}

/// Folds samples into summaries now and then, for as long as the server runs.
pub async fn upkeep() {
    let Some(handle) = handle() else { return };
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

/// One answered request. Every label is bounded: `route` is a route's
/// template or `unmatched`, `method` one of `observe::method_label`'s, and
/// `code` the API's error code or `ok`.
pub fn record(route: &str, method: &'static str, status: StatusCode, code: &'static str, took: Duration) {
    let route = route.to_owned();
    counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.as_u16().to_string(), "code" => code)
        .increment(1);
    match code {
        "overloaded" | "too_many_requests" => counter!(SHED_REQUESTS, "reason" => code).increment(1),
        "rate_limited" => counter!(RATE_LIMITED_REQUESTS, "route" => route.clone()).increment(1),
        _ => {}
    }
    histogram!(HTTP_DURATION, "route" => route).record(took.as_secs_f64());
}

crate::openapi::errors!(ScrapeErrors: &[crate::error::METRICS_UNAVAILABLE]);

/// `GET /metrics`: the Prometheus text format (version 0.0.4). No token:
/// scrape it on the internal network, and do not route it from outside.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = crate::openapi::TAG_OPERATIONS,
    responses(
        (status = 200, description = "Every metric in the Prometheus text format (README: Metrics)",
         content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        ScrapeErrors,
    ),
)]
pub async fn scrape() -> Response {
    let Some(handle) = handle() else {
        return crate::ApiError::metrics_unavailable().into_response();
    };
    let mut response = handle.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
