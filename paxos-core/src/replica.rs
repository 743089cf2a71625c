//! The PSB ordering engine: one server's replica (skeleton; the engine lands next).

use crate::config::{Config, ConfigError};
use crate::durable::{BatchId, DurableState, PersistBatch};
use crate::election::{LeaderElection, ServerState};
use crate::message::{ClientReply, ClientUpdate, Message};
use crate::state_machine::StateMachine;
use crate::types::{Destination, NodeId, Seq, Time, View};
use thiserror::Error;

/// One executed slot, reported by [`Replica::poll_executed`] when `record_executions` is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    /// The slot.
    pub seq: Seq,
    /// The update ordered in it.
    pub update: ClientUpdate,
    /// False when the update was a duplicate of one already executed and was skipped.
    pub applied: bool,
}

/// A snapshot of a replica's role and positions, for status pages and tests.
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
}

/// Counters for observability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Slots executed.
    pub executed: u64,
    /// Executions skipped as duplicates.
    pub duplicates_skipped: u64,
    /// Views installed.
    pub views_installed: u64,
    /// Messages dropped by the conflict filter or as invalid.
    pub dropped_messages: u64,
    /// Election payloads that failed to decode.
    pub dropped_election_messages: u64,
    /// Client updates dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Reconciliation requests sent.
    pub recon_requests: u64,
    /// Snapshots installed from peers.
    pub snapshots_installed: u64,
    /// Persist batches produced.
    pub batches: u64,
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
}

/// One server of the PSB protocol.
pub struct Replica<S: StateMachine, E: LeaderElection> {
    config: Config,
    sm: S,
    election: E,
}

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    /// Builds a replica from recovered durable state (default state for a fresh server).
    pub fn new(
        config: Config,
        state_machine: S,
        election: E,
        durable: DurableState,
        now: Time,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let _ = (durable, now);
        Ok(Replica {
            config,
            sm: state_machine,
            election,
        })
    }
    /// A message from server `from` (authenticated by the transport).
    pub fn handle_message(&mut self, now: Time, from: NodeId, message: Message) {
        let _ = (now, from, message, &self.election);
    }
    /// An update from a local client.
    pub fn handle_client_update(
        &mut self,
        now: Time,
        update: ClientUpdate,
    ) -> Result<(), ClientUpdateError> {
        let _ = (now, update);
        Ok(())
    }
    /// Advances timers.
    pub fn handle_tick(&mut self, now: Time) {
        let _ = now;
    }
    /// Every batch up to `upto` is durable.
    pub fn handle_persisted(&mut self, now: Time, upto: BatchId) {
        let _ = (now, upto);
    }
    /// The next batch to persist.
    pub fn poll_persist(&mut self) -> Option<PersistBatch> {
        None
    }
    /// The next message to send.
    pub fn poll_message(&mut self) -> Option<(Destination, Message)> {
        None
    }
    /// The next reply for a local client.
    pub fn poll_client_reply(&mut self) -> Option<ClientReply> {
        None
    }
    /// The next executed slot (with `record_executions`).
    pub fn poll_executed(&mut self) -> Option<Executed> {
        None
    }
    /// The state machine.
    pub fn state_machine(&self) -> &S {
        &self.sm
    }
    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }
}
