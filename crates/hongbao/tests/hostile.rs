//! Hostile input against a real server: generated requests (methods, paths
//! with ids of every shape, tokens real and forged, headers, bodies from
//! random bytes to nearly-valid JSON) must never get a 5xx or a dropped
//! connection, and every refusal must be a 4xx with a JSON error code.
//!
//! `PROPTEST_CASES=1000000 cargo test -p hongbao --test hostile --release`
//! runs as many as you like; CI runs the default count.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use hongbao::{Running, ServeOptions, start};
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
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let options = ServeOptions::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        let running = runtime.block_on(start(options)).unwrap();
        let addr = running.addr.to_string();
        let admin = running.admin_token.clone();
        let alice = hongbao::user_token(&running.data.path, "alice").unwrap();
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
    })
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

proptest! {
    // 1500 cases by default (CI); PROPTEST_CASES sets any other count.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(1500),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_request_gets_a_5xx_or_a_dropped_connection(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE"), Just("PATCH")],
        path in paths(),
        token in tokens(),
        key in proptest::option::of("[ -~]{0,80}"),
        content_type in proptest::option::of(prop_oneof![Just("application/json"), Just("text/plain"), Just("x/y; charset=utf-7")]),
        body in bodies(),
    ) {
        let target = target();
        let path = String::from_utf8(path).unwrap().replace("PACKET", &target.packet).into_bytes();
        let mut headers = Vec::new();
        match token.as_deref() {
            None => {}
            Some(b"ADMIN") => headers.push(("authorization", format!("Bearer {}", target.admin).into_bytes())),
            Some(b"ALICE") => headers.push(("authorization", format!("Bearer {}", target.alice).into_bytes())),
            Some(value) => headers.push(("authorization", value.to_vec())),
        }
        if let Some(key) = key {
            headers.push(("idempotency-key", key.into_bytes()));
        }
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type.as_bytes().to_vec()));
        }
        let (status, answer) = raw(&target.addr, method.as_bytes(), &path, &headers, &body);
        prop_assert!(status < 500, "{status} for {method} {}: {answer}", String::from_utf8_lossy(&path));
        if status >= 400 && !answer.is_empty() {
            let json: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
            prop_assert!(json["error"]["code"].is_string(), "{status} without an error code: {answer}");
        }
    }
}
