//! The bench's report: a table on stdout, a JSON file, and a chart of
//! throughput and p99 latency over time for each run.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use crate::hongbao::AuditResult;
use crate::live_packets::Memory;
use crate::load::Measured;
use crate::overload::Overload;

/// One run's figures, as the report and the JSON file give them.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub name: String,
    pub ops_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub errors: u64,
    pub ops: u64,
    pub clients: usize,
    /// Per second: operations completed, and their p99 in microseconds.
    pub timeline: Vec<(u64, u64)>,
    /// The overload profile's figures (its runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overload: Option<Overload>,
    /// How an optimistic-locking run's attempts went (`pg-optimistic` runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Conflicts>,
    /// Memory per live packet (`live-packets`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// The hot and cold tables day by day (`days-week-pg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<crate::days_week::DaySize>>,
}

impl RunResult {
    pub fn new(name: &str, clients: usize, measured: &Measured) -> RunResult {
        let latency = &measured.latency_us;
        RunResult {
            name: name.to_owned(),
            ops_per_s: measured.ops_per_s(),
            p50_us: latency.value_at_quantile(0.5),
            p99_us: latency.value_at_quantile(0.99),
            p999_us: latency.value_at_quantile(0.999),
            errors: measured.errors,
            ops: measured.ops,
            clients,
            timeline: measured.timeline.clone(),
            overload: None,
            conflicts: None,
            days: None,
            memory: None,
        }
    }

    /// A run timed as a whole rather than driven by clients (a replay):
    /// `ops` over `elapsed`, with the latency of each of its steps.
    pub fn timed(name: &str, clients: usize, ops: u64, elapsed: Duration, latency_us: &Histogram<u64>) -> RunResult {
        RunResult {
            name: name.to_owned(),
            ops_per_s: ops as f64 / elapsed.as_secs_f64(),
            p50_us: latency_us.value_at_quantile(0.5),
            p99_us: latency_us.value_at_quantile(0.99),
            p999_us: latency_us.value_at_quantile(0.999),
            errors: 0,
            ops,
            clients,
            timeline: Vec::new(),
            overload: None,
            conflicts: None,
            days: None,
            memory: None,
        }
    }
}

/// How an optimistic-locking run's opens went, attempt by attempt (the
/// `pg-optimistic` runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(not(feature = "baselines"), allow(dead_code))]
pub struct Conflicts {
    /// Compare-and-swap attempts, retries included.
    pub attempts: u64,
    /// Attempts whose update found the packet's version moved on.
    pub conflicted: u64,
    /// Opens that conflicted on every attempt and gave up (counted as errors).
    pub gave_up: u64,
}

#[cfg_attr(not(feature = "baselines"), allow(dead_code))]
impl Conflicts {
    pub fn add(&mut self, other: &Conflicts) {
        self.attempts += other.attempts;
        self.conflicted += other.conflicted;
        self.gave_up += other.gave_up;
    }

    /// One line: `12,345 attempts, 38.2 % conflicted, 17 opens gave up after 5 retries`.
    pub fn summary(&self, retries: u32) -> String {
        let share = if self.attempts == 0 { 0.0 } else { self.conflicted as f64 * 100.0 / self.attempts as f64 };
        format!(
            "{} attempts, {share:.1} % conflicted, {} opens gave up after {retries} retries",
            thousands(self.attempts),
            thousands(self.gave_up)
        )
    }
}

/// `12345` as `12,345`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() * 4 / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, name)| name.trim().to_owned()))
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:")?.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os: std::env::consts::OS.to_owned(),
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The table: one line per run, with its ratio to `floor-http`.
pub fn table(runs: &[RunResult]) -> String {
    let floor = runs.iter().find(|run| run.name == "floor-http").map(|run| run.ops_per_s);
    let mut text = format!(
        "{:<26} {:>12} {:>9} {:>9} {:>9} {:>8} {:>9}\n",
        "run", "ops/s", "p50 ms", "p99 ms", "p999 ms", "errors", "x floor"
    );
    for run in runs {
        let ratio =
            floor.filter(|floor| *floor > 0.0).map_or("-".into(), |floor| format!("{:.2}", run.ops_per_s / floor));
        text += &format!(
            "{:<26} {:>12.0} {:>9} {:>9} {:>9} {:>8} {:>9}\n",
            run.name,
            run.ops_per_s,
            ms(run.p50_us),
            ms(run.p99_us),
            ms(run.p999_us),
            run.errors,
            ratio
        );
    }
    for run in runs {
        if let Some(o) = &run.overload {
            text += &format!(
                "{}: offered {}/s, admitted {:.0}/s (p99 {} ms from due, {} ms from sent), shed {} with 503 + \
                 Retry-After, other errors {}, server RSS {:.0} MiB before, {:.0} MiB at most{}\n",
                run.name,
                o.offered_per_s,
                run.ops_per_s,
                ms(run.p99_us),
                ms(o.service_p99_us),
                o.shed,
                o.other_errors,
                o.rss_before_mib,
                o.rss_max_mib,
                if o.pinned { "" } else { " (server not on its own core)" }
            );
        }
    }
    text
}

#[derive(Serialize)]
struct Report<'a> {
    machine: Machine,
    runs: &'a [RunResult],
    audit: AuditReport<'a>,
}

#[derive(Serialize)]
struct AuditReport<'a> {
    ok: bool,
    runs: Vec<AuditEntry<'a>>,
}

#[derive(Serialize)]
struct AuditEntry<'a> {
    name: &'a str,
    ok: bool,
    acked_opens_checked: usize,
    summary: &'a str,
    violations: &'a [String],
}

pub fn write_json(path: &Path, runs: &[RunResult], audits: &[(String, AuditResult)]) -> Result<()> {
    let audit = AuditReport {
        ok: audits.iter().all(|(_, audit)| audit.ok),
        runs: audits
            .iter()
            .map(|(name, audit)| AuditEntry {
                name,
                ok: audit.ok,
                acked_opens_checked: audit.acked,
                summary: &audit.summary,
                violations: &audit.violations,
            })
            .collect(),
    };
    let report = Report { machine: Machine::read(), runs, audit };
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Two panels: throughput per second, and p99 per second, one line a run.
pub fn write_chart(path: &Path, runs: &[RunResult]) -> Result<()> {
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(400);
    let seconds = runs.iter().map(|run| run.timeline.len()).max().unwrap_or(1).max(1) as u32;
    let ops_max = runs.iter().flat_map(|run| run.timeline.iter().map(|(ops, _)| *ops)).max().unwrap_or(1).max(1);
    let p99_max = runs.iter().flat_map(|run| run.timeline.iter().map(|(_, p99)| *p99)).max().unwrap_or(1).max(1);
    panel(&top, "throughput (ops/s)", runs, seconds, ops_max as f64, |(ops, _)| *ops as f64)?;
    panel(&bottom, "p99 latency (ms)", runs, seconds, p99_max as f64 / 1000.0, |(_, p99)| *p99 as f64 / 1000.0)?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    runs: &[RunResult],
    seconds: u32,
    y_max: f64,
    value: impl Fn(&(u64, u64)) -> f64,
) -> Result<()> {
    let fail = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{e}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u32..seconds, 0f64..y_max * 1.1)
        .map_err(fail)?;
    chart.configure_mesh().x_desc("second of the run").draw().map_err(fail)?;
    for (index, run) in runs.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let points = run.timeline.iter().enumerate().map(|(second, point)| (second as u32, value(point)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(fail)?
            .label(run.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflicts_line_reads_as_the_bench_prints_it() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
        let conflicts = Conflicts { attempts: 12_345, conflicted: 4_716, gave_up: 17 };
        assert_eq!(conflicts.summary(5), "12,345 attempts, 38.2 % conflicted, 17 opens gave up after 5 retries");
        assert_eq!(Conflicts::default().summary(5), "0 attempts, 0.0 % conflicted, 0 opens gave up after 5 retries");
    }
}
