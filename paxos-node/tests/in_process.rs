//! Three nodes in one process over an in-test channel network: elect, serve clients, survive the
//! leader's shutdown, and agree; client sessions expire by the log and are refused, never re-applied.

use bytes::Bytes;
use paxos_core::{Config, NodeId, PsbConfig, PsbViewChange, SessionRules};
use paxos_node::client::{status, Client, ClientError};
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
    tune: fn(&mut Config),
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
    let mut core = Config::new(me, n);
    tune(&mut core);
    NodeBuilder::new(NodeConfig::new(core, addr), KvStore::new())
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
        let h = start_node(&net, disk, i, n, "127.0.0.1:0".parse().unwrap(), |_| {}).await;
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
    handles[leader] =
        Some(start_node(&net, &disks[leader], leader, n, addrs[leader], |_| {}).await);
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

/// Sessions bound to `MAX_SESSIONS`, expiring after 1.5 s of log time.
const MAX_SESSIONS: usize = 40;

fn short_sessions(core: &mut Config) {
    core.sessions = Some(SessionRules {
        expire_after: Duration::from_millis(1500),
        max_sessions: MAX_SESSIONS,
        max_result_bytes: 1 << 20,
        clock_interval: Duration::from_millis(50),
    });
}

/// A session evicted by the count bound or idle past its expiry is refused with
/// `SessionExpired`, its update is not applied, every server holds the same bounded table, and the
/// client goes on with a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_and_idle_sessions_are_refused_and_never_applied() {
    let n = 3;
    let net = MemNetwork::new((0..n as u32).map(NodeId));
    let mut handles = vec![];
    for i in 0..n {
        let disk = MemoryStorage::new();
        let addr = "127.0.0.1:0".parse().unwrap();
        handles.push(start_node(&net, &disk, i, n, addr, short_sessions).await);
    }
    let addrs: Vec<_> = handles.iter().map(|h| h.client_addr()).collect();

    let mut a = Client::new(addrs.clone());
    assert_eq!(a.put("k", "v1").await.unwrap(), KvResult::Done);
    let first = a.id();

    // Many more sessions than the bound: `a`, the least recently active, is evicted.
    for _ in 0..3 * MAX_SESSIONS {
        let mut c = Client::new(addrs.clone());
        c.register().await.unwrap();
    }
    match a.put("k", "v2").await {
        Err(ClientError::SessionExpired(id)) => assert_eq!(id, first),
        other => panic!("expected SessionExpired, got {other:?}"),
    }
    let mut reader = Client::new(addrs.clone());
    assert_eq!(reader.get("k").await.unwrap(), Some(Bytes::from("v1")));
    // The next submit registers anew and is applied once.
    assert_eq!(a.put("k", "v3").await.unwrap(), KvResult::Done);
    assert_ne!(a.id(), first);
    assert_eq!(reader.get("k").await.unwrap(), Some(Bytes::from("v3")));

    // Idle past the expiry (log time moves with the leader's clock entries).
    let mut idle = Client::new(addrs.clone());
    idle.put("j", "1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(matches!(
        idle.put("j", "2").await,
        Err(ClientError::SessionExpired(_))
    ));
    // (`reader` idled as long: its own session went too.)
    assert!(matches!(
        reader.get("j").await,
        Err(ClientError::SessionExpired(_))
    ));
    assert_eq!(reader.get("j").await.unwrap(), Some(Bytes::from("1")));

    // Every server holds the same bounded table once quiet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for addr in &addrs {
        let st = status(*addr, Duration::from_secs(2)).await.unwrap();
        assert!(st.sessions as usize <= MAX_SESSIONS, "{st:?}");
        assert!(st.sessions_expired >= 2 * MAX_SESSIONS as u64, "{st:?}");
    }
    for h in handles {
        h.shutdown().await.unwrap();
    }
}
