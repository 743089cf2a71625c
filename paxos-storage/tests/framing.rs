//! Write framing of the file WAL: damage confined to the writes since the last fdatasync (a torn
//! tail, including pages persisted out of order) is truncated; damage to a frame that a later
//! frame proves synced is refused.

mod common;

use common::*;
use paxos_core::durable::PersistBatch;
use paxos_core::Seq;
use paxos_storage::wal::{Preallocation, WalOptions, WalStorage};
use paxos_storage::{Storage, StorageError};
use std::path::{Path, PathBuf};

const PAGE: u64 = 4096;

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 256 << 10,
        preallocation: Preallocation::Zeros,
        checkpoint_bytes: 1 << 30,
        max_free_segments: 2,
        prefill_segments: 0,
        overlap_sync_updates: 0,
        defer_snapshots: true,
    }
}

/// Batch `id`: accepted proposal at slot `id` with a value of about 1 KiB.
fn batch(id: u64) -> PersistBatch {
    let mut b = fixed_batch(id, 1, 1000);
    b.accepted[0].seq = Seq(id);
    b
}

/// Appends each group of ids as one write (synced when `sync`), returning the segment and the
/// `(start, end)` offsets of each write.
fn write(dir: &Path, groups: &[(Vec<u64>, bool)]) -> (PathBuf, Vec<(u64, u64)>) {
    let mut wal = WalStorage::open(dir, opts()).unwrap();
    wal.load().unwrap();
    let mut spans = Vec::new();
    let mut seg = 0;
    for (ids, sync) in groups {
        let (s, start) = wal.position().unwrap();
        let batches: Vec<PersistBatch> = ids.iter().map(|&i| batch(i)).collect();
        wal.append(&batches, *sync).unwrap();
        let (s2, end) = wal.position().unwrap();
        assert_eq!(s, s2, "a write must not straddle a rotation here");
        seg = s;
        spans.push((start, end));
    }
    let path = wal.segment_path(seg);
    drop(wal);
    (path, spans)
}

fn reload(dir: &Path) -> Result<(Vec<u64>, u64), StorageError> {
    let mut wal = WalStorage::open(dir, opts())?;
    let state = wal.load()?;
    Ok((
        state.accepted.keys().map(|k| k.0).collect(),
        wal.torn_tails_truncated(),
    ))
}

fn damage(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut data = std::fs::read(path).unwrap();
    f(&mut data);
    std::fs::write(path, data).unwrap();
}

fn zero(data: &mut [u8], from: u64, to: u64) {
    data[from as usize..to as usize].fill(0);
}

/// The first whole page inside `start..end` that has written bytes after it.
fn inner_page(start: u64, end: u64) -> u64 {
    let p = start.div_ceil(PAGE) * PAGE;
    assert!(p + PAGE < end, "the write spans too few pages");
    p
}

#[test]
fn a_torn_last_write_with_pages_reordered_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (path, spans) = write(
        dir.path(),
        &[((1..=3).collect(), true), ((4..=30).collect(), true)],
    );
    let (start, end) = spans[1];
    // The power cut persisted the write's first and last pages but not one in the middle: a hole
    // followed by valid records of the same write.
    let hole = inner_page(start, end);
    damage(&path, |d| zero(d, hole, hole + PAGE));
    let (ids, torn) = reload(dir.path()).unwrap();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(torn, 1);
    // The repaired log takes appends and comes back whole.
    let mut wal = WalStorage::open(dir.path(), opts()).unwrap();
    wal.load().unwrap();
    wal.append(&[batch(40)], true).unwrap();
    drop(wal);
    assert_eq!(reload(dir.path()).unwrap(), (vec![1, 2, 3, 40], 0));
}

#[test]
fn a_zeroed_page_inside_the_last_frame_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (path, spans) = write(
        dir.path(),
        &[((1..=2).collect(), true), ((3..=20).collect(), true)],
    );
    let (start, end) = spans[1];
    // The page holding the frame header itself, and (separately) the last page of the write.
    let first = start / PAGE * PAGE;
    let pristine = std::fs::read(&path).unwrap();
    for (from, to) in [(first, first + PAGE), ((end - 1) / PAGE * PAGE, end)] {
        std::fs::write(&path, &pristine).unwrap();
        // Bytes of the synced write before `start` on the same page stay: only the torn
        // write's own bytes are lost.
        damage(&path, |d| zero(d, from.max(start), to));
        assert_eq!(reload(dir.path()).unwrap(), (vec![1, 2], 1), "{from}..{to}");
    }
}

#[test]
fn a_flipped_byte_in_an_earlier_synced_frame_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let groups: Vec<(Vec<u64>, bool)> =
        (0..4).map(|g| (vec![g * 2 + 1, g * 2 + 2], true)).collect();
    let (path, spans) = write(dir.path(), &groups);
    let pristine = std::fs::read(&path).unwrap();
    let (start, end) = spans[1];
    for at in [start, start + 12, start + 40, (start + end) / 2, end - 1] {
        std::fs::write(&path, &pristine).unwrap();
        damage(&path, |d| d[at as usize] ^= 0x40);
        match reload(dir.path()) {
            Err(StorageError::Corrupt {
                path: p,
                offset,
                reason,
            }) => {
                assert_eq!((p.as_path(), offset), (path.as_path(), start), "{reason}");
                assert!(reason.contains("synced"), "{reason}");
            }
            other => panic!("flip at {at}: {other:?}"),
        }
    }
}

#[test]
fn damage_in_unsynced_writes_followed_by_later_unsynced_ones_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    // Three writes after the last sync: a cut may persist the third but not the second.
    let (path, spans) = write(
        dir.path(),
        &[
            ((1..=2).collect(), true),
            ((3..=12).collect(), false),
            ((13..=14).collect(), false),
        ],
    );
    let (start, end) = spans[1];
    let hole = inner_page(start, end);
    damage(&path, |d| zero(d, hole, hole + PAGE));
    assert_eq!(reload(dir.path()).unwrap(), (vec![1, 2], 1));
}
