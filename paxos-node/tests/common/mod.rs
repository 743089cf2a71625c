//! What the real-process tests share: a client workload of put / get / cas on a few shared keys
//! with every operation recorded, the linearizability check of its history, and `/proc` figures.
#![allow(dead_code)] // each test binary uses a different part

pub(crate) mod in_process;

use bytes::Bytes;
use paxos_node::checker::{check_register, HistoryOp, RegisterOp};
use paxos_node::client::Client;
use paxos_node::cluster::{ClusterOptions, LocalCluster};
use paxos_node::kv::KvResult;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared keys of the checked workload.
pub(crate) const KEYS: usize = 4;

/// Every operation on each shared key.
pub(crate) type History = Arc<Mutex<BTreeMap<usize, Vec<HistoryOp>>>>;

/// A cluster of `o` (in `dir`, or a temporary directory) started, with its first leader and
/// that leader's view.
pub(crate) async fn started(
    o: &ClusterOptions,
    dir: Option<std::path::PathBuf>,
) -> (LocalCluster, usize, u64) {
    let mut cluster = LocalCluster::create(binary(), o, dir).unwrap();
    cluster.start_all().unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let view = cluster.status(leader).await.unwrap().view;
    (cluster, leader, view)
}

/// The server binary under test.
pub(crate) fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_paxos-node"))
}

/// When a workload loop stops: at an instant, or once a flag is raised.
#[derive(Clone, Debug)]
pub(crate) enum Until {
    /// At this instant.
    At(Instant),
    /// When this flag becomes true.
    Raised(Arc<AtomicBool>),
}

impl Until {
    fn reached(&self) -> bool {
        match self {
            Until::At(t) => Instant::now() >= *t,
            Until::Raised(f) => f.load(Ordering::Relaxed),
        }
    }
}

impl From<Instant> for Until {
    fn from(t: Instant) -> Until {
        Until::At(t)
    }
}

/// One client's loop: random put / get / cas on shared keys, every operation recorded.
pub(crate) async fn client_loop(
    id: usize,
    servers: Vec<std::net::SocketAddr>,
    start: Instant,
    until: impl Into<Until>,
    history: History,
) -> u64 {
    let until = until.into();
    let mut c = Client::new(servers);
    c.op_timeout = Duration::from_secs(5);
    let mut n = 0u64;
    let mut rng = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut last_seen: Vec<Option<Bytes>> = vec![None; KEYS];
    while !until.reached() {
        n += 1;
        let key = (next() % KEYS as u64) as usize;
        let kname = format!("key{key}");
        let value = Bytes::from(format!("c{id}-{n}"));
        let invoke = start.elapsed().as_micros() as u64;
        let choice = next() % 3;
        let (op, outcome) = match choice {
            0 => {
                let r = c.put(kname, value.clone()).await;
                (RegisterOp::Write(Some(value)), r.map(|_| None::<()>))
            }
            1 => {
                let r = c.get(kname).await;
                match r {
                    Ok(v) => {
                        last_seen[key] = v.clone();
                        (RegisterOp::Read(v), Ok(None))
                    }
                    Err(e) => (RegisterOp::Read(None), Err(e)),
                }
            }
            _ => {
                let expected = last_seen[key].clone();
                let r = c.cas(kname, expected.clone(), Some(value.clone())).await;
                match r {
                    Ok(KvResult::Swapped) => (
                        RegisterOp::Cas {
                            expected,
                            new: Some(value),
                            swapped: true,
                        },
                        Ok(None),
                    ),
                    Ok(KvResult::CasFailed { current }) => {
                        last_seen[key] = current;
                        (
                            RegisterOp::Cas {
                                expected,
                                new: Some(value),
                                swapped: false,
                            },
                            Ok(None),
                        )
                    }
                    Ok(other) => panic!("unexpected cas result {other:?}"),
                    Err(e) => (
                        RegisterOp::Cas {
                            expected,
                            new: Some(value),
                            swapped: false,
                        },
                        Err(e),
                    ),
                }
            }
        };
        let complete = match outcome {
            Ok(_) => Some(start.elapsed().as_micros() as u64),
            Err(_) => None, // unknown outcome: may or may not have taken effect
        };
        if complete.is_none() {
            // A client whose outcome is unknown continues as a fresh client (a new process, as in
            // Knossos), so its next operation is not ordered after the unknown one.
            c = Client::new(c.server().into_iter().collect::<Vec<_>>());
        }
        history
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push(HistoryOp {
                invoke,
                complete,
                op,
            });
    }
    n
}

/// Checks every key's history is linearizable; returns the operations checked.
pub(crate) fn check(history: &History) -> usize {
    let h = history.lock().unwrap();
    let mut total = 0;
    for (key, ops) in h.iter() {
        total += ops.len();
        if let Err(e) = check_register(None, ops) {
            panic!("key{key}: {e}; history: {ops:#?}");
        }
    }
    total
}

/// One read of every key after the faults (so the history ends with known values).
pub(crate) async fn final_reads(cluster: &LocalCluster, start: Instant, history: &History) {
    let mut c = Client::new(cluster.client_addrs());
    c.op_timeout = Duration::from_secs(30);
    for key in 0..KEYS {
        let invoke = start.elapsed().as_micros() as u64;
        let v = c
            .get(format!("key{key}"))
            .await
            .expect("cluster healed: reads succeed");
        let complete = Some(start.elapsed().as_micros() as u64);
        history
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push(HistoryOp {
                invoke,
                complete,
                op: RegisterOp::Read(v),
            });
    }
}

/// `clients` workload loops until `until`, each starting at another server.
pub(crate) fn shared_clients(
    cluster: &LocalCluster,
    clients: usize,
    start: Instant,
    until: impl Into<Until>,
    history: &History,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let until = until.into();
    let addrs = cluster.client_addrs();
    (0..clients)
        .map(|i| {
            let mut servers = addrs.clone();
            servers.rotate_left(i % addrs.len());
            tokio::spawn(client_loop(
                i,
                servers,
                start,
                until.clone(),
                history.clone(),
            ))
        })
        .collect()
}
