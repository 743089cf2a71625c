//! Client handling and exactly-once execution [TR §5.7, Figs 12, 13; spec §8].
//!
//! The [`ClientTable`] is the per-client state of TR Fig 2 as one type: the pending updates of
//! this server's own clients, the update queue, `last_executed` (the exactly-once table, with each
//! client's last result) and `last_enqueued`, plus the replies on their way to local clients. The
//! replica half of this file is the client side of the protocol: accepting updates from local
//! clients, forwarding them to the leader, queueing them for proposal and the update timer.

use super::sessions::{is_reserved, Sessions};
use super::*;

/// A local client's update not yet executed, and when to send it to the leader again.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) update: ClientUpdate,
    pub(super) next_resend: Time,
    /// When it became pending here (for diagnosis only: not part of the fingerprint).
    pub(super) since: Time,
}

/// What [`ClientTable::enqueue`] did with an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Enqueued {
    /// Queued for proposal.
    Queued,
    /// Already executed, queued or bound: nothing to do.
    Refused,
    /// The queue is full.
    Full,
}

/// Per-client state [TR Fig 2; spec §8].
#[derive(Clone, Debug, Default)]
pub(super) struct ClientTable {
    /// Updates of this server's own clients not yet executed (`pending_updates`).
    pending: FxHashMap<ClientId, Pending>,
    /// Updates waiting for a slot at this server (`update_queue`).
    queue: super::queue::UpdateQueue,
    /// The exactly-once table (`last_executed`), with session expiry.
    pub(super) sessions: Sessions,
    /// Per client, the highest timestamp queued or bound at this server in the current view.
    last_enqueued: FxHashMap<ClientId, Timestamp>,
    /// Replies ready for local clients.
    replies: VecDeque<ClientReply>,
}

impl ClientTable {
    /// An empty table whose sessions follow `rules`.
    pub(super) fn new(rules: Option<crate::config::SessionRules>) -> ClientTable {
        ClientTable {
            sessions: Sessions::new(rules),
            ..ClientTable::default()
        }
    }

    /// Whether `u` (or a later update of its client) was executed.
    pub(super) fn is_executed(&self, u: &ClientUpdate) -> bool {
        self.is_done(u.client_id, u.timestamp)
    }

    /// Whether `client` executed an update with timestamp `ts` or later.
    pub(super) fn is_done(&self, client: ClientId, ts: Timestamp) -> bool {
        self.sessions.is_done(client, ts)
    }

    /// The timestamp of `client`'s last executed update.
    pub(super) fn executed_timestamp(&self, client: ClientId) -> Option<Timestamp> {
        self.sessions.last(client).map(|(ts, _)| ts)
    }

    /// The exactly-once reply: answers `client`'s update `ts` from the table, if that is the
    /// update the table last executed for it (a later one executed means the client moved on).
    pub(super) fn reply(&mut self, client: ClientId, ts: Timestamp) {
        if let Some((done, result)) = self.sessions.last(client) {
            if done == ts {
                self.replies.push_back(ClientReply {
                    client_id: client,
                    timestamp: ts,
                    result: result.clone(),
                    outcome: ReplyOutcome::Applied,
                });
            } else if ts < done {
                self.reply_outcome(client, ts, ReplyOutcome::Superseded(done));
            }
        }
    }

    /// Answers `client`'s update `ts` with an outcome that has no stored result (a session opened
    /// or expired).
    pub(super) fn reply_outcome(&mut self, client: ClientId, ts: Timestamp, outcome: ReplyOutcome) {
        self.replies.push_back(ClientReply {
            client_id: client,
            timestamp: ts,
            result: Bytes::new(),
            outcome,
        });
    }

    /// The pending update of `client`, if any.
    pub(super) fn pending(&self, client: ClientId) -> Option<&ClientUpdate> {
        self.pending.get(&client).map(|p| &p.update)
    }

    /// Every pending update, in the table's order.
    pub(super) fn pending_updates(&self) -> impl Iterator<Item = &ClientUpdate> {
        self.pending.values().map(|p| &p.update)
    }

    /// Makes `u` its client's pending update, to be resent at `next_resend`.
    pub(super) fn add_pending(&mut self, u: ClientUpdate, now: Time, next_resend: Time) {
        self.pending.insert(
            u.client_id,
            Pending {
                update: u,
                next_resend,
                since: now,
            },
        );
    }

    /// Since when the oldest pending update waits.
    pub(super) fn oldest_pending_since(&self) -> Option<Time> {
        self.pending.values().map(|p| p.since).min()
    }

    /// `client`'s update `ts` executed: its pending copy (that one or an earlier one) is done.
    /// Returns whether there was one.
    pub(super) fn finish_pending(&mut self, client: ClientId, ts: Timestamp) -> bool {
        let was_pending = self
            .pending
            .get(&client)
            .is_some_and(|p| p.update.timestamp <= ts);
        if was_pending {
            self.pending.remove(&client);
        }
        was_pending
    }

    /// Pending updates the table now lists as executed (a snapshot covered them): removed, and
    /// answered from the table. Returns their names, for deletion from storage.
    pub(super) fn answer_executed_pending(&mut self) -> Vec<UpdateId> {
        let done: Vec<ClientId> = self
            .pending
            .iter()
            .filter(|(_, p)| self.is_executed(&p.update))
            .map(|(c, _)| *c)
            .collect();
        let mut finished = Vec::with_capacity(done.len());
        for c in done {
            if let Some(p) = self.pending.remove(&c) {
                self.reply(c, p.update.timestamp);
                finished.push(p.update.id());
            }
        }
        finished
    }

    /// The pending updates due for a resend at `now` (all of them when `now` is `None`), each
    /// rescheduled for `next`.
    pub(super) fn take_resends(&mut self, now: Option<Time>, next: Time) -> Vec<ClientUpdate> {
        self.pending
            .values_mut()
            .filter(|p| now.is_none_or(|now| p.next_resend <= now))
            .map(|p| {
                p.next_resend = next;
                p.update.clone()
            })
            .collect()
    }

    /// Queues `u` for proposal unless it is executed, already queued or bound in this view
    /// (`last_enqueued`), or bound before it (`bound`).
    pub(super) fn enqueue(
        &mut self,
        u: ClientUpdate,
        (max_queue, max_bytes): (usize, usize),
        bound: impl Fn(&UpdateId) -> bool,
    ) -> Enqueued {
        let c = u.client_id;
        // A registration is not tracked in `last_enqueued`: a nonce may register again once its
        // session is gone, and a second execution of a live one's is a duplicate anyway.
        let registration = u.timestamp == Timestamp(0) && self.sessions.rules().is_some();
        if self.is_executed(&u)
            || (!registration
                && self
                    .last_enqueued
                    .get(&c)
                    .is_some_and(|ts| u.timestamp <= *ts))
            || bound(&u.id())
            || (registration && self.is_queued(u.id()))
        {
            return Enqueued::Refused;
        }
        if !self.queue.fits(&u, max_queue, max_bytes) {
            return Enqueued::Full;
        }
        if !registration {
            self.last_enqueued.insert(c, u.timestamp);
        }
        self.queue.push_back(u);
        Enqueued::Queued
    }

    /// Puts an entry the leader makes itself (a clock entry) at the head of the queue.
    pub(super) fn queue_first(&mut self, u: ClientUpdate) {
        self.queue.push_front(u);
    }

    /// Whether an update with this id is queued.
    pub(super) fn is_queued(&self, id: UpdateId) -> bool {
        self.queue.iter().any(|q| q.id() == id)
    }

    /// The next queued update that is neither executed nor in `bound`.
    pub(super) fn pop_unbound(
        &mut self,
        bound: impl Fn(&UpdateId) -> bool,
    ) -> Option<ClientUpdate> {
        while let Some(u) = self.queue.pop_front() {
            if self.is_executed(&u) || bound(&u.id()) {
                continue;
            }
            return Some(u);
        }
        None
    }

    /// A leader's new view: drops from the queue what is bound (`bound`), executed, or (for a
    /// forwarded update) older than what its client already had queued here.
    pub(super) fn drop_stale_from_queue(&mut self, me: NodeId, bound: impl Fn(&UpdateId) -> bool) {
        let queue = self.queue.take();
        for u in queue {
            let c = u.client_id;
            let is_bound = bound(&u.id());
            let stale = is_bound
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
                if !is_bound {
                    let e = self.last_enqueued.entry(c).or_insert(u.timestamp);
                    if *e < u.timestamp {
                        *e = u.timestamp;
                    }
                }
            } else {
                self.queue.push_back(u);
            }
        }
    }

    /// A new view is attempted or prepared: nothing is queued or bound in it yet.
    pub(super) fn forget_enqueued(&mut self) {
        self.last_enqueued.clear();
    }

    /// Empties the queue (a non-leader forwards instead).
    pub(super) fn clear_queue(&mut self) {
        self.queue.clear();
    }

    /// Pending and queued counts.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.pending.len(), self.queue.len())
    }

    /// Whether any local update is pending or queued.
    pub(super) fn has_work(&self) -> bool {
        !self.pending.is_empty() || !self.queue.is_empty()
    }

    /// The next reply for a local client.
    pub(super) fn pop_reply(&mut self) -> Option<ClientReply> {
        self.replies.pop_front()
    }

    /// Feeds the table to a fingerprint hasher, times relative to `now` (see `fingerprint.rs`).
    pub(super) fn hash_at<H: std::hash::Hasher>(
        &self,
        rel: impl Fn(Time) -> Option<u64>,
        h: &mut H,
    ) {
        use std::hash::Hash;
        let ClientTable {
            pending,
            queue,
            sessions,
            last_enqueued,
            replies,
        } = self;
        queue.hash(h);
        // Hash maps iterate in an order that depends on their insertion history: sort first.
        sessions.hash_into(h);
        let mut enqueued: Vec<_> = last_enqueued.iter().collect();
        enqueued.sort_unstable();
        enqueued.hash(h);
        let mut pend: Vec<_> = pending
            .iter()
            .map(|(c, p)| (c, &p.update, rel(p.next_resend)))
            .collect();
        pend.sort_unstable_by_key(|(c, _, _)| **c);
        pend.hash(h);
        replies.hash(h);
    }
}

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
        if is_reserved(update.client_id) {
            return Err(ClientUpdateError::ReservedClient(update.client_id));
        }
        let c = update.client_id;
        if self.clients.sessions.rules().is_some() {
            if update.timestamp == Timestamp(0) {
                if c.0 >= SESSION_ID_BASE {
                    return Err(ClientUpdateError::RegistrationNamesSession(c));
                }
                if self.clients.sessions.registered(c).is_some() {
                    // A retried registration whose session is open: answered from the table.
                    self.reply_executed(c, update.timestamp);
                    return Ok(());
                }
            } else if self.session_surely_gone(c) {
                // Answered here, without a log entry: this server executed past the session's
                // registration and no longer holds it (or the id was never a session's).
                self.metrics.expired_session_updates += 1;
                self.clients
                    .reply_outcome(c, update.timestamp, ReplyOutcome::SessionExpired);
                return Ok(());
            }
        }
        if self.clients.pending(c).is_none() && self.clients.counts().0 >= self.config.max_pending {
            return Err(ClientUpdateError::TooManyPending(self.config.max_pending));
        }
        if let Some(ts) = self.clients.executed_timestamp(c) {
            if update.timestamp <= ts {
                // A retry of an executed update is answered from the exactly-once table.
                self.clients.reply(c, update.timestamp);
                return Ok(());
            }
        }
        if let Some(p) = self.clients.pending(c) {
            if update.timestamp < p.timestamp {
                return Ok(());
            }
            if update.timestamp == p.timestamp {
                // A retry of a pending update: nudge it along.
                if self.role.state() == ServerState::RegNonLeader {
                    let leader = self.installed_leader();
                    let u = p.clone();
                    self.send_durable(Destination::Node(leader), Message::ClientUpdate(u));
                }
                return Ok(());
            }
        }
        match self.role.state() {
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

    /// Whether `c` names no session this server could still hold: not a session id at all, or
    /// one whose registration slot is executed here while the table no longer holds it.
    fn session_surely_gone(&self, c: ClientId) -> bool {
        c.0 < SESSION_ID_BASE
            || (c.0 - SESSION_ID_BASE <= self.local_aru.0 && !self.clients.sessions.holds(c))
    }

    /// Queues `u` for proposal (see [`ClientTable::enqueue`]); counts a full queue.
    pub(super) fn enqueue(&mut self, u: ClientUpdate) -> bool {
        let bounds = (self.config.max_queue, self.config.max_queue_bytes);
        match self
            .clients
            .enqueue(u, bounds, |id| self.role.bound_at_install(id))
        {
            Enqueued::Queued => true,
            Enqueued::Refused => false,
            Enqueued::Full => {
                self.metrics.dropped_queue_full += 1;
                false
            }
        }
    }

    fn add_to_pending(&mut self, u: ClientUpdate) {
        self.outbox.persist_pending(u.clone());
        let next_resend = self.now + self.config.update_resend;
        self.clients.add_pending(u, self.now, next_resend);
    }

    pub(super) fn on_forwarded_update(&mut self, from: NodeId, u: ClientUpdate) {
        if u.server_id != from || is_reserved(u.client_id) {
            self.metrics.dropped_invalid += 1;
            return;
        }
        if self.role.state() != ServerState::RegLeader {
            self.metrics.dropped_conflict += 1;
            return;
        }
        if self.enqueue(u) {
            self.make_progress();
        }
    }

    pub(super) fn enqueue_unbound_pending(&mut self) {
        let candidates: Vec<ClientUpdate> = self
            .clients
            .pending_updates()
            .filter(|u| !self.role.bound_at_install(&u.id()))
            .cloned()
            .collect();
        for u in candidates {
            if !self.clients.is_queued(u.id()) {
                self.enqueue(u);
            }
        }
    }

    pub(super) fn remove_bound_from_queue(&mut self) {
        self.clients
            .drop_stale_from_queue(self.me, |id| self.role.bound_at_install(id));
    }

    /// The update timer [TR Fig 13]: resend pending updates to the leader; a leader re-enqueues
    /// its own pending updates that are neither queued nor bound.
    pub(super) fn resend_pending(&mut self, now: Time) {
        let due = self
            .clients
            .take_resends(Some(now), now + self.config.update_resend);
        if due.is_empty() {
            return;
        }
        match self.role.state() {
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
