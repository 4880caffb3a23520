//! The event streams (`GET /v1/events`, `GET /v1/admin/events`), read as
//! an `EventSource` reads them: frames parsed as they arrive, and a
//! reconnect that sends the last `id` back in `Last-Event-ID`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Result;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, HOST};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::helpers::*;

/// One server-sent event.
#[derive(Clone, Debug)]
pub struct Sse {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// An open stream, parsed as it comes.
pub struct Stream {
    body: Incoming,
    buffer: String,
    last_id: Option<String>,
}

impl Stream {
    /// The next event, or `None` if none comes within `wait`. Comments
    /// (keep-alives) are skipped.
    async fn next_within(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut sse = Sse { event: "message".into(), id: String::new(), data: Value::Null };
                let mut data = String::new();
                for line in block.lines() {
                    match line.split_once(':') {
                        Some(("event", value)) => sse.event = value.trim_start().to_owned(),
                        Some(("id", value)) => sse.id = value.trim_start().to_owned(),
                        Some(("data", value)) => data.push_str(value.trim_start()),
                        _ => {}
                    }
                }
                if data.is_empty() && sse.id.is_empty() {
                    continue; // a comment
                }
                sse.data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data {data:?}: {e}"));
                self.last_id = Some(sse.id.clone());
                return Some(sse);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await.ok()??.ok()?;
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).expect("an event stream is UTF-8"));
            }
        }
    }

    pub async fn next(&mut self) -> Sse {
        self.next_within(POLL_BOUND).await.expect("an event within the bound")
    }

    /// Every event that comes until none has for `quiet`.
    async fn until_quiet(&mut self, quiet: Duration) -> Vec<Sse> {
        let mut events = Vec::new();
        while let Some(event) = self.next_within(quiet).await {
            events.push(event);
        }
        events
    }
}

/// Opens `path` as an event stream: its status and, on 200, the stream.
pub async fn connect(
    api: &Api,
    path: &str,
    token: &str,
    last_id: Option<&str>,
) -> Result<(u16, Option<Stream>, Value)> {
    let stream = TcpStream::connect(api.addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .uri(path)
        .header(HOST, api.addr.to_string())
        .header(AUTHORIZATION, format!("Bearer {token}"));
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = sender.send_request(request.body(Empty::<Bytes>::new())?).await?;
    let status = response.status().as_u16();
    if status != 200 {
        let bytes = response.into_body().collect().await?.to_bytes();
        return Ok((status, None, serde_json::from_slice(&bytes)?));
    }
    let content_type = response.headers()["content-type"].to_str()?.to_owned();
    assert_eq!(content_type, "text/event-stream", "{path}");
    let stream = Stream { body: response.into_body(), buffer: String::new(), last_id: None };
    Ok((status, Some(stream), Value::Null))
}

async fn stream(api: &Api, token: &str, last_id: Option<&str>) -> Result<Stream> {
    let (status, stream, body) = connect(api, "/v1/events", token, last_id).await?;
    assert_eq!(status, 200, "{body}");
    Ok(stream.expect("a stream"))
}

fn of_kind<'a>(events: &'a [Sse], kind: &str) -> Vec<&'a Sse> {
    events.iter().filter(|event| event.event == kind).collect()
}

#[tokio::test]
async fn a_sender_hears_each_open_and_the_best_luck_and_openers_hear_their_credits() -> Result<()> {
    let (server, [alice, bob, carol, dave]) =
        start_with([("alice", 10_000), ("bob", 0), ("carol", 0), ("dave", 0)]).await?;
    let api = &server.api;
    let mut alices = stream(api, &alice, None).await?;
    let ready = alices.next().await;
    assert_eq!((ready.event.as_str(), &ready.data), ("ready", &json!({})));
    let mut bobs = stream(api, &bob, None).await?;
    assert_eq!(bobs.next().await.event, "ready");

    let id = api.send_id(&alice, &json!({"kind": "lucky", "total_amount": 1000, "count": 3})).await;
    let mut shares = HashMap::new();
    for (name, token) in [("bob", &bob), ("carol", &carol), ("dave", &dave)] {
        shares.insert(name, api.opened(token, &id).await);
    }

    let mut heard = Vec::new();
    while heard.len() < 4 {
        heard.push(alices.next().await);
    }
    let opened = of_kind(&heard, "packet.opened");
    assert_eq!(opened.len(), 3, "{heard:?}");
    for event in &opened {
        let opener = event.data["opener"].as_str().unwrap();
        assert_eq!(event.data["amount"], shares[opener], "{event:?}");
        assert_eq!((event.data["user"].as_str(), event.data["packet_id"].as_str()), (Some("alice"), Some(&*id)));
    }
    let remaining: Vec<u64> = opened.iter().map(|event| u64_of(&event.data["remaining_count"])).collect();
    assert_eq!(remaining, [2, 1, 0], "in the order they were opened");
    let finished = of_kind(&heard, "packet.finished");
    assert_eq!(finished.len(), 1, "{heard:?}");
    let best = shares.values().max().unwrap();
    assert_eq!(finished[0].data["best_luck"]["amount"], *best);
    let detail = api.detail(&alice, &id).await;
    assert_eq!(finished[0].data["best_luck"]["user"], detail["best_luck"]["user"]);

    let credited = bobs.next().await;
    assert_eq!(credited.event, "share.credited");
    assert_eq!(
        (credited.data["user"].as_str(), credited.data["packet_id"].as_str(), &credited.data["amount"]),
        (Some("bob"), Some(&*id), &json!(shares["bob"]))
    );
    // Only one's own: bob hears nothing of carol's and dave's credits.
    assert!(bobs.next_within(Duration::from_millis(300)).await.is_none());
    let ids: Vec<&str> = heard.iter().map(|event| event.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id.split_once('.').map(|(p, i)| (p.parse::<u64>().unwrap(), i.parse::<u32>().unwrap())));
    assert_eq!(ids, sorted, "ids grow");
    server.stop_and_audit().await
}

#[tokio::test]
async fn a_burst_is_delivered_exactly_once_across_a_reconnect() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000_000)]).await?;
    let api = &server.api;
    let openers: Vec<String> = opener_tokens(api, 40).await;
    let id = api.send_id(&alice, &json!({"kind": "lucky", "total_amount": 4_000, "count": 40})).await;

    let mut first = stream(api, &alice, None).await?;
    assert_eq!(first.next().await.event, "ready");
    let open_all = |range: std::ops::Range<usize>| {
        let (api, id, openers) = (api.clone(), id.clone(), openers.clone());
        tokio::spawn(async move {
            let opens = range.map(|n| {
                let (api, id, token) = (api.clone(), id.clone(), openers[n].clone());
                tokio::spawn(async move { api.opened(&token, &id).await })
            });
            for open in opens.collect::<Vec<_>>() {
                open.await.unwrap();
            }
        })
    };
    open_all(0..25).await?;
    // Read part of the burst, then drop the connection mid-way.
    let mut heard = Vec::new();
    for _ in 0..10 {
        heard.push(first.next().await);
    }
    let last = first.last_id.clone().unwrap();
    drop(first);
    open_all(25..40).await?;

    let mut second = stream(api, &alice, Some(&last)).await?;
    let ready = second.next().await;
    assert_eq!((ready.event.as_str(), ready.id.as_str()), ("ready", last.as_str()), "resumes where it left");
    heard.extend(second.until_quiet(Duration::from_millis(500)).await);

    let mut openers_heard: BTreeMap<String, usize> = BTreeMap::new();
    for event in of_kind(&heard, "packet.opened") {
        *openers_heard.entry(event.data["opener"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(openers_heard.len(), 40, "every open heard: {openers_heard:?}");
    assert!(openers_heard.values().all(|&n| n == 1), "none twice: {openers_heard:?}");
    assert_eq!(of_kind(&heard, "packet.finished").len(), 1);
    let mut ids: Vec<&str> = heard.iter().map(|event| event.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), heard.len(), "no id twice");
    server.stop_and_audit().await
}

/// Tokens for `n` new users without money (they only open).
async fn opener_tokens(api: &Api, n: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..n {
        tokens.push(api.token(&format!("opener{i}")).await);
    }
    tokens
}

#[tokio::test]
async fn a_refund_is_heard_and_a_stream_from_before_a_restart_is_told_to_reset() -> Result<()> {
    let (server, clock, [alice, bob]) = start_with_clock([("alice", 1_000), ("bob", 0)]).await?;
    let api = &server.api;
    let mut alices = stream(api, &alice, None).await?;
    assert_eq!(alices.next().await.event, "ready");
    let id = api.send_id(&alice, &json!({"kind": "fixed", "total_amount": 300, "count": 3, "expires_in_s": 60})).await;
    api.opened(&bob, &id).await;
    clock.advance_ms(61_000);
    let mut heard = Vec::new();
    while !heard.iter().any(|event: &Sse| event.event == "packet.refunded") {
        heard.push(alices.next().await);
    }
    let refunded = of_kind(&heard, "packet.refunded")[0];
    assert_eq!((&refunded.data["amount"], refunded.data["packet_id"].as_str()), (&json!(200), Some(&*id)));
    let last = refunded.id.clone();
    drop(alices);

    let server = server.restart().await?;
    let api = &server.api;
    let mut again = stream(api, &alice, Some(&last)).await?;
    let first = again.next().await;
    assert_eq!(first.event, "reset", "events before the restart are not held: {first:?}");
    assert!(first.data["reason"].as_str().is_some_and(|reason| !reason.is_empty()));
    // From the reset's id on, nothing is missed.
    let mut resumed = stream(api, &alice, Some(&first.id)).await?;
    assert_eq!(resumed.next().await.event, "ready");
    server.stop_and_audit().await
}

#[tokio::test]
async fn bad_ids_are_refused_and_the_firehose_is_the_admins() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 1_000), ("bob", 0)]).await?;
    let api = &server.api;
    for bad in ["", "12", "1.2.3", "01.2", "x.y", "1.-2"] {
        let (status, _, body) = connect(api, "/v1/events", &alice, Some(bad)).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_event_id")), "{bad:?}");
    }
    let (status, _, body) = connect(api, "/v1/admin/events", &alice, None).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("admin_only")));
    let (status, _, body) = connect(api, "/v1/admin/events", &api.admin, Some("0:1.0")).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_event_id")), "every set is named");

    let (status, hose, _) = connect(api, "/v1/admin/events", &api.admin, None).await?;
    assert_eq!(status, 200);
    let mut hose = hose.unwrap();
    let ready = hose.next().await;
    assert_eq!(ready.event, "ready");
    let sets = ready.id.split(',').count();
    assert_eq!(sets, 8, "a cursor per set: {}", ready.id);
    let id = api.send_id(&alice, &json!({"kind": "fixed", "total_amount": 100, "count": 1})).await;
    api.opened(&bob, &id).await;
    let mut heard = Vec::new();
    while heard.len() < 3 {
        heard.push(hose.next().await);
    }
    let kinds: Vec<(&str, &str)> =
        heard.iter().map(|event| (event.event.as_str(), event.data["user"].as_str().unwrap())).collect();
    for expected in [("packet.opened", "alice"), ("packet.finished", "alice"), ("share.credited", "bob")] {
        assert!(kinds.contains(&expected), "{kinds:?}");
    }
    // Resumed from the last id: nothing again.
    let last = hose.last_id.clone().unwrap();
    drop(hose);
    let (_, again, _) = connect(api, "/v1/admin/events", &api.admin, Some(&last)).await?;
    let mut again = again.unwrap();
    assert_eq!(again.next().await.event, "ready");
    assert!(again.next_within(Duration::from_millis(300)).await.is_none(), "nothing is heard twice");
    server.stop_and_audit().await
}

#[tokio::test]
async fn one_user_cannot_hold_more_than_its_streams() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 0), ("bob", 0)]).await?;
    let api = &server.api;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(stream(api, &alice, None).await?);
    }
    let (status, _, body) = connect(api, "/v1/events", &alice, None).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_requests")), "{body}");
    // Another user is not stopped by alice's streams.
    let mut bobs = stream(api, &bob, None).await?;
    assert_eq!(bobs.next().await.event, "ready");
    // A stream closed gives its slot back.
    held.pop();
    let mut reopened = None;
    let deadline = tokio::time::Instant::now() + POLL_BOUND;
    while tokio::time::Instant::now() < deadline {
        let (status, stream, _) = connect(api, "/v1/events", &alice, None).await?;
        if status == 200 {
            reopened = stream;
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert_eq!(reopened.expect("a slot comes back").next().await.event, "ready");
    server.stop_and_audit().await
}
