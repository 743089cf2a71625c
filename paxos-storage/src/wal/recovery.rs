//! Recovery (the [`wal`](super) module's "Recovery rules"; docs/storage.md, "Recovery rules"):
//! read the checkpoint, replay every segment after it in order, refuse damage in the written
//! log, end the log at a torn or stale tail of the last segment, and position the writer there.

use super::checkpoint::read_checkpoint;
use super::frame;
use super::fs::{self, io_err, CHECKPOINT_FILE};
use super::record::{self, RecordKind};
use super::segment::Writer;
use super::snapfile::SnapRef;
use super::{Loaded, WalStorage};
use crate::StorageError;
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::Seq;
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl WalStorage {
    /// Reads the checkpoint, replays the log after it, repairs a torn tail, and positions the
    /// writer at the end of the log.
    pub(super) fn recover(&mut self) -> Result<(), StorageError> {
        let listing = self.fs.list()?;
        for t in &listing.tmps {
            self.fs.remove(t)?;
        }
        let ids = listing.ids;
        self.free_seq = listing.free.last().map_or(0, |(n, _)| *n);
        self.free = listing.free.into_iter().map(|(_, p)| p).collect();
        let ck_path = self.fs.path(CHECKPOINT_FILE);
        // Images the checkpoint and the replayed records name: every one stays (a later
        // recovery replays the same records).
        let mut named: Vec<SnapRef> = Vec::new();
        let (mut state, start_seg, start_off) = match read_checkpoint(&ck_path)? {
            Some(ck) => {
                let mut state = ck.state;
                if let Some(r) = &ck.snapshot {
                    state.snapshot = Some(self.read_snapshot_file(r)?);
                    named.push(*r);
                }
                (state, Some(ck.log_segment), ck.log_offset)
            }
            None => (DurableState::default(), None, 0),
        };
        let mut segs = ids;
        if let Some(start) = start_seg {
            // Left over when a crash came between the checkpoint's rename and their recycling.
            let old: Vec<u64> = segs.iter().copied().filter(|&id| id < start).collect();
            for &id in &old {
                self.recycle(&self.fs.path(&fs::segment_name(id)))?;
            }
            if !old.is_empty() {
                self.fs.sync_dir()?;
            }
            segs.retain(|&id| id >= start);
            if segs.first() != Some(&start) {
                return Err(StorageError::Corrupt {
                    path: ck_path,
                    offset: 0,
                    reason: format!("checkpoint starts in segment {start}, which is missing"),
                });
            }
        }
        for pair in segs.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(StorageError::Corrupt {
                    path: self.fs.path(&fs::segment_name(pair[1])),
                    offset: 0,
                    reason: format!("segment {} is missing", pair[0] + 1),
                });
            }
        }
        let mut records = 0u64;
        let mut replayed = 0u64;
        let mut end: Option<(u64, PathBuf, u64, bool, u64)> = None;
        for (i, &id) in segs.iter().enumerate() {
            let path = self.fs.path(&fs::segment_name(id));
            let data = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
            let from = if Some(id) == start_seg { start_off } else { 0 };
            let last = i + 1 == segs.len();
            let mut off = usize::try_from(from).unwrap_or(usize::MAX);
            if off > data.len() {
                return Err(StorageError::Corrupt {
                    path: ck_path,
                    offset: 0,
                    reason: format!(
                        "checkpoint offset {from} is past the end of {}",
                        path.display()
                    ),
                });
            }
            let mut sealed = false;
            let mut bad = None;
            while off < data.len() {
                let rec = match record::parse(&data, off, id) {
                    Ok(rec) => rec,
                    Err(reason) => {
                        bad = Some(reason);
                        break;
                    }
                };
                if rec.kind == RecordKind::Frame {
                    let f = match frame::check(&data, off, rec.payload, id) {
                        Ok(f) => f,
                        Err(reason) => {
                            bad = Some(reason);
                            break;
                        }
                    };
                    let mut o = f.body;
                    while o < f.end {
                        // The body's CRC matched, so a bad record inside it was written bad.
                        let inner = record::parse(&data[..f.end], o, frame::inner_seed(id))
                            .map_err(|reason| StorageError::Corrupt {
                                path: path.clone(),
                                offset: o as u64,
                                reason: format!("{reason} inside a valid frame"),
                            })?;
                        if matches!(inner.kind, RecordKind::Frame | RecordKind::Seal) {
                            return Err(StorageError::Corrupt {
                                path,
                                offset: o as u64,
                                reason: format!("{:?} record inside a frame", inner.kind),
                            });
                        }
                        replay(
                            self,
                            &mut state,
                            &mut named,
                            (&path, o, id),
                            inner.kind,
                            inner.payload,
                        )?;
                        records += 1;
                        o = inner.end;
                    }
                } else {
                    // A bare record: a seal, or a log written before frames existed.
                    sealed = replay(
                        self,
                        &mut state,
                        &mut named,
                        (&path, off, id),
                        rec.kind,
                        rec.payload,
                    )?;
                    records += 1;
                }
                let end = if rec.kind == RecordKind::Frame {
                    frame::valid_at(&data, off, id).map_or(rec.end, |f| f.end)
                } else {
                    rec.end
                };
                replayed += end as u64 - off as u64;
                off = end;
                if sealed {
                    break;
                }
            }
            if !last {
                if !sealed {
                    return Err(StorageError::Corrupt {
                        path,
                        offset: off as u64,
                        reason: format!(
                            "{} in a segment that is followed by segment {}",
                            bad.unwrap_or("missing seal record"),
                            id + 1
                        ),
                    });
                }
                continue;
            }
            if let Some(reason) = bad {
                let dirty_end = record::nonzero_end(&data, off);
                if dirty_end > off {
                    if let Some(why) = written_after(&data, off, id) {
                        return Err(StorageError::Corrupt {
                            path,
                            offset: off as u64,
                            reason: format!("{reason}, but {why}: damage inside the written log"),
                        });
                    }
                    // A torn write, or records of the file's previous life as another segment.
                    // Whole frames of the torn window may be among them (valid for this segment,
                    // at their own offsets): zero it all and sync, so that no later write that
                    // ends exactly where one starts brings it back into the log.
                    self.torn_tails += 1;
                    tracing::info!(
                        file = %path.display(),
                        offset = off,
                        bytes = dirty_end - off,
                        reason,
                        "WAL: log ends here; the torn or stale bytes after it are erased"
                    );
                    let file = self.fs.open_rw(&path)?;
                    let zeros = vec![0u8; 1 << 20];
                    let mut at = off;
                    while at < dirty_end {
                        let n = zeros.len().min(dirty_end - at);
                        self.fs.write_at(&file, &path, &zeros[..n], at as u64)?;
                        at += n;
                    }
                    self.fs.sync_data(&file, &path)?;
                }
            }
            let capacity = (data.len() as u64).max(self.opts.segment_bytes);
            end = Some((id, path, off as u64, sealed, capacity));
        }
        tracing::info!(
            dir = %self.fs.dir.display(),
            segments = segs.len(),
            records,
            bytes = replayed,
            "WAL recovered"
        );
        let w = match end {
            Some((id, path, pos, false, capacity)) => {
                let file = Arc::new(self.fs.open_rw(&path)?);
                Writer {
                    id,
                    path,
                    file,
                    pos,
                    capacity,
                    dirty: false,
                    // What recovery read may be only in the page cache (a killed process):
                    // nothing counts as synced until this writer's first fdatasync.
                    synced: 0,
                }
            }
            // Crashed after sealing, before the next segment was put in place.
            Some((id, _, _, true, _)) => self.next_segment(id + 1, 0)?,
            None => self.next_segment(1, 0)?,
        };
        // Files of snapshots a crash left unreferenced (written but never named).
        let keep: Vec<Option<SnapRef>> = named.iter().copied().map(Some).collect();
        self.remove_other_snapshot_files(&keep)?;
        self.names_logged = named.len() as u64;
        self.named_after = named
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i as u64, r))
            .collect();
        self.loaded = Some(Loaded {
            state,
            w,
            since_checkpoint: replayed,
        });
        Ok(())
    }
}

/// Applies one log record to `state`; returns whether it was the segment's seal.
fn replay(
    wal: &WalStorage,
    state: &mut DurableState,
    named: &mut Vec<SnapRef>,
    (path, off, segment): (&Path, usize, u64),
    kind: RecordKind,
    payload: &[u8],
) -> Result<bool, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: off as u64,
        reason,
    };
    let undecodable = |e: postcard::Error| corrupt(format!("undecodable {kind:?} record: {e}"));
    match kind {
        RecordKind::Batch => {
            let b: PersistBatch = postcard::from_bytes(payload).map_err(undecodable)?;
            state.apply(&b);
        }
        RecordKind::BatchRef => {
            let (mut b, r): (PersistBatch, SnapRef) =
                postcard::from_bytes(payload).map_err(undecodable)?;
            named.push(r);
            // Not newer: `apply` would ignore it (and a later checkpoint may have deleted it).
            if r.seq > state.snapshot_seq() {
                b.snapshot = Some(wal.read_snapshot_file(&r)?);
            }
            state.apply(&b);
        }
        RecordKind::Incarnation => {
            state.incarnation = postcard::from_bytes(payload).map_err(undecodable)?;
        }
        RecordKind::Truncate => {
            let seq: Seq = postcard::from_bytes(payload).map_err(undecodable)?;
            state.truncate_through(seq);
        }
        RecordKind::Seal => {
            let next: u64 = postcard::from_bytes(payload).map_err(undecodable)?;
            if next != segment + 1 {
                return Err(corrupt(format!(
                    "seal names segment {next}, expected {}",
                    segment + 1
                )));
            }
            return Ok(true);
        }
        RecordKind::Checkpoint | RecordKind::CheckpointPart | RecordKind::CheckpointEnd => {
            return Err(corrupt("checkpoint record inside a segment".into()))
        }
        RecordKind::Frame => return Err(corrupt("nested frame header".into())),
    }
    Ok(false)
}

/// Whether anything after the damage at `bad` in the last segment proves that the damaged bytes
/// had been synced: a valid frame whose `synced_before` is past `bad` (it was written after a
/// sync that covered them), or a valid bare record other than a seal (a log without frames, where
/// any valid record after a hole is refused). Says what it found.
///
/// Valid frames with `synced_before <= bad` are writes of the same unsynced window as the damaged
/// one (a power cut may persist their pages in any order), so they end the log too.
fn written_after(data: &[u8], bad: usize, segment: u64) -> Option<String> {
    let mut i = bad + 1;
    while let Some(v) = record::find_valid_after(data, i, segment) {
        i = v + 1;
        let Ok(rec) = record::parse(data, v, segment) else {
            continue;
        };
        match rec.kind {
            RecordKind::Frame => match frame::check(data, v, rec.payload, segment) {
                Ok(f) if f.synced_before > bad as u64 => {
                    return Some(format!(
                        "a valid frame at offset {v} was written after offset {} was synced",
                        f.synced_before
                    ))
                }
                _ => {}
            },
            // Written in the same unsynced window as the frames before it (rotation syncs
            // after the seal).
            RecordKind::Seal => {}
            _ => return Some(format!("a valid record follows at offset {v}")),
        }
    }
    None
}
