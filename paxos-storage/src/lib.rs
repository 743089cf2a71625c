//! # paxos-storage
//!
//! Durable state for [`paxos_core`]: one [`Storage`] trait and its backends.
//!
//! The core never touches a disk. It hands out [`PersistBatch`]es and holds back every message that
//! depends on one until the driver reports the batch durable. A backend's job is to make those
//! batches survive a crash exactly as [`DurableState::apply`] defines them, and to give the state
//! back at restart with a larger [`DurableState::incarnation`].
//!
//! The API is synchronous on purpose: a node runs its storage on a dedicated thread and batches
//! many [`PersistBatch`]es into one call to [`Storage::append`] (group commit: one sync for all).

use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::message::Snapshot;
use paxos_core::Seq;
use std::path::PathBuf;
use thiserror::Error;

pub mod backend;
pub mod bench;
pub mod memory;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod wal;

pub use backend::{open, open_config, Backend, StorageConfig};
pub use memory::MemoryStorage;
pub use wal::{WalOptions, WalStorage};

/// Why a storage operation failed.
///
/// Any error from [`Storage::append`] means the batches may not be durable: the caller must not
/// report them persisted and should stop the server rather than risk acknowledging lost data.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The operating system refused an operation (ENOSPC, EIO on fsync, permission …).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The stored data is damaged inside the region that was reported durable. Starting anyway
    /// could make an acceptor forget a promise, so the backend refuses.
    #[error("corrupt storage in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the storage directory.
    #[error("storage directory {0} is locked by another process")]
    Locked(PathBuf),
    /// A previous write failed; the backend stays unusable until reopened.
    #[error("storage is poisoned by an earlier failure: {0}")]
    Poisoned(String),
    /// The backend was used before [`Storage::load`] or after a fatal error.
    #[error("storage misuse: {0}")]
    Misuse(&'static str),
    /// An error from a backend that does not fit the cases above (for example RocksDB's own).
    #[error("{backend}: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// Its message.
        message: String,
    },
}

/// Durable state behind one interface.
///
/// Call order: [`Storage::load`] exactly once at start, then any number of
/// [`Storage::append`] / [`Storage::truncate_through`] / [`Storage::save_snapshot`] calls.
pub trait Storage: Send + 'static {
    /// A short name for logs and metrics (`"memory"`, `"wal"`, `"rocksdb"`).
    fn name(&self) -> &'static str;

    /// Recovers the state written so far and durably increments the incarnation, so the returned
    /// [`DurableState::incarnation`] is larger than at any earlier start.
    fn load(&mut self) -> Result<DurableState, StorageError>;

    /// Writes `batches` in order, each atomically: after a crash a prefix of them is present, never
    /// a part of one. When `sync` is true every batch is on stable storage when this returns `Ok`.
    fn append(&mut self, batches: &[PersistBatch], sync: bool) -> Result<(), StorageError>;

    /// Makes everything appended so far durable (for callers that appended with `sync = false`).
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Stores `snapshot` durably and drops history at or below its slot.
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError>;

    /// The latest durable snapshot, if any.
    fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError>;

    /// Drops accepted and ordered entries at or below `seq` (which a durable snapshot covers).
    fn truncate_through(&mut self, seq: Seq) -> Result<(), StorageError>;

    /// Own snapshots ([`PersistBatch::snapshot_deferrable`]) handed to a background write and not
    /// yet durable and named by the log (0 for a backend that writes every snapshot inline).
    fn snapshot_writes_in_flight(&self) -> usize {
        0
    }
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn load(&mut self) -> Result<DurableState, StorageError> {
        (**self).load()
    }
    fn append(&mut self, batches: &[PersistBatch], sync: bool) -> Result<(), StorageError> {
        (**self).append(batches, sync)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        (**self).sync()
    }
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        (**self).save_snapshot(snapshot)
    }
    fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        (**self).load_snapshot()
    }
    fn truncate_through(&mut self, seq: Seq) -> Result<(), StorageError> {
        (**self).truncate_through(seq)
    }
    fn snapshot_writes_in_flight(&self) -> usize {
        (**self).snapshot_writes_in_flight()
    }
}
