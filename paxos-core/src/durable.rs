//! What must reach stable storage, as data [TR §4.3, §7.3; spec §9].
//!
//! The core never writes to disk. It hands out [`PersistBatch`]es through
//! [`crate::Replica::poll_persist`] and holds back every message that depends on a batch until the
//! driver reports it durable with [`crate::Replica::handle_persisted`]. Storage backends fold batches
//! into a [`DurableState`], which is what a restarted server is rebuilt from.

use crate::message::{AcceptedProposal, ClientUpdate, OrderedUpdate, Snapshot};
use crate::types::{ClientId, Seq, UpdateId, View};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Identifies a persist batch. Batches are numbered 1, 2, 3 … and must be made durable in order:
/// reporting batch `k` durable means every batch up to `k` is durable.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct BatchId(pub u64);

/// The server's view promise: the views it attempted and installed [TR Fig 2].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ViewRecord {
    /// The last view this server tried to install.
    pub last_attempted: View,
    /// The last view this server installed; it ignores proposals from lower views.
    pub last_installed: View,
}

/// One atomic write the core asks for.
///
/// Write all of it or none of it, in [`BatchId`] order. When `sync` is true the driver reports it
/// with `handle_persisted` only once it is on stable storage (fdatasync or equivalent).
#[must_use = "persist the batch and report it with handle_persisted"]
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct PersistBatch {
    /// This batch's number.
    pub id: BatchId,
    /// Whether messages wait for this batch (durability `Sync`): the driver must fsync.
    pub sync: bool,
    /// A new view promise, if it changed.
    pub view: Option<ViewRecord>,
    /// Newly accepted proposals (the latest per slot wins).
    pub accepted: Vec<AcceptedProposal>,
    /// Newly ordered updates.
    pub ordered: Vec<OrderedUpdate>,
    /// Client updates this server initiated and keeps pending (the latest per client wins).
    pub pending: Vec<ClientUpdate>,
    /// Pending updates that executed: delete the client's pending entry when its timestamp is at
    /// most the one named (applied after `pending`).
    pub pending_done: Vec<UpdateId>,
    /// A snapshot; history at or below its slot may be dropped once it is durable.
    pub snapshot: Option<Snapshot>,
    /// The snapshot is this server's own compaction of slots it executed from its log, not one
    /// installed from a peer: the records of earlier batches rebuild the same state, so a backend
    /// may make it durable *after* this batch and later ones (off the write path, as the WAL
    /// does with a large image), provided it keeps those records until the snapshot is durable.
    /// An installed snapshot (`false`) is durable together with its batch. An instruction to the
    /// backend, not state: never serialised (records keep their format).
    #[serde(skip)]
    pub snapshot_deferrable: bool,
}

impl PersistBatch {
    /// Whether the batch carries nothing to write.
    pub fn is_empty(&self) -> bool {
        self.view.is_none()
            && self.accepted.is_empty()
            && self.ordered.is_empty()
            && self.pending.is_empty()
            && self.pending_done.is_empty()
            && self.snapshot.is_none()
    }

    /// Approximate size in bytes, for metrics and group-commit decisions.
    pub fn approx_bytes(&self) -> usize {
        let updates = self
            .accepted
            .iter()
            .map(|a| a.update.wire_size() + 16)
            .chain(self.ordered.iter().map(|o| o.update.wire_size() + 8))
            .chain(self.pending.iter().map(ClientUpdate::wire_size))
            .sum::<usize>();
        let snap = self.snapshot.as_ref().map_or(0, |s| s.image().len());
        32 + updates + snap
    }
}

/// Everything a server keeps on stable storage, as loaded at start [TR §5.8].
///
/// Backends may store it any way they like; [`DurableState::apply`] is the reference meaning of a
/// batch, and the in-memory backend and the simulator use it directly.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct DurableState {
    /// How many times storage has been opened; increases at every restart (Ω's epoch).
    pub incarnation: u64,
    /// The view promise.
    pub view: ViewRecord,
    /// Latest accepted proposal per slot above the snapshot.
    pub accepted: BTreeMap<Seq, AcceptedProposal>,
    /// Ordered updates above the snapshot.
    pub ordered: BTreeMap<Seq, OrderedUpdate>,
    /// Pending updates this server initiated, one per client.
    pub pending: BTreeMap<ClientId, ClientUpdate>,
    /// The latest snapshot.
    pub snapshot: Option<Snapshot>,
}

impl DurableState {
    /// Folds a batch into the state, exactly as a backend must.
    ///
    /// A view record never moves backwards and an accepted proposal never replaces one from a higher
    /// view: the core never asks for either, and this is asserted in debug builds.
    pub fn apply(&mut self, batch: &PersistBatch) {
        if let Some(v) = batch.view {
            debug_assert!(
                v.last_attempted >= self.view.last_attempted
                    && v.last_installed >= self.view.last_installed,
                "view promise regressed: {:?} -> {:?}",
                self.view,
                v
            );
            self.view = v;
        }
        let floor = self.snapshot.as_ref().map_or(Seq(0), |s| s.seq());
        for a in &batch.accepted {
            if a.seq <= floor {
                continue;
            }
            match self.accepted.get(&a.seq) {
                Some(old) if old.view > a.view => {
                    debug_assert!(false, "accepted proposal regressed at {}", a.seq);
                }
                _ => {
                    self.accepted.insert(a.seq, a.clone());
                }
            }
        }
        for o in &batch.ordered {
            if o.seq > floor {
                self.ordered.entry(o.seq).or_insert_with(|| o.clone());
            }
        }
        for p in &batch.pending {
            match self.pending.get(&p.client_id) {
                Some(old) if old.timestamp >= p.timestamp => {}
                _ => {
                    self.pending.insert(p.client_id, p.clone());
                }
            }
        }
        for done in &batch.pending_done {
            if self
                .pending
                .get(&done.client)
                .is_some_and(|p| p.timestamp <= done.timestamp)
            {
                self.pending.remove(&done.client);
            }
        }
        if let Some(s) = &batch.snapshot {
            if s.seq() > floor {
                self.truncate_through(s.seq());
                self.snapshot = Some(s.clone());
            }
        }
    }

    /// Drops accepted and ordered entries at or below `seq`.
    pub fn truncate_through(&mut self, seq: Seq) {
        self.accepted = self.accepted.split_off(&seq.next());
        self.ordered = self.ordered.split_off(&seq.next());
    }

    /// The slot covered by the snapshot (0 when there is none).
    pub fn snapshot_seq(&self) -> Seq {
        self.snapshot.as_ref().map_or(Seq(0), |s| s.seq())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NodeId, Timestamp};
    use bytes::Bytes;

    fn upd(c: u64, ts: u64) -> ClientUpdate {
        ClientUpdate {
            client_id: ClientId(c),
            server_id: NodeId(0),
            timestamp: Timestamp(ts),
            payload: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn apply_keeps_latest_pending_and_first_ordered() {
        let mut s = DurableState::default();
        let b = PersistBatch {
            id: BatchId(1),
            pending: vec![upd(1, 2), upd(1, 1)],
            ordered: vec![OrderedUpdate {
                seq: Seq(1),
                update: upd(1, 1),
            }],
            ..Default::default()
        };
        s.apply(&b);
        assert_eq!(s.pending[&ClientId(1)].timestamp, Timestamp(2));
        assert_eq!(s.ordered.len(), 1);
        // An executed earlier update does not delete the later pending one; the later one does.
        let done = |ts| PersistBatch {
            id: BatchId(2),
            pending_done: vec![upd(1, ts).id()],
            ..Default::default()
        };
        s.apply(&done(1));
        assert!(s.pending.contains_key(&ClientId(1)));
        s.apply(&done(2));
        assert!(s.pending.is_empty());
    }

    #[test]
    fn snapshot_truncates_history() {
        let mut s = DurableState::default();
        let b = PersistBatch {
            id: BatchId(1),
            ordered: (1..=5)
                .map(|i| OrderedUpdate {
                    seq: Seq(i),
                    update: upd(1, i),
                })
                .collect(),
            ..Default::default()
        };
        s.apply(&b);
        s.apply(&PersistBatch {
            id: BatchId(2),
            snapshot: Some(Snapshot::new(Seq(3), Bytes::new(), &[])),
            ..Default::default()
        });
        assert_eq!(
            s.ordered.keys().copied().collect::<Vec<_>>(),
            vec![Seq(4), Seq(5)]
        );
        assert_eq!(s.snapshot_seq(), Seq(3));
    }
}
