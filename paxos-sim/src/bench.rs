//! `--bench`: how fast the simulator drives a fault-free cluster.

use crate::faults::FaultMix;
use crate::report::Violation;
use crate::sim::{psb_election, sim_psb_config, Mode, Params, SchedParams, World};
use paxos_core::{Config, Durability, NodeId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

/// A throughput run: no faults, closed-loop clients, minimal network delay.
#[derive(Clone, Debug)]
pub struct Bench {
    /// Cluster size (default 3).
    pub nodes: usize,
    /// Number of clients, spread over the servers (default 2000).
    pub clients: usize,
    /// Stop once this many slots are ordered (default 2,000,000).
    pub updates: u64,
    /// Payload size in bytes (default 200).
    pub payload: usize,
    /// `None` or `Async` (default `None`).
    pub durability: Durability,
    /// Aggregation (default on).
    pub aggregation: bool,
    /// One-way network delay (default 20 µs).
    pub net_delay: Duration,
    /// Seed.
    pub seed: u64,
}

impl Default for Bench {
    fn default() -> Self {
        Bench {
            nodes: 3,
            clients: 2000,
            updates: 2_000_000,
            payload: 200,
            durability: Durability::None,
            aggregation: true,
            net_delay: Duration::from_micros(20),
            seed: 1,
        }
    }
}

/// What a bench run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Slots ordered (canonical order).
    pub ordered: u64,
    /// Executions summed over replicas.
    pub executions: u64,
    /// Client updates completed.
    pub completed: u64,
    /// Events processed.
    pub events: u64,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// Virtual time of the run.
    pub virtual_time: Duration,
    /// Broken invariants (must be empty).
    pub violations: Vec<Violation>,
}

impl BenchReport {
    /// Updates ordered per second of wall time.
    pub fn ordered_per_wall_sec(&self) -> f64 {
        self.ordered as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Executions (all replicas) per second of wall time.
    pub fn executed_per_wall_sec(&self) -> f64 {
        self.executions as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Updates ordered per simulated second.
    pub fn ordered_per_virtual_sec(&self) -> f64 {
        self.ordered as f64 / self.virtual_time.as_secs_f64().max(1e-9)
    }
}

impl Bench {
    /// Runs the benchmark.
    pub fn run(&self) -> BenchReport {
        let n = self.nodes.max(1);
        let mut config = Config::new(NodeId(0), n);
        config.durability = self.durability;
        config.aggregation = self.aggregation;
        config.record_executions = true;
        config.window = 4096;
        config.accept_window = 8192;
        // Compact often so the history ring stays small and hot in cache.
        config.snapshot_interval = Some(20_000);
        config.history_retention = 2_000;
        let params = Params {
            seed: self.seed,
            n,
            mix: FaultMix::none(),
            config,
            clients: self.clients,
            client_timeout: Duration::from_secs(3600),
            think: Duration::ZERO,
            base_delay: self.net_delay,
            jitter: Duration::ZERO,
            tick: Duration::from_millis(5),
            liveness_bound: Duration::ZERO,
            verbose: 0,
            mode: Mode::Bench {
                updates: self.updates,
                payload_len: self.payload,
            },
            ext: SchedParams::classic(self.seed),
        };
        let start = Instant::now();
        let mut world = World::new(
            params,
            ChaCha8Rng::seed_from_u64(self.seed),
            psb_election(sim_psb_config()),
        );
        world.run();
        let wall = start.elapsed();
        let report = world.into_report("psb-view-change", String::new());
        BenchReport {
            ordered: report.counters.ordered,
            executions: report.counters.executions,
            completed: report.counters.updates_completed,
            events: report.events,
            wall,
            virtual_time: Duration::from_nanos(report.end_time.as_nanos()),
            violations: report.violations,
        }
    }
}
