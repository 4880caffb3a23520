//! `hongbao serve`'s flags: the last layer of its configuration
//! (`config.rs`), so each flag is optional and overrides only what it
//! names. Every setting has a key in the configuration; the flags cover
//! those an operator changes at a command line.

use std::path::PathBuf;

use anyhow::Result;
use figment::Figment;
use hongbao_server::rate_limit::{Rate, Route};
use serde_json::{Value, json};

use crate::config::{self, Config, LogFormat};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeFlags {
    /// A TOML file holding any of the settings (README: Configuration).
    /// Precedence: defaults < this file < HONGBAO_* environment variables <
    /// these flags.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory (created on first start) [default: ./data].
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    store: crate::store_flags::StoreFlags,
    /// The address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// The log lines' format [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Which log lines are written, in RUST_LOG's syntax (e.g.
    /// `info,hongbao::access=off` drops the access log) [default: info].
    #[arg(long)]
    log_filter: Option<String>,
    /// Days a day whose packets are all settled stays in the hot tables
    /// before it goes cold (PostgreSQL: detached into the archive schema,
    /// still readable) [default: 7].
    #[arg(long)]
    retention_days: Option<u32>,
    /// Serve as one node of several sharing the sets of one PostgreSQL data
    /// set, under this name (needs --store postgres://… and --advertise).
    /// The nodes of a cluster share their keys: copy keys.json between
    /// their data directories.
    #[arg(long)]
    node_id: Option<String>,
    /// host:port where the other nodes reach this one (with --node-id).
    #[arg(long)]
    advertise: Option<String>,
    /// How long a node's hold on a set runs without renewal: a dead node's
    /// sets are taken over after about this long (with --node-id) [default: 2000].
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Sets of a new data directory (fixed once created; default 8).
    #[arg(long)]
    sets: Option<u16>,
    /// Opens per second one user may make, sustained (the same as
    /// --rate-limit open=N/…).
    #[arg(long)]
    open_rate_per_s: Option<f64>,
    /// Opens one user may make at once.
    #[arg(long)]
    open_burst: Option<f64>,
    /// A per-user limit on one kind of route, as ROUTE=PER_S/BURST; routes:
    /// open, grab, send, read (a packet's detail, the account), list. May be
    /// repeated. Past it: 429 rate_limited with Retry-After.
    #[arg(long, value_name = "ROUTE=PER_S/BURST")]
    rate_limit: Vec<String>,
    /// Failed authentications per second one client IP may make, sustained;
    /// past them every request from it is refused 429 until the bucket refills.
    #[arg(long)]
    auth_failure_rate_per_s: Option<f64>,
    /// Failed authentications one client IP may make at once.
    #[arg(long)]
    auth_failure_burst: Option<f64>,
    /// Longest a write may wait in its set's queue before it is refused
    /// (503 overloaded, with Retry-After) instead of applied.
    #[arg(long)]
    queue_wait_max_ms: Option<u64>,
    /// Writes (deposits, sends, grabs, opens) in flight before more are
    /// refused at once (503 overloaded, with Retry-After).
    #[arg(long)]
    writes_in_flight_max: Option<usize>,
    /// Writes of one user in flight before more are refused (429 too_many_requests).
    #[arg(long)]
    user_writes_in_flight_max: Option<usize>,
    /// Longest a request head may take to arrive; also how long a
    /// keep-alive connection may idle. Past it the connection is closed.
    #[arg(long)]
    header_timeout_ms: Option<u64>,
    /// Longest a request body may take to arrive (408 request_timeout).
    #[arg(long)]
    body_timeout_ms: Option<u64>,
    /// Longest a whole request may take, head to answer (408 request_timeout).
    #[arg(long)]
    request_timeout_ms: Option<u64>,
    /// Longest a write of an answer may make no progress (a client that
    /// does not read) before the connection is closed.
    #[arg(long)]
    write_timeout_ms: Option<u64>,
    /// On SIGTERM or SIGINT, longest to wait for requests in flight before
    /// closing their connections (the queues are then drained and committed).
    #[arg(long)]
    drain_timeout_ms: Option<u64>,
}

/// `ROUTE=PER_S/BURST`.
fn parse_rate_limit(text: &str) -> Result<(Route, Rate)> {
    let usage = || anyhow::anyhow!("--rate-limit {text:?}: expected ROUTE=PER_S/BURST, e.g. grab=50/100");
    let (route, rate) = text.split_once('=').ok_or_else(usage)?;
    let route = Route::ALL.into_iter().find(|r| r.name() == route).ok_or_else(|| {
        let names: Vec<_> = Route::ALL.iter().map(|r| r.name()).collect();
        anyhow::anyhow!("--rate-limit {text:?}: the routes are {}", names.join(", "))
    })?;
    let (per_s, burst) = rate.split_once('/').ok_or_else(usage)?;
    let rate = Rate { per_s: per_s.parse().map_err(|_| usage())?, burst: burst.parse().map_err(|_| usage())? };
    Ok((route, rate))
}

impl ServeFlags {
    /// The settings the flags give, as the configuration's keys.
    fn overrides(&self) -> Result<Value> {
        let mut set = Overrides(json!({}));
        set.put("data", self.data.as_ref().map(|path| json!(path)));
        set.put("listen", self.listen.as_ref().map(|listen| json!(listen)));
        set.put("store", self.store.url().map(|url| json!(url)));
        if !self.store.placements().is_empty() {
            set.put("set_store", Some(json!(self.store.placements())));
        }
        set.put("log.format", self.log_format.map(|format| json!(format)));
        set.put("log.filter", self.log_filter.as_ref().map(|filter| json!(filter)));
        set.put("retention_days", self.retention_days.map(|days| json!(days)));
        set.put("sets", self.sets.map(|sets| json!(sets)));
        set.put("cluster.node_id", self.node_id.as_ref().map(|id| json!(id)));
        set.put("cluster.advertise", self.advertise.as_ref().map(|advertise| json!(advertise)));
        set.put("cluster.lease_ms", self.lease_ms.map(|ms| json!(ms)));
        for text in &self.rate_limit {
            let (route, rate) = parse_rate_limit(text)?;
            set.put(&format!("rate_limits.{}.per_s", route.name()), Some(json!(rate.per_s)));
            set.put(&format!("rate_limits.{}.burst", route.name()), Some(json!(rate.burst)));
        }
        set.put("rate_limits.open.per_s", self.open_rate_per_s.map(|rate| json!(rate)));
        set.put("rate_limits.open.burst", self.open_burst.map(|burst| json!(burst)));
        set.put("rate_limits.auth_failures_per_ip.per_s", self.auth_failure_rate_per_s.map(|rate| json!(rate)));
        set.put("rate_limits.auth_failures_per_ip.burst", self.auth_failure_burst.map(|burst| json!(burst)));
        set.put("overload.queue_wait_max_ms", self.queue_wait_max_ms.map(|ms| json!(ms)));
        set.put("overload.writes_in_flight_max", self.writes_in_flight_max.map(|max| json!(max)));
        set.put("overload.user_writes_in_flight_max", self.user_writes_in_flight_max.map(|max| json!(max)));
        set.put("timeouts.header_ms", self.header_timeout_ms.map(|ms| json!(ms)));
        set.put("timeouts.body_ms", self.body_timeout_ms.map(|ms| json!(ms)));
        set.put("timeouts.request_ms", self.request_timeout_ms.map(|ms| json!(ms)));
        set.put("timeouts.write_ms", self.write_timeout_ms.map(|ms| json!(ms)));
        set.put("timeouts.drain_ms", self.drain_timeout_ms.map(|ms| json!(ms)));
        Ok(set.0)
    }

    /// The layers of configuration these flags end.
    pub fn figment(&self) -> Result<Figment> {
        config::figment(self.config.as_deref(), self.overrides()?)
    }

    /// The effective configuration, checked.
    pub fn config(&self) -> Result<(Figment, Config)> {
        let figment = self.figment()?;
        let config = config::load(&figment)?;
        Ok((figment, config))
    }
}

/// A JSON object built from dotted keys.
struct Overrides(Value);

impl Overrides {
    fn put(&mut self, key: &str, value: Option<Value>) {
        let Some(value) = value else { return };
        let mut at = &mut self.0;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let Value::Object(map) = at else { unreachable!("overrides are objects down to their leaves") };
            if parts.peek().is_none() {
                map.insert(part.to_owned(), value);
                return;
            }
            at = map.entry(part.to_owned()).or_insert_with(|| json!({}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_only_their_form() {
        assert_eq!(parse_rate_limit("grab=5/10").unwrap(), (Route::Grab, Rate { per_s: 5.0, burst: 10.0 }));
        for bad in ["grab", "grab=5", "nope=1/1", "grab=x/1", "grab=1/x"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_override_only_the_keys_they_name() {
        let flags = ServeFlags {
            listen: Some("127.0.0.1:9".into()),
            rate_limit: vec!["grab=5/10".into()],
            drain_timeout_ms: Some(7),
            ..ServeFlags::default()
        };
        let overrides = flags.overrides().unwrap();
        assert_eq!(
            overrides,
            json!({
                "listen": "127.0.0.1:9",
                "rate_limits": { "grab": { "per_s": 5.0, "burst": 10.0 } },
                "timeouts": { "drain_ms": 7 },
            })
        );
    }
}
