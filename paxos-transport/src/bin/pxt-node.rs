//! `pxt-node`: a helper for the multi-host (network namespace) test. It runs one transport
//! endpoint, repeatedly broadcasts and unicasts small messages (and now and then a large one
//! that must be fragmented), and exits 0 once it has heard every peer by broadcast, by unicast
//! and with a large message (then keeps sending for a grace period so the others finish too),
//! or 1 when the time runs out.
//!
//! Usage: `pxt-node <udp|quic> <id> <id=ip:port,...> <group ip:port> <interface ip> <keys dir>
//! <seconds> [max datagram]`

use bytes::Bytes;
use paxos_core::{ClientId, ClientUpdate, Envelope, Message, NodeId, Timestamp};
use paxos_transport::quic::{QuicConfig, QuicTransport};
use paxos_transport::udp::{UdpConfig, UdpTransport};
use paxos_transport::{keygen, PeerConfig, Transport};
use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const BROADCAST: u64 = 1;
const UNICAST: u64 = 2;
const LARGE: u64 = 3;
const LARGE_SIZE: usize = 100_000;

fn usage() -> ExitCode {
    eprintln!(
        "usage: pxt-node <udp|quic> <id> <id=ip:port,...> <group ip:port> <interface ip> \
         <keys dir> <seconds> [max datagram]"
    );
    ExitCode::from(2)
}

fn msg(from: NodeId, kind: u64, round: u64, size: usize) -> Envelope {
    Envelope {
        from,
        message: Message::ClientUpdate(ClientUpdate {
            client_id: ClientId(kind),
            server_id: from,
            timestamp: Timestamp(round),
            payload: Bytes::from(vec![kind as u8; size]),
        }),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 7 {
        return usage();
    }
    let parsed = (|| -> Option<_> {
        let id = NodeId(args[1].parse().ok()?);
        let peers: Vec<PeerConfig> = args[2]
            .split(',')
            .map(|p| {
                let (i, a) = p.split_once('=')?;
                Some(PeerConfig {
                    id: NodeId(i.parse().ok()?),
                    addr: a.parse().ok()?,
                })
            })
            .collect::<Option<_>>()?;
        let group = args[3].parse().ok()?;
        let iface = args[4].parse().ok()?;
        let secs: u64 = args[6].parse().ok()?;
        let max_datagram: Option<usize> = match args.get(7) {
            Some(s) => Some(s.parse().ok()?),
            None => None,
        };
        Some((id, peers, group, iface, secs, max_datagram))
    })();
    let Some((id, peers, group, iface, secs, max_datagram)) = parsed else {
        return usage();
    };
    let keys = Path::new(&args[5]);
    let transport: Box<dyn Transport> = match args[0].as_str() {
        "udp" => {
            let key = match keygen::load_cluster_key(keys) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut config = UdpConfig::new(id, peers.clone(), group, iface, key);
            if let Some(m) = max_datagram {
                config.max_datagram = m;
            }
            match UdpTransport::bind(config).await {
                Ok(t) => Box::new(t),
                Err(e) => {
                    eprintln!("node {}: bind: {e}", id.0);
                    return ExitCode::FAILURE;
                }
            }
        }
        "quic" => {
            let config = match QuicConfig::from_keys_dir(id, peers.clone(), keys) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match QuicTransport::bind(config).await {
                Ok(t) => Box::new(t),
                Err(e) => {
                    eprintln!("node {}: bind: {e}", id.0);
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => return usage(),
    };
    let others: Vec<NodeId> = peers.iter().map(|p| p.id).filter(|&p| p != id).collect();
    let mut heard: [HashSet<NodeId>; 3] = Default::default();
    let start = Instant::now();
    let mut done_at: Option<Instant> = None;
    let mut round = 0u64;
    loop {
        round += 1;
        let _ = transport.broadcast(&msg(id, BROADCAST, round, 100)).await;
        for &p in &others {
            let _ = transport.send(p, &msg(id, UNICAST, round, 100)).await;
        }
        if round % 5 == 1 {
            let _ = transport
                .broadcast(&msg(id, LARGE, round, LARGE_SIZE))
                .await;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(Ok((from, env))) = tokio::time::timeout_at(until, transport.recv()).await {
            if let Message::ClientUpdate(u) = &env.message {
                let k = u.client_id.0;
                if (BROADCAST..=LARGE).contains(&k) && (k != LARGE || u.payload.len() == LARGE_SIZE)
                {
                    heard[(k - 1) as usize].insert(from);
                }
            }
        }
        let complete = heard.iter().all(|h| others.iter().all(|o| h.contains(o)));
        if complete && done_at.is_none() {
            done_at = Some(Instant::now());
            println!(
                "node {} OK: heard every peer by broadcast, unicast and large message after {:?}",
                id.0,
                start.elapsed()
            );
        }
        if done_at.is_some_and(|d| d.elapsed() > Duration::from_secs(3)) {
            println!("node {} stats {:?}", id.0, transport.stats());
            return ExitCode::SUCCESS;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            eprintln!(
                "node {} FAILED: broadcast from {:?}, unicast from {:?}, large from {:?}; stats {:?}",
                id.0,
                heard[0],
                heard[1],
                heard[2],
                transport.stats()
            );
            return ExitCode::FAILURE;
        }
    }
}
