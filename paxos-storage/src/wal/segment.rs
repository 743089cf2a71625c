//! Segment files (docs/storage.md, "Writing": segments and preallocation, rotation): the
//! segment being appended to, its seal and the switch to the next one, which is a recycled file,
//! one preallocated ahead on a helper thread, or a fresh one; and the pool of free segments.

use super::fs::{self, io_err};
use super::record::{self, RecordKind, SEAL_RESERVE};
use super::{encode_err, WalStorage};
use crate::StorageError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Writer {
    pub(super) id: u64,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    /// Next write offset.
    pub(super) pos: u64,
    /// Usable size of the segment.
    pub(super) capacity: u64,
    /// Whether bytes were written since the last fdatasync.
    pub(super) dirty: bool,
    /// Every byte below this offset was fdatasynced by this writer (a frame's `synced_before`).
    pub(super) synced: u64,
}

impl Writer {
    /// Whether `bytes` more fit before the space kept for the seal.
    pub(super) fn fits(&self, bytes: usize) -> bool {
        self.pos + (bytes + SEAL_RESERVE) as u64 <= self.capacity
    }
}

impl WalStorage {
    /// Seals the current segment (seal record + fdatasync) and continues in the next one, which
    /// must hold at least `need` bytes.
    pub(super) fn rotate(&mut self, need: u64) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let id = self.loaded().w.id;
        debug_assert!(self.loaded().w.fits(0), "no room left for the seal");
        let mut seal = Vec::with_capacity(SEAL_RESERVE);
        record::encode(&mut seal, RecordKind::Seal, &(id + 1), id).map_err(encode_err)?;
        {
            let l = self.loaded.as_mut().expect("checked by ready()");
            self.fs.write_at(&l.w.file, &l.w.path, &seal, l.w.pos)?;
            l.w.pos += seal.len() as u64;
            l.w.dirty = true;
        }
        // A segment is complete and durable before its successor exists, so recovery may treat
        // any damage in a non-last segment as corruption.
        self.sync_writer()?;
        let synced = started.elapsed();
        let w = self.next_segment(id + 1, need)?;
        self.loaded().w = w;
        self.rotations.push((synced, started.elapsed() - synced));
        Ok(())
    }

    /// Puts segment `id` in place, with room for at least `need` bytes: a recycled file if there
    /// is one, else the one the helper thread prepared, else a fresh one.
    pub(super) fn next_segment(&mut self, id: u64, need: u64) -> Result<Writer, StorageError> {
        let path = self.fs.path(&fs::segment_name(id));
        while let Some(free) = self.free.pop_front() {
            let len = std::fs::metadata(&free)
                .map_err(|e| io_err(&free, e))?
                .len();
            if len < need {
                self.fs.remove(&free)?;
                continue;
            }
            self.fs.rename(&free, &path)?;
            self.fs.sync_dir()?;
            let file = Arc::new(self.fs.open_rw(&path)?);
            return Ok(Writer {
                id,
                path,
                file,
                pos: 0,
                capacity: len.max(self.opts.segment_bytes),
                dirty: false,
                synced: 0,
            });
        }
        let mut prepared = None;
        if let Some(h) = self.next.take() {
            let seg = h.join().map_err(|_| StorageError::Backend {
                backend: "wal",
                message: "segment preallocation thread panicked".into(),
            })??;
            if seg.id == id && seg.capacity >= need {
                prepared = Some(seg);
            } else {
                self.fs.remove(&seg.tmp)?;
            }
        }
        let seg = match prepared {
            Some(seg) => seg,
            None => self.fs.prepare_segment(
                id,
                self.opts.segment_bytes.max(need),
                self.opts.preallocation,
            )?,
        };
        let (id, path, file, capacity) = self.fs.install_segment(seg)?;
        let file = Arc::new(file);
        Ok(Writer {
            id,
            path,
            file,
            pos: 0,
            capacity,
            dirty: false,
            synced: 0,
        })
    }

    /// Starts preallocating segment `id` on a helper thread.
    pub(super) fn prepare_ahead(&mut self, id: u64) {
        let fs = self.fs.clone();
        let (bytes, how) = (self.opts.segment_bytes, self.opts.preallocation);
        self.next = Some(std::thread::spawn(move || {
            fs.prepare_segment(id, bytes, how)
        }));
    }

    /// Renames a segment file that is no longer part of the log into the free pool, or deletes
    /// it when the pool is full. The caller fsyncs the directory.
    pub(super) fn recycle(&mut self, path: &Path) -> Result<(), StorageError> {
        if self.free.len() < self.opts.max_free_segments as usize {
            self.free_seq += 1;
            let to = self.fs.path(&fs::free_name(self.free_seq));
            self.fs.rename(path, &to)?;
            self.free.push_back(to);
            Ok(())
        } else {
            self.fs.remove(path)
        }
    }

    /// Makes sure `prefill_segments` free segments exist (done at load, before any append).
    pub(super) fn prefill(&mut self) -> Result<(), StorageError> {
        let mut added = false;
        while self.free.len() < self.opts.prefill_segments as usize {
            self.free_seq += 1;
            let seg = self.fs.prepare_segment(
                u64::MAX - self.free_seq,
                self.opts.segment_bytes,
                self.opts.preallocation,
            )?;
            let to = self.fs.path(&fs::free_name(self.free_seq));
            self.fs.rename(&seg.tmp, &to)?;
            self.free.push_back(to);
            added = true;
        }
        if added {
            self.fs.sync_dir()?;
        }
        Ok(())
    }
}
