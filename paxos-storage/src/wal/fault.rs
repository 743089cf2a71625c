//! A hook into every file operation of the WAL, for tests that inject I/O errors.

use std::fmt;
use std::io;
use std::path::Path;

/// A file operation the WAL is about to perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileOp {
    /// Creating a file (segment, checkpoint temp file, lock file).
    Create,
    /// Preallocating a new segment.
    Preallocate,
    /// Writing records to a segment or the checkpoint.
    Write,
    /// `fdatasync` / `fsync` of a file.
    Sync,
    /// Renaming a file into place.
    Rename,
    /// Deleting a file.
    Remove,
    /// `fsync` of the directory.
    SyncDir,
}

/// Decides, before each file operation, whether it fails.
///
/// Install one with [`super::WalStorage::set_fault_injector`]. Returning `Err` makes the WAL behave
/// exactly as if the operating system had returned that error (for example
/// `io::Error::from_raw_os_error(libc::ENOSPC)`), so tests can check that a failed write or
/// fsync is never reported durable and that the store poisons itself.
pub trait FaultInjector: Send + Sync + fmt::Debug {
    /// Called before `op` on `path`; an `Err` is returned to the WAL in place of the operation.
    fn before(&self, op: FileOp, path: &Path) -> io::Result<()>;
}
