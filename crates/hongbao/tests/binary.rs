//! The real `hongbao serve` process: it serves, and on SIGTERM (or SIGINT)
//! it stops accepting, drains its queues, commits and exits cleanly, leaving
//! a data directory that passes the audit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn hongbao(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hongbao"));
    command.args(args);
    command
}

/// Starts `hongbao serve` on port 0 and reads the address it prints.
fn serve(data: &Path) -> (Child, String) {
    serve_with(data, &[])
}

fn serve_with(data: &Path, extra: &[&str]) -> (Child, String) {
    let mut args = vec!["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--sets", "4"];
    args.extend_from_slice(extra);
    let mut child = hongbao(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("hongbao listening on http://").unwrap_or_else(|| panic!("{line:?}")).to_owned();
    (child, addr)
}

/// One HTTP/1.1 request over a fresh connection; answers status and body.
fn request(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "hongbao did not stop within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn serve_stops_cleanly_on_sigterm_and_sigint_and_the_books_balance() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for stop in ["TERM", "INT"] {
        let (mut child, addr) = serve(&data);
        let admin = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned();
        let output = hongbao(&["token", "--data", data.to_str().unwrap(), "alice"]).output().unwrap();
        let alice = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let (status, _) = request(&addr, "POST", "/v1/admin/deposits", &admin, r#"{"user":"alice","amount":500}"#);
        assert_eq!(status, 200);
        let (status, body) =
            request(&addr, "POST", "/v1/packets", &alice, r#"{"kind":"fixed","total_amount":300,"count":3}"#);
        assert_eq!(status, 201, "{body}");
        signal(&child, stop);
        let exit = wait(&mut child);
        assert!(exit.success(), "SIG{stop}: {exit:?}");
    }
    let audit = hongbao(&["audit", "--data", data.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success() && text.starts_with("audit ok"), "{text}");
    assert!(text.contains("2 packets"), "{text}");
}

#[test]
fn a_second_server_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut first, _) = serve(&data);
    let second = hongbao(&["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another hongbao process"));
    signal(&first, "TERM");
    assert!(wait(&mut first).success());
}

#[test]
fn opens_past_the_configured_per_user_rate_are_refused_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, addr) = serve_with(&data, &["--open-rate-per-s", "0.01", "--open-burst", "2"]);
    let admin = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned();
    let token = |user: &str| {
        let output = hongbao(&["token", "--data", data.to_str().unwrap(), user]).output().unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let (alice, bob) = (token("alice"), token("bob"));
    request(&addr, "POST", "/v1/admin/deposits", &admin, r#"{"user":"alice","amount":900}"#);
    let mut opens = Vec::new();
    for _ in 0..3 {
        let (_, body) =
            request(&addr, "POST", "/v1/packets", &alice, r#"{"kind":"fixed","total_amount":300,"count":3}"#);
        let id = body.split(r#""id":""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
        opens.push(request(&addr, "POST", &format!("/v1/packets/{id}/open"), &bob, ""));
    }
    assert_eq!(opens[0].0, 200);
    assert_eq!(opens[1].0, 200);
    assert_eq!(opens[2].0, 429, "{:?}", opens[2]);
    assert!(opens[2].1.contains("rate_limited"), "{:?}", opens[2]);
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
}

#[test]
fn an_unusable_data_directory_is_a_clear_error_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let output = hongbao(&["serve", "--data", file.to_str().unwrap(), "--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("hongbao:") && text.contains("not-a-dir"), "{text}");

    // A set's database overwritten with garbage: refused, not served, not a panic.
    let data = dir.path().join("data");
    let (mut child, _) = serve(&data);
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
    std::fs::write(data.join("set-002.db"), vec![0x5a; 8192]).unwrap();
    let output = hongbao(&["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("not a database") && !text.contains("panicked"), "{text}");
}
