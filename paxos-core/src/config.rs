//! Configuration of one replica, validated once at construction.

use crate::types::NodeId;
use std::time::Duration;
use thiserror::Error;

/// The largest supported cluster (quorum sets are 64-bit masks).
pub const MAX_SERVERS: usize = 64;

/// What the core waits for before sending messages that carry a promise [spec §9].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// No stable storage at all: no batches are produced (the paper's memory experiments).
    /// A crashed server must not rejoin with the same identity.
    None,
    /// Batches are produced but nothing waits for them (the paper's asynchronous-disk experiments).
    Async,
    /// Batches must be synced; dependent messages leave only after `handle_persisted`.
    Sync,
}

/// Planted protocol bugs for proving that the simulator catches them. Test-only.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// The new leader proposes without waiting for a majority of PrepareOks.
    SkipPrepare,
    /// Messages that depend on a write leave before the write is durable.
    SendBeforeDurable,
    /// Proposals from views lower than the installed one are accepted.
    AcceptLowerView,
    /// Updates already executed are executed again when re-ordered.
    ExecuteDuplicate,
    /// Buffered accepts are stamped with the view installed when they are flushed instead of the
    /// view of the proposal they accept (the bug of issue #11).
    MislabelledAccept,
    /// A server counts its own accept towards a quorum before the accepted proposal is durable.
    SelfAcceptBeforeDurable,
    /// Quorums of ⌊N/2⌋ servers instead of ⌊N/2⌋ + 1 (for PrepareOks and for accepts).
    MinorityQuorum,
    /// A PrepareOk's data list leaves out the highest slot holding an accepted, unordered proposal.
    PrepareOkOmitsAccepted,
    /// Installing a snapshot from a peer leaves the exactly-once table as it was.
    SnapshotDropsClientTable,
    /// A snapshot built off the loop holds the state as it is when the build returns, not as it
    /// was at the snapshot point it is labelled with (a "frozen" state that was not frozen).
    SnapshotJobNotFrozen,
    /// A leader counts a server's PrepareOk at its first part, before the rest of its data list
    /// (the accepted proposals in later parts) arrived.
    PrepareOkCountsFirstPart,
    /// Sessions expire by each replica's own clock instead of the log's clock entries.
    SessionExpiresByLocalClock,
    /// An update of a session the table does not hold is applied (the session silently reopens)
    /// instead of being answered "session expired".
    ExpiredSessionReopens,
}

#[cfg(feature = "planted-bugs")]
impl PlantedBug {
    /// Every planted bug.
    pub const ALL: [PlantedBug; 13] = [
        PlantedBug::SkipPrepare,
        PlantedBug::SendBeforeDurable,
        PlantedBug::AcceptLowerView,
        PlantedBug::ExecuteDuplicate,
        PlantedBug::MislabelledAccept,
        PlantedBug::SelfAcceptBeforeDurable,
        PlantedBug::MinorityQuorum,
        PlantedBug::PrepareOkOmitsAccepted,
        PlantedBug::SnapshotDropsClientTable,
        PlantedBug::SnapshotJobNotFrozen,
        PlantedBug::PrepareOkCountsFirstPart,
        PlantedBug::SessionExpiresByLocalClock,
        PlantedBug::ExpiredSessionReopens,
    ];

    /// The bug's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::SkipPrepare => "skip-prepare",
            PlantedBug::SendBeforeDurable => "send-before-durable",
            PlantedBug::AcceptLowerView => "accept-lower-view",
            PlantedBug::ExecuteDuplicate => "execute-duplicate",
            PlantedBug::MislabelledAccept => "mislabelled-accept",
            PlantedBug::SelfAcceptBeforeDurable => "self-accept-before-durable",
            PlantedBug::MinorityQuorum => "minority-quorum",
            PlantedBug::PrepareOkOmitsAccepted => "prepare-ok-omits-accepted",
            PlantedBug::SnapshotDropsClientTable => "snapshot-drops-client-table",
            PlantedBug::SnapshotJobNotFrozen => "snapshot-job-not-frozen",
            PlantedBug::PrepareOkCountsFirstPart => "prepare-ok-counts-first-part",
            PlantedBug::SessionExpiresByLocalClock => "session-expires-by-local-clock",
            PlantedBug::ExpiredSessionReopens => "expired-session-reopens",
        }
    }

    /// The bug with this command-line name.
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// A replica's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// This server's id.
    pub id: NodeId,
    /// Number of servers `N`; ids are `0..N`.
    pub servers: usize,
    /// Durability mode.
    pub durability: Durability,
    /// Pack many updates per Proposal and many slots per Accept [TR §7.6].
    pub aggregation: bool,
    /// Upper bound on the encoded size of an aggregated Proposal, Accept list or reply.
    pub max_message_bytes: usize,
    /// Window W: the leader proposes slot i only once it has executed through i − W [LADIS §3].
    pub window: u64,
    /// A non-leader accepts proposals only up to `local_aru + accept_window` (≥ W).
    pub accept_window: u64,
    /// The leader sends its proposal before its own sync and then an explicit Accept, so its write
    /// overlaps the others' (the TR's synchronous-disk variant, spec §9). Must be equal cluster-wide.
    pub leader_accepts_separately: bool,
    /// Resend interval for unordered proposals and for Prepare [spec §5 defaults: 50 ms].
    pub proposal_resend: Duration,
    /// Resend interval for a pending client update to the leader [default 100 ms].
    pub update_resend: Duration,
    /// Interval of the periodic Alive announcement.
    pub alive_interval: Duration,
    /// How long a gap must persist before reconciliation starts (avoids false alarms).
    pub recon_delay: Duration,
    /// Timeout after which an unanswered ReconRequest is sent to another peer.
    pub recon_timeout: Duration,
    /// A sync batch handed to storage and not durable for this long means this server waits on
    /// its own disk: its progress timer is held ([`crate::ElectionContext::has_outstanding_work`]
    /// is false) until the write returns, then restarts from its full value. On shared disks a
    /// 1 s fdatasync under a noisy neighbour made both live servers of a 3-server cluster suspect
    /// a healthy view. Zero turns the rule off. Default 250 ms.
    pub storage_stall: Duration,
    /// Most slots asked for in one ReconRequest.
    pub recon_chunk: u64,
    /// Bound on the leader's update queue; updates beyond it are dropped (clients retry).
    pub max_queue: usize,
    /// Bound on the payload bytes in the leader's update queue (one update larger than it is
    /// still taken into an empty queue). Default 256 MiB.
    pub max_queue_bytes: usize,
    /// Take a snapshot and compact history every this many executed slots (None: never, and
    /// memory grows with the log). Default: every 100,000.
    pub snapshot_interval: Option<u64>,
    /// Executed slots kept in memory below the snapshot point for peers that lag a little.
    pub history_retention: u64,
    /// At a snapshot point, an own snapshot is taken only if the log executed since the previous
    /// one (payload bytes plus [`crate::LOG_ENTRY_OVERHEAD`] per slot) is at least this percent
    /// of the previous image; otherwise the next point is awaited. 0 (the default): at every
    /// point. Without it, a large state that changes by small updates is rewritten whole every
    /// `snapshot_interval` slots: write amplification, CPU, and a target that moves faster than
    /// a lagging peer can fetch it. The log it keeps instead is bounded by the same percent.
    pub snapshot_min_log_percent: u32,
    /// Build snapshots off the driver loop: the replica hands out [`crate::SnapshotJob`]s through
    /// `poll_snapshot_job` and waits for `handle_snapshot_built` instead of serialising the state
    /// itself. Off (the default), snapshots are built inline.
    pub snapshot_off_loop: bool,
    /// Bytes of snapshot image per SnapshotChunk in state transfer (well under the transport's
    /// message limit). Default 256 KiB.
    pub snapshot_chunk_bytes: u32,
    /// SnapshotPulls a receiver keeps outstanding: with `snapshot_chunk_bytes`, the bytes in flight
    /// per transfer and the memory held for chunks that arrived out of order. Default 8.
    pub snapshot_window: u32,
    /// The largest snapshot image a server accepts from a peer. Default 64 GiB.
    pub max_snapshot_bytes: u64,
    /// Client sessions that are registered through the log and expire (Raft dissertation §6.3;
    /// docs/architecture.md, "Client sessions"). None (the default): any client id may submit
    /// from timestamp 1 and the exactly-once table keeps every client forever (a registration is
    /// still answered, naming the nonce itself as the client's id).
    pub sessions: Option<SessionRules>,
    /// Most local client updates a server keeps pending; a new client beyond it is refused
    /// ([`crate::ClientUpdateError::TooManyPending`]). Default 1,000,000.
    pub max_pending: usize,
    /// Report every execution through `poll_executed` (for the simulator, tests and metrics).
    pub record_executions: bool,
    /// A deliberately planted bug (test builds only).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

/// What one executed slot counts for in [`Config::snapshot_min_log_percent`] besides its payload:
/// about what the history keeps per slot (the update's header, the slot's bookkeeping).
pub const LOG_ENTRY_OVERHEAD: u64 = 128;

impl Config {
    /// Defaults for server `id` of `servers`, durability `Sync`, aggregation on.
    pub fn new(id: NodeId, servers: usize) -> Config {
        Config {
            id,
            servers,
            durability: Durability::Sync,
            aggregation: true,
            max_message_bytes: 60_000,
            window: 256,
            accept_window: 512,
            leader_accepts_separately: false,
            proposal_resend: Duration::from_millis(50),
            update_resend: Duration::from_millis(100),
            alive_interval: Duration::from_millis(100),
            recon_delay: Duration::from_millis(20),
            recon_timeout: Duration::from_millis(200),
            storage_stall: Duration::from_millis(250),
            recon_chunk: 256,
            max_queue: 100_000,
            max_queue_bytes: 256 << 20,
            snapshot_interval: Some(100_000),
            history_retention: 20_000,
            snapshot_min_log_percent: 0,
            snapshot_off_loop: false,
            snapshot_chunk_bytes: 256 << 10,
            snapshot_window: 8,
            max_snapshot_bytes: 64 << 30,
            sessions: None,
            max_pending: 1_000_000,
            record_executions: false,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// Majority size, ⌊N/2⌋ + 1.
    pub fn majority(&self) -> usize {
        self.servers / 2 + 1
    }

    /// Checks the configuration once; the core assumes a valid one afterwards.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.servers == 0 || self.servers > MAX_SERVERS {
            return Err(ConfigError::Servers(self.servers));
        }
        if self.id.index() >= self.servers {
            return Err(ConfigError::IdOutOfRange {
                id: self.id,
                servers: self.servers,
            });
        }
        if self.window == 0 {
            return Err(ConfigError::Invalid("window must be at least 1"));
        }
        if self.accept_window < self.window {
            return Err(ConfigError::Invalid(
                "accept_window must be at least window",
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_message_bytes must be at least 1024",
            ));
        }
        if self.recon_chunk == 0 {
            return Err(ConfigError::Invalid("recon_chunk must be at least 1"));
        }
        if self.max_queue == 0 {
            return Err(ConfigError::Invalid("max_queue must be at least 1"));
        }
        if self.max_queue_bytes == 0 {
            return Err(ConfigError::Invalid("max_queue_bytes must be at least 1"));
        }
        if self.snapshot_interval == Some(0) {
            return Err(ConfigError::Invalid("snapshot_interval must be at least 1"));
        }
        if self.snapshot_chunk_bytes < 64 {
            return Err(ConfigError::Invalid(
                "snapshot_chunk_bytes must be at least 64",
            ));
        }
        if self.snapshot_window == 0 {
            return Err(ConfigError::Invalid("snapshot_window must be at least 1"));
        }
        if self.max_pending == 0 {
            return Err(ConfigError::Invalid("max_pending must be at least 1"));
        }
        if let Some(r) = &self.sessions {
            r.validate()?;
        }
        for (name, d) in [
            ("proposal_resend", self.proposal_resend),
            ("update_resend", self.update_resend),
            ("alive_interval", self.alive_interval),
            ("recon_timeout", self.recon_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        Ok(())
    }
}

/// How registered client sessions are bounded (see [`Config::sessions`]). Every rule is applied
/// when an entry executes, from the log alone, so every replica expires the same sessions.
///
/// A client opens a session with an update of timestamp 0 (its client id is then a nonce below
/// [`crate::SESSION_ID_BASE`]); the reply names the session id, `SESSION_ID_BASE + slot` of the
/// registration, which the client uses from timestamp 1 on. An update of a session the table
/// does not hold is never applied: it is answered [`crate::ReplyOutcome::SessionExpired`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionRules {
    /// A session with no update executed for this long in log time expires. Log time advances
    /// only through the leader's clock entries (see `clock_interval`).
    pub expire_after: Duration,
    /// Most sessions held; registering one more expires the least recently active.
    pub max_sessions: usize,
    /// Most bytes of stored replies (each session's last result); beyond it the least recently
    /// active sessions expire.
    pub max_result_bytes: usize,
    /// How often a leader orders a clock entry carrying the time it measured since its previous
    /// one (at most `4 x clock_interval` is counted per entry, so a clock jump cannot expire
    /// everyone at once). Only while the table holds sessions.
    pub clock_interval: Duration,
}

impl SessionRules {
    /// Ten-minute expiry, 1,000,000 sessions, 1 GiB of stored replies, a clock entry every second.
    pub fn new() -> SessionRules {
        SessionRules {
            expire_after: Duration::from_secs(600),
            max_sessions: 1_000_000,
            max_result_bytes: 1 << 30,
            clock_interval: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 {
            return Err(ConfigError::Invalid(
                "sessions.max_sessions must be at least 1",
            ));
        }
        if self.expire_after.is_zero() {
            return Err(ConfigError::ZeroDuration("sessions.expire_after"));
        }
        if self.clock_interval.is_zero() {
            return Err(ConfigError::ZeroDuration("sessions.clock_interval"));
        }
        Ok(())
    }
}

impl Default for SessionRules {
    fn default() -> Self {
        Self::new()
    }
}

/// A configuration the core refuses.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The cluster size is out of range.
    #[error("cluster size {0} is not in 1..={MAX_SERVERS}")]
    Servers(usize),
    /// The server's id is not a member.
    #[error("server id {id} is not below the cluster size {servers}")]
    IdOutOfRange {
        /// The id.
        id: NodeId,
        /// The cluster size.
        servers: usize,
    },
    /// A timer is zero.
    #[error("{0} must not be zero")]
    ZeroDuration(&'static str),
    /// Another constraint is violated.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_refused() {
        assert!(Config::new(NodeId(2), 3).validate().is_ok());
        assert!(matches!(
            Config::new(NodeId(3), 3).validate(),
            Err(ConfigError::IdOutOfRange { .. })
        ));
        assert!(Config::new(NodeId(0), 0).validate().is_err());
        let mut c = Config::new(NodeId(0), 3);
        c.window = 0;
        assert!(c.validate().is_err());
        let mut c = Config::new(NodeId(0), 3);
        c.update_resend = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration("update_resend"))
        );
    }
}
