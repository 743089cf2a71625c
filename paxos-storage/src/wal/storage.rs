//! The [`Storage`] implementation of the file WAL (docs/architecture.md, "Traits and who
//! implements them"; docs/storage.md, "The trait"): load recovers and durably bumps the
//! incarnation, append is one group commit, and snapshots and truncation write records or a
//! checkpoint.

use super::record::{self, RecordKind};
use super::{encode_err, WalStorage};
use crate::{Storage, StorageError};
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::message::Snapshot;
use paxos_core::Seq;

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
        self.guarded(|s| {
            // A snapshot's image goes to its own file first; its batch's record names it.
            // (A snapshot not newer than the one before it changes nothing: `apply` ignores it,
            // so its record leaves it out.)
            let mut refs = Vec::new();
            let mut newest = s.loaded().state.snapshot_seq();
            for b in batches {
                refs.push(match &b.snapshot {
                    Some(snap) => {
                        let r = if snap.seq() > newest {
                            newest = snap.seq();
                            Some(s.write_snapshot_file(snap)?)
                        } else {
                            None
                        };
                        let stripped = PersistBatch {
                            snapshot: None,
                            ..b.clone()
                        };
                        Some((stripped, r))
                    }
                    None => None,
                });
            }
            s.write_records(|i, buf, seg| match (batches.get(i), refs.get(i)) {
                (Some(_), Some(Some((stripped, Some(r))))) => {
                    record::encode(buf, RecordKind::BatchRef, &(stripped, r), seg)
                        .map_err(encode_err)?;
                    Ok(true)
                }
                (Some(_), Some(Some((stripped, None)))) => {
                    record::encode(buf, RecordKind::Batch, stripped, seg).map_err(encode_err)?;
                    Ok(true)
                }
                (Some(b), _) => {
                    record::encode(buf, RecordKind::Batch, b, seg).map_err(encode_err)?;
                    Ok(true)
                }
                (None, _) => Ok(false),
            })?;
            let updates: usize = batches
                .iter()
                .map(|b| b.accepted.len() + b.ordered.len() + b.pending.len())
                .sum();
            // Large appends: fold into the in-memory state while the flush runs.
            let overlap = s.opts.overlap_sync_updates as usize;
            let syncing = sync && overlap > 0 && updates >= overlap && s.start_sync();
            let l = s.loaded();
            let floor = l.state.snapshot_seq();
            for b in batches {
                l.state.apply(b);
            }
            let snapshot_advanced = l.state.snapshot_seq() > floor;
            if syncing {
                s.finish_sync()?;
            } else if sync {
                s.sync_writer()?;
            }
            let every = s.opts.checkpoint_bytes;
            if snapshot_advanced || (every > 0 && s.loaded().since_checkpoint >= every) {
                s.checkpoint()?;
            }
            Ok(())
        })
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
