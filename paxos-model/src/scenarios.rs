//! Ready-made configurations: the bounded one CI runs, a larger one, and scripted starts aimed at
//! the scenarios of issue #11.

use crate::model::{Action, ModelConfig, Step, UpdateSpec};
use paxos_core::{NodeId, View};

fn n(i: u32) -> NodeId {
    NodeId(i)
}

/// Steps that make server 1 the leader of view 1 with servers 0 and 2 its followers (every
/// promise synced), starting from fresh servers.
pub fn view1_installed() -> Vec<Step> {
    let mut s = vec![
        Step::Do(Action::Elect {
            node: n(1),
            view: View(1),
        }),
        Step::Do(Action::Drain(n(1))),
        Step::Do(Action::Persist(n(1))),
        Step::Do(Action::Drain(n(1))),
    ];
    for f in [0, 2] {
        s.extend([
            Step::Deliver {
                from: 1,
                to: f,
                kind: "prepare",
            },
            Step::Do(Action::Drain(n(f))),
            Step::Do(Action::Persist(n(f))),
            Step::Do(Action::Drain(n(f))),
        ]);
    }
    s.push(Step::Deliver {
        from: 0,
        to: 1,
        kind: "prepare_ok",
    });
    s
}

/// The configuration CI checks exhaustively: fresh servers, one client with one update at server
/// 0, views up to 2, two slots, one crash, duplication, no ticks.
pub fn ci() -> ModelConfig {
    ModelConfig::default()
}

/// A larger configuration: two clients with one update each (at servers 0 and 2), views up to 3.
pub fn larger() -> ModelConfig {
    ModelConfig {
        updates: vec![
            UpdateSpec {
                client: 1,
                server: 0,
                timestamp: 1,
            },
            UpdateSpec {
                client: 2,
                server: 2,
                timestamp: 1,
            },
        ],
        max_view: 3,
        ..ModelConfig::default()
    }
}

/// Issue #11's N = 3 scenario, as a scripted start: `leader_accepts_separately`, view 1 led by
/// server 1 with followers 0 and 2; client 1's update U is submitted at server 1 and client 2's
/// U' at server 2. The checker explores from there with views up to 3 and one crash; the
/// mislabelled Accept needs server 0 to handle the view-1 Proposal and view 2's Prepare in one
/// round, server 1 to crash before its sync, and view 3 to re-choose U.
pub fn issue11_n3() -> ModelConfig {
    let mut script = view1_installed();
    script.extend([Step::Do(Action::Submit(0))]);
    ModelConfig {
        updates: vec![
            UpdateSpec {
                client: 1,
                server: 1,
                timestamp: 1,
            },
            UpdateSpec {
                client: 2,
                server: 2,
                timestamp: 1,
            },
        ],
        max_view: 3,
        max_slot: 1,
        leader_accepts_separately: true,
        script,
        ..ModelConfig::default()
    }
}
