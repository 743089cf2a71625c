//! What a replica reports about itself: executed slots, status, counters and refusals.

use crate::election::ServerState;
use crate::message::ClientUpdate;
use crate::types::{ClientId, NodeId, Seq, Time, View};
use thiserror::Error;

/// One executed slot, reported by [`crate::Replica::poll_executed`] when `record_executions` is on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Executed {
    /// The slot.
    pub seq: Seq,
    /// The update ordered in it.
    pub update: ClientUpdate,
    /// False when the update was a duplicate of one already executed (or a no-op) and was skipped.
    pub applied: bool,
    /// What execution did with it.
    pub verdict: Verdict,
}

/// What executing one slot did (see [`Executed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Applied to the state machine.
    Applied,
    /// A duplicate of an update already executed: skipped.
    Duplicate,
    /// A no-op filler or a clock entry: nothing to apply.
    Filler,
    /// A registration: the session it opened.
    Opened(ClientId),
    /// An update of a session the table does not hold: skipped and answered "session expired".
    Expired,
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
    /// Highest slot this server proposed in the view it leads (its aru when not leading).
    pub last_proposed: Seq,
    /// Leader of the installed view, when not in leader election.
    pub leader: Option<NodeId>,
    /// The server the election strategy currently believes should lead
    /// ([`crate::LeaderElection::leader`]), if it has an opinion. It differs from `leader` while
    /// a view change is under way, or where strategies disagree about who should lead.
    pub election_leader: Option<NodeId>,
    /// Local client updates not yet executed.
    pub pending: usize,
    /// Updates queued at this server for proposal.
    pub queued: usize,
    /// Highest aru each peer announced (own aru at own index).
    pub peer_aru: Vec<Seq>,
    /// The snapshot this server is receiving, if any.
    pub transfer: Option<super::TransferProgress>,
    /// Entries in the exactly-once table (sessions, with `Config::sessions`).
    pub sessions: usize,
    /// The log's clock (session expiry; zero without sessions).
    pub log_time: crate::types::Time,
}

/// What a server saw when its election strategy last made it suspect the installed view
/// ([`crate::Replica::last_suspicion`]): the evidence that tells a dead or unreachable leader
/// (nothing heard from it) from a slow pipeline (the leader heard from, its own work waiting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspicion {
    /// When.
    pub at: Time,
    /// The view suspected (the installed one).
    pub suspected: View,
    /// The view voted for.
    pub voted: View,
    /// The role in the suspected view.
    pub was: ServerState,
    /// Local client updates not yet executed.
    pub pending: usize,
    /// Since when the oldest of them waits (its arrival here, or the restart that recovered it).
    pub oldest_pending_since: Option<Time>,
    /// Updates queued at this server for proposal.
    pub queued: usize,
    /// Executed prefix.
    pub local_aru: Seq,
    /// Highest slot seen ordered or proposed.
    pub max_seen_seq: Seq,
    /// The last execution that counted as progress of a view ([`crate::LeaderElection::handle_progress`]).
    pub last_view_progress: Option<Time>,
    /// The last valid message from the suspected view's leader.
    pub last_heard_from_leader: Option<Time>,
    /// Whether a snapshot was being received.
    pub receiving_snapshot: bool,
    /// Since when this server's oldest outstanding sync write waited (see
    /// [`crate::Config::storage_stall`]).
    pub storage_wait_since: Option<Time>,
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
    /// PrepareOk parts that arrived before the part they follow (dropped; resent).
    pub prepare_ok_parts_out_of_order: u64,
    /// Received snapshots refused: digest mismatch, undecodable image, or the state machine
    /// rejected it.
    pub snapshots_rejected: u64,
    /// State transfers offered (first chunk sent in answer to a ReconRequest).
    pub snapshot_offers: u64,
    /// State transfers started as receiver.
    pub snapshot_transfers_started: u64,
    /// Incoming transfers abandoned for a newer (or, once stalled, another) snapshot.
    pub snapshot_transfers_replaced: u64,
    /// Snapshot image bytes sent in chunks.
    pub snapshot_bytes_sent: u64,
    /// Snapshot image bytes received (new, in-window chunks only).
    pub snapshot_bytes_received: u64,
    /// Times unanswered pulls were sent again.
    pub snapshot_pull_retries: u64,
    /// Pulls for a snapshot this server no longer has (and no newer one to offer).
    pub snapshot_pulls_unserved: u64,
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
    /// Election actions that changed nothing: a `Suspect` of a view at or below the installed
    /// one, an `Install` the rule on [`crate::ElectionAction::Install`] ignores.
    pub election_actions_ignored: u64,
    /// Buffered accepts not sent because the slot was accepted again in a higher view (or
    /// compacted) before the drain.
    pub accepts_superseded: u64,
    /// Transfers that moved to another sender of the same image after theirs went quiet.
    pub snapshot_sources_switched: u64,
    /// PrepareOk messages sent (every part counts).
    pub prepare_ok_parts_sent: u64,
    /// Bytes of updates PrepareOks carried (their data lists, all parts).
    pub prepare_ok_bytes_sent: u64,
    /// Sessions opened (registrations executed).
    pub sessions_opened: u64,
    /// Sessions dropped from the exactly-once table (idle, count or bytes bound).
    pub sessions_expired: u64,
    /// Updates answered "session expired" (at execution, or at once by the local server).
    pub expired_session_updates: u64,
    /// Clock entries this server proposed as leader.
    pub clock_entries_proposed: u64,
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
    /// A registration (timestamp 0) must name a nonce below `SESSION_ID_BASE`, not a session.
    #[error("registration names session id {0:?}; a registration names a nonce")]
    RegistrationNamesSession(ClientId),
    /// The server already keeps `max_pending` local updates pending; the client should retry
    /// later or elsewhere.
    #[error("{0} local updates already pending here")]
    TooManyPending(usize),
}
