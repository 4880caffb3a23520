//! Helpers for the tests that drive the real `hongbao` binary: start
//! `hongbao serve` on port 0, speak raw HTTP/1.1 to it, signal it, read its
//! data directory's tokens, audit what it left.
#![allow(dead_code)] // each test file uses some of these
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

pub mod http;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn hongbao(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hongbao"));
    command.args(args);
    command
}

/// Starts `hongbao serve` on port 0 and reads the address it prints.
pub fn serve(data: &Path) -> (Child, String) {
    serve_with(data, &[])
}

pub fn serve_with(data: &Path, extra: &[&str]) -> (Child, String) {
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
pub fn request(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let (status, _, body) = request_with_head(addr, method, path, token, body);
    (status, body)
}

/// `request`, answering the response head as well.
pub fn request_with_head(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String, String) {
    try_request_with_head(addr, method, path, token, body).unwrap()
}

/// `request`, or an error where the server is gone or went mid-request
/// (killed): for the tests that load a server while they kill it.
pub fn try_request(addr: &str, method: &str, path: &str, token: &str, body: &str) -> std::io::Result<(u16, String)> {
    try_request_with_head(addr, method, path, token, body).map(|(status, _, body)| (status, body))
}

fn try_request_with_head(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    http::exchange(TcpStream::connect(addr)?, method, path, token, &[], body)
}

pub fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "hongbao did not stop within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// The admin token a server wrote into its data directory.
pub fn admin_token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned()
}

/// A user's token, as `hongbao token` prints it.
pub fn user_token(data: &Path, user: &str) -> String {
    let output = hongbao(&["token", "--data", data.to_str().unwrap(), user]).output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `hongbao audit` over a stopped data directory: whether it passed, and its report.
pub fn audit(data: &Path) -> (bool, String) {
    let output = hongbao(&["audit", "--data", data.to_str().unwrap()]).output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}
