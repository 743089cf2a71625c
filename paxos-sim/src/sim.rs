//! The simulator's world: one cluster under one seed as a discrete-event simulation (testing.md
//! (a), *Harness*: "N cores in one process; a seeded PRNG drives a discrete-event queue
//! (deliveries, ticks, faults); simulated time only, ordered maps. Self-test: same seed twice →
//! same trace hash").
//!
//! [`World`] runs the loop: it takes the next event off the queue, hands it to the module that
//! models it, and whenever virtual time moves on it drains every server that received input
//! (`poll_persist`, `poll_message`, `poll_executed`, `poll_client_reply`), passing what came out
//! to the storage, the network, the clients and the checker. The trace hash mixes every processed
//! event's time and code, then the final counters. Each module owns one part of the world:
//!
//! * `builder.rs`: [`Simulation`], the seed's draws, [`Params`] and the run's [`Mode`];
//! * `events.rs`: the event queue (time, then scheduling order);
//! * `network.rs`: delays, loss, duplication, codec round trips, partitions and cut links;
//! * `disks.rs`: durable state, sync order, crashes (lost or torn writes) and restarts;
//! * `clients.rs`: closed-loop clients, timeouts and replies;
//! * `chaos.rs`: random crashes and partitions, fault scripts;
//! * `schedule.rs`, `nemesis.rs`: rounds of inputs, pauses, clock skew and jumps, slow disks;
//! * `liveness.rs`, `stable.rs`: the fault and liveness phases, the stable set, leadership;
//! * `driver.rs`: the stepping API of [`crate::SimCluster`].
//!
//! Every oracle is in [`crate::checker`] (and the effect-stream oracles it owns).

use crate::checker::Checker;
use crate::report::{Counters, RunReport, Violation, ViolationKind};
use crate::state_machine::{finish, mix, SimStateMachine};
use paxos_core::{Durability, LeaderElection, Metrics, NodeId, Replica, ServerState, Time};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

mod builder;
mod chaos;
mod clients;
mod disks;
mod driver;
mod events;
mod liveness;
mod nemesis;
mod network;
mod schedule;
mod stable;
pub use builder::{durability_name, psb_election, sim_psb_config, ElectionFactory, Simulation};
#[cfg(feature = "planted-bugs")]
pub use builder::{planted_bug_name, PlantedBug};
pub(crate) use builder::{Mode, Params};
pub use chaos::{NodeSel, ScriptAction, ScriptStep};
use clients::Clients;
use disks::Disk;
use events::{Ev, EventQueue};
use liveness::{Leaders, Liveness};
pub use nemesis::NodeFaults;
use network::Network;
pub(crate) use schedule::SchedParams;
use schedule::{Input, Sched, SchedOptions};
pub use schedule::{ScheduleMode, Workload};

/// The message of a caught panic (`&str` or `String` payloads; anything else is named as such).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_string())
}
pub use stable::LivenessSet;

type SimReplica = Replica<SimStateMachine, Box<dyn LeaderElection>>;

/// One server.
struct Node {
    /// The running replica (`None` while crashed, and while it is drained).
    replica: Option<Box<SimReplica>>,
    /// Incarnation counter of the simulator: bumped at boot and crash, so ticks and syncs of an
    /// earlier incarnation are ignored.
    gen: u32,
    /// Its storage (`disks.rs`).
    disk: Disk,
}

/// One simulated cluster and everything around it.
pub(crate) struct World {
    /// The seed's parameters.
    pub(crate) p: Params,
    /// Virtual time.
    now: Time,
    /// Pending events (`events.rs`).
    queue: EventQueue,
    /// The run's RNG: every draw outside the scheduler, in event order.
    rng: ChaCha8Rng,
    /// Builds each server's election strategy (at every boot).
    factory: ElectionFactory,
    nodes: Vec<Node>,
    /// The closed-loop clients (`clients.rs`).
    clients: Clients,
    /// Partitions, cut links and loss (`network.rs`).
    net: Network,
    /// The fault and liveness phases (`liveness.rs`).
    live: Liveness,
    /// Who leads, for the report (`liveness.rs`).
    leaders: Leaders,
    /// Every oracle (`checker.rs`).
    checker: Checker,
    /// Coverage counters for the report.
    pub(crate) counters: Counters,
    /// The running trace hash.
    trace: u64,
    /// Events processed.
    pub(crate) events: u64,
    /// Servers that received input since their last drain, one bit each.
    dirty: u64,
    /// Broken invariants (the world stops at the first).
    pub(crate) violations: Vec<Violation>,
    /// Set by a violation, convergence or the end of a bench run.
    stop: bool,
    /// Canonical-order length at which the checker next forgets old slots.
    next_trim: u64,
    /// Per-server inboxes, clocks and process faults (`schedule.rs`, `nemesis.rs`).
    sched: Sched,
}

/// Every one of `n` servers, one bit each.
fn all_mask(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

impl World {
    /// Builds the world of `p` (drawing from `rng`, the run's RNG after the builder's draws) and
    /// schedules its first events.
    pub(crate) fn new(p: Params, mut rng: ChaCha8Rng, factory: ElectionFactory) -> World {
        let n = p.n;
        let clients = Clients::new(&p, &mut rng);
        let checker = Checker::new(
            p.seed,
            p.mode.payload_len(),
            &p.config,
            clients.list.iter().map(|c| c.server).collect(),
        );
        let mut w = World {
            now: Time::ZERO,
            queue: EventQueue::default(),
            rng,
            factory,
            nodes: (0..n)
                .map(|_| Node {
                    replica: None,
                    gen: 0,
                    disk: Disk::default(),
                })
                .collect(),
            clients,
            net: Network::new(n, p.mix.loss),
            live: Liveness::new(n),
            leaders: Leaders::new(),
            checker,
            counters: Counters::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            events: 0,
            dirty: 0,
            violations: Vec::new(),
            stop: false,
            next_trim: 4096,
            sched: Sched::new(&p.ext, n),
            p,
        };
        w.start();
        w
    }

    fn schedule(&mut self, at: Time, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn log(&self, level: u8, f: impl FnOnce() -> String) {
        if self.p.verbose >= level {
            println!("{} {}", self.now, f());
        }
    }

    fn violation(&mut self, kind: ViolationKind, detail: String) {
        let v = Violation {
            time: self.now,
            kind,
            detail,
        };
        self.log(1, || format!("VIOLATION {v}"));
        self.violations.push(v);
        self.stop = true;
    }

    /// Boots every server, then schedules the clients, the end of the fault phase and the faults.
    fn start(&mut self) {
        let n = self.p.n;
        for i in 0..n {
            self.boot(i);
        }
        self.start_clients();
        if let Some(phase) = self.p.mode.fault_phase() {
            let heal_at = Time::ZERO + phase;
            self.schedule(heal_at, Ev::Heal);
            self.live.end_limit = heal_at + self.p.liveness_bound + Duration::from_secs(1);
        }
        self.start_faults();
    }

    /// Adds a replica's core metrics to the run's counters (at a crash and at the end).
    fn fold_metrics(counters: &mut Counters, m: &Metrics) {
        counters.views_installed += m.views_installed;
        counters.reconciliations += m.recon_requests;
        counters.snapshots_taken += m.snapshots_taken;
        counters.snapshots_installed += m.snapshots_installed;
        counters.snapshot_bytes += m.snapshot_bytes_received;
        counters.floor_wait_stalls += m.floor_wait_stalls;
    }

    /// Whether server `i` is up.
    fn alive(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    /// Runs to the end: no events left, a violation, convergence, the end of a bench run, or the
    /// end limit of the liveness phase.
    pub(crate) fn run(&mut self) {
        while let Some((at, ev)) = self.queue.pop() {
            if at != self.now {
                self.drain_dirty();
                if self.stop {
                    break;
                }
                if at > self.live.end_limit {
                    break;
                }
                self.now = at;
            }
            self.process(at, ev);
            if self.stop {
                break;
            }
        }
        if !self.stop {
            self.drain_dirty();
        }
        self.liveness_at_end();
    }

    /// Counts and hashes one event, then handles it.
    fn process(&mut self, at: Time, ev: Ev) {
        self.events += 1;
        self.trace = mix(mix(self.trace, at.0), ev.code());
        self.handle(ev);
    }

    /// Hands an event to the module that models it.
    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { node, gen } => {
                let i = node as usize;
                if self.nodes[i].gen != gen {
                    return;
                }
                if self.nodes[i].replica.is_some() {
                    self.input(i, Input::Tick);
                    let next = self.now + self.tick_period(i);
                    self.schedule(next, Ev::Tick { node, gen });
                }
            }
            Ev::Deliver { from, to, msg } => self.deliver(from as usize, to as usize, msg),
            Ev::Synced { node, gen } => self.synced(node as usize, gen),
            Ev::SnapshotBuilt { node, gen, job } => {
                let i = node as usize;
                if self.nodes[i].gen == gen && self.nodes[i].replica.is_some() {
                    self.counters.snapshot_jobs += 1;
                    self.input(i, Input::SnapshotBuilt(Box::new(job.build())));
                }
            }
            Ev::Submit { client } => self.scheduled_submit(client as usize),
            Ev::Timeout { client, ts } => self.client_timeout(client, ts),
            Ev::Chaos => self.chaos(),
            Ev::Restart { node } => self.restart_crashed(node as usize),
            Ev::PartitionEnd { id } => self.end_partition(id),
            Ev::Flap { id, left } => self.flap(id, left),
            Ev::Heal => self.heal(),
            Ev::Check => self.check_convergence(),
            Ev::Script { index } => self.script_step(index as usize),
            Ev::Sched(e) => self.handle_sched(e),
        }
    }

    /// Drains every server that received input, lowest id first, until none did (a drain can
    /// give others input), with the zero-think-time resubmissions in between.
    fn drain_dirty(&mut self) {
        loop {
            while self.dirty != 0 {
                let i = self.dirty.trailing_zeros() as usize;
                self.dirty &= !(1 << i);
                self.drain(i);
                if self.stop {
                    return;
                }
            }
            if !self.resubmit() {
                return;
            }
        }
    }

    /// Drains server `i` once: writes, messages, executions, replies, then its aru and role.
    fn drain(&mut self, i: usize) {
        let Some(mut r) = self.nodes[i].replica.take() else {
            return;
        };
        while let Some(b) = r.poll_persist() {
            self.write(i, b);
        }
        while let Some(job) = r.poll_snapshot_job() {
            // Built off the loop: the replica keeps executing meanwhile, as under the node.
            let delay = Duration::from_nanos(self.rng.gen_range(0..20_000_000));
            let gen = self.nodes[i].gen;
            self.schedule(
                self.now + delay,
                Ev::SnapshotBuilt {
                    node: i as u8,
                    gen,
                    job,
                },
            );
        }
        while let Some((to, msg)) = r.poll_message() {
            let durable = &self.nodes[i].disk.durable;
            if let Err((kind, detail)) = self.checker.on_send(i, &msg, durable) {
                self.violation(kind, detail);
            }
            self.send(i, to, msg);
        }
        let snaps = r.metrics().snapshots_installed;
        self.checker.on_snapshots_installed(i, snaps);
        while let Some(e) = r.poll_executed() {
            if let Err((kind, detail)) = self.checker.on_executed(i, &e) {
                self.violation(kind, detail);
                break;
            }
        }
        while let Some(rep) = r.poll_client_reply() {
            self.on_reply(i, rep);
        }
        let ctx = r.election_context();
        let pos = ctx.local_aru.0;
        if let Err((kind, detail)) = self.checker.on_aru(i, pos, || r.state_machine().digest()) {
            self.violation(kind, detail);
        }
        self.observe_leader(i, ctx.state == ServerState::RegLeader, ctx.last_installed);
        self.nodes[i].replica = Some(r);
        if self.checker.ordered() >= self.next_trim {
            self.next_trim = self.checker.ordered() + 4096;
            self.trim();
        }
        if let Some(target) = self.p.mode.bench_target() {
            if self.checker.ordered() >= target {
                self.stop = true;
            }
        }
    }

    /// Lets the checker forget what no replica can report again: below every replica's executed
    /// prefix and, where a restart could execute again from it, its durable snapshot.
    fn trim(&mut self) {
        let sync = self.p.config.durability == Durability::Sync;
        let mut floor = u64::MAX;
        for (i, node) in self.nodes.iter().enumerate() {
            let mut f = self.checker.pos[i];
            if sync || node.replica.is_none() {
                f = f.min(node.disk.durable.snapshot_seq().0);
            }
            floor = floor.min(f);
        }
        self.checker.trim(floor);
    }

    /// The run's report: counters (with the core metrics of live replicas) and the final trace
    /// hash.
    pub(crate) fn into_report(mut self, election: &'static str, replay: String) -> RunReport {
        for node in &self.nodes {
            if let Some(r) = &node.replica {
                Self::fold_metrics(&mut self.counters, r.metrics());
            }
        }
        let (leader_changes, leaderless) = self.leaders.finish(self.now);
        self.counters.duplicates_skipped = self.checker.duplicates_skipped;
        self.counters.noops = self.checker.noops;
        self.counters.executions = self.checker.executions;
        self.counters.ordered = self.checker.ordered();
        self.fold_sched_counters();
        let mut trace = self.trace;
        for (name, v) in self.counters.entries() {
            // Zero scheduling counters stay out, so classic runs keep their earlier hashes.
            if v != 0 || !Counters::SCHEDULING.contains(&name) {
                trace = mix(trace, v);
            }
        }
        RunReport {
            seed: self.p.seed,
            nodes: self.p.n,
            election,
            durability: self.p.config.durability,
            aggregation: self.p.config.aggregation,
            mix: self.p.mix.clone(),
            config: self.p.config.clone(),
            clients: self.p.clients,
            events: self.events,
            end_time: self.now,
            trace_hash: finish(trace),
            violations: self.violations,
            counters: self.counters,
            latencies: self.clients.latencies,
            leader_changes,
            leaderless,
            healed_at: self.live.healed_at,
            stable_set: (0..self.p.n)
                .filter(|&i| self.live.in_stable(i))
                .map(|i| NodeId(i as u32))
                .collect(),
            converged_at: self.live.converged_at,
            replay,
            schedule: self.sched.mode,
            node_faults: self.sched.faults.clone(),
            liveness_set: self.sched.liveness,
        }
    }
}
