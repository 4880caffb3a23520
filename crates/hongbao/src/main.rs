//! `hongbao`: the one binary. `serve` runs the service, `token` prints a
//! user token, `keys` and `admin` manage the credentials, `audit` checks a
//! stopped data directory, `backup` copies one (served or not), `migrate`
//! brings its schema up to date, `bench` measures, `chaos` kills the server
//! at random and checks nothing was lost.

mod config;
mod serve_flags;
mod store_flags;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hongbao::{ServeOptions, audit_data, keys, start, user_token};
use hongbao_server::token::{AdminName, KeyId, USER_TOKEN_TTL_DEFAULT, USER_TOKEN_TTL_MAX};
use mimalloc::MiMalloc;
use serve_flags::ServeFlags;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// The allocator: the server allocates per request on many threads (tokio
/// workers, eight writers and eight materializers), where glibc's malloc
/// spent 7 % of the CPU of an `open-http` run in its own locks and
/// consolidation. Measured: BENCHMARKS.md, session 4.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(name = "hongbao", version, about = "A red packet service that is correct to the fen")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(ServeFlags),
    /// The effective configuration of `serve` (the same flags, file and
    /// environment): every key, its value (secrets redacted), and its source.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print a user token signed with the data directory's current key.
    Token {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// Seconds until the token expires (default 30 days, at most 366 days).
        #[arg(long, default_value_t = USER_TOKEN_TTL_DEFAULT.as_secs())]
        ttl_s: u64,
        user: String,
    },
    /// The keys that sign user tokens: list, rotate, remove.
    Keys {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Admin credentials: list, add, revoke.
    Admin {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Check every invariant over a stopped data directory.
    Audit {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[command(flatten)]
        store: store_flags::StoreFlags,
        /// Read the cold days row by row (every invariant checked on them,
        /// and their ledger totals against their rows) instead of counting
        /// them by their totals.
        #[arg(long)]
        cold: bool,
    },
    /// Copy a data directory, served or stopped, consistently (every set at one instant) into a new or empty directory.
    Backup {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// The copy's directory: new, or empty, and outside --data.
        #[arg(long)]
        to: PathBuf,
        /// Longest the writers of a served directory may stay paused for the copy
        /// of their journals' last segments; past it the backup fails and they go on.
        #[arg(long, default_value_t = hongbao::backup::PAUSE_MAX_DEFAULT.as_millis() as u64)]
        pause_max_ms: u64,
    },
    /// Apply pending schema migrations to every set of a stopped data directory (all sets or none).
    Migrate {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[command(flatten)]
        store: store_flags::StoreFlags,
    },
    /// Kill the real server at random under a mixed load; check nothing acknowledged was lost.
    Chaos {
        /// How many times the server is killed with SIGKILL and restarted.
        #[arg(long, default_value_t = 20)]
        kills: u32,
        /// Seconds of load.
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// The workload's seed (printed, so a run can be repeated).
        #[arg(long)]
        seed: Option<u64>,
        /// Write {"kills","acked","lost","duplicated","audit_ok","seed","store"} as JSON;
        /// with --nodes above 1, also "nodes", "takeover_ms" {"max","p50"} and "fenced_writes".
        #[arg(long)]
        json: Option<PathBuf>,
        /// A PostgreSQL server: the run makes its own database there and drops
        /// it (postgres://user@host:port); without it the sets live in the
        /// data directory (SQLite).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// Nodes of one cluster sharing the run's database (needs --store):
        /// the clients spread over them, a random node is killed at a time
        /// and started again once its sets were taken over. 1: a lone server.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
    },
    /// Measure hongbao and the usual alternatives on one workload, then audit.
    Bench(hongbao_bench::BenchOptions),
    /// Run the deterministic simulation of the engine over many seeds.
    Simulate {
        /// How many seeds.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        /// The first seed (a failing seed replays on its own with --seeds 1).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Workload actions per seed.
        #[arg(long, default_value_t = 400)]
        steps: usize,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print every key = value with where it came from; refuse a bad value as serve would.
    Show(ServeFlags),
}

#[derive(Subcommand)]
enum KeysAction {
    /// The current key, the other keys that still verify, and the removed ones.
    List,
    /// Make a new current key; tokens signed by the old ones keep working.
    Rotate,
    /// Remove a key: the tokens it signed are refused (401 unknown_key).
    Remove { id: String },
}

#[derive(Subcommand)]
enum AdminAction {
    /// The admins' names.
    List,
    /// Add an admin and print its token (only a digest of it is kept).
    Add { name: String },
    /// Revoke an admin's token (a running server stops taking it within a second).
    Revoke { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hongbao: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, as text or one JSON object a line, filtered by
/// `filter` (RUST_LOG's syntax), except admin actions, always logged.
/// Every line about a request carries its id (the `request` span's fields).
fn init_logs(format: config::LogFormat, filter: EnvFilter) -> Result<()> {
    let always = hongbao_server::observe::ADMIN_LOG.to_owned() + "=info";
    let filter = filter.add_directive(always.parse().expect("a target and a level are a directive"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        config::LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).try_init(),
        config::LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
    };
    installed.map_err(|why| anyhow::anyhow!("installing the logger: {why}"))
}

/// The logs of every command but `serve` (whose configuration says how it
/// logs): text, filtered by RUST_LOG or by the command's default.
fn init_tool_logs(command: &Command) -> Result<()> {
    // The simulation injects faults on purpose: their logs would drown
    // its answer. The bench serves in its own process: a line per request
    // would drown its report (and cost it a tenth of its throughput:
    // BENCHMARKS.md, session 7), so its server logs as a quiet operator's.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| match command {
        Command::Simulate { .. } => "off".into(),
        _ => "info,hongbao::access=off".into(),
    });
    let filter = EnvFilter::try_new(&filter).map_err(|why| anyhow::anyhow!("RUST_LOG {filter:?}: {why}"))?;
    init_logs(config::LogFormat::Text, filter)
}

fn run(cli: Cli) -> Result<ExitCode> {
    if !matches!(cli.command, Command::Serve(_) | Command::Config { .. }) {
        init_tool_logs(&cli.command)?;
    }
    match cli.command {
        Command::Config { action: ConfigAction::Show(flags) } => {
            let (figment, config) = flags.config()?;
            config.clone().into_options()?;
            print!("{}", config::show(&figment, &config)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(flags) => {
            let (_, config) = flags.config()?;
            init_logs(config.log.format, config.log_filter()?)?;
            let options = ServeOptions { migrate: flags.migrate(), ..config.into_options()? };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { data, ttl_s, user } => {
            let max = USER_TOKEN_TTL_MAX.as_secs();
            if !(1..=max).contains(&ttl_s) {
                anyhow::bail!("--ttl-s must be from 1 to {max}");
            }
            println!("{}", user_token(&data, &user, Duration::from_secs(ttl_s))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { data, action } => {
            keys_command(&data, action)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { data, action } => {
            admin_command(&data, action)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(options) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let ok = runtime.block_on(hongbao_bench::run(options))?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Chaos { kills, duration_s, clients, seed, json, store, nodes } => {
            chaos_command(hongbao_chaos::ChaosOptions {
                binary: std::env::current_exe().context("finding the hongbao binary")?,
                kills,
                duration: Duration::from_secs(duration_s),
                clients,
                seed: seed.unwrap_or_else(|| std::process::id().into()),
                json,
                store,
                nodes,
            })
        }
        Command::Simulate { seeds, from, steps } => Ok(simulate_command(seeds, from, steps)),
        Command::Backup { data, to, pause_max_ms } => {
            println!("{}", hongbao::backup::backup_command(&data, &to, Duration::from_millis(pause_max_ms))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { data, store } => {
            println!("{}", hongbao::migrate::migrate_command(&data, &store.choice()?)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { data, store, cold } => {
            let cold = if cold { hongbao::ColdDays::Rows } else { hongbao::ColdDays::Totals };
            let report = audit_data(&data, &store.choice()?, cold)?;
            println!("{report}");
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn chaos_command(options: hongbao_chaos::ChaosOptions) -> Result<ExitCode> {
    options.check()?;
    let sets = if options.store.is_some() { "PostgreSQL (a database of the run's own)" } else { "SQLite" };
    let nodes = if options.nodes > 1 { format!(", {} nodes", options.nodes) } else { String::new() };
    println!(
        "chaos: seed {}, {} kills over {} s, {} clients{nodes}, sets on {sets}",
        options.seed,
        options.kills,
        options.duration.as_secs(),
        options.clients
    );
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(hongbao_chaos::run(options))?;
    for problem in report.problems.iter().take(20) {
        println!("  {problem}");
    }
    let cluster = report.cluster.as_ref().map_or(String::new(), |cluster| {
        format!(
            "{} nodes, takeover max {} ms p50 {} ms, {} fenced writes, ",
            cluster.nodes, cluster.takeover_ms.max, cluster.takeover_ms.p50, cluster.fenced_writes
        )
    });
    println!(
        "chaos {}: {cluster}{} kills, {} acknowledged operations checked, {} lost, {} duplicated, audit {} (seed {})",
        if report.ok() { "ok" } else { "FAILED" },
        report.kills,
        report.acked,
        report.lost,
        report.duplicated,
        if report.audit_ok { "ok" } else { "FAILED" },
        report.seed
    );
    if !report.audit_ok {
        println!("{}", report.audit);
    }
    if let Some(kept) = &report.kept {
        println!("the nodes' logs are kept in {}", kept.display());
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn simulate_command(seeds: u64, from: u64, steps: usize) -> ExitCode {
    let (mut opens, mut shed, mut crashes, mut faults) = (0, 0, 0, 0);
    for seed in from..from.saturating_add(seeds) {
        match hongbao_engine::sim::simulate(seed, steps) {
            Ok(report) => {
                opens += report.opens_acked;
                shed += report.opens_shed;
                crashes += report.crashes;
                faults += report.faults;
            }
            Err(failure) => {
                println!("simulation FAILED: {failure}");
                println!("replay: hongbao simulate --from {seed} --seeds 1 --steps {steps}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "simulation ok: {seeds} seeds from {from}, {steps} steps each, {opens} acknowledged opens checked, \
         {shed} shed opens checked unapplied, {crashes} crashes, {faults} storage faults"
    );
    ExitCode::SUCCESS
}

fn keys_command(data: &Path, action: KeysAction) -> Result<()> {
    match action {
        KeysAction::List => {
            let keys = keys::load(data)?;
            for key in &keys.signing {
                println!("{} {}", key.id, if key.id == keys.current { "current" } else { "verifies" });
            }
            for id in &keys.removed {
                println!("{id} removed");
            }
        }
        KeysAction::Rotate => println!("{} current", keys::rotate(data)?),
        KeysAction::Remove { id } => {
            keys::remove_key(data, &KeyId::parse(&id)?)?;
            println!("{id} removed");
        }
    }
    Ok(())
}

fn admin_command(data: &Path, action: AdminAction) -> Result<()> {
    match action {
        AdminAction::List => keys::load(data)?.admins.iter().for_each(|admin| println!("{}", admin.name)),
        AdminAction::Add { name } => println!("{}", keys::add_admin(data, &AdminName::parse(&name)?)?),
        AdminAction::Revoke { name } => {
            keys::revoke_admin(data, &AdminName::parse(&name)?)?;
            println!("{name} revoked");
        }
    }
    Ok(())
}

async fn serve(options: ServeOptions) -> Result<()> {
    // The handlers are installed before the address is announced: a signal
    // that arrives the moment a script sees the address still stops cleanly.
    let stop = Shutdown::install().context("installing the signal handlers")?;
    let running = start(options).await?;
    // One plain line on stdout, for people and for scripts that pass port 0.
    println!("hongbao listening on http://{}", running.addr);
    info!(
        addr = %running.addr,
        data = %running.data.path.display(),
        sets = running.data.sets,
        "hongbao serving; the first admin's token is in {} (until you remove it)",
        running.data.path.join(hongbao::data_dir::ADMIN_TOKEN_FILE).display()
    );
    stop.wait().await;
    info!("shutting down: draining queues and committing");
    running.stop().await?;
    info!("stopped");
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment `install` returns.
struct Shutdown {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn install() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
