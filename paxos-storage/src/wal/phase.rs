//! Where a slow append spent its time: each phase of [`Storage::append`](crate::Storage) is
//! timed, and an append of at least [`SLOW_APPEND`] is logged with the breakdown (a warning).
//! The node logs slow storage writes as a whole; this says which part of the WAL it was.

use std::time::{Duration, Instant};

/// An append at least this long is logged with its phases.
pub(crate) const SLOW_APPEND: Duration = Duration::from_millis(200);

/// The phases of an append, in order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Phase {
    /// Taking what the snapshot helper thread finished.
    Collect,
    /// Writing images that are not deferred (installed snapshots) and stripping deferred ones.
    Images,
    /// Encoding and writing the records, rotating segments.
    Write,
    /// Folding the records into the in-memory state.
    Fold,
    /// fdatasync.
    Sync,
    /// Recycling segments and deleting images after a durable checkpoint.
    Collected,
    /// Starting (or writing inline) a checkpoint.
    Checkpoint,
}

const PHASES: usize = 7;

/// Times the phases of one append.
pub(crate) struct PhaseClock {
    started: Instant,
    last: Instant,
    laps: [Duration; PHASES],
}

impl PhaseClock {
    pub(crate) fn start() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
            laps: [Duration::ZERO; PHASES],
        }
    }

    /// Ends `phase` now.
    pub(crate) fn lap(&mut self, phase: Phase) {
        let now = Instant::now();
        self.laps[phase as usize] += now - self.last;
        self.last = now;
    }

    /// Logs the breakdown when the append was slow.
    /// `rotations`: the segment rotations inside the write phase, each as (seal and fdatasync,
    /// next segment put in place).
    pub(crate) fn report(&self, batches: usize, rotations: &[(Duration, Duration)]) {
        let total = self.started.elapsed();
        if total < SLOW_APPEND {
            return;
        }
        let ms = |p: Phase| self.laps[p as usize].as_millis() as u64;
        tracing::warn!(
            total_ms = total.as_millis() as u64,
            batches,
            collect_ms = ms(Phase::Collect),
            images_ms = ms(Phase::Images),
            write_ms = ms(Phase::Write),
            fold_ms = ms(Phase::Fold),
            sync_ms = ms(Phase::Sync),
            collected_ms = ms(Phase::Collected),
            checkpoint_ms = ms(Phase::Checkpoint),
            rotations = ?rotations,
            "slow WAL append"
        );
    }
}
