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
use paxos_core::{ClientUpdate, DataItem, DurableState, PersistBatch, PrepareOkPart, Seq, View};

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

/// `node` sent `PrepareOk(view)` with `data_list`, the part `part` of its whole data list; `floor`
/// is `max(prepare aru, sender aru)` (`None`: the Prepare was not seen, only the promise is
/// checked). Each part is checked over the slots it covers; the parts cover every slot above the
/// floor.
pub(super) fn prepare_ok(
    node: usize,
    view: View,
    floor: Option<Seq>,
    data_list: &[DataItem],
    part: PrepareOkPart,
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
    let from = floor.max(part.after).next();
    let through = part.through.unwrap_or(Seq(u64::MAX));
    for (seq, a) in d.accepted.range(from..=through.max(from)) {
        if a.view >= view || *seq > through {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracles::ghost::Value;
    use bytes::Bytes;
    use paxos_core::{AcceptedProposal, ClientId, NodeId, OrderedUpdate, Timestamp, ViewRecord};

    fn upd(c: u64, ts: u64) -> ClientUpdate {
        ClientUpdate {
            client_id: ClientId(c),
            server_id: NodeId(0),
            timestamp: Timestamp(ts),
            payload: Bytes::from_static(b"p"),
        }
    }

    fn acc(seq: u64, view: u64) -> AcceptedProposal {
        AcceptedProposal {
            seq: Seq(seq),
            view: View(view),
            update: upd(seq, 1),
        }
    }

    fn kind(c: Check) -> Option<ViolationKind> {
        c.err().map(|e| e.0)
    }

    fn durable(installed: u64, accepted: &[AcceptedProposal]) -> DurableState {
        let mut d = DurableState::default();
        d.apply(&PersistBatch {
            view: Some(ViewRecord {
                last_attempted: View(installed),
                last_installed: View(installed),
            }),
            accepted: accepted.to_vec(),
            pending: vec![upd(7, 3)],
            ..PersistBatch::default()
        });
        d
    }

    #[test]
    fn prepare_ok_must_be_promised_and_report_older_accepts_above_its_floor() {
        let d = durable(4, &[acc(2, 1), acc(5, 1), acc(6, 2), acc(7, 4)]);
        let p = |a: &AcceptedProposal| DataItem::Proposal(a.clone());
        let ordered = DataItem::Ordered(OrderedUpdate {
            seq: Seq(6),
            update: upd(6, 1),
        });
        let full = [p(&acc(5, 1)), ordered.clone()];
        // Slot 2 is below the floor; slot 7 was accepted in the promised view itself.
        prepare_ok(1, View(4), Some(Seq(3)), &full, PrepareOkPart::WHOLE, &d).unwrap();
        let higher = [p(&acc(5, 3)), ordered.clone()];
        prepare_ok(1, View(4), Some(Seq(3)), &higher, PrepareOkPart::WHOLE, &d).unwrap();
        let omits = [p(&acc(5, 1))];
        assert_eq!(
            kind(prepare_ok(
                1,
                View(4),
                Some(Seq(3)),
                &omits,
                PrepareOkPart::WHOLE,
                &d
            )),
            Some(ViolationKind::UnjustifiedMessage)
        );
        let lower = [p(&acc(5, 0)), ordered];
        assert_eq!(
            kind(prepare_ok(
                1,
                View(4),
                Some(Seq(3)),
                &lower,
                PrepareOkPart::WHOLE,
                &d
            )),
            Some(ViolationKind::UnjustifiedMessage)
        );
        prepare_ok(1, View(4), Some(Seq(6)), &[], PrepareOkPart::WHOLE, &d).unwrap();
        // A part is judged over its own slots: slot 5 lies in a later part, then in this one.
        let first = PrepareOkPart {
            after: Seq(3),
            through: Some(Seq(4)),
        };
        prepare_ok(1, View(4), Some(Seq(3)), &[], first, &d).unwrap();
        let second = PrepareOkPart {
            after: Seq(4),
            through: None,
        };
        assert_eq!(
            kind(prepare_ok(1, View(4), Some(Seq(3)), &[], second, &d)),
            Some(ViolationKind::UnjustifiedMessage)
        );
        assert_eq!(
            kind(prepare_ok(
                1,
                View(5),
                None,
                &full,
                PrepareOkPart::WHOLE,
                &d
            )),
            Some(ViolationKind::UnjustifiedMessage)
        );
        prepare(1, View(4), &d).unwrap();
        assert!(prepare(1, View(5), &d).is_err());
    }

    #[test]
    fn accepts_forwards_and_promises() {
        let d = durable(4, &[]);
        let mut g = Ghost::new(3);
        g.define(Seq(3), View(4), Value::of(&upd(3, 1)), "t")
            .unwrap();
        assert!(accepted(&g, 1, View(4), Seq(3), "Accept", &d).is_err());
        g.accept(Seq(3), View(4), 1, true, true).unwrap();
        accepted(&g, 1, View(4), Seq(3), "Accept", &d).unwrap();
        assert!(accepted(&g, 2, View(4), Seq(3), "Accept", &d).is_err());
        g.trim(4);
        accepted(&g, 2, View(4), Seq(3), "Accept", &d).unwrap();

        forwarded(1, &upd(7, 3), &d).unwrap();
        forwarded(1, &upd(7, 2), &d).unwrap();
        assert!(forwarded(1, &upd(7, 4), &d).is_err());
        assert!(forwarded(1, &upd(8, 1), &d).is_err());

        let batch = |view: Option<u64>, a: AcceptedProposal| PersistBatch {
            view: view.map(|v| ViewRecord {
                last_attempted: View(v),
                last_installed: View(v),
            }),
            accepted: vec![a],
            ..PersistBatch::default()
        };
        accepts_keep_promise(1, &batch(None, acc(9, 4)), &d).unwrap();
        accepts_keep_promise(1, &batch(Some(6), acc(9, 6)), &d).unwrap();
        for b in [batch(None, acc(9, 3)), batch(None, acc(9, 5))] {
            assert_eq!(
                kind(accepts_keep_promise(1, &b, &d)),
                Some(ViolationKind::BrokenPromise)
            );
        }
    }
}
