//! QUIC transport (quinn) with mutual TLS under a cluster CA.
//!
//! Every node presents a certificate signed by the cluster CA whose DNS name is
//! `node-<id>.paxos` ([`crate::node_name`]); see [`crate::keygen`]. Each pair of nodes shares one
//! connection, dialled by the lower id and accepted by the higher; each side sends on its own
//! unidirectional stream of `u32 length | encoded envelope` frames. The client side verifies
//! that the server's certificate chains to the cluster CA and names the peer it dialled; the
//! server side requires a client certificate chaining to the cluster CA and maps it to the member
//! it names. Connections without a certificate, with a self-signed certificate or one from
//! another CA fail the handshake; a certificate naming a non-member is refused after it; an
//! envelope whose `from` differs from the authenticated peer is dropped. All are counted.
//!
//! A connection that fails or closes is re-dialled (by the lower id) with exponential backoff
//! (50 ms to 1 s); frames wait in the peer's queue until a connection is up.
//! Sends go to a bounded queue per peer and are dropped (and counted) when it is full, so a dead
//! peer never blocks the sender.

use crate::keygen::NodeTls;
use crate::{
    node_name, Counters, DropReason, Inbox, InboxSender, PeerConfig, Transport, TransportError,
    TransportStats,
};
use async_trait::async_trait;
use paxos_core::codec::{decode_with_limit, encode_with_limit, DEFAULT_MAX_MESSAGE_BYTES};
use paxos_core::{Envelope, NodeId};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The ALPN protocol name.
pub const ALPN: &[u8] = b"paxos-sb/1";

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Configuration of a [`QuicTransport`].
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// This node's id; its entry in `peers` is the address to bind.
    pub id: NodeId,
    /// Every member, this one included.
    pub peers: Vec<PeerConfig>,
    /// This node's certificate, key and the cluster CA.
    pub tls: NodeTls,
    /// Largest encoded envelope sent or received.
    pub max_message: usize,
    /// Bytes queued per peer (not yet written to its stream) before further sends to it are
    /// dropped.
    pub send_queue_bytes: usize,
    /// Envelopes received but not yet taken by `recv` before further ones are dropped.
    pub recv_queue: usize,
    /// A connection silent this long is closed (and re-dialled when there is something to send).
    pub idle_timeout: Duration,
    /// Keep-alive interval (must be below `idle_timeout`).
    pub keep_alive: Duration,
    /// Requested UDP socket send and receive buffer size.
    pub socket_buffer: usize,
}

impl QuicConfig {
    /// A configuration with default bounds.
    pub fn new(id: NodeId, peers: Vec<PeerConfig>, tls: NodeTls) -> QuicConfig {
        QuicConfig {
            id,
            peers,
            tls,
            max_message: DEFAULT_MAX_MESSAGE_BYTES,
            send_queue_bytes: 16 << 20,
            recv_queue: 65_536,
            idle_timeout: Duration::from_secs(3),
            keep_alive: Duration::from_millis(500),
            socket_buffer: 8 << 20,
        }
    }

    /// A configuration whose TLS identity is read from `keys_dir` (`ca.pem`, `node-<id>.pem`,
    /// `node-<id>.key`, as written by [`crate::keygen::keygen`]).
    pub fn from_keys_dir(
        id: NodeId,
        peers: Vec<PeerConfig>,
        keys_dir: &std::path::Path,
    ) -> Result<QuicConfig, TransportError> {
        Ok(QuicConfig::new(
            id,
            peers,
            crate::keygen::load_node_tls(keys_dir, id)?,
        ))
    }
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// The rustls server and client configurations of a node (exposed for tests that build raw
/// clients).
pub fn rustls_configs(
    tls: &NodeTls,
) -> Result<(rustls::ServerConfig, rustls::ClientConfig), TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(tls.ca.clone()).map_err(tls_err)?;
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(tls_err)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(tls_err)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(tls_err)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok((server, client))
}

/// The QUIC transport parameters used by every node.
pub fn transport_config(
    idle: Duration,
    keep_alive: Duration,
) -> Result<quinn::TransportConfig, TransportError> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(idle.try_into().map_err(tls_err)?));
    t.keep_alive_interval(Some(keep_alive));
    t.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    t.receive_window(quinn::VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(16));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(0));
    // Paths with a large MTU (loopback, jumbo frames) get large packets; others settle at
    // their MTU.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(65_000);
    t.mtu_discovery_config(Some(mtu));
    Ok(t)
}

/// Binds a UDP socket with the requested buffers for a quinn endpoint.
fn bind_socket(addr: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket, TransportError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_send_buffer_size(buffer);
    let _ = s.set_recv_buffer_size(buffer);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Builds a quinn endpoint from server and client TLS configurations (exposed for tests).
pub fn endpoint(
    bind: SocketAddr,
    server: Option<rustls::ServerConfig>,
    client: rustls::ClientConfig,
    transport: quinn::TransportConfig,
    socket_buffer: usize,
) -> Result<quinn::Endpoint, TransportError> {
    let transport = Arc::new(transport);
    let server = match server {
        Some(server) => {
            let mut s = quinn::ServerConfig::with_crypto(Arc::new(
                QuicServerConfig::try_from(server).map_err(tls_err)?,
            ));
            s.transport_config(transport.clone());
            Some(s)
        }
        None => None,
    };
    let mut c = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client).map_err(tls_err)?,
    ));
    c.transport_config(transport);
    let socket = bind_socket(bind, socket_buffer)?;
    let mut ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    ep.set_default_client_config(c);
    Ok(ep)
}

/// Which member a certificate chain names, if any (the chain is already verified by rustls).
fn member_of(chain: &[CertificateDer<'static>], members: &[NodeId]) -> Option<NodeId> {
    let leaf = chain.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    members.iter().copied().find(|&id| {
        ServerName::try_from(node_name(id))
            .map(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
            .unwrap_or(false)
    })
}

/// A QUIC transport with mutual TLS.
#[derive(Debug)]
pub struct QuicTransport {
    id: NodeId,
    queues: HashMap<NodeId, Arc<PeerQueue>>,
    max_message: usize,
    inbox: Inbox,
    counters: Arc<Counters>,
    endpoint: quinn::Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
    }
}

impl QuicTransport {
    /// Binds the endpoint and starts dialling peers and accepting connections. Must be called
    /// inside a tokio runtime.
    pub async fn bind(config: QuicConfig) -> Result<QuicTransport, TransportError> {
        let local = config
            .peers
            .iter()
            .find(|p| p.id == config.id)
            .ok_or(TransportError::UnknownPeer(config.id))?
            .addr;
        let (server, client) = rustls_configs(&config.tls)?;
        let endpoint = endpoint(
            local,
            Some(server),
            client,
            transport_config(config.idle_timeout, config.keep_alive)?,
            config.socket_buffer,
        )?;
        let counters = Arc::new(Counters::default());
        let (inbound_tx, inbox) = Inbox::new(config.recv_queue);
        let members: Arc<Vec<NodeId>> = Arc::new(
            config
                .peers
                .iter()
                .map(|p| p.id)
                .filter(|&id| id != config.id)
                .collect(),
        );
        let mut tasks = Vec::new();
        let mut queues = HashMap::new();
        let mut slots = HashMap::new();
        let reader = Reader {
            max_message: config.max_message,
            inbound: inbound_tx,
            counters: counters.clone(),
        };
        for peer in config.peers.iter().filter(|p| p.id != config.id) {
            let queue = Arc::new(PeerQueue {
                state: std::sync::Mutex::new((Vec::new(), 0)),
                notify: tokio::sync::Notify::new(),
                limit: config.send_queue_bytes,
            });
            queues.insert(peer.id, queue.clone());
            let (slot, slot_rx) = watch::channel(None);
            let slot = Arc::new(slot);
            slots.insert(peer.id, slot.clone());
            tasks.push(tokio::spawn(write(
                peer.id,
                queue,
                slot_rx,
                counters.clone(),
            )));
            // One connection per pair: the lower id dials, the higher id accepts.
            if config.id < peer.id {
                tasks.push(tokio::spawn(dial(
                    endpoint.clone(),
                    *peer,
                    slot,
                    reader.clone(),
                )));
            }
        }
        tasks.push(tokio::spawn(accept(
            endpoint.clone(),
            members,
            Arc::new(slots),
            reader,
        )));
        Ok(QuicTransport {
            id: config.id,
            queues,
            max_message: config.max_message,
            inbox,
            counters,
            endpoint,
            tasks,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.endpoint.local_addr()?)
    }

    fn frame(&self, env: &Envelope) -> Result<Vec<u8>, TransportError> {
        Ok(encode_with_limit(env, self.max_message)?)
    }

    fn enqueue(&self, to: NodeId, frame: &[u8]) {
        if let Some(q) = self.queues.get(&to) {
            if !q.push(frame) {
                self.counters.dropped(DropReason::QueueFull);
            }
        }
    }
}

/// Frames waiting for one peer's stream: `u32 length | body` back to back, bounded in bytes.
#[derive(Debug)]
struct PeerQueue {
    /// The frames and how many there are.
    state: std::sync::Mutex<(Vec<u8>, u64)>,
    notify: tokio::sync::Notify,
    limit: usize,
}

impl PeerQueue {
    fn push(&self, body: &[u8]) -> bool {
        let mut st = self.state.lock().expect("quic queue");
        if !st.0.is_empty() && st.0.len() + 4 + body.len() > self.limit {
            return false;
        }
        st.0.extend_from_slice(&(body.len() as u32).to_be_bytes());
        st.0.extend_from_slice(body);
        st.1 += 1;
        drop(st);
        self.notify.notify_one();
        true
    }

    fn take(&self, spare: &mut Vec<u8>) -> u64 {
        let mut st = self.state.lock().expect("quic queue");
        spare.clear();
        std::mem::swap(&mut st.0, spare);
        std::mem::take(&mut st.1)
    }
}

#[async_trait]
impl Transport for QuicTransport {
    fn local_id(&self) -> NodeId {
        self.id
    }

    async fn send(&self, to: NodeId, env: &Envelope) -> Result<(), TransportError> {
        if !self.queues.contains_key(&to) {
            return Err(TransportError::UnknownPeer(to));
        }
        let frame = self.frame(env)?;
        self.counters.sent_message();
        self.enqueue(to, &frame);
        Ok(())
    }

    async fn broadcast(&self, env: &Envelope) -> Result<(), TransportError> {
        let frame = self.frame(env)?;
        self.counters.sent_message();
        for &to in self.queues.keys() {
            self.enqueue(to, &frame);
        }
        Ok(())
    }

    async fn recv(&self) -> Result<(NodeId, Envelope), TransportError> {
        self.inbox.recv().await
    }

    fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }
}

/// The current connection to a peer (dialled or accepted), shared with its writer.
type Slot = Arc<watch::Sender<Option<quinn::Connection>>>;

/// What reading a peer's streams needs.
#[derive(Clone, Debug)]
struct Reader {
    max_message: usize,
    inbound: InboxSender,
    counters: Arc<Counters>,
}

impl Reader {
    /// Reads every stream `peer` opens on `conn` until the connection ends.
    async fn serve(&self, conn: &quinn::Connection, peer: NodeId) {
        while let Ok(stream) = conn.accept_uni().await {
            tokio::spawn(read_stream(
                stream,
                peer,
                self.max_message,
                self.inbound.clone(),
                self.counters.clone(),
            ));
        }
    }
}

/// Keeps a connection to `peer` (a higher id): dials with backoff, publishes the connection
/// for the writer, serves the peer's streams, and re-dials when the connection ends.
async fn dial(endpoint: quinn::Endpoint, peer: PeerConfig, slot: Slot, reader: Reader) {
    let name = node_name(peer.id);
    let mut backoff = BACKOFF_MIN;
    loop {
        let conn = match endpoint.connect(peer.addr, &name) {
            Ok(connecting) => connecting.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match conn {
            Ok(conn) => {
                backoff = BACKOFF_MIN;
                slot.send_replace(Some(conn.clone()));
                reader.serve(&conn, peer.id).await;
                tracing::debug!(peer = peer.id.0, reason = ?conn.close_reason(), "quic connection ended");
            }
            Err(e) => {
                tracing::debug!(peer = peer.id.0, error = %e, "quic dial failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Writes `peer`'s queued frames to one unidirectional stream on the current connection,
/// switching when the connection is replaced; frames wait in the queue while there is none.
async fn write(
    peer: NodeId,
    queue: Arc<PeerQueue>,
    mut slot: watch::Receiver<Option<quinn::Connection>>,
    counters: Arc<Counters>,
) {
    let mut buf = Vec::new();
    loop {
        let conn = {
            let current = slot.borrow_and_update().clone();
            match current {
                Some(c) if c.close_reason().is_none() => c,
                _ => {
                    if slot.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        let mut stream = match conn.open_uni().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        loop {
            tokio::select! {
                _ = queue.notify.notified() => {},
                _ = conn.closed() => break,
                changed = slot.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let same = slot
                        .borrow()
                        .as_ref()
                        .is_some_and(|c| c.stable_id() == conn.stable_id());
                    if !same {
                        break;
                    }
                    continue;
                }
            }
            // Let concurrent senders add to the write before it is taken.
            tokio::task::yield_now().await;
            let frames = queue.take(&mut buf);
            if frames == 0 {
                continue;
            }
            if let Err(e) = stream.write_all(&buf).await {
                tracing::debug!(peer = peer.0, error = %e, "quic write failed");
                for _ in 0..frames {
                    counters.dropped(DropReason::QueueFull);
                }
                break;
            }
            counters.sent_packets(frames, buf.len());
        }
    }
}

/// Accepts connections, authenticates them, publishes them for the writers and reads their
/// streams.
async fn accept(
    endpoint: quinn::Endpoint,
    members: Arc<Vec<NodeId>>,
    slots: Arc<HashMap<NodeId, Slot>>,
    reader: Reader,
) {
    while let Some(incoming) = endpoint.accept().await {
        let members = members.clone();
        let slots = slots.clone();
        let reader = reader.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "quic handshake refused");
                    reader.counters.dropped(DropReason::Unauthenticated);
                    return;
                }
            };
            let chain = conn
                .peer_identity()
                .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
            let Some(peer) = chain.and_then(|chain| member_of(&chain, &members)) else {
                reader.counters.dropped(DropReason::NonMember);
                conn.close(quinn::VarInt::from_u32(1), b"not a member");
                return;
            };
            if let Some(slot) = slots.get(&peer) {
                slot.send_replace(Some(conn.clone()));
            }
            reader.serve(&conn, peer).await;
        });
    }
}

async fn read_stream(
    stream: quinn::RecvStream,
    peer: NodeId,
    max_message: usize,
    inbound: InboxSender,
    counters: Arc<Counters>,
) {
    let mut r = tokio::io::BufReader::with_capacity(256 << 10, stream);
    let mut body = Vec::new();
    let mut batch = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > max_message {
            counters.dropped(DropReason::Malformed);
            break;
        }
        body.resize(len, 0);
        if r.read_exact(&mut body).await.is_err() {
            counters.dropped(DropReason::Malformed);
            break;
        }
        counters.received_bytes(4 + len);
        match decode_with_limit::<Envelope>(&body, max_message) {
            Ok(env) if env.from == peer => batch.push((peer, env)),
            Ok(_) => counters.dropped(DropReason::ForgedSender),
            Err(_) => counters.dropped(DropReason::Malformed),
        }
        // Hand over what was read once no more is buffered (or the batch is large).
        if r.buffer().is_empty() || batch.len() >= 256 {
            Inbox::push(&inbound, std::mem::take(&mut batch), &counters);
        }
    }
    Inbox::push(&inbound, batch, &counters);
}
