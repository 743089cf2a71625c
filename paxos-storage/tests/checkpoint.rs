//! The WAL checkpoint is a run of bounded records, not one: the folded state above the latest
//! snapshot (accepted and ordered copies of every slot, pending updates) grows with the log, and
//! as one record it passed the 1 GiB record limit at 1 GiB of state under steady writes, which
//! poisoned every server's WAL at about the same slot (issue #13).

mod common;

use common::*;
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::message::OrderedUpdate;
use paxos_core::Seq;
use paxos_storage::wal::{Preallocation, WalOptions, WalStorage};
use paxos_storage::{Storage, StorageError};
use std::path::Path;

const MIB: usize = 1 << 20;

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 16 << 20,
        preallocation: Preallocation::Zeros,
        // Only when a snapshot advances: the test decides when the checkpoint is written.
        checkpoint_bytes: 0,
        max_free_segments: 1,
        prefill_segments: 0,
        overlap_sync_updates: 0,
        defer_snapshots: false,
    }
}

/// Batch `id`: one accepted proposal of `bytes` at slot `id`, its ordered copy, and a pending
/// update of client `id % 7`.
fn big_batch(id: u64, bytes: usize) -> PersistBatch {
    let mut b = fixed_batch(id, 1, bytes);
    b.accepted[0].seq = Seq(id);
    b.ordered = vec![OrderedUpdate {
        seq: Seq(id),
        update: b.accepted[0].update.clone(),
    }];
    b.pending = vec![update(id % 7, id, 32, 1)];
    b
}

fn reload(dir: &Path) -> Result<DurableState, StorageError> {
    WalStorage::open(dir, opts())?.load()
}

#[test]
fn a_checkpoint_of_many_parts_round_trips_and_any_cut_or_flip_in_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), opts()).unwrap();
    let mut model = wal.load().unwrap();
    // 2 x 48 MiB of entries above the snapshot: several parts of each kind.
    for id in 2..=49 {
        let b = big_batch(id, MIB);
        wal.append(std::slice::from_ref(&b), true).unwrap();
        model.apply(&b);
    }
    // A snapshot at slot 1 advances the state and writes the checkpoint; everything above
    // slot 1 stays in it.
    wal.save_snapshot(&snapshot(1)).unwrap();
    model_save_snapshot(&mut model, &snapshot(1));
    drop(wal);
    let ck = dir.path().join("checkpoint");
    let pristine = std::fs::read(&ck).unwrap();
    assert!(
        pristine.len() > 96 * MIB,
        "the checkpoint holds both copies: {} bytes",
        pristine.len()
    );
    assert_eq!(&pristine[..8], b"PSBWALC3");
    let mut expect = model.clone();
    expect.incarnation += 1;
    assert_eq!(reload(dir.path()).unwrap(), expect);

    // Cut short anywhere (its end record gone, a part gone, inside a header) or one byte
    // flipped: the checkpoint is only ever replaced by rename, so this is damage, refused.
    let cuts = [
        pristine.len() - 1,
        pristine.len() - 30,
        pristine.len() / 2,
        pristine.len() / 3 + 7,
        20,
        9,
    ];
    for cut in cuts {
        std::fs::write(&ck, &pristine[..cut]).unwrap();
        let r = reload(dir.path());
        assert!(
            matches!(&r, Err(StorageError::Corrupt { path, .. }) if *path == ck),
            "cut at {cut}: {r:?}"
        );
    }
    for at in [10, pristine.len() / 2, pristine.len() - 3] {
        let mut data = pristine.clone();
        data[at] ^= 0x20;
        std::fs::write(&ck, &data).unwrap();
        let r = reload(dir.path());
        assert!(
            matches!(&r, Err(StorageError::Corrupt { path, .. }) if *path == ck),
            "flip at {at}: {r:?}"
        );
    }
    std::fs::write(&ck, &pristine).unwrap();
    expect.incarnation += 1;
    assert_eq!(reload(dir.path()).unwrap(), expect);
}
