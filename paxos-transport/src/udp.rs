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

use crate::{
    Counters, DropReason, Inbox, InboxSender, PeerConfig, Transport, TransportError, TransportStats,
};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use paxos_core::codec::{decode_with_limit, encode_with_limit, DEFAULT_MAX_MESSAGE_BYTES};
use paxos_core::{Envelope, NodeId};
use sha2::Sha256;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

type HmacSha256 = Hmac<Sha256>;

/// Datagram limit for loopback and in-host namespaces.
pub const LOOPBACK_DATAGRAM: usize = 65_000;
/// Datagram limit for a 1500-byte MTU (1500 - 20 IPv4 - 8 UDP).
pub const ETHERNET_DATAGRAM: usize = 1472;
/// How long a partially reassembled message is kept.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Within one fragmented message, the sender pauses 1 ms after each this many bytes (so a
/// multi-megabyte message does not overrun a receiver's socket buffer; messages up to twice this
/// size are not paced).
pub const PACE_BYTES: usize = 128 << 10;
/// Width of the per-sender replay window, in datagrams.
pub const REPLAY_WINDOW: u64 = 1024;

const MAGIC: [u8; 4] = *b"PXU\x01";
const KIND_BATCH: u8 = 0;
const KIND_FRAGMENT: u8 = 1;
/// Header bytes: magic, kind, sender, epoch, seq.
pub const HEADER_LEN: usize = 4 + 1 + 4 + 8 + 8;
/// Tag bytes.
pub const TAG_LEN: usize = 32;
const FRAGMENT_HEADER: usize = 8 + 2 + 2;

/// Configuration of a [`UdpTransport`].
#[derive(Clone, Debug)]
pub struct UdpConfig {
    /// This node's id; its entry in `peers` is the unicast address to bind.
    pub id: NodeId,
    /// Every member, this one included.
    pub peers: Vec<PeerConfig>,
    /// The multicast group and port every member joins.
    pub group: SocketAddrV4,
    /// The local interface address used for multicast (`IP_MULTICAST_IF` and the join), e.g.
    /// 127.0.0.1 on loopback.
    pub interface: Ipv4Addr,
    /// The cluster key (HMAC-SHA256).
    pub key: [u8; 32],
    /// Largest datagram sent (see the module documentation).
    pub max_datagram: usize,
    /// Largest encoded envelope sent or reassembled.
    pub max_message: usize,
    /// Bound on bytes held in partial (fragmented) messages.
    pub reassembly_bytes: usize,
    /// Bytes queued for sending (not yet handed to the socket) before further sends are
    /// dropped.
    pub send_queue_bytes: usize,
    /// Envelopes received but not yet taken by `recv` before further ones are dropped.
    pub recv_queue: usize,
    /// Requested socket send and receive buffer size.
    pub socket_buffer: usize,
    /// Probability of dropping each outgoing datagram: fault injection for tests, 0 otherwise.
    pub loss: f64,
}

impl UdpConfig {
    /// A configuration with loopback-sized datagrams and default bounds.
    pub fn new(
        id: NodeId,
        peers: Vec<PeerConfig>,
        group: SocketAddrV4,
        interface: Ipv4Addr,
        key: [u8; 32],
    ) -> UdpConfig {
        UdpConfig {
            id,
            peers,
            group,
            interface,
            key,
            max_datagram: LOOPBACK_DATAGRAM,
            max_message: DEFAULT_MAX_MESSAGE_BYTES,
            reassembly_bytes: 64 << 20,
            send_queue_bytes: 16 << 20,
            recv_queue: 65_536,
            socket_buffer: 8 << 20,
            loss: 0.0,
        }
    }

    /// A configuration whose key is read from `keys_dir/cluster.key` and whose multicast
    /// interface is this node's own (IPv4) peer address.
    pub fn from_keys_dir(
        id: NodeId,
        peers: Vec<PeerConfig>,
        group: SocketAddrV4,
        keys_dir: &std::path::Path,
    ) -> Result<UdpConfig, TransportError> {
        let key = crate::keygen::load_cluster_key(keys_dir)?;
        let own = peers
            .iter()
            .find(|p| p.id == id)
            .ok_or(TransportError::UnknownPeer(id))?;
        let interface = match own.addr.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_unspecified() => ip,
            other => {
                return Err(TransportError::Config(format!(
                    "UDP multicast needs this node's IPv4 address, not {other}"
                )))
            }
        };
        Ok(UdpConfig::new(id, peers, group, interface, key))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Dest {
    Unicast(SocketAddr),
    Multicast,
}

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

fn new_epoch() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

/// A keyed HMAC state (cloned per datagram, so the key pads are hashed once).
fn mac(key: &[u8; 32]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

/// Builds a datagram: header, payload, tag. Exposed for tests that forge or tamper datagrams.
pub fn seal(
    key: &[u8; 32],
    kind: u8,
    sender: NodeId,
    epoch: u64,
    seq: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut d = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
    d.resize(HEADER_LEN, 0);
    d.extend_from_slice(payload);
    seal_in_place(&mac(key), kind, sender, epoch, seq, &mut d);
    d
}

/// Writes the header into the first [`HEADER_LEN`] bytes of `d` and appends the tag.
fn seal_in_place(
    keyed: &HmacSha256,
    kind: u8,
    sender: NodeId,
    epoch: u64,
    seq: u64,
    d: &mut Vec<u8>,
) {
    d[..4].copy_from_slice(&MAGIC);
    d[4] = kind;
    d[5..9].copy_from_slice(&sender.0.to_be_bytes());
    d[9..17].copy_from_slice(&epoch.to_be_bytes());
    d[17..25].copy_from_slice(&seq.to_be_bytes());
    let mut m = keyed.clone();
    m.update(d);
    let tag = m.finalize().into_bytes();
    d.extend_from_slice(&tag);
}

/// Builds a batch payload (`u32 length | bytes` per item). Exposed for tests.
pub fn batch_payload(items: &[&[u8]]) -> Vec<u8> {
    let mut p = Vec::new();
    for i in items {
        p.extend_from_slice(&(i.len() as u32).to_be_bytes());
        p.extend_from_slice(i);
    }
    p
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

        let uni = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        let _ = uni.set_send_buffer_size(config.socket_buffer);
        let _ = uni.set_recv_buffer_size(config.socket_buffer);
        uni.set_multicast_if_v4(&config.interface)?;
        uni.set_multicast_ttl_v4(1)?;
        uni.set_multicast_loop_v4(true)?;
        uni.set_nonblocking(true)?;
        uni.bind(&local.into())?;
        let uni = Arc::new(UdpSocket::from_std(uni.into())?);
        let local_addr = uni.local_addr()?;

        let multi = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        multi.set_reuse_address(true)?;
        let _ = multi.set_recv_buffer_size(config.socket_buffer);
        multi.set_nonblocking(true)?;
        multi.bind(&SocketAddr::V4(config.group).into())?;
        multi.join_multicast_v4(config.group.ip(), &config.interface)?;
        let multi = Arc::new(UdpSocket::from_std(multi.into())?);

        let counters = Arc::new(Counters::default());
        let max_payload = config.max_datagram - HEADER_LEN - TAG_LEN;
        let outbox = Arc::new(Outbox {
            state: Mutex::new(OutboxState::default()),
            notify: Notify::new(),
            max_payload,
            limit: config.send_queue_bytes,
        });
        let (inbound_tx, inbox) = Inbox::new(config.recv_queue);
        let receiver = Arc::new(Receiver {
            id: config.id,
            members: addrs.keys().copied().collect(),
            mac: mac(&config.key),
            max_message: config.max_message,
            reassembly_bytes: config.reassembly_bytes,
            state: Mutex::new(RecvState::default()),
            inbound: inbound_tx,
            counters: counters.clone(),
        });
        let sender = Sender {
            id: config.id,
            mac: mac(&config.key),
            epoch: new_epoch(),
            seq: 0,
            socket: uni.clone(),
            group: SocketAddr::V4(config.group),
            counters: counters.clone(),
            loss: config.loss.clamp(0.0, 1.0),
        };
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

/// Datagrams being assembled, shared by the senders and the sender task. Every buffer starts
/// with [`HEADER_LEN`] bytes reserved for the header, so sealing does not copy.
#[derive(Debug)]
struct Outbox {
    state: Mutex<OutboxState>,
    notify: Notify,
    max_payload: usize,
    limit: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    /// Complete datagrams in order: destination, kind, buffer.
    ready: Vec<(Dest, u8, Vec<u8>)>,
    /// The batch being filled per destination.
    open: Vec<(Dest, Vec<u8>)>,
    bytes: usize,
    msg_id: u64,
}

impl Outbox {
    /// Queues one encoded envelope; false if the queue is full.
    fn push(&self, dest: Dest, msg: &[u8]) -> bool {
        let mut st = self.state.lock().expect("udp outbox");
        if st.bytes + msg.len() > self.limit {
            return false;
        }
        st.bytes += msg.len();
        let i = match st.open.iter().position(|(d, _)| *d == dest) {
            Some(i) => i,
            None => {
                st.open.push((dest, Vec::new()));
                st.open.len() - 1
            }
        };
        let fits_alone = msg.len() + 4 <= self.max_payload;
        let used = st.open[i].1.len().saturating_sub(HEADER_LEN);
        if used > 0 && (!fits_alone || used + 4 + msg.len() > self.max_payload) {
            let full = std::mem::take(&mut st.open[i].1);
            st.ready.push((dest, KIND_BATCH, full));
        }
        if fits_alone {
            let buf = &mut st.open[i].1;
            if buf.is_empty() {
                buf.reserve(HEADER_LEN + self.max_payload.min(4 * (msg.len() + 4)) + TAG_LEN);
                buf.resize(HEADER_LEN, 0);
            }
            buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            buf.extend_from_slice(msg);
        } else {
            let chunk = self.max_payload - FRAGMENT_HEADER;
            let count = msg.len().div_ceil(chunk);
            if count > u16::MAX as usize {
                st.bytes -= msg.len();
                return false;
            }
            let id = st.msg_id;
            st.msg_id += 1;
            for (index, part) in msg.chunks(chunk).enumerate() {
                let mut p = Vec::with_capacity(HEADER_LEN + FRAGMENT_HEADER + part.len() + TAG_LEN);
                p.resize(HEADER_LEN, 0);
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&(index as u16).to_be_bytes());
                p.extend_from_slice(&(count as u16).to_be_bytes());
                p.extend_from_slice(part);
                st.ready.push((dest, KIND_FRAGMENT, p));
            }
        }
        drop(st);
        self.notify.notify_one();
        true
    }

    /// Takes every queued datagram, complete ones first, in order.
    fn take(&self) -> Vec<(Dest, u8, Vec<u8>)> {
        let mut st = self.state.lock().expect("udp outbox");
        let mut out = std::mem::take(&mut st.ready);
        for (dest, buf) in st.open.iter_mut() {
            if buf.len() > HEADER_LEN {
                out.push((*dest, KIND_BATCH, std::mem::take(buf)));
            }
        }
        st.bytes = 0;
        out
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

struct Sender {
    id: NodeId,
    mac: HmacSha256,
    epoch: u64,
    seq: u64,
    socket: Arc<UdpSocket>,
    group: SocketAddr,
    counters: Arc<Counters>,
    loss: f64,
}

impl Sender {
    async fn run(mut self, outbox: Arc<Outbox>) {
        loop {
            outbox.notify.notified().await;
            // Let concurrent senders add to the batch before it is taken (costs microseconds).
            tokio::task::yield_now().await;
            loop {
                let datagrams = outbox.take();
                if datagrams.is_empty() {
                    break;
                }
                for (dest, kind, d) in datagrams {
                    if kind == KIND_FRAGMENT && d.len() > HEADER_LEN + FRAGMENT_HEADER {
                        // Pace long fragment trains (snapshots): a 1 ms pause every
                        // PACE_BYTES lets receivers with small socket buffers keep up.
                        let index = be_u16(&d[HEADER_LEN + 8..]) as usize;
                        let chunk = d.len() - HEADER_LEN - FRAGMENT_HEADER;
                        let every = (PACE_BYTES / chunk.max(1)).max(1);
                        if index > 0 && index % every == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    self.emit(dest, kind, d).await;
                }
            }
        }
    }

    async fn emit(&mut self, dest: Dest, kind: u8, mut d: Vec<u8>) {
        seal_in_place(&self.mac, kind, self.id, self.epoch, self.seq, &mut d);
        self.seq += 1;
        if self.loss > 0.0 && rand::random::<f64>() < self.loss {
            self.counters.dropped(DropReason::Injected);
            return;
        }
        let addr = match dest {
            Dest::Unicast(a) => a,
            Dest::Multicast => self.group,
        };
        match self.socket.send_to(&d, addr).await {
            Ok(_) => self.counters.sent_packet(d.len()),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "udp send failed");
                self.counters.dropped(DropReason::QueueFull);
            }
        }
    }
}

/// A per-sender replay window: highest epoch, highest seq and a bitmap of recent seqs.
#[derive(Debug)]
struct Window {
    epoch: u64,
    top: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl Window {
    fn new(epoch: u64, seq: u64) -> Window {
        let mut w = Window {
            epoch,
            top: seq,
            bits: [0; (REPLAY_WINDOW / 64) as usize],
        };
        w.set(seq);
        w
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % REPLAY_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn set(&mut self, seq: u64) {
        let (w, b) = Window::slot(seq);
        self.bits[w] |= b;
    }

    /// Whether `(epoch, seq)` is new; records it if so.
    fn accept(&mut self, epoch: u64, seq: u64) -> bool {
        if epoch < self.epoch {
            return false;
        }
        if epoch > self.epoch {
            *self = Window::new(epoch, seq);
            return true;
        }
        if seq > self.top {
            let advance = seq - self.top;
            if advance >= REPLAY_WINDOW {
                self.bits = [0; (REPLAY_WINDOW / 64) as usize];
            } else {
                for s in self.top + 1..=seq {
                    let (w, b) = Window::slot(s);
                    self.bits[w] &= !b;
                }
            }
            self.top = seq;
            self.set(seq);
            return true;
        }
        if self.top - seq >= REPLAY_WINDOW {
            return false;
        }
        let (w, b) = Window::slot(seq);
        if self.bits[w] & b != 0 {
            return false;
        }
        self.bits[w] |= b;
        true
    }
}

#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    got: usize,
    bytes: usize,
    started: Instant,
}

#[derive(Debug, Default)]
struct RecvState {
    windows: HashMap<NodeId, Window>,
    partials: HashMap<(NodeId, u64, u64), Partial>,
    partial_bytes: usize,
}

#[derive(Debug)]
struct Receiver {
    id: NodeId,
    members: Vec<NodeId>,
    mac: HmacSha256,
    max_message: usize,
    reassembly_bytes: usize,
    state: Mutex<RecvState>,
    inbound: InboxSender,
    counters: Arc<Counters>,
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}
fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}
fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b[..2].try_into().expect("2 bytes"))
}

impl Receiver {
    async fn run(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, _)) => self.datagram(&buf[..n]),
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive failed");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    fn datagram(&self, d: &[u8]) {
        self.counters.received_bytes(d.len());
        if d.len() < HEADER_LEN + TAG_LEN || d[..4] != MAGIC {
            self.counters.dropped(DropReason::Malformed);
            return;
        }
        if be_u32(&d[5..]) == self.id.0 {
            // Our own multicast, looped back: no genuine datagram claims to come from us.
            return;
        }
        let (body, tag) = d.split_at(d.len() - TAG_LEN);
        let mut m = self.mac.clone();
        m.update(body);
        if m.verify_slice(tag).is_err() {
            self.counters.dropped(DropReason::Unauthenticated);
            return;
        }
        let kind = body[4];
        let sender = NodeId(be_u32(&body[5..]));
        let epoch = be_u64(&body[9..]);
        let seq = be_u64(&body[17..]);
        let payload = &body[HEADER_LEN..];
        if !self.members.contains(&sender) {
            self.counters.dropped(DropReason::NonMember);
            return;
        }
        let mut state = self.state.lock().expect("udp receive state");
        let fresh = match state.windows.get_mut(&sender) {
            Some(w) => w.accept(epoch, seq),
            None => {
                state.windows.insert(sender, Window::new(epoch, seq));
                true
            }
        };
        if !fresh {
            self.counters.dropped(DropReason::Replay);
            return;
        }
        match kind {
            KIND_BATCH => {
                drop(state);
                let mut out = Vec::new();
                self.batch(sender, payload, &mut out);
                Inbox::push(&self.inbound, out, &self.counters);
            }
            KIND_FRAGMENT => {
                if let Some(msg) = self.fragment(&mut state, sender, epoch, payload) {
                    drop(state);
                    let mut out = Vec::new();
                    self.deliver(sender, &msg, &mut out);
                    Inbox::push(&self.inbound, out, &self.counters);
                }
            }
            _ => self.counters.dropped(DropReason::Malformed),
        }
    }

    fn batch(&self, sender: NodeId, mut p: &[u8], out: &mut Vec<(NodeId, Envelope)>) {
        if p.is_empty() {
            self.counters.dropped(DropReason::Malformed);
        }
        while !p.is_empty() {
            if p.len() < 4 {
                self.counters.dropped(DropReason::Malformed);
                return;
            }
            let len = be_u32(p) as usize;
            if len == 0 || len > p.len() - 4 {
                self.counters.dropped(DropReason::Malformed);
                return;
            }
            self.deliver(sender, &p[4..4 + len], out);
            p = &p[4 + len..];
        }
    }

    fn fragment(
        &self,
        state: &mut RecvState,
        sender: NodeId,
        epoch: u64,
        p: &[u8],
    ) -> Option<Vec<u8>> {
        if p.len() <= FRAGMENT_HEADER {
            self.counters.dropped(DropReason::Malformed);
            return None;
        }
        let id = be_u64(p);
        let index = be_u16(&p[8..]) as usize;
        let count = be_u16(&p[10..]) as usize;
        let data = &p[FRAGMENT_HEADER..];
        if count < 2
            || index >= count
            || count.saturating_mul(data.len()) > self.max_message + data.len()
        {
            self.counters.dropped(DropReason::Malformed);
            return None;
        }
        let key = (sender, epoch, id);
        // Expire old partials and make room.
        let now = Instant::now();
        if !state.partials.contains_key(&key)
            || state.partial_bytes + data.len() > self.reassembly_bytes
        {
            let mut evicted = 0;
            loop {
                let expired: Vec<_> = state
                    .partials
                    .iter()
                    .filter(|(_, v)| now.duration_since(v.started) > REASSEMBLY_TIMEOUT)
                    .map(|(k, _)| *k)
                    .collect();
                for k in expired {
                    if let Some(v) = state.partials.remove(&k) {
                        state.partial_bytes -= v.bytes;
                        evicted += 1;
                    }
                }
                if state.partial_bytes + data.len() <= self.reassembly_bytes {
                    break;
                }
                let oldest = state
                    .partials
                    .iter()
                    .min_by_key(|(_, v)| v.started)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => {
                        let v = state.partials.remove(&k).expect("present");
                        state.partial_bytes -= v.bytes;
                        evicted += 1;
                    }
                    None => {
                        self.counters.dropped(DropReason::Reassembly);
                        return None;
                    }
                }
            }
            for _ in 0..evicted {
                self.counters.dropped(DropReason::Reassembly);
            }
        }
        let partial = state.partials.entry(key).or_insert_with(|| Partial {
            parts: vec![None; count],
            got: 0,
            bytes: 0,
            started: now,
        });
        if partial.parts.len() != count || partial.parts[index].is_some() {
            self.counters.dropped(DropReason::Malformed);
            return None;
        }
        partial.parts[index] = Some(data.to_vec());
        partial.got += 1;
        partial.bytes += data.len();
        state.partial_bytes += data.len();
        if partial.got < count {
            return None;
        }
        let done = state.partials.remove(&key).expect("present");
        state.partial_bytes -= done.bytes;
        let mut msg = Vec::with_capacity(done.bytes);
        for part in done.parts.into_iter().flatten() {
            msg.extend_from_slice(&part);
        }
        Some(msg)
    }

    fn deliver(&self, sender: NodeId, bytes: &[u8], out: &mut Vec<(NodeId, Envelope)>) {
        let env: Envelope = match decode_with_limit(bytes, self.max_message) {
            Ok(env) => env,
            Err(_) => {
                self.counters.dropped(DropReason::Malformed);
                return;
            }
        };
        if env.from != sender {
            self.counters.dropped(DropReason::ForgedSender);
            return;
        }
        out.push((sender, env));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rejects_replays_and_accepts_new_epochs() {
        let mut w = Window::new(5, 0);
        assert!(!w.accept(5, 0));
        assert!(w.accept(5, 2));
        assert!(w.accept(5, 1));
        assert!(!w.accept(5, 1));
        assert!(w.accept(5, 2000));
        assert!(!w.accept(5, 2));
        assert!(w.accept(5, 1500));
        assert!(!w.accept(5, 1500));
        assert!(!w.accept(4, 3000));
        assert!(w.accept(6, 0));
        assert!(!w.accept(5, 5000));
        assert!(!w.accept(6, 0));
    }

    #[test]
    fn epochs_increase() {
        let a = new_epoch();
        let b = new_epoch();
        assert!(b > a);
    }
}
