//! Durability ordering on the effect stream [TR §4.3, §7.3; spec §9].
//!
//! With `Durability::Sync` a server may say nothing it could forget in a crash: every message that
//! leaves it must be justified by its durable state at that instant (the simulator's per-server
//! `DurableState`, folded from the batches whose fsync completed). Violations are
//! [`ViolationKind::UnjustifiedMessage`]:
//!
//! | message | justified by |
//! |---|---|
//! | `Accept(v, s)` | the sender durably accepted the proposal of `(v, s)` (the ghost remembers every durable accepted record, so a record a durable snapshot later compacted, or a higher view later replaced, still counts: it was durable before the message could leave, and a snapshot only covers executed slots) |
//! | `Proposal(v, items)` without `leader_accepts_separately` (the leader's implicit accept) | the same, for every item |
//! | `Prepare(v)` (the leader's own promise) and `PrepareOk(v)` | a durable view promise `last_installed ≥ v` |
//! | `PrepareOk(v)`'s data list | every durable accepted proposal of a view below `v` above the floor `max(prepare aru, sender aru)` appears, as that slot's ordered update or a proposal of at least its view |
//! | forwarded `ClientUpdate` | a durable pending entry of that client with at least its timestamp |
//!
//! Accepted proposals of a view `≥ v` may be missing from `PrepareOk(v)`: they were accepted after
//! the promise was made (possibly in the very batch the PrepareOk waited for). Alive, reconciliation,
//! snapshot transfer and election messages carry no promise. Client replies need no durable state:
//! a reply follows execution, execution follows a majority of durable accepts (checked by the ghost),
//! and the checker requires the replied update to be applied in the canonical order.
//!
//! Durable accepts must also keep the durable promise ([`ViolationKind::BrokenPromise`]): a batch
//! may not record an accepted proposal of a view below the promise already durable (the server
//! promised, in a PrepareOk, to accept nothing lower), nor of a view above every promise durable
//! once the batch is (a server accepts only in the view it installed).

use super::ghost::Ghost;
use crate::checker::Check;
use crate::report::ViolationKind;
use paxos_core::{ClientUpdate, DataItem, DurableState, PersistBatch, Seq, View};

fn unjustified(detail: String) -> Check {
    Err((ViolationKind::UnjustifiedMessage, detail))
}

/// `node`'s `what` names `(view, seq)` as accepted by it.
pub(super) fn accepted(
    ghost: &Ghost,
    node: usize,
    view: View,
    seq: Seq,
    what: &str,
    d: &DurableState,
) -> Check {
    match ghost.durably_accepted(seq, view, node) {
        None | Some(true) => Ok(()),
        Some(false) => {
            let durable = d
                .accepted
                .get(&seq)
                .map_or_else(|| "nothing".to_string(), |a| format!("view {}", a.view));
            unjustified(format!(
                "n{node} sent {what}({view}) for slot {seq} without a durable accept of it \
                 (durable accepted record there: {durable}, snapshot through {})",
                d.snapshot_seq()
            ))
        }
    }
}

/// `node` sent `Prepare(view)`: its own promise for the view it prepares must be durable.
pub(super) fn prepare(node: usize, view: View, d: &DurableState) -> Check {
    if d.view.last_installed >= view {
        return Ok(());
    }
    unjustified(format!(
        "n{node} sent Prepare({view}) with durable promise {:?}",
        d.view
    ))
}

/// `node` sent `PrepareOk(view)` with `data_list`; `floor` is `max(prepare aru, sender aru)`
/// (`None`: the Prepare was not seen, only the promise is checked).
pub(super) fn prepare_ok(
    node: usize,
    view: View,
    floor: Option<Seq>,
    data_list: &[DataItem],
    d: &DurableState,
) -> Check {
    if d.view.last_installed < view {
        return unjustified(format!(
            "n{node} sent PrepareOk({view}) with durable promise {:?}",
            d.view
        ));
    }
    let Some(floor) = floor else {
        return Ok(());
    };
    let seq_of = |item: &DataItem| match item {
        DataItem::Proposal(p) => p.seq,
        DataItem::Ordered(o) => o.seq,
    };
    for (seq, a) in d.accepted.range(floor.next()..) {
        if a.view >= view {
            continue;
        }
        // The core builds the list in slot order.
        let item = data_list
            .binary_search_by_key(seq, seq_of)
            .ok()
            .map(|i| &data_list[i]);
        let covered = match item {
            Some(DataItem::Ordered(_)) => true,
            Some(DataItem::Proposal(p)) => p.view >= a.view,
            None => false,
        };
        if !covered {
            let got = match item {
                Some(DataItem::Proposal(p)) => format!("a proposal of {}", p.view),
                _ => "nothing".to_string(),
            };
            return unjustified(format!(
                "n{node}'s PrepareOk({view}) (floor {floor}) reports {got} for slot {seq}, where it \
                 durably accepted a proposal of {}",
                a.view
            ));
        }
    }
    Ok(())
}

/// `node` forwarded its client's update `u` to the leader.
pub(super) fn forwarded(node: usize, u: &ClientUpdate, d: &DurableState) -> Check {
    match d.pending.get(&u.client_id) {
        Some(p) if p.timestamp >= u.timestamp => Ok(()),
        p => unjustified(format!(
            "n{node} forwarded {}:{} with durable pending entry {:?}",
            u.client_id.0,
            u.timestamp.0,
            p.map(|p| p.timestamp.0)
        )),
    }
}

/// Batch `b` of `node` is about to be folded into `d`: its accepted proposals keep the promise.
pub(super) fn accepts_keep_promise(node: usize, b: &PersistBatch, d: &DurableState) -> Check {
    let before = d.view.last_installed;
    let after = b.view.map_or(before, |v| v.last_installed.max(before));
    for a in &b.accepted {
        if a.view < before {
            return Err((
                ViolationKind::BrokenPromise,
                format!(
                    "n{node} durably accepts slot {} in {} after durably installing {before}",
                    a.seq, a.view
                ),
            ));
        }
        if a.view > after {
            return Err((
                ViolationKind::BrokenPromise,
                format!(
                    "n{node} durably accepts slot {} in {} with durable promise {after}",
                    a.seq, a.view
                ),
            ));
        }
    }
    Ok(())
}
