//! Client handling and exactly-once execution [TR §5.7, Figs 12, 13; spec §8].

use super::*;

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    /// An update from one of this server's own clients [TR Fig 12].
    pub fn handle_client_update(
        &mut self,
        now: Time,
        update: ClientUpdate,
    ) -> Result<(), ClientUpdateError> {
        self.now = now;
        if update.server_id != self.me {
            return Err(ClientUpdateError::WrongServer {
                named: update.server_id,
                me: self.me,
            });
        }
        if update.client_id == NOOP_CLIENT {
            return Err(ClientUpdateError::ReservedClient(update.client_id));
        }
        let c = update.client_id;
        if let Some((ts, result)) = self.last_executed.get(&c) {
            if update.timestamp <= *ts {
                if update.timestamp == *ts {
                    // A retry of an executed update: answer from the exactly-once table.
                    self.replies.push_back(ClientReply {
                        client_id: c,
                        timestamp: *ts,
                        result: result.clone(),
                    });
                }
                return Ok(());
            }
        }
        if let Some(p) = self.pending.get(&c) {
            if update.timestamp < p.update.timestamp {
                return Ok(());
            }
            if update.timestamp == p.update.timestamp {
                // A retry of a pending update: nudge it along.
                if self.state == ServerState::RegNonLeader {
                    let leader = self.installed_leader();
                    let u = p.update.clone();
                    self.send_durable(Destination::Node(leader), Message::ClientUpdate(u));
                }
                return Ok(());
            }
        }
        match self.state {
            ServerState::LeaderElection => {
                if self.enqueue(update.clone()) {
                    self.add_to_pending(update);
                }
            }
            ServerState::RegNonLeader => {
                self.add_to_pending(update.clone());
                let leader = self.installed_leader();
                self.send_durable(Destination::Node(leader), Message::ClientUpdate(update));
            }
            ServerState::RegLeader => {
                if self.enqueue(update.clone()) {
                    self.add_to_pending(update);
                    self.make_progress();
                }
            }
        }
        Ok(())
    }

    pub(super) fn enqueue(&mut self, u: ClientUpdate) -> bool {
        let c = u.client_id;
        if self.is_executed(&u)
            || self
                .last_enqueued
                .get(&c)
                .is_some_and(|ts| u.timestamp <= *ts)
            || self.bound_at_install.contains(&u.id())
        {
            return false;
        }
        if self.update_queue.len() >= self.config.max_queue {
            self.metrics.dropped_queue_full += 1;
            return false;
        }
        self.last_enqueued.insert(c, u.timestamp);
        self.update_queue.push_back(u);
        true
    }

    pub(super) fn add_to_pending(&mut self, u: ClientUpdate) {
        self.outbox.persist_pending(u.clone());
        self.pending.insert(
            u.client_id,
            Pending {
                update: u,
                next_resend: self.now + self.config.update_resend,
            },
        );
    }

    pub(super) fn on_forwarded_update(&mut self, from: NodeId, u: ClientUpdate) {
        if u.server_id != from || u.client_id == NOOP_CLIENT {
            self.metrics.dropped_invalid += 1;
            return;
        }
        if self.state != ServerState::RegLeader {
            self.metrics.dropped_conflict += 1;
            return;
        }
        if self.enqueue(u) {
            self.make_progress();
        }
    }

    pub(super) fn enqueue_unbound_pending(&mut self) {
        let candidates: Vec<ClientUpdate> = self
            .pending
            .values()
            .map(|p| p.update.clone())
            .filter(|u| !self.bound_at_install.contains(&u.id()))
            .collect();
        for u in candidates {
            if !self.update_queue.iter().any(|q| q.id() == u.id()) {
                self.enqueue(u);
            }
        }
    }

    pub(super) fn remove_bound_from_queue(&mut self) {
        let me = self.me;
        let queue = std::mem::take(&mut self.update_queue);
        for u in queue {
            let c = u.client_id;
            let bound = self.bound_at_install.contains(&u.id());
            let stale = bound
                || self.is_executed(&u)
                || (u.server_id != me
                    && self
                        .last_enqueued
                        .get(&c)
                        .is_some_and(|ts| u.timestamp <= *ts));
            if stale {
                // An update bound only by a stale proposal stays out of `last_enqueued`: once
                // that slot is ordered with another update (or compacted) it leaves
                // `bound_at_install` and must be accepted again (sim: highest-id N = 5 seed 5301).
                if !bound {
                    let e = self.last_enqueued.entry(c).or_insert(u.timestamp);
                    if *e < u.timestamp {
                        *e = u.timestamp;
                    }
                }
            } else {
                self.update_queue.push_back(u);
            }
        }
    }

    /// The update timer [TR Fig 13]: resend pending updates to the leader; a leader re-enqueues
    /// its own pending updates that are neither queued nor bound.
    pub(super) fn resend_pending(&mut self, now: Time) {
        let due: Vec<ClientUpdate> = self
            .pending
            .values_mut()
            .filter(|p| p.next_resend <= now)
            .map(|p| {
                p.next_resend = now + self.config.update_resend;
                p.update.clone()
            })
            .collect();
        if due.is_empty() {
            return;
        }
        match self.state {
            ServerState::RegNonLeader => {
                let leader = self.installed_leader();
                for u in due {
                    self.send_durable(Destination::Node(leader), Message::ClientUpdate(u));
                }
            }
            ServerState::RegLeader => {
                for u in due {
                    // Rejected when queued or bound in this view already (last_enqueued) or
                    // bound before it; accepted when a full queue dropped it earlier.
                    self.enqueue(u);
                }
                self.make_progress();
            }
            ServerState::LeaderElection => {}
        }
    }
}
