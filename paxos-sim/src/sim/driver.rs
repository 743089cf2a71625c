//! The driver API: a [`crate::SimCluster`] steps a world through time and injects the faults of
//! a [`paxos_election::Scenario`] (the election experiment; testing.md (a), *Scenario tests*:
//! "named regressions on the same harness", and "each leader-election implementation as a
//! parameter").
//!
//! A driven world has no random crashes or partitions, no fault or liveness phase and no end:
//! the driver advances it with [`World::run_until`], crashes, restarts, cuts and heals links,
//! starts and stops the clients, and samples each server's view. Every safety oracle runs as in
//! a sweep; the first violation stops the world.

use super::{Ev, Mode, SchedParams, Simulation, World};
use crate::faults::FaultMix;
use crate::report::ViolationKind;
use paxos_core::{Durability, NodeId, ServerState, Time, View};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

impl Simulation {
    /// A world for a driver ([`crate::SimCluster`]): no random crashes or partitions, no fault
    /// or liveness phase, `Durability::Sync` unless fixed (so crashes are safe), one closed-loop
    /// client at each server of `clients`, and the network of the fixed fault mix (default
    /// [`FaultMix::network`]). Knobs, delays and client timers are drawn from the seed as in
    /// [`Simulation::run`].
    pub(crate) fn driven_world(&self, clients: &[NodeId]) -> (World, &'static str) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let n = self.nodes.max(1);
        let mut mix = self.mix.clone().unwrap_or_else(FaultMix::network);
        mix.crashes = false;
        mix.partitions.clear();
        let durability = self.durability.unwrap_or(Durability::Sync);
        let aggregation = self.aggregation.unwrap_or_else(|| rng.gen_bool(0.6));
        let config = self.draw_config(&mut rng, n, durability, aggregation);
        let clients: Vec<NodeId> = clients.iter().copied().filter(|c| c.index() < n).collect();
        let clients_len = clients.len();
        let mode = Mode::Driven { clients };
        let ext = SchedParams::driven(self.seed, &self.ext);
        let params = self.params(&mut rng, mix, config, clients_len, mode, ext);
        let election_name = (self.election)(NodeId(0), n).name();
        (
            World::new(params, rng, self.election.clone()),
            election_name,
        )
    }
}

impl World {
    /// Processes every event due at or before `t` (rounds as in [`World::run`]), drains, and
    /// leaves the clock at `t`. Does nothing more once a violation stopped the world.
    pub(crate) fn run_until(&mut self, t: Time) {
        while !self.stop {
            match self.queue.next_time() {
                Some(at) if at <= t => {}
                _ => break,
            }
            let Some((at, ev)) = self.queue.pop() else {
                break;
            };
            if at != self.now {
                self.drain_dirty();
                if self.stop {
                    break;
                }
                self.now = at;
            }
            self.process(at, ev);
        }
        if !self.stop {
            self.drain_dirty();
        }
        self.now = self.now.max(t);
    }

    /// The current virtual time.
    pub(crate) fn now(&self) -> Time {
        self.now
    }

    /// Crashes server `i` now (driver fault; only with `Durability::Sync`).
    pub(crate) fn drive_crash(&mut self, i: usize) {
        if i < self.p.n {
            self.log(1, || format!("driver: crash n{i}"));
            self.crash(i);
            self.drain_dirty();
        }
    }

    /// Restarts server `i` from its durable state now, if it is down (driver fault).
    pub(crate) fn drive_restart(&mut self, i: usize) {
        if i < self.p.n {
            self.boot(i);
            self.drain_dirty();
        }
    }

    /// Cuts (or heals) the link between `a` and `b`, both ways (driver fault).
    pub(crate) fn drive_link(&mut self, a: usize, b: usize, cut: bool) {
        let n = self.p.n;
        if a >= n || b >= n || a == b {
            return;
        }
        self.log(1, || {
            format!("driver: {} n{a}-n{b}", if cut { "cut" } else { "heal" })
        });
        self.net.set_link(a, b, cut);
        if cut {
            self.counters.partitions += 1;
        }
    }

    /// Starts or stops the closed-loop clients (driver action). Stopped clients finish the update
    /// they have outstanding and submit no more; started ones submit their next update now, except
    /// those whose server is down (they stay idle until the next start).
    pub(crate) fn drive_clients(&mut self, on: bool) {
        self.log(1, || {
            format!("driver: clients {}", if on { "on" } else { "off" })
        });
        let was = !self.clients.paused;
        self.clients.active = on;
        self.clients.paused = !on;
        if on && !was {
            for c in 0..self.clients.list.len() {
                let up = self.alive(self.clients.list[c].server.index());
                if up && !self.clients.list[c].outstanding {
                    self.schedule(self.now, Ev::Submit { client: c as u32 });
                }
            }
        }
    }

    /// Heals every link cut by the driver and every partition (driver fault).
    pub(crate) fn drive_heal_all(&mut self) {
        self.log(1, || "driver: heal all".to_string());
        self.net.heal_all();
    }

    /// Per server, `Some(last_installed)` when it is up and regular (not in leader election).
    pub(crate) fn regular_views(&self) -> Vec<Option<View>> {
        self.nodes
            .iter()
            .map(|node| {
                node.replica.as_ref().and_then(|r| {
                    let c = r.election_context();
                    (c.state != ServerState::LeaderElection).then_some(c.last_installed)
                })
            })
            .collect()
    }

    /// Slots in the canonical order so far (the most any server has executed; never decreases).
    pub(crate) fn ordered(&self) -> u64 {
        self.checker.ordered()
    }

    /// Records a panic that escaped the core as a violation and stops the world.
    pub(crate) fn panicked(&mut self, msg: String) {
        self.violation(ViolationKind::Panic, format!("panic: {msg}"));
    }
}
