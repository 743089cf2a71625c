//! The ghost record of every accept: which value each `(view, slot)` holds and who accepted it
//! [TR §5.5, Fig 10; the Paxos safety property P2 of §2].
//!
//! Paxos is safe because at most one value per slot is ever *chosen*, i.e. accepted by a majority
//! of servers in one view. The replicas only ever see their own partial count of accepts; the
//! ghost sees every accept any server could count, as it happens, and checks the property itself:
//! a second value backed by a majority in any view is [`ViolationKind::ChosenTwice`] at the moment
//! its majority forms, before any replica executes it, and a value a replica orders or executes
//! without a majority behind it is [`ViolationKind::UnchosenOrdered`].
//!
//! The ghost counts accepts exactly where paxos-core can count them (`count_accept`):
//!
//! * an `Accept(v, seqs)` that leaves server `i` is `i`'s accept of each `(v, s)` (`on_accept`);
//! * a `Proposal(v, items)` that leaves `leader(v)` is the leader's own accept of each item when
//!   `!leader_accepts_separately` (`on_proposal` counts it for the sender);
//! * a server counts its own accept internally (`hold_self_accept`): once the batch carrying the
//!   accepted proposal is durable with `Durability::Sync`, at once otherwise. The ghost counts it
//!   when the batch is folded into the simulator's durable state (`Sync`) or handed out by
//!   `poll_persist` (`Async`). `None` writes no batches: a self-accept is seen through the Accept
//!   or Proposal message of the same drain, except for a slot the server also executes and
//!   compacts in that round, whose accept flush drops (see `Oracles::on_canonical`).
//!
//! Values are defined by the Proposals of `leader(v)` and by every server's accepted-proposal
//! records (a leader whose Proposal message was dropped at flush still accepted it); two values
//! for one `(view, slot)` are [`ViolationKind::ProposalConflict`], an Accept of a `(view, slot)`
//! nobody proposed is [`ViolationKind::AcceptUnproposed`].

use crate::checker::Check;
use crate::report::ViolationKind;
use crate::state_machine::{finish, mix, payload_hash};
use paxos_core::{ClientUpdate, Seq, View};
use std::collections::{BTreeMap, VecDeque};

/// A bit set of servers (at most 64).
pub(crate) type NodeSet = u64;

/// Slots further than this above the ghost's base are not tracked (no correct run comes close:
/// the core never creates slots more than 2^20 above its aru).
const MAX_AHEAD: u64 = 1 << 21;

/// Prepare arus remembered (one per view; older views are forgotten first).
const MAX_PREPARES: usize = 4096;

/// A value's identity: a hash of the whole update, and `(client, timestamp)` for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Value {
    key: u64,
    client: u64,
    ts: u64,
}

impl Value {
    /// The identity of `u` (client, server, timestamp and payload bytes).
    pub(crate) fn of(u: &ClientUpdate) -> Value {
        let h = mix(mix(u.client_id.0, u.timestamp.0), u64::from(u.server_id.0));
        Value {
            key: finish(mix(h, payload_hash(&u.payload))),
            client: u.client_id.0,
            ts: u.timestamp.0,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.client == u64::MAX {
            write!(f, "no-op:{}", self.ts)
        } else {
            write!(f, "{}:{}", self.client, self.ts)
        }
    }
}

/// The proposal of one view at one slot, and who accepted it.
#[derive(Clone, Copy, Debug)]
struct Vote {
    view: View,
    value: Value,
    /// Servers any replica may have counted as accepting it.
    accepts: NodeSet,
    /// Servers whose durable state recorded it as accepted (at some point).
    durable: NodeSet,
}

/// Everything the ghost knows about one slot. Almost every slot sees one view, so the first vote
/// is stored inline and `more` stays unallocated.
#[derive(Clone, Debug, Default)]
struct GhostSlot {
    first: Option<Vote>,
    more: Vec<Vote>,
    /// The value a majority accepted, and the first view in which it did.
    chosen: Option<(View, Value)>,
}

impl GhostSlot {
    fn vote(&self, view: View) -> Option<&Vote> {
        match &self.first {
            Some(v) if v.view == view => Some(v),
            _ => self.more.iter().find(|v| v.view == view),
        }
    }

    fn vote_mut(&mut self, view: View) -> Option<&mut Vote> {
        match &mut self.first {
            Some(v) if v.view == view => Some(v),
            _ => self.more.iter_mut().find(|v| v.view == view),
        }
    }

    fn insert(&mut self, vote: Vote) {
        if self.first.is_none() {
            self.first = Some(vote);
        } else {
            self.more.push(vote);
        }
    }
}

/// The ghost accept record of a whole run.
pub(crate) struct Ghost {
    /// True majority, ⌊N/2⌋ + 1 (whatever quorum the replicas use).
    majority: u32,
    /// Slot of `slots[0]`.
    base: u64,
    slots: VecDeque<GhostSlot>,
    /// The aru each view's leader sent in its Prepare (the floor of that view's PrepareOks).
    prepare_aru: BTreeMap<View, Seq>,
}

impl Ghost {
    pub(crate) fn new(servers: usize) -> Ghost {
        Ghost {
            majority: (servers / 2 + 1) as u32,
            base: 1,
            slots: VecDeque::new(),
            prepare_aru: BTreeMap::new(),
        }
    }

    /// The slot, created when missing; `None` when trimmed or absurdly far ahead.
    fn slot_mut(&mut self, seq: Seq) -> Option<&mut GhostSlot> {
        let i = seq.0.checked_sub(self.base)?;
        if i >= MAX_AHEAD {
            return None;
        }
        let i = i as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, GhostSlot::default);
        }
        self.slots.get_mut(i)
    }

    fn slot(&self, seq: Seq) -> Option<&GhostSlot> {
        let i = seq.0.checked_sub(self.base)?;
        self.slots.get(usize::try_from(i).ok()?)
    }

    /// Whether `seq` was trimmed (nothing about it can be checked any more).
    pub(crate) fn trimmed(&self, seq: Seq) -> bool {
        seq.0 < self.base
    }

    /// `what` binds `value` to `(view, seq)`; it must be the only value of that view there.
    pub(crate) fn define(&mut self, seq: Seq, view: View, value: Value, what: &str) -> Check {
        let Some(slot) = self.slot_mut(seq) else {
            return Ok(());
        };
        match slot.vote(view) {
            Some(v) if v.value.key != value.key => Err((
                ViolationKind::ProposalConflict,
                format!(
                    "{what} binds {value} to slot {seq} in {view}, which already holds {} there",
                    v.value
                ),
            )),
            Some(_) => Ok(()),
            None => {
                slot.insert(Vote {
                    view,
                    value,
                    accepts: 0,
                    durable: 0,
                });
                Ok(())
            }
        }
    }

    /// Server `node` accepted the proposal of `(view, seq)` (`durable`: its durable state now
    /// records it). With `strict`, a `(view, seq)` nobody proposed is a violation; otherwise the
    /// accept is ignored.
    pub(crate) fn accept(
        &mut self,
        seq: Seq,
        view: View,
        node: usize,
        durable: bool,
        strict: bool,
    ) -> Check {
        let majority = self.majority;
        let Some(slot) = self.slot_mut(seq) else {
            return Ok(());
        };
        let Some(vote) = slot.vote_mut(view) else {
            if !strict {
                return Ok(());
            }
            return Err((
                ViolationKind::AcceptUnproposed,
                format!("n{node} accepts slot {seq} in {view}, where nothing was proposed"),
            ));
        };
        let bit = 1u64 << node;
        if durable {
            vote.durable |= bit;
        }
        if vote.accepts & bit != 0 {
            return Ok(());
        }
        vote.accepts |= bit;
        if vote.accepts.count_ones() < majority {
            return Ok(());
        }
        let (value, accepts) = (vote.value, vote.accepts);
        match slot.chosen {
            None => {
                slot.chosen = Some((view, value));
                Ok(())
            }
            Some((_, c)) if c.key == value.key => Ok(()),
            Some((cv, c)) => Err((
                ViolationKind::ChosenTwice,
                format!(
                    "slot {seq}: {value} is accepted in {view} by {} (majority {majority}), but {c} \
                     was chosen there in {cv}",
                    nodes(accepts)
                ),
            )),
        }
    }

    /// Whether `node`'s durable state ever recorded the proposal of `(view, seq)` as accepted;
    /// `None` when the ghost no longer knows (trimmed slot).
    pub(crate) fn durably_accepted(&self, seq: Seq, view: View, node: usize) -> Option<bool> {
        if self.trimmed(seq) {
            return None;
        }
        Some(
            self.slot(seq)
                .and_then(|s| s.vote(view))
                .is_some_and(|v| v.durable & (1u64 << node) != 0),
        )
    }

    /// The value bound to `(view, seq)`, if known.
    pub(crate) fn value(&self, seq: Seq, view: View) -> Option<Value> {
        self.slot(seq).and_then(|s| s.vote(view)).map(|v| v.value)
    }

    /// `what` treats `value` as ordered at `seq`: a majority must have accepted it in some view.
    /// `presumed` is a server whose own accept of `value` is presumed (see [`Oracles`]).
    ///
    /// [`Oracles`]: super::Oracles
    pub(crate) fn check_chosen(
        &self,
        seq: Seq,
        value: Value,
        what: &str,
        presumed: Option<usize>,
    ) -> Check {
        if self.trimmed(seq) || seq.0 - self.base >= MAX_AHEAD {
            return Ok(());
        }
        let slot = self.slot(seq);
        let extra = presumed.map_or(0, |i| 1u64 << i);
        let presumed_majority = slot.is_some_and(|s| {
            s.chosen.is_none()
                && std::iter::once(s.first.as_ref())
                    .flatten()
                    .chain(&s.more)
                    .any(|v| {
                        v.value.key == value.key
                            && (v.accepts | extra).count_ones() >= self.majority
                    })
        });
        match slot.and_then(|s| s.chosen) {
            Some((_, c)) if c.key == value.key => Ok(()),
            None if presumed_majority => Ok(()),
            Some((cv, c)) => Err((
                ViolationKind::UnchosenOrdered,
                format!("{what} orders {value} at slot {seq}, but {c} was chosen there in {cv}"),
            )),
            None => {
                let best = slot.and_then(|s| {
                    std::iter::once(s.first.as_ref())
                        .flatten()
                        .chain(&s.more)
                        .filter(|v| v.value.key == value.key)
                        .max_by_key(|v| v.accepts.count_ones())
                });
                let backing = best.map_or_else(
                    || "no accept at all".to_string(),
                    |v| format!("accepts {} in {}", nodes(v.accepts), v.view),
                );
                Err((
                    ViolationKind::UnchosenOrdered,
                    format!(
                        "{what} orders {value} at slot {seq}, which no majority ({}) accepted \
                         ({backing})",
                        self.majority
                    ),
                ))
            }
        }
    }

    /// The leader of `view` sent `Prepare(view, aru)`.
    pub(crate) fn note_prepare(&mut self, view: View, aru: Seq) {
        // One Prepare aru per view (resends repeat it); keep the highest if that ever changes,
        // which only weakens the PrepareOk check.
        let e = self.prepare_aru.entry(view).or_insert(aru);
        *e = (*e).max(aru);
        if self.prepare_aru.len() > MAX_PREPARES {
            self.prepare_aru.pop_first();
        }
    }

    /// The aru of `view`'s Prepare, if seen.
    pub(crate) fn prepare_aru(&self, view: View) -> Option<Seq> {
        self.prepare_aru.get(&view).copied()
    }

    /// Forgets slots below `floor` (no server can propose, accept or order them again).
    pub(crate) fn trim(&mut self, floor: u64) {
        while self.base < floor {
            if self.slots.pop_front().is_none() {
                self.base = floor;
                break;
            }
            self.base += 1;
        }
    }

    /// Slots tracked (for tests of the memory bound).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.slots.len()
    }
}

/// `{n0,n2}`.
fn nodes(set: NodeSet) -> String {
    let ids: Vec<String> = (0..64)
        .filter(|i| set & (1u64 << i) != 0)
        .map(|i| format!("n{i}"))
        .collect();
    format!("{{{}}}", ids.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use paxos_core::{ClientId, NodeId, Timestamp};

    fn val(c: u64) -> Value {
        Value::of(&ClientUpdate {
            client_id: ClientId(c),
            server_id: NodeId(0),
            timestamp: Timestamp(1),
            payload: Bytes::from_static(b"p"),
        })
    }

    fn kind(c: Check) -> Option<ViolationKind> {
        c.err().map(|e| e.0)
    }

    #[test]
    fn second_majority_for_another_value_is_chosen_twice() {
        let mut g = Ghost::new(3);
        let s = Seq(4);
        g.define(s, View(1), val(1), "p").unwrap();
        g.accept(s, View(1), 0, false, true).unwrap();
        assert!(g.check_chosen(s, val(1), "x", None).is_err());
        g.accept(s, View(1), 1, false, true).unwrap();
        g.check_chosen(s, val(1), "x", None).unwrap();
        // The same value chosen again in a later view is fine.
        g.define(s, View(4), val(1), "p").unwrap();
        g.accept(s, View(4), 1, false, true).unwrap();
        g.accept(s, View(4), 2, false, true).unwrap();
        // Another value: one accept is fine, a majority is not.
        g.define(s, View(7), val(2), "p").unwrap();
        g.accept(s, View(7), 2, false, true).unwrap();
        assert_eq!(
            kind(g.accept(s, View(7), 0, false, true)),
            Some(ViolationKind::ChosenTwice)
        );
        assert_eq!(
            kind(g.check_chosen(s, val(2), "x", None)),
            Some(ViolationKind::UnchosenOrdered)
        );
    }

    #[test]
    fn conflicts_unproposed_accepts_durable_bits_and_trim() {
        let mut g = Ghost::new(5);
        g.define(Seq(1), View(2), val(1), "p").unwrap();
        assert_eq!(
            kind(g.define(Seq(1), View(2), val(2), "p")),
            Some(ViolationKind::ProposalConflict)
        );
        assert_eq!(
            kind(g.accept(Seq(1), View(3), 0, false, true)),
            Some(ViolationKind::AcceptUnproposed)
        );
        g.accept(Seq(1), View(3), 0, false, false).unwrap();
        assert_eq!(g.durably_accepted(Seq(1), View(2), 1), Some(false));
        g.accept(Seq(1), View(2), 1, true, true).unwrap();
        assert_eq!(g.durably_accepted(Seq(1), View(2), 1), Some(true));
        g.define(Seq(9), View(2), val(3), "p").unwrap();
        assert_eq!(g.tracked(), 9);
        g.trim(5);
        assert_eq!(g.tracked(), 5);
        assert_eq!(g.durably_accepted(Seq(1), View(2), 1), None);
        g.check_chosen(Seq(2), val(9), "x", None).unwrap();
        g.trim(20);
        assert_eq!(g.tracked(), 0);
        assert!(g.trimmed(Seq(19)) && !g.trimmed(Seq(20)));
    }
}
