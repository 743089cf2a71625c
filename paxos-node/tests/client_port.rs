//! The client port's limits against hostile or broken clients (issue #16): a client id bound to
//! the connection that uses it, idle connections that cannot lock a working client out, and a
//! client that never reads its replies closed at its byte budget.

mod common;

use bytes::Bytes;
use paxos_core::{ClientId, Timestamp};
use paxos_node::client::Client;
use paxos_node::config::ClientsSection;
use paxos_node::kv::{KvCommand, KvResult};
use paxos_node::node::NodeHandle;
use paxos_node::protocol::{read_frame, write_frame, ClientRequest, ClientResponse};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

async fn cluster(dir: &std::path::Path, clients: ClientsSection) -> Vec<NodeHandle> {
    common::in_process::quic_cluster(dir, 3, clients).await.1
}

/// Waits until a put through every server succeeds (a view is installed).
async fn serving(handles: &[NodeHandle]) {
    let addrs: Vec<_> = handles.iter().map(|h| h.client_addr()).collect();
    let mut c = Client::new(addrs);
    c.op_timeout = Duration::from_secs(20);
    assert_eq!(
        c.put(Bytes::from("warm"), Bytes::from("up")).await.unwrap(),
        KvResult::Done
    );
}

async fn submit(s: &mut TcpStream, client: u64, ts: u64, cmd: Option<&KvCommand>) {
    let request = ClientRequest::Submit {
        client_id: ClientId(client),
        timestamp: Timestamp(ts),
        payload: cmd.map_or_else(Bytes::new, |c| c.encode()),
    };
    write_frame(s, &request).await.unwrap();
}

/// The next response on `s` within 10 s.
async fn next(s: &mut TcpStream) -> ClientResponse {
    tokio::time::timeout(Duration::from_secs(10), read_frame::<ClientResponse, _>(s))
        .await
        .expect("an answer")
        .expect("a frame")
}

/// Registers nonce `nonce` on `s`; returns the session id.
async fn register(s: &mut TcpStream, nonce: u64) -> u64 {
    submit(s, nonce, 0, None).await;
    loop {
        if let ClientResponse::SessionOpened { nonce: n, session } = next(s).await {
            if n.0 == nonce {
                return session.0;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_in_use_by_another_connection_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let handles = cluster(dir.path(), ClientsSection::default()).await;
    serving(&handles).await;
    let addr = handles[0].client_addr();
    let mut owner = TcpStream::connect(addr).await.unwrap();
    let session = register(&mut owner, 4242).await;
    let put = |v: &str| KvCommand::Put {
        key: Bytes::from("k"),
        value: Bytes::from(v.to_owned()),
    };

    // Another connection naming the owner's session is refused, and nothing of it is applied.
    let mut thief = TcpStream::connect(addr).await.unwrap();
    submit(&mut thief, session, 1, Some(&put("stolen"))).await;
    match next(&mut thief).await {
        ClientResponse::Rejected { reason } => assert!(reason.contains("in use"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        handles[0]
            .metrics
            .client_id_conflicts
            .load(Ordering::Relaxed),
        1
    );
    // The owner's own update with that timestamp is applied and answered on its connection.
    submit(&mut owner, session, 1, Some(&put("mine"))).await;
    match next(&mut owner).await {
        ClientResponse::Reply {
            client_id,
            timestamp,
            ..
        } => assert_eq!((client_id.0, timestamp.0), (session, 1)),
        other => panic!("expected the reply, got {other:?}"),
    }
    // Once the owner is gone the id is free again (a client reconnecting after a failure).
    drop(owner);
    tokio::time::sleep(Duration::from_millis(200)).await;
    submit(&mut thief, session, 2, Some(&put("later"))).await;
    match next(&mut thief).await {
        ClientResponse::Reply { timestamp, .. } => assert_eq!(timestamp.0, 2),
        other => panic!("expected the reply, got {other:?}"),
    }
    // A timestamp older than the one executed is answered, not dropped in silence.
    submit(&mut thief, session, 1, Some(&put("old"))).await;
    match next(&mut thief).await {
        ClientResponse::Superseded {
            timestamp,
            executed,
            ..
        } => assert_eq!((timestamp.0, executed.0), (1, 2)),
        other => panic!("expected Superseded, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_lock_out_a_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ClientsSection {
        max_connections: 256,
        max_per_ip: 128,
        evict_idle_after_ms: 200,
        ..ClientsSection::default()
    };
    let handles = cluster(dir.path(), limits).await;
    serving(&handles).await;
    let addr = handles[0].client_addr();
    // Every one is held open, and sends nothing.
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        match TcpStream::connect(addr).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = &handles[0].metrics;
    assert!(m.clients_connected.load(Ordering::Relaxed) <= 128);
    let turned_away =
        m.clients_evicted.load(Ordering::Relaxed) + m.clients_refused.load(Ordering::Relaxed);
    assert!(turned_away >= 10_000 - 128, "{turned_away}");
    // A working client from the same address still gets in and is served.
    let mut c = Client::new(vec![addr]);
    c.op_timeout = Duration::from_secs(20);
    for i in 0..5 {
        assert_eq!(
            c.put(Bytes::from(format!("real{i}")), Bytes::from("v"))
                .await
                .unwrap(),
            KvResult::Done
        );
    }
    assert!(m.clients_evicted.load(Ordering::Relaxed) > 0);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_at_its_reply_budget() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ClientsSection {
        reply_budget_bytes: 4 << 20,
        ..ClientsSection::default()
    };
    let handles = cluster(dir.path(), limits).await;
    serving(&handles).await;
    let addr = handles[0].client_addr();
    let mut c = Client::new(vec![addr]);
    let big = Bytes::from(vec![7u8; 1 << 20]);
    assert_eq!(
        c.put(Bytes::from("big"), big).await.unwrap(),
        KvResult::Done
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut sessions = vec![];
    for i in 0..40 {
        sessions.push(register(&mut s, 9_000 + i).await);
    }
    // 40 gets of 1 MiB pipelined, never read: 40 MiB of replies against a 4 MiB budget.
    let get = KvCommand::Get {
        key: Bytes::from("big"),
    };
    for &session in &sessions {
        submit(&mut s, session, 1, Some(&get)).await;
    }
    let m = &handles[0].metrics;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while m.clients_slow_closed.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the non-reading client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It is closed: reading now drains what the socket held, then ends.
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => read += n,
            Err(_) => panic!("the connection stayed open"),
        }
    }
    assert!(read < 40 << 20, "all replies were delivered: {read} bytes");
    // The server still serves others.
    assert_eq!(
        c.put(Bytes::from("after"), Bytes::from("v")).await.unwrap(),
        KvResult::Done
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ClientsSection {
        idle_timeout_s: 1,
        ..ClientsSection::default()
    };
    let handles = cluster(dir.path(), limits).await;
    serving(&handles).await;
    let mut s = TcpStream::connect(handles[0].client_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the server: {r:?}"
    );
    assert!(
        handles[0]
            .metrics
            .clients_idle_closed
            .load(Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_the_inflight_budget_is_answered_overloaded() {
    use paxos_core::{Config, Durability, NodeId};
    use paxos_node::node::NodeConfig;
    use paxos_transport::mem::MemNetwork;
    let net = MemNetwork::new([NodeId(0)]);
    let mut core = Config::new(NodeId(0), 1);
    core.durability = Durability::None;
    let mut cfg = NodeConfig::new(core, "127.0.0.1:0".parse().unwrap());
    // Smaller than one request: every such request is refused, deterministically.
    cfg.clients.inflight_bytes = 1 << 20;
    let node = paxos_node::NodeBuilder::new(cfg, paxos_node::kv::KvStore::new())
        .transport(std::sync::Arc::new(net.endpoint(NodeId(0)).unwrap()))
        .start()
        .await
        .unwrap();
    let mut c = Client::new(vec![node.client_addr()]);
    c.op_timeout = Duration::from_secs(20);
    assert_eq!(
        c.put(Bytes::from("small"), Bytes::from("v")).await.unwrap(),
        KvResult::Done
    );
    let mut s = TcpStream::connect(node.client_addr()).await.unwrap();
    let session = register(&mut s, 77).await;
    let put = KvCommand::Put {
        key: Bytes::from("big"),
        value: Bytes::from(vec![1u8; 1_500_000]),
    };
    submit(&mut s, session, 1, Some(&put)).await;
    match next(&mut s).await {
        ClientResponse::Overloaded {
            client_id,
            timestamp,
        } => assert_eq!(
            (client_id, timestamp),
            (Some(ClientId(session)), Some(Timestamp(1)))
        ),
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert!(node.metrics.dropped_overload.load(Ordering::Relaxed) >= 1);
    // Small requests are still taken.
    assert_eq!(
        c.put(Bytes::from("small2"), Bytes::from("v"))
            .await
            .unwrap(),
        KvResult::Done
    );
}
