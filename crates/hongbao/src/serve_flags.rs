//! `hongbao serve`'s flags, and the checks that turn them into a node's
//! options. Every bound the server enforces has a flag here, with the
//! default that `ServerConfig` and `EngineConfig` document.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use hongbao::ServeOptions;
use hongbao_engine::EngineConfig;
use hongbao_server::ServerConfig;
use hongbao_server::listener::Timeouts;
use hongbao_server::rate_limit::{Rate, Route};

const fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

const TIMEOUTS: Timeouts = Timeouts {
    header: Duration::from_secs(10),
    body: Duration::from_secs(10),
    request: Duration::from_secs(30),
    write: Duration::from_secs(10),
    drain: Duration::from_secs(10),
};

#[derive(clap::Args)]
pub struct ServeFlags {
    /// The data directory (created on first start).
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    #[command(flatten)]
    store: crate::store_flags::StoreFlags,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Days a day whose packets are all settled stays in the hot tables
    /// before it goes cold (PostgreSQL: detached into the archive schema,
    /// still readable).
    #[arg(long, default_value_t = hongbao::days::RETENTION_DAYS_DEFAULT)]
    retention_days: u32,
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
    /// sets are taken over after about this long (with --node-id).
    #[arg(long, default_value_t = ms(hongbao::cluster::LEASE_DEFAULT))]
    lease_ms: u64,
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
    #[arg(long, default_value_t = ServerConfig::default().rates.auth_failures_per_ip.per_s)]
    auth_failure_rate_per_s: f64,
    /// Failed authentications one client IP may make at once.
    #[arg(long, default_value_t = ServerConfig::default().rates.auth_failures_per_ip.burst)]
    auth_failure_burst: f64,
    /// Longest a write may wait in its set's queue before it is refused
    /// (503 overloaded, with Retry-After) instead of applied.
    #[arg(long, default_value_t = ms(EngineConfig::default().queue_wait_max))]
    queue_wait_max_ms: u64,
    /// Writes (deposits, sends, grabs, opens) in flight before more are
    /// refused at once (503 overloaded, with Retry-After).
    #[arg(long, default_value_t = ServerConfig::default().writes_in_flight_max)]
    writes_in_flight_max: usize,
    /// Writes of one user in flight before more are refused (429 too_many_requests).
    #[arg(long, default_value_t = ServerConfig::default().user_writes_in_flight_max)]
    user_writes_in_flight_max: usize,
    /// Longest a request head may take to arrive; also how long a
    /// keep-alive connection may idle. Past it the connection is closed.
    #[arg(long, default_value_t = ms(TIMEOUTS.header))]
    header_timeout_ms: u64,
    /// Longest a request body may take to arrive (408 request_timeout).
    #[arg(long, default_value_t = ms(TIMEOUTS.body))]
    body_timeout_ms: u64,
    /// Longest a whole request may take, head to answer (408 request_timeout).
    #[arg(long, default_value_t = ms(TIMEOUTS.request))]
    request_timeout_ms: u64,
    /// Longest a write of an answer may make no progress (a client that
    /// does not read) before the connection is closed.
    #[arg(long, default_value_t = ms(TIMEOUTS.write))]
    write_timeout_ms: u64,
    /// On SIGTERM or SIGINT, longest to wait for requests in flight before
    /// closing their connections (the queues are then drained and committed).
    #[arg(long, default_value_t = ms(TIMEOUTS.drain))]
    drain_timeout_ms: u64,
    /// Migrate the data directory's sets to this build's schema before
    /// serving (without it, a directory that needs a migration is refused;
    /// see `hongbao migrate`).
    #[arg(long)]
    migrate: bool,
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
    pub fn into_options(self) -> Result<ServeOptions> {
        let mut server = ServerConfig::default();
        for text in &self.rate_limit {
            let (route, rate) = parse_rate_limit(text)?;
            server.rates.set(route, rate);
        }
        server.rates.open.per_s = self.open_rate_per_s.unwrap_or(server.rates.open.per_s);
        server.rates.open.burst = self.open_burst.unwrap_or(server.rates.open.burst);
        server.rates.auth_failures_per_ip =
            Rate { per_s: self.auth_failure_rate_per_s, burst: self.auth_failure_burst };
        for route in Route::ALL {
            if !server.rates.of(route).is_valid() {
                bail!("the {} rate must be positive and its burst at least 1", route.name());
            }
        }
        if !server.rates.auth_failures_per_ip.is_valid() {
            bail!("--auth-failure-rate-per-s must be positive and --auth-failure-burst at least 1");
        }
        server.writes_in_flight_max = self.writes_in_flight_max;
        server.user_writes_in_flight_max = self.user_writes_in_flight_max;
        let timeouts = [
            self.header_timeout_ms,
            self.body_timeout_ms,
            self.request_timeout_ms,
            self.write_timeout_ms,
            self.drain_timeout_ms,
            self.queue_wait_max_ms,
        ];
        if timeouts.contains(&0) || self.writes_in_flight_max == 0 || self.user_writes_in_flight_max == 0 {
            bail!("every --*-timeout-ms, --queue-wait-max-ms and --*writes-in-flight-max must be at least 1");
        }
        server.timeouts = Timeouts {
            header: Duration::from_millis(self.header_timeout_ms),
            body: Duration::from_millis(self.body_timeout_ms),
            request: Duration::from_millis(self.request_timeout_ms),
            write: Duration::from_millis(self.write_timeout_ms),
            drain: Duration::from_millis(self.drain_timeout_ms),
        };
        let engine =
            EngineConfig { queue_wait_max: Duration::from_millis(self.queue_wait_max_ms), ..EngineConfig::default() };
        let store = self.store.choice()?;
        let cluster = match (self.node_id, self.advertise) {
            (None, None) => None,
            (Some(node_id), Some(advertise)) => {
                if !hongbao::cluster::valid_node_id(&node_id) {
                    bail!("--node-id must be 1 to 64 characters from A-Z a-z 0-9 _ . -");
                }
                if advertise.parse::<SocketAddr>().is_err() && advertise.rsplit_once(':').is_none() {
                    bail!("--advertise must be host:port");
                }
                if !(100..=3_600_000).contains(&self.lease_ms) {
                    bail!("--lease-ms must be from 100 to 3600000");
                }
                Some(hongbao::cluster::ClusterOptions {
                    node_id,
                    advertise,
                    lease: Duration::from_millis(self.lease_ms),
                })
            }
            _ => bail!("--node-id and --advertise go together"),
        };
        Ok(ServeOptions {
            cluster,
            sets: self.sets,
            engine,
            server,
            store,
            retention_days: self.retention_days,
            migrate: self.migrate,
            ..ServeOptions::new(self.data, self.listen)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_defaults_are_the_servers() {
        assert_eq!(TIMEOUTS, Timeouts::default());
    }

    #[test]
    fn rate_limits_parse_only_their_form() {
        assert_eq!(parse_rate_limit("grab=5/10").unwrap(), (Route::Grab, Rate { per_s: 5.0, burst: 10.0 }));
        for bad in ["grab", "grab=5", "nope=1/1", "grab=x/1", "grab=1/x"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
    }
}
