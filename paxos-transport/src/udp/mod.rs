//! UDP transport: multicast for messages to all servers, unicast for point-to-point messages,
//! as Paxos-SB used.
//!
//! # Datagram format
//!
//! ```text
//! "PXU" 0x01 | kind u8 | sender u32 | epoch u64 | seq u64 | payload ... | HMAC-SHA256 tag (32)
//! ```
//!
//! All integers are big-endian. The tag covers everything before it and is checked (in constant
//! time) before anything else is parsed. `kind` 0 is a batch: the payload is one or more
//! `u32 length | encoded envelope` items. `kind` 1 is a fragment of one large envelope:
//! `message id u64 | index u16 | count u16 | bytes`, reassembled under a memory bound.
//!
//! `epoch` is chosen when the transport starts (microseconds since the Unix epoch, strictly
//! increasing within a process), `seq` counts the sender's datagrams from 0 within the epoch.
//! Each receiver keeps, per sender, the highest epoch seen and a 1024-datagram sliding window
//! over `seq`: a datagram from an older epoch, older than the window, or already seen is a replay
//! and is dropped. A restarted sender has a higher epoch, so its `seq` starting again at 0 is
//! accepted. (A restarted *receiver* has no window: it can be made to accept each datagram of
//! the sender's current epoch once more; the protocol tolerates duplicates.)
//!
//! # Sizes
//!
//! `max_datagram` bounds every datagram: [`LOOPBACK_DATAGRAM`] (65000) suits loopback and
//! in-host namespaces; use [`ETHERNET_DATAGRAM`] (1472) on real 1500-byte-MTU networks to avoid
//! IP fragmentation. Messages that do not fit one datagram are fragmented; messages larger than
//! `max_message` are refused with an error at the sender and dropped at the receiver, and partial
//! messages held for reassembly never exceed `reassembly_bytes` (the oldest are evicted, and
//! partial messages expire after [`REASSEMBLY_TIMEOUT`]).
//!
//! Messages are queued and a sender task packs whatever is queued for the same destination into
//! as few datagrams as possible, so a burst of sends becomes a few datagrams without any timer.
//!
//! # Modules
//!
//! [`UdpTransport`] is one of the [`Transport`] implementations (docs/architecture.md, "Traits
//! and who implements them"); its design is in docs/transport.md, "UDP multicast".
//!
//! * `config`: [`UdpConfig`] and the datagram size presets;
//! * `socket`: socket setup and multicast membership;
//! * `frame`: the datagram format above (header, HMAC tag, batch payload);
//! * `replay`: sender epochs and the per-sender replay window;
//! * `send`: the outbox (batching, fragmentation) and the sender task (sealing, pacing);
//! * `recv`: the receiver tasks (the order of checks, batch parsing, reassembly).
//!
//! Counters are the crate's shared [`TransportStats`] (`lib.rs`).

mod config;
mod frame;
mod recv;
mod replay;
mod send;
mod socket;

pub use config::{UdpConfig, ETHERNET_DATAGRAM, LOOPBACK_DATAGRAM};
pub use frame::{batch_payload, seal, HEADER_LEN, TAG_LEN};
pub use recv::REASSEMBLY_TIMEOUT;
pub use replay::{durable_epoch, REPLAY_WINDOW};
pub use send::PACE_BYTES;

use crate::{Counters, DropReason, Inbox, Transport, TransportError, TransportStats};
use async_trait::async_trait;
use frame::FRAGMENT_HEADER;
use paxos_core::codec::encode_with_limit;
use paxos_core::{Envelope, NodeId};
use recv::Receiver;
use send::{Dest, Outbox, Sender};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A UDP multicast + unicast transport authenticated with HMAC-SHA256.
#[derive(Debug)]
pub struct UdpTransport {
    id: NodeId,
    addrs: HashMap<NodeId, SocketAddr>,
    max_message: usize,
    outbox: Arc<Outbox>,
    inbox: Inbox,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl Drop for UdpTransport {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl UdpTransport {
    /// Binds the unicast and multicast sockets and starts the sender and receiver tasks. Must
    /// be called inside a tokio runtime.
    pub async fn bind(config: UdpConfig) -> Result<UdpTransport, TransportError> {
        let min = HEADER_LEN + TAG_LEN + FRAGMENT_HEADER + 64;
        if config.max_datagram < min || config.max_datagram > 65_507 {
            return Err(TransportError::Config(format!(
                "max_datagram must be in {min}..=65507"
            )));
        }
        if !config.group.ip().is_multicast() {
            return Err(TransportError::Config(format!(
                "{} is not a multicast group",
                config.group
            )));
        }
        let addrs: HashMap<NodeId, SocketAddr> =
            config.peers.iter().map(|p| (p.id, p.addr)).collect();
        let local = *addrs
            .get(&config.id)
            .ok_or(TransportError::UnknownPeer(config.id))?;

        let uni = Arc::new(socket::unicast(&config, local)?);
        let local_addr = uni.local_addr()?;
        let multi = Arc::new(socket::group(&config)?);

        let counters = Arc::new(Counters::default());
        let max_payload = config.max_datagram - HEADER_LEN - TAG_LEN;
        let outbox = Arc::new(Outbox::new(max_payload, config.send_queue_bytes));
        let (inbound_tx, inbox) = Inbox::new(config.recv_queue);
        let receiver = Arc::new(Receiver::new(
            &config,
            addrs.keys().copied().collect(),
            inbound_tx,
            counters.clone(),
        ));
        let epoch = match &config.epoch_file {
            Some(path) => replay::durable_epoch(path).map_err(|e| {
                TransportError::Config(format!("UDP epoch file {}: {e}", path.display()))
            })?,
            None => replay::new_epoch(),
        };
        let sender = Sender::new(&config, epoch, uni.clone(), counters.clone());
        let tasks = vec![
            tokio::spawn(sender.run(outbox.clone())),
            tokio::spawn(receiver.clone().run(uni)),
            tokio::spawn(receiver.run(multi)),
        ];
        Ok(UdpTransport {
            id: config.id,
            addrs,
            max_message: config.max_message,
            outbox,
            inbox,
            counters,
            tasks,
            local_addr,
        })
    }

    /// The bound unicast address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn enqueue(&self, dest: Dest, env: &Envelope) -> Result<(), TransportError> {
        let bytes = encode_with_limit(env, self.max_message)?;
        self.counters.sent_message();
        if !self.outbox.push(dest, &bytes) {
            self.counters.dropped(DropReason::QueueFull);
        }
        Ok(())
    }
}

#[async_trait]
impl Transport for UdpTransport {
    fn local_id(&self) -> NodeId {
        self.id
    }

    async fn send(&self, to: NodeId, env: &Envelope) -> Result<(), TransportError> {
        let addr = *self.addrs.get(&to).ok_or(TransportError::UnknownPeer(to))?;
        self.enqueue(Dest::Unicast(addr), env)
    }

    async fn broadcast(&self, env: &Envelope) -> Result<(), TransportError> {
        self.enqueue(Dest::Multicast, env)
    }

    async fn recv(&self) -> Result<(NodeId, Envelope), TransportError> {
        self.inbox.recv().await
    }

    fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }
}
