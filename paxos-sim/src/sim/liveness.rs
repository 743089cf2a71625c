//! Liveness: the fault phase, the liveness phase that follows it, and who leads meanwhile
//! (testing.md (a), *Liveness*: "after T safety ticks, heal a random stable-majority core with
//! bounded delays; every pending request in the core must complete and the core converge within
//! a bound, else fail 'no convergence'").
//!
//! A run with a fault phase heals at its end ([`Ev::Heal`]): the stable set S is every server
//! or a random majority, what keeps the others away is decided in `stable.rs`, and the clients of
//! S must each complete one more update, with every server of S at the same aru and digest,
//! within the liveness bound (checked every 50 ms, [`Ev::Check`]). The run stops when they do.
//! Leadership is observed after every drain: leader changes (a leader of a higher view) and the
//! time with no live leader go into the report.

use super::{all_mask, Ev, World};
use crate::report::{LeaderChange, ViolationKind};
use paxos_core::{Durability, NodeId, Seq, ServerState, Time, View};
use rand::Rng;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Faults are injected (also the whole of a driven or bench run).
    Faults,
    /// Healed; waiting for the stable set to converge.
    Liveness,
    /// Converged.
    Done,
}

/// The phases of a run.
pub(super) struct Liveness {
    phase: Phase,
    /// The stable set S, one bit per server (every server until the fault phase ends).
    stable: u64,
    /// When the fault phase ended.
    pub(super) healed_at: Option<Time>,
    /// When S converged.
    pub(super) converged_at: Option<Time>,
    /// When S must have converged.
    deadline: Time,
    /// No event after this time is processed.
    pub(super) end_limit: Time,
}

impl Liveness {
    /// A run of `n` servers, in its fault phase.
    pub(super) fn new(n: usize) -> Liveness {
        Liveness {
            phase: Phase::Faults,
            stable: all_mask(n),
            healed_at: None,
            converged_at: None,
            deadline: Time(u64::MAX),
            end_limit: Time(u64::MAX),
        }
    }

    /// Whether server `i` is in the stable set.
    pub(super) fn in_stable(&self, i: usize) -> bool {
        self.stable & (1 << i) != 0
    }
}

/// Who leads, as seen after every drain.
pub(super) struct Leaders {
    /// When each new leader took over (not recorded in bench runs).
    changes: Vec<LeaderChange>,
    /// The highest view a leader was seen leading.
    max_view: Option<View>,
    /// Live servers that consider themselves leader (RegLeader), one bit each.
    mask: u64,
    /// Since when no live server leads, if none does.
    since: Option<Time>,
    /// Time with no leader before `since`.
    leaderless: Duration,
}

impl Leaders {
    /// Nobody leads yet.
    pub(super) fn new() -> Leaders {
        Leaders {
            changes: Vec::new(),
            max_view: None,
            mask: 0,
            since: Some(Time::ZERO),
            leaderless: Duration::ZERO,
        }
    }

    /// The leader changes and the total leaderless time of a run that ends at `now`.
    pub(super) fn finish(&mut self, now: Time) -> (Vec<LeaderChange>, Duration) {
        if let Some(since) = self.since {
            self.leaderless += now - since;
        }
        (std::mem::take(&mut self.changes), self.leaderless)
    }
}

impl World {
    /// Whether the run is still in its fault phase.
    pub(super) fn in_fault_phase(&self) -> bool {
        self.live.phase == Phase::Faults
    }

    /// [`Ev::Heal`]: the fault phase ends. Draws the stable set S (every server, or a random
    /// majority), heals the network and every process fault, keeps the servers outside S away
    /// (crashed or cut off; see `stable.rs` for the stable majority set), restarts S, gives each
    /// of S's clients one more update and starts checking for convergence.
    pub(super) fn heal(&mut self) {
        let n = self.p.n;
        self.live.phase = Phase::Liveness;
        self.live.healed_at = Some(self.now);
        self.clients.active = false;
        let majority = n / 2 + 1;
        self.live.stable = if self.p.mode.heals_all() || self.rng.gen_bool(0.5) {
            all_mask(n)
        } else {
            let mut ids: Vec<usize> = (0..n).collect();
            // Fisher-Yates with the seeded RNG.
            for i in (1..n).rev() {
                let j = self.rng.gen_range(0..=i);
                ids.swap(i, j);
            }
            let size = self.rng.gen_range(majority..=n);
            ids[..size].iter().fold(0u64, |m, &i| m | 1 << i)
        };
        self.net.heal_all();
        self.net.loss = 0.0;
        let outside = all_mask(n) & !self.live.stable;
        let crash_ok = self.p.mix.crashes && self.p.config.durability == Durability::Sync;
        for i in 0..n {
            if outside & (1 << i) != 0 && self.alive(i) && crash_ok && self.rng.gen_bool(0.5) {
                self.crash(i);
            }
        }
        if outside != 0 {
            let masks: Vec<u64> = (0..n)
                .map(|f| {
                    if outside & (1 << f) != 0 {
                        all_mask(n) & !(1 << f)
                    } else {
                        outside
                    }
                })
                .collect();
            self.add_partition(masks, None);
            // Keeping the others away is not a fault the run exercised.
            self.counters.partitions -= 1;
        }
        self.nemesis_heal();
        for i in 0..n {
            if self.live.in_stable(i) {
                self.boot(i);
            }
        }
        self.liveness_set_hook(outside);
        // Every client of the stable set gets one more update in, so liveness is always tested.
        for c in 0..self.clients.list.len() {
            let cl = &self.clients.list[c];
            if self.live.in_stable(cl.server.index()) && !cl.outstanding {
                self.submit(c);
            }
        }
        self.live.deadline = self.now + self.p.liveness_bound;
        let stable = self.live.stable;
        self.log(1, || format!("heal: stable set {stable:#b}"));
        let first = self.p.liveness_bound.min(Duration::from_millis(50));
        self.schedule(self.now + first, Ev::Check);
    }

    /// What did not converge, for the violation.
    fn pending_detail(&self) -> String {
        let pending: Vec<String> = self
            .clients
            .list
            .iter()
            .filter(|c| c.outstanding && self.live.in_stable(c.server.index()))
            .map(|c| format!("{}:{}@n{}", c.id, c.ts, c.server.0))
            .collect();
        let arus: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match &n.replica {
                Some(r) => {
                    let c = r.election_context();
                    let st = r.status();
                    format!(
                        "n{i}:{:?}/attempted {}/installed {}/aru {}/proposed {}/queued {}/pending {}",
                        c.state,
                        c.last_attempted,
                        c.last_installed,
                        c.local_aru.0,
                        st.last_proposed.0,
                        st.queued,
                        st.pending
                    )
                }
                None => format!("n{i}:down"),
            })
            .collect();
        let stable: Vec<String> = (0..self.p.n)
            .filter(|&i| self.live.in_stable(i))
            .map(|i| format!("n{i}"))
            .collect();
        let what = if pending.is_empty() {
            "every client completed, but the stable servers did not reach the same aru"
        } else {
            "client updates still pending"
        };
        format!(
            "no convergence {:?} after healing ({what}): stable set [{}], pending [{}], servers [{}]",
            self.p.liveness_bound,
            stable.join(" "),
            pending.join(" "),
            arus.join(" ")
        )
    }

    /// [`Ev::Check`]: done once no client of S has an update pending and every server of S is up
    /// at the same aru with the same digest; a violation once the liveness bound has passed.
    pub(super) fn check_convergence(&mut self) {
        if self.live.phase != Phase::Liveness {
            return;
        }
        let pending = self
            .clients
            .list
            .iter()
            .any(|c| c.outstanding && self.live.in_stable(c.server.index()));
        let mut positions = Vec::new();
        for i in 0..self.p.n {
            if self.live.in_stable(i) {
                match &self.nodes[i].replica {
                    Some(r) => {
                        positions.push((r.election_context().local_aru, r.state_machine().digest()))
                    }
                    None => positions.push((Seq(u64::MAX), 0)),
                }
            }
        }
        let same = positions.windows(2).all(|w| w[0] == w[1]);
        if !pending && same {
            self.live.converged_at = Some(self.now);
            self.live.phase = Phase::Done;
            self.stop = true;
            self.log(1, || "converged".to_string());
            return;
        }
        if self.now >= self.live.deadline {
            let d = self.pending_detail();
            self.violation(ViolationKind::NoConvergence, d);
            return;
        }
        self.schedule(self.now + Duration::from_millis(50), Ev::Check);
    }

    /// The run ended (no events left, or past its end limit) without converging.
    pub(super) fn liveness_at_end(&mut self) {
        if self.live.phase == Phase::Liveness && self.violations.is_empty() {
            let detail = self.pending_detail();
            self.violation(ViolationKind::NoConvergence, detail);
        }
    }

    /// Server `i` now leads (RegLeader) or not; tracks the time with no leader at all.
    pub(super) fn set_leader(&mut self, i: usize, leads: bool) {
        if leads {
            self.leaders.mask |= 1 << i;
        } else {
            self.leaders.mask &= !(1 << i);
        }
        match (self.leaders.mask == 0, self.leaders.since) {
            (true, None) => self.leaders.since = Some(self.now),
            (false, Some(since)) => {
                self.leaders.leaderless += self.now - since;
                self.leaders.since = None;
            }
            _ => {}
        }
    }

    /// After a drain of server `i`: whether it leads, and the view it installed last.
    pub(super) fn observe_leader(&mut self, i: usize, leads: bool, view: View) {
        if leads != (self.leaders.mask & (1 << i) != 0) {
            self.set_leader(i, leads);
        }
        if leads && self.leaders.max_view.is_none_or(|v| view > v) {
            self.leaders.max_view = Some(view);
            self.counters.view_changes += 1;
            if !self.p.mode.is_bench() {
                self.leaders.changes.push(LeaderChange {
                    time: self.now,
                    view,
                    leader: NodeId(i as u32),
                });
            }
            self.log(1, || format!("n{i} leads {view}"));
        }
    }

    /// The live server leading the highest installed view, if any.
    pub(super) fn current_leader(&self) -> Option<usize> {
        let mut best: Option<(View, usize)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(r) = &node.replica {
                let c = r.election_context();
                if c.state == ServerState::RegLeader
                    && best.is_none_or(|(v, _)| c.last_installed > v)
                {
                    best = Some((c.last_installed, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }
}
