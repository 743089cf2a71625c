//! Process faults that create backlogs and skew (issue #11 item 2): pauses, clock-rate skew,
//! forward clock jumps and slow-disk episodes (testing.md (a), *Faults*: "pause; clock skew
//! (per-node tick-rate multiplier, jumps)"; slow disks stand in for storage latency faults).
//!
//! * **Pause**: a server stops (a GC pause, a descheduled VM, `SIGSTOP`) for 5 ms up to
//!   `pause_max` (log-uniform). Messages, persistence completions, client submissions and one
//!   coalesced tick queue in its inbox ([`super::schedule`]); its disk keeps syncing. When it
//!   resumes it works the backlog off in the seed's scheduling mode. A crash ends a pause (the
//!   inbox is lost).
//! * **Clock-rate skew**: each server's clock runs, with probability ½, at a rate drawn
//!   log-uniformly in ×0.5–×2 for the whole run: its timers and its tick period (5 ms on its own
//!   clock) scale with it.
//! * **Clock jump**: a server's clock jumps forward by 10 ms up to `jump_max` (log-uniform): every
//!   timer that would have expired in between expires at its next input.
//! * **Slow disk**: one server's syncs are 10–100× slower for 0.2–3 s (the syncs stay in order).
//!
//! Each kind runs as a chain of events with exponential gaps (the seed's mean interval) during the
//! fault phase only; pauses end when the fault phase does. Draws come from the scheduler's RNG.

use super::schedule::SchedEv;
use super::{Ev, World};
use crate::faults::FaultProfile;
use rand::Rng;
use std::time::Duration;

/// The process faults of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFaults {
    /// Mean virtual time between two process pauses (`None`: no pauses).
    pub pause_interval: Option<Duration>,
    /// Longest pause.
    pub pause_max: Duration,
    /// Per-server clock rates drawn in ×0.5–×2 (otherwise every clock keeps true time).
    pub clock_skew: bool,
    /// Mean time between two forward clock jumps (`None`: none).
    pub jump_interval: Option<Duration>,
    /// Largest jump.
    pub jump_max: Duration,
    /// Mean time between two slow-disk episodes (`None`: none).
    pub slow_disk_interval: Option<Duration>,
}

impl NodeFaults {
    /// No process faults.
    pub fn none() -> NodeFaults {
        NodeFaults {
            pause_interval: None,
            pause_max: Duration::ZERO,
            clock_skew: false,
            jump_interval: None,
            jump_max: Duration::ZERO,
            slow_disk_interval: None,
        }
    }

    /// Every kind, often: a pause every 400 ms (up to 3 s), skewed clocks, a jump every 800 ms
    /// (up to 3 s), a slow-disk episode every 800 ms.
    pub fn everything() -> NodeFaults {
        NodeFaults {
            pause_interval: Some(Duration::from_millis(400)),
            pause_max: Duration::from_secs(3),
            clock_skew: true,
            jump_interval: Some(Duration::from_millis(800)),
            jump_max: Duration::from_secs(3),
            slow_disk_interval: Some(Duration::from_millis(800)),
        }
    }

    /// Only process pauses, every `interval` on average, each up to `max`.
    pub fn pauses(interval: Duration, max: Duration) -> NodeFaults {
        NodeFaults {
            pause_interval: Some(interval),
            pause_max: max,
            ..NodeFaults::none()
        }
    }

    /// Draws a seed's process faults: under `light` each kind with probability ¼ and milder,
    /// under `heavy` and `all` each with probability ½; none under `none`.
    pub(crate) fn draw(profile: FaultProfile, rng: &mut impl Rng) -> NodeFaults {
        let (p_on, light) = match profile {
            FaultProfile::None => return NodeFaults::none(),
            FaultProfile::Light => (0.25, true),
            FaultProfile::Heavy | FaultProfile::All => (0.5, false),
        };
        let ms = |rng: &mut dyn rand::RngCore, lo: u64, hi: u64| {
            Duration::from_millis(rng.gen_range(lo..hi))
        };
        let pause_interval = if light {
            ms(rng, 1000, 3000)
        } else {
            ms(rng, 300, 1500)
        };
        let pause_max = if light {
            Duration::from_millis(300)
        } else {
            ms(rng, 200, 3000)
        };
        let jump_interval = ms(rng, 500, 3000);
        let jump_max = ms(rng, 100, 5000);
        let slow_disk_interval = ms(rng, 500, 3000);
        NodeFaults {
            pause_interval: rng.gen_bool(p_on).then_some(pause_interval),
            pause_max,
            clock_skew: rng.gen_bool(p_on),
            jump_interval: rng.gen_bool(p_on).then_some(jump_interval),
            jump_max,
            slow_disk_interval: rng.gen_bool(p_on).then_some(slow_disk_interval),
        }
    }

    /// The named sets of the command line (`off`, `pauses`, `everything`).
    pub fn named(name: &str) -> Option<NodeFaults> {
        match name {
            "off" => Some(NodeFaults::none()),
            "pauses" => Some(NodeFaults::pauses(
                Duration::from_millis(400),
                Duration::from_secs(2),
            )),
            "everything" => Some(NodeFaults::everything()),
            _ => None,
        }
    }

    /// The command-line name of this set, if it is a named one.
    pub fn name(&self) -> Option<&'static str> {
        ["off", "pauses", "everything"]
            .into_iter()
            .find(|n| NodeFaults::named(n).as_ref() == Some(self))
    }

    /// Whether any kind is on.
    pub fn any(&self) -> bool {
        self.pause_interval.is_some()
            || self.clock_skew
            || self.jump_interval.is_some()
            || self.slow_disk_interval.is_some()
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| d.as_millis().to_string());
        format!(
            "pauses={}ms/max {}ms skew={} jumps={}ms/max {}ms slow_disk={}ms",
            ms(self.pause_interval),
            self.pause_max.as_millis(),
            self.clock_skew,
            ms(self.jump_interval),
            self.jump_max.as_millis(),
            ms(self.slow_disk_interval)
        )
    }
}

fn log_uniform(rng: &mut impl Rng, lo: Duration, hi: Duration) -> Duration {
    let (lo, hi) = (lo.as_secs_f64(), hi.as_secs_f64().max(lo.as_secs_f64()));
    if hi <= lo {
        return Duration::from_secs_f64(lo);
    }
    Duration::from_secs_f64(lo * (hi / lo).powf(rng.gen_range(0.0..=1.0)))
}

impl World {
    fn nemesis_gap(&mut self, mean: Duration) -> Duration {
        let u: f64 = self.sched.rng.gen_range(1e-9..1.0);
        Duration::from_secs_f64((-u.ln() * mean.as_secs_f64()).clamp(0.001, 60.0))
    }

    fn nemesis_next(&mut self, mean: Option<Duration>, ev: SchedEv) {
        if let Some(mean) = mean {
            let gap = self.nemesis_gap(mean);
            self.schedule(self.now + gap, Ev::Sched(ev));
        }
    }

    /// Starts the seed's fault chains (fault phase of a random run).
    pub(super) fn start_nemesis(&mut self) {
        let f = self.sched.faults.clone();
        self.nemesis_next(f.pause_interval, SchedEv::Pause);
        self.nemesis_next(f.jump_interval, SchedEv::Jump);
        self.nemesis_next(f.slow_disk_interval, SchedEv::SlowDisk);
    }

    fn random_node(&mut self, leader_bias: bool) -> usize {
        match self.current_leader() {
            Some(l) if leader_bias && self.sched.rng.gen_bool(0.4) => l,
            _ => self.sched.rng.gen_range(0..self.p.n),
        }
    }

    pub(super) fn handle_nemesis(&mut self, ev: SchedEv) {
        match ev {
            SchedEv::Run { .. } => {}
            SchedEv::Pause => {
                if !self.in_fault_phase() {
                    return;
                }
                let i = self.random_node(true);
                let max = self.sched.faults.pause_max;
                let d = log_uniform(&mut self.sched.rng, Duration::from_millis(5), max);
                if self.alive(i) && !self.sched.nodes[i].paused {
                    let s = &mut self.sched.nodes[i];
                    s.paused = true;
                    s.pause_id += 1;
                    let id = s.pause_id;
                    self.sched.counters.pauses += 1;
                    self.log(1, || format!("pause n{i} for {d:?}"));
                    let ev = SchedEv::Resume { node: i as u8, id };
                    self.schedule(self.now + d, Ev::Sched(ev));
                }
                self.nemesis_next(self.sched.faults.pause_interval, SchedEv::Pause);
            }
            SchedEv::Resume { node, id } => {
                let i = node as usize;
                let s = &mut self.sched.nodes[i];
                if s.paused && s.pause_id == id {
                    s.paused = false;
                    self.log(1, || format!("resume n{i}"));
                    self.kick(i, false);
                }
            }
            SchedEv::Jump => {
                if !self.in_fault_phase() {
                    return;
                }
                let i = self.random_node(true);
                let max = self.sched.faults.jump_max;
                let d = log_uniform(&mut self.sched.rng, Duration::from_millis(10), max);
                let local = self.local_now(i);
                let s = &mut self.sched.nodes[i];
                s.anchor_local = local + d;
                s.anchor_global = self.now;
                self.sched.counters.clock_jumps += 1;
                self.log(1, || format!("clock of n{i} jumps {d:?} forward"));
                self.nemesis_next(self.sched.faults.jump_interval, SchedEv::Jump);
            }
            SchedEv::SlowDisk => {
                if !self.in_fault_phase() {
                    return;
                }
                let i = self.random_node(false);
                let factor = self.sched.rng.gen_range(10..=100);
                let d = Duration::from_millis(self.sched.rng.gen_range(200..3000));
                // A shared disk (one volume under every server, a noisy neighbour): the stall
                // hits all of them at once, as a 1.6 s fdatasync did on both live servers of the
                // real 1 GiB scenario (issue #13, Config::storage_stall).
                let shared = self.sched.rng.gen_bool(0.3);
                let hit = if shared {
                    0..self.nodes.len()
                } else {
                    i..i + 1
                };
                for j in hit {
                    let s = &mut self.sched.nodes[j];
                    s.disk_factor = factor;
                    s.disk_id += 1;
                    let id = s.disk_id;
                    let ev = SchedEv::SlowDiskEnd { node: j as u8, id };
                    self.schedule(self.now + d, Ev::Sched(ev));
                }
                self.sched.counters.slow_disk_episodes += 1;
                if shared {
                    self.sched.counters.shared_disk_episodes += 1;
                    self.log(1, || {
                        format!("every disk {factor}x slower for {d:?} (shared disk)")
                    });
                } else {
                    self.log(1, || format!("disk of n{i} {factor}x slower for {d:?}"));
                }
                self.nemesis_next(self.sched.faults.slow_disk_interval, SchedEv::SlowDisk);
            }
            SchedEv::SlowDiskEnd { node, id } => {
                let s = &mut self.sched.nodes[node as usize];
                if s.disk_id == id {
                    s.disk_factor = 1;
                }
            }
        }
    }

    /// The fault phase ended: every paused server resumes.
    pub(super) fn nemesis_heal(&mut self) {
        for i in 0..self.p.n {
            let s = &mut self.sched.nodes[i];
            if s.paused {
                s.paused = false;
                s.pause_id += 1;
                self.kick(i, false);
            }
        }
    }

    /// The sync delay of server `i` under its current slow-disk episode.
    pub(super) fn disk_delay(&self, i: usize, delay_ns: u64) -> u64 {
        delay_ns.saturating_mul(self.sched.nodes[i].disk_factor)
    }
}
