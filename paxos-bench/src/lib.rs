//! # paxos-bench
//!
//! Benchmarks of whole clusters of real `paxos-node` processes on this machine: closed-loop
//! clients (each with one outstanding update, as in the PSB paper), throughput and latency
//! percentiles after a warm-up, and a record of the configuration, revision and machine so that a
//! result can be reproduced. The paper's figure sweeps and the cross-component comparison build on
//! [`run_throughput`].

use bytes::Bytes;
use hdrhistogram::Histogram;
use paxos_node::client::Client;
use paxos_node::cluster::{ClusterOptions, LocalCluster};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One throughput measurement's settings.
#[derive(Clone, Debug)]
pub struct ThroughputRun {
    /// The cluster.
    pub cluster: ClusterOptions,
    /// Closed-loop clients.
    pub clients: usize,
    /// Update size in bytes.
    pub update_bytes: usize,
    /// Warm-up, not measured.
    pub warmup: Duration,
    /// Measured interval.
    pub measure: Duration,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputResult {
    /// Servers.
    pub servers: usize,
    /// Clients.
    pub clients: usize,
    /// Durability mode.
    pub durability: String,
    /// Aggregation on.
    pub aggregation: bool,
    /// Storage backend.
    pub storage: String,
    /// Transport.
    pub transport: String,
    /// Election strategy.
    pub election: String,
    /// Updates completed in the measured interval.
    pub updates: u64,
    /// Updates per second.
    pub throughput: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Operations that timed out.
    pub timeouts: u64,
}

/// Machine and revision facts recorded with every result.
#[derive(Clone, Debug, Serialize)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the working tree, if available.
    pub git_revision: Option<String>,
    /// Logical CPUs.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: Option<String>,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
}

impl Provenance {
    /// Collects the facts now.
    pub fn collect() -> Provenance {
        let cmd = |prog: &str, args: &[&str]| {
            std::process::Command::new(prog)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        Provenance {
            git_revision: cmd("git", &["rev-parse", "HEAD"]),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: cmd("uname", &["-r"]),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// Starts a cluster of `binary` processes, drives closed-loop clients, and measures.
pub async fn run_throughput(
    binary: &Path,
    run: &ThroughputRun,
) -> anyhow::Result<ThroughputResult> {
    let mut cluster = LocalCluster::create(binary, &run.cluster, None)?;
    cluster.start_all()?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let addrs = cluster.client_addrs();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let timeouts = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        120_000_000,
        3,
    )?));
    let payload = Bytes::from(vec![b'x'; run.update_bytes]);
    let mut tasks = Vec::new();
    for c in 0..run.clients {
        let mut servers = addrs.clone();
        servers.rotate_left(c % addrs.len());
        let (measuring, stop, count, timeouts, hist, payload) = (
            measuring.clone(),
            stop.clone(),
            count.clone(),
            timeouts.clone(),
            hist.clone(),
            payload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(servers);
            let mut local = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = client.submit(payload.clone()).await.is_ok();
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        let _ = local.record((t.elapsed().as_micros() as u64).max(1));
                        count.fetch_add(1, Ordering::Relaxed);
                    } else {
                        timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = hist.lock().expect("not poisoned").add(&local);
        }));
    }
    tokio::time::sleep(run.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(run.measure).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let h = hist.lock().expect("not poisoned");
    let updates = count.load(Ordering::Relaxed);
    let p = &run.cluster.protocol;
    Ok(ThroughputResult {
        servers: run.cluster.servers,
        clients: run.clients,
        durability: format!("{:?}", p.durability).to_lowercase(),
        aggregation: p.aggregation,
        storage: format!("{:?}", run.cluster.storage).to_lowercase(),
        transport: format!("{:?}", run.cluster.transport).to_lowercase(),
        election: run.cluster.election.strategy.clone(),
        updates,
        throughput: updates as f64 / elapsed.as_secs_f64(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        timeouts: timeouts.load(Ordering::Relaxed),
    })
}
