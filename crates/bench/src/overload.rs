//! What the overload profile adds to a run's figures.

use serde::Serialize;

/// What an overload run adds to a run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Overload {
    /// Opens offered per second (open loop).
    pub offered_per_s: u64,
    /// Opens refused with 503 and Retry-After.
    pub shed: u64,
    /// Failures that were not a 503: there must be none.
    pub other_errors: u64,
    /// Resident memory of the server's process before the run, and the
    /// most sampled (every 50 ms) during it.
    pub rss_before_mib: f64,
    pub rss_max_mib: f64,
}

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB (0 where absent).
pub fn vm_rss_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:")?.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
