//! # paxos-sim
//!
//! A deterministic discrete-event simulator of whole paxos-core clusters, in the style of
//! FoundationDB's simulation and TigerBeetle's VOPR.
//!
//! One seed fixes everything: the fault mix (swarm testing: each seed picks its own), the
//! protocol knobs, the clients and every random delay. Time is virtual; events live in a binary
//! heap ordered by `(time, sequence number)`; only ordered collections are iterated. The simulator
//! drives real [`paxos_core::Replica`]s through their sans-IO interface, models per-server storage
//! (written batches become durable after a random fsync delay; a crash loses, or tears, whatever
//! was not yet synced), a lossy, duplicating, reordering, partitionable network, and clients with
//! one outstanding update that retry on timeout.
//!
//! After every round of inputs it checks, incrementally, agreement, validity, exactly-once
//! execution, durable-state monotonicity and state-machine digests. After the fault phase it heals
//! a stable majority and requires every pending update of that majority's clients to complete
//! within a bound (liveness).
//!
//! ```
//! use paxos_sim::{sweep, FaultProfile, Simulation};
//! let base = Simulation::new(3, 0).faults(FaultProfile::Light);
//! let report = sweep(&base, 0..4, 1, |_| {});
//! assert_eq!(report.violations, 0, "{:?}", report.failures);
//! ```

mod bench;
mod checker;
pub mod elections;
mod faults;
pub mod figures;
mod oracles;
mod report;
pub mod scenarios;
mod sim;
mod state_machine;
mod sweep;

pub use bench::{Bench, BenchReport};
pub use checker::make_payload;
pub use elections::{
    strategy_factory, ElectionExperiment, ElectionOutcome, ElectionRun, SimCluster,
};
pub use faults::{FaultMix, FaultProfile, PartitionKind};
pub use report::{Counters, Latency, LeaderChange, RunReport, Violation, ViolationKind};
pub use sim::{
    durability_name, psb_election, sim_psb_config, ElectionFactory, LivenessSet, NodeFaults,
    NodeSel, ScheduleMode, ScriptAction, ScriptStep, Simulation, Workload,
};
#[cfg(feature = "planted-bugs")]
pub use sim::{planted_bug_name, PlantedBug};
pub use state_machine::{payload_hash, SimStateMachine};
pub use sweep::{sweep, Failure, SweepReport};
