//! The election A/B experiment on the crate's in-memory cluster (no loss, instant disks).
//!
//! ```sh
//! cargo run --release -p paxos-election --example ab_experiment -- [seeds] [timeout_ms] [md|matrix|both|csv|json|strips] [scenario...]
//! ```
//!
//! Runs every strategy on every scenario of the library (or the ones named) for `seeds` seeds
//! (default 3) with every strategy tuned by `ElectionConfig::uniform(timeout)` (default 500 ms),
//! and prints the per-cell table. The simulator (paxos-sim) runs the same scenarios and metrics
//! with loss, reordering and disk faults.

use paxos_election::memnet::{MemCluster, MemConfig};
use paxos_election::scenario::{library, scenario, ScenarioParams};
use paxos_election::{run_experiment, run_scenario, strip, ElectionConfig, RunOptions, Strategy};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(3);
    let timeout_ms: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(500);
    let format = args.get(2).map_or("md", String::as_str);
    let params = ScenarioParams {
        election_timeout: Duration::from_millis(timeout_ms),
        ..ScenarioParams::default()
    };
    let scenarios = if args.len() > 3 {
        args[3..]
            .iter()
            .map(|n| scenario(n, &params).unwrap_or_else(|| panic!("unknown scenario {n}")))
            .collect()
    } else {
        library(&params)
    };
    let election = ElectionConfig::uniform(Duration::from_millis(timeout_ms));
    if format == "strips" {
        // A text figure per scenario: one character per second after the fault start.
        for sc in &scenarios {
            println!("{} (one char per second from {}):", sc.name, sc.fault_start);
            for strategy in Strategy::ALL {
                let mut c = MemCluster::for_scenario(sc, strategy, election, MemConfig::default());
                let r = run_scenario(&mut c, sc, &RunOptions::default());
                let fig = strip(&r.samples, sc.fault_start, Duration::from_secs(1));
                println!("  {:>10} {fig}", strategy.name());
            }
        }
        return;
    }
    let seeds: Vec<u64> = (1..=seeds).collect();
    let report = run_experiment(
        &Strategy::ALL,
        &scenarios,
        &seeds,
        &RunOptions::default(),
        |strategy, sc, seed| {
            let net = MemConfig {
                seed,
                ..MemConfig::default()
            };
            MemCluster::for_scenario(sc, strategy, election, net)
        },
    );
    match format {
        "csv" => print!("{}", report.to_csv()),
        "json" => print!("{}", report.to_json()),
        "matrix" => print!("{}", report.to_markdown_matrix()),
        "both" => print!("{}\n{}", report.to_markdown(), report.to_markdown_matrix()),
        _ => print!("{}", report.to_markdown()),
    }
}
