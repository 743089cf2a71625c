//! Quick start: generate cluster keys, start three QUIC nodes on loopback, broadcast from one
//! and receive on the others, then do the same over the in-memory transport.
//!
//! `cargo run -p paxos-transport --example quickstart`

use bytes::Bytes;
use paxos_core::{Envelope, Message, NodeId};
use paxos_transport::keygen::{keygen, load_node_tls};
use paxos_transport::mem::MemNetwork;
use paxos_transport::quic::{QuicConfig, QuicTransport};
use paxos_transport::{PeerConfig, Transport};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ids = [NodeId(0), NodeId(1), NodeId(2)];
    let dir = tempfile::tempdir()?;
    // What `paxos-node keygen` does: ca.pem, ca.key, node-<id>.pem/.key, cluster.key.
    keygen(dir.path(), &ids)?;

    let peers: Vec<PeerConfig> = ids
        .iter()
        .map(|&id| {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            Ok(PeerConfig {
                id,
                addr: ([127, 0, 0, 1], port).into(),
            })
        })
        .collect::<Result<_, std::io::Error>>()?;
    let mut nodes = Vec::new();
    for &id in &ids {
        let tls = load_node_tls(dir.path(), id)?;
        nodes.push(QuicTransport::bind(QuicConfig::new(id, peers.clone(), tls)).await?);
    }

    let hello = Envelope {
        from: NodeId(0),
        message: Message::Election(Bytes::from_static(b"hello")),
    };
    nodes[0].broadcast(&hello).await?;
    for node in &nodes[1..] {
        let (from, env) = tokio::time::timeout(Duration::from_secs(5), node.recv()).await??;
        println!(
            "quic: node {} got {:?} from {}",
            node.local_id().0,
            env.message,
            from.0
        );
    }

    let net = MemNetwork::new(ids);
    let a = net.endpoint(NodeId(0))?;
    let b = net.endpoint(NodeId(1))?;
    a.send(NodeId(1), &hello).await?;
    let (from, _) = b.recv().await?;
    println!(
        "memory: node 1 got a message from {}; stats {:?}",
        from.0,
        b.stats()
    );
    Ok(())
}
