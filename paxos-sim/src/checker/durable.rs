//! Durable monotonicity across restarts (testing.md (a), *Invariants* 5: "promised ballot,
//! per-slot accepted `(ballot, value)` and executed prefix never regress").
//!
//! Checked on each batch as it becomes durable (against the server's durable state just before),
//! on the durable view after it is folded in (against every earlier durable promise of that
//! server), and on every restart (the replica's aru is exactly the contiguous durable prefix).
//! The weaker form of the executed-prefix rule that PSB keeps is explained in
//! `docs/simulator.md` (*Executed prefix across restarts*). Violations are
//! [`ViolationKind::Durability`].

use super::Check;
use crate::report::ViolationKind;
use paxos_core::{DurableState, PersistBatch, Seq, ViewRecord};

/// Batch `b` of `node` lowers nothing its durable state `d` holds: not the view promise, not a
/// slot's accepted view, and it rewrites no ordered slot. Reports the last problem found.
pub(super) fn batch_keeps(node: usize, d: &DurableState, b: &PersistBatch) -> Check {
    let i = node;
    let mut problem = None;
    if let Some(v) = b.view {
        if v.last_attempted < d.view.last_attempted || v.last_installed < d.view.last_installed {
            problem = Some(format!(
                "n{i} view promise regressed: {:?} -> {:?}",
                d.view, v
            ));
        }
    }
    let floor = d.snapshot_seq();
    for a in &b.accepted {
        if a.seq > floor {
            if let Some(old) = d.accepted.get(&a.seq) {
                if old.view > a.view {
                    problem = Some(format!(
                        "n{i} accepted view regressed at slot {}: {} -> {}",
                        a.seq, old.view, a.view
                    ));
                }
            }
        }
    }
    for o in &b.ordered {
        if let Some(old) = d.ordered.get(&o.seq) {
            if old.update != o.update {
                problem = Some(format!("n{i} ordered slot {} rewritten", o.seq));
            }
        }
    }
    match problem {
        Some(pr) => Err((ViolationKind::Durability, pr)),
        None => Ok(()),
    }
}

/// The durable view `v` of `node` is not below `promised`, the highest it ever made durable.
pub(super) fn promise_kept(node: usize, v: ViewRecord, promised: ViewRecord) -> Check {
    if v.last_attempted < promised.last_attempted || v.last_installed < promised.last_installed {
        let msg = format!(
            "n{node} durable view {:?} below an earlier durable promise {:?}",
            v, promised
        );
        return Err((ViolationKind::Durability, msg));
    }
    Ok(())
}

/// A replica of `node` restarted at `aru` from durable state contiguous through `prefix`.
/// Exactly the durable prefix: not less (lost durable state), not more (executed something
/// storage does not hold). Below the executed prefix is fine: ordered updates are written without
/// anything waiting for them (docs/simulator.md).
pub(super) fn restart_at_prefix(node: usize, aru: Seq, prefix: Seq) -> Check {
    if aru != prefix {
        return Err((
            ViolationKind::Durability,
            format!(
                "n{node} restarted at aru {aru} but its durable log is contiguous through {prefix}"
            ),
        ));
    }
    Ok(())
}
