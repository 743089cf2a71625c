//! Tuning of the file WAL, validated once at open (docs/storage.md, "Writing": segments and
//! preallocation, checkpoints, free segments, fdatasync overlap).

use crate::StorageError;
use serde::{Deserialize, Serialize};

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

/// Tuning of the [`WalStorage`](super::WalStorage).
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
    /// Write the images of the core's own snapshots
    /// ([`PersistBatch::snapshot_deferrable`](paxos_core::durable::PersistBatch)) on a helper
    /// thread instead of inside the append, so a large snapshot does not stall the log (on by
    /// default; see `docs/storage.md`, "Snapshot files").
    pub defer_snapshots: bool,
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
            defer_snapshots: true,
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
