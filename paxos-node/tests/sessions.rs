//! Client sessions through real nodes (in one process): a session evicted by the count bound or
//! idle past its expiry is refused with `SessionExpired`, its update is not applied, every server
//! holds the same bounded table, and the client goes on with a new session.

use bytes::Bytes;
use paxos_core::{Config, NodeId, PsbConfig, PsbViewChange, SessionRules};
use paxos_node::client::{status, Client, ClientError};
use paxos_node::kv::{KvResult, KvStore};
use paxos_node::node::{NodeConfig, NodeHandle};
use paxos_node::NodeBuilder;
use paxos_storage::MemoryStorage;
use paxos_transport::mem::MemNetwork;
use std::sync::Arc;
use std::time::Duration;

const MAX_SESSIONS: usize = 40;

async fn start_node(net: &MemNetwork, i: usize, n: usize) -> NodeHandle {
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
    core.sessions = Some(SessionRules {
        expire_after: Duration::from_millis(1500),
        max_sessions: MAX_SESSIONS,
        max_result_bytes: 1 << 20,
        clock_interval: Duration::from_millis(50),
    });
    NodeBuilder::new(
        NodeConfig::new(core, "127.0.0.1:0".parse().unwrap()),
        KvStore::new(),
    )
    .election(election)
    .storage(MemoryStorage::new())
    .transport(Arc::new(net.endpoint(me).unwrap()))
    .start()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_and_idle_sessions_are_refused_and_never_applied() {
    let n = 3;
    let net = MemNetwork::new((0..n as u32).map(NodeId));
    let mut handles = vec![];
    for i in 0..n {
        handles.push(start_node(&net, i, n).await);
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
