//! The load driver: closed loop (each virtual client sends its next request
//! when the last one is answered: maximum throughput) or open loop (requests
//! are due at a fixed offered rate, and latency is measured from when each
//! was due, so a stalled server cannot hide its stall by slowing the client:
//! no coordinated omission).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

/// How load is offered.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `clients` virtual clients, each one request at a time.
    Closed { clients: usize },
    /// `rate` requests per second, served by up to `clients` in flight.
    Open { rate: u64, clients: usize },
}

impl Mode {
    pub fn clients(self) -> usize {
        match self {
            Mode::Closed { clients } | Mode::Open { clients, .. } => clients,
        }
    }
}

/// How long each run warms up before it records.
pub(crate) const WARMUP: Duration = Duration::from_secs(1);

/// Latencies are recorded in microseconds, up to a minute, to 3 digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What one run measured.
#[derive(Debug)]
pub struct Measured {
    pub ops: u64,
    pub errors: u64,
    /// Of the errors, those the server refused as overloaded (503).
    pub refused: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    /// Latency of the successes from when each was actually sent: the
    /// server's answer time, without the wait for a free connection that
    /// open-loop latency includes.
    pub service_us: Histogram<u64>,
    /// Per second of the run: operations completed and their p99.
    pub timeline: Vec<(u64, u64)>,
}

impl Measured {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// One virtual client's record, merged at the end (no shared lock on the
/// hot path).
struct Record {
    ops: u64,
    errors: u64,
    refused: u64,
    latency_us: Histogram<u64>,
    service_us: Histogram<u64>,
    per_second: Vec<Histogram<u64>>,
}

/// How one request went, as the driver records it.
struct Sample {
    /// From when it was due (open loop) or sent (closed loop).
    latency: Duration,
    /// From when it was sent.
    service: Duration,
    ok: bool,
    refused: bool,
}

fn micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).clamp(1, 60_000_000)
}

impl Record {
    fn new() -> Record {
        Record {
            ops: 0,
            errors: 0,
            refused: 0,
            latency_us: histogram(),
            service_us: histogram(),
            per_second: Vec::new(),
        }
    }

    fn add(&mut self, second: usize, sample: Sample) {
        let us = micros(sample.latency);
        if sample.ok {
            self.ops += 1;
            self.latency_us.saturating_record(us);
            self.service_us.saturating_record(micros(sample.service));
            while self.per_second.len() <= second {
                self.per_second.push(Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"));
            }
            self.per_second[second].saturating_record(us);
        } else {
            self.errors += 1;
            self.refused += u64::from(sample.refused);
        }
    }
}

/// A virtual client: its own state (a connection, say) and the request it
/// sends, given the run's sequence number of the request. Answers whether
/// the request succeeded.
pub trait Client: Send + 'static {
    fn call(&mut self, n: u64) -> impl Future<Output = bool> + Send;

    /// How many of this client's failed requests so far the server refused
    /// as overloaded (503): counted apart from other errors.
    fn refused(&self) -> u64 {
        0
    }
}

/// The instants that frame a run: requests are due from `begin`, recorded
/// from `start` (after the warm-up), and none is sent at or after `deadline`.
#[derive(Clone, Copy)]
struct Window {
    begin: Instant,
    start: Instant,
    deadline: Instant,
}

/// Shows the run's progress and rate on `bar` until the deadline.
fn ticker(bar: &ProgressBar, sequence: Arc<AtomicU64>, window: Window, duration: Duration) -> JoinHandle<()> {
    bar.set_length(duration.as_secs());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} s {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let bar = bar.clone();
    tokio::spawn(async move {
        while Instant::now() < window.deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let done = sequence.load(Ordering::Relaxed);
            bar.set_position(window.start.elapsed().as_secs().min(duration.as_secs()));
            bar.set_message(format!("{:.0} ops/s", done as f64 / window.begin.elapsed().as_secs_f64()));
        }
    })
}

/// One client's loop: takes the next request number, waits for its due time
/// (open loop) or goes at once (closed loop), sends it, and records it if it
/// was due after the warm-up.
async fn client_loop<C: Client>(
    mut client: C,
    sequence: Arc<AtomicU64>,
    interval: Option<Duration>,
    window: Window,
) -> (Record, C) {
    let mut record = Record::new();
    loop {
        let n = sequence.fetch_add(1, Ordering::Relaxed);
        let due = match interval {
            Some(interval) => window.begin + interval.mul_f64(n as f64),
            None => Instant::now(),
        };
        if due >= window.deadline {
            break;
        }
        if interval.is_some() {
            tokio::time::sleep_until(due.into()).await;
        }
        let refused_before = client.refused();
        let sent = Instant::now();
        let ok = client.call(n).await;
        let done = Instant::now();
        if due >= window.start {
            let second = due.duration_since(window.start).as_secs() as usize;
            let refused = client.refused() > refused_before;
            let (latency, service) = (done.duration_since(due), done.duration_since(sent));
            record.add(second, Sample { latency, service, ok, refused });
        }
    }
    (record, client)
}

/// Drives `clients` for `duration`, showing progress on `bar`.
/// Returns what was measured and the clients, with whatever they recorded.
pub async fn drive<C: Client>(
    mode: Mode,
    duration: Duration,
    clients: Vec<C>,
    bar: &ProgressBar,
) -> (Measured, Vec<C>) {
    let sequence = Arc::new(AtomicU64::new(0));
    // Requests due in the warm-up run but are not recorded: a fresh server's
    // first second (cold page cache, statements being compiled) is not the
    // steady state a run measures.
    let begin = Instant::now();
    let window = Window { begin, start: begin + WARMUP, deadline: begin + WARMUP + duration };
    let start = window.start;
    let ticker = ticker(bar, sequence.clone(), window, duration);
    let interval = match mode {
        Mode::Open { rate, .. } => Some(Duration::from_secs_f64(1.0 / rate.max(1) as f64)),
        Mode::Closed { .. } => None,
    };
    let clients: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(client_loop(client, sequence.clone(), interval, window)))
        .collect();
    let (mut latency_us, mut service_us) = (histogram(), histogram());
    let mut per_second: Vec<Histogram<u64>> = Vec::new();
    let (mut ops, mut errors, mut refused) = (0, 0, 0);
    let mut finished = Vec::with_capacity(clients.len());
    for client in clients {
        let (record, client) = client.await.expect("a bench client panicked");
        finished.push(client);
        ops += record.ops;
        errors += record.errors;
        refused += record.refused;
        latency_us.add(&record.latency_us).expect("same bounds");
        service_us.add(&record.service_us).expect("same bounds");
        for (second, histogram) in record.per_second.into_iter().enumerate() {
            match per_second.get_mut(second) {
                Some(total) => total.add(&histogram).expect("same bounds"),
                None => per_second.push(histogram),
            }
        }
    }
    let elapsed = start.elapsed();
    ticker.abort();
    bar.finish_with_message(format!("{:.0} ops/s", ops as f64 / elapsed.as_secs_f64()));
    let timeline = per_second.iter().map(|h| (h.len(), h.value_at_quantile(0.99))).collect();
    (Measured { ops, errors, refused, elapsed, latency_us, service_us, timeline }, finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers after a fixed service time; fails every tenth request.
    struct Fixed(Duration);

    impl Client for Fixed {
        async fn call(&mut self, n: u64) -> bool {
            tokio::time::sleep(self.0).await;
            !n.is_multiple_of(10)
        }
    }

    #[tokio::test]
    async fn open_loop_counts_latency_from_the_intended_send_time() {
        // 4 clients, 20 ms each, offered 1000/s: the clients can serve 200/s,
        // so requests queue and their latency grows far past the 20 ms of
        // service time, as a stalled server's would.
        let clients = (0..4).map(|_| Fixed(Duration::from_millis(20))).collect();
        let mode = Mode::Open { rate: 1000, clients: 4 };
        let (measured, _) = drive(mode, Duration::from_millis(500), clients, &ProgressBar::hidden()).await;
        assert!(
            measured.latency_us.value_at_quantile(0.99) > 100_000,
            "{}",
            measured.latency_us.value_at_quantile(0.99)
        );
        assert!(measured.errors > 0 && measured.ops > 0);

        let clients = (0..4).map(|_| Fixed(Duration::from_millis(20))).collect();
        let (closed, _) =
            drive(Mode::Closed { clients: 4 }, Duration::from_millis(500), clients, &ProgressBar::hidden()).await;
        assert!(closed.latency_us.value_at_quantile(0.99) < 100_000, "closed loop measures service time");
    }
}
