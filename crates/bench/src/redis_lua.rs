//! The standard Redis red packet: shares pre-split into a list, and one Lua
//! script per open that checks the user's claim, pops a share, records the
//! claim and queues the credit. Run against a `redis-server` the bench starts
//! on a free loopback port, durable (`appendfsync always`) or not. The
//! script is sent by the bench directly (`redis-lua`) or by a web service in
//! front of Redis (`redis-lua-http`, in `redis_lua_http.rs`); both load the
//! packets with `load`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hongbao_domain::Amount;
use hongbao_domain::split::lucky_shares;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script};

use crate::load::Client;

/// The usual script: one round trip, atomic on the server.
const OPEN_SCRIPT: &str = r#"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return -1 end
local share = redis.call('RPOP', KEYS[1])
if not share then return -2 end
redis.call('HSET', KEYS[2], ARGV[1], share)
redis.call('RPUSH', KEYS[3], ARGV[1] .. ':' .. share)
return tonumber(share)
"#;

/// A `redis-server` started for one run, stopped when dropped.
pub struct RedisServer {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port; `durable` turns on the
    /// append-only file with an fsync per write.
    pub async fn start(durable: bool) -> Result<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let (appendonly, fsync) = if durable { ("yes", "always") } else { ("no", "no") };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .args(["--appendonly", appendonly, "--appendfsync", fsync])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (Debian's redis-server package)")?;
        let server = RedisServer { child, url: format!("redis://127.0.0.1:{port}/"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while connect(&server.url).await.is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not answer on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }
}

/// Multiplexed connections a run drives Redis over: each pipelines the
/// scripts of many clients, as a service's connection pool would.
const PIPES: usize = 4;

/// A Redis holding a run's packets, and the connections that open them.
pub struct Loaded {
    pub pipes: Vec<MultiplexedConnection>,
    /// The server the bench started, if it did: stopped when dropped.
    _server: Option<RedisServer>,
}

/// Starts a `redis-server` (unless `url` names one), sets its durability
/// (on a loopback server only: a remote one keeps its own), and loads
/// `packets` packets of `count` shares.
pub async fn load(url: Option<&str>, durable: bool, packets: usize, count: u32) -> Result<Loaded> {
    let (server, url) = match url {
        Some(url) => (None, url.to_owned()),
        None => {
            let server = RedisServer::start(durable).await?;
            let url = server.url.clone();
            (Some(server), url)
        }
    };
    let mut connection = connect(&url).await?;
    if url.contains("127.0.0.1") || url.contains("localhost") {
        let (appendonly, fsync) = if durable { ("yes", "always") } else { ("no", "no") };
        let _: () =
            redis::cmd("CONFIG").arg("SET").arg("appendonly").arg(appendonly).query_async(&mut connection).await?;
        let _: () = redis::cmd("CONFIG").arg("SET").arg("appendfsync").arg(fsync).query_async(&mut connection).await?;
    }
    prepare(&mut connection, packets, count).await?;
    let mut pipes = Vec::with_capacity(PIPES);
    for _ in 0..PIPES {
        pipes.push(connect(&url).await?);
    }
    Ok(Loaded { pipes, _server: server })
}

pub async fn connect(url: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    Ok(client.get_multiplexed_async_connection().await?)
}

/// Loads `packets` packets of `count` pre-split shares each: packet `p`'s
/// shares are the list `shares:{p}`.
async fn prepare(connection: &mut MultiplexedConnection, packets: usize, count: u32) -> Result<()> {
    let total = Amount::from_fen(u64::from(count) * 2).context("total fits")?;
    let _: () = redis::cmd("FLUSHALL").query_async(connection).await?;
    for packet in 0..packets {
        let shares = lucky_shares(packet as u64 + 1, total, count, Amount::from_fen(1).expect("one fen"));
        for chunk in shares.chunks(10_000) {
            let values: Vec<u64> = chunk.iter().map(|share| share.fen()).collect();
            let _: () = connection.rpush(format!("shares:{packet}"), values).await?;
        }
    }
    Ok(())
}

/// One open per request, by user `u<n / packets>` on packet `n % packets`.
pub struct OpenRedis {
    pub connection: MultiplexedConnection,
    pub script: Script,
    pub packets: u64,
}

impl Client for OpenRedis {
    async fn call(&mut self, n: u64) -> bool {
        let packet = n % self.packets;
        let answer: redis::RedisResult<i64> = self
            .script
            .key(format!("shares:{packet}"))
            .key(format!("claimed:{packet}"))
            .key("credits")
            .arg(format!("u{}", n / self.packets))
            .invoke_async(&mut self.connection)
            .await;
        matches!(answer, Ok(share) if share > 0)
    }
}

pub fn script() -> Script {
    Script::new(OPEN_SCRIPT)
}
