//! Notifications for the chat app, as server-sent events: a user's own
//! stream (`GET /v1/events`: a packet of theirs opened, finished with its
//! best luck, or refunded; a share credited) and the admin's firehose of
//! every user's (`GET /v1/admin/events`, for the chat backend).
//!
//! Events come from durable batches only (`hongbao_engine::events`). Each
//! carries an `id`; a client that reconnects with it in `Last-Event-ID`
//! (as `EventSource` does by itself) gets every event after it, exactly
//! once, as long as the set still holds them. When it does not (the
//! events fell out of the retention window, or the node restarted), the
//! stream opens with `reset` instead of `ready`: the app re-reads its state
//! (balance, lists) and goes on from there. Every stream opens with one of
//! the two, whose `id` is where it starts, so a client that saw no event
//! can still resume.
//!
//! A user's events all live in the user's set, so the user's stream reads
//! one set; on a node of several, a stream for a set held elsewhere is
//! forwarded to its holder (`cluster::forward` passes an event stream
//! through as it comes). The firehose streams the sets this node holds; its
//! `id` holds a cursor for every set of the data set (`0:12.3,1:7.0,…`).
//!
//! Limits: a stream lasts at most `StreamLimits::lifetime` (the client
//! reconnects with its cursor: no event is lost), a user has at most
//! `user_max` streams open (429 `too_many_requests`) and the node `node_max`
//! (503 `overloaded`); a stream ends when the node stops. A client that
//! stops reading is cut by the write timeout like any other answer: the
//! stream makes events only as fast as they are read.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use hongbao_domain::{SetId, UserId};
use hongbao_engine::EngineError;
use hongbao_engine::events::{Cursor, Event, SetEvents};

use crate::AppState;
use crate::admission::WritePermit;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, INVALID_EVENT_ID, OVERLOADED, TOO_MANY_REQUESTS};
use crate::openapi::{ADMIN_AUTH, ENGINE, TAG_ACCOUNT, TAG_ADMIN, USER_AUTH, errors};
use crate::rate_limit::Route;
use crate::views::EventView;

/// Events a stream takes from its set's log per read.
const READ_MOST: usize = 256;
/// How often an idle stream says it is alive (an SSE comment).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the firehose looks for new events when it found none: it
/// reads every set, and one wake-up channel per set is more than a handful
/// of backend connections need.
const FIREHOSE_IDLE: Duration = Duration::from_millis(20);

/// The bounds on event streams (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    pub node_max: usize,
    pub user_max: usize,
    pub lifetime: Duration,
}

impl Default for StreamLimits {
    fn default() -> StreamLimits {
        StreamLimits { node_max: 10_000, user_max: 4, lifetime: Duration::from_secs(3600) }
    }
}

errors!(EventErrors: USER_AUTH, &[INVALID_EVENT_ID, TOO_MANY_REQUESTS, OVERLOADED], ENGINE);
errors!(FirehoseErrors: ADMIN_AUTH, &[INVALID_EVENT_ID, OVERLOADED], ENGINE);

/// The caller's events: its packets opened, finished and refunded, its shares credited.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = TAG_ACCOUNT,
    security(("user_token" = [])),
    params(("Last-Event-ID" = Option<String>, Header,
            description = "The id of the last event received (`position.index`): the stream resumes after it")),
    responses(
        (status = 200, description = "A stream of server-sent events: `ready` or `reset` first, then \
            `packet.opened`, `packet.finished`, `packet.refunded` and `share.credited`, each with an `id` \
            and a JSON `data` (EventView)", content_type = "text/event-stream", body = String),
        EventErrors,
    ),
)]
pub async fn events(State(state): State<AppState>, Caller(user, origin): Caller, headers: HeaderMap) -> Response {
    match user_stream(&state, user, origin, &headers) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn user_stream(
    state: &AppState,
    user: UserId,
    origin: crate::auth::Origin,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let after = last_event_id(headers)?.map(|text| text.parse::<Cursor>()).transpose();
    let after = after.map_err(|()| ApiError::invalid_event_id("a user's stream's ids are `position.index`"))?;
    state.rates.admit(Route::Read, &user, origin, Instant::now())?;
    let set = SetId::of_user(&user, state.engine.sets());
    if !state.engine.holds(set) {
        return Err(ApiError::from(EngineError::NotHere(set)));
    }
    let permit = state.streams.admit(Some(&user))?;
    let log = state.engine.events(set).ok_or_else(|| ApiError::from(EngineError::NotHere(set)))?;
    let follow = Follow::new(state.clone(), vec![(log, after)], Some(user), permit);
    Ok(sse(follow))
}

/// Every user's events, from the sets this node holds.
#[utoipa::path(
    get,
    path = "/v1/admin/events",
    tag = TAG_ADMIN,
    security(("admin_token" = [])),
    params(("Last-Event-ID" = Option<String>, Header,
            description = "The id of the last event received (`set:position.index` for every set, comma-separated)")),
    responses(
        (status = 200, description = "A stream of server-sent events, as GET /v1/events, for every user of \
            the sets this node holds", content_type = "text/event-stream", body = String),
        FirehoseErrors,
    ),
)]
pub async fn firehose(State(state): State<AppState>, Admin(admin): Admin, headers: HeaderMap) -> Response {
    let opened = || -> Result<Response, ApiError> {
        let sets = state.engine.sets();
        let after = match last_event_id(&headers)? {
            Some(text) => parse_firehose_id(text, sets)
                .ok_or_else(|| ApiError::invalid_event_id("the firehose's ids name every set: `0:12.3,1:7.0,…`"))?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; usize::from(sets)],
        };
        let permit = state.streams.admit(None)?;
        let logs = (0..sets).filter_map(|set| state.engine.events(SetId(set))).zip(after).collect();
        tracing::info!(target: crate::observe::ADMIN_LOG, admin = %admin, "event firehose opened");
        Ok(sse(Follow::new(state.clone(), logs, None, permit)))
    };
    opened().unwrap_or_else(IntoResponse::into_response)
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| ApiError::invalid_event_id("Last-Event-ID is not text")),
    }
}

/// `0:12.3,1:7.0,…`: a cursor for each of `sets` sets, in order.
fn parse_firehose_id(text: &str, sets: u16) -> Option<Vec<Cursor>> {
    let cursors: Vec<Cursor> = text
        .split(',')
        .enumerate()
        .map(|(index, part)| {
            let (set, cursor) = part.split_once(':')?;
            (set == index.to_string()).then_some(())?;
            cursor.parse().ok()
        })
        .collect::<Option<_>>()?;
    (cursors.len() == usize::from(sets)).then_some(cursors)
}

fn firehose_id(cursors: &[Cursor]) -> String {
    let parts: Vec<String> = cursors.iter().enumerate().map(|(set, cursor)| format!("{set}:{cursor}")).collect();
    parts.join(",")
}

fn sse(follow: Follow) -> Response {
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok::<_, Infallible>(event), follow))
    });
    stream_response(stream)
}

fn stream_response(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    let mut response = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response();
    // Proxies (nginx) must pass events on as they come.
    response.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    response
}

/// One stream's state: where it is in each set it reads.
struct Follow {
    state: AppState,
    /// The set's log and the cursor read up to; for a user's stream, one.
    sets: Vec<(Arc<SetEvents>, Cursor)>,
    /// Whose events (none: everyone's).
    user: Option<UserId>,
    ready: Option<SseEvent>,
    queued: VecDeque<SseEvent>,
    ends_at: tokio::time::Instant,
    _permit: WritePermit,
}

impl Follow {
    fn new(
        state: AppState,
        logs: Vec<(Arc<SetEvents>, Option<Cursor>)>,
        user: Option<UserId>,
        permit: WritePermit,
    ) -> Follow {
        let mut missed = false;
        let sets: Vec<(Arc<SetEvents>, Cursor)> = logs
            .into_iter()
            .map(|(log, after)| {
                let start = log.read(after.unwrap_or_else(|| log.head()), |_| false, 0);
                missed |= start.missed;
                (log, start.from)
            })
            .collect();
        let ends_at = tokio::time::Instant::now() + state.config.streams.lifetime;
        let mut follow = Follow { state, sets, user, ready: None, queued: VecDeque::new(), ends_at, _permit: permit };
        let first = if missed { "reset" } else { "ready" };
        let data = if missed {
            "{\"reason\":\"events after this stream's Last-Event-ID are no longer held: read the state again\"}"
        } else {
            "{}"
        };
        follow.ready = Some(SseEvent::default().event(first).id(follow.id()).data(data));
        follow
    }

    /// Where the stream is: the `id` of the event it sends next.
    fn id(&self) -> String {
        match self.user {
            Some(_) => self.sets[0].1.to_string(),
            None => firehose_id(&self.sets.iter().map(|(_, cursor)| *cursor).collect::<Vec<_>>()),
        }
    }

    fn stopping(&self) -> bool {
        self.state.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next event to send, waiting for one; `None` ends the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        if let Some(ready) = self.ready.take() {
            return Some(ready);
        }
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            if self.stopping() || tokio::time::Instant::now() >= self.ends_at || !self.still_held() {
                return None;
            }
            if self.read() {
                continue;
            }
            self.wait().await;
        }
    }

    /// A user's stream ends when its set moves to another node (the client
    /// reconnects and is forwarded there).
    fn still_held(&self) -> bool {
        self.user.is_none() || self.state.engine.holds(self.sets[0].0.set())
    }

    /// Queues what the sets hold past the cursors; whether there was any.
    fn read(&mut self) -> bool {
        for index in 0..self.sets.len() {
            let (log, cursor) = &self.sets[index];
            let user = self.user.as_ref();
            let read = log.read(*cursor, |event| user.is_none_or(|user| event.user == *user), READ_MOST);
            if read.missed {
                // Events fell out while this stream was too slow to take
                // them: it cannot go on without a hole.
                self.sets[index].1 = read.from;
                let data = "{\"reason\":\"this stream fell behind the events held: read the state again\"}";
                self.queued.push_back(SseEvent::default().event("reset").id(self.id()).data(data));
            }
            for event in read.events {
                self.sets[index].1 = event.cursor;
                let id = self.id();
                self.queued.push_back(sse_event(&event, id));
            }
            self.sets[index].1 = read.next;
        }
        !self.queued.is_empty()
    }

    async fn wait(&mut self) {
        let until = self.ends_at;
        if self.user.is_some() {
            let mut watch = self.sets[0].0.watch();
            let cursor = self.sets[0].1;
            tokio::select! {
                _ = watch.wait_for(|head| *head > cursor) => {}
                () = tokio::time::sleep_until(until) => {}
                () = self.state.stop.notified() => {}
                // A set given up here moves no more: look again now and then.
                () = tokio::time::sleep(KEEP_ALIVE) => {}
            }
        } else {
            tokio::select! {
                () = tokio::time::sleep(FIREHOSE_IDLE) => {}
                () = self.state.stop.notified() => {}
            }
        }
    }
}

fn sse_event(event: &Event, id: String) -> SseEvent {
    let data = serde_json::to_string(&EventView::of(event)).expect("an event serializes");
    SseEvent::default().event(event.what.name()).id(id).data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firehose_ids_name_every_set_in_order() {
        let cursors = vec![Cursor { position: 12, index: 3 }, Cursor { position: 7, index: 0 }];
        assert_eq!(firehose_id(&cursors), "0:12.3,1:7.0");
        assert_eq!(parse_firehose_id("0:12.3,1:7.0", 2), Some(cursors));
        for bad in ["", "0:12.3", "1:7.0,0:12.3", "0:12.3,1:7.0,2:1.0", "0:12.3;1:7.0", "0:12,1:7.0", "00:1.0,1:1.0"] {
            assert_eq!(parse_firehose_id(bad, 2), None, "{bad:?} parsed");
        }
    }
}
