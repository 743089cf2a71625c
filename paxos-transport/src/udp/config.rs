//! Configuration of the UDP transport: [`UdpConfig`] (membership, multicast group and interface,
//! cluster key, bounds) and the datagram size presets (docs/transport.md, "UDP multicast",
//! Sizes).

use crate::{PeerConfig, TransportError};
use paxos_core::codec::DEFAULT_MAX_MESSAGE_BYTES;
use paxos_core::NodeId;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Datagram limit for loopback and in-host namespaces.
pub const LOOPBACK_DATAGRAM: usize = 65_000;
/// Datagram limit for a 1500-byte MTU (1500 - 20 IPv4 - 8 UDP).
pub const ETHERNET_DATAGRAM: usize = 1472;

/// Configuration of a [`UdpTransport`](super::UdpTransport).
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
    /// Largest datagram sent (see the [`udp`](super) module documentation).
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
    /// A file that keeps the last sender epoch across restarts (see
    /// [`durable_epoch`](super::replay::durable_epoch)). Without it the epoch is the wall clock's,
    /// and a restart after the clock stepped back sends under an epoch every peer takes for a
    /// replay (a silent partition until the clock passes the old one).
    pub epoch_file: Option<std::path::PathBuf>,
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
            epoch_file: None,
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
