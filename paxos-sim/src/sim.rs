//! The simulator: a builder ([`Simulation`]) and the discrete-event world it runs.

use crate::checker::Checker;
use crate::faults::{FaultMix, FaultProfile};
use crate::report::{Counters, RunReport, Violation, ViolationKind};
use crate::state_machine::{finish, mix, SimStateMachine};
use paxos_core::{
    Config, Durability, LeaderElection, Metrics, NodeId, PsbConfig, PsbViewChange, Replica,
    ServerState, Time,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
pub use stable::LivenessSet;

/// Builds the election strategy of server `me` in a cluster of `servers`.
pub type ElectionFactory = Arc<dyn Fn(NodeId, usize) -> Box<dyn LeaderElection> + Send + Sync>;

/// PSB view-change timers scaled for simulation: seeds run fast and still see many view changes.
pub fn sim_psb_config() -> PsbConfig {
    PsbConfig {
        progress_timeout: Duration::from_millis(300),
        max_progress_timeout: Duration::from_secs(3),
        resend_interval: Duration::from_millis(50),
    }
}

/// A factory for PSB's own view change ([`PsbViewChange`]) with the given timers.
pub fn psb_election(config: PsbConfig) -> ElectionFactory {
    Arc::new(move |me, servers| Box::new(PsbViewChange::new(me, servers, config)))
}

/// A deliberately planted core bug (re-exported from paxos-core with the `planted-bugs` feature).
#[cfg(feature = "planted-bugs")]
pub use paxos_core::config::PlantedBug;

/// A simulated run of one cluster under one seed: the builder.
///
/// Everything not fixed here is drawn from the seed (swarm testing): the fault mix, durability,
/// aggregation, snapshot interval, window, message size limit, number of clients, network delays.
/// [`Simulation::run`] returns a [`RunReport`]; the same builder always produces the same report.
///
/// ```
/// use paxos_sim::{FaultProfile, Simulation};
/// let report = Simulation::new(3, 42).faults(FaultProfile::Light).run();
/// assert!(report.ok(), "{:?}", report.violations);
/// ```
#[derive(Clone)]
pub struct Simulation {
    nodes: usize,
    seed: u64,
    profile: FaultProfile,
    mix: Option<FaultMix>,
    election: ElectionFactory,
    election_flag: Option<String>,
    durability: Option<Durability>,
    aggregation: Option<bool>,
    snapshot_interval: Option<Option<u64>>,
    clients: Option<usize>,
    fault_phase: Option<Duration>,
    liveness_bound: Duration,
    script: Vec<ScriptStep>,
    verbose: u8,
    /// Scheduling, process faults, liveness set, workload (`schedule.rs`).
    ext: SchedOptions,
    #[cfg(feature = "planted-bugs")]
    planted_bug: Option<PlantedBug>,
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulation")
            .field("nodes", &self.nodes)
            .field("seed", &self.seed)
            .field("profile", &self.profile)
            .field("durability", &self.durability)
            .field("aggregation", &self.aggregation)
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// A run of `nodes` servers (3, 5 or 7 are typical; 1..=64 work) under `seed`, with the `all`
    /// fault profile, PSB's view change, and everything else drawn from the seed.
    pub fn new(nodes: usize, seed: u64) -> Simulation {
        Simulation {
            nodes,
            seed,
            profile: FaultProfile::All,
            mix: None,
            election: psb_election(sim_psb_config()),
            election_flag: None,
            durability: None,
            aggregation: None,
            snapshot_interval: None,
            clients: None,
            fault_phase: None,
            liveness_bound: Duration::from_secs(60),
            script: Vec::new(),
            verbose: 0,
            ext: SchedOptions::default(),
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// Uses another seed, keeping every other option.
    pub fn seed(mut self, seed: u64) -> Simulation {
        self.seed = seed;
        self
    }

    /// Uses another cluster size.
    pub fn nodes(mut self, nodes: usize) -> Simulation {
        self.nodes = nodes;
        self
    }

    /// The profile the per-seed fault mix is drawn from.
    pub fn faults(mut self, profile: FaultProfile) -> Simulation {
        self.profile = profile;
        self
    }

    /// A fixed fault mix for every seed (overrides the profile).
    pub fn fault_mix(mut self, mix: FaultMix) -> Simulation {
        self.mix = Some(mix);
        self
    }

    /// The leader-election strategy. `flag` is how the replay command line names it (e.g.
    /// `"--election omega"`), or `None` for the default.
    pub fn election(mut self, factory: ElectionFactory, flag: Option<String>) -> Simulation {
        self.election = factory;
        self.election_flag = flag;
        self
    }

    /// Fixes the durability mode (default: drawn per seed, mostly `Sync`).
    pub fn durability(mut self, durability: Durability) -> Simulation {
        self.durability = Some(durability);
        self
    }

    /// Fixes aggregation on or off (default: drawn per seed).
    pub fn aggregation(mut self, on: bool) -> Simulation {
        self.aggregation = Some(on);
        self
    }

    /// Fixes the snapshot interval (default: drawn per seed, often small).
    pub fn snapshot_interval(mut self, interval: Option<u64>) -> Simulation {
        self.snapshot_interval = Some(interval);
        self
    }

    /// Fixes the number of clients (default: drawn per seed, 1..=2N).
    pub fn clients(mut self, clients: usize) -> Simulation {
        self.clients = Some(clients);
        self
    }

    /// Fixes the length of the fault phase (default: drawn per seed, 2–5 s of virtual time).
    pub fn duration(mut self, fault_phase: Duration) -> Simulation {
        self.fault_phase = Some(fault_phase);
        self
    }

    /// How long after healing the stable majority's clients may take to complete (default 60 s).
    pub fn liveness_bound(mut self, bound: Duration) -> Simulation {
        self.liveness_bound = bound;
        self
    }

    /// Scripted faults instead of random ones: the fault profile becomes `none` unless a mix is
    /// given, and after the script every server is healed and restarted.
    pub fn script(mut self, steps: Vec<ScriptStep>) -> Simulation {
        self.script = steps;
        self
    }

    /// Prints the run: 1 = faults, leader changes and client completions; 2 = every event.
    pub fn verbose(mut self, level: u8) -> Simulation {
        self.verbose = level;
        self
    }

    /// Plants a core bug in every replica.
    #[cfg(feature = "planted-bugs")]
    pub fn planted_bug(mut self, bug: Option<PlantedBug>) -> Simulation {
        self.planted_bug = bug;
        self
    }

    /// The seed.
    pub fn get_seed(&self) -> u64 {
        self.seed
    }

    /// The command line that replays this run verbosely.
    pub fn replay_command(&self) -> String {
        let mut s = format!(
            "cargo run --release -p paxos-sim{} -- --seed {} --nodes {} --faults {}",
            if cfg!(feature = "planted-bugs") {
                " --features planted-bugs"
            } else {
                ""
            },
            self.seed,
            self.nodes,
            self.profile
        );
        if let Some(d) = self.durability {
            s.push_str(&format!(" --durability {}", durability_name(d)));
        }
        if let Some(a) = self.aggregation {
            s.push_str(if a {
                " --aggregation on"
            } else {
                " --aggregation off"
            });
        }
        if let Some(c) = self.clients {
            s.push_str(&format!(" --clients {c}"));
        }
        if let Some(d) = self.fault_phase {
            s.push_str(&format!(" --fault-ms {}", d.as_millis()));
        }
        if let Some(f) = &self.election_flag {
            s.push(' ');
            s.push_str(f);
        }
        #[cfg(feature = "planted-bugs")]
        if let Some(b) = self.planted_bug {
            s.push_str(&format!(" --planted-bug {}", planted_bug_name(b)));
        }
        s.push_str(&self.ext.flags());
        if self.mix.is_some() || !self.script.is_empty() {
            s.push_str("  # (custom fault mix or script: replay through the library)");
        }
        s
    }

    /// The replica configuration of a run: the fixed options plus the per-seed knob draws (in a
    /// fixed order, so a seed always gets the same knobs).
    fn draw_config(
        &self,
        rng: &mut ChaCha8Rng,
        n: usize,
        durability: Durability,
        aggregation: bool,
    ) -> Config {
        let mut config = Config::new(NodeId(0), n);
        config.durability = durability;
        config.aggregation = aggregation;
        config.record_executions = true;
        config.proposal_resend = Duration::from_millis(40);
        config.update_resend = Duration::from_millis(80);
        config.alive_interval = Duration::from_millis(50);
        config.recon_delay = Duration::from_millis(10);
        config.recon_timeout = Duration::from_millis(100);
        config.snapshot_interval = match self.snapshot_interval {
            Some(s) => s,
            None if rng.gen_bool(0.45) => Some(rng.gen_range(3..40)),
            None => None,
        };
        config.history_retention = [0, 2, 10, 50][rng.gen_range(0..4)];
        config.window = [2, 8, 32, 256][rng.gen_range(0..4)];
        config.accept_window = config.window * [1, 2, 4][rng.gen_range(0..3)];
        config.recon_chunk = [2, 16, 256][rng.gen_range(0..3)];
        config.max_message_bytes = [1024, 4096, 60_000][rng.gen_range(0..3)];
        config.leader_accepts_separately = rng.gen_bool(0.25);
        #[cfg(feature = "planted-bugs")]
        {
            config.planted_bug = self.planted_bug;
        }
        config
    }

    /// Runs the simulation to the end and reports.
    pub fn run(&self) -> RunReport {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let n = self.nodes.max(1);
        let scripted = !self.script.is_empty();
        let mix = match (&self.mix, scripted) {
            (Some(m), _) => m.clone(),
            (None, true) => FaultMix::none(),
            (None, false) => FaultMix::draw(self.profile, &mut rng),
        };
        let durability = self.durability.unwrap_or_else(|| {
            if scripted {
                return Durability::Sync;
            }
            match rng.gen_range(0..10) {
                0 | 1 => Durability::Async,
                2 => Durability::None,
                _ => Durability::Sync,
            }
        });
        let aggregation = self.aggregation.unwrap_or_else(|| rng.gen_bool(0.6));
        let config = self.draw_config(&mut rng, n, durability, aggregation);
        let clients = self.clients.unwrap_or_else(|| rng.gen_range(1..=2 * n));
        let fault_phase = self.fault_phase.unwrap_or_else(|| {
            if scripted {
                self.script
                    .iter()
                    .map(|s| s.at)
                    .max()
                    .unwrap_or_default()
                    .saturating_add(Duration::from_secs(1))
            } else {
                Duration::from_millis(rng.gen_range(2000..5000))
            }
        });
        let base_delay = Duration::from_micros(rng.gen_range(100..2000));
        let mut params = Params {
            seed: self.seed,
            n,
            mix,
            config,
            clients,
            client_timeout: Duration::from_millis(rng.gen_range(150..1000)),
            think: Duration::from_millis(rng.gen_range(0..30)),
            base_delay,
            jitter: Duration::from_micros(rng.gen_range(0..=base_delay.as_micros() as u64)),
            tick: Duration::from_millis(5),
            fault_phase: Some(fault_phase),
            liveness_bound: self.liveness_bound,
            heal_all: scripted,
            payload_len: None,
            bench_updates: None,
            record_latencies: true,
            script: self.script.clone(),
            verbose: self.verbose,
            driven_clients: None,
            ext: self.ext.draw(self.seed, self.profile, scripted),
        };
        if !scripted {
            self.ext
                .workload
                .apply(&mut params, self.clients, self.fault_phase);
        }
        let election_name = (self.election)(NodeId(0), n).name();
        let mut world = World::new(params, rng, self.election.clone());
        if self.verbose > 0 {
            println!(
                "seed {} nodes {} election {} durability {:?} aggregation {} clients {} snapshot {:?} window {} faults: {}",
                self.seed,
                n,
                election_name,
                durability,
                aggregation,
                clients,
                world.p.config.snapshot_interval,
                world.p.config.window,
                world.p.mix.describe()
            );
            println!("{}", world.describe_sched());
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
        if let Err(payload) = outcome {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_string());
            world.violation(ViolationKind::Panic, format!("panic: {msg}"));
        }
        world.into_report(election_name, self.replay_command())
    }
}

/// The command-line name of a durability mode.
pub fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::None => "none",
        Durability::Async => "async",
        Durability::Sync => "sync",
    }
}

/// The command-line name of a planted bug.
#[cfg(feature = "planted-bugs")]
pub fn planted_bug_name(b: PlantedBug) -> &'static str {
    match b {
        PlantedBug::SkipPrepare => "skip-prepare",
        PlantedBug::SendBeforeDurable => "send-before-durable",
        PlantedBug::AcceptLowerView => "accept-lower-view",
        PlantedBug::ExecuteDuplicate => "execute-duplicate",
        PlantedBug::MislabelledAccept => "mislabelled-accept",
        PlantedBug::SelfAcceptBeforeDurable => "self-accept-before-durable",
        PlantedBug::MinorityQuorum => "minority-quorum",
        PlantedBug::PrepareOkOmitsAccepted => "prepare-ok-omits-accepted",
        PlantedBug::SnapshotDropsClientTable => "snapshot-drops-client-table",
    }
}

/// Everything a world needs, after the seed's draws.
#[derive(Clone)]
pub(crate) struct Params {
    pub(crate) seed: u64,
    pub(crate) n: usize,
    pub(crate) mix: FaultMix,
    pub(crate) config: Config,
    pub(crate) clients: usize,
    pub(crate) client_timeout: Duration,
    pub(crate) think: Duration,
    pub(crate) base_delay: Duration,
    pub(crate) jitter: Duration,
    pub(crate) tick: Duration,
    /// None: no fault phase and no liveness phase (bench).
    pub(crate) fault_phase: Option<Duration>,
    pub(crate) liveness_bound: Duration,
    pub(crate) heal_all: bool,
    pub(crate) payload_len: Option<usize>,
    /// Bench: stop once this many slots are ordered; clients never time out.
    pub(crate) bench_updates: Option<u64>,
    pub(crate) record_latencies: bool,
    pub(crate) script: Vec<ScriptStep>,
    pub(crate) verbose: u8,
    /// Driven by a [`crate::SimCluster`]: clients sit at these servers (one each) and faults come
    /// only from the driver (a crashed server stays down until the driver restarts it).
    pub(crate) driven_clients: Option<Vec<NodeId>>,
    /// Scheduling mode, process faults, liveness set (`schedule.rs`).
    pub(crate) ext: SchedParams,
}

type SimReplica = Replica<SimStateMachine, Box<dyn LeaderElection>>;

struct Node {
    replica: Option<Box<SimReplica>>,
    gen: u32,
    /// Its storage (`disks.rs`).
    disk: Disk,
}

pub(crate) struct World {
    pub(crate) p: Params,
    now: Time,
    queue: EventQueue,
    rng: ChaCha8Rng,
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
    checker: Checker,
    pub(crate) counters: Counters,
    trace: u64,
    pub(crate) events: u64,
    dirty: u64,
    pub(crate) violations: Vec<Violation>,
    stop: bool,
    next_trim: u64,
    /// Per-server inboxes, clocks and process faults (`schedule.rs`, `nemesis.rs`).
    sched: Sched,
}

fn all_mask(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

impl World {
    pub(crate) fn new(p: Params, mut rng: ChaCha8Rng, factory: ElectionFactory) -> World {
        let n = p.n;
        let clients = Clients::new(&p, &mut rng);
        let checker = Checker::new(
            p.seed,
            p.payload_len,
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

    fn start(&mut self) {
        let n = self.p.n;
        for i in 0..n {
            self.boot(i);
        }
        self.start_clients();
        if let Some(phase) = self.p.fault_phase {
            let heal_at = Time::ZERO + phase;
            self.schedule(heal_at, Ev::Heal);
            self.live.end_limit = heal_at + self.p.liveness_bound + Duration::from_secs(1);
            let crash_ok = self.p.mix.crashes && self.p.config.durability == Durability::Sync;
            if self.p.script.is_empty() && (crash_ok || !self.p.mix.partitions.is_empty()) {
                let first = self.exp_delay();
                self.schedule(Time::ZERO + first, Ev::Chaos);
            }
            for (i, s) in self.p.script.clone().iter().enumerate() {
                self.schedule(Time::ZERO + s.at, Ev::Script { index: i as u32 });
            }
            if self.p.script.is_empty() {
                self.start_nemesis();
            }
        }
    }

    fn fold_metrics(counters: &mut Counters, m: &Metrics) {
        counters.views_installed += m.views_installed;
        counters.reconciliations += m.recon_requests;
        counters.snapshots_taken += m.snapshots_taken;
        counters.snapshots_installed += m.snapshots_installed;
        counters.floor_wait_stalls += m.floor_wait_stalls;
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

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

    fn process(&mut self, at: Time, ev: Ev) {
        self.events += 1;
        self.trace = mix(mix(self.trace, at.0), ev.code());
        self.handle(ev);
    }

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

    fn drain(&mut self, i: usize) {
        let Some(mut r) = self.nodes[i].replica.take() else {
            return;
        };
        while let Some(b) = r.poll_persist() {
            self.write(i, b);
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
        if let Some(target) = self.p.bench_updates {
            if self.checker.ordered() >= target {
                self.stop = true;
            }
        }
    }

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
