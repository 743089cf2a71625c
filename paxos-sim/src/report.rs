//! What a run reports: violations, counters, timelines.

use crate::faults::FaultMix;
use crate::sim::{LivenessSet, NodeFaults, ScheduleMode};
use paxos_core::{ClientId, Durability, NodeId, Time, View};
use std::fmt;
use std::time::Duration;

/// The invariant a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// Two replicas executed different updates (or made different duplicate decisions) at one slot,
    /// or a replica's log is not a prefix of the canonical order.
    Agreement,
    /// An executed update was never submitted, or not byte-identical to what was submitted.
    Validity,
    /// An update was applied twice, an update was skipped as a duplicate without ever being
    /// applied, or a client got a reply for an update that was not applied.
    ExactlyOnce,
    /// Durable state regressed (view promise, accepted view) or a restart lost the executed prefix.
    Durability,
    /// Two replicas at the same position have different state-machine digests.
    Digest,
    /// Two different values were each accepted by a majority at one slot (in any views): Paxos'
    /// safety property, checked on the ghost accept record before anyone executes either.
    ChosenTwice,
    /// A replica ordered a value (persisted it as ordered, reported it ordered in a PrepareOk or
    /// ReconReply, or executed it first) that no majority accepted at that slot, or another value
    /// was chosen there.
    UnchosenOrdered,
    /// Two different values were bound to one `(view, slot)` (by Proposals, accepted records or a
    /// PrepareOk's data list): a view has one proposal per slot.
    ProposalConflict,
    /// An Accept named a `(view, slot)` for which no value was ever proposed or accepted.
    AcceptUnproposed,
    /// With `Durability::Sync`, a message left a server without the durable state that justifies
    /// it (an Accept or the leader's Proposal without a durable accept, a Prepare or PrepareOk
    /// without a durable view promise, a PrepareOk that omits a durable accepted proposal, a
    /// forwarded update without a durable pending entry).
    UnjustifiedMessage,
    /// A durable accepted proposal of a view below the server's durable view promise, or of a view
    /// it never durably installed.
    BrokenPromise,
    /// After healing, pending updates of the stable majority's clients did not complete in time.
    NoConvergence,
    /// A message did not survive an encode/decode round trip, or the core refused a valid input.
    Codec,
    /// The core (or the simulator) panicked; the run stopped there.
    Panic,
    /// Two snapshots of one slot (taken by different servers, or installed from a peer) have
    /// different images: replicas disagree about the state or the exactly-once table there.
    SnapshotDivergence,
}

/// One broken invariant, with the virtual time it was detected at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time of detection.
    pub time: Time,
    /// The invariant.
    pub kind: ViolationKind,
    /// A human-readable explanation.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {:?}: {}", self.time, self.kind, self.detail)
    }
}

/// Coverage and fault counters ("sometimes" assertions are made over sums of these).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Leader changes observed (a server became leader of a view above every earlier one).
    pub view_changes: u64,
    /// Views installed, summed over servers and incarnations.
    pub views_installed: u64,
    /// Reconciliation requests sent.
    pub reconciliations: u64,
    /// Snapshots taken locally.
    pub snapshots_taken: u64,
    /// Snapshots installed from peers (state transfer).
    pub snapshots_installed: u64,
    /// Snapshots built off the replica's loop (`snapshot_off_loop`).
    pub snapshot_jobs: u64,
    /// Snapshot image bytes received in state transfer.
    pub snapshot_bytes: u64,
    /// Client updates ordered again and skipped as duplicates (canonical order, no-ops excluded).
    pub duplicates_skipped: u64,
    /// No-op fillers ordered (canonical order).
    pub noops: u64,
    /// Leaders whose floor wait expired and whose election strategy was told the view stalled.
    pub floor_wait_stalls: u64,
    /// Server crashes.
    pub crashes: u64,
    /// Server restarts.
    pub restarts: u64,
    /// Crashes where some written-but-unsynced batches were lost.
    pub lost_writes: u64,
    /// Crashes where a strict, non-empty prefix of the unsynced batches survived (torn).
    pub torn_writes: u64,
    /// Partitions started (each flap counts once).
    pub partitions: u64,
    /// Messages sent (per destination).
    pub messages_sent: u64,
    /// Messages lost (random loss, partitions, crashed receivers).
    pub messages_dropped: u64,
    /// Messages duplicated.
    pub messages_duplicated: u64,
    /// Messages that made an encode/decode round trip.
    pub codec_roundtrips: u64,
    /// Client retries after a timeout.
    pub client_retries: u64,
    /// Sessions the clients registered.
    pub sessions_opened: u64,
    /// Client updates answered "session expired".
    pub updates_expired: u64,
    /// Client updates completed (reply received).
    pub updates_completed: u64,
    /// Slots in the canonical order.
    pub ordered: u64,
    /// Executions reported, summed over replicas.
    pub executions: u64,
    /// Persist batches made durable.
    pub batches_synced: u64,
    /// Rounds that fed a server two or more inputs before draining it.
    pub multi_input_rounds: u64,
    /// The most inputs one round fed (the maximum, not a sum, over a sweep).
    pub max_round: u64,
    /// Process pauses.
    pub pauses: u64,
    /// Forward clock jumps.
    pub clock_jumps: u64,
    /// Slow-disk episodes.
    pub slow_disk_episodes: u64,
    /// Slow-disk episodes of a shared disk: every server's writes slow at once.
    pub shared_disk_episodes: u64,
    /// Liveness phases with a stable majority set (outside servers up and sending into it).
    pub majority_set_phases: u64,
}

impl Counters {
    /// Adds another run's counters.
    pub fn add(&mut self, o: &Counters) {
        self.view_changes += o.view_changes;
        self.views_installed += o.views_installed;
        self.reconciliations += o.reconciliations;
        self.snapshots_taken += o.snapshots_taken;
        self.snapshots_installed += o.snapshots_installed;
        self.snapshot_jobs += o.snapshot_jobs;
        self.snapshot_bytes += o.snapshot_bytes;
        self.duplicates_skipped += o.duplicates_skipped;
        self.noops += o.noops;
        self.floor_wait_stalls += o.floor_wait_stalls;
        self.crashes += o.crashes;
        self.restarts += o.restarts;
        self.lost_writes += o.lost_writes;
        self.torn_writes += o.torn_writes;
        self.partitions += o.partitions;
        self.messages_sent += o.messages_sent;
        self.messages_dropped += o.messages_dropped;
        self.messages_duplicated += o.messages_duplicated;
        self.codec_roundtrips += o.codec_roundtrips;
        self.client_retries += o.client_retries;
        self.sessions_opened += o.sessions_opened;
        self.updates_expired += o.updates_expired;
        self.updates_completed += o.updates_completed;
        self.ordered += o.ordered;
        self.executions += o.executions;
        self.batches_synced += o.batches_synced;
        self.multi_input_rounds += o.multi_input_rounds;
        self.max_round = self.max_round.max(o.max_round);
        self.pauses += o.pauses;
        self.clock_jumps += o.clock_jumps;
        self.slow_disk_episodes += o.slow_disk_episodes;
        self.shared_disk_episodes += o.shared_disk_episodes;
        self.majority_set_phases += o.majority_set_phases;
    }

    /// The counters of the scheduler and the process faults (issue #11); a run's trace hash
    /// leaves them out while they are zero.
    pub const SCHEDULING: [&'static str; 7] = [
        "multi_input_rounds",
        "max_round",
        "pauses",
        "clock_jumps",
        "slow_disk_episodes",
        "shared_disk_episodes",
        "majority_set_phases",
    ];

    /// `(name, value)` pairs, in a fixed order, for printing and coverage checks.
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("view_changes", self.view_changes),
            ("views_installed", self.views_installed),
            ("reconciliations", self.reconciliations),
            ("snapshots_taken", self.snapshots_taken),
            ("snapshots_installed", self.snapshots_installed),
            ("snapshot_jobs", self.snapshot_jobs),
            ("snapshot_bytes", self.snapshot_bytes),
            ("duplicates_skipped", self.duplicates_skipped),
            ("noops", self.noops),
            ("floor_wait_stalls", self.floor_wait_stalls),
            ("crashes", self.crashes),
            ("restarts", self.restarts),
            ("lost_writes", self.lost_writes),
            ("torn_writes", self.torn_writes),
            ("partitions", self.partitions),
            ("messages_sent", self.messages_sent),
            ("messages_dropped", self.messages_dropped),
            ("messages_duplicated", self.messages_duplicated),
            ("codec_roundtrips", self.codec_roundtrips),
            ("client_retries", self.client_retries),
            ("sessions_opened", self.sessions_opened),
            ("updates_expired", self.updates_expired),
            ("updates_completed", self.updates_completed),
            ("ordered", self.ordered),
            ("executions", self.executions),
            ("batches_synced", self.batches_synced),
            ("multi_input_rounds", self.multi_input_rounds),
            ("max_round", self.max_round),
            ("pauses", self.pauses),
            ("clock_jumps", self.clock_jumps),
            ("slow_disk_episodes", self.slow_disk_episodes),
            ("shared_disk_episodes", self.shared_disk_episodes),
            ("majority_set_phases", self.majority_set_phases),
        ]
    }
}

/// A server became leader of a view higher than any seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// Virtual time.
    pub time: Time,
    /// The view.
    pub view: View,
    /// Its leader.
    pub leader: NodeId,
}

/// One completed client update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// The client.
    pub client: ClientId,
    /// Virtual time of the first submission.
    pub submitted: Time,
    /// Time from first submission to reply.
    pub latency: Duration,
}

/// The outcome of one simulated run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// The election strategy's name.
    pub election: &'static str,
    /// Durability mode used.
    pub durability: Durability,
    /// Whether aggregation was on.
    pub aggregation: bool,
    /// The fault mix drawn for this seed.
    pub mix: FaultMix,
    /// The replica configuration drawn for this seed (as given to server 0).
    pub config: paxos_core::Config,
    /// Number of clients.
    pub clients: usize,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end.
    pub end_time: Time,
    /// Hash of the whole trace; the same seed and options always give the same value.
    pub trace_hash: u64,
    /// Broken invariants (the run stops at the first).
    pub violations: Vec<Violation>,
    /// Coverage counters.
    pub counters: Counters,
    /// Completed client updates (empty in bench mode).
    pub latencies: Vec<Latency>,
    /// When each new leader took over.
    pub leader_changes: Vec<LeaderChange>,
    /// Total virtual time during which no live server was leader of an installed view (a deposed
    /// but still running leader counts as a leader until it notices).
    pub leaderless: Duration,
    /// Time the fault phase ended and the stable majority was healed (None: no liveness phase).
    pub healed_at: Option<Time>,
    /// Servers of the stable majority.
    pub stable_set: Vec<NodeId>,
    /// Time at which every pending update of the stable majority's clients had completed.
    pub converged_at: Option<Time>,
    /// A command line that replays this run verbosely.
    pub replay: String,
    /// How servers were scheduled.
    pub schedule: ScheduleMode,
    /// The process faults drawn for this seed.
    pub node_faults: NodeFaults,
    /// What the liveness phase kept stable (`None`: every server was in the stable set, or
    /// there was no liveness phase).
    pub liveness_set: Option<LivenessSet>,
}

impl RunReport {
    /// Whether no invariant was broken.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}
