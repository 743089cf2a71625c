//! Test harness shared by the transport test suites: builds clusters of any transport.
#![allow(dead_code, unreachable_pub, missing_docs)]

use bytes::Bytes;
use paxos_core::{ClientId, ClientUpdate, Envelope, Message, NodeId, Timestamp};
use paxos_transport::keygen::{ClusterCa, NodeTls};
use paxos_transport::mem::MemNetwork;
use paxos_transport::quic::{QuicConfig, QuicTransport};
use paxos_transport::udp::{UdpConfig, UdpTransport};
use paxos_transport::{PeerConfig, Transport, TransportError};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mem,
    Udp,
    Quic,
}

/// Makes loopback multicast-capable (root only); returns whether UDP multicast can be tested.
pub fn multicast_ready() -> bool {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let out = std::process::Command::new("ip")
            .args(["link", "show", "lo"])
            .output();
        if let Ok(out) = out {
            if !String::from_utf8_lossy(&out.stdout).contains("MULTICAST") {
                let _ = std::process::Command::new("ip")
                    .args(["link", "set", "lo", "multicast", "on"])
                    .status();
            }
        }
    });
    std::process::Command::new("ip")
        .args(["link", "show", "lo"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("MULTICAST"))
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn random_group() -> SocketAddrV4 {
    let a: u8 = rand::random();
    let b: u8 = rand::random();
    SocketAddrV4::new(Ipv4Addr::new(239, 255, a, b.max(1)), free_port())
}

pub fn env(from: NodeId, n: u64, size: usize) -> Envelope {
    Envelope {
        from,
        message: Message::ClientUpdate(ClientUpdate {
            client_id: ClientId(n),
            server_id: from,
            timestamp: Timestamp(n),
            payload: Bytes::from(vec![(n % 251) as u8; size]),
        }),
    }
}

/// The `n` a test envelope carries.
pub fn tag(env: &Envelope) -> u64 {
    match &env.message {
        Message::ClientUpdate(u) => u.client_id.0,
        _ => u64::MAX,
    }
}

pub struct Harness {
    pub kind: Kind,
    pub peers: Vec<PeerConfig>,
    pub mem: MemNetwork,
    pub key: [u8; 32],
    pub group: SocketAddrV4,
    pub ca: ClusterCa,
    pub tls: Vec<NodeTls>,
}

impl Harness {
    pub fn new(kind: Kind, n: u32) -> Harness {
        let peers: Vec<PeerConfig> = (0..n)
            .map(|i| PeerConfig {
                id: NodeId(i),
                addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            })
            .collect();
        let ca = ClusterCa::generate().unwrap();
        let tls = if kind == Kind::Quic {
            (0..n).map(|i| ca.issue(NodeId(i)).unwrap()).collect()
        } else {
            Vec::new()
        };
        Harness {
            kind,
            mem: MemNetwork::new(peers.iter().map(|p| p.id)),
            peers,
            key: rand::random(),
            group: random_group(),
            ca,
            tls,
        }
    }

    pub fn udp_config(&self, id: u32) -> UdpConfig {
        let mut c = UdpConfig::new(
            NodeId(id),
            self.peers.clone(),
            self.group,
            Ipv4Addr::LOCALHOST,
            self.key,
        );
        // To check behaviour with small kernel buffers (e.g. a default net.core.rmem_max).
        if let Some(b) = std::env::var("PXT_TEST_SOCKET_BUFFER")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            c.socket_buffer = b;
        }
        c
    }

    pub fn quic_config(&self, id: u32) -> QuicConfig {
        QuicConfig::new(
            NodeId(id),
            self.peers.clone(),
            self.tls[id as usize].clone(),
        )
    }

    /// Starts (or restarts) node `id`, retrying while its address is still held.
    pub async fn start(&self, id: u32) -> Arc<dyn Transport> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r: Result<Arc<dyn Transport>, TransportError> = match self.kind {
                Kind::Mem => self.mem.endpoint(NodeId(id)).map(|t| Arc::new(t) as _),
                Kind::Udp => UdpTransport::bind(self.udp_config(id))
                    .await
                    .map(|t| Arc::new(t) as _),
                Kind::Quic => QuicTransport::bind(self.quic_config(id))
                    .await
                    .map(|t| Arc::new(t) as _),
            };
            match r {
                Ok(t) => return t,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("start {id}: {e}, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot start node {id}: {e}"),
            }
        }
    }

    pub async fn start_all(&self) -> Vec<Arc<dyn Transport>> {
        let mut v = Vec::new();
        for p in &self.peers {
            v.push(self.start(p.id.0).await);
        }
        v
    }
}

/// The tag of warm-up messages, which [`recv_n`] skips.
pub const WARMUP: u64 = 9999;

/// Receives up to `count` envelopes (skipping warm-up ones) within `within`.
pub async fn recv_n(t: &dyn Transport, count: usize, within: Duration) -> Vec<(NodeId, Envelope)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < count {
        match tokio::time::timeout_at(deadline, t.recv()).await {
            Ok(Ok(m)) if tag(&m.1) == WARMUP => {}
            Ok(Ok(m)) => out.push(m),
            _ => break,
        }
    }
    out
}

/// Asserts nothing but late warm-up copies arrives within `within`. [`send_until_received`]
/// retransmits every 100 ms, so copies it sent before the first one was received may still land
/// afterwards; they carry [`WARMUP`] and are skipped, so warm-ups must use that tag.
pub async fn recv_none(t: &dyn Transport, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Ok((from, env))) = tokio::time::timeout_at(deadline, t.recv()).await {
        if tag(&env) != WARMUP {
            panic!("unexpected delivery from {from:?}: {}", tag(&env));
        }
    }
}

/// Sends `env` to `to` every 100 ms until `rx` receives an envelope with the same tag
/// (the protocol's retransmission, in miniature).
pub async fn send_until_received(
    tx: &dyn Transport,
    rx: &dyn Transport,
    env: &Envelope,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        tx.send(rx.local_id(), env).await.unwrap();
        if let Ok(Ok((from, got))) =
            tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
        {
            if from == tx.local_id() && tag(&got) == tag(env) {
                return true;
            }
        }
    }
    false
}

/// Whether UDP tests can run here; prints why not.
pub fn skip(kind: Kind) -> bool {
    if kind == Kind::Udp && !multicast_ready() {
        eprintln!(
            "SKIP: loopback has no MULTICAST flag and it cannot be set (needs root: \
             `ip link set lo multicast on`)"
        );
        return true;
    }
    false
}
