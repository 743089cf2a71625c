//! Power cuts that lose unsynced data (docs/storage.md, "Power-cut model"): a writer appends
//! batches to a WAL behind [`PowerCut`], the power is cut at a random moment (each unsynced page
//! and directory operation reverted at random), and the reopened WAL must hold every batch it
//! acknowledged, exactly, and must never refuse to start. A SIGKILL keeps the page cache; this
//! does not, so a missing fdatasync fails here (`planted_missing_fdatasync_is_detected`).

mod common;

use common::*;
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_storage::wal::{PowerCut, WalOptions, WalStorage};
use paxos_storage::Storage;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Small segments and checkpoints, so that the cuts land across rotations and checkpoints.
fn small_opts() -> WalOptions {
    small_wal_opts(64 << 10, 256 << 10)
}

/// Batch `id` (see [`numbered_batch`]).
fn batch(id: u64) -> PersistBatch {
    numbered_batch(id, 700)
}

fn model(n: u64, incarnation: u64) -> DurableState {
    let mut m = DurableState {
        incarnation,
        ..Default::default()
    };
    (1..=n).for_each(|id| m.apply(&batch(id)));
    m
}

/// What one cut did and found.
#[derive(Debug)]
struct Round {
    acked: u64,
    recovered: u64,
    pages_reverted: u64,
    dir_ops_reverted: u64,
    segment: u64,
}

/// One power cut: writes batches after the ones in `dir` until the cut (after `cut_after`),
/// reopens, and checks the durability contract. `Err` says how it was broken.
fn round(dir: &Path, seed: u64, lie: bool, p: f64, cut_after: Duration) -> Result<Round, String> {
    let pc = Arc::new(PowerCut::new());
    let mut wal = WalStorage::open(dir, small_opts()).map_err(|e| format!("open: {e}"))?;
    wal.set_power_cut(pc.clone());
    let state = wal
        .load()
        .map_err(|e| format!("load before the cut: {e}"))?;
    let start = state.accepted.len() as u64 + 1;
    pc.lie_about_syncs(lie);
    let acked = Arc::new(AtomicU64::new(start - 1));
    let begun = Arc::new(AtomicU64::new(start - 1));
    let writer = {
        let (acked, begun) = (acked.clone(), begun.clone());
        std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut next = start;
            loop {
                let n = rng.gen_range(1..=4u64);
                let batches: Vec<_> = (next..next + n).map(batch).collect();
                begun.store(next + n - 1, Ordering::SeqCst);
                let r = if rng.gen_bool(0.2) {
                    wal.append(&batches, false).and_then(|()| wal.sync())
                } else {
                    wal.append(&batches, true)
                };
                if r.is_err() {
                    // Cut: every file operation fails from now on.
                    return wal.position().map_or(0, |(seg, _)| seg);
                }
                acked.store(next + n - 1, Ordering::SeqCst);
                next += n;
            }
        })
    };
    std::thread::sleep(cut_after);
    let report = pc.cut(seed, p).map_err(|e| format!("cut: {e}"))?;
    let segment = writer.join().map_err(|_| "writer panicked".to_string())?;
    let (acked, begun) = (acked.load(Ordering::SeqCst), begun.load(Ordering::SeqCst));

    let mut wal = WalStorage::open(dir, small_opts()).map_err(|e| format!("reopen: {e}"))?;
    let state = wal
        .load()
        .map_err(|e| format!("recovery refused to start after the cut: {e} ({report:?})"))?;
    let k = state.accepted.len() as u64;
    if k < acked {
        return Err(format!(
            "lost acknowledged writes: batches {}..={acked} were acknowledged, only 1..={k} \
             recovered ({report:?})",
            k + 1
        ));
    }
    if k > begun {
        return Err(format!(
            "batch {k} recovered but never written (begun {begun})"
        ));
    }
    if state != model(k, state.incarnation) {
        return Err(format!("recovered state is not exactly batches 1..={k}"));
    }
    Ok(Round {
        acked,
        recovered: k,
        pages_reverted: report.pages_reverted,
        dir_ops_reverted: report.dir_ops_reverted,
        segment,
    })
}

#[test]
fn power_cuts_never_lose_an_acknowledged_batch() {
    let seed: u64 = std::env::var("PAXOS_POWERCUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc0ffee);
    println!("seed={seed} (set PAXOS_POWERCUT_SEED to replay the choices)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (mut cuts, mut pages, mut dir_ops, mut segment, mut acked) = (0, 0, 0, 0, 0);
    while cuts < 60 {
        let p = rng.gen_range(0.0..=1.0);
        let after = Duration::from_millis(rng.gen_range(1..30));
        let r = round(dir.path(), rng.gen(), false, p, after)
            .unwrap_or_else(|e| panic!("cut {cuts} (seed={seed}, p={p:.2}): {e}"));
        assert!(r.recovered >= acked, "an earlier cut's batches vanished");
        cuts += 1;
        pages += r.pages_reverted;
        dir_ops += r.dir_ops_reverted;
        segment = segment.max(r.segment);
        acked = r.acked.max(acked);
    }
    println!(
        "{cuts} cuts in {:?}: 0 acknowledged batches lost of {acked}; {pages} unsynced pages and \
         {dir_ops} directory operations reverted; log reached segment {segment}",
        started.elapsed()
    );
    assert!(
        pages > 0,
        "no cut reverted anything: the model is not in the write path"
    );
    assert!(segment > 3, "the cuts never crossed a segment rotation");
}

#[test]
fn planted_missing_fdatasync_is_detected() {
    // The WAL's fdatasyncs succeed, but the model keeps their pages unsynced, as if the WAL had
    // skipped them: the first cut that reverts them loses batches the WAL acknowledged.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut detected = 0;
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let after = Duration::from_millis(rng.gen_range(5..20));
        match round(dir.path(), rng.gen(), true, 1.0, after) {
            Err(e) => {
                println!("detected: {e}");
                assert!(e.contains("lost acknowledged writes") || e.contains("refused"));
                detected += 1;
            }
            Ok(r) => panic!("a skipped fdatasync went unnoticed: {r:?}"),
        }
    }
    assert_eq!(detected, 5);
}
