//! Transport benchmark: messages/s and MB/s for 200-byte and 64 KiB messages, one-to-one and
//! one-to-all with 3 and 5 nodes, for the in-memory, UDP multicast and QUIC transports, next to
//! a plain TCP socket baseline measured in the same run.
//!
//! Run with `cargo run --release -p paxos-transport --example transport_bench` (as root, or with
//! loopback already multicast-capable, for the UDP rows). Each cell sends for at most
//! `PXT_BENCH_SECS` seconds (default 1); the whole run takes well under 3 minutes.
//!
//! Method: node 0 sends envelopes (a `ClientUpdate` whose payload has the given size) as fast
//! as a window allows: at most 4 MiB (at least 64 messages) sent but not yet received by the
//! slowest receiver, as the protocol's window would. A window stalled for 20 ms is abandoned
//! (losses on UDP are counted, not retransmitted). msgs/s is messages delivered to *every*
//! receiver per second; MB/s is delivered payload summed over receivers (so one-to-all counts
//! each copy); `vs TCP` compares MB/s with the TCP row of the same cell. The TCP baseline writes
//! the same encoded envelope (encoded once) as `u32 length | bytes` frames on one connection per
//! receiver and the receiver reads frames without decoding, so the transports pay for the codec
//! and the baseline does not; the `tcp+codec` row encodes every envelope at the sender and
//! decodes it at the receiver, the per-message work every transport must do (`vs TCP+codec`).

use bytes::Bytes;
use paxos_core::codec::encode_envelope;
use paxos_core::{ClientId, ClientUpdate, Envelope, Message, NodeId, Timestamp};
use paxos_transport::keygen::ClusterCa;
use paxos_transport::mem::MemNetwork;
use paxos_transport::quic::{QuicConfig, QuicTransport};
use paxos_transport::udp::{UdpConfig, UdpTransport};
use paxos_transport::{PeerConfig, Transport};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

const WINDOW_BYTES: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pattern {
    OneToOne,
    OneToAll,
}

struct Result {
    msgs_per_s: f64,
    mb_per_s: f64,
    lost_pct: f64,
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn envelope(size: usize) -> Envelope {
    Envelope {
        from: NodeId(0),
        message: Message::ClientUpdate(ClientUpdate {
            client_id: ClientId(1),
            server_id: NodeId(0),
            timestamp: Timestamp(1),
            payload: Bytes::from(vec![0xa5; size]),
        }),
    }
}

fn multicast_ready() -> bool {
    let has = || {
        std::process::Command::new("ip")
            .args(["link", "show", "lo"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("MULTICAST"))
            .unwrap_or(false)
    };
    if !has() {
        let _ = std::process::Command::new("ip")
            .args(["link", "set", "lo", "multicast", "on"])
            .status();
    }
    has()
}

/// Counts of what each receiver got, and a wake-up for the sender.
struct Progress {
    received: Vec<AtomicU64>,
    notify: Notify,
}

impl Progress {
    fn new(n: usize) -> Arc<Progress> {
        Arc::new(Progress {
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
            notify: Notify::new(),
        })
    }
    fn min(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
    fn sum(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .sum()
    }
    fn reset(&self) {
        for r in &self.received {
            r.store(0, Ordering::Relaxed);
        }
    }
}

/// Drives the sender under the window, then waits for the receivers to drain.
async fn drive<F, Fut>(
    progress: &Progress,
    size: usize,
    secs: f64,
    receivers: usize,
    mut send: F,
) -> Result
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let window = (WINDOW_BYTES / size).max(64) as u64;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while start.elapsed() < limit {
        while sent - progress.min().min(sent) >= window {
            let stalled = tokio::select! {
                _ = progress.notify.notified() => false,
                _ = tokio::time::sleep(Duration::from_millis(20)) => true,
            };
            if stalled {
                break;
            }
        }
        send().await;
        sent += 1;
    }
    // Drain: wait until everything arrived or nothing moved for 200 ms.
    let mut last = progress.sum();
    let mut last_change = Instant::now();
    while progress.min() < sent && last_change.elapsed() < Duration::from_millis(200) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = progress.sum();
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    let elapsed = (last_change.max(start + Duration::from_millis(1)) - start).as_secs_f64();
    let elapsed = if progress.min() >= sent {
        start.elapsed().as_secs_f64()
    } else {
        elapsed
    };
    let delivered = progress.sum();
    let expected = sent * receivers as u64;
    Result {
        msgs_per_s: progress.min() as f64 / elapsed,
        mb_per_s: delivered as f64 * size as f64 / elapsed / 1e6,
        lost_pct: 100.0 * (expected.saturating_sub(delivered)) as f64 / expected.max(1) as f64,
    }
}

async fn bench_transport(
    nodes: Vec<Arc<dyn Transport>>,
    pattern: Pattern,
    size: usize,
    secs: f64,
) -> Option<Result> {
    let receivers: Vec<Arc<dyn Transport>> = match pattern {
        Pattern::OneToOne => vec![nodes[1].clone()],
        Pattern::OneToAll => nodes[1..].to_vec(),
    };
    let progress = Progress::new(receivers.len());
    let tasks: Vec<_> = receivers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let r = r.clone();
            let p = progress.clone();
            tokio::spawn(async move {
                while r.recv().await.is_ok() {
                    p.received[i].fetch_add(1, Ordering::Relaxed);
                    p.notify.notify_one();
                }
            })
        })
        .collect();
    // Warm up: every receiver reachable (QUIC connects, UDP joins settle).
    let warm = envelope(16);
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress
        .received
        .iter()
        .any(|r| r.load(Ordering::Relaxed) == 0)
    {
        if Instant::now() > deadline {
            return None;
        }
        for r in &receivers {
            let _ = nodes[0].send(r.local_id(), &warm).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    progress.reset();
    let env = envelope(size);
    let sender = nodes[0].clone();
    let to = receivers[0].local_id();
    let result = drive(&progress, size, secs, receivers.len(), || {
        let sender = sender.clone();
        let env = &env;
        async move {
            let _ = match pattern {
                Pattern::OneToOne => sender.send(to, env).await,
                Pattern::OneToAll => sender.broadcast(env).await,
            };
        }
    })
    .await;
    for t in tasks {
        t.abort();
    }
    let st = nodes[0].stats();
    if std::env::var("PXT_BENCH_VERBOSE").is_ok() {
        eprintln!(
            "sender: {} messages, {} packets, {:.0} bytes/packet, {} dropped",
            st.sent_messages,
            st.sent_packets,
            st.sent_bytes as f64 / st.sent_packets.max(1) as f64,
            st.dropped_total()
        );
    }
    Some(result)
}

async fn bench_tcp(receivers: usize, size: usize, secs: f64, codec: bool) -> Result {
    let frame = {
        let body = encode_envelope(&envelope(size)).expect("encode");
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    };
    let progress = Progress::new(receivers);
    let mut writers = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..receivers {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let p = progress.clone();
        tasks.push(tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let _ = s.set_nodelay(true);
            let mut r = tokio::io::BufReader::with_capacity(256 << 10, s);
            let mut body = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if r.read_exact(&mut len).await.is_err() {
                    return;
                }
                body.resize(u32::from_be_bytes(len) as usize, 0);
                if r.read_exact(&mut body).await.is_err() {
                    return;
                }
                if codec && paxos_core::decode_envelope(&body).is_err() {
                    return;
                }
                p.received[i].fetch_add(1, Ordering::Relaxed);
                p.notify.notify_one();
            }
        }));
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = s.set_nodelay(true);
        writers.push(tokio::io::BufWriter::with_capacity(256 << 10, s));
    }
    let writers = tokio::sync::Mutex::new(writers);
    let frame = &frame;
    let env = envelope(size);
    let env = &env;
    let result = drive(&progress, size, secs, receivers, || async {
        let mut w = writers.lock().await;
        let encoded;
        let frame: &[u8] = if codec {
            let body = encode_envelope(env).expect("encode");
            let mut f = Vec::with_capacity(4 + body.len());
            f.extend_from_slice(&(body.len() as u32).to_be_bytes());
            f.extend_from_slice(&body);
            encoded = f;
            &encoded
        } else {
            frame
        };
        for w in w.iter_mut() {
            let _ = w.write_all(frame).await;
        }
        // Flush when the buffers would otherwise hold the window hostage.
        if w[0].buffer().len() + frame.len() > (128 << 10) || size > 4096 {
            for w in w.iter_mut() {
                let _ = w.flush().await;
            }
        }
    })
    .await;
    for t in tasks {
        t.abort();
    }
    result
}

async fn cluster(kind: &str, n: u32) -> Option<Vec<Arc<dyn Transport>>> {
    let peers: Vec<PeerConfig> = (0..n)
        .map(|i| PeerConfig {
            id: NodeId(i),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
        })
        .collect();
    let mut nodes: Vec<Arc<dyn Transport>> = Vec::new();
    match kind {
        "memory" => {
            let net = MemNetwork::new(peers.iter().map(|p| p.id));
            for p in &peers {
                nodes.push(Arc::new(net.endpoint(p.id).ok()?));
            }
        }
        "udp" => {
            let key: [u8; 32] = rand::random();
            let group = SocketAddrV4::new(
                Ipv4Addr::new(239, 255, 42, rand::random::<u8>().max(1)),
                free_port(),
            );
            for p in &peers {
                let c = UdpConfig::new(p.id, peers.clone(), group, Ipv4Addr::LOCALHOST, key);
                nodes.push(Arc::new(UdpTransport::bind(c).await.ok()?));
            }
        }
        _ => {
            let ca = ClusterCa::generate().ok()?;
            for p in &peers {
                let c = QuicConfig::new(p.id, peers.clone(), ca.issue(p.id).ok()?);
                nodes.push(Arc::new(QuicTransport::bind(c).await.ok()?));
            }
        }
    }
    Some(nodes)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: f64 = std::env::var("PXT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    // PXT_BENCH_FILTER selects transport rows by "nodes-pattern-size-transport" substring.
    let filter = std::env::var("PXT_BENCH_FILTER").unwrap_or_default();
    let udp_ok = multicast_ready();
    if !udp_ok {
        eprintln!("loopback is not multicast-capable (run as root): UDP rows skipped");
    }
    let began = Instant::now();
    {
        // What the UDP transport's authentication costs here: HMAC-SHA256 over 64 MB.
        use hmac::{Hmac, Mac};
        let data = vec![0x5au8; 1 << 20];
        let mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&[1u8; 32]).expect("key");
        let t = Instant::now();
        for _ in 0..64 {
            let mut m = mac.clone();
            m.update(&data);
            std::hint::black_box(m.finalize());
        }
        println!(
            "HMAC-SHA256 on one core: {:.0} MB/s\n",
            64.0 * (1 << 20) as f64 / t.elapsed().as_secs_f64() / 1e6
        );
    }
    println!(
        "| nodes | pattern | size | transport | msgs/s | MB/s | lost | vs TCP | vs TCP+codec |\n|---|---|---|---|---|---|---|---|---|"
    );
    for n in [3u32, 5] {
        for pattern in [Pattern::OneToOne, Pattern::OneToAll] {
            for size in [200usize, 64 << 10] {
                let receivers = match pattern {
                    Pattern::OneToOne => 1,
                    Pattern::OneToAll => n as usize - 1,
                };
                let (tcp, tcp_codec) = if filter.is_empty() {
                    (
                        bench_tcp(receivers, size, secs, false).await,
                        bench_tcp(receivers, size, secs, true).await,
                    )
                } else {
                    // Filtered runs (for profiling) skip the baselines.
                    let none = || Result {
                        msgs_per_s: 0.0,
                        mb_per_s: 0.0,
                        lost_pct: 0.0,
                    };
                    (none(), none())
                };
                let pat = match pattern {
                    Pattern::OneToOne => "one-to-one",
                    Pattern::OneToAll => "one-to-all",
                };
                let row = |name: &str, r: &Result| {
                    println!(
                        "| {n} | {pat} | {size} | {name} | {:.0} | {:.1} | {:.1}% | {:.0}% | {:.0}% |",
                        r.msgs_per_s,
                        r.mb_per_s,
                        r.lost_pct,
                        100.0 * r.mb_per_s / tcp.mb_per_s.max(1e-9),
                        100.0 * r.mb_per_s / tcp_codec.mb_per_s.max(1e-9)
                    )
                };
                row("tcp (baseline)", &tcp);
                row("tcp+codec", &tcp_codec);
                for kind in ["memory", "udp", "quic"] {
                    if kind == "udp" && !udp_ok {
                        continue;
                    }
                    if !filter.is_empty() && !format!("{n}-{pat}-{size}-{kind}").contains(&filter) {
                        continue;
                    }
                    let Some(nodes) = cluster(kind, n).await else {
                        println!("| {n} | {pat} | {size} | {kind} | setup failed | | | | |");
                        continue;
                    };
                    match bench_transport(nodes, pattern, size, secs).await {
                        Some(r) => row(kind, &r),
                        None => {
                            println!("| {n} | {pat} | {size} | {kind} | warm-up failed | | | | |")
                        }
                    }
                }
            }
        }
    }
    eprintln!("total {:?}", began.elapsed());
}
