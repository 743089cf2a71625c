//! The Prepare phase of a view change [TR §5.4, Figs 7–9; spec §6].

use super::*;

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    pub(super) fn shift_to_prepare_phase(&mut self) {
        let v = self.last_attempted;
        debug_assert_eq!(v.leader(self.n), self.me);
        debug_assert!(v > self.last_installed || self.role.state() == ServerState::LeaderElection);
        self.last_installed = v;
        self.role = Role::Election(Some(Preparing {
            view: v,
            aru: self.local_aru,
            oks: 1 << self.me.index(),
            floor: self.local_aru,
            covered: vec![None; self.n],
        }));
        self.clients.forget_enqueued();
        self.persist_view();
        self.send_durable(
            Destination::All,
            Message::Prepare {
                view: v,
                local_aru: self.local_aru,
            },
        );
        self.next_proposal_resend = self.now + self.config.proposal_resend;
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::SkipPrepare) {
            self.shift_to_reg_leader();
            return;
        }
        if self.prepared() {
            self.shift_to_reg_leader();
        }
    }

    /// Whether the Prepare phase in progress has a majority of PrepareOks.
    fn prepared(&self) -> bool {
        self.role
            .preparing()
            .is_some_and(|p| p.count() >= self.majority)
    }

    pub(super) fn on_prepare(&mut self, from: NodeId, view: View, aru: Seq) {
        self.see_view(view);
        if from != view.leader(self.n) {
            self.metrics.dropped_invalid += 1;
            return;
        }
        // A server that restarted after its promise of `view` became durable but before its
        // PrepareOk left is in leader election with exactly that view installed and attempted:
        // it answers the retransmitted Prepare as it would have (oracle strategies keep the same
        // leader, which would otherwise wait for this PrepareOk forever; sim seed 6438).
        let restarted_promise = view == self.last_installed
            && view == self.last_attempted
            && self.role.state() == ServerState::LeaderElection;
        let new_view = restarted_promise
            || view > self.last_installed
                && (view == self.last_attempted
                    || (view > self.last_attempted && {
                        let ctx = self.ctx();
                        self.election.accepts_prepare(from, view, &ctx)
                    }));
        if new_view {
            // Non-leader answering a Prepare for a view it has not installed yet.
            self.role = Role::Election(None);
            self.last_attempted = view;
            self.shift_to_reg_nonleader();
            self.send_prepare_ok(from, view, aru);
        } else if view == self.last_installed && self.role.state() == ServerState::RegNonLeader {
            // Receiver-driven retransmission; built on demand (pitfall 1).
            self.send_prepare_ok(from, view, aru);
        } else {
            self.metrics.dropped_conflict += 1;
        }
    }

    pub(super) fn send_prepare_ok(&mut self, leader: NodeId, view: View, leader_aru: Seq) {
        let floor = leader_aru.max(self.local_aru);
        #[allow(unused_mut)]
        let mut data_list = self.data_list(floor);
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::PrepareOkOmitsAccepted) {
            if let Some(i) = data_list
                .iter()
                .rposition(|d| matches!(d, DataItem::Proposal(_)))
            {
                data_list.remove(i);
            }
        }
        // Cut into parts of at most `max_message_bytes` of updates (at least one item each), so
        // that a full window of large values still reaches the leader.
        let mut parts: Vec<Vec<DataItem>> = vec![Vec::new()];
        let mut bytes = 0usize;
        for item in data_list {
            let size = match &item {
                DataItem::Proposal(p) => p.update.wire_size() + 16,
                DataItem::Ordered(o) => o.update.wire_size() + 8,
            };
            let last = parts.last_mut().expect("one part at least");
            if !last.is_empty() && bytes + size > self.config.max_message_bytes {
                parts.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            self.metrics.prepare_ok_bytes_sent += size as u64;
            parts.last_mut().expect("one part at least").push(item);
        }
        let count = parts.len();
        self.metrics.prepare_ok_parts_sent += count as u64;
        let mut after = floor;
        for (k, data_list) in parts.into_iter().enumerate() {
            let through = (k + 1 < count).then(|| data_list.last().map_or(after, item_seq));
            let part = PrepareOkPart { after, through };
            if let Some(t) = through {
                after = t;
            }
            self.send_durable(
                Destination::Node(leader),
                Message::PrepareOk {
                    view,
                    local_aru: self.local_aru,
                    data_list,
                    part,
                },
            );
        }
    }

    /// Everything known above `floor`: ordered updates, else the latest accepted proposal.
    pub(super) fn data_list(&self, floor: Seq) -> Vec<DataItem> {
        self.history
            .iter_above(floor)
            .filter_map(|(seq, slot)| {
                if let Some(u) = &slot.ordered {
                    Some(DataItem::Ordered(OrderedUpdate {
                        seq,
                        update: u.clone(),
                    }))
                } else {
                    slot.proposal.as_ref().map(|(v, u)| {
                        DataItem::Proposal(AcceptedProposal {
                            seq,
                            view: *v,
                            update: u.clone(),
                        })
                    })
                }
            })
            .collect()
    }

    pub(super) fn on_prepare_ok(
        &mut self,
        from: NodeId,
        view: View,
        their_aru: Seq,
        data: Vec<DataItem>,
        part: PrepareOkPart,
    ) {
        let me = self.me;
        let n = self.n;
        let last_attempted = self.last_attempted;
        let Some(p) = (match &mut self.role {
            Role::Election(Some(p))
                if p.view == view && view == last_attempted && view.leader(n) == me =>
            {
                Some(p)
            }
            _ => None,
        }) else {
            self.metrics.dropped_conflict += 1;
            return;
        };
        let bit = 1 << from.index();
        if p.oks & bit != 0 {
            return;
        }
        // Parts join on to what arrived before without a gap: the first covers everything above
        // the sender's floor, `max(prepare aru, their aru)`; a part that would leave a gap waits
        // for the sender's next retransmission (receiver-driven, on each resent Prepare).
        let floor = p.aru.max(their_aru);
        let covered = p.covered[from.index()].map_or(floor, |c| c.max(floor));
        let outside = |d: &DataItem| {
            item_seq(d) <= part.after || part.through.is_some_and(|t| item_seq(d) > t)
        };
        if part.after > covered || data.iter().any(outside) {
            if part.after > covered {
                self.metrics.prepare_ok_parts_out_of_order += 1;
            } else {
                self.metrics.dropped_invalid += 1;
            }
            return;
        }
        #[cfg(feature = "planted-bugs")]
        let count_now = part.is_last()
            || self.config.planted_bug == Some(crate::config::PlantedBug::PrepareOkCountsFirstPart);
        #[cfg(not(feature = "planted-bugs"))]
        let count_now = part.is_last();
        let Role::Election(Some(p)) = &mut self.role else {
            return;
        };
        p.covered[from.index()] = Some(part.through.map_or(Seq(u64::MAX), |t| covered.max(t)));
        if count_now {
            p.oks |= bit;
        }
        for item in data {
            match item {
                DataItem::Proposal(p) => {
                    if p.view <= view {
                        self.apply_proposal(p.seq, p.view, p.update);
                    } else {
                        self.metrics.dropped_invalid += 1;
                    }
                }
                DataItem::Ordered(o) => self.apply_ordered(o.seq, o.update),
            }
        }
        self.note_peer_aru(from, their_aru);
        if let Role::Election(Some(p)) = &mut self.role {
            p.floor = p.floor.max(their_aru);
        }
        self.make_progress();
        if self.prepared() {
            self.shift_to_reg_leader();
        }
    }

    pub(super) fn shift_to_reg_leader(&mut self) {
        let floor = self.role.preparing().map_or(Seq(0), |p| p.floor);
        debug_assert!(
            self.role.preparing().is_some(),
            "installed without a Prepare phase"
        );
        let max_constrained = self
            .history
            .iter_above(self.local_aru)
            .filter(|(_, s)| s.proposal.is_some() || s.ordered.is_some())
            .map(|(seq, _)| seq)
            .last()
            .unwrap_or(Seq(0));
        self.role = Role::Leader(Leading {
            floor,
            floor_wait_since: None,
            max_constrained,
            bound: self.bound_above_aru(),
            last_proposed: self.local_aru,
            aru_at_last_resend: self.local_aru,
            clock_mark: self.now,
            clock_unexecuted: None,
        });
        self.regular_view = self.last_installed;
        self.metrics.views_installed += 1;
        self.enqueue_unbound_pending();
        self.remove_bound_from_queue();
        let ctx = self.ctx();
        self.election.handle_view_installed(self.now, &ctx);
        self.drain_election();
        self.make_progress();
    }

    /// The updates bound to slots above the aru. A slot already ordered binds its ordered update,
    /// whatever stale proposal it also keeps (a lagging leader's own from an earlier view, say):
    /// listing such a stale proposal would refuse its update for the whole view.
    pub(super) fn bound_above_aru(&self) -> FxHashSet<UpdateId> {
        self.history
            .iter_above(self.local_aru)
            .filter_map(|(_, s)| match (&s.ordered, &s.proposal) {
                (Some(u), _) | (None, Some((_, u))) => Some(u.id()),
                (None, None) => None,
            })
            .collect()
    }

    pub(super) fn shift_to_reg_nonleader(&mut self) {
        self.role = Role::NonLeader;
        self.last_installed = self.last_attempted;
        self.regular_view = self.last_installed;
        self.see_view(self.last_installed);
        self.clients.clear_queue();
        self.metrics.views_installed += 1;
        self.persist_view();
        // Pending local updates go to the new leader right away (the update timer would anyway).
        let leader = self.installed_leader();
        let now = self.now;
        let resend = self
            .clients
            .take_resends(None, now + self.config.update_resend);
        for u in resend {
            self.send_durable(Destination::Node(leader), Message::ClientUpdate(u));
        }
        let ctx = self.ctx();
        self.election.handle_view_installed(self.now, &ctx);
        self.drain_election();
    }
}

/// The slot a data-list item is about.
fn item_seq(d: &DataItem) -> Seq {
    match d {
        DataItem::Proposal(p) => p.seq,
        DataItem::Ordered(o) => o.seq,
    }
}
