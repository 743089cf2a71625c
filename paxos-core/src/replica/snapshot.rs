//! Snapshots and state transfer (DERIVED, spec §11): a server compacts its history below a
//! snapshot of the state machine and the client table; a peer asking for compacted slots gets the
//! snapshot instead, and installs it as if it had executed every slot it covers.

use super::*;

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    /// Takes a snapshot of the state machine at the aru now and compacts history below it
    /// (log compaction hook; also done automatically every `snapshot_interval` executions).
    pub fn take_snapshot(&mut self) {
        let snap = Snapshot {
            seq: self.local_aru,
            app_state: self.sm.snapshot(),
            clients: self.clients.records(),
        };
        self.metrics.snapshots_taken += 1;
        self.executed_since_snapshot = 0;
        self.outbox.persist_snapshot(&snap);
        let keep_from = snap.seq.0.saturating_sub(self.config.history_retention);
        self.latest_snapshot = Some(snap);
        self.truncate_history(Seq(keep_from));
    }

    pub(super) fn on_snapshot(&mut self, snap: Snapshot) {
        if snap.seq <= self.local_aru {
            return;
        }
        if self.sm.restore(&snap.app_state).is_err() {
            self.metrics.dropped_invalid += 1;
            return;
        }
        self.metrics.snapshots_installed += 1;
        #[cfg(feature = "planted-bugs")]
        let skip_table =
            self.config.planted_bug == Some(crate::config::PlantedBug::SnapshotDropsClientTable);
        #[cfg(not(feature = "planted-bugs"))]
        let skip_table = false;
        if !skip_table {
            self.clients.restore(&snap.clients);
        }
        self.local_aru = snap.seq;
        if let Some(l) = self.role.leading_mut() {
            if l.last_proposed < snap.seq {
                l.last_proposed = snap.seq;
            }
        }
        self.max_seen_seq = self.max_seen_seq.max(snap.seq);
        self.truncate_history(snap.seq);
        if self.role.leading().is_some_and(|l| !l.bound.is_empty()) {
            // The slots the snapshot covers are gone, with whatever stale proposals they held: an
            // update bound only there is now executed (the client table says so) or lost its slot.
            let still = self.bound_above_aru();
            if let Some(l) = self.role.leading_mut() {
                l.bound.retain(|id| still.contains(id));
            }
        }
        // Local clients whose updates the snapshot covers are answered from the table.
        self.clients.answer_executed_pending();
        self.outbox.persist_snapshot(&snap);
        self.executed_since_snapshot = 0;
        self.latest_snapshot = Some(snap);
        self.make_progress();
    }

    pub(super) fn truncate_history(&mut self, through: Seq) {
        self.history.truncate_through(through, drop);
    }
}
