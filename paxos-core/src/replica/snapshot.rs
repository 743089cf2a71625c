//! Snapshots (DERIVED, spec §11): a server compacts its history below a snapshot of the state
//! machine and the client table; a peer asking for compacted slots gets the snapshot instead
//! (`transfer.rs`), and installs it as if it had executed every slot it covers.
//!
//! Snapshot points are staggered: server `i` of `n` snapshots when its aru crosses a slot `p` with
//! `p + i·interval/n ≡ 0 (mod interval)`, so the replicas do not all serialise at the same slot.
//! With `Config::snapshot_off_loop` the replica captures a [`SnapshotJob`] at the point (the
//! table, and the state frozen by [`StateMachine::freeze`]) and the driver builds the image off
//! its loop; history is compacted when the image comes back.

use super::*;
use crate::snapshot::SnapshotJob;

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    /// Takes a snapshot of the state machine at the aru now and compacts history below it, inline
    /// (log compaction hook; also done automatically at the snapshot points).
    pub fn take_snapshot(&mut self) {
        let snap = self.capture_snapshot().build();
        self.compact_to(snap);
    }

    /// The next snapshot job to build, with `Config::snapshot_off_loop` (see
    /// [`SnapshotJob::build`]); give the result to [`Replica::handle_snapshot_built`].
    pub fn poll_snapshot_job(&mut self) -> Option<SnapshotJob> {
        self.snapshot_job.take()
    }

    /// A snapshot built from a job of [`Replica::poll_snapshot_job`]: persisted, and history
    /// compacted below it. One that an installed snapshot overtook is dropped.
    pub fn handle_snapshot_built(&mut self, now: Time, snap: Snapshot) {
        self.now = now;
        if self.snapshot_building == Some(snap.seq()) {
            self.snapshot_building = None;
        }
        let newer = self
            .latest_snapshot
            .as_ref()
            .is_none_or(|s| snap.seq() > s.seq());
        if !newer || snap.seq() > self.local_aru {
            return;
        }
        #[cfg(feature = "planted-bugs")]
        let snap =
            if self.config.planted_bug == Some(crate::config::PlantedBug::SnapshotJobNotFrozen) {
                Snapshot::build(
                    snap.seq(),
                    self.clients.sessions.log_time(),
                    &self.clients.sessions.records(),
                    self.sm.freeze().as_ref(),
                )
            } else {
                snap
            };
        self.compact_to(snap);
        self.make_progress();
    }

    /// The table and frozen state at the aru, and the next snapshot point after it.
    fn capture_snapshot(&mut self) -> SnapshotJob {
        self.next_snapshot_at = self.snapshot_point_after(self.local_aru);
        self.log_bytes_since_snapshot = 0;
        SnapshotJob::new(
            self.local_aru,
            self.clients.sessions.log_time(),
            self.clients.sessions.records(),
            self.sm.freeze(),
        )
    }

    /// Called after execution: at a snapshot point, snapshot inline or queue a job (one at a time).
    pub(super) fn snapshot_if_due(&mut self) {
        if self.config.snapshot_interval.is_none() || self.local_aru < self.next_snapshot_at {
            return;
        }
        if !self.snapshot_worth_taking() {
            self.next_snapshot_at = self.snapshot_point_after(self.local_aru);
            return;
        }
        if !self.config.snapshot_off_loop {
            self.take_snapshot();
        } else if self.snapshot_building.is_none() {
            let job = self.capture_snapshot();
            self.snapshot_building = Some(job.seq());
            self.snapshot_job = Some(job);
        }
    }

    /// Whether enough log was executed since the last snapshot for another
    /// (`Config::snapshot_min_log_percent`).
    fn snapshot_worth_taking(&self) -> bool {
        let percent = u64::from(self.config.snapshot_min_log_percent);
        let Some(last) = &self.latest_snapshot else {
            return true;
        };
        percent == 0
            || self.log_bytes_since_snapshot.saturating_mul(100)
                >= last.len().saturating_mul(percent)
    }

    /// The first staggered snapshot point above `aru` (`Seq(u64::MAX)` when snapshots are off).
    pub(super) fn snapshot_point_after(&self, aru: Seq) -> Seq {
        let Some(interval) = self.config.snapshot_interval else {
            return Seq(u64::MAX);
        };
        let offset = (self.me.index() as u64).saturating_mul(interval) / self.n as u64;
        // Points p satisfy (p + offset) % interval == 0.
        let shifted = aru.0.saturating_add(offset);
        let next = (shifted / interval)
            .saturating_add(1)
            .saturating_mul(interval);
        Seq(next.saturating_sub(offset).max(aru.0.saturating_add(1)))
    }

    /// Makes `snap` (this server's own) the latest snapshot: persisted, history compacted below it
    /// except for `history_retention` slots (and those after a replaced snapshot still pulled).
    fn compact_to(&mut self, snap: Snapshot) {
        self.metrics.snapshots_taken += 1;
        self.outbox.persist_snapshot(&snap, true);
        let mut drop_through = snap.seq().0.saturating_sub(self.config.history_retention);
        let old = self.latest_snapshot.replace(snap);
        self.transfer
            .retire(old, self.now, self.config.recon_timeout);
        // A replaced snapshot still being pulled: its receiver catches up from the slot after
        // it once installed, so those slots stay too (else a transfer longer than the history
        // retention lasts is followed by another, of this snapshot, and so on).
        if let Some(s) = self.transfer.retained_seq() {
            drop_through = drop_through.min(s.0);
        }
        self.truncate_history(Seq(drop_through));
    }

    /// Installs a snapshot received from a peer (checked and decoded by the transfer).
    pub(super) fn on_snapshot(&mut self, snap: Snapshot) {
        if snap.seq() <= self.local_aru {
            return;
        }
        let Ok(parts) = snap.parts() else {
            self.metrics.snapshots_rejected += 1;
            return;
        };
        if self.sm.restore_shared(&parts.app_state).is_err() {
            self.metrics.snapshots_rejected += 1;
            return;
        }
        let seq = snap.seq();
        self.metrics.snapshots_installed += 1;
        #[cfg(feature = "planted-bugs")]
        let skip_table =
            self.config.planted_bug == Some(crate::config::PlantedBug::SnapshotDropsClientTable);
        #[cfg(not(feature = "planted-bugs"))]
        let skip_table = false;
        if !skip_table {
            self.clients
                .sessions
                .restore(parts.log_time, &parts.clients);
        }
        self.local_aru = seq;
        self.log_bytes_since_snapshot = 0;
        if let Some(l) = self.role.leading_mut() {
            if l.last_proposed < seq {
                l.last_proposed = seq;
            }
            // Its clock entry may be among the slots the snapshot covers: never executed here.
            l.clock_unexecuted = None;
        }
        self.max_seen_seq = self.max_seen_seq.max(seq);
        self.truncate_history(seq);
        if self.role.leading().is_some_and(|l| !l.bound.is_empty()) {
            // The slots the snapshot covers are gone, with whatever stale proposals they held: an
            // update bound only there is now executed (the client table says so) or lost its slot.
            let still = self.bound_above_aru();
            if let Some(l) = self.role.leading_mut() {
                l.bound.retain(|id| still.contains(id));
            }
        }
        // Local clients whose updates the snapshot covers are answered from the table.
        for id in self.clients.answer_executed_pending() {
            self.outbox.persist_pending_done(id);
        }
        self.outbox.persist_snapshot(&snap, false);
        self.next_snapshot_at = self.snapshot_point_after(seq);
        let old = self.latest_snapshot.replace(snap);
        self.transfer
            .retire(old, self.now, self.config.recon_timeout);
        self.make_progress();
    }

    pub(super) fn truncate_history(&mut self, through: Seq) {
        self.history.truncate_through(through, drop);
    }
}
