//! Own snapshots written off the append path (docs/storage.md, "Snapshot files"; the contract
//! of [`PersistBatch::snapshot_deferrable`](paxos_core::durable::PersistBatch)).
//!
//! Writing a large image inline stalls every append behind it: at 1 GiB that is seconds with
//! no accept persisted, long enough for the other servers to suspect the leader (or for a
//! follower's silence to cost the quorum). A snapshot the core took of its own log is not needed
//! for recovery, since the records since the previous snapshot rebuild the same state, so the
//! WAL hands its image to a helper thread and writes its batch without it. Once the image file
//! is durable, the next append first writes a record naming it and folds the snapshot in. Only
//! then may a checkpoint let go of the older records. A crash before that leaves an unreferenced
//! file, deleted at recovery, and the previous snapshot plus the log, which is what the server
//! had. Files in flight are never deleted by a checkpoint.
//!
//! Checkpoints go the same way: the folded state holds every accepted value since the last
//! snapshot, up to hundreds of MiB with large values, and writing it inside an append stalled the
//! log for up to 0.6 s at a time. The helper writes a checkpoint job (the folded state, values
//! shared) to the checkpoint file. The segments it covers are recycled only after it is durable
//! and collected. Until then the older checkpoint and every segment after it stay, so recovery
//! has a consistent pair at any moment. One checkpoint is in flight at a time; a checkpoint due
//! meanwhile is written after it.

use super::checkpoint::{write_checkpoint, CheckpointDone, CheckpointJob};
use super::fs::Fs;
use super::snapfile::{write_image, SnapRef, FLUSH_EVERY};
use super::WalStorage;
use crate::StorageError;
use paxos_core::Snapshot;
use std::sync::mpsc;
use std::thread::JoinHandle;

enum Job {
    Image(Snapshot),
    Checkpoint(CheckpointJob),
}

enum Outcome {
    /// The image is durable in its file.
    Written(Snapshot),
    /// A newer snapshot was queued behind it, so it was never written.
    Skipped(SnapRef),
    /// The checkpoint is durable.
    Checkpointed(CheckpointDone),
    Failed(StorageError),
}

/// What [`WalStorage::collect_snapshots`] found finished.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// The newest image now durable.
    pub(super) image: Option<(Snapshot, SnapRef)>,
    /// A checkpoint now durable.
    pub(super) checkpoint: Option<CheckpointDone>,
}

/// The helper thread and what it has not reported yet.
#[derive(Debug)]
pub(super) struct SnapWriter {
    tx: Option<mpsc::Sender<Job>>,
    rx: mpsc::Receiver<Outcome>,
    handle: Option<JoinHandle<()>>,
    /// Handed over and not yet reported, oldest first: their files are kept from deletion.
    in_flight: Vec<SnapRef>,
    /// A checkpoint handed over and not yet reported, with the image it names.
    checkpoint: Option<Option<SnapRef>>,
    /// A checkpoint fell due while one was in flight.
    checkpoint_wanted: bool,
}

fn run(fs: &Fs, requests: &mpsc::Receiver<Job>, results: &mpsc::Sender<Outcome>) {
    while let Ok(first) = requests.recv() {
        let mut jobs = vec![first];
        jobs.extend(requests.try_iter());
        // Only the newest queued image is worth writing.
        let newest = jobs
            .iter()
            .filter_map(|j| match j {
                Job::Image(s) => Some(s.seq()),
                Job::Checkpoint(_) => None,
            })
            .max();
        for job in jobs {
            let outcome = match job {
                Job::Image(snap) if Some(snap.seq()) != newest => {
                    Outcome::Skipped(SnapRef::of(&snap))
                }
                Job::Image(snap) => match write_image(fs, &snap) {
                    Ok(_) => Outcome::Written(snap),
                    Err(e) => Outcome::Failed(e),
                },
                Job::Checkpoint(job) => match write_checkpoint(fs, &job, Some(FLUSH_EVERY)) {
                    Ok(_) => Outcome::Checkpointed(job.done()),
                    Err(e) => Outcome::Failed(e),
                },
            };
            if results.send(outcome).is_err() {
                return;
            }
        }
    }
}

impl SnapWriter {
    fn spawn(fs: Fs) -> Option<SnapWriter> {
        let (tx, requests) = mpsc::channel::<Job>();
        let (results, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("wal-snapshot".into())
            .spawn(move || {
                super::background_thread();
                run(&fs, &requests, &results)
            })
            .ok()?;
        Some(SnapWriter {
            tx: Some(tx),
            rx,
            handle: Some(handle),
            in_flight: Vec::new(),
            checkpoint: None,
            checkpoint_wanted: false,
        })
    }

    fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    fn busy(&self) -> bool {
        !self.in_flight.is_empty() || self.checkpoint.is_some()
    }
}

impl Drop for SnapWriter {
    fn drop(&mut self) {
        // Let the writes in progress finish (an image is then merely unreferenced; a checkpoint
        // is complete, its segments not yet recycled).
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl WalStorage {
    fn writer(&mut self) -> Option<&mut SnapWriter> {
        if self.snap_writer.is_none() {
            self.snap_writer = SnapWriter::spawn(self.fs.clone());
        }
        self.snap_writer.as_mut()
    }

    /// Hands `snap`'s image to the helper thread; `false` when there is none (the caller then
    /// writes it inline).
    pub(super) fn defer_snapshot(&mut self, snap: &Snapshot) -> bool {
        let Some(w) = self.writer() else {
            return false;
        };
        let sent = w.send(Job::Image(snap.clone()));
        if sent {
            w.in_flight.push(SnapRef::of(snap));
        }
        sent
    }

    /// Hands a checkpoint of the folded state now to the helper thread, or notes that one is
    /// due when another is in flight; `false` when there is no helper (the caller then
    /// checkpoints inline).
    pub(super) fn defer_checkpoint(&mut self) -> bool {
        let in_flight = match self.writer() {
            None => return false,
            Some(w) => w.checkpoint.is_some(),
        };
        if in_flight {
            if let Some(w) = self.snap_writer.as_mut() {
                w.checkpoint_wanted = true;
            }
            return true;
        }
        let job = self.checkpoint_job();
        let named = job.done().1;
        let Some(w) = self.snap_writer.as_mut() else {
            return false;
        };
        if w.send(Job::Checkpoint(job)) {
            w.checkpoint = Some(named);
            w.checkpoint_wanted = false;
            true
        } else {
            false
        }
    }

    /// Whether a checkpoint fell due while another was in flight.
    pub(super) fn checkpoint_wanted(&self) -> bool {
        self.snap_writer
            .as_ref()
            .is_some_and(|w| w.checkpoint.is_none() && w.checkpoint_wanted)
    }

    /// Takes what the helper thread reported. With `wait`, first waits until nothing is in
    /// flight. A failed write is this call's error.
    pub(super) fn collect_snapshots(&mut self, wait: bool) -> Result<Collected, StorageError> {
        let mut got = Collected::default();
        let Some(w) = self.snap_writer.as_mut() else {
            return Ok(got);
        };
        loop {
            let outcome = if wait && w.busy() {
                match w.rx.recv() {
                    Ok(o) => o,
                    Err(_) => break,
                }
            } else {
                match w.rx.try_recv() {
                    Ok(o) => o,
                    Err(_) => break,
                }
            };
            match outcome {
                Outcome::Written(s) => {
                    let r = SnapRef::of(&s);
                    w.in_flight.retain(|x| *x != r);
                    if got.image.as_ref().is_none_or(|(n, _)| s.seq() > n.seq()) {
                        got.image = Some((s, r));
                    }
                }
                Outcome::Skipped(r) => w.in_flight.retain(|x| *x != r),
                Outcome::Checkpointed(done) => {
                    w.checkpoint = None;
                    got.checkpoint = Some(done);
                }
                Outcome::Failed(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// Whether the helper thread has anything in flight or due.
    pub(super) fn helper_busy(&self) -> bool {
        self.snap_writer
            .as_ref()
            .is_some_and(|w| w.busy() || w.checkpoint_wanted)
    }

    /// Snapshot images handed to the helper thread and not yet folded in.
    pub(super) fn snapshots_in_flight(&self) -> usize {
        self.snap_writer.as_ref().map_or(0, |w| w.in_flight.len())
    }

    /// The files kept by [`Self::remove_other_snapshot_files`] for the helper: images in
    /// flight, and the one a checkpoint in flight names.
    pub(super) fn in_flight_refs(&self) -> Vec<SnapRef> {
        self.snap_writer.as_ref().map_or_else(Vec::new, |w| {
            w.in_flight
                .iter()
                .copied()
                .chain(w.checkpoint.flatten())
                .collect()
        })
    }
}
