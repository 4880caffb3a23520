//! The real binary as an operator runs it: its configuration's layers
//! (file < environment < flags), every bad value refused at start-up with
//! its key, `hongbao config show`, and JSON logs that carry request ids.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{hongbao, wait};

fn config_show(dir: &Path, file: &str, env: &[(&str, &str)], flags: &[&str]) -> Output {
    let path = dir.join("hongbao.toml");
    std::fs::write(&path, file).unwrap();
    let mut command = hongbao(&["config", "show", "--config", path.to_str().unwrap()]);
    command.args(flags).env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// The line of `config show` for `key`: its value and its source.
fn line_of(output: &Output, key: &str) -> String {
    let text = String::from_utf8_lossy(&output.stdout);
    let prefix = format!("{key} = ");
    text.lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}\n{}", String::from_utf8_lossy(&output.stderr)))
        .to_owned()
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = "listen = \"127.0.0.1:7001\"\n[limits]\ncount_max = 50\nshare_min = 2\n[timeouts]\ndrain_ms = 1500\n";
    let env = [("HONGBAO_LIMITS__COUNT_MAX", "60"), ("HONGBAO_LISTEN", "127.0.0.1:7002"), ("HONGBAO_TEST_PG", "x")];
    let output = config_show(dir.path(), file, &env, &["--listen", "127.0.0.1:7003"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(line_of(&output, "listen"), "listen = \"127.0.0.1:7003\"  # flag");
    assert_eq!(line_of(&output, "limits.count_max"), "limits.count_max = 60  # env HONGBAO_LIMITS__COUNT_MAX");
    assert!(line_of(&output, "limits.share_min").starts_with("limits.share_min = 2  # file "));
    assert!(line_of(&output, "timeouts.drain_ms").starts_with("timeouts.drain_ms = 1500  # file "));
    assert_eq!(line_of(&output, "timeouts.header_ms"), "timeouts.header_ms = 10000  # default");
    assert_eq!(line_of(&output, "limits.total_amount_max"), "limits.total_amount_max = 20000  # default");
}

#[test]
fn config_show_redacts_the_stores_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = "store = \"postgres://hb:s3cret@db.internal:5432/hongbao\"\n";
    let output = config_show(dir.path(), file, &[], &["--set-store", "2-3=postgres://hb:other@db2/hongbao"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("s3cret") && !text.contains("other@"), "{text}");
    assert!(line_of(&output, "store").starts_with("store = \"postgres://hb:***@db.internal:5432/hongbao\""));
    assert!(line_of(&output, "set_store").contains("2-3=postgres://hb:***@db2/hongbao"));
}

/// Each bad value, in a file, and the key its refusal must name.
const BAD: &[(&str, &str)] = &[
    ("listen = \"nowhere\"", "listen"),
    ("retention_days = -1", "retention_days"),
    ("sets = \"eight\"", "sets"),
    ("store = \"mysql://x\"", "store"),
    ("[log]\nformat = \"xml\"", "log.format"),
    ("[log]\nfilter = \"info,[[\"", "log.filter"),
    ("[cluster]\nnode_id = \"a b\"\nadvertise = \"h:1\"", "cluster.node_id"),
    ("[cluster]\nnode_id = \"a\"", "cluster.advertise"),
    ("[cluster]\nnode_id = \"a\"\nadvertise = \"h:1\"\nlease_ms = 5", "cluster.lease_ms"),
    ("[limits]\ncount_max = 0", "limits.count_max"),
    ("[limits]\ncount_max = 100001", "limits.count_max"),
    ("[limits]\ntotal_amount_max = 0", "limits.total_amount_max"),
    ("[limits]\nshare_min = 30000", "limits.share_min"),
    ("[limits]\nexpires_in_s_min = 0", "limits.expires_in_s_min"),
    ("[limits]\nexpires_in_s_default = 999999999", "limits.expires_in_s_default"),
    ("[limits]\ngreeting_chars_max = 0", "limits.greeting_chars_max"),
    ("[limits]\npassword_chars_max = 5000", "limits.password_chars_max"),
    ("[limits]\ndeposit_max = 0", "limits.deposit_max"),
    ("[limits]\nbalance_max = 10", "limits.deposit_max"),
    ("[limits]\nnope = 1", "limits.nope"),
    ("[rate_limits.open]\nper_s = 0.0\nburst = 1.0", "rate_limits.open"),
    ("[rate_limits.auth_failures_per_ip]\nper_s = 1.0\nburst = 0.5", "rate_limits.auth_failures_per_ip"),
    ("[overload]\nqueue_wait_max_ms = 0", "overload.queue_wait_max_ms"),
    ("[overload]\nwrites_in_flight_max = 0", "overload.writes_in_flight_max"),
    ("[overload]\nuser_writes_in_flight_max = 0", "overload.user_writes_in_flight_max"),
    ("[overload]\nqueue_capacity = 0", "overload.queue_capacity"),
    ("[overload]\nbatch_max = 0", "overload.batch_max"),
    ("[timeouts]\nrequest_ms = 0", "timeouts.request_ms"),
    ("[timeouts]\nheader_ms = \"10s\"", "timeouts.header_ms"),
    ("[tokens]\nuser_ttl_default_s = 0", "tokens.user_ttl_default_s"),
    ("[tokens]\nuser_ttl_max_s = 99999999999", "tokens.user_ttl_max_s"),
    ("[typo]\nx = 1", "typo"),
];

#[test]
fn every_bad_value_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    for (file, key) in BAD {
        let output = config_show(dir.path(), file, &[], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file:?} was taken");
        assert!(stderr.contains("configuration refused") || stderr.contains(key), "{file:?}: {stderr}");
        assert!(stderr.contains(key), "{file:?}: the refusal does not name {key}: {stderr}");
    }
}

#[test]
fn serve_refuses_a_bad_value_at_start_up_and_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hongbao.toml");
    std::fs::write(&path, "[limits]\ncount_max = 0\n").unwrap();
    let data = dir.path().join("data");
    let output =
        hongbao(&["serve", "--config", path.to_str().unwrap(), "--data", data.to_str().unwrap()]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("limits.count_max"));
    assert!(!data.exists(), "nothing was made before the configuration was checked");

    let missing = hongbao(&["serve", "--config", "/nonexistent/hongbao.toml"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such file"));
}

/// A limit from the file is what the running server enforces.
#[test]
fn the_files_packet_limits_are_what_the_server_enforces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hongbao.toml");
    std::fs::write(&path, "[limits]\ncount_max = 3\n").unwrap();
    let data = dir.path().join("data");
    let (mut child, addr) = common::serve_with(&data, &["--config", path.to_str().unwrap()]);
    let admin = common::admin_token(&data);
    let alice = common::user_token(&data, "alice");
    let (status, body) =
        common::request(&addr, "POST", "/v1/admin/deposits", &admin, r#"{"user":"alice","amount":1000}"#);
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        common::request(&addr, "POST", "/v1/packets", &alice, r#"{"kind":"lucky","total_amount":100,"count":4}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("from 1 to 3"), "{body}");
    let (status, body) =
        common::request(&addr, "POST", "/v1/packets", &alice, r#"{"kind":"lucky","total_amount":100,"count":3}"#);
    assert_eq!(status, 201, "{body}");
    common::signal(&child, "TERM");
    assert!(wait(&mut child).success());
}

/// A server logging JSON lines with `extra` flags; its address.
fn serve_json_logs(data: &Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut args = vec!["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--sets", "2"];
    args.extend_from_slice(&["--log-format", "json"]);
    args.extend_from_slice(extra);
    let mut child =
        hongbao(&args).env_remove("RUST_LOG").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("hongbao listening on http://").unwrap().to_owned();
    (child, addr)
}

/// Stops the server and parses every line it logged.
fn stop_and_read_logs(mut child: std::process::Child) -> (Vec<serde_json::Value>, String) {
    common::signal(&child, "TERM");
    assert!(wait(&mut child).success());
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    let lines = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    (lines, logs)
}

#[test]
fn json_logs_carry_the_request_id_on_the_access_line() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = serve_json_logs(&dir.path().join("data"), &[]);
    let stream = TcpStream::connect(&addr).unwrap();
    let (status, head, _) =
        common::http::exchange(stream, "GET", "/livez", "", &[("x-request-id", "op-test-7")], "").unwrap();
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("x-request-id: op-test-7"), "{head}");
    let (lines, logs) = stop_and_read_logs(child);
    let access = lines
        .iter()
        .find(|line| line["target"] == "hongbao::access" && line["span"]["id"] == "op-test-7")
        .unwrap_or_else(|| panic!("no access line with the request id in:\n{logs}"));
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["code"], "ok");
    assert_eq!(access["span"]["route"], "/livez");
    assert!(lines.iter().all(|line| line["level"].is_string() && line["timestamp"].is_string()));
}

#[test]
fn admin_actions_are_logged_whatever_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = serve_json_logs(&data, &["--log-filter", "off"]);
    let admin = common::admin_token(&data);
    let (status, body) =
        common::request(&addr, "POST", "/v1/admin/deposits", &admin, r#"{"user":"alice","amount":1234}"#);
    assert_eq!(status, 200, "{body}");
    let (lines, logs) = stop_and_read_logs(child);
    let deposit = lines
        .iter()
        .find(|line| line["target"] == "hongbao::admin" && line["fields"]["amount"] == 1234)
        .unwrap_or_else(|| panic!("no admin line in:\n{logs}"));
    assert_eq!(deposit["fields"]["admin"], "root", "the first admin's name");
    assert_eq!(deposit["fields"]["user"], "alice");
    assert!(!logs.contains("hongbao::access"), "the filter still turns the rest off: {logs}");
}
