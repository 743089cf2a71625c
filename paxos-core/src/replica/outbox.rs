//! Durability and sending: persist batches, messages held for a batch, aggregation [TR §4.3, §7.3; spec §9].

use super::*;

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    pub(super) fn persist_view(&mut self) {
        if self.config.durability == Durability::None {
            return;
        }
        self.open_batch.view = Some(ViewRecord {
            last_attempted: self.last_attempted,
            last_installed: self.last_installed,
        });
        self.open_batch.sync |= self.config.durability == Durability::Sync;
    }

    pub(super) fn record_accepted(&mut self, seq: Seq, view: View, update: &ClientUpdate) {
        let batch = if self.config.durability == Durability::None {
            0
        } else {
            self.last_closed + 1
        };
        if let Some(slot) = self.history.get_mut(seq) {
            slot.accepted = Some((view, batch));
        }
        if self.config.durability == Durability::None {
            return;
        }
        self.open_batch.accepted.push(AcceptedProposal {
            seq,
            view,
            update: update.clone(),
        });
        self.open_batch.sync |= self.config.durability == Durability::Sync;
    }

    /// The batch a message created now depends on (0: nothing to wait for).
    pub(super) fn dependency(&self) -> u64 {
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::SendBeforeDurable) {
            return 0;
        }
        if self.config.durability != Durability::Sync {
            return 0;
        }
        if self.open_batch.sync {
            self.last_closed + 1
        } else {
            self.last_closed_sync
        }
    }

    pub(super) fn hold_self_accept(&mut self, view: View, seq: Seq) {
        #[allow(unused_mut)]
        let mut dep = self.dependency();
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::SelfAcceptBeforeDurable) {
            dep = 0;
        }
        if dep <= self.persisted {
            self.count_accept(view, seq, self.me.index());
        } else {
            self.held_self_accepts.push_back((dep, view, seq));
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

    /// Packs buffered proposals and accepts into messages (aggregation). Every entry keeps the
    /// view it was made in, so a view installed between the input and the drain cannot relabel
    /// it.
    pub(super) fn flush(&mut self) {
        if !self.agg_proposals.is_empty() {
            let capacity = self.agg_proposals.capacity();
            let items = std::mem::replace(&mut self.agg_proposals, Vec::with_capacity(capacity));
            let led = (self.state == ServerState::RegLeader).then_some(self.last_installed);
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
        if !self.agg_accepts.is_empty() {
            let mut entries = std::mem::take(&mut self.agg_accepts);
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
        let dep = self.dependency();
        for &seq in &seqs {
            let accepted = self.history.get(seq).and_then(|s| s.accepted);
            assert!(
                accepted.is_some_and(|(v, batch)| v == view
                    && (self.config.durability != Durability::Sync
                        || batch <= dep.max(self.persisted))),
                "{}: Accept({view}) for slot {seq}, whose accepted proposal is {accepted:?} \
                 (message waits for batch {dep}, durable through {})",
                self.me,
                self.persisted
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
