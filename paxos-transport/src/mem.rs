//! In-memory transport for tests and in-process clusters.
//!
//! A [`MemNetwork`] connects [`MemTransport`] endpoints in one process. Messages travel encoded
//! (through the one codec, so size limits and decoding are exercised) over bounded queues. The
//! network has test controls: a loss probability, a delivery delay and partitions between pairs
//! of nodes. Creating an endpoint again for the same id models a restart: the old endpoint stops
//! receiving.

use crate::{Counters, DropReason, Transport, TransportError, TransportStats};
use async_trait::async_trait;
use bytes::Bytes;
use paxos_core::codec::{decode_with_limit, encode_with_limit, DEFAULT_MAX_MESSAGE_BYTES};
use paxos_core::{Envelope, NodeId};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The capacity of each endpoint's receive queue unless set otherwise.
pub const DEFAULT_QUEUE: usize = 65_536;

type Packet = (NodeId, Bytes);

#[derive(Debug, Default)]
struct Controls {
    loss: f64,
    delay: Duration,
    blocked: HashSet<(NodeId, NodeId)>,
}

#[derive(Debug)]
struct Endpoint {
    tx: mpsc::Sender<Packet>,
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct Shared {
    members: Vec<NodeId>,
    queue: usize,
    max_message: usize,
    controls: Mutex<Controls>,
    endpoints: Mutex<HashMap<NodeId, Endpoint>>,
}

/// An in-process network joining [`MemTransport`]s.
#[derive(Clone, Debug)]
pub struct MemNetwork {
    shared: Arc<Shared>,
}

impl MemNetwork {
    /// A network for the given members with [`DEFAULT_QUEUE`] slots per receive queue.
    pub fn new(members: impl IntoIterator<Item = NodeId>) -> MemNetwork {
        MemNetwork::with_queue(members, DEFAULT_QUEUE)
    }

    /// A network whose receive queues hold `queue` envelopes (more are dropped and counted).
    pub fn with_queue(members: impl IntoIterator<Item = NodeId>, queue: usize) -> MemNetwork {
        MemNetwork {
            shared: Arc::new(Shared {
                members: members.into_iter().collect(),
                queue: queue.max(1),
                max_message: DEFAULT_MAX_MESSAGE_BYTES,
                controls: Mutex::new(Controls::default()),
                endpoints: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The endpoint of member `id`. Calling it again for the same id replaces (restarts) it.
    pub fn endpoint(&self, id: NodeId) -> Result<MemTransport, TransportError> {
        if !self.shared.members.contains(&id) {
            return Err(TransportError::UnknownPeer(id));
        }
        Ok(self.attach(id))
    }

    /// An endpoint for an id that is not a member: what it sends is dropped as from a
    /// non-member. For security tests.
    pub fn outsider(&self, id: NodeId) -> MemTransport {
        self.attach(id)
    }

    fn attach(&self, id: NodeId) -> MemTransport {
        let (tx, rx) = mpsc::channel(self.shared.queue);
        let counters = Arc::new(Counters::default());
        self.shared.endpoints.lock().expect("endpoints").insert(
            id,
            Endpoint {
                tx,
                counters: counters.clone(),
            },
        );
        MemTransport {
            id,
            shared: self.shared.clone(),
            rx: tokio::sync::Mutex::new(rx),
            counters,
        }
    }

    /// Loses each message with probability `p` (0 = reliable).
    pub fn set_loss(&self, p: f64) {
        self.shared.controls.lock().expect("controls").loss = p.clamp(0.0, 1.0);
    }

    /// Delays every delivery by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.controls.lock().expect("controls").delay = delay;
    }

    /// Cuts (both directions) between `a` and `b`.
    pub fn partition(&self, a: NodeId, b: NodeId) {
        let mut c = self.shared.controls.lock().expect("controls");
        c.blocked.insert((a, b));
        c.blocked.insert((b, a));
    }

    /// Isolates `a` from every member.
    pub fn isolate(&self, a: NodeId) {
        for &b in &self.shared.members {
            if b != a {
                self.partition(a, b);
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.shared
            .controls
            .lock()
            .expect("controls")
            .blocked
            .clear();
    }
}

/// One node's endpoint on a [`MemNetwork`].
#[derive(Debug)]
pub struct MemTransport {
    id: NodeId,
    shared: Arc<Shared>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Packet>>,
    counters: Arc<Counters>,
}

impl MemTransport {
    fn deliver(&self, to: NodeId, bytes: Bytes) {
        let (lost, delay) = {
            let c = self.shared.controls.lock().expect("controls");
            let lost = c.blocked.contains(&(self.id, to))
                || (c.loss > 0.0 && rand::thread_rng().gen_bool(c.loss));
            (lost, c.delay)
        };
        let endpoints = self.shared.endpoints.lock().expect("endpoints");
        let Some(ep) = endpoints.get(&to) else {
            self.counters.dropped(DropReason::QueueFull);
            return;
        };
        if lost {
            ep.counters.dropped(DropReason::Injected);
            return;
        }
        self.counters.sent_packet(bytes.len());
        if delay.is_zero() {
            if ep.tx.try_send((self.id, bytes)).is_err() {
                ep.counters.dropped(DropReason::InboundFull);
            }
        } else {
            let tx = ep.tx.clone();
            let counters = ep.counters.clone();
            let from = self.id;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if tx.try_send((from, bytes)).is_err() {
                    counters.dropped(DropReason::InboundFull);
                }
            });
        }
    }

    fn encode(&self, env: &Envelope) -> Result<Bytes, TransportError> {
        Ok(Bytes::from(encode_with_limit(
            env,
            self.shared.max_message,
        )?))
    }
}

#[async_trait]
impl Transport for MemTransport {
    fn local_id(&self) -> NodeId {
        self.id
    }

    async fn send(&self, to: NodeId, env: &Envelope) -> Result<(), TransportError> {
        if !self.shared.members.contains(&to) {
            return Err(TransportError::UnknownPeer(to));
        }
        let bytes = self.encode(env)?;
        self.counters.sent_message();
        self.deliver(to, bytes);
        Ok(())
    }

    async fn broadcast(&self, env: &Envelope) -> Result<(), TransportError> {
        let bytes = self.encode(env)?;
        self.counters.sent_message();
        for &to in &self.shared.members {
            if to != self.id {
                self.deliver(to, bytes.clone());
            }
        }
        Ok(())
    }

    async fn recv(&self) -> Result<(NodeId, Envelope), TransportError> {
        let mut rx = self.rx.lock().await;
        loop {
            let (from, bytes) = rx.recv().await.ok_or(TransportError::Closed)?;
            self.counters.received_bytes(bytes.len());
            if !self.shared.members.contains(&from) {
                self.counters.dropped(DropReason::NonMember);
                continue;
            }
            let env: Envelope = match decode_with_limit(&bytes, self.shared.max_message) {
                Ok(env) => env,
                Err(_) => {
                    self.counters.dropped(DropReason::Malformed);
                    continue;
                }
            };
            if env.from != from {
                self.counters.dropped(DropReason::ForgedSender);
                continue;
            }
            self.counters.received_message();
            return Ok((from, env));
        }
    }

    fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }
}
