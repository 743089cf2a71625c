//! The file write-ahead log backend.
//!
//! A directory holds:
//!
//! * `LOCK`: held with `flock(LOCK_EX | LOCK_NB)` for as long as a [`WalStorage`] is open, so a
//!   second process (or a second open in the same process) gets [`StorageError::Locked`].
//! * `wal-<id>.seg`: segments, preallocated to [`WalOptions::segment_bytes`] and filled with
//!   framed records (see `docs/storage.md` for the byte layout). A full segment ends with a seal
//!   record naming the next segment, and is fdatasynced before the next one is put in place.
//! * `checkpoint`: the whole folded [`DurableState`] and the log position it covers, written to
//!   `checkpoint.tmp`, fsynced, renamed into place, and the directory fsynced. A checkpoint is
//!   written whenever a snapshot advances (via [`Storage::save_snapshot`] or a batch carrying
//!   one) and after [`WalOptions::checkpoint_bytes`] of log, so recovery reads at most one
//!   checkpoint plus that much log. Segments wholly below the checkpoint's position are then
//!   recycled or deleted.
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
//! a hole followed by valid records; that is refused as corruption too (safe, but it needs an
//! operator), since the log cannot tell it from damage to synced data.

mod fault;
mod fs;
pub(crate) mod record;

pub use fault::{FaultInjector, FileOp};

use crate::{Storage, StorageError};
use fs::{io_err, Fs, PreparedSegment, CHECKPOINT_FILE, LOCK_FILE};
use nix::fcntl::{Flock, FlockArg};
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::message::Snapshot;
use paxos_core::Seq;
use record::{RecordKind, HEADER_LEN, SEAL_RESERVE};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// First bytes of the checkpoint file.
const CHECKPOINT_MAGIC: &[u8; 8] = b"PSBWALC1";

/// How new segment files get their space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preallocation {
    /// Write zeros over the whole segment and fsync it before use: the blocks are allocated and
    /// initialised, so an fdatasync after an append flushes data only, with no extent or size
    /// change to journal. The fastest for sync appends (see `docs/storage.md`).
    #[default]
    Zeros,
    /// `fallocate(2)`: blocks are reserved but marked unwritten, so the first write to each
    /// needs a journalled extent conversion at fdatasync.
    Fallocate,
    /// Grow the file as records are appended (every fdatasync also commits the new size).
    None,
}

/// Tuning of the [`WalStorage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalOptions {
    /// Size of each segment file in bytes (a record larger than this gets a segment of its own).
    pub segment_bytes: u64,
    /// How segments are preallocated.
    pub preallocation: Preallocation,
    /// Write a checkpoint after this many bytes of log since the last one (0: only when a
    /// snapshot advances).
    pub checkpoint_bytes: u64,
    /// Segment files no longer needed after a checkpoint are kept (renamed `free-<n>.seg`) up to
    /// this many, and reused instead of preallocating new ones: their blocks are already
    /// written, so a steady-state WAL never writes zeros. Beyond this they are deleted.
    pub max_free_segments: u32,
    /// Free segments to create at load when fewer exist (0 by default: segments are then
    /// preallocated on a helper thread as the log grows). A node that wants the steady-state
    /// speed from its first write, or a benchmark, sets it.
    pub prefill_segments: u32,
    /// Synced appends of at least this many updates fold into the in-memory state while a helper
    /// thread runs their fdatasync (0: never). It pays off when fdatasync is slow and the CPU
    /// busy; on an idle machine with ~0.1 ms fdatasyncs the thread hand-off cost more than it
    /// saved (see `docs/storage.md`), so it is off by default.
    pub overlap_sync_updates: u32,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            preallocation: Preallocation::Zeros,
            checkpoint_bytes: 192 << 20,
            max_free_segments: 4,
            prefill_segments: 0,
            overlap_sync_updates: 0,
        }
    }
}

impl WalOptions {
    /// Checks the options once, at open.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.segment_bytes < 4096 {
            return Err(StorageError::Misuse(
                "WalOptions::segment_bytes must be >= 4096",
            ));
        }
        Ok(())
    }
}

/// The checkpoint file's content.
#[derive(Serialize)]
struct CheckpointRef<'a> {
    /// Replay starts in this segment …
    log_segment: u64,
    /// … at this offset; everything before is folded into `state`.
    log_offset: u64,
    state: &'a DurableState,
}

#[derive(Deserialize)]
struct CheckpointOwned {
    log_segment: u64,
    log_offset: u64,
    state: DurableState,
}

/// Runs fdatasync on a helper thread so that folding a large append into the in-memory state
/// overlaps the flush instead of adding to it.
#[derive(Debug)]
struct Syncer {
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

/// The segment being appended to.
#[derive(Debug)]
struct Writer {
    id: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Next write offset.
    pos: u64,
    /// Usable size of the segment.
    capacity: u64,
    /// Whether bytes were written since the last fdatasync.
    dirty: bool,
}

impl Writer {
    fn fits(&self, bytes: usize) -> bool {
        self.pos + (bytes + SEAL_RESERVE) as u64 <= self.capacity
    }
}

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
        })
    }

    /// Installs a hook that may fail any later file operation (for tests; see [`FaultInjector`]).
    pub fn set_fault_injector(&mut self, injector: Arc<dyn FaultInjector>) {
        self.fs.injector = Some(injector);
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

    fn loaded(&mut self) -> &mut Loaded {
        self.loaded.as_mut().expect("checked by ready()")
    }

    /// Writes `self.buf[range]` at the end of the current segment.
    fn write_buf(&mut self, range: std::ops::Range<usize>) -> Result<(), StorageError> {
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

    fn sync_writer(&mut self) -> Result<(), StorageError> {
        let l = self.loaded.as_mut().expect("checked by ready()");
        if l.w.dirty {
            self.fs.sync_data(&l.w.file, &l.w.path)?;
            l.w.dirty = false;
        }
        Ok(())
    }

    /// Hands the fdatasync of the current segment to the helper thread; `false` if there is
    /// nothing to sync or no helper (then the caller syncs inline).
    fn start_sync(&mut self) -> bool {
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
    fn finish_sync(&mut self) -> Result<(), StorageError> {
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
        self.loaded().w.dirty = false;
        Ok(())
    }

    /// Encodes records with `encode` into `self.buf` one at a time and writes them, sealing and
    /// rotating segments as they fill. `encode` gets a record index and the current segment id
    /// (the CRC's seed) and returns whether it encoded a record.
    fn write_records(
        &mut self,
        mut encode: impl FnMut(usize, &mut Vec<u8>, u64) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        self.buf.clear();
        let mut i = 0;
        loop {
            let before = self.buf.len();
            let id = self.loaded().w.id;
            if !encode(i, &mut self.buf, id)? {
                break;
            }
            i += 1;
            let len = self.buf.len();
            if !self.loaded().w.fits(len) {
                self.write_buf(0..before)?;
                let need = (len - before + SEAL_RESERVE) as u64;
                self.rotate(need)?;
                self.buf.drain(..before);
                let id = self.loaded().w.id;
                record::stamp(&mut self.buf, id);
            }
        }
        self.write_buf(0..self.buf.len())
    }

    /// Seals the current segment (seal record + fdatasync) and continues in the next one, which
    /// must hold at least `need` bytes.
    fn rotate(&mut self, need: u64) -> Result<(), StorageError> {
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
        let w = self.next_segment(id + 1, need)?;
        self.loaded().w = w;
        Ok(())
    }

    /// Puts segment `id` in place, with room for at least `need` bytes: a recycled file if there
    /// is one, else the one the helper thread prepared, else a fresh one.
    fn next_segment(&mut self, id: u64, need: u64) -> Result<Writer, StorageError> {
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
        })
    }

    fn prepare_ahead(&mut self, id: u64) {
        let fs = self.fs.clone();
        let (bytes, how) = (self.opts.segment_bytes, self.opts.preallocation);
        self.next = Some(std::thread::spawn(move || {
            fs.prepare_segment(id, bytes, how)
        }));
    }

    /// Renames a segment file that is no longer part of the log into the free pool, or deletes
    /// it when the pool is full. The caller fsyncs the directory.
    fn recycle(&mut self, path: &Path) -> Result<(), StorageError> {
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

    /// Writes the folded state as the new checkpoint, then recycles or deletes the segments it
    /// covers.
    fn checkpoint(&mut self) -> Result<(), StorageError> {
        let l = self.loaded.as_ref().expect("checked by ready()");
        let (seg, offset) = (l.w.id, l.w.pos);
        let mut buf = CHECKPOINT_MAGIC.to_vec();
        record::encode(
            &mut buf,
            RecordKind::Checkpoint,
            &CheckpointRef {
                log_segment: seg,
                log_offset: offset,
                state: &l.state,
            },
            0,
        )
        .map_err(encode_err)?;
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
        tracing::debug!(segment = seg, offset, "WAL checkpoint written");
        Ok(())
    }

    /// Makes sure `prefill_segments` free segments exist (done at load, before any append).
    fn prefill(&mut self) -> Result<(), StorageError> {
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

    /// Reads the checkpoint, replays the log after it, repairs a torn tail, and positions the
    /// writer at the end of the log.
    fn recover(&mut self) -> Result<(), StorageError> {
        let listing = self.fs.list()?;
        for t in &listing.tmps {
            self.fs.remove(t)?;
        }
        let ids = listing.ids;
        self.free_seq = listing.free.last().map_or(0, |(n, _)| *n);
        self.free = listing.free.into_iter().map(|(_, p)| p).collect();
        let ck_path = self.fs.path(CHECKPOINT_FILE);
        let (mut state, start_seg, start_off) = match std::fs::read(&ck_path) {
            Ok(data) => {
                let ck = read_checkpoint(&ck_path, &data)?;
                (ck.state, Some(ck.log_segment), ck.log_offset)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (DurableState::default(), None, 0)
            }
            Err(e) => return Err(io_err(&ck_path, e)),
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
                match record::parse(&data, off, id) {
                    Ok(rec) => {
                        sealed = replay(&mut state, &path, off, id, rec.kind, rec.payload)?;
                        records += 1;
                        replayed += rec.end as u64 - off as u64;
                        off = rec.end;
                        if sealed {
                            break;
                        }
                    }
                    Err(reason) => {
                        bad = Some(reason);
                        break;
                    }
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
                    if let Some(valid) = record::find_valid_after(&data, off + 1, id) {
                        return Err(StorageError::Corrupt {
                            path,
                            offset: off as u64,
                            reason: format!(
                                "{reason}, but a valid record follows at offset {valid}: damage inside the written log"
                            ),
                        });
                    }
                    // A torn write, or records of the file's previous life as another segment:
                    // none of it validates for this segment, so appends simply overwrite it.
                    tracing::info!(
                        file = %path.display(),
                        offset = off,
                        bytes = dirty_end - off,
                        reason,
                        "WAL: log ends here; the torn or stale bytes after it are ignored"
                    );
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
                }
            }
            // Crashed after sealing, before the next segment was put in place.
            Some((id, _, _, true, _)) => self.next_segment(id + 1, 0)?,
            None => self.next_segment(1, 0)?,
        };
        self.loaded = Some(Loaded {
            state,
            w,
            since_checkpoint: replayed,
        });
        Ok(())
    }
}

fn encode_err(e: postcard::Error) -> StorageError {
    StorageError::Backend {
        backend: "wal",
        message: format!("cannot encode record: {e}"),
    }
}

fn read_checkpoint(path: &Path, data: &[u8]) -> Result<CheckpointOwned, StorageError> {
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

/// Applies one log record to `state`; returns whether it was the segment's seal.
fn replay(
    state: &mut DurableState,
    path: &Path,
    off: usize,
    segment: u64,
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
        RecordKind::Checkpoint => return Err(corrupt("checkpoint record inside a segment".into())),
    }
    Ok(false)
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
            s.write_records(|i, buf, seg| match batches.get(i) {
                Some(b) => {
                    record::encode(buf, RecordKind::Batch, b, seg).map_err(encode_err)?;
                    Ok(true)
                }
                None => Ok(false),
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
            if snapshot.seq <= l.state.snapshot_seq() {
                return Ok(());
            }
            l.state.truncate_through(snapshot.seq);
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
