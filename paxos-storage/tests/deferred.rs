//! Own snapshots written off the append path by the WAL (`PersistBatch::snapshot_deferrable`):
//! named by the log only once their image is durable, never lost, and never needed before that
//! (the records since the previous snapshot are kept until then).

mod common;

use bytes::Bytes;
use common::*;
use paxos_core::durable::PersistBatch;
use paxos_core::message::Snapshot;
use paxos_core::Seq;
use paxos_storage::wal::{WalOptions, WalStorage};
use paxos_storage::Storage;
use std::path::Path;

/// Accepted proposals at slots `from..=to` in one batch.
fn accepts(id: u64, from: u64, to: u64) -> PersistBatch {
    let mut b = fixed_batch(id, (to - from + 1) as usize, 100);
    for (i, a) in b.accepted.iter_mut().enumerate() {
        a.seq = Seq(from + i as u64);
    }
    b
}

/// A snapshot at `seq` with an image of about `bytes`.
fn own_snapshot(seq: u64, bytes: usize) -> Snapshot {
    Snapshot::new(Seq(seq), Bytes::from(vec![seq as u8; bytes]), &[])
}

fn with_snapshot(mut b: PersistBatch, snap: Snapshot, own: bool) -> PersistBatch {
    b.snapshot = Some(snap);
    b.snapshot_deferrable = own;
    b
}

fn images(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("snapshot-") && n.ends_with(".img"))
        .collect();
    v.sort();
    v
}

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 1 << 20,
        ..WalOptions::default()
    }
}

#[test]
fn an_own_snapshot_is_named_once_durable_and_compacts_then() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), opts()).unwrap();
    wal.load().unwrap();
    wal.append(&[accepts(1, 1, 10)], true).unwrap();
    let snap = own_snapshot(10, 5 << 20);
    wal.append(
        &[with_snapshot(accepts(2, 11, 12), snap.clone(), true)],
        true,
    )
    .unwrap();
    wal.settle_snapshots().unwrap();
    assert_eq!(wal.snapshot_writes_in_flight(), 0);
    drop(wal);

    let mut wal = WalStorage::open(dir.path(), opts()).unwrap();
    let st = wal.load().unwrap();
    assert_eq!(st.snapshot.as_ref().map(|s| s.seq()), Some(Seq(10)));
    assert_eq!(st.snapshot.as_ref().unwrap().image(), snap.image());
    let slots: Vec<u64> = st.accepted.keys().map(|s| s.0).collect();
    assert_eq!(
        slots,
        vec![11, 12],
        "history at or below the snapshot is dropped"
    );
    assert_eq!(images(dir.path()).len(), 1);
}

#[test]
fn a_crash_before_the_image_is_named_keeps_the_log_and_the_older_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), opts()).unwrap();
    wal.load().unwrap();
    let first = own_snapshot(5, 1000);
    wal.append(&[with_snapshot(accepts(1, 1, 8), first, false)], true)
        .unwrap();
    wal.append(&[accepts(2, 9, 10)], true).unwrap();
    let snap = own_snapshot(10, 3 << 20);
    wal.append(&[with_snapshot(accepts(3, 11, 12), snap, true)], true)
        .unwrap();
    // Dropped without another append: the image may be complete on disk, but no record names it
    // (the window in which a crash leaves an unreferenced file).
    drop(wal);

    let mut wal = WalStorage::open(dir.path(), opts()).unwrap();
    let st = wal.load().unwrap();
    assert_eq!(
        st.snapshot.as_ref().map(|s| s.seq()),
        Some(Seq(5)),
        "the installed snapshot, written with its batch"
    );
    let slots: Vec<u64> = st.accepted.keys().map(|s| s.0).collect();
    assert_eq!(slots, (6..=12).collect::<Vec<_>>(), "every record after it");
    assert_eq!(
        images(dir.path()).len(),
        1,
        "the unreferenced image is deleted"
    );
}

#[test]
fn checkpoints_while_an_image_is_in_flight_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    // A checkpoint after every append: each one deletes unreferenced images, but not one in flight.
    let o = WalOptions {
        checkpoint_bytes: 1,
        ..opts()
    };
    let mut wal = WalStorage::open(dir.path(), o.clone()).unwrap();
    wal.load().unwrap();
    let snap = own_snapshot(4, 24 << 20);
    wal.append(&[with_snapshot(accepts(1, 1, 4), snap.clone(), true)], true)
        .unwrap();
    for id in 2..40u64 {
        wal.append(&[accepts(id, id + 3, id + 3)], true).unwrap();
    }
    wal.settle_snapshots().unwrap();
    drop(wal);
    let mut wal = WalStorage::open(dir.path(), o).unwrap();
    let st = wal.load().unwrap();
    assert_eq!(st.snapshot.as_ref().map(|s| s.seq()), Some(Seq(4)));
    assert_eq!(st.snapshot.unwrap().image(), snap.image());
    assert_eq!(st.accepted.len(), 38);
}

#[test]
fn an_installed_snapshot_is_durable_with_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), opts()).unwrap();
    wal.load().unwrap();
    let snap = own_snapshot(20, 2 << 20);
    wal.append(&[with_snapshot(accepts(1, 21, 22), snap, false)], true)
        .unwrap();
    assert_eq!(wal.snapshot_writes_in_flight(), 0);
    drop(wal);
    let mut wal = WalStorage::open(dir.path(), opts()).unwrap();
    let st = wal.load().unwrap();
    assert_eq!(st.snapshot.map(|s| s.seq()), Some(Seq(20)));
}

#[test]
fn with_deferral_off_an_own_snapshot_is_written_inline() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        defer_snapshots: false,
        ..opts()
    };
    let mut wal = WalStorage::open(dir.path(), o.clone()).unwrap();
    wal.load().unwrap();
    wal.append(
        &[with_snapshot(
            accepts(1, 1, 3),
            own_snapshot(3, 1 << 20),
            true,
        )],
        true,
    )
    .unwrap();
    drop(wal);
    let mut wal = WalStorage::open(dir.path(), o).unwrap();
    assert_eq!(wal.load().unwrap().snapshot.map(|s| s.seq()), Some(Seq(3)));
}
