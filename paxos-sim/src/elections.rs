//! The election A/B experiment on the simulator: a stepping handle on one simulated cluster
//! ([`SimCluster`], a [`paxos_election::ClusterDriver`]) and the runner behind
//! `paxos-sim elections` ([`ElectionExperiment`]).
//!
//! Each run is one [`paxos_election::Scenario`] with one [`Strategy`] under one seed: the
//! scenario's faults (crashes, restarts, per-link cuts) come from the driver, the network is the
//! mildly lossy [`FaultMix::network`], and every safety invariant of the simulator is checked
//! after every round, as in a sweep. There is no liveness phase: the experiment measures how
//! long the cluster did not order, and the checker only looks for safety violations.
//!
//! ```
//! use paxos_election::{scenario, ElectionConfig, RunOptions, Strategy};
//! use paxos_sim::SimCluster;
//! use std::time::Duration;
//!
//! let params = scenario::ScenarioParams {
//!     duration: Duration::from_secs(8),
//!     ..Default::default()
//! };
//! let sc = scenario::scenario("leader-crash", &params).unwrap();
//! let cfg = ElectionConfig::uniform(Duration::from_millis(500));
//! let mut cluster = SimCluster::new(Strategy::QuorumBallot, &cfg, &sc, 7);
//! let run = paxos_election::run_scenario(&mut cluster, &sc, &RunOptions::default());
//! assert!(cluster.violations().is_empty());
//! assert_eq!(run.actions.len(), 1); // the leader crashed
//! ```

use crate::faults::FaultMix;
use crate::report::{Counters, Violation};
use crate::sim::{ElectionFactory, Simulation, World};
use paxos_core::{LeaderElection, NodeId, Time};
use paxos_election::{
    build, run_scenario, Action, ClusterDriver, ElectionConfig, Report, RunOptions, RunResult,
    Sample, Scenario, Strategy,
};
use std::sync::Arc;

/// A factory that builds `strategy` with `config` for every server (and every restart).
pub fn strategy_factory(strategy: Strategy, config: ElectionConfig) -> ElectionFactory {
    Arc::new(move |me, servers| -> Box<dyn LeaderElection> {
        build(strategy, me, servers, &config)
    })
}

/// One simulated cluster that a driver steps through time and injects faults into.
///
/// Built by [`Simulation::cluster`] (or [`SimCluster::new`] for one scenario). Safety is checked
/// as the cluster runs; [`SimCluster::violations`] lists what broke (the cluster stops processing
/// events at the first violation).
pub struct SimCluster {
    world: World,
    election: &'static str,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("seed", &self.world.p.seed)
            .field("nodes", &self.world.p.n)
            .field("election", &self.election)
            .field("now", &self.world.now())
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// A stepping handle on this simulation's cluster for a [`ClusterDriver`] user: no random
    /// crashes or partitions and no liveness phase (the driver injects the faults), durability
    /// `Sync` unless fixed, one closed-loop client at each server of `clients`, the network of
    /// the fixed fault mix (default [`FaultMix::network`]; its crash and partition settings are
    /// ignored). Knobs, delays and client timers are drawn from the seed as in
    /// [`Simulation::run`], so every strategy sees the same ones under the same seed.
    pub fn cluster(&self, clients: &[NodeId]) -> SimCluster {
        let (world, election) = self.driven_world(clients);
        SimCluster { world, election }
    }
}

impl SimCluster {
    /// The cluster of `scenario` (its size and client placement) with every server running
    /// `strategy` tuned by `config`, under `seed`.
    pub fn new(
        strategy: Strategy,
        config: &ElectionConfig,
        scenario: &Scenario,
        seed: u64,
    ) -> SimCluster {
        SimCluster::simulation(strategy, config, scenario, seed).cluster(&scenario.clients)
    }

    /// The builder [`SimCluster::new`] uses, for callers that want to change an option (e.g.
    /// `verbose`) before calling [`Simulation::cluster`] with `scenario.clients`.
    pub fn simulation(
        strategy: Strategy,
        config: &ElectionConfig,
        scenario: &Scenario,
        seed: u64,
    ) -> Simulation {
        Simulation::new(scenario.servers, seed)
            .election(
                strategy_factory(strategy, *config),
                Some(format!("--election {}", strategy.name())),
            )
            .fault_mix(FaultMix::network())
    }

    /// The election strategy's name (as `LeaderElection::name` gives it).
    pub fn election(&self) -> &'static str {
        self.election
    }

    /// Safety violations found so far (empty when every invariant held).
    pub fn violations(&self) -> &[Violation] {
        &self.world.violations
    }

    /// Coverage counters so far (messages sent, dropped, crashes, …). Core metrics of live
    /// replicas are folded in only at the end of a sweep run, so view and reconciliation
    /// counters here cover crashed incarnations only.
    pub fn counters(&self) -> &Counters {
        &self.world.counters
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.world.events
    }

    /// Starts or stops the closed-loop clients: stopped clients finish their outstanding update
    /// and submit no more, so the cluster goes idle; started ones resume at once.
    pub fn set_clients_active(&mut self, on: bool) {
        self.guarded(|w| w.drive_clients(on));
    }

    fn guarded(&mut self, f: impl FnOnce(&mut World)) {
        let world = &mut self.world;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(world)));
        if let Err(payload) = outcome {
            let msg = crate::sim::panic_message(payload.as_ref());
            self.world.panicked(msg);
        }
    }
}

impl ClusterDriver for SimCluster {
    fn run_until(&mut self, t: Time) {
        self.guarded(|w| w.run_until(t));
    }

    fn apply(&mut self, action: Action) {
        self.guarded(|w| match action {
            Action::Crash(n) => w.drive_crash(n.index()),
            Action::Restart(n) => w.drive_restart(n.index()),
            Action::Cut(a, b) => w.drive_link(a.index(), b.index(), true),
            Action::Heal(a, b) => w.drive_link(a.index(), b.index(), false),
            Action::HealAll => w.drive_heal_all(),
        });
    }

    fn sample(&self) -> Sample {
        Sample {
            at: self.world.now(),
            views: self.world.regular_views(),
            executed: self.world.ordered(),
        }
    }
}

/// One (scenario, strategy, seed) run of an [`ElectionExperiment`].
#[derive(Clone, Debug)]
pub struct ElectionRun {
    /// Index into the experiment's scenarios.
    pub scenario: usize,
    /// The strategy.
    pub strategy: Strategy,
    /// The seed.
    pub seed: u64,
    /// Metrics, sampled timeline (kept only when asked for) and executed faults.
    pub result: RunResult,
    /// Messages sent between servers during the whole run (client traffic excluded).
    pub messages: u64,
    /// Events the simulator processed.
    pub events: u64,
    /// Safety violations (empty when every invariant held).
    pub violations: Vec<Violation>,
}

/// Every strategy on every scenario for every seed, on the simulator.
#[derive(Clone, Debug)]
pub struct ElectionExperiment {
    /// The scenarios, in table order.
    pub scenarios: Vec<Scenario>,
    /// The strategies, in table order.
    pub strategies: Vec<Strategy>,
    /// The seeds of each cell.
    pub seeds: Vec<u64>,
    /// Every strategy's timers.
    pub config: ElectionConfig,
    /// Sampling and judging.
    pub options: RunOptions,
    /// Worker threads (results do not depend on it).
    pub threads: usize,
    /// Keep the sampled timelines of these scenarios (by name), for the seeds listed in
    /// `keep_samples_seeds`; others are dropped to save memory.
    pub keep_samples: Vec<&'static str>,
    /// Seeds whose timelines are kept (see `keep_samples`).
    pub keep_samples_seeds: Vec<u64>,
    /// The network of every run (its crash and partition settings are ignored);
    /// [`FaultMix::network`] is the default of [`SimCluster::new`].
    pub network: FaultMix,
    /// Simulator verbosity of every run (0: silent; 1: faults, leader changes, completions).
    pub verbose: u8,
}

/// What an [`ElectionExperiment`] produced.
#[derive(Clone, Debug)]
pub struct ElectionOutcome {
    /// The metrics of every run, ready for `to_markdown`, `to_csv`, `to_json`.
    pub report: Report,
    /// Every run, scenario-major, then strategy, then seed.
    pub runs: Vec<ElectionRun>,
}

impl ElectionOutcome {
    /// Runs that broke a safety invariant.
    pub fn unsafe_runs(&self) -> impl Iterator<Item = &ElectionRun> {
        self.runs.iter().filter(|r| !r.violations.is_empty())
    }
}

impl ElectionExperiment {
    /// Runs one cell member.
    pub fn run_one(&self, scenario: usize, strategy: Strategy, seed: u64) -> ElectionRun {
        let sc = &self.scenarios[scenario];
        let mut cluster = SimCluster::simulation(strategy, &self.config, sc, seed)
            .fault_mix(self.network.clone())
            .verbose(self.verbose)
            .cluster(&sc.clients);
        let mut result = run_scenario(&mut cluster, sc, &self.options);
        if !(self.keep_samples.contains(&sc.name) && self.keep_samples_seeds.contains(&seed)) {
            result.samples = Vec::new();
        }
        ElectionRun {
            scenario,
            strategy,
            seed,
            result,
            messages: cluster.counters().messages_sent,
            events: cluster.events(),
            violations: cluster.violations().to_vec(),
        }
    }

    /// Runs everything on `threads` threads; `progress` sees each finished run (in completion
    /// order). The outcome is in table order whatever the thread count.
    pub fn run(&self, progress: impl Fn(&ElectionRun) + Sync) -> ElectionOutcome {
        let mut jobs = vec![];
        for sc in 0..self.scenarios.len() {
            for &st in &self.strategies {
                for &seed in &self.seeds {
                    jobs.push((sc, st, seed));
                }
            }
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = self.threads.max(1);
        let mut runs: Vec<(usize, ElectionRun)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = vec![];
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&(sc, st, seed)) = jobs.get(i) else {
                                break;
                            };
                            let r = self.run_one(sc, st, seed);
                            progress(&r);
                            mine.push((i, r));
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("experiment thread panicked"))
                .collect()
        });
        runs.sort_by_key(|(i, _)| *i);
        let runs: Vec<ElectionRun> = runs.into_iter().map(|(_, r)| r).collect();
        let mut report = Report::new();
        for r in &runs {
            report.add(
                r.strategy.name(),
                self.scenarios[r.scenario].name,
                r.seed,
                r.result.metrics,
            );
        }
        ElectionOutcome { report, runs }
    }
}
