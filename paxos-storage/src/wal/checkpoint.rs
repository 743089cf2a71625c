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

impl WalStorage {
    /// Writes the folded state as the new checkpoint, then recycles or deletes the segments it
    /// covers.
    pub(super) fn checkpoint(&mut self) -> Result<(), StorageError> {
        let l = self.loaded.as_mut().expect("checked by ready()");
        let (seg, offset) = (l.w.id, l.w.pos);
        let mut buf = CHECKPOINT_MAGIC.to_vec();
        // The image stays out of the checkpoint: moved out for the encoding, then back.
        let snap = l.state.snapshot.take();
        let snapshot = snap.as_ref().map(SnapRef::of);
        let encoded = record::encode(
            &mut buf,
            RecordKind::Checkpoint,
            &CheckpointRef {
                log_segment: seg,
                log_offset: offset,
                state: &l.state,
                snapshot,
            },
            0,
        );
        l.state.snapshot = snap;
        encoded.map_err(encode_err)?;
        let tmp = self
            .fs
            .path(&format!("{CHECKPOINT_FILE}{}", fs::TMP_SUFFIX));
        let path = self.fs.path(CHECKPOINT_FILE);
        let file = self.fs.create(&tmp)?;
        self.fs.write_at(&file, &tmp, &buf, 0)?;
        self.fs.sync_all(&file, &tmp)?;
        drop(file);
        self.fs.rename(&tmp, &path)?;
        self.fs.sync_dir()?;
        self.loaded().since_checkpoint = 0;
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
        // Only the checkpoint's snapshot is named by anything now.
        self.remove_other_snapshot_files(snapshot.as_ref())?;
        tracing::debug!(segment = seg, offset, "WAL checkpoint written");
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
