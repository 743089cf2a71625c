//! The PSB ordering engine: one server's replica [TR §5, Figs 2–14; spec §§4–12].
//!
//! A [`Replica`] is fed inputs (`handle_*`) and drained of effects (`poll_*`). Its call contract:
//!
//! 1. Build it with [`Replica::new`] from the [`DurableState`] storage recovered (the default state
//!    for a fresh server).
//! 2. Feed every input: [`Replica::handle_message`], [`Replica::handle_client_update`],
//!    [`Replica::handle_tick`] (periodically; all timers run from it) and
//!    [`Replica::handle_persisted`].
//! 3. After a round of inputs, drain [`Replica::poll_persist`] (write each batch, in order),
//!    [`Replica::poll_message`], [`Replica::poll_client_reply`] and, if enabled,
//!    [`Replica::poll_executed`]. With [`Durability::Sync`] a message that depends on a batch is
//!    only released by `poll_message` after `handle_persisted` reports that batch durable; the core
//!    never waits on a write that no message depends on.
//!
//! Aggregation happens between a round of inputs and the next drain: proposals and accepts created
//! in the meantime are packed into as few messages as `max_message_bytes` allows.

use crate::config::{Config, ConfigError, Durability};
use crate::durable::{BatchId, DurableState, PersistBatch, ViewRecord};
use crate::election::{ElectionAction, ElectionContext, LeaderElection, ServerState};
use crate::fxmap::{FxHashMap, FxHashSet};
use crate::history::History;
use crate::message::{
    AcceptedProposal, ClientRecord, ClientReply, ClientUpdate, DataItem, Message, OrderedUpdate,
    ProposalItem, SeqRange, Snapshot,
};
use crate::state_machine::StateMachine;
use crate::types::{
    ClientId, Destination, NodeId, Seq, Time, Timestamp, UpdateId, View, MAX_WIRE_INDEX,
};
use bytes::Bytes;
use std::collections::VecDeque;
use thiserror::Error;

mod fingerprint;

/// The client id reserved for no-op fillers (see docs/architecture.md, "Deviations").
pub const NOOP_CLIENT: ClientId = ClientId(u64::MAX);

/// Hard bound on how far above the aru any slot may be created, whatever a peer sends.
const MAX_SLOTS_AHEAD: u64 = 1 << 20;

/// Whether every view and slot a message names is at most [`MAX_WIRE_INDEX`]. Election payloads
/// are opaque here; the strategy checks its own, and the core refuses actions beyond the bound.
fn in_bounds(m: &Message) -> bool {
    let ok = |x: u64| x <= MAX_WIRE_INDEX;
    let update_ok = |seq: Seq| ok(seq.0);
    match m {
        Message::ClientUpdate(_) | Message::Election(_) => true,
        Message::Prepare { view, local_aru } => ok(view.0) && ok(local_aru.0),
        Message::PrepareOk {
            view,
            local_aru,
            data_list,
        } => {
            ok(view.0)
                && ok(local_aru.0)
                && data_list.iter().all(|d| match d {
                    DataItem::Proposal(p) => ok(p.view.0) && update_ok(p.seq),
                    DataItem::Ordered(o) => update_ok(o.seq),
                })
        }
        Message::Proposal { view, items } => ok(view.0) && items.iter().all(|i| update_ok(i.seq)),
        Message::Accept { view, seqs } => {
            ok(view.0) && seqs.iter().all(|r| ok(r.start.0) && ok(r.end.0))
        }
        Message::Alive {
            local_aru,
            last_installed,
        } => ok(local_aru.0) && ok(last_installed.0),
        Message::ReconRequest { from, to } => ok(from.0) && ok(to.0),
        Message::ReconReply { updates, .. } => updates.iter().all(|o| update_ok(o.seq)),
        Message::SnapshotTransfer(s) => ok(s.seq.0),
    }
}

/// The quorum size this replica counts PrepareOks and accepts to: ⌊N/2⌋ + 1.
fn quorum(config: &Config) -> usize {
    #[cfg(feature = "planted-bugs")]
    if config.planted_bug == Some(crate::config::PlantedBug::MinorityQuorum) {
        return (config.servers / 2).max(1);
    }
    config.majority()
}

/// One executed slot, reported by [`Replica::poll_executed`] when `record_executions` is on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Executed {
    /// The slot.
    pub seq: Seq,
    /// The update ordered in it.
    pub update: ClientUpdate,
    /// False when the update was a duplicate of one already executed (or a no-op) and was skipped.
    pub applied: bool,
}

/// A picture of a replica's role and positions, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This server.
    pub id: NodeId,
    /// Its role.
    pub state: ServerState,
    /// Last view attempted.
    pub last_attempted: View,
    /// Last view installed.
    pub last_installed: View,
    /// Every slot up to this one is executed here.
    pub local_aru: Seq,
    /// Highest slot this server proposed (leader only).
    pub last_proposed: Seq,
    /// Leader of the installed view, when not in leader election.
    pub leader: Option<NodeId>,
    /// Local client updates not yet executed.
    pub pending: usize,
    /// Updates queued at this server for proposal.
    pub queued: usize,
    /// Highest aru each peer announced (own aru at own index).
    pub peer_aru: Vec<Seq>,
}

/// Counters for observability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Slots executed.
    pub executed: u64,
    /// Executions skipped as duplicates or no-ops.
    pub duplicates_skipped: u64,
    /// Views installed (as leader or non-leader).
    pub views_installed: u64,
    /// Messages dropped by the conflict filter.
    pub dropped_conflict: u64,
    /// Messages dropped as invalid (non-member sender, impossible fields).
    pub dropped_invalid: u64,
    /// Election payloads that failed to decode.
    pub dropped_election: u64,
    /// Client updates dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Proposals ignored because they were beyond the accept window.
    pub dropped_outside_window: u64,
    /// Reconciliation requests sent.
    pub recon_requests: u64,
    /// Snapshots installed from peers.
    pub snapshots_installed: u64,
    /// Snapshots taken locally.
    pub snapshots_taken: u64,
    /// Persist batches produced.
    pub batches: u64,
    /// Proposal messages sent (each may carry many updates).
    pub proposal_messages: u64,
    /// Updates proposed.
    pub proposed_updates: u64,
    /// No-ops proposed to fill holes below constrained slots.
    pub noops_proposed: u64,
    /// Times a leader's floor wait expired (slots ordered at a PrepareOk sender stayed
    /// unreachable) and the election strategy was told the view is stalled.
    pub floor_wait_stalls: u64,
    /// Buffered accepts not sent because the slot was accepted again in a higher view (or
    /// compacted) before the drain.
    pub accepts_superseded: u64,
}

/// Why a client update was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClientUpdateError {
    /// The update names another server as its local server.
    #[error("update names server {named} but was submitted to {me}")]
    WrongServer {
        /// The server named.
        named: NodeId,
        /// This server.
        me: NodeId,
    },
    /// The client id is reserved.
    #[error("client id {0:?} is reserved")]
    ReservedClient(ClientId),
}

#[derive(Clone, Debug)]
struct Pending {
    update: ClientUpdate,
    next_resend: Time,
}

#[derive(Clone, Copy, Debug)]
struct PrepareState {
    view: View,
    aru: Seq,
}

/// One server of the PSB protocol.
#[derive(Clone)]
pub struct Replica<S: StateMachine, E: LeaderElection> {
    config: Config,
    me: NodeId,
    n: usize,
    majority: usize,
    sm: S,
    election: E,
    incarnation: u64,
    now: Time,

    // view
    state: ServerState,
    last_attempted: View,
    last_installed: View,
    /// The last view this server was regular in (leader with a PrepareOk majority, or non-leader).
    /// `last_installed` already names a view whose Prepare is still collecting answers; `Alive`
    /// announces this one instead, so an attempt that never gathered a majority is not reported
    /// as an installed view.
    regular_view: View,
    max_view_seen: View,

    // prepare
    prepare: Option<PrepareState>,
    prepare_oks: Vec<bool>,
    /// Leader: slots at or below it are ordered at some PrepareOk sender; never re-propose there.
    prepare_floor: Seq,
    /// Leader: highest slot holding a proposal when the view was prepared (holes below get no-ops).
    max_constrained: Seq,
    /// Leader: since when proposing has waited for slots at or below `prepare_floor`.
    floor_wait_since: Option<Time>,

    // ordering
    local_aru: Seq,
    last_proposed: Seq,
    max_seen_seq: Seq,
    history: History,
    /// Leader: updates bound to some slot above the aru when this view was installed. Together with
    /// `last_enqueued` (updates this leader bound during the view) it answers "is U bound?" without
    /// a map update per proposal; execution skips whatever slips through (pitfall 3b).
    bound_at_install: FxHashSet<UpdateId>,
    aru_at_last_resend: Seq,
    next_proposal_resend: Time,

    // clients
    update_queue: VecDeque<ClientUpdate>,
    last_executed: FxHashMap<ClientId, (Timestamp, Bytes)>,
    last_enqueued: FxHashMap<ClientId, Timestamp>,
    pending: FxHashMap<ClientId, Pending>,
    next_pending_scan: Time,

    // liveness and reconciliation
    peer_aru: Vec<Seq>,
    next_alive: Time,
    recon_target: Seq,
    behind_since: Option<Time>,
    recon_outstanding: Option<(NodeId, Time)>,
    recon_cursor: usize,
    /// The peer that answered the last reconciliation request with updates: asked again first.
    recon_peer: Option<usize>,
    /// Peers whose last reconciliation request timed out, one bit per server; cleared when they
    /// are heard from again. Their announced aru may be stale (crashed or cut off), so they are
    /// asked only when no other peer is ahead.
    recon_silent: u64,

    // compaction
    executed_since_snapshot: u64,
    latest_snapshot: Option<Snapshot>,

    // durability
    open_batch: PersistBatch,
    last_closed: u64,
    last_closed_sync: u64,
    persisted: u64,
    held: VecDeque<(u64, Destination, Message)>,
    held_self_accepts: VecDeque<(u64, View, Seq)>,

    // outputs
    /// Proposals made since the last drain, each with the view it was made in: packed into
    /// Proposal messages at the drain, and only while this server still leads that view.
    agg_proposals: Vec<(View, ProposalItem)>,
    /// Accepts made since the last drain, each with the view of the proposal accepted. The view
    /// travels with the entry because one round of inputs may install a higher view before the
    /// drain (issue #11): stamping the drain-time view would announce an accept that never
    /// happened.
    agg_accepts: Vec<(View, Seq)>,
    ready: VecDeque<(Destination, Message)>,
    replies: VecDeque<ClientReply>,
    executed: VecDeque<Executed>,
    metrics: Metrics,
}

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    /// Builds a replica from recovered durable state (use `DurableState::default()` for a fresh
    /// server) [TR §5.8, Fig 14]. The replica starts in leader election; the strategy decides what
    /// happens next.
    pub fn new(
        config: Config,
        state_machine: S,
        election: E,
        durable: DurableState,
        now: Time,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let n = config.servers;
        let me = config.id;
        let snapshot_seq = durable.snapshot_seq();
        let mut r = Replica {
            me,
            n,
            majority: quorum(&config),
            sm: state_machine,
            election,
            incarnation: durable.incarnation,
            now,
            state: ServerState::LeaderElection,
            last_attempted: durable.view.last_attempted,
            last_installed: durable.view.last_installed,
            // Durable state does not say whether a view this server led got its majority; it
            // reports the promise, as before a restart.
            regular_view: durable.view.last_installed,
            max_view_seen: durable.view.last_attempted.max(durable.view.last_installed),
            prepare: None,
            prepare_oks: vec![false; n],
            prepare_floor: Seq(0),
            max_constrained: Seq(0),
            floor_wait_since: None,
            local_aru: snapshot_seq,
            last_proposed: snapshot_seq,
            max_seen_seq: snapshot_seq,
            history: History::new(snapshot_seq.next()),
            bound_at_install: FxHashSet::default(),
            aru_at_last_resend: snapshot_seq,
            next_proposal_resend: now,
            update_queue: VecDeque::new(),
            last_executed: FxHashMap::default(),
            last_enqueued: FxHashMap::default(),
            pending: FxHashMap::default(),
            next_pending_scan: now,
            peer_aru: vec![Seq(0); n],
            next_alive: now,
            recon_target: Seq(0),
            behind_since: None,
            recon_outstanding: None,
            recon_cursor: me.index(),
            recon_peer: None,
            recon_silent: 0,
            executed_since_snapshot: 0,
            latest_snapshot: None,
            open_batch: PersistBatch::default(),
            last_closed: 0,
            last_closed_sync: 0,
            persisted: 0,
            held: VecDeque::new(),
            held_self_accepts: VecDeque::new(),
            agg_proposals: Vec::new(),
            agg_accepts: Vec::new(),
            ready: VecDeque::new(),
            replies: VecDeque::new(),
            executed: VecDeque::new(),
            metrics: Metrics::default(),
            config,
        };
        if let Some(snap) = durable.snapshot {
            if let Err(e) = r.sm.restore(&snap.app_state) {
                // Our own durable snapshot must restore; anything else is a corrupted store.
                panic!("durable snapshot at {} does not restore: {e}", snap.seq);
            }
            for c in &snap.clients {
                r.last_executed
                    .insert(c.client, (c.last_executed, c.last_result.clone()));
            }
            r.latest_snapshot = Some(snap);
        }
        for (seq, a) in durable.accepted {
            if let Some(slot) = r.history.get_or_create(seq) {
                slot.accepted = Some((a.view, 0));
                slot.proposal = Some((a.view, a.update.clone()));
                r.max_seen_seq = r.max_seen_seq.max(seq);
            }
        }
        for (seq, o) in durable.ordered {
            if let Some(slot) = r.history.get_or_create(seq) {
                slot.ordered = Some(o.update);
                r.max_seen_seq = r.max_seen_seq.max(seq);
            }
        }
        // Re-executing the recovered ordered prefix rebuilds the state machine (no replies: the
        // clients were answered before the crash or will retry).
        r.advance_aru(false);
        r.last_proposed = r.local_aru;
        for (client, update) in durable.pending {
            let done = r
                .last_executed
                .get(&client)
                .is_some_and(|(ts, _)| *ts >= update.timestamp);
            if !done && update.server_id == me {
                r.pending.insert(
                    client,
                    Pending {
                        update,
                        next_resend: now,
                    },
                );
            }
        }
        let ctx = r.ctx();
        r.election.handle_start(now, &ctx);
        r.drain_election();
        Ok(r)
    }

    // ------------------------------------------------------------------------------------------
    // Inputs
    // ------------------------------------------------------------------------------------------

    /// A message from server `from`, authenticated by the transport [TR Figs 4, 5].
    pub fn handle_message(&mut self, now: Time, from: NodeId, message: Message) {
        self.now = now;
        if from.index() >= self.n || from == self.me || !in_bounds(&message) {
            self.metrics.dropped_invalid += 1;
            return;
        }
        match message {
            Message::ClientUpdate(u) => self.on_forwarded_update(from, u),
            Message::Prepare { view, local_aru } => self.on_prepare(from, view, local_aru),
            Message::PrepareOk {
                view,
                local_aru,
                data_list,
            } => self.on_prepare_ok(from, view, local_aru, data_list),
            Message::Proposal { view, items } => self.on_proposal(from, view, items),
            Message::Accept { view, seqs } => self.on_accept(from, view, &seqs),
            Message::Alive {
                local_aru,
                last_installed,
            } => self.on_alive(from, local_aru, last_installed),
            Message::ReconRequest { from: lo, to: hi } => self.on_recon_request(from, lo, hi),
            Message::ReconReply { updates, complete } => {
                self.on_recon_reply(from, updates, complete)
            }
            Message::SnapshotTransfer(s) => self.on_snapshot(s),
            Message::Election(payload) => {
                let ctx = self.ctx();
                if self
                    .election
                    .handle_message(now, from, &payload, &ctx)
                    .is_err()
                {
                    self.metrics.dropped_election += 1;
                }
                self.drain_election();
            }
        }
    }

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

    /// Advances time: runs the update, proposal, Prepare, Alive and reconciliation timers and the
    /// election strategy's timers [TR §5.9].
    pub fn handle_tick(&mut self, now: Time) {
        self.now = now;
        let ctx = self.ctx();
        self.election.handle_tick(now, &ctx);
        self.drain_election();

        if now >= self.next_alive {
            self.next_alive = now + self.config.alive_interval;
            self.send(
                Destination::All,
                Message::Alive {
                    local_aru: self.local_aru,
                    last_installed: self.regular_view,
                },
            );
        }
        // Sender-driven retransmission of Prepare and of unordered proposals.
        if now >= self.next_proposal_resend {
            self.next_proposal_resend = now + self.config.proposal_resend;
            match self.state {
                ServerState::LeaderElection => {
                    if let Some(p) = self.prepare {
                        if p.view.leader(self.n) == self.me && p.view == self.last_attempted {
                            self.send_durable(
                                Destination::All,
                                Message::Prepare {
                                    view: p.view,
                                    local_aru: p.aru,
                                },
                            );
                        }
                    }
                }
                ServerState::RegLeader => {
                    if self.floor_wait_expired(now) {
                        // The only servers that ordered the slots below the floor are out of
                        // reach: this view cannot order anything until they answer. Whether to
                        // leave it, and for which view, is the election strategy's decision
                        // (docs/architecture.md, deviation 15). Asked again after another wait.
                        self.floor_wait_since = Some(now);
                        self.metrics.floor_wait_stalls += 1;
                        let ctx = self.ctx();
                        self.election.handle_stalled(now, &ctx);
                        self.drain_election();
                        if self.state != ServerState::RegLeader {
                            return;
                        }
                    }
                    if self.local_aru == self.aru_at_last_resend
                        && self.local_aru < self.last_proposed
                    {
                        self.resend_unordered_proposals();
                    }
                    self.aru_at_last_resend = self.local_aru;
                    // Pending updates dropped from a full queue get another chance.
                    self.make_progress();
                }
                ServerState::RegNonLeader => {}
            }
        }
        if now >= self.next_pending_scan {
            self.next_pending_scan = now + self.config.update_resend / 2;
            self.resend_pending(now);
        }
        self.reconcile_if_behind(now);
    }

    /// Every persist batch up to and including `upto` is durable: release what waited for it.
    pub fn handle_persisted(&mut self, now: Time, upto: BatchId) {
        self.now = now;
        if upto.0 > self.last_closed {
            // The driver reported a batch it was never given: a driver bug.
            debug_assert!(
                false,
                "batch {} reported durable but never handed out",
                upto.0
            );
            return;
        }
        if upto.0 <= self.persisted {
            return;
        }
        self.persisted = upto.0;
        while let Some((dep, _, _)) = self.held.front() {
            if *dep > self.persisted {
                break;
            }
            let (_, to, m) = self.held.pop_front().expect("front exists");
            self.ready.push_back((to, m));
        }
        while let Some((dep, _, _)) = self.held_self_accepts.front() {
            if *dep > self.persisted {
                break;
            }
            let (_, view, seq) = self.held_self_accepts.pop_front().expect("front exists");
            self.count_accept(view, seq, self.me.index());
        }
        self.make_progress();
    }

    // ------------------------------------------------------------------------------------------
    // Outputs
    // ------------------------------------------------------------------------------------------

    /// The next batch to persist, in order. Write it atomically; when `sync` is set, report it with
    /// [`Replica::handle_persisted`] once it is on stable storage.
    pub fn poll_persist(&mut self) -> Option<PersistBatch> {
        self.flush();
        if self.open_batch.is_empty() {
            return None;
        }
        self.last_closed += 1;
        let mut batch = std::mem::take(&mut self.open_batch);
        batch.id = BatchId(self.last_closed);
        if batch.sync {
            self.last_closed_sync = self.last_closed;
        }
        self.metrics.batches += 1;
        Some(batch)
    }

    /// The next message to send to other servers.
    pub fn poll_message(&mut self) -> Option<(Destination, Message)> {
        self.flush();
        self.ready.pop_front()
    }

    /// The next reply for one of this server's clients.
    pub fn poll_client_reply(&mut self) -> Option<ClientReply> {
        self.replies.pop_front()
    }

    /// The next executed slot (only with `Config::record_executions`).
    pub fn poll_executed(&mut self) -> Option<Executed> {
        self.executed.pop_front()
    }

    /// The earliest time at which `handle_tick` has work to do (a hint for drivers that sleep).
    pub fn poll_timeout(&self) -> Time {
        self.next_alive
            .min(self.next_proposal_resend)
            .min(self.next_pending_scan)
    }

    // ------------------------------------------------------------------------------------------
    // Getters
    // ------------------------------------------------------------------------------------------

    /// The state machine.
    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    /// The election strategy.
    pub fn election(&self) -> &E {
        &self.election
    }

    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Role and positions.
    pub fn status(&self) -> Status {
        let mut peer_aru = self.peer_aru.clone();
        peer_aru[self.me.index()] = self.local_aru;
        Status {
            id: self.me,
            state: self.state,
            last_attempted: self.last_attempted,
            last_installed: self.last_installed,
            local_aru: self.local_aru,
            last_proposed: self.last_proposed,
            leader: (self.state != ServerState::LeaderElection).then(|| self.installed_leader()),
            pending: self.pending.len(),
            queued: self.update_queue.len(),
            peer_aru,
        }
    }

    /// What the election strategy sees.
    pub fn election_context(&self) -> ElectionContext {
        self.ctx()
    }

    /// Takes a snapshot of the state machine at the aru now and compacts history below it
    /// (log compaction hook; also done automatically every `snapshot_interval` executions).
    pub fn take_snapshot(&mut self) {
        let snap = Snapshot {
            seq: self.local_aru,
            app_state: self.sm.snapshot(),
            clients: self.client_records(),
        };
        self.metrics.snapshots_taken += 1;
        self.executed_since_snapshot = 0;
        if self.config.durability != Durability::None {
            self.open_batch.snapshot = Some(snap.clone());
        }
        let keep_from = snap.seq.0.saturating_sub(self.config.history_retention);
        self.latest_snapshot = Some(snap);
        self.truncate_history(Seq(keep_from));
    }

    // ------------------------------------------------------------------------------------------
    // Election seam
    // ------------------------------------------------------------------------------------------

    fn ctx(&self) -> ElectionContext {
        ElectionContext {
            me: self.me,
            servers: self.n,
            state: self.state,
            last_attempted: self.last_attempted,
            last_installed: self.last_installed,
            max_view_seen: self.max_view_seen,
            local_aru: self.local_aru,
            has_outstanding_work: !self.pending.is_empty()
                || !self.update_queue.is_empty()
                || self.max_seen_seq > self.local_aru,
            incarnation: self.incarnation,
        }
    }

    fn drain_election(&mut self) {
        loop {
            let mut progressed = false;
            while let Some((to, payload)) = self.election.poll_message() {
                self.send(to, Message::Election(payload));
                progressed = true;
            }
            if let Some(action) = self.election.poll_action() {
                progressed = true;
                let (ElectionAction::Suspect(v) | ElectionAction::Install(v)) = action;
                if v.0 > MAX_WIRE_INDEX {
                    // A strategy relaying a view a peer made up: refuse it, as the wire would.
                    self.metrics.dropped_invalid += 1;
                    continue;
                }
                match action {
                    ElectionAction::Suspect(v) => self.shift_to_leader_election(v),
                    ElectionAction::Install(v) => self.install(v),
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn installed_leader(&self) -> NodeId {
        self.last_installed.leader(self.n)
    }

    fn see_view(&mut self, v: View) {
        if v > self.max_view_seen {
            self.max_view_seen = v;
        }
    }

    /// `shift_to_leader_election(v)` [TR Fig 6].
    fn shift_to_leader_election(&mut self, v: View) {
        if v <= self.last_installed {
            return;
        }
        self.state = ServerState::LeaderElection;
        self.prepare = None;
        self.prepare_oks.iter_mut().for_each(|b| *b = false);
        self.last_enqueued.clear();
        self.bound_at_install.clear();
        self.last_attempted = v;
        self.see_view(v);
    }

    /// The strategy asks that view `v` be installed.
    fn install(&mut self, v: View) {
        if v < self.last_installed
            || (v == self.last_installed && self.state != ServerState::LeaderElection)
        {
            return;
        }
        if v.leader(self.n) == self.me {
            if self.state == ServerState::LeaderElection
                && self.prepare.is_some_and(|p| p.view == v)
            {
                return; // already preparing it (pitfall 2: idempotent)
            }
            if v == self.last_installed {
                // A view we installed before a restart: never reuse it, move past it.
                return;
            }
            self.shift_to_leader_election(v);
            self.shift_to_prepare_phase();
        } else {
            // v == last_installed here means rejoining, after a restart, a view that is still live:
            // the promise for it is durable, so accepting its proposals again is safe.
            self.state = ServerState::LeaderElection;
            self.prepare = None;
            self.last_attempted = v;
            self.see_view(v);
            self.shift_to_reg_nonleader();
        }
    }

    // ------------------------------------------------------------------------------------------
    // Prepare phase [TR §5.4, Figs 7–9]
    // ------------------------------------------------------------------------------------------

    fn shift_to_prepare_phase(&mut self) {
        let v = self.last_attempted;
        debug_assert_eq!(v.leader(self.n), self.me);
        debug_assert!(v > self.last_installed || self.state == ServerState::LeaderElection);
        self.last_installed = v;
        self.prepare = Some(PrepareState {
            view: v,
            aru: self.local_aru,
        });
        self.prepare_oks.iter_mut().for_each(|b| *b = false);
        self.prepare_oks[self.me.index()] = true;
        self.prepare_floor = self.local_aru;
        self.floor_wait_since = None;
        self.last_enqueued.clear();
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
        if self.prepare_count() >= self.majority {
            self.shift_to_reg_leader();
        }
    }

    fn prepare_count(&self) -> usize {
        self.prepare_oks.iter().filter(|b| **b).count()
    }

    fn on_prepare(&mut self, from: NodeId, view: View, aru: Seq) {
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
            && self.state == ServerState::LeaderElection;
        let new_view = restarted_promise
            || view > self.last_installed
                && (view == self.last_attempted
                    || (view > self.last_attempted && {
                        let ctx = self.ctx();
                        self.election.accepts_prepare(from, view, &ctx)
                    }));
        if new_view {
            // Non-leader answering a Prepare for a view it has not installed yet.
            self.state = ServerState::LeaderElection;
            self.last_attempted = view;
            self.prepare = Some(PrepareState { view, aru });
            self.shift_to_reg_nonleader();
            self.send_prepare_ok(from, view, aru);
        } else if view == self.last_installed && self.state == ServerState::RegNonLeader {
            // Receiver-driven retransmission; built on demand (pitfall 1).
            self.prepare = Some(PrepareState { view, aru });
            self.send_prepare_ok(from, view, aru);
        } else {
            self.metrics.dropped_conflict += 1;
        }
    }

    fn send_prepare_ok(&mut self, leader: NodeId, view: View, leader_aru: Seq) {
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
        self.send_durable(
            Destination::Node(leader),
            Message::PrepareOk {
                view,
                local_aru: self.local_aru,
                data_list,
            },
        );
    }

    /// Everything known above `floor`: ordered updates, else the latest accepted proposal.
    fn data_list(&self, floor: Seq) -> Vec<DataItem> {
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

    fn on_prepare_ok(&mut self, from: NodeId, view: View, their_aru: Seq, data: Vec<DataItem>) {
        if self.state != ServerState::LeaderElection
            || view != self.last_attempted
            || self.prepare.is_none_or(|p| p.view != view)
            || view.leader(self.n) != self.me
        {
            self.metrics.dropped_conflict += 1;
            return;
        }
        if self.prepare_oks[from.index()] {
            return;
        }
        self.prepare_oks[from.index()] = true;
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
        self.prepare_floor = self.prepare_floor.max(their_aru);
        self.make_progress();
        if self.state == ServerState::LeaderElection && self.prepare_count() >= self.majority {
            self.shift_to_reg_leader();
        }
    }

    fn shift_to_reg_leader(&mut self) {
        self.state = ServerState::RegLeader;
        self.regular_view = self.last_installed;
        self.metrics.views_installed += 1;
        self.max_constrained = self
            .history
            .iter_above(self.local_aru)
            .filter(|(_, s)| s.proposal.is_some() || s.ordered.is_some())
            .map(|(seq, _)| seq)
            .last()
            .unwrap_or(Seq(0));
        self.bound_at_install = self.bound_above_aru();
        self.enqueue_unbound_pending();
        self.remove_bound_from_queue();
        self.last_proposed = self.local_aru;
        self.aru_at_last_resend = self.local_aru;
        let ctx = self.ctx();
        self.election.handle_view_installed(self.now, &ctx);
        self.drain_election();
        self.make_progress();
    }

    /// The updates bound to slots above the aru. A slot already ordered binds its ordered update,
    /// whatever stale proposal it also keeps (a lagging leader's own from an earlier view, say):
    /// listing such a stale proposal would refuse its update for the whole view.
    fn bound_above_aru(&self) -> FxHashSet<UpdateId> {
        self.history
            .iter_above(self.local_aru)
            .filter_map(|(_, s)| match (&s.ordered, &s.proposal) {
                (Some(u), _) | (None, Some((_, u))) => Some(u.id()),
                (None, None) => None,
            })
            .collect()
    }

    fn shift_to_reg_nonleader(&mut self) {
        self.state = ServerState::RegNonLeader;
        self.bound_at_install.clear();
        self.last_installed = self.last_attempted;
        self.regular_view = self.last_installed;
        self.see_view(self.last_installed);
        self.update_queue.clear();
        self.metrics.views_installed += 1;
        self.persist_view();
        // Pending local updates go to the new leader right away (the update timer would anyway).
        let leader = self.installed_leader();
        let now = self.now;
        let resend: Vec<ClientUpdate> = self
            .pending
            .values_mut()
            .map(|p| {
                p.next_resend = now + self.config.update_resend;
                p.update.clone()
            })
            .collect();
        for u in resend {
            self.send_durable(Destination::Node(leader), Message::ClientUpdate(u));
        }
        let ctx = self.ctx();
        self.election.handle_view_installed(self.now, &ctx);
        self.drain_election();
    }

    // ------------------------------------------------------------------------------------------
    // Normal case [TR §5.5, Figs 10, 11]
    // ------------------------------------------------------------------------------------------

    /// `send_proposal()`: binds queued updates (or constrained values) to the next slots, within
    /// the window.
    fn send_proposal(&mut self) {
        if self.state != ServerState::RegLeader {
            return;
        }
        let view = self.last_installed;
        loop {
            let seq = self.last_proposed.next();
            if seq.0 > self.local_aru.0 + self.config.window {
                break; // window flow control [LADIS §3]
            }
            let (ordered, existing) = match self.history.get(seq) {
                Some(s) => (s.ordered.is_some(), s.proposal.clone()),
                None => (false, None),
            };
            if ordered {
                self.last_proposed = seq;
                continue;
            }
            if seq <= self.prepare_floor {
                // Ordered at a PrepareOk sender: wait for reconciliation.
                self.floor_wait_since.get_or_insert(self.now);
                break;
            }
            self.floor_wait_since = None;
            let update = match existing {
                Some((v, _)) if v == view => {
                    self.last_proposed = seq;
                    continue;
                }
                Some((_, u)) => u, // constrained re-proposal
                None => match self.pop_queue() {
                    Some(u) => u,
                    None if seq < self.max_constrained => {
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

    fn floor_wait_expired(&self, now: Time) -> bool {
        self.local_aru < self.prepare_floor
            && self
                .floor_wait_since
                .is_some_and(|t| now.saturating_since(t) > self.config.recon_timeout * 8)
    }

    fn pop_queue(&mut self) -> Option<ClientUpdate> {
        while let Some(u) = self.update_queue.pop_front() {
            if self.is_executed(&u) || self.bound_at_install.contains(&u.id()) {
                continue;
            }
            return Some(u);
        }
        None
    }

    fn propose(&mut self, seq: Seq, view: View, update: ClientUpdate) {
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
        self.last_proposed = seq;
        self.max_seen_seq = self.max_seen_seq.max(seq);
        self.metrics.proposed_updates += 1;
        self.apply_proposal(seq, view, update.clone());
        self.record_accepted(seq, view, &update);
        self.agg_proposals
            .push((view, ProposalItem { seq, update }));
        if self.config.leader_accepts_separately {
            self.agg_accepts.push((view, seq));
        }
        self.hold_self_accept(view, seq);
    }

    fn resend_unordered_proposals(&mut self) {
        let view = self.last_installed;
        let items: Vec<(View, ProposalItem)> = self
            .history
            .iter_above(self.local_aru)
            .take_while(|(seq, _)| *seq <= self.last_proposed)
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
        self.agg_proposals.extend(items);
    }

    fn on_proposal(&mut self, from: NodeId, view: View, items: Vec<ProposalItem>) {
        self.see_view(view);
        #[allow(unused_mut)]
        let mut view_ok = view == self.last_installed;
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::AcceptLowerView) {
            view_ok = view <= self.last_installed;
        }
        if self.state != ServerState::RegNonLeader || !view_ok || from != view.leader(self.n) {
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
                    self.agg_accepts.push((view, seq));
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
            self.agg_accepts.push((view, seq));
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

    fn ordered_update(&self, seq: Seq) -> Option<ClientUpdate> {
        self.history.get(seq).and_then(|s| s.ordered.clone())
    }

    /// The update rule for a proposal [spec §4]: replace lower views, never higher ones.
    fn apply_proposal(&mut self, seq: Seq, view: View, update: ClientUpdate) {
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

    fn on_accept(&mut self, from: NodeId, view: View, ranges: &[SeqRange]) {
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
    fn count_accept(&mut self, view: View, seq: Seq, node: usize) {
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
                slot.live = view == self.last_installed;
                self.apply_ordered(seq, u);
            }
        }
    }

    /// The update rule for a globally ordered update: keep the first.
    fn apply_ordered(&mut self, seq: Seq, update: ClientUpdate) {
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
            self.bound_at_install.remove(&id);
        }
        self.max_seen_seq = self.max_seen_seq.max(seq);
        if self.config.durability != Durability::None {
            self.open_batch.ordered.push(OrderedUpdate { seq, update });
        }
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
    fn advance_aru(&mut self, live: bool) {
        let mut progressed = false;
        let mut view_progressed = false;
        loop {
            let seq = self.local_aru.next();
            // Moved out and back in: executing borrows the update while `self` is mutated.
            let Some((update, ordered_live)) = self
                .history
                .get_mut(seq)
                .and_then(|s| s.ordered.take().map(|u| (u, s.live)))
            else {
                break;
            };
            // The aru moves only over an ordered slot, one at a time (the `let` above).
            self.local_aru = seq;
            self.execute(seq, &update, live);
            if let Some(slot) = self.history.get_mut(seq) {
                slot.ordered = Some(update);
            }
            progressed = true;
            view_progressed |= ordered_live;
        }
        if !progressed {
            return;
        }
        if self.last_proposed < self.local_aru {
            self.last_proposed = self.local_aru;
        }
        if self.local_aru >= self.recon_target {
            self.behind_since = None;
            self.recon_outstanding = None;
        }
        if live {
            if view_progressed && self.state != ServerState::LeaderElection {
                let ctx = self.ctx();
                self.election.handle_progress(self.now, &ctx);
                self.drain_election();
            }
            if let Some(interval) = self.config.snapshot_interval {
                if self.executed_since_snapshot >= interval {
                    self.take_snapshot();
                }
            }
        }
    }

    /// Executes what is ordered and proposes what the window allows, until neither moves. Every
    /// input handler ends here; nothing below it recurses into it, so the stack stays flat however
    /// many slots one input unblocks.
    fn make_progress(&mut self) {
        loop {
            let before = (self.local_aru, self.last_proposed);
            self.advance_aru(true);
            self.send_proposal();
            if (self.local_aru, self.last_proposed) == before {
                break;
            }
        }
    }

    fn is_executed(&self, u: &ClientUpdate) -> bool {
        self.last_executed
            .get(&u.client_id)
            .is_some_and(|(ts, _)| u.timestamp <= *ts)
    }

    fn execute(&mut self, seq: Seq, update: &ClientUpdate, live: bool) {
        self.metrics.executed += 1;
        self.executed_since_snapshot += 1;
        let c = update.client_id;
        #[allow(unused_mut)]
        let mut duplicate = c == NOOP_CLIENT || self.is_executed(update);
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(crate::config::PlantedBug::ExecuteDuplicate)
            && c != NOOP_CLIENT
        {
            duplicate = false;
        }
        if duplicate {
            // Pitfall 3(b): an update bound twice executes once; the aru still advances.
            self.metrics.duplicates_skipped += 1;
        } else {
            let result = self.sm.apply(seq, update);
            self.last_executed.insert(c, (update.timestamp, result));
        }
        // The pending copy is done whichever server initiated the executed one: a client that
        // switched servers may have left the same update pending here too.
        let was_pending = self
            .pending
            .get(&c)
            .is_some_and(|p| p.update.timestamp <= update.timestamp);
        if was_pending {
            self.pending.remove(&c);
        }
        if live && c != NOOP_CLIENT && (update.server_id == self.me || was_pending) {
            if let Some((ts, result)) = self.last_executed.get(&c) {
                if *ts == update.timestamp {
                    self.replies.push_back(ClientReply {
                        client_id: c,
                        timestamp: *ts,
                        result: result.clone(),
                    });
                }
            }
        }
        if self.config.record_executions {
            self.executed.push_back(Executed {
                seq,
                update: update.clone(),
                applied: !duplicate,
            });
        }
    }

    // ------------------------------------------------------------------------------------------
    // Clients [TR §5.7, Figs 12, 13]
    // ------------------------------------------------------------------------------------------

    fn enqueue(&mut self, u: ClientUpdate) -> bool {
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

    fn add_to_pending(&mut self, u: ClientUpdate) {
        if self.config.durability != Durability::None {
            self.open_batch.pending.push(u.clone());
            self.open_batch.sync |= self.config.durability == Durability::Sync;
        }
        self.pending.insert(
            u.client_id,
            Pending {
                update: u,
                next_resend: self.now + self.config.update_resend,
            },
        );
    }

    fn on_forwarded_update(&mut self, from: NodeId, u: ClientUpdate) {
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

    fn enqueue_unbound_pending(&mut self) {
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

    fn remove_bound_from_queue(&mut self) {
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
    fn resend_pending(&mut self, now: Time) {
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

    // ------------------------------------------------------------------------------------------
    // Liveness, reconciliation and state transfer [TR §5.6, §5.10]
    // ------------------------------------------------------------------------------------------

    fn on_alive(&mut self, from: NodeId, aru: Seq, installed: View) {
        self.recon_silent &= !(1u64 << from.index());
        self.see_view(installed);
        self.note_peer_aru(from, aru);
    }

    fn note_peer_aru(&mut self, from: NodeId, aru: Seq) {
        let i = from.index();
        if aru > self.peer_aru[i] {
            self.peer_aru[i] = aru;
        }
        if aru > self.local_aru {
            self.note_recon_target(aru);
        }
    }

    fn note_recon_target(&mut self, target: Seq) {
        if target > self.recon_target {
            self.recon_target = target;
        }
        if self.recon_target > self.local_aru && self.behind_since.is_none() {
            self.behind_since = Some(self.now);
        }
    }

    fn reconcile_if_behind(&mut self, now: Time) {
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
    fn pick_recon_peer(&self) -> usize {
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

    fn on_recon_request(&mut self, from: NodeId, lo: Seq, hi: Seq) {
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

    fn on_recon_reply(&mut self, from: NodeId, updates: Vec<OrderedUpdate>, complete: bool) {
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

    fn on_snapshot(&mut self, snap: Snapshot) {
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
        for c in snap.clients.iter().filter(|_| !skip_table) {
            self.last_executed
                .insert(c.client, (c.last_executed, c.last_result.clone()));
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
        let done: Vec<ClientId> = self
            .pending
            .iter()
            .filter(|(_, p)| self.is_executed(&p.update))
            .map(|(c, _)| *c)
            .collect();
        for c in done {
            if let Some(p) = self.pending.remove(&c) {
                if let Some((ts, result)) = self.last_executed.get(&c) {
                    if *ts == p.update.timestamp {
                        self.replies.push_back(ClientReply {
                            client_id: c,
                            timestamp: *ts,
                            result: result.clone(),
                        });
                    }
                }
            }
        }
        if self.config.durability != Durability::None {
            self.open_batch.snapshot = Some(snap.clone());
        }
        self.executed_since_snapshot = 0;
        self.latest_snapshot = Some(snap);
        self.make_progress();
    }

    fn truncate_history(&mut self, through: Seq) {
        self.history.truncate_through(through, drop);
    }

    fn client_records(&self) -> Vec<ClientRecord> {
        let mut v: Vec<ClientRecord> = self
            .last_executed
            .iter()
            .map(|(c, (ts, r))| ClientRecord {
                client: *c,
                last_executed: *ts,
                last_result: r.clone(),
            })
            .collect();
        v.sort_by_key(|r| r.client);
        v
    }

    // ------------------------------------------------------------------------------------------
    // Durability and sending
    // ------------------------------------------------------------------------------------------

    fn persist_view(&mut self) {
        if self.config.durability == Durability::None {
            return;
        }
        self.open_batch.view = Some(ViewRecord {
            last_attempted: self.last_attempted,
            last_installed: self.last_installed,
        });
        self.open_batch.sync |= self.config.durability == Durability::Sync;
    }

    fn record_accepted(&mut self, seq: Seq, view: View, update: &ClientUpdate) {
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
    fn dependency(&self) -> u64 {
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

    fn hold_self_accept(&mut self, view: View, seq: Seq) {
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
    fn send(&mut self, to: Destination, m: Message) {
        self.ready.push_back((to, m));
    }

    /// Sends a message that may leave only once everything persisted so far is durable.
    fn send_durable(&mut self, to: Destination, m: Message) {
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
    fn flush(&mut self) {
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
    fn send_accepts(&mut self, view: View, seqs: Vec<Seq>) {
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

    fn send_accepts_unchecked(&mut self, view: View, seqs: Vec<Seq>) {
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

    fn emit_proposal(&mut self, view: View, items: Vec<ProposalItem>) {
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

    fn send_accept(&mut self, view: View, seqs: Vec<SeqRange>) {
        self.send_durable(Destination::All, Message::Accept { view, seqs });
    }
}

impl<S: StateMachine, E: LeaderElection> std::fmt::Debug for Replica<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("me", &self.me)
            .field("state", &self.state)
            .field("last_attempted", &self.last_attempted)
            .field("last_installed", &self.last_installed)
            .field("local_aru", &self.local_aru)
            .field("last_proposed", &self.last_proposed)
            .finish()
    }
}
