//! Hostile input against a real server: generated requests (methods, paths
//! with ids of every shape, tokens real and forged, headers, bodies from
//! random bytes to nearly-valid JSON) must never get a 5xx or a dropped
//! connection, and every refusal must be a 4xx with a JSON error code.
//!
//! Five targets: everything at once, then bodies, path ids, tokens and
//! headers each varied alone on otherwise valid requests (so a refusal of
//! the varied part, not of a neighbour, is what is exercised).
//! `PROPTEST_CASES=1000000 cargo test -p hongbao --test hostile --release`
//! runs as many as you like per target; CI runs the default count.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use hongbao::{Running, ServeOptions, start};
use hongbao_server::listener::Timeouts;
use hongbao_server::rate_limit::{Rate, Rates};
use proptest::prelude::*;

struct Target {
    addr: String,
    admin: String,
    alice: String,
    packet: String,
    _runtime: tokio::runtime::Runtime,
    _running: Running,
    _dir: tempfile::TempDir,
}

/// One server for all cases, with a funded user and a live packet.
fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| serve_target(Timeouts::default()))
}

/// The deadlines of the server the timing target runs against: short, so
/// a case that runs into one takes a fraction of a second.
const SLOW_TIMEOUTS: Timeouts = Timeouts {
    header: Duration::from_millis(300),
    body: Duration::from_millis(300),
    request: Duration::from_secs(2),
    write: Duration::from_secs(1),
    drain: Duration::from_secs(1),
};

/// A second server, with `SLOW_TIMEOUTS`, for the timing target.
fn slow_target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| serve_target(SLOW_TIMEOUTS))
}

fn serve_target(timeouts: Timeouts) -> Target {
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut options = ServeOptions::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        options.server.timeouts = timeouts;
        // The rate limits would answer most cases 429 before their input is
        // looked at; they are lifted here so the input is what is exercised
        // (`tests/hardening.rs` tests the limits themselves).
        options.server.rates = Rates {
            open: Rate::UNLIMITED,
            grab: Rate::UNLIMITED,
            send: Rate::UNLIMITED,
            read: Rate::UNLIMITED,
            list: Rate::UNLIMITED,
            auth_failures_per_ip: Rate::UNLIMITED,
        };
        let running = runtime.block_on(start(options)).unwrap();
        let addr = running.addr.to_string();
        let admin = running.admin_token.clone().unwrap();
        let alice = hongbao::user_token(&running.data.path, "alice", Duration::from_secs(3600)).unwrap();
        let (_, _) = raw(
            &addr,
            b"POST",
            b"/v1/admin/deposits",
            &[("authorization", format!("Bearer {admin}").into_bytes())],
            br#"{"user":"alice","amount":100000}"#,
        );
        let (_, body) = raw(
            &addr,
            b"POST",
            b"/v1/packets",
            &[("authorization", format!("Bearer {alice}").into_bytes())],
            br#"{"kind":"lucky","total_amount":20000,"count":100}"#,
        );
        let packet = body.split(r#""id":""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
        Target { addr, admin, alice, packet, _runtime: runtime, _running: running, _dir: dir }
    }
}

/// Sends one request as raw bytes; answers the status and the body.
fn raw(addr: &str, method: &[u8], path: &[u8], headers: &[(&str, Vec<u8>)], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = Vec::new();
    request.extend_from_slice(method);
    request.push(b' ');
    request.extend_from_slice(path);
    request.extend_from_slice(b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    stream.write_all(&request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 "),
        "no answer (a dropped connection) to {:?}",
        String::from_utf8_lossy(&request)
    );
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// Path bytes that stay inside HTTP's request-target syntax: visible ASCII,
/// with anything else percent-encoded.
fn encode(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|&byte| match byte {
            b'!'..=b'~' if byte != b'%' && byte != b'#' && byte != b'?' => vec![byte],
            _ => format!("%{byte:02X}").into_bytes(),
        })
        .collect()
}

fn id_shapes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"PACKET".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|bytes| encode(&bytes)),
        "[0-9]{8}-[0-9]{1,5}-[0-9]{1,20}-[0-9a-fA-F]{6,10}".prop_map(String::into_bytes),
        Just(b"..%2F..%2Fetc%2Fpasswd".to_vec()),
        Just("%E7%BA%A2%E5%8C%85".as_bytes().to_vec()),
    ]
}

fn paths() -> impl Strategy<Value = Vec<u8>> {
    let id = id_shapes();
    (0usize..12, id, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(route, id, query)| {
        let mut path = match route {
            0 => b"/v1/packets/".to_vec(),
            1..=3 => [b"/v1/packets/".as_slice(), &id, b"/open"].concat(),
            4 => [b"/v1/packets/".as_slice(), &id, b"/grab"].concat(),
            5 => [b"/v1/packets/".as_slice(), &id].concat(),
            6 => b"/v1/packets".to_vec(),
            7 => b"/v1/admin/deposits".to_vec(),
            8 => b"/v1/admin/tokens".to_vec(),
            9 => b"/v1/packets/received".to_vec(),
            10 => b"/v1/account".to_vec(),
            _ => [b"/".as_slice(), &id].concat(),
        };
        if !query.is_empty() {
            path.extend_from_slice(b"?limit=");
            path.extend_from_slice(&encode(&query));
        }
        path
    })
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let numbers = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:e}")),
        Just("1e400".to_owned()),
        Just("-0".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("\"100\"".to_owned()),
        Just("null".to_owned()),
    ];
    let texts = prop_oneof![Just("lucky".to_owned()), Just("exclusive".to_owned()), ".{0,120}".prop_map(|s| s)];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (texts.clone(), numbers.clone(), numbers.clone(), texts.clone(), numbers.clone()).prop_map(
            |(kind, total, count, text, expiry)| format!(
                r#"{{"kind":{kind:?},"total_amount":{total},"count":{count},"greeting":{text:?},"password":{text:?},"recipient":{text:?},"expires_in_s":{expiry}}}"#
            )
            .into_bytes()
        ),
        (texts.clone(), numbers).prop_map(|(user, amount)| format!(r#"{{"user":{user:?},"amount":{amount}}}"#).into_bytes()),
        texts.prop_map(|password| format!(r#"{{"password":{password:?}}}"#).into_bytes()),
        (1usize..200).prop_map(|depth| format!("{}{}", "[".repeat(depth * 10), "]".repeat(depth * 10)).into_bytes()),
    ]
}

fn tokens() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(b"ADMIN".to_vec())),
        Just(Some(b"ALICE".to_vec())),
        "[ -~]{0,100}".prop_map(|token| Some(format!("Bearer {token}").into_bytes())),
        "[a-z]{1,10}\\.[A-Za-z0-9_-]{0,60}".prop_map(|token| Some(format!("Bearer {token}").into_bytes())),
        "[ -~]{0,60}".prop_map(|value| Some(value.into_bytes())),
    ]
}

/// Checks an answer: no 5xx, and every refusal with a body carries an
/// error code.
fn check_answer(status: u16, answer: &str, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{status} for {what}: {answer}");
    if status >= 400 && !answer.is_empty() {
        let json: serde_json::Value = serde_json::from_str(answer).unwrap_or_default();
        prop_assert!(json["error"]["code"].is_string(), "{status} without an error code: {answer}");
    }
    Ok(())
}

/// Sends `request` in pieces, pausing at each cut, and stops after
/// `truncate` bytes if given; answers the status (if the server answered),
/// the body, and how long until the server closed the connection.
fn send_slowly(
    addr: &str,
    request: &[u8],
    cuts: &[(usize, u64)],
    truncate: Option<usize>,
) -> (Option<u16>, String, Duration) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let end = truncate.map_or(request.len(), |n| n.min(request.len()));
    let mut cuts: Vec<(usize, u64)> = cuts.iter().map(|&(at, pause)| (at.min(end), pause)).collect();
    cuts.sort_unstable();
    let started = std::time::Instant::now();
    let mut sent = 0;
    for (at, pause) in cuts.into_iter().chain([(end, 0)]) {
        // The server may cut us off mid-send (that is what is tested).
        if stream.write_all(&request[sent..at]).is_err() {
            break;
        }
        sent = at;
        std::thread::sleep(Duration::from_millis(pause));
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok());
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body, elapsed)
}

/// Fills in the live packet and the real tokens, sends, and checks the
/// answer: no 5xx, and every refusal with a body carries an error code.
fn check(
    method: &str,
    path: &[u8],
    token: Option<&[u8]>,
    headers: Vec<(&str, Vec<u8>)>,
    body: &[u8],
) -> Result<(), TestCaseError> {
    let target = target();
    let path = String::from_utf8_lossy(path).replace("PACKET", &target.packet).into_bytes();
    let mut all = Vec::new();
    match token {
        None => {}
        Some(b"ADMIN") => all.push(("authorization", format!("Bearer {}", target.admin).into_bytes())),
        Some(b"ALICE") => all.push(("authorization", format!("Bearer {}", target.alice).into_bytes())),
        Some(value) => all.push(("authorization", value.to_vec())),
    }
    all.extend(headers);
    let (status, answer) = raw(&target.addr, method.as_bytes(), &path, &all, body);
    check_answer(status, &answer, &format!("{method} {}", String::from_utf8_lossy(&path)))
}

/// The routes that take a body, with the token each expects.
fn write_routes() -> impl Strategy<Value = (&'static [u8], &'static [u8])> {
    prop_oneof![
        Just((b"/v1/packets/PACKET/open".as_slice(), b"ALICE".as_slice())),
        Just((b"/v1/packets/PACKET/grab".as_slice(), b"ALICE".as_slice())),
        Just((b"/v1/packets".as_slice(), b"ALICE".as_slice())),
        Just((b"/v1/admin/deposits".as_slice(), b"ADMIN".as_slice())),
        Just((b"/v1/admin/tokens".as_slice(), b"ADMIN".as_slice())),
    ]
}

/// A body each write route takes, so a request that is otherwise valid is
/// one it serves, and what is varied is what gets refused.
fn valid_body(path: &[u8]) -> &'static [u8] {
    match path {
        b"/v1/admin/deposits" => br#"{"user":"alice","amount":1}"#,
        b"/v1/admin/tokens" => br#"{"user":"alice"}"#,
        b"/v1/packets" => br#"{"kind":"fixed","total_amount":3,"count":3}"#,
        _ => b"{}",
    }
}

/// Header names a client might send, and any visible name.
fn header_names() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("content-type".to_owned()),
        Just("idempotency-key".to_owned()),
        Just("authorization".to_owned()),
        Just("transfer-encoding".to_owned()),
        Just("expect".to_owned()),
        Just("accept".to_owned()),
        "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,30}".prop_map(|name| name),
    ]
}

/// 1500 cases per target by default (CI); PROPTEST_CASES sets any other count.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(1500);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// The timing target's cases: each may wait out a deadline (a few tenths of
/// a second), so a fiftieth of the others' count, at least 24. Proptest lets
/// a set `PROPTEST_CASES` override any config, this one too: a large count
/// is best run on the other targets by name (`no_`), and on this one alone
/// with a count it can finish (about 0.3 s a case).
fn slow_config() -> ProptestConfig {
    let cases = (config().cases / 50).max(24);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(slow_config())]

    /// Timing: a valid write sent in pieces with pauses, or stopped part
    /// way: it is answered (never a 5xx; never a success if cut short on a
    /// route that reads its body), or the connection is closed, within its
    /// deadlines; nothing waits longer.
    #[test]
    fn slow_and_truncated_requests_are_answered_or_cut_off_at_their_deadlines(
        (path, token) in write_routes(),
        cuts in proptest::collection::vec((0usize..400, 0u64..250), 0..5),
        truncate in proptest::option::of(0usize..400),
    ) {
        let target = slow_target();
        let token = if token == b"ADMIN" { &target.admin } else { &target.alice };
        let path = String::from_utf8_lossy(path).replace("PACKET", &target.packet);
        let body = valid_body(path.as_bytes());
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let request = [head.as_bytes(), body].concat();
        let (status, answer, elapsed) = send_slowly(&target.addr, &request, &cuts, truncate);
        let paused: u64 = cuts.iter().map(|&(_, pause)| pause).sum();
        // Head and body deadlines, the pauses, and a second for a busy machine.
        let bound = SLOW_TIMEOUTS.header + SLOW_TIMEOUTS.body + Duration::from_millis(paused + 1000);
        prop_assert!(elapsed < bound, "held {elapsed:?} (bound {bound:?})");
        let whole = truncate.is_none_or(|n| n >= request.len());
        if whole && elapsed < SLOW_TIMEOUTS.header.min(SLOW_TIMEOUTS.body) {
            // Sent whole within the deadlines: served.
            prop_assert!(status.is_some_and(|status| status < 300), "{status:?} for {path}: {answer}");
        }
        if let Some(status) = status {
            check_answer(status, &answer, &path)?;
            // A grab reads no body, so one cut short in its body may be
            // answered; every route that reads its body must not succeed.
            let cut_short = truncate.is_some_and(|n| n < request.len());
            let reads_body = !path.ends_with("/grab");
            prop_assert!(!(cut_short && reads_body && status < 300), "{status} for a request cut short: {answer}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Everything at once: methods, paths, tokens, keys, content types, bodies.
    #[test]
    fn no_request_gets_a_5xx_or_a_dropped_connection(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE"), Just("PATCH")],
        path in paths(),
        token in tokens(),
        key in proptest::option::of("[ -~]{0,80}"),
        content_type in proptest::option::of(prop_oneof![Just("application/json"), Just("text/plain"), Just("x/y; charset=utf-7")]),
        body in bodies(),
    ) {
        let mut headers = Vec::new();
        if let Some(key) = key {
            headers.push(("idempotency-key", key.into_bytes()));
        }
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type.as_bytes().to_vec()));
        }
        check(method, &path, token.as_deref(), headers, &body)?;
    }

    /// Bodies: every write route, its right token, any body.
    #[test]
    fn no_body_gets_a_5xx_or_an_uncoded_refusal((path, token) in write_routes(), body in bodies()) {
        check("POST", path, Some(token), Vec::new(), &body)?;
    }

    /// Path ids: a real user's token on every route that takes an id, any id.
    #[test]
    fn no_path_id_gets_a_5xx_or_an_uncoded_refusal(
        method in prop_oneof![Just("GET"), Just("POST")],
        route in 0usize..3,
        id in id_shapes(),
    ) {
        let path = match route {
            0 => [b"/v1/packets/".as_slice(), &id, b"/open"].concat(),
            1 => [b"/v1/packets/".as_slice(), &id, b"/grab"].concat(),
            _ => [b"/v1/packets/".as_slice(), &id].concat(),
        };
        check(method, &path, Some(b"ALICE"), Vec::new(), b"{}")?;
    }

    /// Tokens: any authorization on every route, with a valid body.
    #[test]
    fn no_token_gets_a_5xx_or_an_uncoded_refusal((path, _) in write_routes(), token in tokens(), read in any::<bool>()) {
        let (method, path, body) = match read {
            true => ("GET", b"/v1/account".as_slice(), b"".as_slice()),
            false => ("POST", path, valid_body(path)),
        };
        check(method, path, token.as_deref(), Vec::new(), body)?;
    }

    /// Headers: any number of any visible headers on an otherwise valid write.
    #[test]
    fn no_header_gets_a_5xx_or_an_uncoded_refusal(
        (path, token) in write_routes(),
        headers in proptest::collection::vec((header_names(), "[ -~]{0,120}"), 0..8),
    ) {
        let headers = headers.iter().map(|(name, value)| (name.as_str(), value.clone().into_bytes())).collect();
        check("POST", path, Some(token), headers, valid_body(path))?;
    }
}
