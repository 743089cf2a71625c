//! The messages of the protocol [TR Fig 3, spec §3].
//!
//! Servers exchange [`Message`]s wrapped in an [`Envelope`] that names the sender; the transport
//! checks that name against the authenticated peer before the core sees it. Proposals and accepts
//! always carry lists, so aggregation [TR §7.6] is the same code path with longer lists: with
//! aggregation off every list has one element (see docs/architecture.md, "Deviations").

use crate::snapshot::Digest;
pub use crate::snapshot::Snapshot;
use crate::types::{ClientId, NodeId, Seq, Time, Timestamp, UpdateId, View};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An update submitted by a client to its local server [TR Fig 3].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientUpdate {
    /// The issuing client.
    pub client_id: ClientId,
    /// The client's local server: the one that keeps the update pending and replies.
    pub server_id: NodeId,
    /// The client's sequence number for this update.
    pub timestamp: Timestamp,
    /// The operation, opaque to the protocol.
    pub payload: Bytes,
}

impl ClientUpdate {
    /// The update's name, `(client_id, timestamp)`.
    pub fn id(&self) -> UpdateId {
        UpdateId {
            client: self.client_id,
            timestamp: self.timestamp,
        }
    }

    /// Approximate encoded size, used to bound aggregated messages.
    pub fn wire_size(&self) -> usize {
        self.payload.len() + 32
    }
}

/// One slot of a Proposal: the update proposed for `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProposalItem {
    /// The slot.
    pub seq: Seq,
    /// The update proposed for it.
    pub update: ClientUpdate,
}

/// An update bound to a slot for good: a GloballyOrderedUpdate (GOU) [TR Fig 3].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderedUpdate {
    /// The slot.
    pub seq: Seq,
    /// The update ordered in it.
    pub update: ClientUpdate,
}

/// A proposal accepted by a server: what it must remember across crashes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AcceptedProposal {
    /// The slot.
    pub seq: Seq,
    /// The view the proposal was made in.
    pub view: View,
    /// The proposed update.
    pub update: ClientUpdate,
}

/// One entry of a PrepareOk's data list [TR §5.4].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataItem {
    /// The latest proposal the sender accepted for a slot it has not ordered.
    Proposal(AcceptedProposal),
    /// A slot the sender has ordered.
    Ordered(OrderedUpdate),
}

/// The slots one PrepareOk's data list covers: those above `after`, through `through` (`None`:
/// every slot above, the last part). The leader counts a PrepareOk once it has parts covering
/// every slot above the sender's floor without a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PrepareOkPart {
    /// The part covers slots above this one.
    pub after: Seq,
    /// The last slot the part covers; `None` for the last part.
    pub through: Option<Seq>,
}

impl PrepareOkPart {
    /// A whole data list in one message.
    pub const WHOLE: PrepareOkPart = PrepareOkPart {
        after: Seq(0),
        through: None,
    };

    /// Whether this is the last part.
    pub fn is_last(self) -> bool {
        self.through.is_none()
    }
}

/// An inclusive range of slots, `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeqRange {
    /// First slot.
    pub start: Seq,
    /// Last slot (inclusive).
    pub end: Seq,
}

impl SeqRange {
    /// The slots of the range. Empty when `end < start`.
    pub fn iter(self) -> impl Iterator<Item = Seq> {
        (self.start.0..=self.end.0).map(Seq)
    }

    /// Number of slots in the range.
    pub fn len(self) -> u64 {
        (self.end.0 + 1).saturating_sub(self.start.0)
    }

    /// Whether the range holds no slot.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Per-client exactly-once record carried in snapshots: the last executed timestamp and its reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The client.
    pub client: ClientId,
    /// Its last executed update.
    pub last_executed: Timestamp,
    /// The reply that update produced, re-sent when a client retries it.
    pub last_result: Bytes,
    /// Log time of the client's last executed update (session expiry; zero without sessions).
    pub last_active: Time,
    /// The nonce whose registration opened this session (sessions only), so that a retried
    /// registration is answered with the same session while it lives.
    pub nonce: Option<ClientId>,
}

/// A message between servers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Message {
    /// A client update forwarded by its local server to the leader [TR Fig 12].
    ClientUpdate(ClientUpdate),
    /// The leader of `view` asks for promises; `local_aru` is its own aru [TR Fig 7].
    Prepare {
        /// The view being prepared.
        view: View,
        /// The leader's local aru.
        local_aru: Seq,
    },
    /// A promise for `view`, with what the sender knows above the leader's aru [TR Fig 8].
    PrepareOk {
        /// The view promised.
        view: View,
        /// The sender's own local aru; slots up to it are ordered at the sender and the leader
        /// reconciles them instead of receiving them in `data_list` (docs/architecture.md).
        local_aru: Seq,
        /// Proposals and ordered updates above `max(prepare.local_aru, local_aru)`, or the part of
        /// them that `part` names.
        data_list: Vec<DataItem>,
        /// Which slots this message's `data_list` covers: a data list larger than
        /// `max_message_bytes` goes in several PrepareOks (replica/view_change.rs).
        part: PrepareOkPart,
    },
    /// The leader proposes updates for slots in `view` (one item, or many with aggregation).
    Proposal {
        /// The leader's installed view.
        view: View,
        /// The proposed slots.
        items: Vec<ProposalItem>,
    },
    /// The sender accepted the proposals of `view` for these slots (no update or digest: a view has
    /// one proposal per slot) [TR Fig 3].
    Accept {
        /// The view of the accepted proposals.
        view: View,
        /// The accepted slots.
        seqs: Vec<SeqRange>,
    },
    /// Periodic liveness and anti-entropy announcement (spec §3.2, DERIVED).
    Alive {
        /// The sender's local aru.
        local_aru: Seq,
        /// The last view the sender was regular in (as leader with a PrepareOk majority, or as a
        /// non-leader); a view it is still preparing is not reported.
        last_installed: View,
    },
    /// Asks for the ordered updates of `from..=to` [TR §5.6].
    ReconRequest {
        /// First slot wanted.
        from: Seq,
        /// Last slot wanted.
        to: Seq,
    },
    /// Ordered updates in answer to a ReconRequest, or pushed to a server that proposed or accepted
    /// in a slot the sender already ordered. `complete == false` means part of the range is gone here
    /// (compacted or never known): ask someone else.
    ReconReply {
        /// The ordered updates.
        updates: Vec<OrderedUpdate>,
        /// Whether the whole requested range was supplied.
        complete: bool,
    },
    /// A piece of a snapshot image, for a server whose missing slots were compacted away: sent at
    /// offset 0 in answer to a ReconRequest below the sender's history, then in answer to each
    /// SnapshotPull (replica/transfer.rs).
    SnapshotChunk {
        /// The slot the snapshot covers.
        seq: Seq,
        /// The whole image's digest, checked before the snapshot is installed.
        digest: Digest,
        /// The whole image's length.
        total_len: u64,
        /// Where in the image `data` starts.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Asks for the piece of snapshot `seq` (`digest`) at `offset`, at most `len` bytes. The
    /// receiver of a transfer keeps a few of these outstanding (flow control) and repeats them
    /// when nothing arrives; the sender keeps no per-receiver state.
    SnapshotPull {
        /// The snapshot being transferred.
        seq: Seq,
        /// Its digest.
        digest: Digest,
        /// Where the wanted piece starts.
        offset: u64,
        /// The most bytes wanted.
        len: u32,
    },
    /// An election strategy's own message, opaque to the core.
    Election(Bytes),
}

impl Message {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::ClientUpdate(_) => "client_update",
            Message::Prepare { .. } => "prepare",
            Message::PrepareOk { .. } => "prepare_ok",
            Message::Proposal { .. } => "proposal",
            Message::Accept { .. } => "accept",
            Message::Alive { .. } => "alive",
            Message::ReconRequest { .. } => "recon_request",
            Message::ReconReply { .. } => "recon_reply",
            Message::SnapshotChunk { .. } => "snapshot_chunk",
            Message::SnapshotPull { .. } => "snapshot_pull",
            Message::Election(_) => "election",
        }
    }
}

impl Message {
    /// The piece of `snapshot`'s image at `offset`, at most `len` bytes, as a SnapshotChunk (the
    /// whole image when `offset` is 0 and `len` is `usize::MAX`; for tests and tools).
    pub fn snapshot_chunk(snapshot: &Snapshot, offset: u64, len: usize) -> Message {
        let image = snapshot.image();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(image.len());
        let end = start.saturating_add(len).min(image.len());
        Message::SnapshotChunk {
            seq: snapshot.seq(),
            digest: snapshot.digest(),
            total_len: snapshot.len(),
            offset: start as u64,
            data: image.slice(start..end),
        }
    }
}

/// A message with its sender, as it travels between servers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending server. Transports check it against the authenticated peer.
    pub from: NodeId,
    /// The message.
    pub message: Message,
}

/// The answer to a client update, sent by the update's local server after execution.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientReply {
    /// The client.
    pub client_id: ClientId,
    /// The timestamp of the executed update.
    pub timestamp: Timestamp,
    /// The state machine's result (empty unless `outcome` is `Applied`).
    pub result: Bytes,
    /// What became of the update.
    pub outcome: ReplyOutcome,
}

/// What became of a client update (see [`crate::config::SessionRules`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplyOutcome {
    /// Executed exactly once; `result` is the state machine's reply.
    Applied,
    /// A registration (timestamp 0) executed: the client's session id from now on.
    SessionOpened(ClientId),
    /// The update's session is not (or no longer) in the exactly-once table: it was not applied
    /// now, and whether an earlier copy of it was applied before the session expired is unknown.
    SessionExpired,
    /// The client id already executed this later timestamp: the update named is a stale
    /// duplicate, or another party uses the id. Not applied now; whether it was applied before
    /// is unknown. (An update older than one still pending is dropped without an answer: the
    /// pending one answers once it executes.)
    Superseded(Timestamp),
}
