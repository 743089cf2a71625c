//! Three nodes in one process over an in-test channel network: elect, serve clients, survive the
//! leader's shutdown, and agree.

use bytes::Bytes;
use paxos_core::{Config, NodeId, PsbConfig, PsbViewChange};
use paxos_node::client::{status, Client};
use paxos_node::kv::{KvResult, KvStore};
use paxos_node::node::{NodeConfig, NodeHandle};
use paxos_node::NodeBuilder;
use paxos_storage::MemoryStorage;
use paxos_transport::mem::MemNetwork;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

async fn start_node(
    net: &MemNetwork,
    disk: &MemoryStorage,
    i: usize,
    n: usize,
    addr: SocketAddr,
) -> NodeHandle {
    let me = NodeId(i as u32);
    let election = PsbViewChange::new(
        me,
        n,
        PsbConfig {
            progress_timeout: Duration::from_millis(300),
            max_progress_timeout: Duration::from_secs(3),
            resend_interval: Duration::from_millis(30),
        },
    );
    NodeBuilder::new(NodeConfig::new(Config::new(me, n), addr), KvStore::new())
        .election(election)
        .storage(disk.clone())
        .transport(Arc::new(net.endpoint(me).unwrap()))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_clients_and_survive_leader_loss() {
    let n = 3;
    let net = MemNetwork::new((0..n as u32).map(NodeId));
    let disks: Vec<MemoryStorage> = (0..n).map(|_| MemoryStorage::new()).collect();
    let mut handles = vec![];
    for (i, disk) in disks.iter().enumerate() {
        let h = start_node(&net, disk, i, n, "127.0.0.1:0".parse().unwrap()).await;
        handles.push(Some(h));
    }
    let addrs: Vec<_> = handles
        .iter()
        .map(|h| h.as_ref().unwrap().client_addr())
        .collect();
    let mut client = Client::new(addrs.clone());
    for k in 0..20u32 {
        let r = client
            .put(Bytes::from(format!("k{k}")), Bytes::from(format!("v{k}")))
            .await
            .unwrap();
        assert_eq!(r, KvResult::Done);
    }
    assert_eq!(client.get("k7").await.unwrap(), Some(Bytes::from("v7")));

    // Stop the leader; the others elect a new one and keep serving.
    let mut leader = None;
    for (i, a) in addrs.iter().enumerate() {
        let st = status(*a, Duration::from_secs(2)).await.unwrap();
        if st.role == "leader" {
            leader = Some(i);
        }
    }
    let leader = leader.expect("a leader");
    handles[leader].take().unwrap().shutdown().await.unwrap();
    let others: Vec<_> = (0..n).filter(|&i| i != leader).map(|i| addrs[i]).collect();
    let mut client = Client::new(others.clone());
    for k in 20..30u32 {
        let r = client
            .put(Bytes::from(format!("k{k}")), Bytes::from(format!("v{k}")))
            .await
            .unwrap();
        assert_eq!(r, KvResult::Done);
    }
    assert_eq!(client.get("k25").await.unwrap(), Some(Bytes::from("v25")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = status(others[0], Duration::from_secs(2)).await.unwrap();
    let b = status(others[1], Duration::from_secs(2)).await.unwrap();
    assert_eq!(a.aru, b.aru);
    assert_eq!(a.state_digest, b.state_digest);

    // Restart the old leader from its storage: it recovers and catches up.
    handles[leader] = Some(start_node(&net, &disks[leader], leader, n, addrs[leader]).await);
    let mut caught_up = false;
    for _ in 0..100 {
        let c = status(addrs[leader], Duration::from_secs(2)).await.unwrap();
        if c.aru == a.aru && c.state_digest == a.state_digest {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(caught_up, "restarted server caught up");
    for h in handles.into_iter().flatten() {
        h.shutdown().await.unwrap();
    }
}
