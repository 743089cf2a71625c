//! The write path and group commit (docs/storage.md, "Writing"; the durability contract of
//! [`Storage::append`](crate::Storage::append)): records are encoded into one buffer and written
//! with one `pwrite` per segment touched, then fdatasynced once, inline or on the helper thread
//! while the caller folds the batches into its in-memory state.

use super::frame::{self, FRAME_LEN};
use super::fs::Fs;
use super::record::{self, SEAL_RESERVE};
use super::WalStorage;
use crate::StorageError;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Runs fdatasync on a helper thread so that folding a large append into the in-memory state
/// overlaps the flush instead of adding to it.
#[derive(Debug)]
pub(super) struct Syncer {
    tx: Option<mpsc::Sender<(Arc<File>, PathBuf)>>,
    rx: mpsc::Receiver<Result<(), StorageError>>,
    handle: Option<JoinHandle<()>>,
}

impl Syncer {
    fn spawn(fs: Fs) -> Option<Self> {
        let (tx, requests) = mpsc::channel::<(Arc<File>, PathBuf)>();
        let (results, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || {
                for (file, path) in requests {
                    if results.send(fs.sync_data(&file, &path)).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Self {
            tx: Some(tx),
            rx,
            handle: Some(handle),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl WalStorage {
    /// Writes `self.buf[range]` at the end of the current segment.
    pub(super) fn write_buf(&mut self, range: std::ops::Range<usize>) -> Result<(), StorageError> {
        if range.is_empty() {
            return Ok(());
        }
        let l = self.loaded.as_mut().expect("checked by ready()");
        let bytes = &self.buf[range];
        debug_assert!(l.w.fits(bytes.len()), "record overruns the segment");
        self.fs.write_at(&l.w.file, &l.w.path, bytes, l.w.pos)?;
        l.w.pos += bytes.len() as u64;
        l.w.dirty = true;
        l.since_checkpoint += bytes.len() as u64;
        // Past half of the segment with nothing ready for the next: preallocate it on the side.
        let (id, half) = (l.w.id, l.w.pos * 2 > l.w.capacity);
        if half && self.next.is_none() && self.free.is_empty() {
            self.prepare_ahead(id + 1);
        }
        Ok(())
    }

    /// fdatasyncs the current segment if anything was written since the last sync.
    pub(super) fn sync_writer(&mut self) -> Result<(), StorageError> {
        let l = self.loaded.as_mut().expect("checked by ready()");
        if l.w.dirty {
            self.fs.sync_data(&l.w.file, &l.w.path)?;
            l.w.dirty = false;
            l.w.synced = l.w.pos;
        }
        Ok(())
    }

    /// Hands the fdatasync of the current segment to the helper thread; `false` if there is
    /// nothing to sync or no helper (then the caller syncs inline).
    pub(super) fn start_sync(&mut self) -> bool {
        if self.syncer.is_none() {
            self.syncer = Syncer::spawn(self.fs.clone());
        }
        let l = self.loaded.as_ref().expect("checked by ready()");
        match self.syncer.as_ref().and_then(|s| s.tx.as_ref()) {
            Some(tx) if l.w.dirty => tx.send((l.w.file.clone(), l.w.path.clone())).is_ok(),
            _ => false,
        }
    }

    /// Waits for the fdatasync started by [`Self::start_sync`].
    pub(super) fn finish_sync(&mut self) -> Result<(), StorageError> {
        let result = match &self.syncer {
            Some(s) => s.rx.recv().unwrap_or_else(|_| {
                Err(StorageError::Backend {
                    backend: "wal",
                    message: "the fdatasync helper thread died".into(),
                })
            }),
            None => Err(StorageError::Misuse("finish_sync without start_sync")),
        };
        result?;
        // Nothing is written between start_sync and here, so the sync covered `pos`.
        let w = &mut self.loaded().w;
        w.dirty = false;
        w.synced = w.pos;
        Ok(())
    }

    /// Encodes records with `encode` into `self.buf` one at a time and writes them as one frame
    /// per segment touched (`frame.rs`), sealing and rotating segments as they fill. `encode` gets
    /// a record index and the CRC seed of the current segment's framed records and returns
    /// whether it encoded a record.
    pub(super) fn write_records(
        &mut self,
        mut encode: impl FnMut(usize, &mut Vec<u8>, u64) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        self.buf.clear();
        self.buf.resize(FRAME_LEN, 0);
        let mut i = 0;
        loop {
            let before = self.buf.len();
            let id = self.loaded().w.id;
            if !encode(i, &mut self.buf, frame::inner_seed(id))? {
                break;
            }
            i += 1;
            let len = self.buf.len();
            if !self.loaded().w.fits(len) {
                if before > FRAME_LEN {
                    self.seal_frame(before);
                    self.write_buf(0..before)?;
                }
                let need = (len - before + FRAME_LEN + SEAL_RESERVE) as u64;
                self.rotate(need)?;
                self.buf.drain(FRAME_LEN..before);
                let id = self.loaded().w.id;
                record::stamp(&mut self.buf[FRAME_LEN..], frame::inner_seed(id));
            }
        }
        if self.buf.len() == FRAME_LEN {
            return Ok(());
        }
        self.seal_frame(self.buf.len());
        self.write_buf(0..self.buf.len())
    }

    /// Fills the frame header at the start of `self.buf[..end]` for the current position.
    fn seal_frame(&mut self, end: usize) {
        let w = &self.loaded.as_ref().expect("checked by ready()").w;
        let (id, pos, synced) = (w.id, w.pos, w.synced);
        frame::seal_frame(&mut self.buf[..end], id, pos, synced);
    }
}
