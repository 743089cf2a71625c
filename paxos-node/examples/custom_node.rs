//! Assemble servers from chosen parts: Ω election, the file WAL with sync durability, QUIC with
//! mutual TLS, and the key-value state machine. Three of them run in this process on loopback; a
//! client writes through them and reads back.
//!
//! ```text
//! cargo run --example custom_node -p paxos-node
//! ```

use paxos_core::{Config, Durability, NodeId};
use paxos_election::{build, ElectionConfig, Strategy};
use paxos_node::client::Client;
use paxos_node::kv::KvStore;
use paxos_node::node::NodeConfig;
use paxos_node::NodeBuilder;
use paxos_storage::wal::{WalOptions, WalStorage};
use paxos_transport::quic::{QuicConfig, QuicTransport};
use paxos_transport::PeerConfig;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

fn free_addr(udp: bool) -> std::io::Result<SocketAddr> {
    if udp {
        UdpSocket::bind("127.0.0.1:0")?.local_addr()
    } else {
        TcpListener::bind("127.0.0.1:0")?.local_addr()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = 3;
    let dir = tempfile::tempdir()?;
    let ids: Vec<NodeId> = (0..n as u32).map(NodeId).collect();
    paxos_transport::keygen::keygen(&dir.path().join("keys"), &ids)?;
    let peers = ids
        .iter()
        .map(|&id| {
            Ok(PeerConfig {
                id,
                addr: free_addr(true)?,
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;

    let mut servers = Vec::new();
    let mut client_addrs = Vec::new();
    for &id in &ids {
        // The parts: pick any election, storage and transport that implement the traits.
        let election = build(
            Strategy::Omega,
            id,
            n,
            &ElectionConfig::uniform(Duration::from_millis(300)),
        );
        let storage = WalStorage::open(
            dir.path().join(format!("wal-{}", id.0)),
            WalOptions::default(),
        )?;
        let quic = QuicConfig::from_keys_dir(id, peers.clone(), &dir.path().join("keys"))?;
        let transport = Arc::new(QuicTransport::bind(quic).await?);

        let mut core = Config::new(id, n);
        core.durability = Durability::Sync;
        let node = NodeBuilder::new(NodeConfig::new(core, free_addr(false)?), KvStore::new())
            .election(election)
            .storage(storage)
            .transport(transport)
            .start()
            .await?;
        client_addrs.push(node.client_addr());
        servers.push(node);
    }

    let mut client = Client::new(client_addrs);
    for i in 0..10 {
        client.put(format!("key{i}"), format!("value{i}")).await?;
    }
    let v = client.get("key7").await?;
    println!(
        "key7 = {:?}",
        v.map(|b| String::from_utf8_lossy(&b).into_owned())
    );
    for s in servers {
        s.shutdown().await?;
    }
    Ok(())
}
