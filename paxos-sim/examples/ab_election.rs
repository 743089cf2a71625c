//! Runs the same seeds with two election configurations and compares leader changes and latency:
//! the shape of the election A/B experiment, through the library API.
//!
//! `cargo run --release -p paxos-sim --example ab_election`

use paxos_core::PsbConfig;
use paxos_sim::{psb_election, sweep, FaultProfile, Simulation};
use std::time::Duration;

fn main() {
    let variants = [
        ("psb-300ms", Duration::from_millis(300)),
        ("psb-1s", Duration::from_secs(1)),
    ];
    for (name, timeout) in variants {
        let election = psb_election(PsbConfig {
            progress_timeout: timeout,
            max_progress_timeout: timeout * 10,
            resend_interval: Duration::from_millis(50),
        });
        let base = Simulation::new(5, 0)
            .faults(FaultProfile::Heavy)
            .election(election, None);
        let mut latencies = Vec::new();
        let mut leader_changes = 0usize;
        let mut leaderless = Duration::ZERO;
        let report = sweep(&base, 0..50, 2, |r| {
            latencies.extend(r.latencies.iter().map(|l| l.latency));
            leader_changes += r.leader_changes.len();
            leaderless += r.leaderless;
        });
        latencies.sort();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or_default()
        };
        println!(
            "{name}: {} | {} leader changes, {:.1?} leaderless, {} updates, latency p50 {:?} p99 {:?}",
            report.summary_line(),
            leader_changes,
            leaderless,
            latencies.len(),
            pct(0.5),
            pct(0.99)
        );
    }
}
