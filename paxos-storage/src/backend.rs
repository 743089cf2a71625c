//! Choosing a backend at run time (from a configuration file).

use crate::{MemoryStorage, Storage, StorageError};
use std::path::PathBuf;

/// A storage backend and where it keeps its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// [`MemoryStorage`]: nothing survives the process.
    Memory,
    /// The file write-ahead log in `dir`.
    Wal {
        /// The directory (created when missing).
        dir: PathBuf,
    },
    /// RocksDB in `dir` (builds with the `rocksdb` feature only).
    RocksDb {
        /// The directory (created when missing).
        dir: PathBuf,
    },
}

/// Opens `backend`. The returned store still needs [`Storage::load`].
pub fn open(backend: &Backend) -> Result<Box<dyn Storage>, StorageError> {
    match backend {
        Backend::Memory => Ok(Box::new(MemoryStorage::new())),
        // Filled in by the WAL and RocksDB modules as they land.
        Backend::Wal { .. } => Err(StorageError::Misuse("the wal backend is not built yet")),
        Backend::RocksDb { .. } => Err(StorageError::Misuse(
            "this build has no RocksDB backend (build with --features rocksdb)",
        )),
    }
}
