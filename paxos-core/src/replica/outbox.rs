//! What leaves a replica, and when [TR §4.3, §7.3; spec §9, §10].
//!
//! The [`Outbox`] owns everything on its way out: the persist batch being filled, the messages and
//! self-accepts held until a batch is durable, the proposals and accepts buffered for aggregation
//! (each tagged with the view it was made in) and the messages ready to send. A message that
//! carries a promise (Prepare, PrepareOk, Proposal, Accept, a forwarded update) waits for every
//! batch that must be synced before it; one that carries none (Alive, reconciliation) leaves at
//! once. The replica half of this file packs the aggregation buffers into messages at the drain,
//! checking each against the history it must agree with.

use super::*;

/// Outgoing persist batches and messages, and what each message waits for.
#[derive(Clone, Debug, Hash)]
pub(super) struct Outbox {
    durability: Durability,
    #[cfg(feature = "planted-bugs")]
    planted_bug: Option<crate::config::PlantedBug>,
    /// The batch being filled: everything handed to storage since the last `close_batch`.
    open: PersistBatch,
    /// The last batch handed out.
    last_closed: u64,
    /// The last handed-out batch that must be synced.
    last_closed_sync: u64,
    /// Every batch up to this one is durable.
    persisted: u64,
    /// The batch carrying the last installed (received) snapshot; 0: none.
    install_batch: u64,
    /// Sync batches handed out and not yet durable, with when each was handed out.
    sync_closed_at: VecDeque<(u64, Time)>,
    /// Messages waiting for a batch, in creation order (they leave in that order).
    held: VecDeque<(u64, Destination, Message)>,
    /// This server's own accepts waiting for the batch that carries the accepted proposal.
    held_self_accepts: VecDeque<(u64, View, Seq)>,
    /// Proposals made since the last drain, each with the view it was made in: packed into
    /// Proposal messages at the drain, and only while this server still leads that view.
    pub(super) proposals: Vec<(View, ProposalItem)>,
    /// Accepts made since the last drain, each with the view of the proposal accepted. The view
    /// travels with the entry because one round of inputs may install a higher view before the
    /// drain (issue #11): stamping the drain-time view would announce an accept that never
    /// happened.
    pub(super) accepts: Vec<(View, Seq)>,
    /// Messages free to leave.
    ready: VecDeque<(Destination, Message)>,
}

impl Outbox {
    pub(super) fn new(config: &Config) -> Outbox {
        Outbox {
            durability: config.durability,
            #[cfg(feature = "planted-bugs")]
            planted_bug: config.planted_bug,
            open: PersistBatch::default(),
            last_closed: 0,
            last_closed_sync: 0,
            persisted: 0,
            install_batch: 0,
            sync_closed_at: VecDeque::new(),
            held: VecDeque::new(),
            held_self_accepts: VecDeque::new(),
            proposals: Vec::new(),
            accepts: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    fn persists(&self) -> bool {
        self.durability != Durability::None
    }

    fn must_sync(&mut self) {
        self.open.sync |= self.durability == Durability::Sync;
    }

    /// Records the view promises (synced: Prepare and PrepareOk depend on them).
    pub(super) fn persist_view(&mut self, view: ViewRecord) {
        if self.persists() {
            self.open.view = Some(view);
            self.must_sync();
        }
    }

    /// Records an accepted proposal (synced: the Accept depends on it). Returns the batch that
    /// carries it (0 without storage).
    pub(super) fn persist_accepted(&mut self, accepted: AcceptedProposal) -> u64 {
        if !self.persists() {
            return 0;
        }
        self.open.accepted.push(accepted);
        self.must_sync();
        self.last_closed + 1
    }

    /// Records a local client's pending update (synced: it is forwarded once durable).
    pub(super) fn persist_pending(&mut self, update: ClientUpdate) {
        if self.persists() {
            self.open.pending.push(update);
            self.must_sync();
        }
    }

    /// Records that a pending update executed, so storage can delete it (no sync: a restart that
    /// still finds it drops it, the client table saying it executed).
    pub(super) fn persist_pending_done(&mut self, id: UpdateId) {
        if self.persists() {
            self.open.pending_done.push(id);
        }
    }

    /// Records a globally ordered update (no sync: nothing waits for it).
    pub(super) fn persist_ordered(&mut self, ordered: OrderedUpdate) {
        if self.persists() {
            self.open.ordered.push(ordered);
        }
    }

    /// Records a snapshot (no sync: nothing waits for it); `own` for a compaction of this
    /// server's own log ([`PersistBatch::snapshot_deferrable`]).
    pub(super) fn persist_snapshot(&mut self, snapshot: &Snapshot, own: bool) {
        if self.persists() {
            self.open.snapshot = Some(snapshot.clone());
            self.open.snapshot_deferrable = own;
            if !own {
                // The open batch is handed out as the next one.
                self.install_batch = self.last_closed + 1;
            }
        }
    }

    /// Whether an installed snapshot is not yet durable: its image is written inline (nothing
    /// else rebuilds it), and at 1 GiB that takes seconds during which nothing of this server's
    /// is persisted, so nothing it waits for can progress.
    pub(super) fn install_persisting(&self) -> bool {
        self.install_batch > self.persisted
    }

    /// Since when the oldest sync batch handed out waits to be durable.
    pub(super) fn storage_wait_since(&self) -> Option<Time> {
        self.sync_closed_at.front().map(|(_, t)| *t)
    }

    /// Closes the open batch and hands it out (at `now`), if it holds anything.
    pub(super) fn close_batch(&mut self, now: Time) -> Option<PersistBatch> {
        if self.open.is_empty() {
            return None;
        }
        self.last_closed += 1;
        let mut batch = std::mem::take(&mut self.open);
        batch.id = BatchId(self.last_closed);
        if batch.sync {
            self.last_closed_sync = self.last_closed;
            self.sync_closed_at.push_back((self.last_closed, now));
        }
        Some(batch)
    }

    /// Every batch up to `upto` is durable: held messages it covers become ready. Returns false
    /// when that changes nothing (already known, or a batch never handed out: a driver bug).
    pub(super) fn persisted_through(&mut self, upto: BatchId) -> bool {
        if upto.0 > self.last_closed {
            debug_assert!(
                false,
                "batch {} reported durable but never handed out",
                upto.0
            );
            return false;
        }
        if upto.0 <= self.persisted {
            return false;
        }
        self.persisted = upto.0;
        while self
            .sync_closed_at
            .front()
            .is_some_and(|(id, _)| *id <= self.persisted)
        {
            self.sync_closed_at.pop_front();
        }
        while let Some((dep, _, _)) = self.held.front() {
            if *dep > self.persisted {
                break;
            }
            let (_, to, m) = self.held.pop_front().expect("front exists");
            self.ready.push_back((to, m));
        }
        true
    }

    /// The next held self-accept whose batch is now durable.
    pub(super) fn pop_released_self_accept(&mut self) -> Option<(View, Seq)> {
        match self.held_self_accepts.front() {
            Some((dep, _, _)) if *dep <= self.persisted => self
                .held_self_accepts
                .pop_front()
                .map(|(_, view, seq)| (view, seq)),
            _ => None,
        }
    }

    /// Every batch up to this one is durable.
    pub(super) fn persisted(&self) -> u64 {
        self.persisted
    }

    /// The batch a message created now depends on (0: nothing to wait for).
    pub(super) fn dependency(&self) -> u64 {
        #[cfg(feature = "planted-bugs")]
        if self.planted_bug == Some(crate::config::PlantedBug::SendBeforeDurable) {
            return 0;
        }
        if self.durability != Durability::Sync {
            return 0;
        }
        if self.open.sync {
            self.last_closed + 1
        } else {
            self.last_closed_sync
        }
    }

    /// Whether this server's accept of `(view, seq)`, made now, counts at once; otherwise it is
    /// held until its batch is durable and returned by `pop_released_self_accept`.
    pub(super) fn self_accept_counts_now(&mut self, view: View, seq: Seq) -> bool {
        #[allow(unused_mut)]
        let mut dep = self.dependency();
        #[cfg(feature = "planted-bugs")]
        if self.planted_bug == Some(crate::config::PlantedBug::SelfAcceptBeforeDurable) {
            dep = 0;
        }
        if dep <= self.persisted {
            true
        } else {
            self.held_self_accepts.push_back((dep, view, seq));
            false
        }
    }

    /// Sends a message that carries no promise.
    pub(super) fn send(&mut self, to: Destination, m: Message) {
        self.ready.push_back((to, m));
    }

    /// Sends a message that may leave only once everything persisted so far is durable.
    pub(super) fn send_durable(&mut self, to: Destination, m: Message) {
        let dep = self.dependency();
        if dep <= self.persisted && self.held.is_empty() {
            self.ready.push_back((to, m));
        } else {
            self.held.push_back((dep, to, m));
        }
    }

    /// The next message free to leave.
    pub(super) fn pop_ready(&mut self) -> Option<(Destination, Message)> {
        self.ready.pop_front()
    }
}

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    pub(super) fn persist_view(&mut self) {
        self.outbox.persist_view(ViewRecord {
            last_attempted: self.last_attempted,
            last_installed: self.last_installed,
        });
    }

    pub(super) fn record_accepted(&mut self, seq: Seq, view: View, update: &ClientUpdate) {
        let batch = self.outbox.persist_accepted(AcceptedProposal {
            seq,
            view,
            update: update.clone(),
        });
        if let Some(slot) = self.history.get_mut(seq) {
            slot.accepted = Some((view, batch));
        }
    }

    pub(super) fn hold_self_accept(&mut self, view: View, seq: Seq) {
        if self.outbox.self_accept_counts_now(view, seq) {
            self.count_accept(view, seq, self.me.index());
        }
    }

    /// Sends a message that carries no promise.
    pub(super) fn send(&mut self, to: Destination, m: Message) {
        self.outbox.send(to, m);
    }

    /// Sends a message that may leave only once everything persisted so far is durable.
    pub(super) fn send_durable(&mut self, to: Destination, m: Message) {
        self.outbox.send_durable(to, m);
    }

    /// Packs buffered proposals and accepts into messages (aggregation). Every entry keeps the
    /// view it was made in, so a view installed between the input and the drain cannot relabel
    /// it.
    pub(super) fn flush(&mut self) {
        if !self.outbox.proposals.is_empty() {
            let capacity = self.outbox.proposals.capacity();
            let items = std::mem::replace(&mut self.outbox.proposals, Vec::with_capacity(capacity));
            let led = (self.role.state() == ServerState::RegLeader).then_some(self.last_installed);
            let limit = self.config.max_message_bytes;
            let mut batch: Vec<ProposalItem> = Vec::new();
            let mut batch_view = View(0);
            let mut bytes = 0usize;
            for (view, item) in items {
                if led != Some(view) {
                    // Made in a view this server no longer leads: the next view re-proposes
                    // the slot from its PrepareOks (this server's own accept included).
                    continue;
                }
                let still = self
                    .history
                    .get(item.seq)
                    .and_then(|s| s.accepted)
                    .is_some_and(|(v, _)| v == view);
                if !still {
                    // Compacted by a snapshot installed in the same round: the slot is decided
                    // and executed, nobody needs the proposal.
                    continue;
                }
                let size = item.update.wire_size() + 8;
                if !batch.is_empty()
                    && (!self.config.aggregation || bytes + size > limit || batch_view != view)
                {
                    self.emit_proposal(batch_view, std::mem::take(&mut batch));
                    bytes = 0;
                }
                batch_view = view;
                bytes += size;
                batch.push(item);
            }
            if !batch.is_empty() {
                self.emit_proposal(batch_view, batch);
            }
        }
        if !self.outbox.accepts.is_empty() {
            let mut entries = std::mem::take(&mut self.outbox.accepts);
            #[cfg(feature = "planted-bugs")]
            if self.config.planted_bug == Some(crate::config::PlantedBug::MislabelledAccept) {
                // The bug this buffer's view tags fix: stamp the drain-time view.
                let view = self.last_installed;
                entries.iter_mut().for_each(|e| e.0 = view);
                entries.sort_unstable();
                entries.dedup();
                self.send_accepts_unchecked(view, entries.into_iter().map(|e| e.1).collect());
                return;
            }
            entries.sort_unstable();
            entries.dedup();
            // Entries whose slot was accepted again in a higher view in the same round (or
            // compacted) are dropped: the durable record no longer says so.
            entries.retain(|&(view, seq)| {
                let kept = self
                    .history
                    .get(seq)
                    .and_then(|s| s.accepted)
                    .is_some_and(|(v, _)| v == view);
                if !kept {
                    self.metrics.accepts_superseded += 1;
                }
                kept
            });
            let mut start = 0;
            while start < entries.len() {
                let view = entries[start].0;
                let end = start + entries[start..].partition_point(|e| e.0 == view);
                let seqs: Vec<Seq> = entries[start..end].iter().map(|e| e.1).collect();
                self.send_accepts(view, seqs);
                start = end;
            }
        }
    }

    /// Sends Accepts of `view` for `seqs` (sorted, distinct), as ranges when aggregating.
    ///
    /// Always-on check where an Accept is built: every slot it names holds this server's accepted
    /// proposal of exactly `view`, handed to storage in a batch the message waits for.
    pub(super) fn send_accepts(&mut self, view: View, seqs: Vec<Seq>) {
        let dep = self.outbox.dependency();
        for &seq in &seqs {
            let accepted = self.history.get(seq).and_then(|s| s.accepted);
            assert!(
                accepted.is_some_and(|(v, batch)| v == view
                    && (self.config.durability != Durability::Sync
                        || batch <= dep.max(self.outbox.persisted()))),
                "{}: Accept({view}) for slot {seq}, whose accepted proposal is {accepted:?} \
                 (message waits for batch {dep}, durable through {})",
                self.me,
                self.outbox.persisted()
            );
        }
        self.send_accepts_unchecked(view, seqs);
    }

    pub(super) fn send_accepts_unchecked(&mut self, view: View, seqs: Vec<Seq>) {
        if self.config.aggregation {
            let mut ranges: Vec<SeqRange> = Vec::new();
            for s in seqs {
                match ranges.last_mut() {
                    Some(r) if r.end.0 + 1 == s.0 => r.end = s,
                    _ => ranges.push(SeqRange { start: s, end: s }),
                }
            }
            for chunk in ranges.chunks(1024) {
                self.send_accept(view, chunk.to_vec());
            }
        } else {
            for s in seqs {
                self.send_accept(view, vec![SeqRange { start: s, end: s }]);
            }
        }
    }

    pub(super) fn emit_proposal(&mut self, view: View, items: Vec<ProposalItem>) {
        // Always on: a Proposal carries, for each slot, the value this leader bound there in
        // `view` (one value per (view, slot)).
        for item in &items {
            let held = self.history.get(item.seq).and_then(|s| s.accepted);
            assert!(
                held.is_some_and(|(v, _)| v == view),
                "{}: Proposal({view}) for slot {} that this leader accepted in {held:?}",
                self.me,
                item.seq
            );
        }
        self.metrics.proposal_messages += 1;
        let m = Message::Proposal { view, items };
        if self.config.leader_accepts_separately {
            // The proposal is not the leader's accept here; its Accept follows its own sync.
            self.send(Destination::All, m);
        } else {
            self.send_durable(Destination::All, m);
        }
    }

    pub(super) fn send_accept(&mut self, view: View, seqs: Vec<SeqRange>) {
        self.send_durable(Destination::All, Message::Accept { view, seqs });
    }
}
