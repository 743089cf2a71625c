//! Security cases: QUIC peers with a wrong CA, no client certificate, a self-signed certificate,
//! a non-member certificate or an impersonated server; UDP datagrams tampered, truncated,
//! replayed, under a wrong key, malformed under a valid tag, or from a non-member. Each is
//! dropped, counted, and never delivered.
#![allow(missing_docs)]

mod common;

use common::*;
use paxos_core::codec::encode_envelope;
use paxos_core::NodeId;
use paxos_transport::keygen::{self_signed_node, ClusterCa, NodeTls};
use paxos_transport::quic::{self, QuicConfig, QuicTransport};
use paxos_transport::udp::{batch_payload, seal, UdpTransport};
use paxos_transport::{PeerConfig, Transport};
use std::net::SocketAddr;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(1500);

/// Starts an intruder claiming `claimed` with `tls`, pointed at node 1 of `h`, and makes it send.
async fn intrude(h: &Harness, claimed: u32, tls: NodeTls) -> QuicTransport {
    let me = PeerConfig {
        id: NodeId(claimed),
        addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
    };
    let peers = vec![me, h.peers[1]];
    let t = QuicTransport::bind(QuicConfig::new(NodeId(claimed), peers, tls))
        .await
        .unwrap();
    for n in 0..10 {
        t.send(NodeId(1), &env(NodeId(claimed), n, 10))
            .await
            .unwrap();
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_refuses_wrong_ca_self_signed_and_non_member() {
    let h = Harness::new(Kind::Quic, 2);
    let nodes = h.start_all().await;
    assert!(
        send_until_received(
            &*nodes[0],
            &*nodes[1],
            &env(NodeId(0), WARMUP, 1),
            QUIET * 5
        )
        .await
    );

    // A certificate for member 0 from another CA (which trusts the real CA, to get as far as
    // possible).
    let other = ClusterCa::generate().unwrap();
    let mut wrong = other.issue(NodeId(0)).unwrap();
    wrong.ca = h.ca.cert_der();
    let _a = intrude(&h, 0, wrong).await;
    recv_none(&*nodes[1], QUIET).await;
    let s = nodes[1].stats();
    assert!(s.dropped_unauthenticated >= 1, "wrong CA: {s:?}");

    // A self-signed certificate naming member 0.
    let before = nodes[1].stats().dropped_unauthenticated;
    let _b = intrude(&h, 0, self_signed_node(NodeId(0), h.ca.cert_der()).unwrap()).await;
    recv_none(&*nodes[1], QUIET).await;
    assert!(
        nodes[1].stats().dropped_unauthenticated > before,
        "self-signed"
    );

    // A certificate from the right CA for a non-member (dialling directly: a member with a
    // higher id than its peer would wait to be dialled).
    let (_, client) = quic::rustls_configs(&h.ca.issue(NodeId(9)).unwrap()).unwrap();
    raw_send(client, h.peers[1].addr).await;
    recv_none(&*nodes[1], QUIET).await;
    assert!(nodes[1].stats().dropped_non_member >= 1, "non-member");

    // The legitimate member still gets through.
    assert!(send_until_received(&*nodes[0], &*nodes[1], &env(NodeId(0), 2, 1), QUIET * 5).await);
}

/// Dials `addr` as `node-1.paxos` with a raw quinn client and tries to send one frame.
async fn raw_send(client: rustls::ClientConfig, addr: SocketAddr) {
    let ep = quic::endpoint(
        "127.0.0.1:0".parse().unwrap(),
        None,
        client,
        quic::transport_config(Duration::from_secs(3), Duration::from_secs(1)).unwrap(),
        1 << 20,
    )
    .unwrap();
    let sent = async {
        let conn = ep.connect(addr, "node-1.paxos").ok()?.await.ok()?;
        let mut s = conn.open_uni().await.ok()?;
        let body = encode_envelope(&env(NodeId(0), 5, 10)).unwrap();
        s.write_all(&(body.len() as u32).to_be_bytes()).await.ok()?;
        s.write_all(&body).await.ok()?;
        s.finish().ok()?;
        // Give the frame time to arrive, were it accepted.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some(())
    }
    .await;
    let _ = sent;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_refuses_client_without_certificate() {
    let h = Harness::new(Kind::Quic, 2);
    let nodes = h.start_all().await;
    // A raw client trusting the CA but presenting no certificate.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(h.ca.cert_der()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![quic::ALPN.to_vec()];
    raw_send(client, h.peers[1].addr).await;
    recv_none(&*nodes[1], QUIET).await;
    assert!(nodes[1].stats().dropped_unauthenticated >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_client_refuses_impersonated_server() {
    // Node 0 believes node 1 lives at node 2's address: node 2's certificate does not name
    // node 1, so node 0 refuses the connection and nothing is delivered to node 2.
    let h = Harness::new(Kind::Quic, 3);
    let mut peers = h.peers.clone();
    peers[1].addr = h.peers[2].addr;
    let a = QuicTransport::bind(QuicConfig::new(NodeId(0), peers, h.tls[0].clone()))
        .await
        .unwrap();
    let c = h.start(2).await;
    for n in 0..5 {
        a.send(NodeId(1), &env(NodeId(0), n, 10)).await.unwrap();
    }
    recv_none(&*c, QUIET).await;
}

async fn udp_pair() -> (
    Harness,
    Vec<std::sync::Arc<dyn Transport>>,
    std::net::UdpSocket,
) {
    let h = Harness::new(Kind::Udp, 2);
    let nodes = h.start_all().await;
    let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (h, nodes, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_drops_tampered_truncated_wrong_key_replayed_and_non_member() {
    if skip(Kind::Udp) {
        return;
    }
    let (h, nodes, raw) = udp_pair().await;
    let target = h.peers[1].addr;
    let b = &nodes[1];
    let msg = |n| encode_envelope(&env(NodeId(0), n, 20)).unwrap();
    let epoch = 1u64 << 60; // far above the real node 0's epoch

    // A valid datagram is delivered once; its replay is dropped.
    let good = seal(&h.key, 0, NodeId(0), epoch, 0, &batch_payload(&[&msg(1)]));
    raw.send_to(&good, target).unwrap();
    let got = recv_n(&**b, 1, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1);
    raw.send_to(&good, target).unwrap();
    recv_none(&**b, Duration::from_millis(300)).await;
    assert_eq!(b.stats().dropped_replay, 1);

    // An older epoch is a replay too.
    let old = seal(
        &h.key,
        0,
        NodeId(0),
        epoch - 1,
        7,
        &batch_payload(&[&msg(2)]),
    );
    raw.send_to(&old, target).unwrap();

    // Tampered: one payload bit flipped.
    let mut bad = seal(&h.key, 0, NodeId(0), epoch, 1, &batch_payload(&[&msg(3)]));
    bad[30] ^= 1;
    raw.send_to(&bad, target).unwrap();
    // Truncated: the tag cut short, and a datagram shorter than a header.
    let t = seal(&h.key, 0, NodeId(0), epoch, 2, &batch_payload(&[&msg(4)]));
    raw.send_to(&t[..t.len() - 5], target).unwrap();
    raw.send_to(&t[..10], target).unwrap();
    // Wrong key.
    let wrong = seal(
        &[7u8; 32],
        0,
        NodeId(0),
        epoch,
        3,
        &batch_payload(&[&msg(5)]),
    );
    raw.send_to(&wrong, target).unwrap();
    // Valid tag, malformed content (length prefix past the end, garbage envelope).
    let m1 = seal(&h.key, 0, NodeId(0), epoch, 4, &[0, 0, 1, 0, 1, 2]);
    let m2 = seal(
        &h.key,
        0,
        NodeId(0),
        epoch,
        5,
        &batch_payload(&[&[1, 200, 3]]),
    );
    raw.send_to(&m1, target).unwrap();
    raw.send_to(&m2, target).unwrap();
    // Valid key, non-member sender.
    let nm = seal(&h.key, 0, NodeId(9), epoch, 0, &batch_payload(&[&msg(6)]));
    raw.send_to(&nm, target).unwrap();
    // Valid datagram whose envelope claims another sender.
    let forged = encode_envelope(&env(NodeId(1), 7, 20)).unwrap();
    let f = seal(&h.key, 0, NodeId(0), epoch, 6, &batch_payload(&[&forged]));
    raw.send_to(&f, target).unwrap();

    recv_none(&**b, Duration::from_millis(500)).await;
    let s = b.stats();
    assert_eq!(s.dropped_replay, 2, "{s:?}");
    assert_eq!(s.dropped_unauthenticated, 3, "{s:?}");
    assert_eq!(s.dropped_malformed, 3, "{s:?}");
    assert_eq!(s.dropped_non_member, 1, "{s:?}");
    assert_eq!(s.dropped_forged_sender, 1, "{s:?}");
    assert_eq!(s.received_messages, 1, "{s:?}");

    // The real node 0 (a lower epoch than the forged traffic above) is now treated as a replay
    // source: that is why epochs come from the clock. A fresh datagram in the high epoch passes.
    let next = seal(&h.key, 0, NodeId(0), epoch, 100, &batch_payload(&[&msg(8)]));
    raw.send_to(&next, target).unwrap();
    assert_eq!(recv_n(&**b, 1, Duration::from_secs(2)).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_reassembly_is_bounded() {
    if skip(Kind::Udp) {
        return;
    }
    let h = Harness::new(Kind::Udp, 2);
    let a = UdpTransport::bind(h.udp_config(0)).await.unwrap();
    let mut cb = h.udp_config(1);
    cb.reassembly_bytes = 100_000;
    let b = UdpTransport::bind(cb).await.unwrap();
    a.send(NodeId(1), &env(NodeId(0), 1, 1 << 20))
        .await
        .unwrap();
    a.send(NodeId(1), &env(NodeId(0), 2, 50_000)).await.unwrap();
    let got = recv_n(&b, 2, Duration::from_secs(2)).await;
    let tags: Vec<u64> = got.iter().map(|(_, e)| tag(e)).collect();
    assert_eq!(tags, vec![2], "only the message within the bound arrives");
    assert!(b.stats().dropped_reassembly > 0);
}

// Single-threaded: the 50 sends complete before the sender task runs, so batching is certain.
#[tokio::test]
async fn udp_small_datagrams_fragment_and_batch() {
    if skip(Kind::Udp) {
        return;
    }
    let h = Harness::new(Kind::Udp, 2);
    let mut ca = h.udp_config(0);
    ca.max_datagram = paxos_transport::udp::ETHERNET_DATAGRAM;
    let a = UdpTransport::bind(ca).await.unwrap();
    let b = UdpTransport::bind(h.udp_config(1)).await.unwrap();
    for n in 0..50 {
        a.send(
            NodeId(1),
            &env(NodeId(0), n, if n == 25 { 20_000 } else { 100 }),
        )
        .await
        .unwrap();
    }
    let got = recv_n(&b, 50, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 50);
    let s = a.stats();
    assert!(s.sent_packets < 30, "batched: {s:?}");
    assert!(s.sent_bytes / s.sent_packets <= 1472);
}
