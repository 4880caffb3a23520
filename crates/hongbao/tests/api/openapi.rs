//! The OpenAPI document (`GET /openapi.json`) against the real server: every
//! route it lists answers there, with the methods it lists and no others,
//! and its error codes are every code the API has (`error::CODES`) and
//! every code the README's table lists, each with its status. (Generated
//! requests against the spec: `tests/openapi/run.sh`, schemathesis.)

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde_json::Value;

use crate::helpers::*;

/// The methods a route may be asked with (HEAD and OPTIONS aside: axum
/// answers HEAD as GET).
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// `path` with every `{param}` replaced by a placeholder.
fn placeholder(path: &str) -> String {
    path.split('/')
        .map(|part| if part.starts_with('{') && part.ends_with('}') { "placeholder" } else { part })
        .collect::<Vec<_>>()
        .join("/")
}

/// The spec's operations: (path, upper-case method) → the operation.
fn operations(spec: &Value) -> BTreeMap<(String, String), Value> {
    let mut operations = BTreeMap::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            operations.insert((path.clone(), method.to_uppercase()), operation.clone());
        }
    }
    operations
}

async fn served_spec(api: &Api) -> Value {
    let answer = api.request("GET", "/openapi.json", None, &[], None).await;
    assert_eq!(answer.headers.get("content-type").map(|v| v.to_str().unwrap()), Some("application/json"));
    answer.ok(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_the_spec_answers_its_methods_and_every_other_method_is_405() -> Result<()> {
    let (server, [alice]) = start_with([("alice", 1_000)]).await?;
    let api = &server.api;
    let spec = served_spec(api).await;
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(spec["info"]["title"], "hongbao");
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(spec, serde_json::to_value(hongbao_server::openapi::spec())?, "the served spec is spec()");
    let schemes = spec["components"]["securitySchemes"].as_object().expect("security schemes");
    let operations = operations(&spec);
    assert!(operations.len() >= 15, "{:?}", operations.keys());

    for ((path, method), operation) in &operations {
        let security: Vec<&String> = operation["security"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s.as_object().unwrap().keys())
            .collect();
        for scheme in &security {
            assert!(schemes.contains_key(scheme.as_str()), "{method} {path}: no security scheme {scheme}");
        }
        let token = match security.first().map(|s| s.as_str()) {
            Some("user_token") => Some(alice.as_str()),
            Some("admin_token") => Some(api.admin.as_str()),
            _ => None,
        };
        let success = &operation["responses"]["200"]["content"];
        if success.as_object().is_some_and(|content| content.contains_key("text/event-stream")) {
            // An event stream: it opens with `ready`, and goes on.
            let (status, stream, body) =
                crate::events::connect(api, &placeholder(path), token.expect("a stream is a caller's"), None).await?;
            assert_eq!(status, 200, "GET {path}: {body}");
            assert_eq!(stream.expect("a stream").next().await.event, "ready", "GET {path}");
            continue;
        }
        if success.as_object().is_some_and(|content| !content.contains_key("application/json")) {
            // A text answer (`/metrics`, the console's pages): routed where the spec says.
            assert_eq!(*method, "GET", "{path}: a text answer to a {method}");
            let (status, _, text) = api.get_text(&placeholder(path)).await;
            assert_eq!(status, 200, "GET {path}: {text}");
            continue;
        }
        let body = (method == "POST").then(|| b"{}".to_vec());
        let answer = api.request(method, &placeholder(path), token, &[], body).await;
        assert!(
            answer.status != 405 && answer.code() != Some("not_found"),
            "{method} {path} is in the spec but not routed: {} {}",
            answer.status,
            answer.body
        );
        assert!(answer.status < 500 || answer.code() == Some("set_moving"), "{method} {path}: {}", answer.body);
        let listed = operation["responses"].as_object().expect("responses");
        assert!(
            listed.contains_key(&answer.status.to_string()),
            "{method} {path} answered {}, which its spec does not list: {}",
            answer.status,
            answer.body
        );
    }

    let paths: BTreeSet<&String> = operations.keys().map(|(path, _)| path).collect();
    for path in paths {
        for method in METHODS.iter().filter(|method| !operations.contains_key(&(path.clone(), method.to_string()))) {
            let answer = api.request(method, &placeholder(path), Some(&alice), &[], None).await;
            answer.error(405, "method_not_allowed");
        }
    }
    api.get("/v1/no-such-route", &alice).await.error(404, "not_found");

    server.stop_and_audit().await
}

/// Every error code the spec has, with its status: the codes of
/// `ErrorDetail` (all of them), and those each answer narrows to, which
/// must be among them with the answer's status.
fn spec_codes(spec: &Value) -> BTreeMap<String, u16> {
    let every: BTreeSet<&str> = spec["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
        .as_array()
        .expect("ErrorDetail's codes")
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    let mut codes = BTreeMap::new();
    for ((path, method), operation) in operations(spec) {
        for (status, answer) in operation["responses"].as_object().expect("responses") {
            let Some(narrowed) = answer["content"]["application/json"]["schema"]["allOf"][1]["properties"]["error"]
                ["properties"]["code"]["enum"]
                .as_array()
            else {
                assert!(status.starts_with('2'), "{method} {path}: a {status} with no codes: {answer}");
                continue;
            };
            for code in narrowed {
                let code = code.as_str().unwrap();
                assert!(every.contains(code), "{method} {path}: {code} is not one of ErrorDetail's codes");
                let status: u16 = status.parse().expect("a status");
                let known = codes.insert(code.to_owned(), status);
                assert!(known.is_none_or(|known| known == status), "{code} answered as {known:?} and {status}");
            }
        }
    }
    // Codes no route answers as such: a route that does not exist, a
    // method it does not take.
    let unrouted: Vec<&str> = every.iter().copied().filter(|code| !codes.contains_key(*code)).collect();
    for code in unrouted {
        let status = hongbao_server::error::CODES.iter().find(|known| known.code == code).expect("a known code");
        codes.insert(code.to_string(), status.status.as_u16());
    }
    codes
}

fn is_code(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The README's table of error codes: code → status.
fn readme_codes() -> BTreeMap<String, u16> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README.md");
    let table = readme.split("| status | codes |").nth(1).expect("the README's table of error codes");
    let mut codes = BTreeMap::new();
    for row in table.lines().skip(2).take_while(|line| line.starts_with('|')) {
        let mut cells = row.split('|').skip(1);
        let status: u16 = cells.next().expect("a status").trim().parse().expect("a status code");
        let listed = cells.next().expect("codes");
        // The codes are the backticked snake_case words (the rest is
        // prose, a header name among it).
        for code in listed.split('`').skip(1).step_by(2).filter(|word| is_code(word)) {
            codes.insert(code.to_owned(), status);
        }
    }
    assert!(codes.len() >= 40, "the README's table has at least 40 codes: {codes:?}");
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_specs_error_codes_are_every_code_the_api_has_and_every_code_the_readme_lists() -> Result<()> {
    let server = start().await?;
    let spec = served_spec(&server.api).await;
    let codes = spec_codes(&spec);

    for known in hongbao_server::error::CODES {
        assert_eq!(codes.get(known.code), Some(&known.status.as_u16()), "error::CODES has {}", known.code);
    }
    assert_eq!(codes.len(), hongbao_server::error::CODES.len(), "the spec has codes error::CODES has not: {codes:?}");
    for (code, status) in readme_codes() {
        assert_eq!(codes.get(&code), Some(&status), "the README lists {code} as {status}");
    }
    // A constructor that spells a code of its own (not one of CODES)
    // would show as a bare "snake_case" literal in error.rs.
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../server/src/error.rs"))?;
    let code_part = source.split("#[cfg(test)]").next().unwrap_or_default();
    for line in code_part.lines().filter(|line| !line.trim_start().starts_with("//")) {
        for literal in line.split('"').skip(1).step_by(2) {
            assert!(
                !is_code(literal) || codes.contains_key(literal),
                "error.rs spells the code {literal:?}, not in the spec"
            );
        }
    }

    server.stop_and_audit().await
}
