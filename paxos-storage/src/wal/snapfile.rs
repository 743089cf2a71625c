//! Snapshot images as files of their own (docs/storage.md, "Snapshot files").
//!
//! A snapshot can be far larger than any record (records are capped, and a checkpoint that
//! embedded the image rewrote all of it at every checkpoint), so the WAL keeps each image in
//! `snapshot-<seq>-<digest>.img`: written in pieces to a temporary name, fsynced, renamed into
//! place and the directory fsynced *before* any record or checkpoint names it. Records and the
//! checkpoint carry only a [`SnapRef`]; loading reads the file back and checks its length and
//! SHA-256 digest, so a damaged image is refused, never installed. Files nobody references any
//! more (after the checkpoint that moved past them, or left by a crash) are deleted.

use super::fs::{self, io_err};
use super::WalStorage;
use crate::StorageError;
use paxos_core::{Digest, Seq, Snapshot};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Bytes per `pwrite` of an image.
const WRITE_PIECE: usize = 4 << 20;

/// Images and checkpoints are fdatasynced after each this many bytes (see [`write_image`]).
pub(crate) const FLUSH_EVERY: usize = 16 << 20;

const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".img";

/// What records and the checkpoint store in place of a snapshot image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapRef {
    pub(crate) seq: Seq,
    pub(crate) digest: Digest,
    pub(crate) len: u64,
}

impl SnapRef {
    pub(crate) fn of(s: &Snapshot) -> SnapRef {
        SnapRef {
            seq: s.seq(),
            digest: s.digest(),
            len: s.len(),
        }
    }

    fn file_name(&self) -> String {
        let hex: String = self.digest.0.iter().map(|b| format!("{b:02x}")).collect();
        format!("{PREFIX}{:020}-{hex}{SUFFIX}", self.seq.0)
    }
}

/// Makes `snap`'s image durable as its own file in `fs`'s directory: written in pieces to a
/// temporary name, fsynced, renamed and the directory fsynced (a no-op when the file exists
/// with its length).
///
/// The file is also fdatasynced after each [`FLUSH_EVERY`] bytes: a write then never leaves
/// hundreds of MiB dirty for one final flush, which would queue the log's own fdatasyncs (and
/// those of every other process on the disk) behind it.
pub(crate) fn write_image(fs: &fs::Fs, snap: &Snapshot) -> Result<SnapRef, StorageError> {
    let r = SnapRef::of(snap);
    let path = fs.path(&r.file_name());
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == r.len) {
        return Ok(r);
    }
    let tmp = fs.path(&format!("{}{}", r.file_name(), fs::TMP_SUFFIX));
    let file = fs.create(&tmp)?;
    write_pieces(fs, &file, &tmp, snap.image(), Some(FLUSH_EVERY))?;
    fs.sync_all(&file, &tmp)?;
    drop(file);
    // A file of that name with another length (damaged) goes: freed off this thread.
    let old = fs.hold(&path);
    fs.rename(&tmp, &path)?;
    fs.sync_dir()?;
    fs.release(old);
    Ok(r)
}

/// Writes `bytes` at the start of `file` in pieces, fdatasyncing after each `flush_every` bytes
/// when given (the caller makes the whole file durable after).
pub(crate) fn write_pieces(
    fs: &fs::Fs,
    file: &std::fs::File,
    path: &std::path::Path,
    bytes: &[u8],
    flush_every: Option<usize>,
) -> Result<(), StorageError> {
    let mut off = 0usize;
    while off < bytes.len() {
        let end = (off + WRITE_PIECE).min(bytes.len());
        fs.write_at(file, path, &bytes[off..end], off as u64)?;
        if flush_every.is_some_and(|n| end / n > off / n) {
            fs.sync_data(file, path)?;
        }
        off = end;
    }
    Ok(())
}

impl WalStorage {
    fn snapshot_path(&self, r: &SnapRef) -> PathBuf {
        self.fs.path(&r.file_name())
    }

    /// Makes `snap`'s image durable as its own file (a no-op when it already is). Inline, but
    /// flushed in pieces too: one final flush of a 1 GiB installed image stalled the other
    /// servers' fdatasyncs on the same disk for a quarter of a second.
    pub(crate) fn write_snapshot_file(&self, snap: &Snapshot) -> Result<SnapRef, StorageError> {
        write_image(&self.fs, snap)
    }

    /// Reads the image `r` names and checks it against `r`.
    pub(crate) fn read_snapshot_file(&self, r: &SnapRef) -> Result<Snapshot, StorageError> {
        let path = self.snapshot_path(r);
        let corrupt = |reason: String| StorageError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        };
        let data = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                corrupt(format!("snapshot file of slot {} is missing", r.seq.0))
            } else {
                io_err(&path, e)
            }
        })?;
        if data.len() as u64 != r.len {
            return Err(corrupt(format!(
                "snapshot file has {} bytes, the log says {}",
                data.len(),
                r.len
            )));
        }
        let snap = Snapshot::from_image(data.into(), Some(r.digest))
            .map_err(|e| corrupt(e.to_string()))?;
        if snap.seq() != r.seq {
            return Err(corrupt(format!(
                "snapshot file holds slot {}, the log says {}",
                snap.seq().0,
                r.seq.0
            )));
        }
        Ok(snap)
    }

    /// Deletes every snapshot file but those `keep` names.
    pub(crate) fn remove_other_snapshot_files(
        &self,
        keep: &[Option<SnapRef>],
    ) -> Result<(), StorageError> {
        // Besides `keep`, the images the helper thread is writing or has written but not yet
        // had named by a record, and the one a checkpoint in flight names.
        let keep: Vec<String> = keep
            .iter()
            .flatten()
            .copied()
            .chain(self.in_flight_refs())
            .map(|r| r.file_name())
            .collect();
        let dir = &self.fs.dir;
        let mut removed = false;
        for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(PREFIX) && name.ends_with(SUFFIX) && !keep.iter().any(|k| k == name)
            {
                self.fs.remove(&entry.path())?;
                removed = true;
            }
        }
        if removed {
            self.fs.sync_dir()?;
        }
        Ok(())
    }
}
