//! What an operator sees: `/metrics` in the Prometheus text format, moving
//! with the load, and a request id on every answer.
//!
//! The servers of this test binary share one process, so they share the
//! process's metrics recorder: counters are compared before and after this
//! test's own load, and can only have moved at least that much.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use serde_json::json;

use crate::helpers::*;

/// One sample of the text format: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y\"z"}` → labels, and the rest of the line.
fn labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = text.strip_prefix('{') else { return Ok((labels, text)) };
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or(format!("a label without =\": {rest}"))?;
        if !valid_name(name) {
            return Err(format!("label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                    'n' => value.push('\n'),
                    escaped @ ('\\' | '"') => value.push(escaped),
                    other => return Err(format!("escape \\{other}")),
                },
                (at, '"') => break at + 1,
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        rest = after[end..].strip_prefix(',').unwrap_or(&after[end..]);
    }
}

/// Parses the whole exposition strictly: every sample's family has a
/// `# TYPE` line before it, names and labels are well formed, values parse.
fn parse(text: &str) -> Result<(HashMap<String, String>, Vec<Sample>), String> {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind) || !valid_name(name) {
                        return Err(format!("bad TYPE line: {line}"));
                    }
                    types.insert(name.to_owned(), kind.to_owned());
                }
                (Some("HELP"), Some(name), _) if valid_name(name) => {}
                _ => return Err(format!("bad comment: {line}")),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or(format!("no value: {line}"))?;
        let name = &line[..name_end];
        let (labels, rest) = labels(&line[name_end..])?;
        let value = rest.trim().split(' ').next().ok_or(format!("no value: {line}"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            value => value.parse().map_err(|_| format!("value {value:?}: {line}"))?,
        };
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|family| types.contains_key(*family)))
            .unwrap_or(name);
        if !valid_name(name) || !types.contains_key(family) {
            return Err(format!("a sample without its TYPE: {line}"));
        }
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    Ok((types, samples))
}

/// The sum of the samples named `name` whose labels include `wanted`.
fn total(samples: &[Sample], name: &str, wanted: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| wanted.iter().all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|sample| sample.value)
        .sum()
}

async fn scrape(api: &Api) -> (HashMap<String, String>, Vec<Sample>) {
    let (status, headers, text) = api.get_text("/metrics").await;
    assert_eq!(status, 200, "{text}");
    let kind = headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    parse(&text).unwrap_or_else(|why| panic!("/metrics is not the Prometheus text format: {why}\n{text}"))
}

const OPEN: &[(&str, &str)] = &[("route", "/v1/packets/{id}/open"), ("method", "POST"), ("code", "ok")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_the_load() -> Result<()> {
    let (server, [alice, bob]) = start_with([("alice", 100_000), ("bob", 0)]).await?;
    let api = &server.api;
    let (_, before) = scrape(api).await;
    let packets = 5;
    for _ in 0..packets {
        let id = api.send_id(&alice, &json!({ "kind": "lucky", "total_amount": 300, "count": 2 })).await;
        api.opened(&bob, &id).await;
    }
    api.request("GET", "/nowhere", None, &[], None).await.error(404, "not_found");
    let invented = api.request("FOOBAR", "/v1/account", None, &[], None).await;
    assert_eq!(invented.status, 405, "{}", invented.body);
    let (types, after) = scrape(api).await;
    assert!(
        after.iter().all(|sample| sample.labels.get("method").is_none_or(|method| method != "FOOBAR")),
        "a client's invented method is not a label value"
    );
    assert!(total(&after, "hongbao_http_requests_total", &[("method", "other")]) >= 1.0);

    let moved = |name: &str, labels: &[(&str, &str)]| total(&after, name, labels) - total(&before, name, labels);
    assert!(moved("hongbao_packets_sent_total", &[]) >= packets as f64);
    assert!(moved("hongbao_opens_total", &[]) >= packets as f64);
    assert!(moved("hongbao_sent_fen_total", &[]) >= (packets * 300) as f64);
    assert!(moved("hongbao_http_requests_total", OPEN) >= packets as f64);
    let not_found = [("route", "unmatched"), ("code", "not_found"), ("status", "404")];
    assert!(moved("hongbao_http_requests_total", &not_found) >= 1.0, "a refused request is counted with its code");
    assert!(total(&after, "hongbao_deposited_fen_total", &[]) >= 100_000.0);

    for (name, kind) in [
        ("hongbao_http_requests_total", "counter"),
        ("hongbao_http_request_duration_seconds", "summary"),
        ("hongbao_set_commit_seconds", "summary"),
        ("hongbao_set_batch_commands", "summary"),
        ("hongbao_set_queue_depth", "gauge"),
        ("hongbao_locked_fen", "gauge"),
        ("hongbao_credits_in_flight_fen", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    let p99 = after.iter().find(|sample| {
        sample.name == "hongbao_http_request_duration_seconds"
            && sample.labels.get("route").map(String::as_str) == Some("/v1/packets/{id}/open")
            && sample.labels.get("quantile").map(String::as_str) == Some("0.99")
    });
    assert!(p99.is_some_and(|sample| sample.value > 0.0), "the opens' p99 is reported: {p99:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_kept_from_the_client_only_in_its_form() -> Result<()> {
    let server = start().await?;
    let api = &server.api;
    let id_of = |response: &Response| {
        response.headers.get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned)
    };
    let kept = api.request("GET", "/livez", None, &[("x-request-id", "trace-42:a.b_c")], None).await;
    assert_eq!(id_of(&kept).as_deref(), Some("trace-42:a.b_c"));

    let refused = api.request("GET", "/nowhere", None, &[("x-request-id", "abc-1")], None).await;
    refused.error(404, "not_found");
    assert_eq!(id_of(&refused).as_deref(), Some("abc-1"), "error answers carry it too");

    let long = "a".repeat(65);
    for bad in ["has space", "quote\"d", long.as_str()] {
        let replaced = api.request("GET", "/livez", None, &[("x-request-id", bad)], None).await;
        let made = id_of(&replaced).expect("an id is made");
        assert_ne!(made, bad);
        assert!(hongbao_server::observe::valid_request_id(made.as_bytes()), "{made}");
    }
    let first = id_of(&api.request("GET", "/livez", None, &[], None).await).expect("an id is made");
    let second = id_of(&api.request("GET", "/livez", None, &[], None).await).expect("an id is made");
    assert_ne!(first, second);
    Ok(())
}
