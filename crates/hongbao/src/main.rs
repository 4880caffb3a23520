//! `hongbao`: the one binary. `serve` runs the service, `token` prints a
//! user token, `audit` checks a stopped data directory, `bench` measures,
//! `chaos` kills the server at random and checks nothing was lost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hongbao::{ServeOptions, audit_dir, start, user_token};
use hongbao_engine::EngineConfig;
use hongbao_server::admission::WRITES_IN_FLIGHT_MAX;
use hongbao_server::rate_limit::OpenRate;
use tracing::info;
use tracing_subscriber::filter::LevelFilter;

#[derive(Parser)]
#[command(name = "hongbao", version, about = "A red packet service that is correct to the fen")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// The data directory (created on first start).
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Sets of a new data directory (fixed once created; default 8).
        #[arg(long)]
        sets: Option<u16>,
        /// Opens per second one user may make, sustained.
        #[arg(long, default_value_t = OpenRate::default().per_s)]
        open_rate_per_s: f64,
        /// Opens one user may make at once.
        #[arg(long, default_value_t = OpenRate::default().burst)]
        open_burst: f64,
        /// Longest a write may wait in its set's queue before it is refused
        /// (503 overloaded, with Retry-After) instead of applied.
        #[arg(long, default_value_t = EngineConfig::default().queue_wait_max.as_millis() as u64)]
        queue_wait_max_ms: u64,
        /// Writes (deposits, sends, grabs, opens) in flight before more are
        /// refused at once (503 overloaded, with Retry-After).
        #[arg(long, default_value_t = WRITES_IN_FLIGHT_MAX)]
        writes_in_flight_max: usize,
    },
    /// Print a user token signed with the data directory's secret.
    Token {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        user: String,
    },
    /// Check every invariant over a stopped data directory.
    Audit {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
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
        /// Write {"kills","acked","lost","duplicated","audit_ok"} as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulation injects faults on purpose: their logs would drown its answer.
    let quiet = matches!(cli.command, Command::Simulate { .. });
    let default = if quiet { LevelFilter::OFF } else { LevelFilter::INFO };
    let level = std::env::var("RUST_LOG").ok().and_then(|text| text.parse().ok()).unwrap_or(default);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_max_level(level).with_ansi(ansi).with_writer(std::io::stderr).init();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hongbao: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { data, listen, sets, open_rate_per_s, open_burst, queue_wait_max_ms, writes_in_flight_max } => {
            if !(open_rate_per_s > 0.0 && open_burst >= 1.0) {
                anyhow::bail!("--open-rate-per-s must be positive and --open-burst at least 1");
            }
            if queue_wait_max_ms == 0 || writes_in_flight_max == 0 {
                anyhow::bail!("--queue-wait-max-ms and --writes-in-flight-max must be at least 1");
            }
            let open_rate = OpenRate { per_s: open_rate_per_s, burst: open_burst };
            let engine =
                EngineConfig { queue_wait_max: Duration::from_millis(queue_wait_max_ms), ..EngineConfig::default() };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(ServeOptions {
                sets,
                open_rate,
                engine,
                writes_in_flight_max,
                ..ServeOptions::new(data, listen)
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { data, user } => {
            println!("{}", user_token(&data, &user)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(options) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let ok = runtime.block_on(hongbao_bench::run(options))?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Chaos { kills, duration_s, clients, seed, json } => {
            let seed = seed.unwrap_or_else(|| std::process::id().into());
            let binary = std::env::current_exe().context("finding the hongbao binary")?;
            let duration = std::time::Duration::from_secs(duration_s);
            println!("chaos: seed {seed}, {kills} kills over {duration_s} s, {clients} clients");
            let options = hongbao_chaos::ChaosOptions { binary, kills, duration, clients, seed, json };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let report = runtime.block_on(hongbao_chaos::run(options))?;
            for problem in report.problems.iter().take(20) {
                println!("  {problem}");
            }
            println!(
                "chaos {}: {} kills, {} acknowledged operations checked, {} lost, {} duplicated, audit {} (seed {})",
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
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Simulate { seeds, from, steps } => {
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
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            println!(
                "simulation ok: {seeds} seeds from {from}, {steps} steps each, {opens} acknowledged opens checked, \
                 {shed} shed opens checked unapplied, {crashes} crashes, {faults} storage faults"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { data } => {
            let report = audit_dir(&data)?;
            println!("{report}");
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
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
        "hongbao serving; the admin token is in {}",
        running.data.path.join("admin.token").display()
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
