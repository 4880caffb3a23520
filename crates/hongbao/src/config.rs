//! `hongbao serve`'s configuration: every setting in one typed tree, read
//! from layers, later ones winning: the built-in defaults, a TOML file
//! (`--config`), `HONGBAO_*` environment variables (sections split by `__`:
//! `HONGBAO_LIMITS__COUNT_MAX=50`; `RUST_LOG` too, as `log.filter`), then
//! the command line's flags (`serve_flags.rs`). The layering is `figment`'s;
//! this file owns the tree, its defaults (taken from the structs that use
//! them, so each default is spelled once), the checks that name the key of
//! a bad value, and `hongbao config show`.
//!
//! Money is in fen and durations in the unit their key names (`_ms`,
//! `_s`), as integers: a config file is read by people who must not have to
//! guess a unit.
//!
//! Unknown keys are refused (a misspelt key is a setting that silently does
//! nothing), except environment variables outside the tree's sections:
//! `HONGBAO_TEST_PG` and the like belong to other tools.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use hongbao::ServeOptions;
use hongbao_domain::{Amount, Limits};
use hongbao_engine::EngineConfig;
use hongbao_engine::events::EventsConfig;
use hongbao_server::ServerConfig;
use hongbao_server::listener::Timeouts;
use hongbao_server::rate_limit::{Rate, Rates};
use hongbao_server::routes::events::StreamLimits;
use hongbao_server::token::TokenLifetimes;
use serde::{Deserialize, Serialize};

/// The environment variables' prefix.
pub const ENV_PREFIX: &str = "HONGBAO_";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The data directory (created on first start).
    pub data: PathBuf,
    /// The address to listen on.
    pub listen: String,
    /// Sets of a new data directory (fixed once created; 8 when unset).
    pub sets: Option<u16>,
    /// The PostgreSQL database of the sets; unset: SQLite in `data`.
    pub store: Option<String>,
    /// Sets placed on other databases than `store`'s: `N=URL` or `FIRST-LAST=URL`.
    pub set_store: Vec<String>,
    /// Days a settled day stays in the hot tables before it goes cold.
    pub retention_days: u32,
    pub log: Log,
    pub cluster: Cluster,
    pub limits: PacketLimits,
    pub rate_limits: RateLimits,
    pub overload: Overload,
    pub timeouts: TimeoutsMs,
    pub tokens: Tokens,
    pub events: Events,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    /// `RUST_LOG` syntax: `info`, `info,hongbao::access=off`, …
    pub filter: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// This node's name in a cluster (needs `store` and `advertise`).
    pub node_id: Option<String>,
    /// host:port where the other nodes reach this one.
    pub advertise: Option<String>,
    pub lease_ms: u64,
}

/// The business limits (`hongbao_domain::Limits`), money in fen.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketLimits {
    pub total_amount_max: u64,
    pub count_max: u32,
    pub share_min: u64,
    pub greeting_chars_max: usize,
    pub password_chars_max: usize,
    pub expires_in_s_default: u32,
    pub expires_in_s_min: u32,
    pub expires_in_s_max: u32,
    pub deposit_max: u64,
    pub balance_max: u64,
    pub group_members_max: usize,
    pub daily_send_count_max: u32,
    pub daily_send_amount_max: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub per_s: f64,
    pub burst: f64,
}

/// Per user and route kind, and failed authentications per client IP.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    pub open: RateConfig,
    pub grab: RateConfig,
    pub send: RateConfig,
    pub read: RateConfig,
    pub list: RateConfig,
    pub auth_failures_per_ip: RateConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    pub queue_wait_max_ms: u64,
    pub writes_in_flight_max: usize,
    pub user_writes_in_flight_max: usize,
    pub queue_capacity: usize,
    pub batch_max: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsMs {
    pub header_ms: u64,
    pub body_ms: u64,
    pub request_ms: u64,
    pub write_ms: u64,
    pub drain_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    pub user_ttl_default_s: u64,
    pub user_ttl_max_s: u64,
}

/// The event streams (`GET /v1/events`): what each set keeps for clients
/// that reconnect, and how many streams may be open.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    pub retention_s: u64,
    pub per_set_max: usize,
    pub streams_max: usize,
    pub user_streams_max: usize,
    pub stream_lifetime_s: u64,
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl From<Rate> for RateConfig {
    fn from(rate: Rate) -> RateConfig {
        RateConfig { per_s: rate.per_s, burst: rate.burst }
    }
}

impl Default for Config {
    fn default() -> Config {
        let (server, engine, limits) = (ServerConfig::default(), EngineConfig::default(), Limits::default());
        let rates = server.rates;
        Config {
            data: PathBuf::from("./data"),
            listen: "127.0.0.1:8080".into(),
            sets: None,
            store: None,
            set_store: Vec::new(),
            retention_days: hongbao::days::RETENTION_DAYS_DEFAULT,
            log: Log { format: LogFormat::Text, filter: "info".into() },
            cluster: Cluster { node_id: None, advertise: None, lease_ms: ms(hongbao::cluster::LEASE_DEFAULT) },
            limits: PacketLimits {
                total_amount_max: limits.total_amount_max.fen(),
                count_max: limits.count_max,
                share_min: limits.share_min.fen(),
                greeting_chars_max: limits.greeting_chars_max,
                password_chars_max: limits.password_chars_max,
                expires_in_s_default: limits.expires_in_s_default,
                expires_in_s_min: limits.expires_in_s_min,
                expires_in_s_max: limits.expires_in_s_max,
                deposit_max: limits.deposit_max.fen(),
                balance_max: limits.balance_max.fen(),
                group_members_max: limits.group_members_max,
                daily_send_count_max: limits.daily_send_count_max,
                daily_send_amount_max: limits.daily_send_amount_max.fen(),
            },
            rate_limits: RateLimits {
                open: rates.open.into(),
                grab: rates.grab.into(),
                send: rates.send.into(),
                read: rates.read.into(),
                list: rates.list.into(),
                auth_failures_per_ip: rates.auth_failures_per_ip.into(),
            },
            overload: Overload {
                queue_wait_max_ms: ms(engine.queue_wait_max),
                writes_in_flight_max: server.writes_in_flight_max,
                user_writes_in_flight_max: server.user_writes_in_flight_max,
                queue_capacity: engine.queue_capacity,
                batch_max: engine.batch_max,
            },
            timeouts: TimeoutsMs {
                header_ms: ms(server.timeouts.header),
                body_ms: ms(server.timeouts.body),
                request_ms: ms(server.timeouts.request),
                write_ms: ms(server.timeouts.write),
                drain_ms: ms(server.timeouts.drain),
            },
            tokens: Tokens {
                user_ttl_default_s: server.tokens.default.as_secs(),
                user_ttl_max_s: server.tokens.max.as_secs(),
            },
            events: Events {
                retention_s: engine.events.retention.as_secs(),
                per_set_max: engine.events.per_set_max,
                streams_max: server.streams.node_max,
                user_streams_max: server.streams.user_max,
                stream_lifetime_s: server.streams.lifetime.as_secs(),
            },
        }
    }
}

/// A provider under a name of ours, for `config show`'s sources.
struct Named<P> {
    name: &'static str,
    provider: P,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.provider.data()
    }
}

/// The top-level keys: environment variables outside them are not ours.
fn top_level_keys() -> Vec<String> {
    match Value::serialize(Config::default()) {
        Ok(Value::Dict(_, dict)) => dict.into_keys().collect(),
        _ => Vec::new(),
    }
}

/// The layers, lowest first. `overrides`: what the flags set.
pub fn figment(file: Option<&Path>, overrides: serde_json::Value) -> Result<Figment> {
    let mut figment =
        Figment::new().merge(Named { name: "default", provider: Serialized::defaults(Config::default()) });
    if let Some(path) = file {
        if !path.is_file() {
            bail!("--config {}: no such file", path.display());
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let tops = top_level_keys();
    // Keys arrive as spelled in the environment, upper case.
    let ours = move |key: &figment::value::UncasedStr| {
        let key = key.as_str().to_ascii_lowercase();
        tops.iter().any(|top| key == *top || key.starts_with(&format!("{top}.")))
    };
    Ok(figment
        .merge(Env::raw().only(&["RUST_LOG"]).map(|_| "log.filter".into()))
        .merge(Env::prefixed(ENV_PREFIX).split("__").filter(ours))
        .merge(Named { name: "flag", provider: Serialized::defaults(overrides) }))
}

/// Reads the layers into a configuration, or names the key that is wrong.
pub fn load(figment: &Figment) -> Result<Config> {
    figment.extract::<Config>().map_err(|error| {
        // figment names a key under its profile ("default."): the key is the rest.
        let problems: Vec<String> =
            error.into_iter().map(|problem| problem.to_string().replace("\"default.", "\"")).collect();
        anyhow::anyhow!("configuration refused: {}", problems.join("; "))
    })
}

/// `key = value: reason`.
fn refuse(key: &str, value: impl std::fmt::Display, reason: &str) -> anyhow::Error {
    anyhow::anyhow!("configuration refused: {key} = {value}: {reason}")
}

fn fen(key: &str, value: u64) -> Result<Amount> {
    Amount::from_fen(value)
        .filter(|amount| !amount.is_zero())
        .ok_or_else(|| refuse(key, value, "must be a positive amount of fen"))
}

fn positive(key: &str, value: u64) -> Result<Duration> {
    match value {
        0 => Err(refuse(key, value, "must be at least 1")),
        value => Ok(Duration::from_millis(value)),
    }
}

fn seconds(key: &str, value: u64, max: u64) -> Result<Duration> {
    match (1..=max).contains(&value) {
        true => Ok(Duration::from_secs(value)),
        false => Err(refuse(key, value, &format!("must be from 1 to {max}"))),
    }
}

impl Config {
    /// The log filter, parsed (RUST_LOG's syntax).
    pub fn log_filter(&self) -> Result<tracing_subscriber::EnvFilter> {
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|why| refuse("log.filter", format!("{:?}", self.log.filter), &why.to_string()))
    }

    /// Checks every value, naming the key of the first that is wrong.
    pub fn into_options(self) -> Result<ServeOptions> {
        self.log_filter()?;
        let listen: SocketAddr =
            self.listen.parse().map_err(|_| refuse("listen", &self.listen, "must be host:port with an IP address"))?;
        let mut options = ServeOptions::new(self.data.clone(), listen);
        options.sets = self.sets;
        options.retention_days = self.retention_days;
        options.store = crate::store_flags::StoreFlags::new(self.store.clone(), self.set_store.clone())
            .choice()
            .map_err(|why| anyhow::anyhow!("configuration refused: store, set_store: {why:#}"))?;
        options.cluster = self.cluster()?;
        options.engine = EngineConfig {
            limits: self.limits()?,
            queue_wait_max: positive("overload.queue_wait_max_ms", self.overload.queue_wait_max_ms)?,
            queue_capacity: self.count("overload.queue_capacity", self.overload.queue_capacity, 1_048_576)?,
            batch_max: self.count("overload.batch_max", self.overload.batch_max, 65_536)?,
            events: EventsConfig {
                retention: seconds("events.retention_s", self.events.retention_s, 86_400)?,
                per_set_max: self.count("events.per_set_max", self.events.per_set_max, 16_777_216)?,
            },
            ..EngineConfig::default()
        };
        options.server = self.server()?;
        Ok(options)
    }

    fn count(&self, key: &str, value: usize, max: usize) -> Result<usize> {
        match (1..=max).contains(&value) {
            true => Ok(value),
            false => Err(refuse(key, value, &format!("must be from 1 to {max}"))),
        }
    }

    fn cluster(&self) -> Result<Option<hongbao::cluster::ClusterOptions>> {
        let cluster = &self.cluster;
        match (&cluster.node_id, &cluster.advertise) {
            (None, None) => Ok(None),
            (Some(node_id), Some(advertise)) => {
                if !hongbao::cluster::valid_node_id(node_id) {
                    return Err(refuse(
                        "cluster.node_id",
                        node_id,
                        "must be 1 to 64 characters from A-Z a-z 0-9 _ . -",
                    ));
                }
                if advertise.parse::<SocketAddr>().is_err() && advertise.rsplit_once(':').is_none() {
                    return Err(refuse("cluster.advertise", advertise, "must be host:port"));
                }
                if !(100..=3_600_000).contains(&cluster.lease_ms) {
                    return Err(refuse("cluster.lease_ms", cluster.lease_ms, "must be from 100 to 3600000"));
                }
                Ok(Some(hongbao::cluster::ClusterOptions {
                    node_id: node_id.clone(),
                    advertise: advertise.clone(),
                    lease: Duration::from_millis(cluster.lease_ms),
                }))
            }
            (Some(_), None) => {
                Err(refuse("cluster.advertise", "(unset)", "a cluster node needs it with cluster.node_id"))
            }
            (None, Some(_)) => {
                Err(refuse("cluster.node_id", "(unset)", "a cluster node needs it with cluster.advertise"))
            }
        }
    }

    fn limits(&self) -> Result<Limits> {
        let l = &self.limits;
        let limits = Limits {
            total_amount_max: fen("limits.total_amount_max", l.total_amount_max)?,
            count_max: l.count_max,
            share_min: fen("limits.share_min", l.share_min)?,
            expires_in_s_default: l.expires_in_s_default,
            expires_in_s_min: l.expires_in_s_min,
            expires_in_s_max: l.expires_in_s_max,
            greeting_chars_max: l.greeting_chars_max,
            password_chars_max: l.password_chars_max,
            deposit_max: fen("limits.deposit_max", l.deposit_max)?,
            balance_max: fen("limits.balance_max", l.balance_max)?,
            group_members_max: self.count(
                "limits.group_members_max",
                l.group_members_max,
                hongbao_domain::group::GROUP_MEMBERS_CEILING,
            )?,
            daily_send_count_max: l.daily_send_count_max,
            daily_send_amount_max: fen("limits.daily_send_amount_max", l.daily_send_amount_max)?,
        };
        if l.daily_send_count_max == 0 {
            return Err(refuse("limits.daily_send_count_max", 0, "must be at least 1"));
        }
        if !(1..=hongbao_domain::limits::COUNT_MAX_CEILING).contains(&l.count_max) {
            let reason = format!("must be from 1 to {}", hongbao_domain::limits::COUNT_MAX_CEILING);
            return Err(refuse("limits.count_max", l.count_max, &reason));
        }
        if limits.share_min > limits.total_amount_max {
            return Err(refuse("limits.share_min", l.share_min, "must not exceed limits.total_amount_max"));
        }
        if l.expires_in_s_min == 0 || l.expires_in_s_min > l.expires_in_s_max {
            return Err(refuse(
                "limits.expires_in_s_min",
                l.expires_in_s_min,
                "must be from 1 to limits.expires_in_s_max",
            ));
        }
        if !(l.expires_in_s_min..=l.expires_in_s_max).contains(&l.expires_in_s_default) {
            let reason = "must be from limits.expires_in_s_min to limits.expires_in_s_max";
            return Err(refuse("limits.expires_in_s_default", l.expires_in_s_default, reason));
        }
        for (key, chars) in
            [("limits.greeting_chars_max", l.greeting_chars_max), ("limits.password_chars_max", l.password_chars_max)]
        {
            // A request body is at most 16 KiB, and a character up to 4 bytes.
            if !(1..=1000).contains(&chars) {
                return Err(refuse(key, chars, "must be from 1 to 1000"));
            }
        }
        if limits.deposit_max > limits.balance_max {
            return Err(refuse("limits.deposit_max", l.deposit_max, "must not exceed limits.balance_max"));
        }
        Ok(limits)
    }

    fn rates(&self) -> Result<Rates> {
        let r = &self.rate_limits;
        let mut rates = Rates::default();
        for (name, given, slot) in [
            ("open", r.open, &mut rates.open),
            ("grab", r.grab, &mut rates.grab),
            ("send", r.send, &mut rates.send),
            ("read", r.read, &mut rates.read),
            ("list", r.list, &mut rates.list),
            ("auth_failures_per_ip", r.auth_failures_per_ip, &mut rates.auth_failures_per_ip),
        ] {
            let rate = Rate { per_s: given.per_s, burst: given.burst };
            if !rate.is_valid() {
                let value = format!("{{ per_s = {}, burst = {} }}", given.per_s, given.burst);
                return Err(refuse(
                    &format!("rate_limits.{name}"),
                    value,
                    "per_s must be positive and burst at least 1",
                ));
            }
            *slot = rate;
        }
        Ok(rates)
    }

    fn server(&self) -> Result<ServerConfig> {
        let t = &self.timeouts;
        let tokens = TokenLifetimes {
            default: Duration::from_secs(self.tokens.user_ttl_default_s),
            max: Duration::from_secs(self.tokens.user_ttl_max_s),
        };
        if !tokens.is_valid() {
            let reason = "must be at least 1 and at most tokens.user_ttl_max_s";
            return Err(refuse("tokens.user_ttl_default_s", self.tokens.user_ttl_default_s, reason));
        }
        if tokens.max > hongbao_server::token::USER_TOKEN_TTL_MAX {
            let reason = format!("must be at most {} (a year)", hongbao_server::token::USER_TOKEN_TTL_MAX.as_secs());
            return Err(refuse("tokens.user_ttl_max_s", self.tokens.user_ttl_max_s, &reason));
        }
        Ok(ServerConfig {
            timeouts: Timeouts {
                header: positive("timeouts.header_ms", t.header_ms)?,
                body: positive("timeouts.body_ms", t.body_ms)?,
                request: positive("timeouts.request_ms", t.request_ms)?,
                write: positive("timeouts.write_ms", t.write_ms)?,
                drain: positive("timeouts.drain_ms", t.drain_ms)?,
            },
            rates: self.rates()?,
            writes_in_flight_max: self.count(
                "overload.writes_in_flight_max",
                self.overload.writes_in_flight_max,
                1 << 24,
            )?,
            user_writes_in_flight_max: self.count(
                "overload.user_writes_in_flight_max",
                self.overload.user_writes_in_flight_max,
                1 << 24,
            )?,
            tokens,
            streams: StreamLimits {
                node_max: self.count("events.streams_max", self.events.streams_max, 1 << 24)?,
                user_max: self.count("events.user_streams_max", self.events.user_streams_max, 1 << 24)?,
                lifetime: seconds("events.stream_lifetime_s", self.events.stream_lifetime_s, 86_400)?,
            },
        })
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Where the value at `path` came from.
fn source(figment: &Figment, path: &str) -> String {
    let Some(metadata) = figment.find_metadata(path) else { return "default".into() };
    match (metadata.name.as_ref(), &metadata.source) {
        (_, Some(figment::Source::File(file))) => format!("file {}", file.display()),
        (name, _) if name.contains(ENV_PREFIX) => format!("env {ENV_PREFIX}{}", path.to_uppercase().replace('.', "__")),
        (name, _) if name.contains("environment") => "env RUST_LOG".into(),
        (name, _) => name.to_owned(),
    }
}

fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                leaves(&path, value, out);
            }
        }
        serde_json::Value::Null => {}
        value => out.push((prefix.to_owned(), value.clone())),
    }
}

/// A value as TOML spells it, secrets redacted.
fn spell(path: &str, value: &serde_json::Value) -> String {
    let secret = path == "store" || path == "set_store";
    match value {
        serde_json::Value::String(text) if secret => format!("{:?}", redact(text)),
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|item| spell(path, item)).collect();
            format!("[{}]", items.join(", "))
        }
        value => value.to_string(),
    }
}

/// `hongbao config show`: every key with its effective value (secrets
/// redacted) and where the value came from.
pub fn show(figment: &Figment, config: &Config) -> Result<String> {
    let mut out = Vec::new();
    leaves("", &serde_json::to_value(config)?, &mut out);
    let mut text = String::new();
    let unset = ["sets", "store", "cluster.node_id", "cluster.advertise"];
    for key in unset.iter().filter(|key| !out.iter().any(|(path, _)| path == *key)) {
        let _ = writeln!(text, "# {key} is unset");
    }
    for (path, value) in out {
        let _ = writeln!(text, "{path} = {}  # {}", spell(&path, &value), source(figment, &path));
    }
    Ok(text)
}
