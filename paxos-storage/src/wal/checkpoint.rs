//! Compaction by checkpoint (docs/storage.md, "Record format" for the file and "Writing",
//! Checkpoints): the folded state and the log position it covers are written to `checkpoint`
//! (temp file, fsync, rename, directory fsync), then the segments wholly below that position go
//! to the free pool. Recovery reads the checkpoint back with [`read_checkpoint`].

use super::fs::{self, CHECKPOINT_FILE};
use super::record::{self, RecordKind, HEADER_LEN};
use super::snapfile::SnapRef;
use super::{encode_err, WalStorage};
use crate::StorageError;
use paxos_core::durable::DurableState;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// First bytes of the checkpoint file.
/// (`C2`: the snapshot is a [`SnapRef`] to its own file; `C1` embedded the image.)
const CHECKPOINT_MAGIC: &[u8; 8] = b"PSBWALC2";

/// The checkpoint file's content.
#[derive(Serialize)]
struct CheckpointRef<'a> {
    /// Replay starts in this segment …
    log_segment: u64,
    /// … at this offset; everything before is folded into `state`.
    log_offset: u64,
    /// The folded state, its snapshot left out …
    state: &'a DurableState,
    /// … and named here (its image is in its own file).
    snapshot: Option<SnapRef>,
}

/// The checkpoint file's content, as read back.
#[derive(Deserialize)]
pub(super) struct CheckpointOwned {
    pub(super) log_segment: u64,
    pub(super) log_offset: u64,
    pub(super) state: DurableState,
    pub(super) snapshot: Option<SnapRef>,
}

/// A checkpoint to write: the folded state (without its image) at a log position.
#[derive(Debug)]
pub(super) struct CheckpointJob {
    seg: u64,
    offset: u64,
    state: DurableState,
    snapshot: Option<SnapRef>,
    /// `WalStorage::names_logged` when the job was taken: records naming images from then on
    /// lie after the checkpoint's position, and replay reads their files.
    names_before: u64,
}

/// What must stay once a checkpoint is durable: the segment its log replays from, the image it
/// names, and the first image record replayed after it.
pub(super) type CheckpointDone = (u64, Option<SnapRef>, u64);

impl CheckpointJob {
    /// What stays once it is durable.
    pub(super) fn done(&self) -> CheckpointDone {
        (self.seg, self.snapshot, self.names_before)
    }
}

/// Writes `job` as the checkpoint file of `fs`'s directory (temporary name, fsync, rename,
/// directory fsync); returns the segment from which its log replays and its size.
///
/// The file is fdatasynced after each `flush_every` bytes when given, as images are (see
/// [`write_image`](super::snapfile::write_image)): a checkpoint of hundreds of MiB left dirty
/// for one final flush made the log's own syncs wait behind it.
pub(super) fn write_checkpoint(
    fs: &fs::Fs,
    job: &CheckpointJob,
    flush_every: Option<usize>,
) -> Result<(u64, usize), StorageError> {
    let mut buf = CHECKPOINT_MAGIC.to_vec();
    record::encode(
        &mut buf,
        RecordKind::Checkpoint,
        &CheckpointRef {
            log_segment: job.seg,
            log_offset: job.offset,
            state: &job.state,
            snapshot: job.snapshot,
        },
        0,
    )
    .map_err(encode_err)?;
    let tmp = fs.path(&format!("{CHECKPOINT_FILE}{}", fs::TMP_SUFFIX));
    let path = fs.path(CHECKPOINT_FILE);
    let file = fs.create(&tmp)?;
    super::snapfile::write_pieces(fs, &file, &tmp, &buf, flush_every)?;
    fs.sync_all(&file, &tmp)?;
    drop(file);
    // The checkpoint it replaces can be hundreds of MiB: freed off this thread.
    let old = fs.hold(&path);
    fs.rename(&tmp, &path)?;
    fs.sync_dir()?;
    fs.release(old);
    Ok((job.seg, buf.len()))
}

impl WalStorage {
    /// The folded state now, as a checkpoint to write (and the log since it starts counting
    /// again). Values are shared, not copied.
    pub(super) fn checkpoint_job(&mut self) -> CheckpointJob {
        let l = self.loaded.as_mut().expect("checked by ready()");
        l.since_checkpoint = 0;
        let mut state = l.state.clone();
        // The image stays out of the checkpoint: it is named, and lives in its own file.
        let snapshot = state.snapshot.take().as_ref().map(SnapRef::of);
        CheckpointJob {
            seg: l.w.id,
            offset: l.w.pos,
            state,
            snapshot,
            names_before: self.names_logged,
        }
    }

    /// After the checkpoint replaying from segment `seg` and naming `snapshot` is durable:
    /// recycles or deletes the segments it covers and the images nothing names any more.
    pub(super) fn checkpoint_durable(
        &mut self,
        (seg, snapshot, names_before): CheckpointDone,
    ) -> Result<(), StorageError> {
        let old: Vec<u64> = self
            .fs
            .list()?
            .ids
            .into_iter()
            .filter(|&id| id < seg)
            .collect();
        for &id in &old {
            self.recycle(&self.fs.path(&fs::segment_name(id)))?;
        }
        if !old.is_empty() {
            self.fs.sync_dir()?;
        }
        // Named now: the checkpoint's snapshot, and every image a `BatchRef` after the
        // checkpoint's position names (replay reads each one newer than the state so far).
        self.named_after.retain(|(n, _)| *n >= names_before);
        let mut keep: Vec<Option<SnapRef>> =
            self.named_after.iter().map(|(_, r)| Some(*r)).collect();
        keep.push(snapshot);
        // And the state's own (saved, or folded, but not yet named by any checkpoint).
        keep.push(self.loaded().state.snapshot.as_ref().map(SnapRef::of));
        self.remove_other_snapshot_files(&keep)?;
        Ok(())
    }

    /// Writes the folded state as the new checkpoint now, then recycles or deletes the segments
    /// it covers.
    pub(super) fn checkpoint(&mut self) -> Result<(), StorageError> {
        // One writer of the checkpoint file at a time: an older checkpoint still on the helper
        // must not land after (and over) this one.
        self.settle_helper()?;
        let started = std::time::Instant::now();
        let job = self.checkpoint_job();
        let (seg, bytes) = write_checkpoint(&self.fs, &job, None)?;
        self.checkpoint_durable(job.done())?;
        tracing::debug!(
            segment = seg,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "WAL checkpoint written"
        );
        Ok(())
    }
}

/// Parses the checkpoint file `path` (its bytes are `data`); any damage is
/// [`StorageError::Corrupt`], since the file is only ever replaced by rename.
pub(super) fn read_checkpoint(path: &Path, data: &[u8]) -> Result<CheckpointOwned, StorageError> {
    let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if !data.starts_with(CHECKPOINT_MAGIC) {
        return Err(corrupt(0, "bad checkpoint magic".into()));
    }
    let off = CHECKPOINT_MAGIC.len();
    let rec = record::parse(data, off, 0).map_err(|r| corrupt(off, r.into()))?;
    if rec.kind != RecordKind::Checkpoint || rec.end != data.len() {
        return Err(corrupt(off, "unexpected content in checkpoint".into()));
    }
    postcard::from_bytes(rec.payload)
        .map_err(|e| corrupt(off + HEADER_LEN, format!("undecodable checkpoint: {e}")))
}
