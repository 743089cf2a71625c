//! Named fault scripts, reusable with any election strategy (see [`crate::Simulation::script`]).

use crate::sim::{NodeSel, ScriptAction, ScriptStep};
use paxos_core::NodeId;
use std::time::Duration;

fn at(ms: u64, action: ScriptAction) -> ScriptStep {
    ScriptStep {
        at: Duration::from_millis(ms),
        action,
    }
}

/// The leader crashes at 0.8 s (losing its unsynced writes); everyone is restarted at 2.5 s.
pub fn leader_crash() -> Vec<ScriptStep> {
    vec![
        at(800, ScriptAction::Crash(NodeSel::Leader)),
        at(2500, ScriptAction::RestartAll),
    ]
}

/// The leader is cut off from everyone at 0.8 s; the network heals at 3 s.
pub fn leader_partition() -> Vec<ScriptStep> {
    vec![
        at(800, ScriptAction::Isolate(NodeSel::Leader)),
        at(3000, ScriptAction::HealNetwork),
    ]
}

/// Every server crashes and restarts twice; the second time servers 0 and 2 come back first.
pub fn all_restart() -> Vec<ScriptStep> {
    vec![
        at(700, ScriptAction::CrashAll),
        at(900, ScriptAction::RestartAll),
        at(1800, ScriptAction::CrashAll),
        at(1850, ScriptAction::Restart(NodeSel::Node(NodeId(0)))),
        at(1900, ScriptAction::Restart(NodeSel::Node(NodeId(2)))),
        at(2600, ScriptAction::RestartAll),
    ]
}

/// The named scenarios, for running each with every election strategy.
pub fn all() -> Vec<(&'static str, Vec<ScriptStep>)> {
    vec![
        ("leader-crash", leader_crash()),
        ("leader-partition", leader_partition()),
        ("all-restart", all_restart()),
    ]
}
