//! The scenario library of the election A/B experiment (spec §§15.4, 16.2).
//!
//! A [`Scenario`] is pure data: a cluster size, where the clients are, how long to run, when the
//! measured part starts, and a timeline of faults. Faults name servers either directly or by their
//! role when the fault starts ([`Target::Leader`], [`Target::Other`]), because which server leads
//! depends on the strategy. A [`FaultCursor`] turns the timeline into concrete [`Action`]s for a
//! driver (the simulator, or [`crate::memnet::MemCluster`]).

use paxos_core::{NodeId, Time};
use std::fmt;
use std::time::Duration;

/// A server named by a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// This server.
    Node(NodeId),
    /// The leader when the first role-based fault fires.
    Leader,
    /// The `k`-th server by id among those that are not that leader (`Other(0)` is A in the
    /// OmniPaxos figures, `Other(1)` is B, …).
    Other(usize),
}

/// A fault in a scenario's timeline. Cuts are bidirectional.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Crash a server (it loses everything not yet durable).
    Crash(Target),
    /// Restart a crashed server from its durable state (its incarnation increments).
    Restart(Target),
    /// Cut the link between two servers, both ways.
    Cut(Target, Target),
    /// Heal the link between two servers, both ways.
    Heal(Target, Target),
    /// Heal every link.
    HealAll,
}

/// A fault resolved to concrete servers: what a driver executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Crash this server.
    Crash(NodeId),
    /// Restart this server from its durable state.
    Restart(NodeId),
    /// Cut the link between these servers, both ways.
    Cut(NodeId, NodeId),
    /// Heal the link between these servers, both ways.
    Heal(NodeId, NodeId),
    /// Heal every link.
    HealAll,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Crash(n) => write!(f, "crash {n}"),
            Action::Restart(n) => write!(f, "restart {n}"),
            Action::Cut(a, b) => write!(f, "cut {a}-{b}"),
            Action::Heal(a, b) => write!(f, "heal {a}-{b}"),
            Action::HealAll => write!(f, "heal all"),
        }
    }
}

/// A fault and when it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimedFault {
    /// Simulated time of the fault.
    pub at: Time,
    /// The fault.
    pub fault: Fault,
}

/// One row of the experiment: a cluster, a workload placement and a fault timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// A short name, usable on command lines.
    pub name: &'static str,
    /// One sentence for tables and logs.
    pub description: &'static str,
    /// Cluster size N.
    pub servers: usize,
    /// Servers whose clients submit updates (one closed-loop client each is a good default).
    pub clients: Vec<NodeId>,
    /// Total simulated time.
    pub duration: Duration,
    /// Where the measured part starts (metrics ignore what happens before).
    pub fault_start: Time,
    /// The fault timeline, sorted by time.
    pub faults: Vec<TimedFault>,
}

/// Knobs of the scenario library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScenarioParams {
    /// Total simulated time of each scenario.
    pub duration: Duration,
    /// Time given to the cluster to elect a first leader before the faults start.
    pub warmup: Duration,
    /// Period of the unstable server's crash/recover or partition/heal cycle (down half of it).
    pub period: Duration,
    /// Number of cycles of the unstable server.
    pub periods: u32,
    /// The election timeout the OmniPaxos scenarios are scaled by (the constrained scenario's
    /// second cut comes half an election timeout after the first).
    pub election_timeout: Duration,
    /// How long the partial-connectivity partitions last before everything heals.
    pub partition: Duration,
}

impl Default for ScenarioParams {
    fn default() -> Self {
        ScenarioParams {
            duration: Duration::from_secs(60),
            warmup: Duration::from_secs(5),
            period: Duration::from_secs(4),
            periods: 10,
            election_timeout: Duration::from_millis(500),
            partition: Duration::from_secs(30),
        }
    }
}

/// The names of the library's scenarios, in table order.
pub const SCENARIO_NAMES: [&str; 9] = [
    "stable",
    "leader-crash",
    "leader-crash-recover",
    "crash-loop",
    "partition-loop",
    "quorum-loss",
    "constrained",
    "chained",
    "chained-5",
];

fn ids(servers: usize) -> Vec<NodeId> {
    (0..servers as u32).map(NodeId).collect()
}

fn at(t: Duration) -> Time {
    Time::ZERO + t
}

/// The scenario called `name` (one of [`SCENARIO_NAMES`]), built with `p`.
pub fn scenario(name: &str, p: &ScenarioParams) -> Option<Scenario> {
    use Fault::*;
    use Target::*;
    let start = at(p.warmup);
    let end_partition = at(p.warmup + p.partition);
    let base = |name, description, servers| Scenario {
        name,
        description,
        servers,
        clients: ids(servers),
        duration: p.duration,
        fault_start: start,
        faults: vec![],
    };
    let mut s = match name {
        "stable" => {
            let mut s = base(
                "stable",
                "5 servers, no faults; measured from cold start",
                5,
            );
            s.fault_start = Time::ZERO;
            s
        }
        "leader-crash" => {
            let mut s = base("leader-crash", "the leader crashes and stays down", 5);
            s.faults.push(TimedFault {
                at: start,
                fault: Crash(Leader),
            });
            s
        }
        "leader-crash-recover" => {
            let mut s = base(
                "leader-crash-recover",
                "the leader crashes and recovers one period later",
                5,
            );
            s.faults.push(TimedFault {
                at: start,
                fault: Crash(Leader),
            });
            s.faults.push(TimedFault {
                at: start + p.period,
                fault: Restart(Leader),
            });
            s
        }
        "crash-loop" | "partition-loop" => {
            let crash = name == "crash-loop";
            let mut s = base(
                if crash {
                    "crash-loop"
                } else {
                    "partition-loop"
                },
                if crash {
                    "stable majority {0,1,2}, 3 down, 4 crashes and recovers every period"
                } else {
                    "stable majority {0,1,2}, 3 down, 4 is partitioned and healed every period"
                },
                5,
            );
            s.clients = ids(3);
            s.faults.push(TimedFault {
                at: Time::ZERO,
                fault: Crash(Node(NodeId(3))),
            });
            let four = Node(NodeId(4));
            for k in 0..p.periods {
                let down = start + p.period * k;
                let up = down + p.period / 2;
                if crash {
                    s.faults.push(TimedFault {
                        at: down,
                        fault: Crash(four),
                    });
                    s.faults.push(TimedFault {
                        at: up,
                        fault: Restart(four),
                    });
                } else {
                    for j in 0..4 {
                        s.faults.push(TimedFault {
                            at: down,
                            fault: Cut(four, Node(NodeId(j))),
                        });
                        s.faults.push(TimedFault {
                            at: up,
                            fault: Heal(four, Node(NodeId(j))),
                        });
                    }
                }
            }
            s
        }
        "quorum-loss" => {
            let mut s = base(
                "quorum-loss",
                "OmniPaxos quorum-loss: all links among the four non-hub servers cut; hub A keeps all",
                5,
            );
            let others = [Leader, Other(1), Other(2), Other(3)];
            for (i, a) in others.iter().enumerate() {
                for b in &others[i + 1..] {
                    s.faults.push(TimedFault {
                        at: start,
                        fault: Cut(*a, *b),
                    });
                }
            }
            s.faults.push(TimedFault {
                at: end_partition,
                fault: HealAll,
            });
            s
        }
        "constrained" => {
            let mut s = base(
                "constrained",
                "OmniPaxos constrained election: cut A-leader, then isolate the leader and cut B, D, E apart",
                5,
            );
            s.faults.push(TimedFault {
                at: start,
                fault: Cut(Other(0), Leader),
            });
            let second = start + p.election_timeout / 2;
            let bde = [Other(1), Other(2), Other(3)];
            for (i, a) in bde.iter().enumerate() {
                s.faults.push(TimedFault {
                    at: second,
                    fault: Cut(Leader, *a),
                });
                for b in &bde[i + 1..] {
                    s.faults.push(TimedFault {
                        at: second,
                        fault: Cut(*a, *b),
                    });
                }
            }
            s.faults.push(TimedFault {
                at: end_partition,
                fault: HealAll,
            });
            s
        }
        "chained" => {
            let mut s = base(
                "chained",
                "OmniPaxos chained (N = 3): cut B-leader only, giving the chain B-A-leader",
                3,
            );
            s.faults.push(TimedFault {
                at: start,
                fault: Cut(Other(1), Leader),
            });
            s.faults.push(TimedFault {
                at: end_partition,
                fault: HealAll,
            });
            s
        }
        "chained-5" => {
            let mut s = base(
                "chained-5",
                "chained, 5 servers: cut only the leader-E link, keeping the other 9",
                5,
            );
            s.faults.push(TimedFault {
                at: start,
                fault: Cut(Other(3), Leader),
            });
            s.faults.push(TimedFault {
                at: end_partition,
                fault: HealAll,
            });
            s
        }
        _ => return None,
    };
    s.faults.sort_by_key(|f| f.at);
    Some(s)
}

impl Scenario {
    /// The whole fault timeline resolved against `leader`, for drivers that take a fixed script
    /// (run the cluster to `fault_start` first to learn the leader, or pass the strategy's usual
    /// first leader).
    pub fn timeline(&self, leader: NodeId) -> Vec<(Time, Action)> {
        let mut cursor = FaultCursor::new(self);
        let mut out = vec![];
        while let Some(t) = cursor.next_at() {
            out.extend(cursor.due(t, || Some(leader)).into_iter().map(|a| (t, a)));
        }
        out
    }
}

/// Every scenario of the library, in [`SCENARIO_NAMES`] order.
pub fn library(p: &ScenarioParams) -> Vec<Scenario> {
    SCENARIO_NAMES
        .iter()
        .filter_map(|n| scenario(n, p))
        .collect()
}

/// Walks a scenario's fault timeline, resolving roles the first time one is needed.
#[derive(Clone, Debug)]
pub struct FaultCursor {
    faults: Vec<TimedFault>,
    next: usize,
    servers: usize,
    leader: Option<NodeId>,
}

impl FaultCursor {
    /// A cursor at the start of `scenario`'s timeline.
    pub fn new(scenario: &Scenario) -> FaultCursor {
        FaultCursor {
            faults: scenario.faults.clone(),
            next: 0,
            servers: scenario.servers,
            leader: None,
        }
    }

    /// When the next fault is due, if any is left.
    pub fn next_at(&self) -> Option<Time> {
        self.faults.get(self.next).map(|f| f.at)
    }

    /// The leader the roles were resolved against, once resolved.
    pub fn resolved_leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The faults due at or before `now`, resolved. `current_leader` is asked (once per cursor)
    /// when the first role-based fault fires; without a leader, the highest id stands in.
    pub fn due(
        &mut self,
        now: Time,
        mut current_leader: impl FnMut() -> Option<NodeId>,
    ) -> Vec<Action> {
        let mut out = vec![];
        while let Some(f) = self.faults.get(self.next).copied() {
            if f.at > now {
                break;
            }
            self.next += 1;
            out.push(self.resolve(f.fault, &mut current_leader));
        }
        out
    }

    fn target(&mut self, t: Target, current_leader: &mut impl FnMut() -> Option<NodeId>) -> NodeId {
        let servers = self.servers;
        let mut leader = || {
            *self.leader.get_or_insert_with(|| {
                current_leader()
                    .filter(|l| l.index() < servers)
                    .unwrap_or(NodeId(servers as u32 - 1))
            })
        };
        match t {
            Target::Node(n) => n,
            Target::Leader => leader(),
            Target::Other(k) => {
                let l = leader();
                (0..servers as u32)
                    .map(NodeId)
                    .filter(|n| *n != l)
                    .nth(k)
                    .unwrap_or(l)
            }
        }
    }

    fn resolve(&mut self, f: Fault, current_leader: &mut impl FnMut() -> Option<NodeId>) -> Action {
        match f {
            Fault::Crash(t) => Action::Crash(self.target(t, current_leader)),
            Fault::Restart(t) => Action::Restart(self.target(t, current_leader)),
            Fault::Cut(a, b) => Action::Cut(
                self.target(a, current_leader),
                self.target(b, current_leader),
            ),
            Fault::Heal(a, b) => Action::Heal(
                self.target(a, current_leader),
                self.target(b, current_leader),
            ),
            Fault::HealAll => Action::HealAll,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_actions(s: &Scenario, leader: u32) -> Vec<(Time, Action)> {
        s.timeline(NodeId(leader))
    }

    #[test]
    fn every_named_scenario_exists_and_is_sorted() {
        let p = ScenarioParams::default();
        let lib = library(&p);
        assert_eq!(lib.len(), SCENARIO_NAMES.len());
        for s in &lib {
            assert!(
                s.faults.windows(2).all(|w| w[0].at <= w[1].at),
                "{}",
                s.name
            );
            assert!(s.faults.iter().all(|f| f.at < Time::ZERO + s.duration));
            assert!(!s.clients.is_empty());
        }
        assert!(scenario("nope", &p).is_none());
    }

    #[test]
    fn quorum_loss_is_a_star_around_a_non_leader_hub() {
        // spec §16.2: cut every link among {B, C, D, E}; A keeps its four links.
        let s = scenario("quorum-loss", &ScenarioParams::default()).unwrap();
        let cuts: Vec<(NodeId, NodeId)> = all_actions(&s, 2)
            .into_iter()
            .filter_map(|(_, a)| match a {
                Action::Cut(a, b) => Some((a, b)),
                _ => None,
            })
            .collect();
        assert_eq!(cuts.len(), 6);
        // With leader 2, A is server 0: none of its links is cut.
        assert!(cuts.iter().all(|(a, b)| a.0 != 0 && b.0 != 0));
    }

    #[test]
    fn constrained_isolates_leader_and_leaves_a_star_around_a() {
        let p = ScenarioParams::default();
        let s = scenario("constrained", &p).unwrap();
        let acts = all_actions(&s, 4);
        let cut = |a: u32, b: u32| {
            acts.iter().any(|(_, x)| {
                *x == Action::Cut(NodeId(a), NodeId(b)) || *x == Action::Cut(NodeId(b), NodeId(a))
            })
        };
        // Leader 4, A = 0, B, D, E = 1, 2, 3.
        assert!(cut(0, 4) && cut(1, 4) && cut(2, 4) && cut(3, 4));
        assert!(cut(1, 2) && cut(1, 3) && cut(2, 3));
        assert!(!cut(0, 1) && !cut(0, 2) && !cut(0, 3));
        assert_eq!(acts[0].0, Time::ZERO + p.warmup);
        assert_eq!(acts[1].0, Time::ZERO + p.warmup + p.election_timeout / 2);
    }

    #[test]
    fn crash_loop_cycles_server_four_and_downs_three() {
        let p = ScenarioParams::default();
        let s = scenario("crash-loop", &p).unwrap();
        let acts = all_actions(&s, 1);
        assert_eq!(acts[0], (Time::ZERO, Action::Crash(NodeId(3))));
        let crashes = acts
            .iter()
            .filter(|(_, a)| *a == Action::Crash(NodeId(4)))
            .count();
        let restarts = acts
            .iter()
            .filter(|(_, a)| *a == Action::Restart(NodeId(4)))
            .count();
        assert_eq!((crashes, restarts), (10, 10));
        assert_eq!(s.clients, vec![NodeId(0), NodeId(1), NodeId(2)]);
    }

    #[test]
    fn roles_resolve_once_and_fall_back_to_highest_id() {
        let s = scenario("leader-crash-recover", &ScenarioParams::default()).unwrap();
        let mut c = FaultCursor::new(&s);
        let mut asked = 0;
        let a = c.due(Time::from_millis(5_000), || {
            asked += 1;
            None
        });
        assert_eq!(a, vec![Action::Crash(NodeId(4))]);
        let b = c.due(Time::from_millis(60_000), || {
            asked += 1;
            Some(NodeId(0))
        });
        assert_eq!(b, vec![Action::Restart(NodeId(4))]);
        assert_eq!(asked, 1);
        assert_eq!(c.next_at(), None);
    }
}
