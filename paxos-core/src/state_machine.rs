//! The application the replicas run, as a trait.

use crate::message::ClientUpdate;
use crate::snapshot::SnapshotSource;
use crate::types::Seq;
use bytes::Bytes;
use std::sync::Arc;
use thiserror::Error;

/// A snapshot the state machine could not restore.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("snapshot rejected: {0}")]
pub struct SnapshotError(pub String);

/// A deterministic state machine the core executes globally ordered updates through, in order.
///
/// `apply` must be a pure function of the state and the update: every replica applies the same
/// updates in the same order and must reach the same state and replies. The core guarantees that
/// each client update is applied at most once (exactly once when it completes).
pub trait StateMachine {
    /// Applies the update ordered at `seq` and returns the reply for its client.
    fn apply(&mut self, seq: Seq, update: &ClientUpdate) -> Bytes;

    /// Serialises the whole state (used for log compaction and state transfer).
    fn snapshot(&self) -> Bytes;

    /// A frozen copy of the state, serialised later and possibly on another thread (snapshots off
    /// the driver loop, `Config::snapshot_off_loop`). It must not see updates applied after this
    /// call. The default serialises at once; a state machine with a persistent or copy-on-write
    /// representation returns a cheap handle instead.
    fn freeze(&self) -> Arc<dyn SnapshotSource> {
        Arc::new(self.snapshot())
    }

    /// A 64-bit digest of the state, equal on replicas that applied the same updates (status
    /// pages compare it). The default hashes [`StateMachine::snapshot`], which serialises the
    /// whole state: a state machine that can should keep an incremental digest instead.
    fn state_digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in self.snapshot().iter() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// Replaces the state with a snapshot taken by [`StateMachine::snapshot`] (or written by a
    /// [`StateMachine::freeze`] source).
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError>;

    /// [`StateMachine::restore`] from a shared buffer, which the state may keep slices of
    /// ([`Bytes::slice_ref`]) instead of copying: the core restores through this, with a slice
    /// of the snapshot image it keeps anyway, so a large state restored this way costs its size
    /// once, not twice. The default copies (calls `restore`).
    fn restore_shared(&mut self, snapshot: &Bytes) -> Result<(), SnapshotError> {
        self.restore(snapshot)
    }
}

/// A state machine that keeps nothing and answers every update with an empty reply.
///
/// Useful for benchmarks of the ordering protocol alone.
#[derive(Debug, Default, Clone, Hash)]
pub struct NullStateMachine;

impl StateMachine for NullStateMachine {
    fn apply(&mut self, _seq: Seq, _update: &ClientUpdate) -> Bytes {
        Bytes::new()
    }

    fn snapshot(&self) -> Bytes {
        Bytes::new()
    }

    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), SnapshotError> {
        Ok(())
    }
}
