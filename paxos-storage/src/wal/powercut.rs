//! A power-cut model of the WAL's directory, for tests: what a power loss may leave on disk
//! (docs/storage.md, "Power-cut model").
//!
//! A SIGKILL keeps the page cache, so a crash test built on it passes even when an fdatasync is
//! missing. [`PowerCut`], installed with [`WalStorage::set_power_cut`](super::WalStorage), sees
//! every file operation of the WAL (through `Fs`) and remembers what has not reached the disk:
//!
//! * **File data.** Before a write, the pre-image of every 4 KiB page it touches is kept (once per
//!   page between two syncs of the file). A successful `fdatasync`/`fsync` of the file forgets
//!   them. Files are told apart by inode, so renames do not matter.
//! * **Directory entries.** Creations of new names and renames onto free names since the last
//!   directory fsync, in order.
//!
//! [`PowerCut::cut`] first freezes the directory (every later WAL file operation fails with
//! `EIO`, and an operation in flight finishes before the cut), then reverts each unsynced page
//! independently with probability `p` (so the pages of the unsynced window survive in any
//! combination and order), then keeps a random prefix of the unsynced directory operations and
//! undoes the rest, newest first (a journalling file system commits metadata in order): a
//! created name disappears, a renamed file goes back to its old name.
//!
//! Not modelled (each stays as the WAL left it): a torn page (pages are atomic here), file size
//! changes (bytes written past the old end revert to zeros, the size stays), `fallocate`,
//! deletions, renames over an existing name and creations that truncate an existing file: the
//! unsynced directory operations before the newest such one are never undone.
//!
//! [`PowerCut::lie_about_syncs`] plants the bug this model exists to catch: the WAL's file syncs
//! still succeed, but the model treats them as never done.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

/// The unit the model persists or loses atomically.
pub const PAGE: u64 = 4096;

/// A directory operation not yet made durable by a directory fsync.
#[derive(Debug)]
enum DirOp {
    /// A new name.
    Created(PathBuf),
    /// A file renamed onto a name that did not exist.
    Renamed { from: PathBuf, to: PathBuf },
    /// An operation the model cannot undo: nothing before it is undone either.
    Barrier,
}

/// The unsynced pages of one file.
#[derive(Debug)]
struct Dirty {
    /// A handle of the file (kept so a page can be reverted whatever its name is by then).
    file: File,
    /// Page index → the page's bytes before its first write since the last sync (shorter at
    /// the old end of the file).
    pages: BTreeMap<u64, Vec<u8>>,
}

#[derive(Debug, Default)]
struct Unsynced {
    files: HashMap<(u64, u64), Dirty>,
    dir_ops: Vec<DirOp>,
}

/// What [`PowerCut::cut`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced pages at the cut.
    pub pages_unsynced: u64,
    /// Of those, the pages reverted to their last synced content.
    pub pages_reverted: u64,
    /// Unsynced directory operations at the cut (barriers included).
    pub dir_ops_unsynced: u64,
    /// Of those, the operations undone.
    pub dir_ops_reverted: u64,
}

/// A test facility: a power-cut model of the WAL directory (see the module documentation).
///
/// Share one between the WAL ([`WalStorage::set_power_cut`](super::WalStorage::set_power_cut))
/// and the test, which calls [`Self::cut`] at any moment from any thread, then reopens the
/// directory with a new `WalStorage`.
#[derive(Debug, Default)]
pub struct PowerCut {
    /// `true` once cut. Every file operation holds it shared while it runs.
    frozen: RwLock<bool>,
    unsynced: Mutex<Unsynced>,
    lie: AtomicBool,
}

/// Holds a file operation off a cut until it is done.
pub(crate) type Gate<'a> = RwLockReadGuard<'a, bool>;

fn key(file: &File) -> io::Result<(u64, u64)> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// splitmix64: the crate has no random number dependency, and a seed makes a cut replayable.
fn next(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl PowerCut {
    /// A model with nothing unsynced yet (install it before [`Storage::load`](crate::Storage)).
    pub fn new() -> Self {
        Self::default()
    }

    /// While `on`, file syncs still run and succeed for the WAL, but the model keeps their pages
    /// unsynced: the planted "missing fdatasync" a power-cut test must detect.
    pub fn lie_about_syncs(&self, on: bool) {
        self.lie.store(on, Ordering::SeqCst);
    }

    /// Whether [`Self::cut`] has run.
    pub fn is_cut(&self) -> bool {
        *self.frozen.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power: freezes the directory, reverts each unsynced page with probability
    /// `p_revert`, and undoes a random suffix of the unsynced directory operations (each
    /// operation, oldest first, is the first lost one with probability `p_revert`). `seed` makes
    /// the choice replayable. A second cut does nothing.
    pub fn cut(&self, seed: u64, p_revert: f64) -> io::Result<CutReport> {
        let mut frozen = self.frozen.write().unwrap_or_else(|e| e.into_inner());
        let mut report = CutReport::default();
        if *frozen {
            return Ok(report);
        }
        *frozen = true;
        let mut rng = seed;
        let unsynced =
            std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
        for dirty in unsynced.files.values() {
            let len = dirty.file.metadata()?.len();
            for (&page, pre) in &dirty.pages {
                report.pages_unsynced += 1;
                if next(&mut rng) >= p_revert {
                    continue;
                }
                report.pages_reverted += 1;
                let start = page * PAGE;
                let mut img = pre.clone();
                // Past the old end of the file: the new bytes never reached the disk.
                let upto = len.min(start + PAGE).saturating_sub(start) as usize;
                img.resize(upto.max(pre.len()), 0);
                dirty.file.write_all_at(&img, start)?;
            }
        }
        let ops = &unsynced.dir_ops;
        report.dir_ops_unsynced = ops.len() as u64;
        let floor = ops
            .iter()
            .rposition(|op| matches!(op, DirOp::Barrier))
            .map_or(0, |i| i + 1);
        let lost = (floor..ops.len())
            .find(|_| next(&mut rng) < p_revert)
            .unwrap_or(ops.len());
        for op in ops[lost..].iter().rev() {
            let undone = match op {
                DirOp::Created(path) => std::fs::remove_file(path).is_ok(),
                DirOp::Renamed { from, to } => {
                    !from.exists() && to.exists() && std::fs::rename(to, from).is_ok()
                }
                DirOp::Barrier => unreachable!("no barrier after the floor"),
            };
            report.dir_ops_reverted += u64::from(undone);
        }
        if report.dir_ops_reverted > 0 {
            if let Some(dir) = ops.iter().find_map(|op| match op {
                DirOp::Created(p) | DirOp::Renamed { to: p, .. } => p.parent(),
                DirOp::Barrier => None,
            }) {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(report)
    }

    /// Enters a file operation: fails with `EIO` once cut.
    pub(crate) fn enter(&self) -> io::Result<Gate<'_>> {
        let g = self.frozen.read().unwrap_or_else(|e| e.into_inner());
        if *g {
            return Err(io::Error::from_raw_os_error(nix::libc::EIO));
        }
        Ok(g)
    }

    /// Before writing `len` bytes at `offset` of `file`: keeps the pre-image of the pages.
    pub(crate) fn before_write(&self, file: &File, offset: u64, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let k = key(file)?;
        let mut u = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        let dirty = match u.files.entry(k) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Dirty {
                file: file.try_clone()?,
                pages: BTreeMap::new(),
            }),
        };
        let last = (offset + len as u64 - 1) / PAGE;
        for page in offset / PAGE..=last {
            if dirty.pages.contains_key(&page) {
                continue;
            }
            let mut buf = vec![0u8; PAGE as usize];
            let mut n = 0;
            while n < buf.len() {
                match file.read_at(&mut buf[n..], page * PAGE + n as u64)? {
                    0 => break,
                    r => n += r,
                }
            }
            buf.truncate(n);
            dirty.pages.insert(page, buf);
        }
        Ok(())
    }

    /// After a successful fdatasync/fsync of `file`: its pages are on disk (unless lying).
    pub(crate) fn synced(&self, file: &File) -> io::Result<()> {
        if self.lie.load(Ordering::SeqCst) {
            return Ok(());
        }
        let k = key(file)?;
        let mut u = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        u.files.remove(&k);
        Ok(())
    }

    /// After a creation of `path`, which `existed` before (then it was a truncation).
    pub(crate) fn created(&self, path: &Path, existed: bool) {
        self.dir_op(if existed {
            DirOp::Barrier
        } else {
            DirOp::Created(path.to_path_buf())
        });
    }

    /// After a rename of `from` onto `to`, which `existed` before.
    pub(crate) fn renamed(&self, from: &Path, to: &Path, existed: bool) {
        self.dir_op(if existed {
            DirOp::Barrier
        } else {
            DirOp::Renamed {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            }
        });
    }

    /// After a deletion (not undone by a cut).
    pub(crate) fn removed(&self) {
        self.dir_op(DirOp::Barrier);
    }

    /// After a successful directory fsync: every directory operation is durable.
    pub(crate) fn dir_synced(&self) {
        let mut u = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        u.dir_ops.clear();
    }

    fn dir_op(&self, op: DirOp) {
        let mut u = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        u.dir_ops.push(op);
    }
}
