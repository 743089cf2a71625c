//! Many seeds in a row, with aggregated counters and coverage ("sometimes") checks.

use crate::report::{Counters, RunReport, Violation};
use crate::sim::Simulation;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc;

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

/// Runs `base` with every seed in `seeds`, on `threads` threads. Each thread takes the next
/// seed not yet started (so a slow seed does not hold the others up); reports are handed to
/// `on_run` and summed in seed order, so the report and every `on_run` call are the same for any
/// thread count (every run is a function of its seed and options alone).
pub fn sweep(
    base: &Simulation,
    seeds: Range<u64>,
    threads: usize,
    mut on_run: impl FnMut(&RunReport),
) -> SweepReport {
    let threads = threads.max(1);
    let mut out = SweepReport::default();
    if threads == 1 {
        for seed in seeds {
            let r = base.clone().seed(seed).run();
            on_run(&r);
            out.add(&r);
        }
        return out;
    }
    let next = AtomicU64::new(seeds.start);
    let end = seeds.end;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<RunReport>(threads * 4);
        for _ in 0..threads {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || loop {
                let seed = next.fetch_add(1, AtomicOrdering::Relaxed);
                if seed >= end {
                    break;
                }
                if tx.send(base.clone().seed(seed).run()).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // Reports arrive in completion order; hand them out in seed order.
        let mut waiting: BTreeMap<u64, RunReport> = BTreeMap::new();
        let mut want = seeds.start;
        for r in rx {
            waiting.insert(r.seed, r);
            while let Some(r) = waiting.remove(&want) {
                on_run(&r);
                out.add(&r);
                want += 1;
            }
        }
    });
    out
}
