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

/// The admin token a server wrote into its data directory.
fn admin_token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned()
}

/// A user's token, as `hongbao token` prints it.
fn user_token(data: &Path, user: &str) -> String {
    let output = hongbao(&["token", "--data", data.to_str().unwrap(), user]).output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `hongbao audit` over a stopped data directory: whether it passed, and its report.
fn audit(data: &Path) -> (bool, String) {
    let output = hongbao(&["audit", "--data", data.to_str().unwrap()]).output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn serve_stops_cleanly_on_sigterm_and_sigint_and_the_books_balance() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for stop in ["TERM", "INT"] {
        let (mut child, addr) = serve(&data);
        let (admin, alice) = (admin_token(&data), user_token(&data, "alice"));
        let (status, _) = request(&addr, "POST", "/v1/admin/deposits", &admin, r#"{"user":"alice","amount":500}"#);
        assert_eq!(status, 200);
        let (status, body) =
            request(&addr, "POST", "/v1/packets", &alice, r#"{"kind":"fixed","total_amount":300,"count":3}"#);
        assert_eq!(status, 201, "{body}");
        signal(&child, stop);
        let exit = wait(&mut child);
        assert!(exit.success(), "SIG{stop}: {exit:?}");
    }
    let (ok, text) = audit(&data);
    assert!(ok && text.starts_with("audit ok"), "{text}");
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
    let admin = admin_token(&data);
    let (alice, bob) = (user_token(&data, "alice"), user_token(&data, "bob"));
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

/// A request whose head and first body byte are sent, the second held back:
/// the server has admitted it as a write in flight and waits for the rest.
fn held_request(addr: &str, path: &str, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(b"{").unwrap();
    stream
}

/// Whether the server has answered on `stream` already (without reading).
fn answered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let peeked = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).unwrap();
    matches!(peeked, Ok(n) if n > 0)
}

#[test]
fn writes_past_the_in_flight_bound_are_refused_with_503_until_one_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, addr) = serve_with(&data, &["--writes-in-flight-max", "1"]);
    let admin = admin_token(&data);
    let deposit = |key: &str| {
        let head = format!("{admin}\r\nidempotency-key: {key}");
        request(&addr, "POST", "/v1/admin/deposits", &head, r#"{"user":"alice","amount":100}"#)
    };
    assert_eq!(deposit("first").0, 200);

    // One write holds the only slot (its body never finishes); another is
    // refused at once, while reads are still served. (A held write that
    // arrived while a deposit was in flight was itself refused: hold again.)
    let mut held = held_request(&addr, "/v1/admin/deposits", &admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = deposit("second");
        if answer.0 == 503 {
            break answer;
        }
        assert_eq!(answer.0, 200, "before the held write is admitted: {answer:?}");
        assert!(Instant::now() < deadline, "the held write was never admitted");
        if answered(&held) {
            held = held_request(&addr, "/v1/admin/deposits", &admin);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(refused.1.contains("overloaded"), "{refused:?}");
    assert_eq!(request(&addr, "GET", "/healthz", "", "").0, 200);

    // The held write finishes (its body is not JSON: 400), and writes are
    // admitted again.
    held.write_all(b"}").unwrap();
    let mut answer = String::new();
    let _ = held.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert_eq!(deposit("third").0, 200);
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop; `None` where this
/// machine does not let the tests mount (not root, or in a container without
/// the capability), in which case the caller says so and skips.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let options = format!("size={size}");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Mount(dir.to_owned()))
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,{options}")]).arg(&self.0).status().unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_with_503_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(&dir.path().join("disk"), "4m") else {
        eprintln!("skipped: this machine does not let the tests mount a tmpfs");
        return;
    };
    let data = mount.0.join("data");
    let (mut child, addr) = serve_with(&data, &[]);
    let admin = admin_token(&data);
    let deposit = |key: usize| {
        let head = format!("{admin}\r\nidempotency-key: k{key}");
        request(&addr, "POST", "/v1/admin/deposits", &head, r#"{"user":"alice","amount":1}"#)
    };
    for key in 0..20 {
        assert_eq!(deposit(key).0, 200);
    }
    // Fill the disk to the last byte.
    let filler = mount.0.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    while file.write_all(&[0u8; 64 * 1024]).is_ok() {}
    while file.write_all(&[0u8; 512]).is_ok() {}
    drop(file);

    // Writes go on until the store needs a page the disk does not have; from
    // then on each is refused with 503, never a 500, and the server stays up.
    let mut keys = 20;
    let refused = loop {
        let (status, body) = deposit(keys);
        keys += 1;
        assert!(status == 200 || status == 503, "{status} {body}");
        if status == 503 {
            break body;
        }
        assert!(keys < 50_000, "the disk never filled");
    };
    assert!(refused.contains("set_unavailable") || refused.contains("overloaded"), "{refused}");
    assert_eq!(request(&addr, "GET", "/healthz", "", "").0, 200);

    // Space comes back: the set recovers from its store, and every key
    // retried (a 503'd write was not applied) lands exactly once.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for key in 0..keys {
        loop {
            let (status, body) = deposit(key);
            if status == 200 {
                break;
            }
            assert_eq!(status, 503, "{body}");
            assert!(Instant::now() < deadline, "the set did not recover: {body}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let alice = user_token(&data, "alice");
    let (_, account) = request(&addr, "GET", "/v1/account", &alice, "");
    assert!(account.contains(&format!(r#""balance":{keys}"#)), "one fen per key, each once: {account}");
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
    let (ok, report) = audit(&data);
    assert!(ok, "{report}");
}

#[test]
fn a_read_only_data_directory_is_a_clear_error_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(&dir.path().join("disk"), "16m") else {
        eprintln!("skipped: this machine does not let the tests mount a tmpfs");
        return;
    };
    let data = mount.0.join("data");
    let (mut child, _) = serve(&data);
    signal(&child, "TERM");
    assert!(wait(&mut child).success());
    mount.remount("ro");

    let output = hongbao(&["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!output.status.success(), "served from a read-only directory");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("hongbao:") && text.to_lowercase().contains("read-only"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let (ok, report) = audit(&data);
    assert!(ok, "the books are as they were: {report}");
}
