//! The [`Storage`] implementation of the file WAL (docs/architecture.md, "Traits and who
//! implements them"; docs/storage.md, "The trait"): load recovers and durably bumps the
//! incarnation, append is one group commit, and snapshots and truncation write records or a
//! checkpoint.

use super::phase::{Phase, PhaseClock};
use super::record::{self, RecordKind};
use super::snapfile::SnapRef;
use super::{encode_err, WalStorage};
use crate::{Storage, StorageError};
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::message::Snapshot;
use paxos_core::Seq;
use std::borrow::Cow;

impl Storage for WalStorage {
    fn name(&self) -> &'static str {
        "wal"
    }

    fn load(&mut self) -> Result<DurableState, StorageError> {
        if let Some(why) = &self.poisoned {
            return Err(StorageError::Poisoned(why.clone()));
        }
        if self.loaded.is_some() {
            return Err(StorageError::Misuse("load() called twice"));
        }
        let r = self.recover().and_then(|()| {
            let inc = self.loaded().state.incarnation + 1;
            self.prefill()?;
            self.write_records(|i, buf, seg| {
                if i > 0 {
                    return Ok(false);
                }
                record::encode(buf, RecordKind::Incarnation, &inc, seg).map_err(encode_err)?;
                Ok(true)
            })?;
            self.sync_writer()?;
            self.loaded().state.incarnation = inc;
            Ok(self.loaded().state.clone())
        });
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    fn append(&mut self, batches: &[PersistBatch], sync: bool) -> Result<(), StorageError> {
        self.guarded(|s| s.append_records(batches, sync, false))
    }

    fn snapshot_writes_in_flight(&self) -> usize {
        self.snapshots_in_flight()
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.guarded(|s| s.sync_writer())
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.guarded(|s| {
            let l = s.loaded();
            if snapshot.seq() <= l.state.snapshot_seq() {
                return Ok(());
            }
            s.write_snapshot_file(snapshot)?;
            let l = s.loaded();
            l.state.truncate_through(snapshot.seq());
            l.state.snapshot = Some(snapshot.clone());
            s.checkpoint()
        })
    }

    fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.ready()?.state.snapshot.clone())
    }

    fn truncate_through(&mut self, seq: Seq) -> Result<(), StorageError> {
        self.guarded(|s| {
            s.write_records(|i, buf, seg| {
                if i > 0 {
                    return Ok(false);
                }
                record::encode(buf, RecordKind::Truncate, &seq, seg).map_err(encode_err)?;
                Ok(true)
            })?;
            s.loaded().state.truncate_through(seq);
            Ok(())
        })
    }
}

impl WalStorage {
    /// Waits until every own snapshot and checkpoint handed to the helper thread is durable,
    /// names the newest image in the log and checkpoints after it (as the next appends would):
    /// for a clean shutdown, and for tests.
    pub fn settle_snapshots(&mut self) -> Result<(), StorageError> {
        self.guarded(|s| s.settle_helper())
    }

    /// [`Self::settle_snapshots`] without the poisoning guard.
    pub(super) fn settle_helper(&mut self) -> Result<(), StorageError> {
        // Naming a landed image may start a checkpoint: wait for that one too.
        while self.helper_busy() {
            self.append_records(&[], false, true)?;
        }
        Ok(())
    }

    /// [`Storage::append`], first naming an own snapshot the helper thread finished (waiting
    /// for it with `wait`).
    fn append_records(
        &mut self,
        batches: &[PersistBatch],
        sync: bool,
        wait: bool,
    ) -> Result<(), StorageError> {
        let s = self;
        let mut clock = PhaseClock::start();
        s.rotations.clear();
        // An own snapshot whose image the helper thread made durable since the last append
        // is named first (`snapwriter`): every slot it covers was executed before it was
        // taken, so before any of these batches.
        let floor = s.loaded().state.snapshot_seq();
        let done = s.collect_snapshots(wait)?;
        let landed = done.image.filter(|(snap, _)| snap.seq() > floor);
        clock.lap(Phase::Collect);
        // Each record: the batch as written and folded, and the image file it names.
        let mut records: Vec<(Cow<'_, PersistBatch>, Option<SnapRef>)> = Vec::new();
        let mut newest = floor;
        if let Some((snap, r)) = &landed {
            newest = snap.seq();
            let named = PersistBatch {
                snapshot: Some(snap.clone()),
                ..PersistBatch::default()
            };
            records.push((Cow::Owned(named), Some(*r)));
        }
        for b in batches {
            let Some(snap) = &b.snapshot else {
                records.push((Cow::Borrowed(b), None));
                continue;
            };
            // A snapshot not newer than the one before it changes nothing (`apply` ignores
            // it), so its record leaves it out.
            let keep = snap.seq() > newest;
            let defer =
                keep && b.snapshot_deferrable && s.opts.defer_snapshots && s.defer_snapshot(snap);
            if keep && !defer {
                newest = snap.seq();
                let r = s.write_snapshot_file(snap)?;
                records.push((Cow::Borrowed(b), Some(r)));
            } else {
                let stripped = PersistBatch {
                    snapshot: None,
                    ..b.clone()
                };
                records.push((Cow::Owned(stripped), None));
            }
        }
        clock.lap(Phase::Images);
        for (_, r) in &records {
            if let Some(r) = r {
                s.named_after.push((s.names_logged, *r));
                s.names_logged += 1;
            }
        }
        s.write_records(|i, buf, seg| match records.get(i) {
            Some((b, Some(r))) => {
                let stripped = PersistBatch {
                    snapshot: None,
                    ..(**b).clone()
                };
                record::encode(buf, RecordKind::BatchRef, &(&stripped, r), seg)
                    .map_err(encode_err)?;
                Ok(true)
            }
            Some((b, None)) => {
                record::encode(buf, RecordKind::Batch, &**b, seg).map_err(encode_err)?;
                Ok(true)
            }
            None => Ok(false),
        })?;
        clock.lap(Phase::Write);
        let updates: usize = batches
            .iter()
            .map(|b| b.accepted.len() + b.ordered.len() + b.pending.len())
            .sum();
        // Large appends: fold into the in-memory state while the flush runs.
        let overlap = s.opts.overlap_sync_updates as usize;
        let syncing = sync && overlap > 0 && updates >= overlap && s.start_sync();
        let l = s.loaded();
        for (b, _) in &records {
            l.state.apply(b);
        }
        let snapshot_advanced = l.state.snapshot_seq() > floor;
        clock.lap(Phase::Fold);
        if syncing {
            s.finish_sync()?;
        } else if sync {
            s.sync_writer()?;
        }
        clock.lap(Phase::Sync);
        // A checkpoint the helper finished: only now, with a landed image folded in (and so
        // kept as the state's), may the files and segments it covers go.
        if let Some(c) = done.checkpoint {
            s.checkpoint_durable(c)?;
        }
        clock.lap(Phase::Collected);
        let every = s.opts.checkpoint_bytes;
        let due = snapshot_advanced
            || (every > 0 && s.loaded().since_checkpoint >= every)
            || s.checkpoint_wanted();
        // Off the append path (`snapwriter`) unless deferral is off or has no helper.
        if due && !(s.opts.defer_snapshots && s.defer_checkpoint()) {
            s.checkpoint()?;
        }
        clock.lap(Phase::Checkpoint);
        clock.report(batches.len(), &std::mem::take(&mut s.rotations));
        Ok(())
    }
}
