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

use super::fs::Fs;
use super::snapfile::{write_image, SnapRef};
use super::WalStorage;
use crate::StorageError;
use paxos_core::Snapshot;
use std::sync::mpsc;
use std::thread::JoinHandle;

enum Outcome {
    /// The image is durable in its file.
    Written(Snapshot),
    /// A newer snapshot was queued behind it, so it was never written.
    Skipped(SnapRef),
    Failed(SnapRef, StorageError),
}

/// The helper thread and what it has not reported yet.
#[derive(Debug)]
pub(super) struct SnapWriter {
    tx: Option<mpsc::Sender<Snapshot>>,
    rx: mpsc::Receiver<Outcome>,
    handle: Option<JoinHandle<()>>,
    /// Handed over and not yet reported, oldest first: their files are kept from deletion.
    pub(super) in_flight: Vec<SnapRef>,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Written(s) => write!(f, "Written({})", s.seq().0),
            Outcome::Skipped(r) => write!(f, "Skipped({})", r.seq.0),
            Outcome::Failed(r, e) => write!(f, "Failed({}, {e})", r.seq.0),
        }
    }
}

impl SnapWriter {
    fn spawn(fs: Fs) -> Option<SnapWriter> {
        let (tx, requests) = mpsc::channel::<Snapshot>();
        let (results, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("wal-snapshot".into())
            .spawn(move || {
                while let Ok(mut snap) = requests.recv() {
                    // Only the newest queued image is worth writing.
                    while let Ok(newer) = requests.try_recv() {
                        if results.send(Outcome::Skipped(SnapRef::of(&snap))).is_err() {
                            return;
                        }
                        snap = newer;
                    }
                    let outcome = match write_image(&fs, &snap) {
                        Ok(_) => Outcome::Written(snap),
                        Err(e) => Outcome::Failed(SnapRef::of(&snap), e),
                    };
                    if results.send(outcome).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(SnapWriter {
            tx: Some(tx),
            rx,
            handle: Some(handle),
            in_flight: Vec::new(),
        })
    }
}

impl Drop for SnapWriter {
    fn drop(&mut self) {
        // Let a write in progress finish (its file is then merely unreferenced).
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl WalStorage {
    /// Hands `snap`'s image to the helper thread; `false` when there is none (the caller then
    /// writes it inline).
    pub(super) fn defer_snapshot(&mut self, snap: &Snapshot) -> bool {
        if self.snap_writer.is_none() {
            self.snap_writer = SnapWriter::spawn(self.fs.clone());
        }
        let Some(w) = self.snap_writer.as_mut() else {
            return false;
        };
        let sent =
            w.tx.as_ref()
                .is_some_and(|tx| tx.send(snap.clone()).is_ok());
        if sent {
            w.in_flight.push(SnapRef::of(snap));
        }
        sent
    }

    /// Takes what the helper thread reported; returns the newest image now durable, if any.
    /// With `wait`, first waits until nothing is in flight. A failed write is this call's error.
    pub(super) fn collect_snapshots(
        &mut self,
        wait: bool,
    ) -> Result<Option<(Snapshot, SnapRef)>, StorageError> {
        let Some(w) = self.snap_writer.as_mut() else {
            return Ok(None);
        };
        let mut newest: Option<Snapshot> = None;
        loop {
            let outcome = if wait && !w.in_flight.is_empty() {
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
            let done = match &outcome {
                Outcome::Written(s) => SnapRef::of(s),
                Outcome::Skipped(r) | Outcome::Failed(r, _) => *r,
            };
            w.in_flight.retain(|r| *r != done);
            match outcome {
                Outcome::Written(s) => {
                    if newest.as_ref().is_none_or(|n| s.seq() > n.seq()) {
                        newest = Some(s);
                    }
                }
                Outcome::Skipped(_) => {}
                Outcome::Failed(_, e) => return Err(e),
            }
        }
        Ok(newest.map(|s| {
            let r = SnapRef::of(&s);
            (s, r)
        }))
    }

    /// Snapshot images handed to the helper thread and not yet folded in.
    pub(super) fn snapshots_in_flight(&self) -> usize {
        self.snap_writer.as_ref().map_or(0, |w| w.in_flight.len())
    }

    /// The files of images in flight (kept by [`Self::remove_other_snapshot_files`]).
    pub(super) fn in_flight_refs(&self) -> Vec<SnapRef> {
        self.snap_writer
            .as_ref()
            .map_or_else(Vec::new, |w| w.in_flight.clone())
    }
}
