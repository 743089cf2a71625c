//! Many seeds in a row, with aggregated counters and coverage ("sometimes") checks.

use crate::report::{Counters, RunReport, Violation};
use crate::sim::Simulation;
use std::ops::Range;

/// A failed seed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Its first violation.
    pub violation: Violation,
    /// The command line that replays it.
    pub replay: String,
}

/// The outcome of a sweep.
#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// Seeds run.
    pub seeds: u64,
    /// Events processed, summed.
    pub events: u64,
    /// Violations, summed.
    pub violations: u64,
    /// The failed seeds, in seed order.
    pub failures: Vec<Failure>,
    /// Counters summed over all seeds.
    pub counters: Counters,
    /// Hash of all trace hashes, in seed order.
    pub trace_hash: u64,
}

impl SweepReport {
    /// Coverage counters that stayed zero: fault types or protocol paths never exercised.
    pub fn never_exercised(&self) -> Vec<&'static str> {
        const REQUIRED: [&str; 12] = [
            "view_changes",
            "reconciliations",
            "snapshots_taken",
            "snapshots_installed",
            "duplicates_skipped",
            "crashes",
            "restarts",
            "lost_writes",
            "torn_writes",
            "partitions",
            "messages_duplicated",
            "codec_roundtrips",
        ];
        self.counters
            .entries()
            .into_iter()
            .filter(|(name, v)| *v == 0 && REQUIRED.contains(name))
            .map(|(name, _)| name)
            .collect()
    }

    /// The summary line the CLI ends with.
    pub fn summary_line(&self) -> String {
        format!(
            "seeds: {}, events: {}, violations: {}",
            self.seeds, self.events, self.violations
        )
    }

    fn add(&mut self, r: &RunReport) {
        self.seeds += 1;
        self.events += r.events;
        self.violations += r.violations.len() as u64;
        self.counters.add(&r.counters);
        self.trace_hash = crate::state_machine::finish(self.trace_hash ^ r.trace_hash);
        if let Some(v) = r.violations.first() {
            self.failures.push(Failure {
                seed: r.seed,
                violation: v.clone(),
                replay: r.replay.clone(),
            });
        }
    }
}

/// Runs `base` with every seed in `seeds`, on `threads` threads (results are merged in seed order,
/// so the report does not depend on the thread count). `on_run` sees every report, in seed order.
pub fn sweep(
    base: &Simulation,
    seeds: Range<u64>,
    threads: usize,
    mut on_run: impl FnMut(&RunReport),
) -> SweepReport {
    let threads = threads.max(1);
    let seeds: Vec<u64> = seeds.collect();
    let mut out = SweepReport::default();
    for chunk in seeds.chunks(threads * 8) {
        let mut results: Vec<RunReport> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let mine: Vec<u64> = chunk.iter().copied().skip(t).step_by(threads).collect();
                    s.spawn(move || {
                        mine.into_iter()
                            .map(|seed| base.clone().seed(seed).run())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("simulation thread panicked"))
                .collect()
        });
        results.sort_by_key(|r| r.seed);
        for r in &results {
            on_run(r);
            out.add(r);
        }
    }
    out
}
