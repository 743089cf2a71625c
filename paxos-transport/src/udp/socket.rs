//! Socket setup and multicast membership (docs/transport.md, "UDP multicast"): the unicast
//! socket every datagram leaves from (multicast options set on it) and unicast datagrams arrive
//! on, and the group socket that joins the multicast group on the configured interface.

use super::config::UdpConfig;
use crate::TransportError;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// The unicast socket bound to `local`: sends to peers and to the group (`IP_MULTICAST_IF` =
/// the interface, TTL 1, loop on so that nodes sharing a host hear each other) and receives
/// unicast datagrams.
pub(super) fn unicast(config: &UdpConfig, local: SocketAddr) -> Result<UdpSocket, TransportError> {
    let uni = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = uni.set_send_buffer_size(config.socket_buffer);
    let _ = uni.set_recv_buffer_size(config.socket_buffer);
    uni.set_multicast_if_v4(&config.interface)?;
    uni.set_multicast_ttl_v4(1)?;
    uni.set_multicast_loop_v4(true)?;
    uni.set_nonblocking(true)?;
    uni.bind(&local.into())?;
    Ok(UdpSocket::from_std(uni.into())?)
}

/// The socket bound to the group address (`SO_REUSEADDR`, so every node on a host can bind it)
/// and joined to the group on the interface; it only receives.
pub(super) fn group(config: &UdpConfig) -> Result<UdpSocket, TransportError> {
    let multi = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    multi.set_reuse_address(true)?;
    let _ = multi.set_recv_buffer_size(config.socket_buffer);
    multi.set_nonblocking(true)?;
    multi.bind(&SocketAddr::V4(config.group).into())?;
    multi.join_multicast_v4(config.group.ip(), &config.interface)?;
    Ok(UdpSocket::from_std(multi.into())?)
}
