//! Crash consistency of the file WAL: SIGKILL at random points, torn tails at every byte, bit
//! flips in every field of a record, and injected I/O errors.
//!
//! The SIGKILL test re-executes this test binary as the child (`crash_child_entry` runs the
//! writer loop when `PAXOS_WAL_CRASH_CHILD` names a directory, and does nothing otherwise).

mod common;

use common::*;
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::message::ClientUpdate;
use paxos_core::{ClientId, Seq};
use paxos_storage::wal::{FaultInjector, FileOp, Preallocation, WalOptions, WalStorage};
use paxos_storage::{Storage, StorageError};
use rand::{Rng, SeedableRng};
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "PAXOS_WAL_CRASH_CHILD";

fn small_opts() -> WalOptions {
    small_wal_opts(128 << 10, 512 << 10)
}

/// Batch `id` of the crash test (see [`numbered_batch`]).
fn crash_batch(id: u64) -> PersistBatch {
    numbered_batch(id, 300)
}

fn present_ids(s: &DurableState) -> Vec<u64> {
    s.accepted.keys().map(|k| k.0).collect()
}

/// The child: appends batches forever, printing `BEGIN a b` before writing ids `a..=b` and
/// `SYNCED b` once they are durable.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut wal = WalStorage::open(&dir, small_opts()).expect("child open");
    let state = wal.load().expect("child load");
    let mut next = state
        .pending
        .get(&ClientId(0))
        .map_or(1, |u| u.timestamp.0 + 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(next);
    loop {
        let n = rng.gen_range(1..=4u64);
        let batches: Vec<_> = (next..next + n).map(crash_batch).collect();
        println!("BEGIN {} {}", next, next + n - 1);
        if rng.gen_bool(0.2) {
            wal.append(&batches, false).expect("append");
            wal.sync().expect("sync");
        } else {
            wal.append(&batches, true).expect("append");
        }
        println!("SYNCED {}", next + n - 1);
        next += n;
    }
}

#[test]
fn sigkill_at_random_points_keeps_every_synced_batch() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("PAXOS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    println!("seed={seed} (set PAXOS_CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut last_incarnation = 0;
    let mut max_synced = 0u64;
    let mut max_begun = 0u64;
    let mut kills = 0;
    while kills < 30 && started.elapsed() < Duration::from_secs(25) {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut synced, mut begun) = (0u64, 0u64);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test crash_child_entry ... " on the same line first.
                let at = line.find("BEGIN ").or_else(|| line.find("SYNCED "));
                let mut w = line[at.unwrap_or(0)..].split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("BEGIN"), Some(_), Some(b)) => begun = b.parse().unwrap(),
                    (Some("SYNCED"), Some(b), None) => synced = b.parse().unwrap(),
                    _ => {}
                }
            }
            (synced, begun)
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let (synced, begun) = reader.join().unwrap();
        max_synced = max_synced.max(synced);
        max_begun = max_begun.max(begun);

        let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
        let state = wal.load().unwrap();
        let ids = present_ids(&state);
        let k = ids.len() as u64;
        assert_eq!(
            ids,
            (1..=k).collect::<Vec<_>>(),
            "not a prefix of the batches"
        );
        assert!(
            k >= max_synced,
            "batch {max_synced} was reported synced but only {k} survived (seed={seed})"
        );
        assert!(
            k <= max_begun,
            "batch {k} was never written (begun {begun}, synced {synced}, max {max_begun}/{max_synced}, round {kills})"
        );
        for id in 1..=k {
            assert_eq!(state.accepted[&Seq(id)], crash_batch(id).accepted[0]);
        }
        if k > 0 {
            assert_eq!(state.pending[&ClientId(0)].timestamp.0, k);
        }
        assert!(state.incarnation > last_incarnation);
        last_incarnation = state.incarnation;
    }
    assert!(max_synced > 0, "the child never synced anything");
    println!("{kills} kills, {max_synced} batches synced");
}

/// Writes batches `1..=n` (synced), returns the WAL's position before the last one and after it.
fn write_batches(dir: &Path, n: u64, opts: &WalOptions) -> ((u64, u64), (u64, u64)) {
    let mut wal = WalStorage::open(dir, opts.clone()).unwrap();
    wal.load().unwrap();
    for id in 1..n {
        wal.append(&[crash_batch(id)], true).unwrap();
    }
    let before = wal.position().unwrap();
    wal.append(&[crash_batch(n)], true).unwrap();
    let after = wal.position().unwrap();
    assert_eq!(
        before.0, after.0,
        "last record must not straddle a rotation"
    );
    (before, after)
}

fn model(n: u64, incarnation: u64) -> DurableState {
    let mut m = DurableState {
        incarnation,
        ..Default::default()
    };
    (1..=n).for_each(|id| m.apply(&crash_batch(id)));
    m
}

fn reload(dir: &Path, opts: &WalOptions) -> Result<DurableState, StorageError> {
    WalStorage::open(dir, opts.clone())?.load()
}

#[test]
fn torn_tail_at_every_byte_keeps_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let ((seg, start), (_, end)) = write_batches(dir.path(), 5, &opts);
    let path = dir.path().join(format!("wal-{seg:016}.seg"));
    let pristine = std::fs::read(&path).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for cut in start..=end {
        for garbage in [false, true] {
            let mut data = pristine.clone();
            for b in &mut data[cut as usize..end as usize] {
                *b = if garbage { rng.gen() } else { 0 };
            }
            std::fs::write(&path, &data).unwrap();
            let got = reload(dir.path(), &opts).unwrap();
            // Zeroing bytes that were zero already (or drawing the same byte) leaves the record whole.
            let expect = if data == pristine {
                model(5, 2)
            } else {
                model(4, 2)
            };
            assert_eq!(
                got, expect,
                "cut at {cut} (record {start}..{end}), garbage={garbage}"
            );
            // The repaired log accepts appends and survives another restart.
            let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
            wal.load().unwrap();
            wal.append(&[crash_batch(6)], true).unwrap();
            drop(wal);
            let again = reload(dir.path(), &opts).unwrap();
            assert!(again.accepted.contains_key(&Seq(6)));
        }
    }
    std::fs::write(&path, &pristine).unwrap();
}

#[test]
fn bit_flips_in_every_field_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let n = 4;
    // Positions of record 3 (followed by record 4) and record 4 (the last).
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    wal.load().unwrap();
    wal.append(&[crash_batch(1), crash_batch(2)], true).unwrap();
    let (seg, r3) = wal.position().unwrap();
    wal.append(&[crash_batch(3)], true).unwrap();
    let (_, r4) = wal.position().unwrap();
    wal.append(&[crash_batch(n)], true).unwrap();
    let (_, end) = wal.position().unwrap();
    let path = wal.segment_path(seg);
    drop(wal);
    let pristine = std::fs::read(&path).unwrap();
    let fields = |off: u64| -> String {
        match off {
            0..=3 => "crc",
            4..=7 => "length",
            8 => "kind",
            9 => "magic",
            10..=11 => "reserved",
            _ => "payload",
        }
        .to_string()
    };
    for (rec, rec_end, last) in [(r3, r4, false), (r4, end, true)] {
        for bit in 0..(rec_end - rec) * 8 {
            let mut data = pristine.clone();
            data[(rec + bit / 8) as usize] ^= 1 << (bit % 8);
            std::fs::write(&path, &data).unwrap();
            let field = fields(bit / 8);
            match reload(dir.path(), &opts) {
                Err(StorageError::Corrupt {
                    path: p, offset, ..
                }) if !last => {
                    assert_eq!(p, path);
                    assert_eq!(offset, rec, "{field} bit {bit}");
                }
                Ok(state) if last => assert_eq!(state, model(n - 1, 2), "{field} bit {bit}"),
                other => panic!("flip of {field} bit {bit} (last={last}): {other:?}"),
            }
        }
    }
}

#[test]
fn damage_in_a_sealed_segment_or_the_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 8192,
        checkpoint_bytes: 0,
        ..small_opts()
    };
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    wal.load().unwrap();
    for id in 1..=60 {
        wal.append(&[crash_batch(id)], true).unwrap();
    }
    wal.save_snapshot(&snapshot(3)).unwrap();
    for id in 61..=200 {
        wal.append(&[crash_batch(id)], true).unwrap();
    }
    let (last_seg, _) = wal.position().unwrap();
    let first_seg = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_prefix("wal-")?
                .strip_suffix(".seg")?
                .parse::<u64>()
                .ok()
        })
        .min()
        .unwrap();
    assert!(last_seg > first_seg + 1, "test needs several segments");
    let sealed = wal.segment_path(first_seg + 1);
    drop(wal);
    let expect = {
        let mut m = model(200, 2);
        m.truncate_through(Seq(3));
        m.snapshot = Some(snapshot(3));
        m
    };
    assert_eq!(reload(dir.path(), &opts).unwrap(), expect.clone());

    // A flipped byte in the middle of a sealed segment.
    let pristine = std::fs::read(&sealed).unwrap();
    let mut data = pristine.clone();
    data[100] ^= 0x10;
    std::fs::write(&sealed, &data).unwrap();
    assert!(matches!(
        reload(dir.path(), &opts),
        Err(StorageError::Corrupt { path, .. }) if path == sealed
    ));
    std::fs::write(&sealed, &pristine).unwrap();

    // A missing segment in the middle.
    std::fs::rename(&sealed, dir.path().join("moved")).unwrap();
    assert!(matches!(
        reload(dir.path(), &opts),
        Err(StorageError::Corrupt { .. })
    ));
    std::fs::rename(dir.path().join("moved"), &sealed).unwrap();

    // A damaged checkpoint.
    let ck = dir.path().join("checkpoint");
    let pristine = std::fs::read(&ck).unwrap();
    let mut data = pristine.clone();
    let mid = data.len() / 2;
    data[mid] ^= 1;
    std::fs::write(&ck, &data).unwrap();
    assert!(matches!(
        reload(dir.path(), &opts),
        Err(StorageError::Corrupt { path, .. }) if path == ck
    ));
    std::fs::write(&ck, &pristine).unwrap();
    let mut m = expect;
    m.incarnation = 3;
    assert_eq!(reload(dir.path(), &opts).unwrap(), m);
}

#[test]
fn checkpoints_delete_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 8192,
        preallocation: Preallocation::Fallocate,
        checkpoint_bytes: 32 << 10,
        max_free_segments: 3,
        prefill_segments: 0,
        overlap_sync_updates: 0,
        defer_snapshots: true,
    };
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    let mut m = wal.load().unwrap();
    for id in 1..=2000u64 {
        let mut b = crash_batch(id);
        if id % 500 == 0 {
            b.snapshot = Some(snapshot(id - 10));
        }
        wal.append(std::slice::from_ref(&b), id % 3 == 0).unwrap();
        m.apply(&b);
    }
    drop(wal);
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    // 2000 records of ~200 bytes is ~50 segments of 8 KiB; checkpoints every 32 KiB keep ~5.
    assert!(segments <= 8, "{segments} segments left");
    m.incarnation += 1;
    assert_eq!(reload(dir.path(), &opts).unwrap(), m);
}

/// Fails the next operation of one kind with the given errno.
#[derive(Debug, Default)]
struct FailNext {
    op: std::sync::Mutex<Option<FileOp>>,
    errno: AtomicU32,
}

impl FailNext {
    fn arm(&self, op: FileOp, errno: nix::errno::Errno) {
        self.errno.store(errno as u32, Ordering::SeqCst);
        *self.op.lock().unwrap() = Some(op);
    }
}

impl FaultInjector for FailNext {
    fn before(&self, op: FileOp, _path: &Path) -> io::Result<()> {
        let mut armed = self.op.lock().unwrap();
        if *armed == Some(op) {
            *armed = None;
            return Err(io::Error::from_raw_os_error(
                self.errno.load(Ordering::SeqCst) as i32,
            ));
        }
        Ok(())
    }
}

/// After the failed call: the error is returned, the store is poisoned, and a restart finds every
/// acknowledged batch and nothing that was never written.
fn injected_failure(op: FileOp, errno: nix::errno::Errno, opts: WalOptions, batch_bytes: usize) {
    injected_failure_with(op, errno, opts, batch_bytes, 0)
}

/// [`injected_failure`] with `extra` more pending updates per batch (32 or more updates take the
/// path where the fdatasync runs on the helper thread).
fn injected_failure_with(
    op: FileOp,
    errno: nix::errno::Errno,
    opts: WalOptions,
    batch_bytes: usize,
    extra: u64,
) {
    let dir = tempfile::tempdir().unwrap();
    let inj = Arc::new(FailNext::default());
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    wal.set_fault_injector(inj.clone());
    wal.load().unwrap();
    let big = |id: u64| {
        let mut b = crash_batch(id);
        b.pending.push(ClientUpdate {
            client_id: ClientId(1),
            ..update(1, id, batch_bytes, 1)
        });
        b.pending
            .extend((0..extra).map(|c| update(100 + c, id, 8, 2)));
        b
    };
    let mut acked = 0;
    for id in 1..=3 {
        wal.append(&[big(id)], true).unwrap();
        acked = id;
    }
    inj.arm(op, errno);
    let mut failed_at = None;
    for id in acked + 1..acked + 200 {
        match wal.append(&[big(id)], true) {
            Ok(()) => acked = id,
            Err(e) => {
                assert!(matches!(e, StorageError::Io { .. }), "{e:?}");
                assert!(e
                    .to_string()
                    .contains(&io::Error::from_raw_os_error(errno as i32).to_string()));
                failed_at = Some(id);
                break;
            }
        }
    }
    let failed = failed_at.unwrap_or_else(|| panic!("{op:?} was never attempted"));
    assert!(matches!(
        wal.append(&[big(failed + 1)], true),
        Err(StorageError::Poisoned(_))
    ));
    assert!(matches!(wal.sync(), Err(StorageError::Poisoned(_))));
    assert!(matches!(
        wal.save_snapshot(&snapshot(1)),
        Err(StorageError::Poisoned(_))
    ));
    drop(wal);
    let state = reload(dir.path(), &opts).unwrap();
    let k = present_ids(&state).len() as u64;
    assert_eq!(present_ids(&state), (1..=k).collect::<Vec<_>>());
    assert!(
        k >= acked,
        "acknowledged batch {acked} lost after {op:?} failure"
    );
    assert!(k <= failed, "batch {k} was never written");
}

#[test]
fn enospc_on_write_poisons() {
    injected_failure(FileOp::Write, nix::errno::Errno::ENOSPC, small_opts(), 100);
}

#[test]
fn eio_on_fdatasync_poisons() {
    injected_failure(FileOp::Sync, nix::errno::Errno::EIO, small_opts(), 100);
}

#[test]
fn eio_on_fdatasync_of_a_large_append_poisons() {
    let opts = WalOptions {
        overlap_sync_updates: 32,
        ..small_opts()
    };
    injected_failure_with(FileOp::Sync, nix::errno::Errno::EIO, opts, 100, 40);
}

#[test]
fn enospc_while_preallocating_the_next_segment_poisons() {
    let opts = WalOptions {
        segment_bytes: 8192,
        ..small_opts()
    };
    injected_failure(FileOp::Preallocate, nix::errno::Errno::ENOSPC, opts, 2000);
}

#[test]
fn eio_on_checkpoint_rename_poisons() {
    let opts = WalOptions {
        segment_bytes: 8192,
        checkpoint_bytes: 16 << 10,
        ..small_opts()
    };
    injected_failure(FileOp::Rename, nix::errno::Errno::EIO, opts, 2000);
}

#[test]
fn eio_on_directory_fsync_poisons() {
    let opts = WalOptions {
        segment_bytes: 8192,
        checkpoint_bytes: 0,
        ..small_opts()
    };
    injected_failure(FileOp::SyncDir, nix::errno::Errno::EIO, opts, 2000);
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    v.sort();
    v
}

/// A snapshot image of `bytes` bytes at `seq`.
fn big_snapshot(seq: u64, bytes: usize) -> paxos_core::Snapshot {
    let app: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8 ^ seq as u8).collect();
    paxos_core::Snapshot::new(Seq(seq), app.into(), &[])
}

#[test]
fn snapshots_live_in_their_own_files_and_are_verified_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    wal.load().unwrap();
    for id in 1..=20 {
        wal.append(&[crash_batch(id)], true).unwrap();
    }
    // Larger than a segment, a checkpoint's usual size, and one write piece (4 MiB).
    let s1 = big_snapshot(10, 9 << 20);
    wal.save_snapshot(&s1).unwrap();
    // A batch carrying a newer snapshot (a state transfer) is logged by reference.
    let s2 = big_snapshot(15, 5 << 20);
    let mut b = crash_batch(21);
    b.snapshot = Some(s2.clone());
    wal.append(&[b], true).unwrap();
    for id in 22..=30 {
        wal.append(&[crash_batch(id)], true).unwrap();
    }
    // Checkpoints are written on the WAL's helper thread; the superseded image goes once the
    // checkpoint past it is durable and collected (at the latest here).
    wal.settle_snapshots().unwrap();
    drop(wal);
    assert_eq!(
        snapshot_files(dir.path()).len(),
        1,
        "only the newest image is kept"
    );
    let ck = std::fs::metadata(dir.path().join("checkpoint"))
        .unwrap()
        .len();
    assert!(ck < 64 << 10, "the checkpoint names the image, {ck} bytes");
    let state = reload(dir.path(), &opts).unwrap();
    assert_eq!(
        state.snapshot.as_ref().map(|s| s.digest()),
        Some(s2.digest())
    );
    assert_eq!(state.snapshot.as_ref().map(|s| s.len()), Some(s2.len()));
    assert!(present_ids(&state).contains(&30));

    // A flipped byte in the image, then a missing image: refused, naming the file.
    let name = snapshot_files(dir.path()).remove(0);
    let path = dir.path().join(&name);
    let mut data = std::fs::read(&path).unwrap();
    data[1 << 20] ^= 0x40;
    std::fs::write(&path, &data).unwrap();
    match reload(dir.path(), &opts) {
        Err(StorageError::Corrupt { path: p, .. }) => assert!(p.ends_with(&name)),
        other => panic!("a damaged image must be refused: {other:?}"),
    }
    std::fs::remove_file(&path).unwrap();
    match reload(dir.path(), &opts) {
        Err(StorageError::Corrupt { reason, .. }) => {
            assert!(reason.contains("missing"), "{reason}")
        }
        other => panic!("a missing image must be refused: {other:?}"),
    }
}

#[test]
fn an_unreferenced_snapshot_file_left_by_a_crash_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    wal.load().unwrap();
    wal.save_snapshot(&big_snapshot(5, 1000)).unwrap();
    drop(wal);
    // As if a crash came after an image was written but before any record named it.
    let kept = snapshot_files(dir.path());
    std::fs::write(
        dir.path().join("snapshot-00000000000000000009-00.img"),
        b"x",
    )
    .unwrap();
    std::fs::write(dir.path().join("snapshot-x.img.tmp"), b"partial").unwrap();
    let state = reload(dir.path(), &opts).unwrap();
    assert_eq!(state.snapshot_seq(), Seq(5));
    assert_eq!(snapshot_files(dir.path()), kept);
}
