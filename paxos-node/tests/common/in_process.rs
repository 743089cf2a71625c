//! In-process clusters for the client-port and bad-input tests: `n` servers in this process over
//! QUIC on loopback, memory storage, no durability, a fast PSB timer.

use paxos_node::config::{
    ClientsSection, DurabilityChoice, Member, NodeFile, ProtocolSection, StorageChoice,
    StorageSection, TransportChoice, TransportSection,
};
use paxos_node::node::NodeHandle;
use std::net::{SocketAddr, TcpListener, UdpSocket};

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `n` servers with keys in `dir/keys` and the client port limits `clients`; returns
/// their node files and handles.
pub(crate) async fn quic_cluster(
    dir: &std::path::Path,
    n: u32,
    clients: ClientsSection,
) -> (Vec<NodeFile>, Vec<NodeHandle>) {
    let keys = dir.join("keys");
    let ids: Vec<_> = (0..n).map(paxos_core::NodeId).collect();
    paxos_transport::keygen::keygen(&keys, &ids).unwrap();
    let members: Vec<Member> = (0..n)
        .map(|id| Member {
            id,
            peer: free_udp(),
            client: free_tcp(),
        })
        .collect();
    let mut files = vec![];
    let mut handles = vec![];
    for id in 0..n {
        let file = NodeFile {
            id,
            members: members.clone(),
            protocol: ProtocolSection {
                durability: DurabilityChoice::None,
                ..ProtocolSection::default()
            },
            election: paxos_node::config::ElectionSection {
                strategy: "psb".into(),
                timeout_ms: 300,
                heartbeat_ms: 30,
            },
            sessions: Default::default(),
            clients: clients.clone(),
            storage: StorageSection {
                backend: StorageChoice::Memory,
                dir: None,
                disk_timeout_s: 60,
                stall_ms: 250,
            },
            transport: TransportSection {
                kind: TransportChoice::Quic,
                keys_dir: keys.clone(),
                multicast_group: None,
            },
            metrics_addr: None,
        };
        handles.push(
            paxos_node::launch(&file, paxos_node::kv::KvStore::new())
                .await
                .unwrap(),
        );
        files.push(file);
    }
    (files, handles)
}
