//! What one client can hold, and for how long, against the real binary:
//! stalled bodies, slow heads, unread answers, oversized bodies, a stop with
//! a client mid-request; and the credentials: tokens that expire, keys that
//! rotate and are removed, admins that are revoked; and the rate limits.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;

use common::*;

/// Reads what the server sends until it closes the connection (or `limit`
/// passes, which fails the test): answers what was read and when it closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Instant) {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("the server kept the connection open past {limit:?}: {error}"),
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), Instant::now())
}

/// Whether the server has sent anything on `stream` yet (without reading).
fn answered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let peeked = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).unwrap();
    !matches!(peeked, Err(ref error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn stop(mut child: std::process::Child) {
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
}

fn packet_id(body: &str) -> String {
    body.split(r#""id":""#).nth(1).unwrap_or_else(|| panic!("no id in {body}")).split('"').next().unwrap().to_owned()
}

#[test]
fn one_user_stalling_1100_bodies_stops_no_ones_writes_and_is_cut_off_at_the_body_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The default body deadline, as in the attack reported.
    let body_timeout = Duration::from_secs(10);
    let (child, addr) = serve_with(&data, &["--body-timeout-ms", "10000"]);
    let (admin, mallory) = (admin_token(&data), user_token(&data, "mallory"));
    let (alice, bob) = (user_token(&data, "alice"), user_token(&data, "bob"));

    // The attack: 1,100 sends from one token, each with its head and one
    // byte of a 100-byte body, then nothing.
    let started = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..1100)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            let head = format!(
                "POST /v1/packets HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {mallory}\r\ncontent-length: 100\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();

    // Everyone else's writes flow while they stall.
    let (status, body) = request(&addr, "POST", "/v1/admin/deposits", &admin, r#"{"user":"alice","amount":900}"#);
    assert_eq!(status, 200, "an admin deposit during the attack: {body}");
    let (status, body) =
        request(&addr, "POST", "/v1/packets", &alice, r#"{"kind":"fixed","total_amount":300,"count":3}"#);
    assert_eq!(status, 201, "a send during the attack: {body}");
    let (status, body) = request(&addr, "POST", &format!("/v1/packets/{}/open", packet_id(&body)), &bob, "");
    assert_eq!(status, 200, "an open during the attack: {body}");
    assert!(started.elapsed() < body_timeout, "the writes went through before any stalled body was cut off");
    assert!(stalled.iter().all(|stream| !answered(stream)), "and while every stalled body was still held");

    // Every stalled connection is answered 408 and closed at the body
    // deadline (with a margin for 1,100 answers on a busy machine).
    for stream in &mut stalled {
        let (answer, closed_at) = read_until_closed(stream, Duration::from_secs(15));
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
        assert!(closed_at.duration_since(started) < body_timeout + Duration::from_secs(5));
    }
    stop(child);
    let (ok, report) = audit(&data);
    assert!(ok, "{report}");
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = serve_with(&dir.path().join("data"), &["--header-timeout-ms", "1000"]);
    let mut stream = TcpStream::connect(&addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let started = Instant::now();
    // A 95-byte head at one byte per 100 ms would take 9.5 s; the writer
    // stops when the server has closed the connection.
    let head =
        b"GET /v1/account HTTP/1.1\r\nhost: x\r\nauthorization: Bearer xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\r\n";
    let sender = std::thread::spawn(move || {
        for byte in head {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (answer, closed_at) = read_until_closed(&mut stream, Duration::from_secs(5));
    let closed_after = closed_at - started;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_millis(2500),
        "closed after {closed_after:?}, the deadline is 1 s"
    );
    drop(stream);
    sender.join().unwrap();
    assert_eq!(request(&addr, "GET", "/livez", "", "").0, 200);
    stop(child);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_header_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = serve_with(&dir.path().join("data"), &["--header-timeout-ms", "1000"]);
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from = Instant::now();
    let (rest, closed_at) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(rest.is_empty(), "{rest}");
    assert!(closed_at - idle_from < Duration::from_secs(3), "idle for {:?}", closed_at - idle_from);
    stop(child);
}

#[test]
fn a_body_that_stops_half_way_is_answered_408_at_the_body_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = serve_with(&data, &["--body-timeout-ms", "1000"]);
    let admin = admin_token(&data);
    let mut stream = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /v1/admin/deposits HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {admin}\r\ncontent-length: 40\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(br#"{"user":"alice","#).unwrap();
    let started = Instant::now();
    let (answer, closed_at) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#"{"error":{"code":"request_timeout""#), "{answer}");
    let waited = closed_at - started;
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "{waited:?}");
    let alice = user_token(&data, "alice");
    assert!(request(&addr, "GET", "/v1/account", &alice, "").1.contains(r#""balance":0"#), "nothing half-applied");
    stop(child);
}

#[test]
fn a_client_that_never_reads_its_answers_is_closed_at_the_write_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) =
        serve_with(&dir.path().join("data"), &["--write-timeout-ms", "1000", "--header-timeout-ms", "60000"]);
    let mut stream = TcpStream::connect(&addr).unwrap();
    // Pipelined requests, never a read: the answers fill the socket buffers,
    // the server's write stalls, and the write deadline closes the connection.
    let requests = b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n".repeat(2000);
    stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let outcome = loop {
        if let Err(error) = stream.write_all(&requests) {
            break error;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the server kept reading for 30 s");
    };
    assert!(
        matches!(outcome.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset),
        "the server closed the connection (not our own write timeout): {outcome}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "closed after {:?}", started.elapsed());
    assert_eq!(request(&addr, "GET", "/livez", "", "").0, 200);
    stop(child);
}

#[test]
fn a_content_length_over_the_limit_is_refused_413_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = serve_with(&data, &[]);
    let alice = user_token(&data, "alice");
    for path in ["/v1/packets", "/v1/packets/20270128-1-1-0123456789abcdef/grab"] {
        let mut stream = TcpStream::connect(&addr).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {alice}\r\ncontent-length: 1000000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let started = Instant::now();
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains(r#""code":"body_too_large""#), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(2), "refused without waiting for a byte of body");
    }
    stop(child);
}

#[test]
fn sigterm_stops_within_the_drain_deadline_while_a_client_holds_half_a_head() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, addr) = serve_with(
        &data,
        &["--drain-timeout-ms", "1000", "--header-timeout-ms", "60000", "--body-timeout-ms", "60000"],
    );
    let admin = admin_token(&data);
    let mut half_head = TcpStream::connect(&addr).unwrap();
    half_head.write_all(b"POST /v1/packets HTTP/1.1\r\nhost: x\r\n").unwrap();
    let mut half_body = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /v1/admin/deposits HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {admin}\r\ncontent-length: 40\r\n\r\n{{"
    );
    half_body.write_all(head.as_bytes()).unwrap();
    assert_eq!(request(&addr, "GET", "/readyz", "", "").0, 200);
    std::thread::sleep(Duration::from_millis(200)); // both reach the server before the signal
    let started = Instant::now();
    signal(&child, "TERM");
    let status = wait(&mut child);
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "stopped after {:?}", started.elapsed());
    let (ok, report) = audit(&data);
    assert!(ok, "{report}");
}

#[test]
fn livez_and_healthz_answer_ok_and_readyz_reports_ready_with_its_set_count() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = serve_with(&dir.path().join("data"), &[]);
    assert_eq!(request(&addr, "GET", "/livez", "", ""), (200, r#"{"status":"ok"}"#.to_owned()));
    assert_eq!(request(&addr, "GET", "/healthz", "", ""), (200, r#"{"status":"ok"}"#.to_owned()));
    assert_eq!(request(&addr, "GET", "/readyz", "", ""), (200, r#"{"sets":4,"status":"ready"}"#.to_owned()));
    stop(child);
}

fn hongbao_ok(args: &[&str]) -> String {
    let output = hongbao(args).output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn expired_removed_key_and_foreign_tokens_get_distinct_401s_and_rotation_keeps_old_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (data, elsewhere) = (dir.path().join("data"), dir.path().join("elsewhere"));
    let (other, _) = serve_with(&elsewhere, &[]);
    let foreign = user_token(&elsewhere, "alice");
    stop(other);
    let (child, addr) = serve_with(&data, &[]);
    let d = data.to_str().unwrap();
    let account = |token: &str| request(&addr, "GET", "/v1/account", token, "");

    let short = hongbao_ok(&["token", "--data", d, "--ttl-s", "1", "alice"]);
    assert_eq!(account(&short).0, 200);
    assert!(eventually(Duration::from_secs(5), || account(&short).1.contains(r#""code":"token_expired""#)));
    assert_eq!(account(&short).0, 401);

    let (status, body) = account(&foreign);
    assert_eq!((status, body.contains(r#""code":"invalid_token""#)), (401, true), "{body}");

    let old = user_token(&data, "alice");
    let old_key = hongbao_ok(&["keys", "--data", d, "list"]).split_whitespace().next().unwrap().to_owned();
    let new_key = hongbao_ok(&["keys", "--data", d, "rotate"]).split_whitespace().next().unwrap().to_owned();
    assert_ne!(old_key, new_key);
    let new = user_token(&data, "alice");
    assert!(eventually(Duration::from_secs(5), || account(&new).0 == 200), "the server takes the new key");
    assert_eq!(account(&old).0, 200, "a rotation keeps old tokens working");
    hongbao_ok(&["keys", "--data", d, "remove", &old_key]);
    assert!(eventually(Duration::from_secs(5), || account(&old).1.contains(r#""code":"unknown_key""#)));
    assert_eq!(account(&new).0, 200);
    let listed = hongbao_ok(&["keys", "--data", d, "list"]);
    assert!(listed.contains(&format!("{new_key} current")) && listed.contains(&format!("{old_key} removed")));
    stop(child);
}

#[test]
fn tokens_from_the_api_say_when_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = serve_with(&data, &[]);
    let admin = admin_token(&data);
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let before = now_ms();
    let (status, body) = request(&addr, "POST", "/v1/admin/tokens", &admin, r#"{"user":"alice","ttl_s":60}"#);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let expires_at = answer["expires_at"].as_i64().unwrap();
    assert!((before + 60_000..=now_ms() + 60_000).contains(&expires_at), "{answer}");
    assert_eq!(account_status(&addr, answer["token"].as_str().unwrap()), 200);
    let (_, body) = request(&addr, "POST", "/v1/admin/tokens", &admin, r#"{"user":"alice"}"#);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let month = 30 * 24 * 3600 * 1000;
    assert!((before + month..=now_ms() + month).contains(&answer["expires_at"].as_i64().unwrap()), "{answer}");
    for ttl in ["0", "-1", "31622401", "1.5", "\"60\""] {
        let (status, body) =
            request(&addr, "POST", "/v1/admin/tokens", &admin, &format!(r#"{{"user":"a","ttl_s":{ttl}}}"#));
        assert_eq!(status, 400, "ttl_s {ttl}: {body}");
    }
    stop(child);
}

fn account_status(addr: &str, token: &str) -> u16 {
    request(addr, "GET", "/v1/account", token, "").0
}

#[test]
fn admins_are_named_and_a_revoked_admin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = serve_with(&data, &[]);
    let d = data.to_str().unwrap();
    let ops = hongbao_ok(&["admin", "--data", d, "add", "ops"]);
    assert!(ops.starts_with("admin.ops."), "{ops}");
    let deposit = |token: &str| request(&addr, "POST", "/v1/admin/deposits", token, r#"{"user":"alice","amount":5}"#);
    assert!(eventually(Duration::from_secs(5), || deposit(&ops).0 == 200), "the server takes the new admin");
    assert_eq!(hongbao_ok(&["admin", "--data", d, "list"]), "root\nops");
    hongbao_ok(&["admin", "--data", d, "revoke", "ops"]);
    assert!(eventually(Duration::from_secs(5), || deposit(&ops).1.contains(r#""code":"invalid_token""#)));
    assert_eq!(deposit(&admin_token(&data)).0, 200, "the other admins are untouched");
    let forged = format!("{}x", admin_token(&data));
    assert_eq!(deposit(&forged).0, 401);
    stop(child);
}

/// The `Retry-After` of a response head, in seconds.
fn retry_after(head: &str) -> u64 {
    let value = head.lines().find_map(|line| line.to_lowercase().strip_prefix("retry-after: ").map(str::to_owned));
    value.unwrap_or_else(|| panic!("no Retry-After in {head}")).trim().parse().unwrap()
}

#[test]
fn every_user_route_is_rate_limited_with_the_real_wait() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--rate-limit", "grab=0.1/2", "--rate-limit", "read=0.1/2", "--rate-limit", "list=0.1/2"];
    let more = ["--rate-limit", "send=0.1/1", "--rate-limit", "open=0.1/1"];
    let (child, addr) = serve_with(&data, &[&args[..], &more[..]].concat());
    let (admin, alice, bob) = (admin_token(&data), user_token(&data, "alice"), user_token(&data, "bob"));
    request(&addr, "POST", "/v1/admin/deposits", &admin, r#"{"user":"alice","amount":900}"#);
    let (status, body) =
        request(&addr, "POST", "/v1/packets", &alice, r#"{"kind":"fixed","total_amount":300,"count":3}"#);
    assert_eq!(status, 201, "{body}");
    let id = packet_id(&body);
    let (status, head, body) =
        request_with_head(&addr, "POST", "/v1/packets", &alice, r#"{"kind":"fixed","total_amount":300,"count":3}"#);
    assert_eq!(status, 429, "the second send: {body}");
    assert!((9..=10).contains(&retry_after(&head)), "the real wait, 10 s: {head}");
    let routes = [
        ("POST", format!("/v1/packets/{id}/grab")),
        ("GET", format!("/v1/packets/{id}")),
        ("GET", "/v1/account".to_owned()),
        ("GET", "/v1/packets/received".to_owned()),
    ];
    // grab 2, read 2 (detail + account share it), list 2.
    // and a third list page.
    let answers: Vec<u16> = routes
        .iter()
        .chain(routes.iter())
        .chain(&routes[3..])
        .map(|(method, path)| request(&addr, method, path, &bob, "").0)
        .collect();
    assert_eq!(answers, [200, 200, 200, 200, 200, 429, 429, 200, 429], "{routes:?}");
    let open = format!("/v1/packets/{id}/open");
    assert_eq!(request(&addr, "POST", &open, &bob, "").0, 200, "the first open");
    let (status, body) = request(&addr, "POST", &open, &bob, "");
    assert_eq!((status, body.contains(r#""code":"rate_limited""#)), (429, true), "the second open: {body}");
    let (status, head, body) = request_with_head(&addr, "POST", &routes[0].1, &bob, "");
    assert_eq!(status, 429);
    assert!(body.contains(r#""code":"rate_limited""#), "{body}");
    assert!((9..=10).contains(&retry_after(&head)), "{head}");
    stop(child);
}

#[test]
fn an_address_that_fails_authentication_too_often_is_refused_before_its_token_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = serve_with(&data, &["--auth-failure-rate-per-s", "0.2", "--auth-failure-burst", "3"]);
    let alice = user_token(&data, "alice");
    for guess in 0..3 {
        let (status, body) = request(&addr, "GET", "/v1/account", &format!("{alice}{guess}"), "");
        assert_eq!(status, 401, "{body}");
    }
    let (status, head, body) = request_with_head(&addr, "GET", "/v1/account", &alice, "");
    assert_eq!(status, 429, "the address spent its failures: {body}");
    assert!((4..=5).contains(&retry_after(&head)), "{head}");
    assert!(eventually(Duration::from_secs(8), || request(&addr, "GET", "/v1/account", &alice, "").0 == 200));
    stop(child);
}
