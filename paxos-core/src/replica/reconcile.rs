//! Liveness announcements, reconciliation and state transfer [TR §5.6; spec §11].

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

    pub(super) fn on_alive(&mut self, from: NodeId, aru: Seq, installed: View) {
        self.recon_silent &= !(1u64 << from.index());
        self.see_view(installed);
        self.note_peer_aru(from, aru);
    }

    pub(super) fn note_peer_aru(&mut self, from: NodeId, aru: Seq) {
        let i = from.index();
        if aru > self.peer_aru[i] {
            self.peer_aru[i] = aru;
        }
        if aru > self.local_aru {
            self.note_recon_target(aru);
        }
    }

    pub(super) fn note_recon_target(&mut self, target: Seq) {
        if target > self.recon_target {
            self.recon_target = target;
        }
        if self.recon_target > self.local_aru && self.behind_since.is_none() {
            self.behind_since = Some(self.now);
        }
    }

    pub(super) fn reconcile_if_behind(&mut self, now: Time) {
        let Some(since) = self.behind_since else {
            return;
        };
        if self.local_aru >= self.recon_target {
            self.behind_since = None;
            self.recon_outstanding = None;
            return;
        }
        if now.saturating_since(since) < self.config.recon_delay {
            return;
        }
        if let Some((p, sent)) = self.recon_outstanding {
            if now.saturating_since(sent) < self.config.recon_timeout {
                return;
            }
            // Unanswered: prefer others until this peer is heard from again.
            self.recon_silent |= 1u64 << p.index();
            if self.recon_peer == Some(p.index()) {
                self.recon_peer = None;
            }
        }
        let i = self.pick_recon_peer();
        if i == self.me.index() {
            return; // a cluster of one has nobody to ask
        }
        self.recon_cursor = i;
        let from = self.local_aru.next();
        let to = Seq(self
            .recon_target
            .0
            .min(from.0 + self.config.recon_chunk - 1));
        self.recon_outstanding = Some((NodeId(i as u32), now));
        self.metrics.recon_requests += 1;
        self.send(
            Destination::Node(NodeId(i as u32)),
            Message::ReconRequest { from, to },
        );
    }

    /// The peer to ask for missing slots: the one that answered last while it is still ahead,
    /// else the next peer (rotating) that announced an aru above ours and has not gone silent,
    /// else the next one ahead at all, else simply the next one.
    pub(super) fn pick_recon_peer(&self) -> usize {
        let me = self.me.index();
        let ahead = |i: usize| i != me && self.peer_aru[i] > self.local_aru;
        if let Some(p) = self.recon_peer.filter(|p| ahead(*p)) {
            return p;
        }
        let order = || (1..=self.n).map(|k| (self.recon_cursor + k) % self.n);
        order()
            .find(|i| ahead(*i) && self.recon_silent & (1u64 << i) == 0)
            .or_else(|| order().find(|i| ahead(*i)))
            .unwrap_or_else(|| {
                let mut i = (self.recon_cursor + 1) % self.n;
                if i == me {
                    i = (i + 1) % self.n;
                }
                i
            })
    }

    pub(super) fn on_recon_request(&mut self, from: NodeId, lo: Seq, hi: Seq) {
        if lo.0 == 0 || hi < lo {
            self.metrics.dropped_invalid += 1;
            return;
        }
        if lo < self.history.first() {
            // Compacted here: state transfer instead.
            if let Some(s) = &self.latest_snapshot {
                if s.seq >= lo {
                    let s = s.clone();
                    self.send(Destination::Node(from), Message::SnapshotTransfer(s));
                    return;
                }
            }
        }
        let hi = Seq(hi.0.min(lo.0.saturating_add(self.config.recon_chunk - 1)));
        let mut updates = Vec::new();
        let mut bytes = 0usize;
        let mut complete = true;
        for s in lo.0..=hi.0 {
            match self.ordered_update(Seq(s)) {
                Some(u) => {
                    bytes += u.wire_size();
                    updates.push(OrderedUpdate {
                        seq: Seq(s),
                        update: u,
                    });
                    if bytes >= self.config.max_message_bytes {
                        break;
                    }
                }
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if updates.is_empty() && complete {
            return;
        }
        self.send(
            Destination::Node(from),
            Message::ReconReply { updates, complete },
        );
    }

    pub(super) fn on_recon_reply(
        &mut self,
        from: NodeId,
        updates: Vec<OrderedUpdate>,
        complete: bool,
    ) {
        let got = !updates.is_empty();
        let aru_before = self.local_aru;
        for o in updates {
            self.apply_ordered(o.seq, o.update);
        }
        self.make_progress();
        if self.recon_outstanding.is_some_and(|(p, _)| p == from) && (got || !complete) {
            self.recon_outstanding = None;
            if got {
                // It has the slots: keep asking it. If this reply moved us on, ask at once rather
                // than at the next tick (only then: a duplicated or stale reply must not multiply
                // the requests in flight).
                self.recon_peer = Some(from.index());
                if self.local_aru > aru_before {
                    self.reconcile_if_behind(self.now);
                }
            } else if self.recon_peer == Some(from.index()) {
                // It cannot supply the range (compacted, or it lacks it): try another peer.
                self.recon_peer = None;
            }
        }
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
        if self.last_proposed < snap.seq {
            self.last_proposed = snap.seq;
        }
        self.max_seen_seq = self.max_seen_seq.max(snap.seq);
        self.truncate_history(snap.seq);
        if !self.bound_at_install.is_empty() {
            // The slots the snapshot covers are gone, with whatever stale proposals they held: an
            // update bound only there is now executed (the client table says so) or lost its slot.
            let still = self.bound_above_aru();
            self.bound_at_install.retain(|id| still.contains(id));
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
