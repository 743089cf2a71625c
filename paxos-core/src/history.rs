//! The global history: one [`Slot`] per sequence number above the compaction floor.
//!
//! Slots live in a ring buffer indexed by `seq - base`, because the hot path touches consecutive
//! slots near the aru and a map lookup per update would dominate the core's CPU cost.

use crate::message::ClientUpdate;
use crate::types::{Seq, View};
use std::collections::VecDeque;

/// A bit set of servers (cluster size is at most 64).
pub(crate) type NodeSet = u64;

/// What one server knows about one sequence number [TR Fig 2].
#[derive(Clone, Debug, Default, Hash)]
pub(crate) struct Slot {
    /// The latest proposal accepted or made here: `(view, update)`.
    pub(crate) proposal: Option<(View, ClientUpdate)>,
    /// The view of the latest proposal this server accepted here (handed to storage, or loaded
    /// from it), and the persist batch that carries it (0: already durable, or no storage).
    /// Unlike `proposal` it survives ordering and is never set from a peer's data list: it is
    /// what an Accept from this server may name.
    pub(crate) accepted: Option<(View, u64)>,
    /// The view the `accepts` set counts for.
    pub(crate) accept_view: View,
    /// Servers known to have durably accepted the proposal of `accept_view`.
    pub(crate) accepts: NodeSet,
    /// The globally ordered update, once known.
    pub(crate) ordered: Option<ClientUpdate>,
    /// Ordered here by a quorum of accepts in the installed view, as opposed to learned from a
    /// peer (reconciliation, a PrepareOk, an ordering push). Only executing such a slot is progress
    /// of the installed view for the election strategy.
    pub(crate) ordered_in_view: bool,
}

impl Slot {
    /// Records an accept by `node` for the proposal of `view`; returns whether anything changed.
    pub(crate) fn add_accept(&mut self, view: View, node: usize) -> bool {
        if view > self.accept_view {
            if let Some((pv, _)) = &self.proposal {
                if *pv > view {
                    return false;
                }
            }
            self.accept_view = view;
            self.accepts = 0;
        }
        if view == self.accept_view {
            let bit = 1u64 << node;
            let changed = self.accepts & bit == 0;
            self.accepts |= bit;
            return changed;
        }
        false
    }

    /// The update chosen for this slot if `majority` accepts for its proposal's view are known.
    pub(crate) fn chosen(&self, majority: usize) -> Option<&ClientUpdate> {
        match &self.proposal {
            Some((v, u))
                if *v == self.accept_view && self.accepts.count_ones() as usize >= majority =>
            {
                Some(u)
            }
            _ => None,
        }
    }
}

/// Slots `base..base+len`, all below `base` compacted away.
#[derive(Clone, Debug, Hash)]
pub(crate) struct History {
    base: u64,
    slots: VecDeque<Slot>,
}

impl History {
    /// An empty history whose first slot is `first`.
    pub(crate) fn new(first: Seq) -> History {
        History {
            base: first.0.max(1),
            slots: VecDeque::new(),
        }
    }

    /// The first slot still kept.
    pub(crate) fn first(&self) -> Seq {
        Seq(self.base)
    }

    /// The slot at `seq`, if kept and present.
    pub(crate) fn get(&self, seq: Seq) -> Option<&Slot> {
        let i = seq.0.checked_sub(self.base)?;
        self.slots.get(usize::try_from(i).ok()?)
    }

    /// The slot at `seq`, created (with the ones before it) when missing. `None` below the base.
    /// The caller bounds `seq` so the buffer cannot grow without limit.
    pub(crate) fn get_or_create(&mut self, seq: Seq) -> Option<&mut Slot> {
        let i = usize::try_from(seq.0.checked_sub(self.base)?).ok()?;
        while self.slots.len() <= i {
            self.slots.push_back(Slot::default());
        }
        self.slots.get_mut(i)
    }

    /// The slot at `seq`, if kept and present.
    pub(crate) fn get_mut(&mut self, seq: Seq) -> Option<&mut Slot> {
        let i = seq.0.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(i).ok()?)
    }

    /// Drops every slot at or below `seq`, handing each dropped slot to `dropped`.
    pub(crate) fn truncate_through(&mut self, seq: Seq, mut dropped: impl FnMut(Slot)) {
        if seq.0 < self.base {
            return;
        }
        let n = seq.0 - self.base + 1;
        let k = usize::try_from(n).map_or(self.slots.len(), |n| n.min(self.slots.len()));
        for s in self.slots.drain(..k) {
            dropped(s);
        }
        self.base = seq.0 + 1;
    }

    /// Iterates `(seq, slot)` for kept slots with `seq > after`.
    pub(crate) fn iter_above(&self, after: Seq) -> impl Iterator<Item = (Seq, &Slot)> {
        let skip = after.0.saturating_add(1).saturating_sub(self.base);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .skip(skip)
            .map(move |(i, s)| (Seq(base + i as u64), s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_truncate() {
        let mut h = History::new(Seq(1));
        h.get_or_create(Seq(5)).unwrap().accept_view = View(2);
        assert_eq!(h.get(Seq(5)).unwrap().accept_view, View(2));
        assert!(h.get(Seq(9)).is_none());
        let mut n = 0;
        h.truncate_through(Seq(3), |_| n += 1);
        assert_eq!(n, 3);
        assert_eq!(h.first(), Seq(4));
        assert!(h.get(Seq(3)).is_none());
        assert!(h.get_or_create(Seq(2)).is_none());
        h.truncate_through(Seq(100), |_| {});
        assert_eq!(h.first(), Seq(101));
        assert_eq!(h.iter_above(Seq(0)).count(), 0);
    }

    #[test]
    fn accepts_reset_on_higher_view_and_choose_at_majority() {
        let mut s = Slot {
            proposal: Some((
                View(3),
                ClientUpdate {
                    client_id: crate::ClientId(1),
                    server_id: crate::NodeId(0),
                    timestamp: crate::Timestamp(1),
                    payload: bytes::Bytes::new(),
                },
            )),
            ..Slot::default()
        };
        assert!(s.add_accept(View(3), 0));
        assert!(!s.add_accept(View(3), 0));
        assert!(s.chosen(2).is_none());
        assert!(s.add_accept(View(3), 2));
        assert!(s.chosen(2).is_some());
        // An accept from a lower view than the proposal never counts.
        assert!(!s.add_accept(View(2), 1));
    }
}
