//! # paxos-transport
//!
//! Message transports for `paxos-core` behind one async trait, [`Transport`]:
//!
//! * [`mem::MemNetwork`]: in-process, for tests and in-process clusters, with loss, delay and
//!   partition controls;
//! * [`udp::UdpTransport`]: UDP multicast for messages to all servers and unicast for
//!   point-to-point messages, as Paxos-SB used; several messages are batched per datagram,
//!   large messages are fragmented and reassembled under a memory bound, and every datagram is
//!   authenticated with HMAC-SHA256 under a cluster key with a replay window per sender;
//! * [`quic::QuicTransport`]: QUIC (quinn) with mutual TLS, where each node's certificate is
//!   signed by the cluster CA and names the node (`node-<id>.paxos`).
//!
//! Every transport hands the receiver `(authenticated sender, envelope)` and drops (and counts in
//! [`TransportStats`]) anything from a non-member, anything unauthenticated, malformed or
//! replayed, and any envelope whose `from` differs from the authenticated sender. Sends never
//! block on a dead peer: queues are bounded and a full queue drops the message (the protocol
//! retransmits). [`keygen`] writes the key material the transports read.

use async_trait::async_trait;
use paxos_core::{Envelope, NodeId};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

pub mod keygen;
pub mod mem;
pub mod quic;
pub mod udp;

pub use paxos_core::codec::CodecError;

/// One member of the cluster as a transport sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerConfig {
    /// The member's id.
    pub id: NodeId,
    /// Where the member listens (UDP unicast socket or QUIC endpoint).
    pub addr: SocketAddr,
}

/// Why a transport operation failed.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The destination is not a member of the cluster.
    #[error("{0:?} is not a member")]
    UnknownPeer(NodeId),
    /// The message could not be encoded (or is larger than the transport's limit).
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A socket operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// TLS or certificate material was invalid.
    #[error("tls: {0}")]
    Tls(String),
    /// Key material could not be generated, read or written.
    #[error("keys: {0}")]
    Keys(String),
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The transport was shut down.
    #[error("transport closed")]
    Closed,
    /// Some messages of a [`Transport::send_batch`] failed; every other one was still sent.
    #[error("{failed} of {total} messages not sent; the first failure: {first}")]
    Partial {
        /// How many failed.
        failed: usize,
        /// How many the batch held.
        total: usize,
        /// The first failure.
        first: Box<TransportError>,
    },
}

impl TransportError {
    /// How many messages this error stands for (a [`TransportError::Partial`] counts each).
    pub fn failed_messages(&self) -> usize {
        match self {
            TransportError::Partial { failed, .. } => *failed,
            _ => 1,
        }
    }
}

/// Counters of a transport, as returned by [`Transport::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Envelopes accepted for sending (a broadcast counts once).
    pub sent_messages: u64,
    /// Datagrams (UDP), frames (QUIC) or envelopes (memory) put on the wire.
    pub sent_packets: u64,
    /// Payload bytes put on the wire.
    pub sent_bytes: u64,
    /// Envelopes delivered to [`Transport::recv`].
    pub received_messages: u64,
    /// Bytes received (before authentication).
    pub received_bytes: u64,
    /// Outgoing messages dropped because a queue was full (or the peer unreachable).
    pub dropped_queue_full: u64,
    /// Incoming packets dropped because authentication failed (bad tag, missing or wrong
    /// certificate, failed handshake).
    pub dropped_unauthenticated: u64,
    /// Incoming packets dropped because they were malformed or truncated.
    pub dropped_malformed: u64,
    /// Incoming datagrams dropped as replays (or too old for the replay window).
    pub dropped_replay: u64,
    /// Incoming packets or connections dropped because the sender is not a member.
    pub dropped_non_member: u64,
    /// Incoming envelopes dropped because `from` differs from the authenticated sender.
    pub dropped_forged_sender: u64,
    /// Incoming envelopes dropped because the receive queue was full.
    pub dropped_inbound_full: u64,
    /// Incoming messages lost by the (test) loss control or an open partition (memory only).
    pub dropped_injected: u64,
    /// Fragments dropped because the reassembly buffer was over its bound or timed out.
    pub dropped_reassembly: u64,
}

impl TransportStats {
    /// Every drop counter summed.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_unauthenticated
            + self.dropped_malformed
            + self.dropped_replay
            + self.dropped_non_member
            + self.dropped_forged_sender
            + self.dropped_inbound_full
            + self.dropped_injected
            + self.dropped_reassembly
    }
}

/// Which counter of [`Counters`] to bump.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DropReason {
    QueueFull,
    Unauthenticated,
    Malformed,
    Replay,
    NonMember,
    ForgedSender,
    InboundFull,
    Injected,
    Reassembly,
}

/// Lock-free counters behind [`TransportStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent_messages: AtomicU64,
    sent_packets: AtomicU64,
    sent_bytes: AtomicU64,
    received_messages: AtomicU64,
    received_bytes: AtomicU64,
    drops: [AtomicU64; 9],
}

impl Counters {
    pub(crate) fn sent_message(&self) {
        self.sent_messages.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn sent_packet(&self, bytes: usize) {
        self.sent_packets.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(crate) fn sent_packets(&self, packets: u64, bytes: usize) {
        self.sent_packets.fetch_add(packets, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(crate) fn received_message(&self) {
        self.received_messages.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn received_bytes(&self, bytes: usize) {
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(crate) fn dropped(&self, why: DropReason) {
        self.drops[why as usize].fetch_add(1, Ordering::Relaxed);
        tracing::trace!(?why, "dropped");
    }
    pub(crate) fn snapshot(&self) -> TransportStats {
        let d = |w: DropReason| self.drops[w as usize].load(Ordering::Relaxed);
        TransportStats {
            sent_messages: self.sent_messages.load(Ordering::Relaxed),
            sent_packets: self.sent_packets.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received_messages: self.received_messages.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            dropped_queue_full: d(DropReason::QueueFull),
            dropped_unauthenticated: d(DropReason::Unauthenticated),
            dropped_malformed: d(DropReason::Malformed),
            dropped_replay: d(DropReason::Replay),
            dropped_non_member: d(DropReason::NonMember),
            dropped_forged_sender: d(DropReason::ForgedSender),
            dropped_inbound_full: d(DropReason::InboundFull),
            dropped_injected: d(DropReason::Injected),
            dropped_reassembly: d(DropReason::Reassembly),
        }
    }
}

/// A bounded queue of received envelopes, filled in batches (one per datagram or stream read)
/// and drained one envelope per [`Transport::recv`].
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: tokio::sync::Mutex<InboxState>,
}

type InboxState = (
    tokio::sync::mpsc::Receiver<Vec<(NodeId, Envelope)>>,
    std::collections::VecDeque<(NodeId, Envelope)>,
);

/// The sending side of an [`Inbox`].
pub(crate) type InboxSender = tokio::sync::mpsc::Sender<Vec<(NodeId, Envelope)>>;

impl Inbox {
    /// An inbox holding about `capacity` envelopes (in batches).
    pub(crate) fn new(capacity: usize) -> (InboxSender, Inbox) {
        let (tx, rx) = tokio::sync::mpsc::channel((capacity / 64).max(16));
        (
            tx,
            Inbox {
                rx: tokio::sync::Mutex::new((rx, Default::default())),
            },
        )
    }

    /// Queues a batch, counting it as received or, when full, as dropped.
    pub(crate) fn push(tx: &InboxSender, batch: Vec<(NodeId, Envelope)>, counters: &Counters) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        // Counted before the hand-over so a receiver never sees a message its stats miss.
        counters.received_messages.fetch_add(n, Ordering::Relaxed);
        if tx.try_send(batch).is_err() {
            counters.received_messages.fetch_sub(n, Ordering::Relaxed);
            counters.drops[DropReason::InboundFull as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The next envelope.
    pub(crate) async fn recv(&self) -> Result<(NodeId, Envelope), TransportError> {
        let mut g = self.rx.lock().await;
        if let Some(m) = g.1.pop_front() {
            return Ok(m);
        }
        let batch = g.0.recv().await.ok_or(TransportError::Closed)?;
        g.1.extend(batch);
        g.1.pop_front().ok_or(TransportError::Closed)
    }
}

/// A way for servers to exchange [`Envelope`]s.
///
/// Delivery is best effort (messages may be lost, duplicated by the peer's retransmission, or
/// reordered across peers); what is delivered is authenticated: the [`NodeId`] returned by
/// [`recv`](Transport::recv) is the member the transport authenticated, and it equals the
/// envelope's `from`.
#[async_trait]
pub trait Transport: Send + Sync {
    /// This node's id.
    fn local_id(&self) -> NodeId;

    /// Queues `env` for one member. Returns once queued (or dropped because the queue is full,
    /// which is counted); never waits on a dead peer.
    async fn send(&self, to: NodeId, env: &Envelope) -> Result<(), TransportError>;

    /// Queues `env` for every other member (one multicast where the transport has one).
    async fn broadcast(&self, env: &Envelope) -> Result<(), TransportError>;

    /// Queues several messages; transports that batch put as many as fit in each packet.
    /// `None` as destination means every other member. One failed message does not stop the
    /// others: every one is tried, and the failures come back as [`TransportError::Partial`]
    /// (one bad destination used to drop the rest of the driver's round).
    async fn send_batch(&self, batch: &[(Option<NodeId>, Envelope)]) -> Result<(), TransportError> {
        let mut failed = 0;
        let mut first = None;
        for (to, env) in batch {
            let r = match to {
                Some(to) => self.send(*to, env).await,
                None => self.broadcast(env).await,
            };
            if let Err(e) = r {
                if matches!(e, TransportError::Closed) {
                    return Err(e);
                }
                failed += 1;
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(first) => Err(TransportError::Partial {
                failed,
                total: batch.len(),
                first: Box::new(first),
            }),
        }
    }

    /// The next envelope from an authenticated member, with that member's id.
    async fn recv(&self) -> Result<(NodeId, Envelope), TransportError>;

    /// The transport's counters.
    fn stats(&self) -> TransportStats;
}

/// The DNS name a node's certificate carries and QUIC clients verify: `node-<id>.paxos`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{}.paxos", id.0)
}
