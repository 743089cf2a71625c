//! Ready-made configurations: the bounded one CI runs, a larger one, and scripted starts aimed at
//! the scenarios of issue #11.

use crate::model::{Action, Driver, ModelConfig, Step, UpdateSpec};
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

/// The configuration CI checks exhaustively: server 1 leads view 1 (scripted), one client with
/// one update at server 0; server 0 stepwise (several inputs per round, asynchronous syncs),
/// servers 1 and 2 synchronous; views up to 2 (server 2 may take over), two slots, one crash, one
/// duplicated delivery.
pub fn ci() -> ModelConfig {
    ModelConfig {
        drivers: vec![Driver::Stepwise, Driver::Synchronous, Driver::Synchronous],
        script: view1_installed(),
        ..ModelConfig::default()
    }
}

/// Every server stepwise, from view 1 installed, one update at server 0, views up to 2, no crash
/// and no duplicate (the fully asynchronous drivers cost the most states).
pub fn stepwise() -> ModelConfig {
    ModelConfig {
        max_crashes: 0,
        max_duplicates: Some(0),
        script: view1_installed(),
        ..ModelConfig::default()
    }
}

/// [`ci`] with a second client (one update at server 2) and views up to 3.
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
        ..ci()
    }
}

/// Issue #11's N = 3 scenario as a scripted start, with `leader_accepts_separately`. Script:
/// server 1 leads view 1 (followers 0 and 2); client 1's update U reaches server 1, which
/// proposes it at slot 1 and drains (the Proposal leaves, its write is unsynced); server 0 (F)
/// handles that Proposal but is not drained; server 1 crashes before its sync and forgets U.
///
/// From there the checker explores everything within the bounds: views up to 3, client 2's U'
/// submitted at server 2, server 0 stepwise (it may handle more inputs before it drains),
/// servers 1 and 2 synchronous, no further crash. With the mislabelled Accept planted, F may
/// handle view 2's Prepare in the same round and send `Accept(v2, [1])` for U', which server 2
/// proposed without knowing U; view 3 (led by F) then chooses U at slot 1 again.
pub fn issue11_n3() -> ModelConfig {
    let mut script = view1_installed();
    script.extend([
        Step::Do(Action::Submit(0)),
        Step::Do(Action::Drain(n(1))),
        Step::Deliver {
            from: 1,
            to: 0,
            kind: "proposal",
        },
        Step::Do(Action::Crash(n(1))),
        // Server 2 prepares view 2 with the restarted server 1, which never saw U.
        Step::Do(Action::Elect {
            node: n(2),
            view: View(2),
        }),
        Step::Do(Action::Drain(n(2))),
        Step::Do(Action::Persist(n(2))),
        Step::Do(Action::Drain(n(2))),
        Step::Deliver {
            from: 2,
            to: 1,
            kind: "prepare",
        },
        Step::Do(Action::Drain(n(1))),
        Step::Do(Action::Persist(n(1))),
        Step::Do(Action::Drain(n(1))),
        Step::Deliver {
            from: 1,
            to: 2,
            kind: "prepare_ok",
        },
    ]);
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
        max_slot: 2,
        leader_accepts_separately: true,
        max_duplicates: Some(0),
        drivers: vec![Driver::Stepwise, Driver::Synchronous, Driver::Synchronous],
        script,
        ..ModelConfig::default()
    }
}
