//! File operations of the WAL, each with its error context and the fault-injection hook.

use super::fault::{FaultInjector, FileOp};
use super::powercut::{Gate, PowerCut};
use super::reaper::Reaper;
use super::Preallocation;
use crate::StorageError;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the lock file.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// Name of the checkpoint file.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
/// `free-<n, 16 digits>.seg`: a recycled segment file waiting to be reused.
pub(crate) fn free_name(n: u64) -> String {
    format!("free-{n:016}.seg")
}

/// Suffix of files that are not yet in place (deleted at recovery).
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// `wal-<id, 16 digits>.seg`.
pub(crate) fn segment_name(id: u64) -> String {
    format!("wal-{id:016}.seg")
}

/// The id of a segment file name, or `None` for other files.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".seg")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn io_err(path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The WAL directory, with an optional fault injector in front of every operation.
#[derive(Clone, Debug)]
pub(crate) struct Fs {
    pub(crate) dir: PathBuf,
    pub(crate) injector: Option<Arc<dyn FaultInjector>>,
    /// The power-cut model, when a test installed one.
    pub(crate) powercut: Option<Arc<PowerCut>>,
    /// Frees deleted files off the caller's thread (`None`: inline).
    pub(crate) reaper: Option<Reaper>,
}

impl Fs {
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs the fault injector, then enters the power-cut model: the returned gate must be held
    /// until the operation is done (and never while entering another one), so that a cut
    /// happens between operations.
    fn check(&self, op: FileOp, path: &Path) -> Result<Option<Gate<'_>>, StorageError> {
        if let Some(inj) = &self.injector {
            inj.before(op, path).map_err(|e| io_err(path, e))?;
        }
        self.gate(path)
    }

    fn gate(&self, path: &Path) -> Result<Option<Gate<'_>>, StorageError> {
        match &self.powercut {
            Some(pc) => pc.enter().map(Some).map_err(|e| io_err(path, e)),
            None => Ok(None),
        }
    }

    /// Tells the power-cut model about a write before it happens.
    fn before_write(
        &self,
        file: &File,
        path: &Path,
        offset: u64,
        len: usize,
    ) -> Result<(), StorageError> {
        match &self.powercut {
            Some(pc) => pc
                .before_write(file, offset, len)
                .map_err(|e| io_err(path, e)),
            None => Ok(()),
        }
    }

    /// Tells the power-cut model that a sync of `file` returned.
    fn synced(&self, file: &File, path: &Path) -> Result<(), StorageError> {
        match &self.powercut {
            Some(pc) => pc.synced(file).map_err(|e| io_err(path, e)),
            None => Ok(()),
        }
    }

    pub(crate) fn write_at(
        &self,
        file: &File,
        path: &Path,
        buf: &[u8],
        offset: u64,
    ) -> Result<(), StorageError> {
        let _gate = self.check(FileOp::Write, path)?;
        self.before_write(file, path, offset, buf.len())?;
        file.write_all_at(buf, offset).map_err(|e| io_err(path, e))
    }

    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> Result<(), StorageError> {
        let _gate = self.check(FileOp::Sync, path)?;
        file.sync_data().map_err(|e| io_err(path, e))?;
        self.synced(file, path)
    }

    pub(crate) fn sync_all(&self, file: &File, path: &Path) -> Result<(), StorageError> {
        let _gate = self.check(FileOp::Sync, path)?;
        file.sync_all().map_err(|e| io_err(path, e))?;
        self.synced(file, path)
    }

    /// Makes creations, renames and deletions in the directory durable.
    pub(crate) fn sync_dir(&self) -> Result<(), StorageError> {
        let _gate = self.check(FileOp::SyncDir, &self.dir)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, e))?;
        if let Some(pc) = &self.powercut {
            pc.dir_synced();
        }
        Ok(())
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let _gate = self.check(FileOp::Rename, to)?;
        let existed = self.powercut.is_some() && to.exists();
        fs::rename(from, to).map_err(|e| io_err(to, e))?;
        if let Some(pc) = &self.powercut {
            pc.renamed(from, to, existed);
        }
        Ok(())
    }

    /// Deletes `path` (a missing file is no error). Its blocks are freed on the reaper thread.
    pub(crate) fn remove(&self, path: &Path) -> Result<(), StorageError> {
        let _gate = self.check(FileOp::Remove, path)?;
        let held = self.hold(path);
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path, e)),
            _ => {
                if let Some(pc) = &self.powercut {
                    pc.removed();
                }
                self.release(held);
                Ok(())
            }
        }
    }

    /// Opens `path`, if it exists, before its name goes (by `remove`, or by a rename over it),
    /// so that the unlink only drops the name; hand the result to [`Self::release`] after.
    pub(crate) fn hold(&self, path: &Path) -> Option<File> {
        self.reaper.as_ref()?;
        OpenOptions::new().write(true).open(path).ok()
    }

    /// Frees a file [`Self::hold`] kept open, now that its name is gone, on the reaper thread
    /// (inline if there is none).
    pub(crate) fn release(&self, held: Option<File>) {
        if let (Some(r), Some(f)) = (&self.reaper, held) {
            // A thread that is gone gives the file back; dropping it frees it here.
            let _ = r.free(f);
        }
    }

    /// Creates (or truncates) `path` for writing.
    pub(crate) fn create(&self, path: &Path) -> Result<File, StorageError> {
        let _gate = self.check(FileOp::Create, path)?;
        let existed = self.powercut.is_some() && path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        if let Some(pc) = &self.powercut {
            pc.created(path, existed);
        }
        Ok(file)
    }

    /// Opens an existing file for reading and writing.
    pub(crate) fn open_rw(&self, path: &Path) -> Result<File, StorageError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, e))
    }

    /// Creates segment `id` under a temporary name, preallocated to `bytes` and fsynced, so that
    /// renaming it into place later is the only step left.
    pub(crate) fn prepare_segment(
        &self,
        id: u64,
        bytes: u64,
        how: Preallocation,
    ) -> Result<PreparedSegment, StorageError> {
        let tmp = self.path(&format!("{}{TMP_SUFFIX}", segment_name(id)));
        let file = self.create(&tmp)?;
        drop(self.check(FileOp::Preallocate, &tmp)?);
        match how {
            Preallocation::Zeros => {
                let chunk = vec![0u8; 1 << 20];
                let mut off = 0u64;
                while off < bytes {
                    let n = chunk.len().min((bytes - off) as usize);
                    let _gate = self.gate(&tmp)?;
                    self.before_write(&file, &tmp, off, n)?;
                    file.write_all_at(&chunk[..n], off)
                        .map_err(|e| io_err(&tmp, e))?;
                    off += n as u64;
                }
            }
            Preallocation::Fallocate => {
                let len = i64::try_from(bytes).unwrap_or(i64::MAX);
                if let Err(errno) =
                    nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, len)
                {
                    if errno != nix::errno::Errno::EOPNOTSUPP {
                        return Err(io_err(&tmp, io::Error::from(errno)));
                    }
                    // The filesystem cannot reserve blocks: a sparse file reads as zeros too.
                    file.set_len(bytes).map_err(|e| io_err(&tmp, e))?;
                }
            }
            Preallocation::None => {}
        }
        self.sync_all(&file, &tmp)?;
        Ok(PreparedSegment {
            id,
            capacity: bytes,
            tmp,
            file,
        })
    }

    /// Renames a prepared segment into place and makes the rename durable.
    pub(crate) fn install_segment(
        &self,
        seg: PreparedSegment,
    ) -> Result<(u64, PathBuf, File, u64), StorageError> {
        let path = self.path(&segment_name(seg.id));
        self.rename(&seg.tmp, &path)?;
        self.sync_dir()?;
        Ok((seg.id, path, seg.file, seg.capacity))
    }

    /// Every segment id in the directory (sorted), every leftover temporary file, and every free
    /// (recycled) segment file with its number (sorted).
    pub(crate) fn list(&self) -> Result<Listing, StorageError> {
        let mut ids = Vec::new();
        let mut tmps = Vec::new();
        let mut free = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                tmps.push(entry.path());
            } else if let Some(id) = parse_segment_name(name) {
                ids.push(id);
            } else if let Some(n) = name
                .strip_prefix("free-")
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                free.push((n, entry.path()));
            }
        }
        ids.sort_unstable();
        free.sort_unstable();
        Ok(Listing { ids, tmps, free })
    }
}

/// What [`Fs::list`] found.
#[derive(Debug)]
pub(crate) struct Listing {
    pub(crate) ids: Vec<u64>,
    pub(crate) tmps: Vec<PathBuf>,
    pub(crate) free: Vec<(u64, PathBuf)>,
}

/// A segment created under its temporary name, ready to be renamed into place.
#[derive(Debug)]
pub(crate) struct PreparedSegment {
    pub(crate) id: u64,
    pub(crate) capacity: u64,
    pub(crate) tmp: PathBuf,
    pub(crate) file: File,
}
