//! Shared by the integration tests: random operation sequences and the reference model.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use paxos_core::durable::{BatchId, DurableState, PersistBatch, ViewRecord};
use paxos_core::message::{AcceptedProposal, ClientRecord, ClientUpdate, OrderedUpdate, Snapshot};
use paxos_core::{ClientId, NodeId, Seq, Timestamp, View};
use proptest::prelude::*;

/// One batch, before it is made concrete (views must never go backwards, so the concrete views
/// come from running counters in [`Materializer`]).
#[derive(Clone, Debug)]
pub struct BatchSpec {
    pub view: Option<(bool, bool)>,
    pub accepted: Vec<(u8, bool, u8)>,
    pub ordered: Vec<(u8, u8)>,
    pub pending: Vec<(u8, u8)>,
    pub snapshot: Option<u8>,
}

/// One step of a conformance run.
#[derive(Clone, Debug)]
pub enum Op {
    Append(Vec<BatchSpec>, bool),
    Truncate(u8),
    SaveSnapshot(u8),
    Sync,
    Reopen,
}

pub fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    (
        proptest::option::weighted(0.3, (any::<bool>(), any::<bool>())),
        proptest::collection::vec((1u8..64, any::<bool>(), 0u8..48), 0..5),
        proptest::collection::vec((1u8..64, 0u8..48), 0..5),
        proptest::collection::vec((0u8..6, 0u8..20), 0..3),
        proptest::option::weighted(0.08, 1u8..64),
    )
        .prop_map(|(view, accepted, ordered, pending, snapshot)| BatchSpec {
            view,
            accepted,
            ordered,
            pending,
            snapshot,
        })
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (proptest::collection::vec(batch_spec(), 1..4), any::<bool>())
            .prop_map(|(b, s)| Op::Append(b, s)),
        1 => (0u8..64).prop_map(Op::Truncate),
        1 => (1u8..64).prop_map(Op::SaveSnapshot),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

pub fn update(client: u64, ts: u64, len: usize, fill: u8) -> ClientUpdate {
    ClientUpdate {
        client_id: ClientId(client),
        server_id: NodeId((client % 3) as u32),
        timestamp: Timestamp(ts),
        payload: Bytes::from(vec![fill; len]),
    }
}

pub fn snapshot(seq: u64) -> Snapshot {
    Snapshot::new(
        Seq(seq),
        Bytes::from(format!("app state through {seq}").into_bytes()),
        &[ClientRecord {
            client: ClientId(seq % 5),
            last_executed: Timestamp(seq),
            last_result: Bytes::from_static(b"ok"),
            last_active: paxos_core::Time::ZERO,
            nonce: None,
        }],
    )
}

/// Turns specs into batches whose views only move forward.
#[derive(Default)]
pub struct Materializer {
    next_id: u64,
    view: ViewRecord,
    accept_view: u64,
}

impl Materializer {
    pub fn batch(&mut self, spec: &BatchSpec) -> PersistBatch {
        self.next_id += 1;
        let view = spec.view.map(|(a, i)| {
            self.view.last_attempted = View(self.view.last_attempted.0 + u64::from(a));
            if i && self.view.last_installed < self.view.last_attempted {
                self.view.last_installed = self.view.last_attempted;
            }
            self.view
        });
        let accepted = spec
            .accepted
            .iter()
            .map(|&(seq, bump, len)| {
                self.accept_view += u64::from(bump);
                AcceptedProposal {
                    seq: Seq(seq.into()),
                    view: View(self.accept_view),
                    update: update(u64::from(seq) % 7, u64::from(seq), len.into(), seq),
                }
            })
            .collect();
        let ordered = spec
            .ordered
            .iter()
            .map(|&(seq, len)| OrderedUpdate {
                seq: Seq(seq.into()),
                update: update(u64::from(seq) % 5, u64::from(seq), len.into(), !seq),
            })
            .collect();
        let pending = spec
            .pending
            .iter()
            .map(|&(c, ts)| update(c.into(), ts.into(), 8, c ^ ts))
            .collect();
        PersistBatch {
            id: BatchId(self.next_id),
            sync: false,
            view,
            accepted,
            ordered,
            pending,
            pending_done: vec![],
            snapshot: spec.snapshot.map(|s| snapshot(s.into())),
            snapshot_deferrable: false,
        }
    }
}

/// The reference: [`DurableState::apply`] and the in-memory backend's rules for the other calls.
pub fn model_save_snapshot(model: &mut DurableState, snap: &Snapshot) {
    if snap.seq() > model.snapshot_seq() {
        model.truncate_through(snap.seq());
        model.snapshot = Some(snap.clone());
    }
}

/// A batch of `n` accepted updates of `bytes` bytes each (the benchmark's and crash tests' shape).
pub fn fixed_batch(id: u64, n: usize, bytes: usize) -> PersistBatch {
    PersistBatch {
        id: BatchId(id),
        sync: true,
        accepted: (0..n as u64)
            .map(|i| AcceptedProposal {
                seq: Seq(id * n as u64 + i + 1),
                view: View(1),
                update: update(id % 11, id, bytes, (id % 251) as u8),
            })
            .collect(),
        ..Default::default()
    }
}

/// WAL options with small segments and checkpoints (so that a test crosses rotations and
/// checkpoints quickly), zero-filled preallocation and deferred snapshots.
pub fn small_wal_opts(segment_bytes: u64, checkpoint_bytes: u64) -> paxos_storage::wal::WalOptions {
    paxos_storage::wal::WalOptions {
        segment_bytes,
        preallocation: paxos_storage::wal::Preallocation::Zeros,
        checkpoint_bytes,
        max_free_segments: 2,
        prefill_segments: 1,
        overlap_sync_updates: 0,
        defer_snapshots: true,
    }
}

/// Batch `id` of the crash and power-cut tests: an accepted proposal at slot `id` (payload
/// 64 + `id % spread` bytes) and a pending update of client 0 with timestamp `id`, so the
/// recovered state tells exactly which batches are present.
pub fn numbered_batch(id: u64, spread: u64) -> PersistBatch {
    let mut b = fixed_batch(id, 1, 64 + (id % spread) as usize);
    b.accepted[0].seq = Seq(id);
    b.pending = vec![update(0, id, 16, 7)];
    b
}
