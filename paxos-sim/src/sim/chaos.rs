//! Crash and partition faults of the fault phase: the random chain drawn from the seed's
//! [`FaultMix`](crate::FaultMix), or a fixed script (testing.md (a), *Faults*: crash/restart,
//! partitions "isolate one, majority/minority, asymmetric one-way", flapping; *Scenario tests*:
//! the scripts of [`crate::scenarios`]).
//!
//! A random run draws its first fault after an exponential gap (the mix's mean interval) and
//! each fault draws the next ([`Ev::Chaos`]): with crashes on (and `Durability::Sync`) a crash
//! of a live server, often the leader, that restarts after 20 ms–1.5 s, or a partition of one of
//! the mix's kinds lasting 0.1–2 s. A scripted run has no random faults: each [`ScriptStep`]
//! happens at its time ([`Ev::Script`]). Process faults are in `nemesis.rs`, the end of the fault
//! phase in `liveness.rs`.

use super::{all_mask, Ev, Mode, World};
use crate::faults::PartitionKind;
use paxos_core::{Durability, NodeId, Time};
use rand::Rng;
use std::time::Duration;

/// Which server a scripted fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeSel {
    /// A fixed server.
    Node(NodeId),
    /// The current leader (the live server leading the highest installed view), if any.
    Leader,
}

/// A fault injected at a fixed time by a scripted scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptAction {
    /// Crash a server (its unsynced writes are lost). Only with `Durability::Sync` (scripts default
    /// to it); ignored otherwise, since crashing a server without stable storage is unsafe by design.
    Crash(NodeSel),
    /// Restart a crashed server.
    Restart(NodeSel),
    /// Cut a server off from all others, both ways.
    Isolate(NodeSel),
    /// Remove every partition.
    HealNetwork,
    /// Crash every server.
    CrashAll,
    /// Restart every crashed server.
    RestartAll,
}

/// One step of a scripted scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptStep {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// What happens.
    pub action: ScriptAction,
}

impl World {
    /// Schedules the run's faults: a random run's first random fault and its process-fault
    /// chains, or every step of a script.
    pub(super) fn start_faults(&mut self) {
        match &self.p.mode {
            Mode::Random { .. } => {
                let crash_ok = self.p.mix.crashes && self.p.config.durability == Durability::Sync;
                if crash_ok || !self.p.mix.partitions.is_empty() {
                    let first = self.exp_delay();
                    self.schedule(Time::ZERO + first, Ev::Chaos);
                }
                self.start_nemesis();
            }
            Mode::Scripted { script, .. } => {
                let times: Vec<Duration> = script.iter().map(|s| s.at).collect();
                for (i, at) in times.into_iter().enumerate() {
                    self.schedule(Time::ZERO + at, Ev::Script { index: i as u32 });
                }
            }
            Mode::Bench { .. } | Mode::Driven { .. } => {}
        }
    }

    /// The gap to the next random fault: exponential with the mix's mean, within 1 ms–60 s.
    pub(super) fn exp_delay(&mut self) -> Duration {
        let u: f64 = self.rng.gen_range(1e-9..1.0);
        let mean = self.p.mix.fault_interval.as_secs_f64();
        Duration::from_secs_f64((-u.ln() * mean).clamp(0.001, 60.0))
    }

    /// [`Ev::Chaos`]: the next random fault of the fault phase (a crash, restarted 20 ms–1.5 s
    /// later, or a partition of one of the mix's kinds), then schedules the one after.
    pub(super) fn chaos(&mut self) {
        if !self.in_fault_phase() || self.p.n < 2 {
            return;
        }
        let crash_ok = self.p.mix.crashes && self.p.config.durability == Durability::Sync;
        let kinds = self.p.mix.partitions.clone();
        let choices = usize::from(crash_ok) + usize::from(!kinds.is_empty());
        if choices == 0 {
            return;
        }
        let pick = self.rng.gen_range(0..choices);
        if crash_ok && pick == 0 {
            let leader = self.current_leader();
            let target = match leader {
                Some(l) if self.rng.gen_bool(0.4) => Some(l),
                _ => {
                    let alive: Vec<usize> = (0..self.p.n).filter(|&i| self.alive(i)).collect();
                    (!alive.is_empty()).then(|| alive[self.rng.gen_range(0..alive.len())])
                }
            };
            if let Some(i) = target {
                if self.crash(i) {
                    let down = Duration::from_millis(self.rng.gen_range(20..1500));
                    self.schedule(self.now + down, Ev::Restart { node: i as u8 });
                }
            }
        } else {
            let kind = kinds[self.rng.gen_range(0..kinds.len())];
            let lasts = Duration::from_millis(self.rng.gen_range(100..2000));
            let n = self.p.n;
            match kind {
                PartitionKind::IsolateOne => {
                    let x = match self.current_leader() {
                        Some(l) if self.rng.gen_bool(0.5) => l,
                        _ => self.rng.gen_range(0..n),
                    };
                    let masks = self.isolate_masks(x);
                    let id = self.add_partition(masks, Some(lasts));
                    self.log(1, || format!("partition {id}: isolate n{x}"));
                }
                PartitionKind::Split => {
                    let side = self.random_split();
                    let masks = self.split_masks(side);
                    let id = self.add_partition(masks, Some(lasts));
                    self.log(1, || format!("partition {id}: split {side:#b}"));
                }
                PartitionKind::OneWay => {
                    let x = match self.current_leader() {
                        Some(l) if self.rng.gen_bool(0.5) => l,
                        _ => self.rng.gen_range(0..n),
                    };
                    let outgoing = self.rng.gen_bool(0.5);
                    let masks: Vec<u64> = (0..n)
                        .map(|f| match (f == x, outgoing) {
                            (true, true) => all_mask(n) & !(1 << x),
                            (false, false) => 1 << x,
                            _ => 0,
                        })
                        .collect();
                    let id = self.add_partition(masks, Some(lasts));
                    self.log(1, || {
                        format!(
                            "partition {id}: n{x} cannot {}",
                            if outgoing { "send" } else { "receive" }
                        )
                    });
                }
                PartitionKind::Flapping => {
                    let side = self.random_split();
                    let masks = self.split_masks(side);
                    let id = self.add_partition(masks, None);
                    let left = self.rng.gen_range(3..12);
                    let gap = Duration::from_millis(self.rng.gen_range(20..300));
                    self.schedule(self.now + gap, Ev::Flap { id, left });
                    self.log(1, || format!("partition {id}: flapping split {side:#b}"));
                }
            }
        }
        let next = self.exp_delay();
        self.schedule(self.now + next, Ev::Chaos);
    }

    /// [`Ev::Restart`]: a server a random crash took down comes back, unless the fault phase
    /// ended with it outside the stable set.
    pub(super) fn restart_crashed(&mut self, i: usize) {
        if self.in_fault_phase() || self.live.in_stable(i) {
            self.boot(i);
        }
    }

    /// [`Ev::Script`]: step `index` of the fault script.
    pub(super) fn script_step(&mut self, index: usize) {
        let action = self.p.mode.script()[index].action;
        self.log(1, || format!("script {action:?}"));
        match action {
            ScriptAction::Crash(sel) => {
                if let Some(i) = self.resolve(sel) {
                    self.crash(i);
                }
            }
            ScriptAction::Restart(sel) => {
                if let Some(i) = self.resolve(sel) {
                    self.boot(i);
                }
            }
            ScriptAction::Isolate(sel) => {
                if let Some(i) = self.resolve(sel) {
                    let masks = self.isolate_masks(i);
                    self.add_partition(masks, None);
                }
            }
            ScriptAction::HealNetwork => self.net.clear_partitions(),
            ScriptAction::CrashAll => {
                for i in 0..self.p.n {
                    self.crash(i);
                }
            }
            ScriptAction::RestartAll => {
                for i in 0..self.p.n {
                    self.boot(i);
                }
            }
        }
    }

    /// The server `sel` names now, if any.
    fn resolve(&self, sel: NodeSel) -> Option<usize> {
        match sel {
            NodeSel::Node(id) => (id.index() < self.p.n).then_some(id.index()),
            NodeSel::Leader => self.current_leader(),
        }
    }
}
