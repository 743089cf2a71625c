//! The A/B experiment loop, generic over the cluster that runs it.
//!
//! The simulator (paxos-sim, which depends on this crate) implements [`ClusterDriver`] for its
//! cluster and calls [`run_scenario`] or [`run_experiment`]; this crate's own
//! [`crate::memnet::MemCluster`] implements it too, for tests and the example.

use crate::metrics::{MetricsConfig, Report, RunMetrics, Sample};
use crate::scenario::{Action, FaultCursor, Scenario};
use crate::Strategy;
use paxos_core::{NodeId, Time};
use std::time::Duration;

/// What the experiment needs from a cluster: time, faults and a picture of the cluster.
///
/// The driver owns the workload: it keeps the clients of [`Scenario::clients`] submitting updates
/// while time advances.
pub trait ClusterDriver {
    /// Advances simulated time to `t` (deliver, tick, run clients).
    fn run_until(&mut self, t: Time);

    /// Executes a fault now.
    fn apply(&mut self, action: Action);

    /// The cluster now; `Sample::at` is the current simulated time.
    fn sample(&self) -> Sample;
}

/// How a scenario is run and judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Interval between samples (the resolution of every time metric).
    pub sample_interval: Duration,
    /// How runs are judged.
    pub metrics: MetricsConfig,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            sample_interval: Duration::from_millis(50),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Everything one run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// The run's metrics.
    pub metrics: RunMetrics,
    /// The sampled timeline (for figures).
    pub samples: Vec<Sample>,
    /// The faults executed, resolved, with their times.
    pub actions: Vec<(Time, Action)>,
}

fn current_leader(s: &Sample) -> Option<NodeId> {
    s.leader_view().map(|v| v.leader(s.views.len()))
}

/// Runs `scenario` on `cluster` (built fresh, at time zero, with `scenario.servers` servers) for
/// `scenario.duration`, executing the faults on time and sampling every `sample_interval`.
pub fn run_scenario<C: ClusterDriver>(
    cluster: &mut C,
    scenario: &Scenario,
    options: &RunOptions,
) -> RunResult {
    let end = Time::ZERO + scenario.duration;
    let interval = options.sample_interval.max(Duration::from_micros(1));
    let mut cursor = FaultCursor::new(scenario);
    let mut samples = vec![];
    let mut actions = vec![];
    let mut now = Time::ZERO;
    let mut next_sample = Time::ZERO;
    loop {
        // Sample first: a sample taken at a fault's time shows the cluster just before it.
        if now >= next_sample {
            samples.push(cluster.sample());
            next_sample = next_sample + interval;
        }
        let due = cursor.due(now, || current_leader(&cluster.sample()));
        for a in due {
            cluster.apply(a);
            actions.push((now, a));
        }
        if now >= end {
            break;
        }
        let next = cursor
            .next_at()
            .unwrap_or(end)
            .min(next_sample)
            .min(end)
            .max(now);
        cluster.run_until(next);
        now = next;
    }
    RunResult {
        metrics: RunMetrics::compute(&samples, scenario.fault_start, &options.metrics),
        samples,
        actions,
    }
}

/// Runs every strategy on every scenario for every seed and collects the metrics.
///
/// `make(strategy, scenario, seed)` builds a fresh cluster at time zero whose servers use
/// `crate::build(strategy, ..)` and whose randomness is seeded with `seed`.
pub fn run_experiment<C, F>(
    strategies: &[Strategy],
    scenarios: &[Scenario],
    seeds: &[u64],
    options: &RunOptions,
    mut make: F,
) -> Report
where
    C: ClusterDriver,
    F: FnMut(Strategy, &Scenario, u64) -> C,
{
    let mut report = Report::new();
    for scenario in scenarios {
        for &strategy in strategies {
            for &seed in seeds {
                let mut cluster = make(strategy, scenario, seed);
                let r = run_scenario(&mut cluster, scenario, options);
                report.add(strategy.name(), scenario.name, seed, r.metrics);
            }
        }
    }
    report
}
