//! Scheduling: how a server's inputs are grouped into rounds (issue #11 item 2; testing.md (a),
//! *Harness*: the discrete-event queue feeds each core its deliveries, ticks and completions, and
//! *Faults*: "pause", whose backlogs these rounds work off).
//!
//! The core's call contract (TR §4's event loop, made sans-IO) is: feed any number of inputs,
//! then drain (`poll_persist`, `poll_message`, `poll_executed`, `poll_client_reply`). What the
//! core buffers between the two (aggregated proposals and accepts, the open persist batch) is
//! exactly where a round with several inputs can go wrong, so the simulator must produce the
//! rounds `paxos-node`'s driver produces: it handles one event, then whatever else is ready, up
//! to 1024 events, before it drains.
//!
//! Every server has an inbox. An input (a delivered message, a tick, a persistence completion, a
//! client submission) that reaches a server goes into it; a *round* takes inputs off the front,
//! feeds them in order, and drains the server once. Per seed one [`ScheduleMode`] decides how
//! many inputs a round takes:
//!
//! * [`ScheduleMode::One`]: one input per round. A server that is not paused and has nothing
//!   queued handles the input at once (no inbox), and the inputs of one virtual instant are
//!   drained together, exactly as the simulator did before the inboxes existed: with no
//!   process faults, `One` reproduces the earlier traces bit for bit.
//! * [`ScheduleMode::K`]: each round takes `k` inputs, `k` drawn per round, log-uniformly in
//!   `1..=1024` (the driver's limit).
//! * [`ScheduleMode::Backlog`]: each round takes the whole backlog.
//!
//! With `K` and `Backlog` a server's first round after idling starts up to `wake_max` after the
//! input arrived (per seed: 0, 20 µs, 100 µs, 0.5 ms or 2 ms), and a busy server's next round up
//! to `gap_max` after the previous one (0, 1 µs or 10 µs), so inputs pile up as they do behind a
//! busy event loop; process pauses ([`super::nemesis`]) create backlogs of seconds. Ticks are
//! coalesced like tokio's `MissedTickBehavior::Delay`: at most one tick waits in an inbox. The
//! driver handles a tick in a round of its own; the simulator may put a tick in a round with
//! other inputs, which the call contract allows (a superset of the driver's rounds).
//!
//! The draws of this module, of [`super::nemesis`] and [`super::stable`] come from a second RNG
//! seeded from the run's seed, so the first RNG's stream (and every earlier draw) is unchanged.

use super::nemesis::NodeFaults;
use super::stable::LivenessSet;
use super::{Ev, Simulation, World};
use crate::faults::FaultProfile;
use paxos_core::{BatchId, ClientUpdate, Message, NodeId, Time};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How many of its queued inputs a server handles before it drains (one round).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScheduleMode {
    /// One input per round (the simulator's scheduling before inboxes existed).
    One,
    /// `k` inputs per round, `k` drawn per round in `1..=1024`.
    K,
    /// The whole backlog in one round.
    Backlog,
}

impl ScheduleMode {
    /// Every mode, in draw order.
    pub const ALL: [ScheduleMode; 3] = [ScheduleMode::One, ScheduleMode::K, ScheduleMode::Backlog];

    /// The command-line name (`one`, `k`, `backlog`).
    pub fn name(self) -> &'static str {
        match self {
            ScheduleMode::One => "one",
            ScheduleMode::K => "k",
            ScheduleMode::Backlog => "backlog",
        }
    }
}

impl fmt::Display for ScheduleMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScheduleMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScheduleMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown schedule {s:?} (one|k|backlog)"))
    }
}

/// How much work a seed gives its clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Workload {
    /// The draws of the simulator before issue #11: 1..=2N clients, think time 0–30 ms, a fault
    /// phase of 2–5 s (about 66 completed updates per seed at N = 3 under the `all` profile).
    Classic,
    /// The classic draws, then twice the clients (2..=4N), a third of the think time and a fault
    /// phase 1.5 times as long (3–7.5 s).
    #[default]
    Long,
}

impl Workload {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Classic => "classic",
            Workload::Long => "long",
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(Workload::Classic),
            "long" => Ok(Workload::Long),
            _ => Err(format!("unknown workload {s:?} (classic|long)")),
        }
    }
}

/// The options of [`Simulation`] this module and its siblings add (`None`: drawn per seed).
#[derive(Clone, Debug, Default)]
pub(crate) struct SchedOptions {
    pub(crate) mode: Option<ScheduleMode>,
    pub(crate) node_faults: Option<NodeFaults>,
    pub(crate) liveness: Option<LivenessSet>,
    pub(crate) workload: Workload,
}

/// One seed's scheduling and process-fault draws.
#[derive(Clone, Debug)]
pub(crate) struct SchedParams {
    pub(crate) mode: ScheduleMode,
    /// Longest delay (ns) before an idle server's round (`K`, `Backlog`, and after a pause).
    pub(crate) wake_max: u64,
    /// Longest gap (ns) between two rounds of a busy server.
    pub(crate) gap_max: u64,
    pub(crate) faults: NodeFaults,
    /// Fixed liveness set, or drawn when the fault phase ends.
    pub(crate) liveness: Option<LivenessSet>,
    pub(crate) rng: ChaCha8Rng,
}

fn second_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.rotate_left(29) ^ 0x5343_4845_4455_4c45)
}

impl SchedParams {
    /// The scheduling of every run before issue #11: one input per round, no process faults,
    /// the stable component.
    pub(crate) fn classic(seed: u64) -> SchedParams {
        SchedParams {
            mode: ScheduleMode::One,
            wake_max: 0,
            gap_max: 0,
            faults: NodeFaults::none(),
            liveness: Some(LivenessSet::Component),
            rng: second_rng(seed),
        }
    }

    /// `One` with no process faults unless `options` fix them (a [`crate::SimCluster`] run).
    pub(crate) fn driven(seed: u64, options: &SchedOptions) -> SchedParams {
        let mut p = SchedParams::classic(seed);
        p.mode = options.mode.unwrap_or(ScheduleMode::One);
        if p.mode != ScheduleMode::One {
            p.wake_max = 100_000;
            p.gap_max = 1_000;
        }
        if let Some(f) = &options.node_faults {
            p.faults = f.clone();
        }
        p
    }
}

impl SchedOptions {
    /// Draws one seed's scheduling: every draw is made (in a fixed order) whether or not an
    /// option fixes it, so fixing one option does not change the others.
    pub(crate) fn draw(&self, seed: u64, profile: FaultProfile, scripted: bool) -> SchedParams {
        let mut rng = second_rng(seed);
        let mode = ScheduleMode::ALL[rng.gen_range(0..3)];
        let wake_max = [0, 20_000, 100_000, 500_000, 2_000_000][rng.gen_range(0..5)];
        let gap_max = [0, 1_000, 10_000][rng.gen_range(0..3)];
        let faults = NodeFaults::draw(profile, &mut rng);
        SchedParams {
            mode: self.mode.unwrap_or(mode),
            wake_max,
            gap_max,
            faults: match (&self.node_faults, scripted) {
                (Some(f), _) => f.clone(),
                (None, true) => NodeFaults::none(),
                (None, false) => faults,
            },
            liveness: self.liveness,
            rng,
        }
    }

    /// The replay flags of the fixed options.
    pub(crate) fn flags(&self) -> String {
        let mut s = String::new();
        if let Some(m) = self.mode {
            s.push_str(&format!(" --schedule {m}"));
        }
        if let Some(f) = &self.node_faults {
            match f.name() {
                Some(name) => s.push_str(&format!(" --node-faults {name}")),
                None => s.push_str("  # (custom node faults: replay through the library)"),
            }
        }
        if let Some(l) = self.liveness {
            s.push_str(&format!(" --liveness {}", l.name()));
        }
        if self.workload != Workload::default() {
            s.push_str(&format!(" --workload {}", self.workload.name()));
        }
        s
    }
}

impl Simulation {
    /// Fixes the scheduling mode of every server (default: drawn per seed, each mode ⅓).
    pub fn schedule(mut self, mode: ScheduleMode) -> Simulation {
        self.ext.mode = Some(mode);
        self
    }

    /// Fixes the process faults (default: drawn per seed from the fault profile).
    pub fn node_faults(mut self, faults: NodeFaults) -> Simulation {
        self.ext.node_faults = Some(faults);
        self
    }

    /// Fixes what the liveness phase keeps stable (default: drawn when the phase starts).
    pub fn liveness_set(mut self, set: LivenessSet) -> Simulation {
        self.ext.liveness = Some(set);
        self
    }

    /// The workload of every seed (default [`Workload::Long`]).
    pub fn workload(mut self, workload: Workload) -> Simulation {
        self.ext.workload = workload;
        self
    }

    /// The simulator as it was before issue #11: one input per round, no process faults, the
    /// stable component, the classic workload. Runs reproduce the traces of that simulator.
    pub fn classic(self) -> Simulation {
        self.schedule(ScheduleMode::One)
            .node_faults(NodeFaults::none())
            .liveness_set(LivenessSet::Component)
            .workload(Workload::Classic)
    }
}

/// One input of a server.
pub(crate) enum Input {
    Tick,
    Message {
        from: NodeId,
        msg: Message,
    },
    Persisted(BatchId),
    Client(ClientUpdate),
    /// A snapshot job finished off the loop (`Config::snapshot_off_loop`).
    SnapshotBuilt(Box<paxos_core::Snapshot>),
}

/// Scheduler events.
pub(crate) enum SchedEv {
    /// A round of `node` (ignored if the server restarted since).
    Run { node: u8, gen: u32 },
    /// The next process pause of the seed.
    Pause,
    /// The end of pause `id` of `node`.
    Resume { node: u8, id: u32 },
    /// The next forward clock jump.
    Jump,
    /// The next slow-disk episode.
    SlowDisk,
    /// The end of slow-disk episode `id` of `node`.
    SlowDiskEnd { node: u8, id: u32 },
}

impl SchedEv {
    pub(crate) fn code(&self) -> u64 {
        match self {
            SchedEv::Run { node, .. } => u64::from(*node) << 8,
            SchedEv::Pause => 1,
            SchedEv::Resume { node, id } => 2 | u64::from(*node) << 8 | u64::from(*id) << 16,
            SchedEv::Jump => 3,
            SchedEv::SlowDisk => 4,
            SchedEv::SlowDiskEnd { node, id } => 5 | u64::from(*node) << 8 | u64::from(*id) << 16,
        }
    }
}

/// One server's scheduling state.
#[derive(Default)]
pub(crate) struct NodeSched {
    inbox: VecDeque<Input>,
    tick_queued: bool,
    run_pending: bool,
    pub(crate) paused: bool,
    pub(crate) pause_id: u32,
    /// Clock rate in permille of true time.
    pub(crate) rate: u64,
    pub(crate) anchor_global: Time,
    pub(crate) anchor_local: Time,
    /// Sync delay multiplier of the current slow-disk episode (1: none).
    pub(crate) disk_factor: u64,
    pub(crate) disk_id: u32,
}

/// Scheduling counters (folded into [`crate::Counters`]).
#[derive(Default)]
pub(crate) struct SchedCounters {
    pub(crate) multi_input_rounds: u64,
    pub(crate) max_round: u64,
    pub(crate) pauses: u64,
    pub(crate) clock_jumps: u64,
    pub(crate) slow_disk_episodes: u64,
    pub(crate) shared_disk_episodes: u64,
    pub(crate) majority_set_phases: u64,
}

/// The world's scheduler.
pub(crate) struct Sched {
    pub(crate) mode: ScheduleMode,
    wake_max: u64,
    gap_max: u64,
    pub(crate) faults: NodeFaults,
    pub(crate) liveness: Option<LivenessSet>,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) nodes: Vec<NodeSched>,
    pub(crate) counters: SchedCounters,
}

impl Sched {
    pub(crate) fn new(p: &SchedParams, n: usize) -> Sched {
        let mut rng = p.rng.clone();
        let nodes = (0..n)
            .map(|_| {
                let rate = if p.faults.clock_skew && rng.gen_bool(0.5) {
                    // Log-uniform in [×0.5, ×2].
                    (1000.0 * 2f64.powf(rng.gen_range(-1.0..=1.0))).round() as u64
                } else {
                    1000
                };
                NodeSched {
                    rate,
                    disk_factor: 1,
                    ..NodeSched::default()
                }
            })
            .collect();
        Sched {
            mode: p.mode,
            wake_max: p.wake_max,
            gap_max: p.gap_max,
            faults: p.faults.clone(),
            liveness: p.liveness,
            rng,
            nodes,
            counters: SchedCounters::default(),
        }
    }
}

impl World {
    /// Server `i`'s clock (its rate and jumps applied); equal to virtual time without skew.
    pub(super) fn local_now(&self, i: usize) -> Time {
        let c = &self.sched.nodes[i];
        if c.rate == 1000 && c.anchor_local == c.anchor_global {
            return self.now;
        }
        let elapsed = u128::from((self.now - c.anchor_global).as_nanos() as u64);
        let scaled = elapsed * u128::from(c.rate) / 1000;
        Time(
            c.anchor_local
                .0
                .saturating_add(scaled.min(u128::from(u64::MAX)) as u64),
        )
    }

    /// Virtual time between two ticks of server `i` (its tick period on its own clock).
    pub(super) fn tick_period(&self, i: usize) -> Duration {
        let rate = self.sched.nodes[i].rate;
        if rate == 1000 {
            return self.p.tick;
        }
        Duration::from_nanos((self.p.tick.as_nanos() as u64).saturating_mul(1000) / rate.max(1))
    }

    /// An input reaches server `i`: handled now (`One`, nothing queued, not paused) or queued.
    pub(super) fn input(&mut self, i: usize, input: Input) {
        let s = &mut self.sched.nodes[i];
        let tick = matches!(input, Input::Tick);
        if tick && s.tick_queued {
            return;
        }
        if self.sched.mode == ScheduleMode::One && !s.paused && s.inbox.is_empty() {
            self.apply_input(i, input);
            return;
        }
        s.tick_queued |= tick;
        s.inbox.push_back(input);
        self.kick(i, false);
    }

    /// Schedules a round of `i` if it has queued inputs and none is scheduled.
    pub(super) fn kick(&mut self, i: usize, busy: bool) {
        let s = &mut self.sched.nodes[i];
        if s.run_pending || s.paused || s.inbox.is_empty() {
            return;
        }
        s.run_pending = true;
        let max = if busy {
            self.sched.gap_max
        } else {
            self.sched.wake_max
        };
        let d = if max == 0 {
            0
        } else {
            self.sched.rng.gen_range(0..=max)
        };
        let gen = self.nodes[i].gen;
        let ev = Ev::Sched(SchedEv::Run { node: i as u8, gen });
        self.schedule(self.now + Duration::from_nanos(d), ev);
    }

    /// One round of server `i`: its inputs off the inbox, then one drain.
    pub(super) fn round(&mut self, i: usize, gen: u32) {
        if self.nodes[i].gen != gen {
            return;
        }
        let s = &mut self.sched.nodes[i];
        s.run_pending = false;
        if s.paused || self.nodes[i].replica.is_none() {
            return;
        }
        let len = s.inbox.len();
        let k = match self.sched.mode {
            ScheduleMode::One => 1,
            // Log-uniform in 1..=1024.
            ScheduleMode::K => 2f64.powf(self.sched.rng.gen_range(0.0..=10.0)).floor() as usize,
            ScheduleMode::Backlog => len,
        }
        .min(len);
        for _ in 0..k {
            let Some(input) = self.sched.nodes[i].inbox.pop_front() else {
                break;
            };
            if matches!(input, Input::Tick) {
                self.sched.nodes[i].tick_queued = false;
            }
            self.apply_input(i, input);
            if self.stop {
                return;
            }
        }
        let c = &mut self.sched.counters;
        if k >= 2 {
            c.multi_input_rounds += 1;
        }
        c.max_round = c.max_round.max(k as u64);
        self.dirty &= !(1 << i);
        self.drain(i);
        self.kick(i, true);
    }

    /// Feeds one input to server `i`'s replica, at `i`'s clock.
    fn apply_input(&mut self, i: usize, input: Input) {
        let now = self.now;
        let t = self.local_now(i);
        let verbose = self.p.verbose;
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return;
        };
        match input {
            Input::Tick => {
                if verbose >= 2 {
                    println!("{now} tick n{i}");
                }
                r.handle_tick(t);
            }
            Input::Message { from, msg } => {
                if verbose >= 3 {
                    println!("{now} n{} -> n{i} {msg:?}", from.0);
                } else if verbose >= 2 {
                    println!("{now} n{} -> n{i} {}", from.0, msg.kind());
                }
                r.handle_message(t, from, msg);
            }
            Input::Persisted(id) => r.handle_persisted(t, id),
            Input::SnapshotBuilt(snap) => r.handle_snapshot_built(t, *snap),
            Input::Client(u) => {
                let c = u.client_id.0;
                if let Err(e) = r.handle_client_update(t, u) {
                    self.violation(
                        super::ViolationKind::Codec,
                        format!("n{i} refused client {c}: {e}"),
                    );
                }
            }
        }
        self.dirty |= 1 << i;
    }

    /// Server `i` crashed: what it had queued is lost with it.
    pub(super) fn sched_crash(&mut self, i: usize) {
        let s = &mut self.sched.nodes[i];
        let lost = s
            .inbox
            .iter()
            .filter(|x| matches!(x, Input::Message { .. }))
            .count();
        s.inbox.clear();
        s.tick_queued = false;
        s.run_pending = false;
        s.paused = false;
        s.pause_id += 1;
        self.counters.messages_dropped += lost as u64;
    }

    /// Handles a scheduler event.
    pub(super) fn handle_sched(&mut self, ev: SchedEv) {
        match ev {
            SchedEv::Run { node, gen } => self.round(node as usize, gen),
            other => self.handle_nemesis(other),
        }
    }
}

impl World {
    /// Adds the scheduler's counters to the run's.
    pub(super) fn fold_sched_counters(&mut self) {
        let s = &self.sched.counters;
        let c = &mut self.counters;
        c.multi_input_rounds = s.multi_input_rounds;
        c.max_round = s.max_round;
        c.pauses = s.pauses;
        c.clock_jumps = s.clock_jumps;
        c.slow_disk_episodes = s.slow_disk_episodes;
        c.shared_disk_episodes = s.shared_disk_episodes;
        c.majority_set_phases = s.majority_set_phases;
    }
}

impl Workload {
    /// Scales the classic draws in `p` (options that fix them are left alone).
    pub(super) fn apply(
        self,
        p: &mut super::Params,
        clients: Option<usize>,
        fault_phase: Option<Duration>,
    ) {
        if self == Workload::Classic {
            return;
        }
        if clients.is_none() {
            p.clients *= 2;
        }
        p.think /= 3;
        if fault_phase.is_none() {
            if let super::Mode::Random { fault_phase } = &mut p.mode {
                *fault_phase = *fault_phase * 3 / 2;
            }
        }
    }
}

impl World {
    /// A one-line description of the seed's scheduling and process faults, for logs.
    pub(super) fn describe_sched(&self) -> String {
        let rates: Vec<String> = self
            .sched
            .nodes
            .iter()
            .map(|s| format!("{:.2}", s.rate as f64 / 1000.0))
            .collect();
        format!(
            "schedule {} wake<={}us gap<={}us clock rates [{}] node faults: {}",
            self.sched.mode,
            self.sched.wake_max / 1000,
            self.sched.gap_max / 1000,
            rates.join(" "),
            self.sched.faults.describe()
        )
    }
}
