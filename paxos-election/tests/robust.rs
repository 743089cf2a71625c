//! Randomized robustness of every strategy in isolation (seeded, deterministic): arbitrary
//! payloads never panic, queues stay bounded, and the oracles only ask for installs the core can
//! act on. The core is modelled minimally: it applies `Install` and `Suspect` as `Replica` does.

use paxos_core::codec::encode;
use paxos_core::{
    Destination, ElectionAction, ElectionContext, LeaderElection, NodeId, Seq, ServerState, Time,
    View,
};
use paxos_election::{
    build, Ballot, BleMessage, ElectionConfig, HighestIdMessage, OmegaMessage, Strategy,
};
use std::time::Duration;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn random_payload(rng: &mut Rng, n: usize) -> Vec<u8> {
    match rng.below(6) {
        0 => encode(&HighestIdMessage::Alive).unwrap(),
        1 => encode(&OmegaMessage::Alive {
            epoch: rng.below(4),
        })
        .unwrap(),
        2 => encode(&OmegaMessage::Recovered {
            epoch: rng.below(4),
        })
        .unwrap(),
        3 => encode(&BleMessage::HeartbeatRequest {
            round: rng.below(50),
        })
        .unwrap(),
        4 => encode(&BleMessage::HeartbeatReply {
            round: rng.below(50),
            ballot: Ballot {
                n: rng.below(5),
                pid: NodeId(rng.below(n as u64 + 1) as u32),
            },
            qc: rng.below(2) == 0,
        })
        .unwrap(),
        _ => (0..rng.below(12)).map(|_| rng.next() as u8).collect(),
    }
}

/// What `Replica::install` / `shift_to_leader_election` do to the context.
fn apply(ctx: &mut ElectionContext, a: ElectionAction) {
    let n = ctx.servers;
    match a {
        ElectionAction::Suspect(v) => {
            if v > ctx.last_installed {
                ctx.state = ServerState::LeaderElection;
                ctx.last_attempted = v;
                ctx.max_view_seen = ctx.max_view_seen.max(v);
            }
        }
        ElectionAction::Install(v) => {
            if v < ctx.last_installed
                || (v == ctx.last_installed && ctx.state != ServerState::LeaderElection)
            {
                return;
            }
            if v.leader(n) == ctx.me {
                if v == ctx.last_installed {
                    return;
                }
                ctx.state = ServerState::LeaderElection;
                ctx.last_attempted = v;
                ctx.last_installed = v;
            } else {
                ctx.state = ServerState::RegNonLeader;
                ctx.last_attempted = v;
                ctx.last_installed = v;
            }
            ctx.max_view_seen = ctx.max_view_seen.max(v);
        }
    }
}

#[test]
fn strategies_survive_random_inputs_and_only_ask_for_actionable_installs() {
    let cfg = ElectionConfig::uniform(Duration::from_millis(200));
    for strategy in Strategy::ALL {
        for seed in 1..=30u64 {
            let mut rng = Rng(seed * 0x9E37_79B9 + 7);
            let n = 1 + rng.below(7) as usize;
            let me = NodeId(rng.below(n as u64) as u32);
            let mut ctx = ElectionContext {
                me,
                servers: n,
                state: ServerState::LeaderElection,
                last_attempted: View(0),
                last_installed: View(0),
                max_view_seen: View(0),
                leader_announced_view: View(0),
                local_aru: Seq(0),
                has_outstanding_work: false,
                incarnation: 1 + rng.below(3),
            };
            let mut e = build(strategy, me, n, &cfg);
            let mut now = Time::ZERO;
            e.handle_start(now, &ctx);
            // What the start asks for is not charged to the first input below.
            while e.poll_message().is_some() {}
            while let Some(a) = e.poll_action() {
                apply(&mut ctx, a);
            }
            for _ in 0..3000 {
                now = now + Duration::from_millis(rng.below(30));
                match rng.below(10) {
                    0..=3 => e.handle_tick(now, &ctx),
                    4..=7 => {
                        let from = NodeId(rng.below(n as u64 + 1) as u32);
                        let p = random_payload(&mut rng, n);
                        let _ = e.handle_message(now, from, &p, &ctx);
                    }
                    8 => {
                        // The core saw a higher view somewhere, or a Prepare completed.
                        if rng.below(2) == 0 {
                            ctx.max_view_seen = View(ctx.max_view_seen.0 + rng.below(3));
                        } else if ctx.state == ServerState::LeaderElection
                            && ctx.last_installed.leader(n) == me
                            && ctx.last_installed > View(0)
                        {
                            ctx.state = ServerState::RegLeader;
                            e.handle_view_installed(now, &ctx);
                        }
                        ctx.has_outstanding_work = rng.below(2) == 0;
                        // An Alive from a view's own leader (the core's leader_announced_view).
                        let v = View(rng.below(40));
                        ctx.leader_announced_view = ctx.leader_announced_view.max(v);
                    }
                    _ => e.handle_progress(now, &ctx),
                }
                let mut msgs = 0;
                while let Some((to, _)) = e.poll_message() {
                    msgs += 1;
                    if let Destination::Node(p) = to {
                        assert!(p.index() < n && p != me, "{strategy}: bad destination");
                    }
                }
                assert!(msgs <= 4, "{strategy}: {msgs} messages from one input");
                let mut actions = 0;
                while let Some(a) = e.poll_action() {
                    actions += 1;
                    if strategy != Strategy::PsbViewChange {
                        if let ElectionAction::Install(v) = a {
                            if v.leader(n) == me {
                                assert!(
                                    v > ctx.last_installed,
                                    "{strategy} seed {seed}: install {v} at {ctx:?}"
                                );
                            } else {
                                assert!(v >= ctx.last_installed, "{strategy} seed {seed}");
                            }
                        }
                        assert!(
                            !matches!(a, ElectionAction::Suspect(_)),
                            "oracles never suspect"
                        );
                    }
                    apply(&mut ctx, a);
                }
                assert!(
                    actions <= 2,
                    "{strategy} seed {seed}: {actions} actions from one input at {ctx:?}"
                );
                if let Some(l) = e.leader(&ctx) {
                    assert!(l.index() < n);
                }
            }
        }
    }
}
