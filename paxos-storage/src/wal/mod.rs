//! The file write-ahead log backend.
//!
//! A directory holds:
//!
//! * `LOCK`: held with `flock(LOCK_EX | LOCK_NB)` for as long as a [`WalStorage`] is open, so a
//!   second process (or a second open in the same process) gets [`StorageError::Locked`].
//! * `wal-<id>.seg`: segments, preallocated to [`WalOptions::segment_bytes`] and filled with
//!   framed records (see `docs/storage.md` for the byte layout). A full segment ends with a seal
//!   record naming the next segment, and is fdatasynced before the next one is put in place.
//! * `checkpoint`: the folded [`DurableState`] (its snapshot by reference) and the log position it covers, written to
//!   `checkpoint.tmp`, fsynced, renamed into place, and the directory fsynced. A checkpoint is
//!   written whenever a snapshot advances (via [`Storage::save_snapshot`] or a batch carrying
//!   one) and after [`WalOptions::checkpoint_bytes`] of log, so recovery reads at most one
//!   checkpoint plus that much log. Segments wholly below the checkpoint's position are then
//!   recycled or deleted.
//! * `snapshot-<seq>-<digest>.img`: the latest snapshot's image, written (pieces, fsync, rename,
//!   directory fsync) before any record or checkpoint names it; records and the checkpoint hold
//!   only its slot, digest and length.
//! * `free-<n>.seg`: recycled segment files, reused (renamed to the next `wal-<id>.seg`) before
//!   any new file is preallocated. Every record's CRC is seeded with its segment id, so the old
//!   records left in a recycled file never validate as part of its new life.
//!
//! # Group commit
//!
//! One [`Storage::append`] call encodes all its batches (one record each) into one buffer, writes
//! it with one `pwrite`, and, when `sync` is true, calls `fdatasync` once. The node gathers every
//! batch the core produced while the previous sync ran into the next call.
//!
//! # Recovery rules
//!
//! Records are replayed in order with [`DurableState::apply`]. In every segment but the last,
//! every record up to the seal must be valid; anything else is [`StorageError::Corrupt`]. In the
//! last segment, replay stops at the first invalid record (bad CRC, impossible length, bad
//! magic, zeroed header):
//!
//! * if a valid record follows anywhere after it in the segment, the damage is inside the written
//!   (and possibly synced) region: recovery refuses with [`StorageError::Corrupt`] naming the
//!   file and the offset;
//! * otherwise the log ends there: what follows is preallocated zeros, a torn write (a write
//!   interrupted by a crash), or records of the file's previous life; none of it validates for
//!   this segment, the writer continues at that offset, and later appends overwrite it.
//!
//! A damaged *last* record cannot be told apart from a torn write, so it is dropped: it was the
//! tail of the last write, which the caller had not been told was durable unless its fdatasync
//! returned. A power loss that persists the pages of an unsynced write out of order can also leave
//! a hole followed by valid frames of the same unsynced window: each frame records how much of
//! the segment was synced before it was written (`frame`), so such a hole is a torn tail too, and
//! only a hole below a later frame's synced mark is refused ([`PowerCut`] tests this).
//!
//! # Modules
//!
//! * `options`: [`WalOptions`] and [`Preallocation`];
//! * `record`: the record framing (CRC32C seeded with the segment id, length, kind, magic);
//! * `fs`: file operations with their error context and the [`FaultInjector`] hook (`fault`);
//! * `append`: group commit, the write path of [`Storage::append`] and the fdatasync helper;
//! * `segment`: segment files: the writer's segment, rotation (seal), preallocation ahead, the
//!   free pool;
//! * `checkpoint`: compaction: writing the checkpoint, recycling the segments it covers, and
//!   reading it back;
//! * `recovery`: replay from the checkpoint and the torn-tail rules above;
//! * `storage`: the [`Storage`] implementation, which ties them together.

mod append;
mod checkpoint;
mod fault;
mod frame;
mod fs;
mod options;
mod phase;
mod powercut;
mod reaper;
pub(crate) mod record;
mod recovery;
mod segment;
mod snapfile;
mod snapwriter;
mod storage;

pub use fault::{FaultInjector, FileOp};
pub use options::{Preallocation, WalOptions};
pub use powercut::{CutReport, PowerCut, PAGE};

use crate::{Storage, StorageError};
use append::Syncer;
use fs::{io_err, Fs, PreparedSegment, LOCK_FILE};
use nix::fcntl::{Flock, FlockArg};
use paxos_core::durable::DurableState;
use segment::Writer;
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The state of a loaded WAL: the folded durable state and where the log continues.
#[derive(Debug)]
struct Loaded {
    state: DurableState,
    w: Writer,
    /// Log bytes written since the last checkpoint.
    since_checkpoint: u64,
}

/// The file write-ahead log: segmented, preallocated, CRC32C-framed, group-committed.
///
/// Open with [`WalStorage::open`], then call [`Storage::load`] once. Every record written is
/// also folded into an in-memory copy of the state, which is what checkpoints write.
///
/// After any I/O error the store is poisoned: every later call fails with
/// [`StorageError::Poisoned`] (an fsync that failed once is never retried as if the data were
/// safe). Reopen the directory to recover.
#[derive(Debug)]
pub struct WalStorage {
    fs: Fs,
    opts: WalOptions,
    _lock: Flock<File>,
    loaded: Option<Loaded>,
    poisoned: Option<String>,
    buf: Vec<u8>,
    /// The next segment, being preallocated on a helper thread.
    next: Option<JoinHandle<Result<PreparedSegment, StorageError>>>,
    /// Recycled segment files, reused before any new one is preallocated.
    free: VecDeque<PathBuf>,
    /// Number of the last free file name handed out.
    free_seq: u64,
    /// The fdatasync helper thread, started by the first large synced append.
    syncer: Option<Syncer>,
    /// The helper thread writing own snapshots' images and checkpoints off the append path.
    snap_writer: Option<snapwriter::SnapWriter>,
    /// `BatchRef` records written so far (numbering them).
    names_logged: u64,
    /// The images those records named, by number, from the oldest a checkpoint in flight or
    /// the durable one may replay: kept from deletion.
    named_after: Vec<(u64, snapfile::SnapRef)>,
    /// Segment rotations of the current append: (seal and fdatasync, next segment in place).
    rotations: Vec<(std::time::Duration, std::time::Duration)>,
    /// Torn tails (damage confined to unsynced writes) that recovery truncated.
    torn_tails: u64,
}

impl WalStorage {
    /// Opens (creating if needed) the WAL directory `dir` and locks it. Nothing is read until
    /// [`Storage::load`].
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Self, StorageError> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_err(parent, e))?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(StorageError::Locked(dir)),
            Err((_, errno)) => return Err(io_err(&lock_path, errno.into())),
        };
        Ok(Self {
            fs: Fs {
                dir,
                injector: None,
                powercut: None,
                reaper: reaper::Reaper::spawn(),
            },
            opts,
            _lock: lock,
            loaded: None,
            poisoned: None,
            buf: Vec::new(),
            next: None,
            free: VecDeque::new(),
            free_seq: 0,
            syncer: None,
            snap_writer: None,
            names_logged: 0,
            named_after: Vec::new(),
            rotations: Vec::new(),
            torn_tails: 0,
        })
    }

    /// Installs a hook that may fail any later file operation (for tests; see [`FaultInjector`]).
    pub fn set_fault_injector(&mut self, injector: Arc<dyn FaultInjector>) {
        self.fs.injector = Some(injector);
    }

    /// Installs the power-cut model (a test facility; see [`PowerCut`]) in front of every later
    /// file operation. Install it before [`Storage::load`] so that recovery's writes count too.
    pub fn set_power_cut(&mut self, model: Arc<PowerCut>) {
        self.fs.powercut = Some(model);
    }

    /// The directory this WAL lives in.
    pub fn dir(&self) -> &Path {
        &self.fs.dir
    }

    /// Where the next record goes: `(segment id, byte offset)`; `None` before [`Storage::load`].
    /// Everything before it has been written (not necessarily synced).
    pub fn position(&self) -> Option<(u64, u64)> {
        self.loaded.as_ref().map(|l| (l.w.id, l.w.pos))
    }

    /// How many torn tails [`Storage::load`] found and erased (zeroed and synced): 0 or 1. A
    /// torn tail is damage confined to the writes after the last fdatasync, left by a crash, or
    /// the stale bytes of a recycled segment's previous life after the end of the log.
    pub fn torn_tails_truncated(&self) -> u64 {
        self.torn_tails
    }

    /// The file of segment `id` (it may not exist).
    pub fn segment_path(&self, id: u64) -> PathBuf {
        self.fs.path(&fs::segment_name(id))
    }

    /// Syncs everything appended and closes the WAL.
    pub fn close(mut self) -> Result<(), StorageError> {
        if self.loaded.is_some() && self.poisoned.is_none() {
            self.sync()?;
        }
        Ok(())
    }

    /// The loaded state, or why the store cannot be used.
    fn ready(&mut self) -> Result<&mut Loaded, StorageError> {
        if let Some(why) = &self.poisoned {
            return Err(StorageError::Poisoned(why.clone()));
        }
        self.loaded
            .as_mut()
            .ok_or(StorageError::Misuse("call load() before using the storage"))
    }

    /// Runs `f`, poisoning the store if it fails.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.ready()?;
        let r = f(self);
        if let Err(e) = &r {
            tracing::error!(dir = %self.fs.dir.display(), error = %e, "WAL poisoned");
            self.poisoned = Some(e.to_string());
        }
        r
    }

    /// The loaded state (after [`Self::ready`] succeeded).
    fn loaded(&mut self) -> &mut Loaded {
        self.loaded.as_mut().expect("checked by ready()")
    }
}

/// A record that cannot be encoded (a bug or an impossible size), as a backend error.
fn encode_err(e: postcard::Error) -> StorageError {
    StorageError::Backend {
        backend: "wal",
        message: format!("cannot encode record: {e}"),
    }
}

impl Drop for WalStorage {
    fn drop(&mut self) {
        // Let the preallocation thread finish so it never writes into a directory that another
        // process may have locked and cleaned by then.
        if let Some(h) = self.next.take() {
            let _ = h.join();
        }
    }
}

/// The nice value of the WAL's background threads (image and checkpoint writer, reaper, segment
/// preallocation). On a loaded machine with few cores, copying a 1 GiB image into the page cache
/// at the driver's priority took the CPU from the threads that answer peers, long enough for a
/// view change; at nice 10 they get about a tenth of a contended core and all of an idle one.
/// The fdatasync helper stays at normal priority: an append waits for it.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread to [`BACKGROUND_NICE`] (best effort: a failure only costs latency).
pub(crate) fn background_thread() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE);
}
