//! What the liveness phase keeps stable (issue #11 item 2; protocol doc §13, LADIS Def. 3.1;
//! testing.md (a), *Liveness*: "heal a random stable-majority core").
//!
//! When the fault phase ends the simulator picks a stable set S (every server, or a random
//! majority) and requires S's clients to complete within the liveness bound. The servers outside
//! S are handled in one of two ways:
//!
//! * [`LivenessSet::Component`] (the simulator's original liveness phase): each outside server
//!   is crashed (with probability ½, when crashes are on) or cut off both ways. S is a *stable
//!   component*: no channel from outside reaches it.
//! * [`LivenessSet::MajoritySet`] (LADIS Def. 3.1, a *stable majority set*): the outside servers
//!   stay up (a crashed one restarts) and keep running their protocol and timers, and every link
//!   *from* an outside server into S works; only the links from S to them are cut, so they never
//!   learn S's view and keep trying to elect themselves. Paxos-L1 promises progress here; PSB's
//!   view change is built for it (TR §5.3: an unstable server cannot disrupt a stable majority).
//!
//! Without an option fixing it, a seed whose stable set leaves servers outside draws the kind
//! (½ each) from the scheduler's RNG.

use super::World;
use rand::Rng;
use std::fmt;
use std::str::FromStr;

/// What the liveness phase keeps stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LivenessSet {
    /// A stable component: the servers outside the set are crashed or cut off both ways.
    Component,
    /// A stable majority set (LADIS Def. 3.1): the servers outside stay up and can send into
    /// the set, but hear nothing from it.
    MajoritySet,
}

impl LivenessSet {
    /// The command-line name (`component`, `majority-set`).
    pub fn name(self) -> &'static str {
        match self {
            LivenessSet::Component => "component",
            LivenessSet::MajoritySet => "majority-set",
        }
    }
}

impl fmt::Display for LivenessSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LivenessSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "component" => Ok(LivenessSet::Component),
            "majority-set" => Ok(LivenessSet::MajoritySet),
            _ => Err(format!(
                "unknown liveness set {s:?} (component|majority-set)"
            )),
        }
    }
}

impl World {
    /// Called when the fault phase ends, after the outside servers were crashed or cut off as
    /// for a stable component (the last partition is the one keeping them away). Turns the
    /// phase into a stable majority set if this seed has one.
    pub(super) fn liveness_set_hook(&mut self, outside: u64) {
        if outside == 0 {
            return;
        }
        let drawn = if self.sched.rng.gen_bool(0.5) {
            LivenessSet::MajoritySet
        } else {
            LivenessSet::Component
        };
        let kind = self.sched.liveness.unwrap_or(drawn);
        self.sched.liveness = Some(kind);
        if kind != LivenessSet::MajoritySet {
            return;
        }
        self.sched.counters.majority_set_phases += 1;
        let n = self.p.n;
        // Only the links from the set to the outside are cut.
        let masks: Vec<u64> = (0..n)
            .map(|f| if outside & (1 << f) != 0 { 0 } else { outside })
            .collect();
        self.net.reshape_last(masks);
        for i in 0..n {
            if outside & (1 << i) != 0 {
                self.boot(i);
            }
        }
        self.log(1, || {
            format!("liveness: stable majority set; outside {outside:#b} up and sending into it")
        });
    }
}
