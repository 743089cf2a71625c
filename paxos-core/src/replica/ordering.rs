//! The normal case: proposals, accepts, global ordering and execution [TR §5.5, Figs 10, 11; spec §7].

use super::*;

/// Why ordered slots are being executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Execution {
    /// Replaying the ordered prefix recovered from storage, at start: the clients were answered
    /// before the crash or will retry, and none of it is progress of a view.
    Recovering,
    /// Executing slots as they are ordered (or learned from peers).
    Serving,
}

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    /// `send_proposal()`: binds queued updates (or constrained values) to the next slots, within
    /// the window.
    pub(super) fn send_proposal(&mut self) {
        let view = self.last_installed;
        loop {
            let Some(l) = self.role.leading_mut() else {
                return;
            };
            let seq = l.last_proposed.next();
            if seq.0 > self.local_aru.0 + self.config.window {
                break; // window flow control [LADIS §3]
            }
            let (ordered, existing) = match self.history.get(seq) {
                Some(s) => (s.ordered.is_some(), s.proposal.clone()),
                None => (false, None),
            };
            if ordered {
                l.last_proposed = seq;
                continue;
            }
            if seq <= l.floor {
                // Ordered at a PrepareOk sender: wait for reconciliation.
                l.floor_wait_since.get_or_insert(self.now);
                break;
            }
            l.floor_wait_since = None;
            let update = match existing {
                Some((v, _)) if v == view => {
                    l.last_proposed = seq;
                    continue;
                }
                Some((_, u)) => u, // constrained re-proposal
                None => match self.clients.pop_unbound(|id| l.bound.contains(id)) {
                    Some(u) => u,
                    None if seq < l.max_constrained => {
                        self.metrics.noops_proposed += 1;
                        ClientUpdate {
                            client_id: NOOP_CLIENT,
                            server_id: self.me,
                            timestamp: Timestamp(seq.0),
                            payload: Bytes::new(),
                        }
                    }
                    None => break,
                },
            };
            self.propose(seq, view, update);
        }
    }

    /// Whether the leader has waited too long for slots below its floor (see `Preparing::floor`).
    pub(super) fn floor_wait_expired(&self, now: Time) -> bool {
        self.role.leading().is_some_and(|l| {
            self.local_aru < l.floor
                && l.floor_wait_since
                    .is_some_and(|t| now.saturating_since(t) > self.config.recon_timeout * 8)
        })
    }

    /// Highest slot proposed in the view this server leads; its aru when not leading.
    pub(super) fn last_proposed(&self) -> Seq {
        self.role
            .leading()
            .map_or(self.local_aru, |l| l.last_proposed)
    }

    pub(super) fn propose(&mut self, seq: Seq, view: View, update: ClientUpdate) {
        // A (view, slot) is proposed with one value only: send_proposal skips slots that already
        // hold a proposal of this view.
        if let Some((v, u)) = self.history.get(seq).and_then(|s| s.proposal.as_ref()) {
            assert!(
                *v < view,
                "{}: slot {seq} already holds a proposal of {v} ({:?}) when proposing {:?} in {view}",
                self.me,
                u.id(),
                update.id()
            );
        }
        if let Some(l) = self.role.leading_mut() {
            l.last_proposed = seq;
        }
        self.max_seen_seq = self.max_seen_seq.max(seq);
        self.metrics.proposed_updates += 1;
        self.apply_proposal(seq, view, update.clone());
        self.record_accepted(seq, view, &update);
        self.outbox
            .proposals
            .push((view, ProposalItem { seq, update }));
        if self.config.leader_accepts_separately {
            self.outbox.accepts.push((view, seq));
        }
        self.hold_self_accept(view, seq);
    }

    pub(super) fn resend_unordered_proposals(&mut self) {
        let view = self.last_installed;
        let items: Vec<(View, ProposalItem)> = self
            .history
            .iter_above(self.local_aru)
            .take_while(|(seq, _)| *seq <= self.last_proposed())
            .filter(|(_, s)| s.ordered.is_none())
            .filter_map(|(seq, s)| match &s.proposal {
                Some((v, u)) if *v == view => Some((
                    view,
                    ProposalItem {
                        seq,
                        update: u.clone(),
                    },
                )),
                _ => None,
            })
            .collect();
        self.outbox.proposals.extend(items);
    }

    pub(super) fn on_proposal(&mut self, from: NodeId, view: View, items: Vec<ProposalItem>) {
        self.see_view(view);
        #[allow(unused_mut)]
        let mut view_ok = view == self.last_installed;
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::AcceptLowerView) {
            view_ok = view <= self.last_installed;
        }
        if self.role.state() != ServerState::RegNonLeader || !view_ok || from != view.leader(self.n)
        {
            self.metrics.dropped_conflict += 1;
            return;
        }
        let mut already_ordered = Vec::new();
        for ProposalItem { seq, update } in items {
            if seq.0 == 0 {
                self.metrics.dropped_invalid += 1;
                continue;
            }
            if seq <= self.local_aru || self.history.get(seq).is_some_and(|s| s.ordered.is_some()) {
                // Tell the leader what was ordered here, so it can order it too.
                if let Some(u) = self.ordered_update(seq) {
                    already_ordered.push(OrderedUpdate { seq, update: u });
                }
                continue;
            }
            if seq.0 > self.local_aru.0 + self.config.accept_window {
                self.metrics.dropped_outside_window += 1;
                let target = Seq(seq.0.saturating_sub(self.config.window));
                self.note_recon_target(target);
                continue;
            }
            let stored_view = self
                .history
                .get(seq)
                .and_then(|s| s.proposal.as_ref().map(|(v, _)| *v));
            match stored_view {
                Some(v) if v > view => continue,
                Some(v) if v == view => {
                    // Duplicate: receiver-driven retransmission of the Accept.
                    self.outbox.accepts.push((view, seq));
                    continue;
                }
                _ => {}
            }
            self.max_seen_seq = self.max_seen_seq.max(seq);
            self.apply_proposal(seq, view, update.clone());
            self.record_accepted(seq, view, &update);
            if !self.config.leader_accepts_separately {
                self.count_accept(view, seq, from.index());
            }
            self.outbox.accepts.push((view, seq));
            self.hold_self_accept(view, seq);
        }
        if !already_ordered.is_empty() {
            self.send(
                Destination::Node(from),
                Message::ReconReply {
                    updates: already_ordered,
                    complete: true,
                },
            );
        }
        self.make_progress();
    }

    pub(super) fn ordered_update(&self, seq: Seq) -> Option<ClientUpdate> {
        self.history.get(seq).and_then(|s| s.ordered.clone())
    }

    /// The update rule for a proposal [spec §4]: replace lower views, never higher ones.
    pub(super) fn apply_proposal(&mut self, seq: Seq, view: View, update: ClientUpdate) {
        if seq.0 > self.local_aru.0 + MAX_SLOTS_AHEAD || seq <= self.local_aru {
            return;
        }
        let Some(slot) = self.history.get_or_create(seq) else {
            return;
        };
        if slot.ordered.is_some() {
            return;
        }
        if matches!(&slot.proposal, Some((v, _)) if *v >= view) {
            return;
        }
        slot.proposal = Some((view, update));
        if slot.accept_view < view {
            slot.accept_view = view;
            slot.accepts = 0;
        }
        self.max_seen_seq = self.max_seen_seq.max(seq);
    }

    pub(super) fn on_accept(&mut self, from: NodeId, view: View, ranges: &[SeqRange]) {
        if view != self.last_installed {
            self.metrics.dropped_conflict += 1;
            return;
        }
        let lo = self.local_aru.0 + 1;
        let hi = self.local_aru.0 + self.config.accept_window.max(self.config.window) * 2;
        for r in ranges {
            let start = r.start.0.max(lo);
            let end = r.end.0.min(hi);
            for s in start..=end {
                self.count_accept(view, Seq(s), from.index());
            }
        }
        self.make_progress();
    }

    /// Records a durable accept of `node` for `(view, seq)` and orders the slot at a majority.
    pub(super) fn count_accept(&mut self, view: View, seq: Seq, node: usize) {
        if seq <= self.local_aru {
            return;
        }
        let majority = self.majority;
        let Some(slot) = self.history.get_or_create(seq) else {
            return;
        };
        if slot.ordered.is_some() || !slot.add_accept(view, node) {
            return;
        }
        if slot.chosen(majority).is_some() {
            if let Some((_, u)) = slot.proposal.take() {
                slot.ordered_in_view = view == self.last_installed;
                self.apply_ordered(seq, u);
            }
        }
    }

    /// The update rule for a globally ordered update: keep the first.
    pub(super) fn apply_ordered(&mut self, seq: Seq, update: ClientUpdate) {
        if seq <= self.local_aru || seq.0 > self.local_aru.0 + MAX_SLOTS_AHEAD {
            return;
        }
        let Some(slot) = self.history.get_or_create(seq) else {
            return;
        };
        if slot.ordered.is_some() {
            return;
        }
        // A proposal this slot held for another update lost: that update is no longer bound here.
        let unbound = match &slot.proposal {
            Some((_, u)) if u.id() != update.id() => Some(u.id()),
            _ => None,
        };
        slot.ordered = Some(update.clone());
        if let Some(id) = unbound {
            if let Some(l) = self.role.leading_mut() {
                l.bound.remove(&id);
            }
        }
        self.max_seen_seq = self.max_seen_seq.max(seq);
        self.outbox.persist_ordered(OrderedUpdate { seq, update });
        if seq > self.local_aru.next() {
            // Ordered out of order: something below is missing here [TR §5.6 trigger 2].
            self.note_recon_target(Seq(seq.0 - 1));
        }
    }

    /// `advance_aru()`: executes ordered slots in sequence [TR Fig 11].
    ///
    /// Only executing a slot this server saw ordered by a quorum of accepts in the installed view
    /// counts as progress for the election strategy. Catching up on slots learned from peers
    /// (reconciliation, snapshots, PrepareOks) does not: a lagging server would otherwise keep
    /// resetting PSB's progress timer while the others, in leader election, wait for its vote.
    ///
    /// `mode` says whether this is the replay of the recovered ordered prefix at start, which
    /// rebuilds the state machine only: no replies, no progress reports, no snapshots.
    pub(super) fn advance_aru(&mut self, mode: Execution) {
        let mut progressed = false;
        let mut view_progressed = false;
        loop {
            let seq = self.local_aru.next();
            // Moved out and back in: executing borrows the update while `self` is mutated.
            let Some((update, in_view)) = self
                .history
                .get_mut(seq)
                .and_then(|s| s.ordered.take().map(|u| (u, s.ordered_in_view)))
            else {
                break;
            };
            // The aru moves only over an ordered slot, one at a time (the `let` above).
            self.local_aru = seq;
            let clock = update.client_id == CLOCK_CLIENT;
            if clock && update.server_id == self.me {
                if let Some(l) = self.role.leading_mut() {
                    if l.clock_unexecuted == Some(update.timestamp) {
                        l.clock_unexecuted = None;
                    }
                }
            }
            let verdict = self.execute(seq, &update, mode);
            self.log_bytes_since_snapshot = self
                .log_bytes_since_snapshot
                .saturating_add(update.payload.len() as u64 + crate::LOG_ENTRY_OVERHEAD);
            if let Some(slot) = self.history.get_mut(seq) {
                slot.ordered = Some(update);
            }
            progressed = true;
            // The leader's clock entries are not progress for the election: a leader that orders
            // only its own clock serves nobody, and counting them would keep the servers a view
            // change left behind waiting for ever (sim: psb N = 7 seed 1224, three servers in
            // leader election beside a view of four). No-ops count, as before.
            view_progressed |= in_view && !(verdict == Verdict::Filler && clock);
        }
        if !progressed {
            return;
        }
        let aru = self.local_aru;
        if let Some(l) = self.role.leading_mut() {
            if l.last_proposed < aru {
                l.last_proposed = aru;
            }
        }
        self.recon.caught_up(self.local_aru);
        if mode == Execution::Serving {
            if view_progressed && self.role.state() != ServerState::LeaderElection {
                self.last_view_progress = Some(self.now);
                let ctx = self.ctx();
                self.election.handle_progress(self.now, &ctx);
                self.drain_election();
            }
            self.snapshot_if_due();
        }
    }

    /// Executes what is ordered and proposes what the window allows, until neither moves. Every
    /// input handler ends here; nothing below it recurses into it, so the stack stays flat however
    /// many slots one input unblocks.
    pub(super) fn make_progress(&mut self) {
        loop {
            let before = (self.local_aru, self.last_proposed());
            self.advance_aru(Execution::Serving);
            self.send_proposal();
            if (self.local_aru, self.last_proposed()) == before {
                break;
            }
        }
    }

    pub(super) fn execute(&mut self, seq: Seq, update: &ClientUpdate, mode: Execution) -> Verdict {
        self.metrics.executed += 1;
        let c = update.client_id;
        let verdict = self.verdict(seq, update);
        match verdict {
            Verdict::Applied => {
                let result = self.sm.apply(seq, update);
                self.metrics.sessions_expired +=
                    self.clients.sessions.record(c, update.timestamp, result);
            }
            Verdict::Opened(id) => {
                self.metrics.sessions_opened += 1;
                if self.clients.sessions.rules().is_some() {
                    self.metrics.sessions_expired += self.clients.sessions.open(id, c);
                }
            }
            Verdict::Expired => self.metrics.expired_session_updates += 1,
            // Pitfall 3(b): an update bound twice executes once; the aru still advances.
            Verdict::Duplicate | Verdict::Filler => self.metrics.duplicates_skipped += 1,
        }
        // Executed, so no longer bound above the aru. Others are refused by the exactly-once
        // table from now on anyway; a registration's id comes back when its nonce registers
        // again after its session is gone (sim: psb N = 3 seed 264 with sessions).
        if let Some(l) = self.role.leading_mut() {
            if !l.bound.is_empty() {
                l.bound.remove(&update.id());
            }
        }
        // The pending copy is done whichever server initiated the executed one: a client that
        // switched servers may have left the same update pending here too.
        let was_pending = self.clients.finish_pending(c, update.timestamp);
        if was_pending {
            self.outbox.persist_pending_done(update.id());
        }
        if mode == Execution::Serving
            && verdict != Verdict::Filler
            && (update.server_id == self.me || was_pending)
        {
            match verdict {
                Verdict::Opened(id) => {
                    self.clients
                        .reply_outcome(c, update.timestamp, ReplyOutcome::SessionOpened(id))
                }
                Verdict::Expired => {
                    self.clients
                        .reply_outcome(c, update.timestamp, ReplyOutcome::SessionExpired)
                }
                _ => self.reply_executed(c, update.timestamp),
            }
        }
        if self.config.record_executions {
            self.executed.push_back(Executed {
                seq,
                update: update.clone(),
                applied: verdict == Verdict::Applied,
                verdict,
            });
        }
        verdict
    }

    /// Answers an executed (or duplicate) update from the table: a registration with its open
    /// session, anything else with its stored result.
    pub(super) fn reply_executed(&mut self, c: ClientId, ts: Timestamp) {
        if ts == Timestamp(0) && self.clients.sessions.rules().is_some() {
            if let Some(sid) = self.clients.sessions.registered(c) {
                self.clients
                    .reply_outcome(c, ts, ReplyOutcome::SessionOpened(sid));
            }
            return;
        }
        self.clients.reply(c, ts);
    }

    /// What executing `update` at `seq` does: a pure function of the executed log (so every
    /// replica decides the same), except for a clock entry, which moves the log's clock here.
    fn verdict(&mut self, seq: Seq, update: &ClientUpdate) -> Verdict {
        let c = update.client_id;
        if c == NOOP_CLIENT {
            return Verdict::Filler;
        }
        if c == CLOCK_CLIENT {
            self.execute_clock(update);
            return Verdict::Filler;
        }
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::ExecuteDuplicate) {
            return Verdict::Applied;
        }
        if self.clients.is_executed(update) {
            return Verdict::Duplicate;
        }
        if self.clients.sessions.rules().is_none() {
            // Without session rules a registration opens nothing: the nonce is the client's id
            // (so that clients can always register first, whatever the servers' rules).
            return if update.timestamp == Timestamp(0) {
                Verdict::Opened(c)
            } else {
                Verdict::Applied
            };
        }
        if update.timestamp == Timestamp(0) {
            // A registration names a nonce; a session id there is refused like a stale session.
            // A nonce whose session is still open registered already (a retry): same session.
            return if c.0 >= SESSION_ID_BASE {
                Verdict::Expired
            } else if self.clients.sessions.registered(c).is_some() {
                Verdict::Duplicate
            } else {
                Verdict::Opened(ClientId(SESSION_ID_BASE + seq.0))
            };
        }
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::ExpiredSessionReopens) {
            return Verdict::Applied;
        }
        if self.clients.sessions.holds(c) {
            Verdict::Applied
        } else {
            Verdict::Expired
        }
    }

    /// A clock entry: the log's clock moves by the time its leader measured (the payload, in
    /// nanoseconds; a malformed one counts as zero) and idle sessions expire.
    fn execute_clock(&mut self, update: &ClientUpdate) {
        let nanos = <[u8; 8]>::try_from(update.payload.as_ref()).map_or(0, u64::from_le_bytes);
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::SessionExpiresByLocalClock) {
            self.metrics.sessions_expired += self.clients.sessions.set_clock(self.now);
            return;
        }
        self.metrics.sessions_expired += self
            .clients
            .sessions
            .advance_clock(std::time::Duration::from_nanos(nanos));
    }
}
