//! The builder of a run ([`Simulation`]) and the seed's draws: the fault mix, durability, the
//! replica's knobs, the clients and the network delays (testing.md (a), *Harness*: "fault mix
//! drawn per seed (swarm)"; "on failure print seed; replay" is [`Simulation::replay_command`]).
//!
//! Every draw is made from the run's RNG in a fixed order, so a seed always gets the same run;
//! the scheduling draws come from a second RNG (`schedule.rs`), so adding them changed none of
//! these.

use super::{SchedOptions, SchedParams, ScriptStep, World};
use crate::faults::{FaultMix, FaultProfile};
use crate::report::{RunReport, ViolationKind};
use paxos_core::{Config, Durability, LeaderElection, NodeId, PsbConfig, PsbViewChange};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
    pub(super) nodes: usize,
    pub(super) seed: u64,
    pub(super) profile: FaultProfile,
    pub(super) mix: Option<FaultMix>,
    pub(super) election: ElectionFactory,
    pub(super) election_flag: Option<String>,
    pub(super) durability: Option<Durability>,
    pub(super) aggregation: Option<bool>,
    pub(super) snapshot_interval: Option<Option<u64>>,
    /// Client sessions forced on or off (None: drawn per seed).
    pub(super) sessions: Option<bool>,
    /// Applied to every replica's configuration after the per-seed draws (library only).
    pub(super) tune: Option<fn(&mut Config)>,
    pub(super) clients: Option<usize>,
    pub(super) fault_phase: Option<Duration>,
    pub(super) liveness_bound: Duration,
    pub(super) script: Vec<ScriptStep>,
    pub(super) verbose: u8,
    /// Scheduling, process faults, liveness set, workload (`schedule.rs`).
    pub(super) ext: SchedOptions,
    #[cfg(feature = "planted-bugs")]
    pub(super) planted_bug: Option<PlantedBug>,
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
            sessions: None,
            tune: None,
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

    /// Forces registered, expiring client sessions on or off (default: drawn per seed, with a
    /// short expiry and a session bound that is often below the number of clients).
    pub fn sessions(mut self, on: bool) -> Simulation {
        self.sessions = Some(on);
        self
    }

    /// Adjusts every replica's configuration after the per-seed draws (say, a small message
    /// limit and a wide window). Library only: a replay line cannot name it.
    pub fn tune(mut self, f: fn(&mut Config)) -> Simulation {
        self.tune = Some(f);
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
        if let Some(on) = self.sessions {
            s.push_str(if on {
                " --sessions on"
            } else {
                " --sessions off"
            });
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
    pub(super) fn draw_config(
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
        // State transfer and snapshot building, from a side stream so that the draws above and
        // after keep their values.
        let mut side = rng.clone();
        side.set_stream(0x5a);
        config.snapshot_off_loop = side.gen_bool(0.5);
        config.snapshot_chunk_bytes = [64, 700, 256 << 10][side.gen_range(0..3)];
        config.snapshot_window = [1, 3, 8][side.gen_range(0..3)];
        // Client sessions (issue #13): short expiries and small bounds, so that sessions expire
        // while their clients still run.
        let sessions_on = side.gen_bool(0.5);
        let rules = paxos_core::SessionRules {
            expire_after: Duration::from_millis([150, 600, 3000][side.gen_range(0..3)]),
            // Mostly above the client count: a bound below it starves the workload (clients
            // evict each other's sessions), which a few seeds still do on purpose.
            max_sessions: [1, 4, 16, 1000, 1000, 1000][side.gen_range(0..6)],
            max_result_bytes: [16, 1 << 20][side.gen_range(0..2)],
            clock_interval: Duration::from_millis([20, 100][side.gen_range(0..2)]),
        };
        config.sessions = self.sessions.unwrap_or(sessions_on).then_some(rules);
        if let Some(tune) = self.tune {
            tune(&mut config);
        }
        #[cfg(feature = "planted-bugs")]
        {
            config.planted_bug = self.planted_bug;
        }
        config
    }

    /// The parameters of a `mode` world with the draws made so far, then the network and client
    /// timings drawn from `rng` (base delay, client timeout, think time, jitter, in this order).
    pub(super) fn params(
        &self,
        rng: &mut ChaCha8Rng,
        mix: FaultMix,
        config: Config,
        clients: usize,
        mode: Mode,
        ext: SchedParams,
    ) -> Params {
        let base_delay = Duration::from_micros(rng.gen_range(100..2000));
        let client_timeout = Duration::from_millis(rng.gen_range(150..1000));
        let think = Duration::from_millis(rng.gen_range(0..30));
        let jitter = Duration::from_micros(rng.gen_range(0..=base_delay.as_micros() as u64));
        Params {
            seed: self.seed,
            n: self.nodes.max(1),
            mix,
            config,
            clients,
            client_timeout,
            think,
            base_delay,
            jitter,
            tick: Duration::from_millis(5),
            liveness_bound: self.liveness_bound,
            verbose: self.verbose,
            mode,
            ext,
        }
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
        let mode = if scripted {
            Mode::Scripted {
                fault_phase,
                script: self.script.clone(),
            }
        } else {
            Mode::Random { fault_phase }
        };
        let ext = self.ext.draw(self.seed, self.profile, scripted);
        let mut params = self.params(&mut rng, mix, config, clients, mode, ext);
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
            let msg = crate::sim::panic_message(payload.as_ref());
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
    b.name()
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
    pub(crate) liveness_bound: Duration,
    pub(crate) verbose: u8,
    /// What kind of run this is.
    pub(crate) mode: Mode,
    /// Scheduling mode, process faults, liveness set (`schedule.rs`).
    pub(crate) ext: SchedParams,
}

/// What kind of run a world is: where its faults come from, how it ends, what it records.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// A sweep seed: random faults (the mix's crashes and partitions, process faults) for
    /// `fault_phase`, then the liveness phase with a random stable set.
    Random { fault_phase: Duration },
    /// A fault script ([`Simulation::script`]) over `fault_phase`, then the liveness phase with
    /// every server healed and restarted.
    Scripted {
        fault_phase: Duration,
        script: Vec<ScriptStep>,
    },
    /// `--bench` ([`crate::Bench`]): no faults and no liveness phase; stops once `updates` slots
    /// are ordered. Clients are spread over the servers in turn, never time out and send
    /// `payload_len`-byte payloads; network and sync delays are fixed; latencies and leader
    /// changes are not recorded.
    Bench { updates: u64, payload_len: usize },
    /// Driven by a [`crate::SimCluster`]: one client at each of `clients`, faults only from the
    /// driver (a crashed server stays down until the driver restarts it), no phases, no end.
    Driven { clients: Vec<NodeId> },
}

impl Mode {
    /// The length of the fault phase, if the run has one (and then a liveness phase).
    pub(crate) fn fault_phase(&self) -> Option<Duration> {
        match self {
            Mode::Random { fault_phase } | Mode::Scripted { fault_phase, .. } => Some(*fault_phase),
            Mode::Bench { .. } | Mode::Driven { .. } => None,
        }
    }

    /// Whether this is a bench run.
    pub(crate) fn is_bench(&self) -> bool {
        matches!(self, Mode::Bench { .. })
    }

    /// Slots to order before a bench run stops.
    pub(crate) fn bench_target(&self) -> Option<u64> {
        match self {
            Mode::Bench { updates, .. } => Some(*updates),
            _ => None,
        }
    }

    /// The fixed payload length (bench), or `None` for lengths drawn per update.
    pub(crate) fn payload_len(&self) -> Option<usize> {
        match self {
            Mode::Bench { payload_len, .. } => Some(*payload_len),
            _ => None,
        }
    }

    /// Whether completed updates are recorded (runs with a liveness phase).
    pub(crate) fn records_latencies(&self) -> bool {
        self.fault_phase().is_some()
    }

    /// Whether the liveness phase keeps every server in the stable set (scripts).
    pub(crate) fn heals_all(&self) -> bool {
        matches!(self, Mode::Scripted { .. })
    }

    /// The fault script (empty unless scripted).
    pub(crate) fn script(&self) -> &[ScriptStep] {
        match self {
            Mode::Scripted { script, .. } => script,
            _ => &[],
        }
    }
}
