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
//!
//! The code is cut by protocol phase, each module owning its sub-state (docs/architecture.md,
//! "Spec section → file"): this file holds the replica, its constructor (recovery, TR Fig 14), the
//! input dispatch and timers, and the outputs; `role` the roles and their own state; `seam` the
//! election seam; `view_change` the Prepare phase; `ordering` proposals, accepts and execution;
//! `clients` the client table; `reconcile` and `snapshot` catching up; `outbox` what leaves and
//! when; `status` what the replica reports; `fingerprint` its state hash for model checkers.

use crate::config::{Config, ConfigError, Durability};
use crate::durable::{BatchId, DurableState, PersistBatch, ViewRecord};
use crate::election::{ElectionAction, ElectionContext, LeaderElection, ServerState};
use crate::fxmap::{FxHashMap, FxHashSet};
use crate::history::History;
use crate::message::{
    AcceptedProposal, ClientRecord, ClientReply, ClientUpdate, DataItem, Message, OrderedUpdate,
    PrepareOkPart, ProposalItem, ReplyOutcome, SeqRange, Snapshot,
};
use crate::state_machine::StateMachine;
use crate::types::{
    ClientId, Destination, NodeId, Seq, Time, Timestamp, UpdateId, View, MAX_WIRE_INDEX,
};
use bytes::Bytes;
use std::collections::VecDeque;

mod clients;
use clients::ClientTable;
mod fingerprint;
mod ordering;
mod queue;
use ordering::Execution;
mod outbox;
use outbox::Outbox;
mod reconcile;
mod role;
use reconcile::Reconciliation;
use role::{Leading, Preparing, Role};
mod seam;
mod sessions;
pub use sessions::{CLOCK_CLIENT, SESSION_ID_BASE};
mod snapshot;
mod status;
mod transfer;
use transfer::Transfer;
mod view_change;

pub use status::{ClientUpdateError, Executed, Metrics, Status, Suspicion, Verdict};
pub use transfer::TransferProgress;

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
            part,
        } => {
            ok(view.0)
                && ok(local_aru.0)
                && ok(part.after.0)
                && part.through.is_none_or(|t| ok(t.0) && t > part.after)
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
        Message::SnapshotChunk { seq, .. } | Message::SnapshotPull { seq, .. } => ok(seq.0),
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
    /// The role, with the state only it has (the Prepare tally, the leader's per-view state).
    role: Role,
    last_attempted: View,
    last_installed: View,
    /// The last view this server was regular in (leader with a PrepareOk majority, or non-leader).
    /// `last_installed` already names a view whose Prepare is still collecting answers; `Alive`
    /// announces this one instead, so an attempt that never gathered a majority is not reported
    /// as an installed view.
    regular_view: View,
    max_view_seen: View,
    /// The highest view whose own leader announced it in `Alive` (`ElectionContext`).
    leader_announced_view: View,

    // ordering
    local_aru: Seq,
    max_seen_seq: Seq,
    history: History,
    next_proposal_resend: Time,

    // clients
    clients: ClientTable,
    next_pending_scan: Time,

    // liveness and reconciliation
    next_alive: Time,
    recon: Reconciliation,

    // compaction and state transfer
    /// The aru at which the next snapshot is due (staggered per server, `snapshot.rs`).
    next_snapshot_at: Seq,
    /// The log executed since the last snapshot was captured or installed, in bytes
    /// (`Config::snapshot_min_log_percent`).
    log_bytes_since_snapshot: u64,
    /// A snapshot job waiting for `poll_snapshot_job`.
    snapshot_job: Option<crate::snapshot::SnapshotJob>,
    /// The slot of the snapshot a driver is building off the loop.
    snapshot_building: Option<Seq>,
    latest_snapshot: Option<Snapshot>,
    transfer: Transfer,

    // durability and outputs
    outbox: Outbox,
    executed: VecDeque<Executed>,
    metrics: Metrics,

    // diagnosis
    /// See [`Replica::last_suspicion`].
    last_suspicion: Option<Suspicion>,
    /// The last execution that was progress of a view.
    last_view_progress: Option<Time>,
    /// Per server, the last valid message from it.
    last_heard: Vec<Option<Time>>,
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
            role: Role::Election(None),
            last_attempted: durable.view.last_attempted,
            last_installed: durable.view.last_installed,
            // Durable state does not say whether a view this server led got its majority; it
            // reports the promise, as before a restart.
            regular_view: durable.view.last_installed,
            max_view_seen: durable.view.last_attempted.max(durable.view.last_installed),
            leader_announced_view: View(0),
            local_aru: snapshot_seq,
            max_seen_seq: snapshot_seq,
            history: History::new(snapshot_seq.next()),
            next_proposal_resend: now,
            clients: ClientTable::new(config.sessions),
            next_pending_scan: now,
            next_alive: now,
            recon: Reconciliation::new(me, n),
            next_snapshot_at: Seq(u64::MAX),
            log_bytes_since_snapshot: 0,
            snapshot_job: None,
            snapshot_building: None,
            latest_snapshot: None,
            transfer: Transfer::default(),
            outbox: Outbox::new(&config),
            executed: VecDeque::new(),
            metrics: Metrics::default(),
            last_suspicion: None,
            last_view_progress: None,
            last_heard: vec![None; n],
            config,
        };
        if let Some(snap) = durable.snapshot {
            // Our own durable snapshot must restore; anything else is a corrupted store.
            let parts = snap
                .parts()
                .unwrap_or_else(|e| panic!("durable snapshot at {} is corrupt: {e}", snap.seq()));
            if let Err(e) = r.sm.restore_shared(&parts.app_state) {
                panic!("durable snapshot at {} does not restore: {e}", snap.seq());
            }
            r.clients.sessions.restore(parts.log_time, &parts.clients);
            r.latest_snapshot = Some(snap);
        }
        r.next_snapshot_at = r.snapshot_point_after(snapshot_seq);
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
        r.advance_aru(Execution::Recovering);
        for (client, update) in durable.pending {
            if !r.clients.is_done(client, update.timestamp) && update.server_id == me {
                r.clients.add_pending(update, now, now);
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
        self.last_heard[from.index()] = Some(now);
        match message {
            Message::ClientUpdate(u) => self.on_forwarded_update(from, u),
            Message::Prepare { view, local_aru } => self.on_prepare(from, view, local_aru),
            Message::PrepareOk {
                view,
                local_aru,
                data_list,
                part,
            } => self.on_prepare_ok(from, view, local_aru, data_list, part),
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
            Message::SnapshotChunk {
                seq,
                digest,
                total_len,
                offset,
                data,
            } => self.on_snapshot_chunk(from, seq, digest, total_len, offset, data),
            Message::SnapshotPull {
                seq,
                digest,
                offset,
                len,
            } => self.on_snapshot_pull(from, seq, digest, offset, len),
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
        self.propose_clock_if_due(now);
        // Sender-driven retransmission of Prepare and of unordered proposals.
        if now >= self.next_proposal_resend {
            self.next_proposal_resend = now + self.config.proposal_resend;
            match self.role.state() {
                ServerState::LeaderElection => {
                    if let Some((view, aru)) = self.role.preparing().map(|p| (p.view, p.aru)) {
                        if view.leader(self.n) == self.me && view == self.last_attempted {
                            self.send_durable(
                                Destination::All,
                                Message::Prepare {
                                    view,
                                    local_aru: aru,
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
                        if let Some(l) = self.role.leading_mut() {
                            l.floor_wait_since = Some(now);
                        }
                        self.metrics.floor_wait_stalls += 1;
                        let ctx = self.ctx();
                        self.election.handle_stalled(now, &ctx);
                        self.drain_election();
                    }
                    let aru = self.local_aru;
                    let Some(l) = self.role.leading_mut() else {
                        return; // the strategy left the view
                    };
                    let resend = aru == l.aru_at_last_resend && aru < l.last_proposed;
                    l.aru_at_last_resend = aru;
                    if resend {
                        self.resend_unordered_proposals();
                    }
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
        self.transfer_tick(now);
        self.reconcile_if_behind(now);
    }

    /// Every persist batch up to and including `upto` is durable: release what waited for it.
    pub fn handle_persisted(&mut self, now: Time, upto: BatchId) {
        self.now = now;
        if !self.outbox.persisted_through(upto) {
            return;
        }
        while let Some((view, seq)) = self.outbox.pop_released_self_accept() {
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
        let batch = self.outbox.close_batch(self.now)?;
        self.metrics.batches += 1;
        Some(batch)
    }

    /// The next message to send to other servers.
    pub fn poll_message(&mut self) -> Option<(Destination, Message)> {
        self.flush();
        self.outbox.pop_ready()
    }

    /// The next reply for one of this server's clients.
    pub fn poll_client_reply(&mut self) -> Option<ClientReply> {
        self.clients.pop_reply()
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

    /// The latest snapshot (taken here or installed from a peer), if any.
    pub fn latest_snapshot(&self) -> Option<&Snapshot> {
        self.latest_snapshot.as_ref()
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
        let (pending, queued) = self.clients.counts();
        let peer_aru = self.recon.peer_arus(self.local_aru);
        Status {
            id: self.me,
            state: self.role.state(),
            last_attempted: self.last_attempted,
            last_installed: self.last_installed,
            local_aru: self.local_aru,
            last_proposed: self.last_proposed(),
            leader: (self.role.state() != ServerState::LeaderElection)
                .then(|| self.installed_leader()),
            election_leader: self.election.leader(&self.ctx()),
            pending,
            queued,
            peer_aru,
            transfer: self.transfer.progress(),
            sessions: self.clients.sessions.len(),
            log_time: self.clients.sessions.log_time(),
        }
    }

    /// What this server saw the last time its election strategy made it suspect a view it was
    /// regular in (`None` before the first time): for logs that must say why a view changed.
    pub fn last_suspicion(&self) -> Option<&Suspicion> {
        self.last_suspicion.as_ref()
    }

    /// What the election strategy sees.
    pub fn election_context(&self) -> ElectionContext {
        self.ctx()
    }
}

impl<S: StateMachine, E: LeaderElection> std::fmt::Debug for Replica<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("me", &self.me)
            .field("state", &self.role.state())
            .field("last_attempted", &self.last_attempted)
            .field("last_installed", &self.last_installed)
            .field("local_aru", &self.local_aru)
            .field("last_proposed", &self.last_proposed())
            .finish()
    }
}
