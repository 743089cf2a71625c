//! One conformance suite, generic over [`Storage`], run against every backend (the TiKV
//! `engine_traits_tests` idea): each backend must behave exactly like [`DurableState::apply`]
//! plus the in-memory backend's rules for truncation and snapshots.

mod common;

use common::*;
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::Seq;
use paxos_storage::wal::{Preallocation, WalOptions, WalStorage};
use paxos_storage::{Backend, MemoryStorage, Storage, StorageConfig, StorageError};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};

/// Opens the same backing store again and again (a restart of the process).
trait Harness {
    type S: Storage;
    fn open(&mut self) -> Self::S;
}

struct Mem(MemoryStorage);
impl Harness for Mem {
    type S = MemoryStorage;
    fn open(&mut self) -> MemoryStorage {
        self.0.clone()
    }
}

struct Wal(tempfile::TempDir, WalOptions);
impl Harness for Wal {
    type S = WalStorage;
    fn open(&mut self) -> WalStorage {
        WalStorage::open(self.0.path(), self.1.clone()).expect("open wal")
    }
}

fn wal(segment_bytes: u64, preallocation: Preallocation, checkpoint_bytes: u64) -> Wal {
    Wal(
        tempfile::tempdir().unwrap(),
        WalOptions {
            segment_bytes,
            preallocation,
            checkpoint_bytes,
            max_free_segments: 2,
            ..WalOptions::default()
        },
    )
}

#[cfg(feature = "rocksdb")]
struct Rocks(tempfile::TempDir);
#[cfg(feature = "rocksdb")]
impl Harness for Rocks {
    type S = paxos_storage::rocks::RocksStorage;
    fn open(&mut self) -> Self::S {
        paxos_storage::rocks::RocksStorage::open(self.0.path()).expect("open rocksdb")
    }
}

/// Runs `ops` against a fresh store and the model, comparing after every reopen and at the end.
fn run_ops<H: Harness>(h: &mut H, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut m = Materializer::default();
    let mut model = DurableState::default();
    let mut s = Some(h.open());
    model.incarnation += 1;
    prop_assert_eq!(&s.as_mut().unwrap().load().unwrap(), &model);
    for op in ops {
        let st = s.as_mut().unwrap();
        match op {
            Op::Append(specs, sync) => {
                let batches: Vec<PersistBatch> = specs.iter().map(|b| m.batch(b)).collect();
                st.append(&batches, *sync).unwrap();
                batches.iter().for_each(|b| model.apply(b));
            }
            Op::Truncate(seq) => {
                // The node truncates only below a durable snapshot, where this is a no-op for the
                // model; truncating anywhere checks that the backend really drops entries.
                let seq = Seq(u64::from(*seq));
                st.truncate_through(seq).unwrap();
                model.truncate_through(seq);
            }
            Op::SaveSnapshot(seq) => {
                let snap = snapshot(u64::from(*seq));
                st.save_snapshot(&snap).unwrap();
                model_save_snapshot(&mut model, &snap);
                prop_assert_eq!(st.load_snapshot().unwrap(), model.snapshot.clone());
            }
            Op::Sync => st.sync().unwrap(),
            Op::Reopen => {
                drop(s.take());
                let mut st = h.open();
                model.incarnation += 1;
                prop_assert_eq!(&st.load().unwrap(), &model);
                s = Some(st);
            }
        }
    }
    drop(s);
    let mut st = h.open();
    model.incarnation += 1;
    prop_assert_eq!(&st.load().unwrap(), &model);
    prop_assert_eq!(st.load_snapshot().unwrap(), model.snapshot);
    Ok(())
}

fn proptest_round_trips<H: Harness>(cases: u32, fresh: impl Fn() -> H) {
    let mut runner = TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            run_ops(&mut fresh(), &ops)
        })
        .unwrap();
}

fn incarnation_increments<H: Harness>(mut h: H) {
    for expected in 1..=4 {
        let mut s = h.open();
        assert_eq!(s.load().unwrap().incarnation, expected);
    }
}

fn reopen_after_clean_close<H: Harness>(mut h: H) {
    let mut m = Materializer::default();
    let mut model = DurableState::default();
    let spec = BatchSpec {
        view: Some((true, true)),
        accepted: vec![(1, true, 10), (2, false, 10), (1, true, 3)],
        ordered: vec![(1, 4), (1, 9)],
        pending: vec![(1, 5), (1, 3), (2, 1)],
        snapshot: None,
    };
    {
        let mut s = h.open();
        model.incarnation = s.load().unwrap().incarnation;
        for sync in [true, false] {
            let b = m.batch(&spec);
            s.append(std::slice::from_ref(&b), sync).unwrap();
            model.apply(&b);
        }
        s.sync().unwrap();
    }
    let mut s = h.open();
    model.incarnation += 1;
    assert_eq!(s.load().unwrap(), model);
}

/// Many batches in one call (group commit) mean exactly the same as one call each, including a
/// snapshot in the middle that drops history written earlier in the same call.
fn group_append_equals_sequential<H: Harness>(mut h: H) {
    let mut m = Materializer::default();
    let mut batches: Vec<PersistBatch> = (0..20u8)
        .map(|i| {
            m.batch(&BatchSpec {
                view: (i % 7 == 0).then_some((true, i % 2 == 0)),
                accepted: vec![(i * 3 + 1, i % 4 == 0, 20), (i * 3 + 2, false, 0)],
                ordered: vec![(i * 3 + 1, 30)],
                pending: vec![(i % 3, i)],
                snapshot: (i == 10).then_some(15),
            })
        })
        .collect();
    batches.push(fixed_batch(99, 300, 200));
    let mut s = h.open();
    let mut model = s.load().unwrap();
    s.append(&batches, true).unwrap();
    batches.iter().for_each(|b| model.apply(b));
    assert_eq!(s.load_snapshot().unwrap(), model.snapshot);
    assert!(model.ordered.keys().all(|&k| k > Seq(15)));
    drop(s);
    let mut s = h.open();
    model.incarnation += 1;
    assert_eq!(s.load().unwrap(), model);
}

fn truncation_and_snapshots<H: Harness>(mut h: H) {
    let mut m = Materializer::default();
    let mut s = h.open();
    let mut model = s.load().unwrap();
    let b = m.batch(&BatchSpec {
        view: None,
        accepted: (1..=30).map(|i| (i, false, 5)).collect(),
        ordered: (1..=30).map(|i| (i, 5)).collect(),
        pending: vec![],
        snapshot: None,
    });
    s.append(std::slice::from_ref(&b), false).unwrap();
    model.apply(&b);
    let snap = snapshot(10);
    s.save_snapshot(&snap).unwrap();
    model_save_snapshot(&mut model, &snap);
    // An older snapshot changes nothing.
    s.save_snapshot(&snapshot(5)).unwrap();
    assert_eq!(s.load_snapshot().unwrap(), Some(snap.clone()));
    s.truncate_through(Seq(10)).unwrap();
    model.truncate_through(Seq(10));
    // Entries at or below the snapshot are ignored by later batches.
    let late = m.batch(&BatchSpec {
        view: None,
        accepted: vec![(3, true, 5), (40, false, 5)],
        ordered: vec![(4, 5), (41, 5)],
        pending: vec![],
        snapshot: None,
    });
    s.append(std::slice::from_ref(&late), true).unwrap();
    model.apply(&late);
    assert_eq!(model.accepted.keys().next(), Some(&Seq(11)));
    drop(s);
    let mut s = h.open();
    model.incarnation += 1;
    assert_eq!(s.load().unwrap(), model);
    assert_eq!(s.load_snapshot().unwrap(), Some(snap));
}

/// Images larger than a chunk, a record piece and a segment: saved, replaced through a batch,
/// and read back byte for byte after a reopen.
fn large_snapshots<H: Harness>(mut h: H) {
    let image = |seq: u64, len: usize| {
        let app: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ seq as u8).collect();
        paxos_core::Snapshot::new(Seq(seq), app.into(), &[])
    };
    let mut s = h.open();
    s.load().unwrap();
    let first = image(7, (9 << 20) + 5);
    s.save_snapshot(&first).unwrap();
    assert_eq!(
        s.load_snapshot().unwrap().map(|x| x.digest()),
        Some(first.digest())
    );
    let second = image(9, (4 << 20) + 1);
    let mut m = Materializer::default();
    let mut b = m.batch(&BatchSpec {
        view: None,
        accepted: vec![(12, false, 5)],
        ordered: vec![],
        pending: vec![],
        snapshot: None,
    });
    b.snapshot = Some(second.clone());
    s.append(std::slice::from_ref(&b), true).unwrap();
    drop(s);
    let mut s = h.open();
    let state = s.load().unwrap();
    let got = state.snapshot.expect("snapshot persisted");
    assert_eq!(
        (got.seq(), got.digest(), got.len()),
        (second.seq(), second.digest(), second.len())
    );
    assert_eq!(got.image(), second.image());
}

macro_rules! conformance {
    ($name:ident, $cases:expr, $fresh:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn round_trips_match_the_model() {
                proptest_round_trips($cases, || $fresh);
            }
            #[test]
            fn incarnation_increments_at_every_load() {
                incarnation_increments($fresh);
            }
            #[test]
            fn reopen_after_clean_close_keeps_everything() {
                reopen_after_clean_close($fresh);
            }
            #[test]
            fn group_append_is_sequential_apply() {
                group_append_equals_sequential($fresh);
            }
            #[test]
            fn truncation_and_snapshots_persist() {
                truncation_and_snapshots($fresh);
            }
            #[test]
            fn large_snapshots_persist_in_pieces() {
                large_snapshots($fresh);
            }
        }
    };
}

conformance!(memory, 256, Mem(MemoryStorage::new()));
// Tiny segments and checkpoints so rotation, sealing and checkpoint deletion happen all the time.
conformance!(wal, 48, wal(4096, Preallocation::Zeros, 16 << 10));
conformance!(wal_fallocate, 16, wal(8192, Preallocation::Fallocate, 0));
conformance!(wal_growing, 16, wal(1 << 20, Preallocation::None, 1 << 20));
// Every synced append of 2+ updates syncs on the helper thread.
conformance!(wal_overlapped_sync, 16, {
    let mut w = wal(8192, Preallocation::Zeros, 32 << 10);
    w.1.overlap_sync_updates = 2;
    w
});
#[cfg(feature = "rocksdb")]
conformance!(rocksdb, 24, Rocks(tempfile::tempdir().unwrap()));

#[test]
fn factory_opens_each_backend_from_toml() {
    let dir = tempfile::tempdir().unwrap();
    let toml_wal = format!(
        "backend = \"wal\"\ndir = {:?}\n[wal]\nsegment_bytes = 65536\npreallocation = \"fallocate\"\n",
        dir.path().join("wal")
    );
    let cfgs: Vec<StorageConfig> = vec![
        toml::from_str("backend = \"memory\"").unwrap(),
        toml::from_str(&toml_wal).unwrap(),
    ];
    assert_eq!(cfgs[1].wal.segment_bytes, 65536);
    assert_eq!(cfgs[1].wal.preallocation, Preallocation::Fallocate);
    for cfg in &cfgs {
        let mut s = paxos_storage::open_config(cfg).unwrap();
        assert_eq!(s.load().unwrap().incarnation, 1);
    }
    let rocks: StorageConfig = toml::from_str(&format!(
        "backend = \"rocksdb\"\ndir = {:?}\n",
        dir.path().join("rocks")
    ))
    .unwrap();
    match paxos_storage::open(&rocks.backend) {
        #[cfg(feature = "rocksdb")]
        Ok(mut s) => {
            assert_eq!(s.name(), "rocksdb");
            assert_eq!(s.load().unwrap().incarnation, 1);
        }
        #[cfg(not(feature = "rocksdb"))]
        Err(StorageError::Misuse(_)) => {}
        other => panic!("unexpected {:?}", other.map(|s| s.name())),
    }
    // The plain `Backend` also works on its own, with default tuning.
    let mut s = paxos_storage::open(&Backend::Wal {
        dir: dir.path().join("wal2"),
    })
    .unwrap();
    assert_eq!(s.name(), "wal");
    assert_eq!(s.load().unwrap().incarnation, 1);
}

#[test]
fn wal_directory_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let _a = WalStorage::open(dir.path(), WalOptions::default()).unwrap();
    match WalStorage::open(dir.path(), WalOptions::default()) {
        Err(StorageError::Locked(p)) => assert_eq!(p, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn wal_rejects_use_before_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = WalStorage::open(dir.path(), WalOptions::default()).unwrap();
    assert!(matches!(s.append(&[], true), Err(StorageError::Misuse(_))));
    s.load().unwrap();
    assert!(matches!(s.load(), Err(StorageError::Misuse(_))));
}
