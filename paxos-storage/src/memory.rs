//! The in-memory backend: the paper's no-disk mode, and the reference for the conformance suite.
//!
//! Clones share one state, so a test can drop a "server" and open a new one on the same
//! [`MemoryStorage`] to model a process restart that keeps its memory (or use a fresh one to model
//! a lost disk).

use crate::{Storage, StorageError};
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::message::Snapshot;
use paxos_core::Seq;
use std::sync::{Arc, Mutex};

/// State kept in memory; `sync` is a no-op.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    state: Arc<Mutex<DurableState>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut DurableState) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of plain data that
        // `DurableState::apply` leaves consistent; keep going.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

impl Storage for MemoryStorage {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn load(&mut self) -> Result<DurableState, StorageError> {
        Ok(self.with(|s| {
            s.incarnation += 1;
            s.clone()
        }))
    }

    fn append(&mut self, batches: &[PersistBatch], _sync: bool) -> Result<(), StorageError> {
        self.with(|s| batches.iter().for_each(|b| s.apply(b)));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.with(|s| {
            if snapshot.seq() > s.snapshot_seq() {
                s.truncate_through(snapshot.seq());
                s.snapshot = Some(snapshot.clone());
            }
        });
        Ok(())
    }

    fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.with(|s| s.snapshot.clone()))
    }

    fn truncate_through(&mut self, seq: Seq) -> Result<(), StorageError> {
        self.with(|s| s.truncate_through(seq));
        Ok(())
    }
}
