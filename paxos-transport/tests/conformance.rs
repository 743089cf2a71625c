//! One conformance suite run over every transport: delivery, send-to-all, large messages, many
//! peers, restart of a peer, forged sender and non-member, loss recovery.
#![allow(missing_docs)]

mod common;

use common::*;
use paxos_core::NodeId;
use paxos_transport::mem::MemNetwork;
use paxos_transport::Transport;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

async fn delivery(kind: Kind) {
    if skip(kind) {
        return;
    }
    let h = Harness::new(kind, 2);
    let nodes = h.start_all().await;
    // Let QUIC connect first so the ordering check below is meaningful for every transport.
    assert!(send_until_received(&*nodes[0], &*nodes[1], &env(NodeId(0), 9999, 10), T).await);
    for n in 0..200 {
        nodes[0]
            .send(NodeId(1), &env(NodeId(0), n, 200))
            .await
            .unwrap();
    }
    let got = recv_n(&*nodes[1], 200, T).await;
    let got: Vec<u64> = got
        .into_iter()
        .map(|(from, e)| {
            assert_eq!(from, NodeId(0));
            assert_eq!(e.from, NodeId(0));
            tag(&e)
        })
        .filter(|&t| t != 9999)
        .collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>(), "in order, no loss");
    assert!(nodes[0]
        .send(NodeId(7), &env(NodeId(0), 1, 1))
        .await
        .is_err());
    let s = nodes[0].stats();
    assert!(s.sent_messages >= 200 && s.sent_packets >= 1, "{s:?}");
    assert!(nodes[1].stats().received_messages >= 200);
}

async fn send_to_all(kind: Kind) {
    if skip(kind) {
        return;
    }
    let h = Harness::new(kind, 3);
    let nodes = h.start_all().await;
    for i in 1..3 {
        assert!(send_until_received(&*nodes[0], &*nodes[i], &env(NodeId(0), 9999, 10), T).await);
    }
    for n in 0..100 {
        nodes[0].broadcast(&env(NodeId(0), n, 100)).await.unwrap();
    }
    for node in &nodes[1..] {
        let got = recv_n(&**node, 100, T).await;
        assert_eq!(got.len(), 100);
        assert!(got.iter().all(|(from, _)| *from == NodeId(0)));
    }
    // The sender does not receive its own broadcast.
    recv_none(&*nodes[0], Duration::from_millis(300)).await;
}

async fn large_messages(kind: Kind) {
    if skip(kind) {
        return;
    }
    let h = Harness::new(kind, 3);
    let nodes = h.start_all().await;
    let sizes = [60_000usize, 200_000, 2 << 20];
    for (i, &size) in sizes.iter().enumerate() {
        nodes[0]
            .broadcast(&env(NodeId(0), i as u64, size))
            .await
            .unwrap();
    }
    for node in &nodes[1..] {
        let got = recv_n(&**node, sizes.len(), T).await;
        assert_eq!(got.len(), sizes.len(), "{kind:?}");
        for (_, e) in got {
            let paxos_core::Message::ClientUpdate(u) = &e.message else {
                panic!()
            };
            assert_eq!(u.payload.len(), sizes[tag(&e) as usize]);
        }
    }
    // Over the codec's 16 MiB limit: refused at the sender with an error.
    let err = nodes[0].send(NodeId(1), &env(NodeId(0), 0, 17 << 20)).await;
    assert!(
        matches!(err, Err(paxos_transport::TransportError::Codec(_))),
        "{err:?}"
    );
}

async fn many_peers(kind: Kind) {
    if skip(kind) {
        return;
    }
    let n = 7u32;
    let h = Harness::new(kind, n);
    let nodes = h.start_all().await;
    // Warm up: everyone reaches everyone.
    for a in 0..n as usize {
        for b in 0..n as usize {
            if a != b {
                assert!(
                    send_until_received(&*nodes[a], &*nodes[b], &env(NodeId(a as u32), 9999, 1), T)
                        .await
                );
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        for m in 0..20 {
            node.broadcast(&env(NodeId(i as u32), m, 300))
                .await
                .unwrap();
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let got = recv_n(&**node, 20 * (n as usize - 1), T).await;
        let real: Vec<_> = got.iter().filter(|(_, e)| tag(e) != 9999).collect();
        assert_eq!(real.len(), 20 * (n as usize - 1), "node {i}");
        assert!(real.iter().all(|(from, _)| *from != NodeId(i as u32)));
    }
}

async fn restart(kind: Kind) {
    if skip(kind) {
        return;
    }
    let h = Harness::new(kind, 3);
    let mut nodes = h.start_all().await;
    assert!(send_until_received(&*nodes[0], &*nodes[1], &env(NodeId(0), 1, 10), T).await);
    // The receiver restarts.
    drop(nodes.remove(1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    nodes.insert(1, h.start(1).await);
    assert!(
        send_until_received(&*nodes[0], &*nodes[1], &env(NodeId(0), 2, 10), T).await,
        "{kind:?}: restarted receiver reachable"
    );
    // The sender restarts: its sequence numbers start again and must still be accepted.
    drop(nodes.remove(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    nodes.insert(0, h.start(0).await);
    assert!(
        send_until_received(&*nodes[0], &*nodes[1], &env(NodeId(0), 3, 10), T).await,
        "{kind:?}: restarted sender heard"
    );
    nodes[0].broadcast(&env(NodeId(0), 4, 10)).await.unwrap();
    let got = recv_n(&*nodes[2], 1, T).await;
    assert!(got.iter().any(|(_, e)| tag(e) == 4));
}

async fn forged_sender(kind: Kind) {
    if skip(kind) {
        return;
    }
    let h = Harness::new(kind, 3);
    let nodes = h.start_all().await;
    assert!(send_until_received(&*nodes[0], &*nodes[1], &env(NodeId(0), WARMUP, 10), T).await);
    // Node 0 claims to be node 2.
    nodes[0]
        .send(NodeId(1), &env(NodeId(2), 2, 10))
        .await
        .unwrap();
    nodes[0].broadcast(&env(NodeId(2), 3, 10)).await.unwrap();
    nodes[0]
        .send(NodeId(1), &env(NodeId(0), 4, 10))
        .await
        .unwrap();
    let got = recv_n(&*nodes[1], 2, Duration::from_secs(2)).await;
    let tags: Vec<u64> = got.iter().map(|(_, e)| tag(e)).collect();
    assert!(
        tags.contains(&4) && !tags.contains(&2) && !tags.contains(&3),
        "{tags:?}"
    );
    recv_none(&*nodes[2], Duration::from_millis(300)).await;
    assert_eq!(nodes[1].stats().dropped_forged_sender, 2);
    assert_eq!(nodes[2].stats().dropped_forged_sender, 1);
}

async fn lossy_link_recovers(kind: Kind) {
    if skip(kind) {
        return;
    }
    // 30% of messages are lost; a retransmit-until-acknowledged loop (what the protocol does)
    // still delivers all of them.
    let h = Harness::new(kind, 2);
    let (a, b): (std::sync::Arc<dyn Transport>, std::sync::Arc<dyn Transport>) = match kind {
        Kind::Udp => {
            // Small datagrams, so there are many to lose.
            let mut ca = h.udp_config(0);
            ca.loss = 0.3;
            ca.max_datagram = paxos_transport::udp::ETHERNET_DATAGRAM;
            let mut cb = h.udp_config(1);
            cb.loss = 0.3;
            cb.max_datagram = paxos_transport::udp::ETHERNET_DATAGRAM;
            (
                std::sync::Arc::new(paxos_transport::udp::UdpTransport::bind(ca).await.unwrap()),
                std::sync::Arc::new(paxos_transport::udp::UdpTransport::bind(cb).await.unwrap()),
            )
        }
        _ => {
            h.mem.set_loss(0.3);
            (h.start(0).await, h.start(1).await)
        }
    };
    let total = 100u64;
    let mut delivered = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while (delivered.len() as u64) < total && tokio::time::Instant::now() < deadline {
        // Send every unacknowledged message, then collect acks (b echoes the tag back).
        for n in 0..total {
            if !delivered.contains(&n) {
                a.send(NodeId(1), &env(NodeId(0), n, 400)).await.unwrap();
            }
        }
        let got = recv_n(&*b, total as usize, Duration::from_millis(100)).await;
        for (_, e) in got {
            b.send(NodeId(0), &env(NodeId(1), tag(&e), 1))
                .await
                .unwrap();
        }
        for (_, e) in recv_n(&*a, total as usize, Duration::from_millis(100)).await {
            delivered.insert(tag(&e));
        }
    }
    assert_eq!(delivered.len() as u64, total);
    let lost = a.stats().dropped_injected + b.stats().dropped_injected;
    assert!(lost > 0, "loss was injected");
}

/// A batch with a message to a non-member in the middle: the others are still sent, and the
/// failure is reported for that one message.
async fn one_bad_message_in_a_batch(kind: Kind) {
    if skip(kind) {
        return;
    }
    let h = Harness::new(kind, 2);
    let nodes = h.start_all().await;
    assert!(send_until_received(&*nodes[0], &*nodes[1], &env(NodeId(0), 9999, 10), T).await);
    let batch = vec![
        (Some(NodeId(1)), env(NodeId(0), 1, 100)),
        (Some(NodeId(7)), env(NodeId(0), 2, 100)),
        (Some(NodeId(1)), env(NodeId(0), 3, 100)),
    ];
    match nodes[0].send_batch(&batch).await {
        Err(
            e @ paxos_transport::TransportError::Partial {
                failed: 1,
                total: 3,
                ..
            },
        ) => {
            assert_eq!(e.failed_messages(), 1)
        }
        other => panic!("expected one failure of three, got {other:?}"),
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + T;
    while got.len() < 2 && std::time::Instant::now() < deadline {
        got.extend(
            recv_n(&*nodes[1], 1, Duration::from_millis(200))
                .await
                .into_iter()
                .map(|(_, e)| tag(&e))
                .filter(|&t| t != 9999),
        );
    }
    assert_eq!(got, vec![1, 3], "the message after the bad one was sent");
}

macro_rules! suite {
    ($($name:ident),*) => {
        mod mem { use super::*; $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Kind::Mem).await } )* }
        mod udp { use super::*; $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Kind::Udp).await } )* }
        mod quic { use super::*; $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Kind::Quic).await } )* }
    };
}

suite!(
    delivery,
    send_to_all,
    large_messages,
    many_peers,
    restart,
    forged_sender,
    one_bad_message_in_a_batch
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_lossy_link_recovers() {
    lossy_link_recovers(Kind::Mem).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_lossy_link_recovers() {
    lossy_link_recovers(Kind::Udp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_partition_delay_and_non_member() {
    let net = MemNetwork::new([NodeId(0), NodeId(1), NodeId(2)]);
    let a = net.endpoint(NodeId(0)).unwrap();
    let b = net.endpoint(NodeId(1)).unwrap();
    assert!(net.endpoint(NodeId(9)).is_err());
    net.partition(NodeId(0), NodeId(1));
    a.send(NodeId(1), &env(NodeId(0), 1, 1)).await.unwrap();
    recv_none(&b, Duration::from_millis(100)).await;
    net.heal();
    net.set_delay(Duration::from_millis(200));
    let t0 = std::time::Instant::now();
    a.send(NodeId(1), &env(NodeId(0), 2, 1)).await.unwrap();
    let got = recv_n(&b, 1, Duration::from_secs(2)).await;
    assert_eq!(tag(&got[0].1), 2);
    assert!(t0.elapsed() >= Duration::from_millis(190));
    net.set_delay(Duration::ZERO);
    let outsider = net.outsider(NodeId(9));
    outsider
        .send(NodeId(1), &env(NodeId(9), 3, 1))
        .await
        .unwrap();
    recv_none(&b, Duration::from_millis(100)).await;
    assert_eq!(b.stats().dropped_non_member, 1);
    assert_eq!(b.stats().dropped_injected, 1);
}
