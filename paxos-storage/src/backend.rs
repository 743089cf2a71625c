//! Choosing a backend at run time (from a configuration file): [`Backend`], [`StorageConfig`],
//! [`open`] and [`open_config`].

use crate::wal::{WalOptions, WalStorage};
use crate::{MemoryStorage, Storage, StorageError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A storage backend and where it keeps its files.
///
/// In TOML (`backend` is the tag):
///
/// ```toml
/// backend = "wal"            # or "memory", "rocksdb"
/// dir = "/var/lib/paxos/node0"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum Backend {
    /// [`MemoryStorage`]: nothing survives the process.
    Memory,
    /// The file write-ahead log in `dir`.
    Wal {
        /// The directory (created when missing).
        dir: PathBuf,
    },
    /// RocksDB in `dir` (builds with the `rocksdb` feature only; without it, [`open`] fails).
    #[serde(rename = "rocksdb")]
    RocksDb {
        /// The directory (created when missing).
        dir: PathBuf,
    },
}

/// A [`Backend`] with its tuning, as a node's config file holds it.
///
/// ```toml
/// [storage]
/// backend = "wal"
/// dir = "/var/lib/paxos/node0"
/// [storage.wal]              # optional; the defaults are below
/// segment_bytes = 67108864
/// preallocation = "zeros"    # or "fallocate", "none"
/// checkpoint_bytes = 268435456
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageConfig {
    /// Which backend, and where.
    #[serde(flatten)]
    pub backend: Backend,
    /// WAL tuning (ignored by the other backends).
    #[serde(default)]
    pub wal: WalOptions,
}

impl From<Backend> for StorageConfig {
    fn from(backend: Backend) -> Self {
        Self {
            backend,
            wal: WalOptions::default(),
        }
    }
}

/// Opens `backend` with default tuning. The returned store still needs [`Storage::load`].
pub fn open(backend: &Backend) -> Result<Box<dyn Storage>, StorageError> {
    open_config(&StorageConfig::from(backend.clone()))
}

/// Opens the backend `config` names with its tuning. The returned store still needs
/// [`Storage::load`].
pub fn open_config(config: &StorageConfig) -> Result<Box<dyn Storage>, StorageError> {
    match &config.backend {
        Backend::Memory => Ok(Box::new(MemoryStorage::new())),
        Backend::Wal { dir } => Ok(Box::new(WalStorage::open(dir, config.wal.clone())?)),
        #[cfg(feature = "rocksdb")]
        Backend::RocksDb { dir } => Ok(Box::new(crate::rocks::RocksStorage::open(dir)?)),
        #[cfg(not(feature = "rocksdb"))]
        Backend::RocksDb { .. } => Err(StorageError::Misuse(
            "this build has no RocksDB backend (build with --features rocksdb)",
        )),
    }
}
