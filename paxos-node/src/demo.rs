//! `paxos-node demo`: a local 3-server cluster under a key-value workload, with a leader crash in
//! the middle, its restart and catch-up, and a final check that every replica holds the same state.

use crate::client::Client;
use crate::cluster::{ClusterError, ClusterOptions, LocalCluster};
use crate::kv::KvResult;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Concurrent clients.
    pub clients: usize,
    /// Length of the workload.
    pub duration: Duration,
    /// The cluster to build.
    pub cluster: ClusterOptions,
}

/// What the demo measured.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    /// Updates acknowledged.
    pub updates: u64,
    /// Updates per second over the workload.
    pub throughput: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
    /// Leader changes observed.
    pub leader_changes: u64,
    /// Operations that timed out (outcome unknown).
    pub timeouts: u64,
    /// Final aru, equal on every replica.
    pub aru: u64,
    /// Final state digest, equal on every replica.
    pub digest: u64,
    /// Whether every acknowledged write was read back with its value.
    pub verified_writes: u64,
}

fn say(bar: &ProgressBar, msg: impl AsRef<str>) {
    if bar.is_hidden() {
        // Not a terminal (CI, a pipe): indicatif prints nothing, so print plainly.
        println!("  {}", msg.as_ref());
    } else {
        bar.println(format!("  {}", msg.as_ref()));
    }
}

/// Runs the demo with the `paxos-node` binary at `binary`.
pub async fn run(binary: &Path, opts: DemoOptions) -> Result<DemoSummary, ClusterError> {
    println!(
        "Starting a local {}-server cluster (processes on loopback)...",
        opts.cluster.servers
    );
    let mut cluster = LocalCluster::create(binary, &opts.cluster, None)?;
    println!("  working directory: {}", cluster.dir().display());
    println!(
        "  components: election {}, storage {:?}, transport {:?}, durability {:?}",
        opts.cluster.election.strategy,
        opts.cluster.storage,
        opts.cluster.transport,
        opts.cluster.protocol.durability
    );
    cluster.start_all()?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    println!("  server {leader} leads");

    let addrs = cluster.client_addrs();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let timeouts = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
    ));
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..opts.clients {
        // Clients spread over the servers, each preferring "its" server, as in the paper.
        let mut servers = addrs.clone();
        servers.rotate_left(c % addrs.len());
        let (stop, done, timeouts, hist, acked) = (
            stop.clone(),
            done.clone(),
            timeouts.clone(),
            hist.clone(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(servers);
            client.op_timeout = Duration::from_secs(20);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("c{c}-k{}", i % 64);
                let value = format!("v{i}-{}", "x".repeat(180));
                let t = Instant::now();
                match client.put(key.clone(), value.clone()).await {
                    Ok(KvResult::Done) => {
                        let us = t.elapsed().as_micros() as u64;
                        let _ = hist.lock().expect("not poisoned").record(us.max(1));
                        done.fetch_add(1, Ordering::Relaxed);
                        acked.lock().expect("not poisoned").push((key, value));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let total = opts.duration;
    let bar = ProgressBar::new(total.as_secs());
    bar.set_style(
        ProgressStyle::with_template("  [{elapsed_precise}] {bar:40} {pos}/{len}s {msg}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let mut killed: Option<usize> = None;
    let mut restarted = false;
    let mut leader_changes = 0u64;
    let mut last_leader = Some(leader);
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let t = started.elapsed();
        bar.set_position(t.as_secs());
        let n = done.load(Ordering::Relaxed);
        bar.set_message(format!("{n} updates, {:.0}/s", n as f64 / t.as_secs_f64()));
        if killed.is_none() && t > total / 3 {
            let l = cluster.wait_for_leader(Duration::from_secs(10)).await?;
            cluster.kill(l)?;
            say(
                &bar,
                format!("SIGKILL the leader, server {l}, at {:.1}s", t.as_secs_f64()),
            );
            killed = Some(l);
            let t0 = Instant::now();
            let nl = cluster.wait_for_leader(Duration::from_secs(60)).await?;
            say(
                &bar,
                format!(
                    "server {nl} elected after {:.2}s; clients continue",
                    t0.elapsed().as_secs_f64()
                ),
            );
            if Some(nl) != last_leader {
                leader_changes += 1;
                last_leader = Some(nl);
            }
        }
        if let (Some(k), false) = (killed, restarted) {
            if t > 2 * total / 3 {
                cluster.start(k)?;
                restarted = true;
                say(
                    &bar,
                    format!(
                        "restarted server {k} at {:.1}s; it recovers from its WAL and catches up",
                        t.as_secs_f64()
                    ),
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let updates = done.load(Ordering::Relaxed);
    println!("Workload finished; waiting for every replica to converge...");
    let (aru, digest) = cluster.wait_converged(Duration::from_secs(60)).await?;

    // Read back a sample of acknowledged writes (the last value per key wins).
    let mut latest = std::collections::BTreeMap::new();
    for (k, v) in acked.lock().expect("not poisoned").iter() {
        latest.insert(k.clone(), v.clone());
    }
    let mut reader = Client::new(cluster.client_addrs());
    let mut verified = 0u64;
    for (k, v) in latest.iter().take(200) {
        match reader.get(k.clone()).await {
            Ok(Some(got)) if got.as_ref() == v.as_bytes() => verified += 1,
            other => {
                return Err(ClusterError::Failed(format!(
                    "acknowledged write {k} reads back as {other:?}"
                )))
            }
        }
    }
    let h = hist.lock().expect("not poisoned");
    Ok(DemoSummary {
        updates,
        throughput: updates as f64 / elapsed.as_secs_f64(),
        p50: Duration::from_micros(h.value_at_quantile(0.5)),
        p99: Duration::from_micros(h.value_at_quantile(0.99)),
        leader_changes,
        timeouts: timeouts.load(Ordering::Relaxed),
        aru,
        digest,
        verified_writes: verified,
    })
}
