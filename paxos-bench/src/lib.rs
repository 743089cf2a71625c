//! # paxos-bench
//!
//! Benchmarks of whole clusters of real `paxos-node` processes on this machine: closed-loop
//! clients (each with one outstanding update, as in the PSB paper), throughput and latency
//! percentiles after a warm-up, and a record of the configuration, revision and machine so that a
//! result can be reproduced.
//!
//! - [`run_throughput`]: one measurement (the `throughput` subcommand);
//! - [`paper`]: the paper's figure sweeps scaled to this machine, drawn by [`figures`] beside the
//!   paper's own digitised curves ([`paper_data`]);
//! - [`compare`]: one workload against every storage × transport × election combination.
//!
//! The clients are multiplexed over few connections ([`load`]) and the CPU of the bench and of
//! every server is recorded ([`sys`]), so a result shows whether the clients were a bottleneck.

pub mod compare;
pub mod figures;
pub mod load;
pub mod output;
pub mod paper;
pub mod paper_data;
pub mod state;
pub mod sys;

use load::{ClientMode, LoadSpec, Shared};
use paxos_node::client::status;
use paxos_node::cluster::{ClusterOptions, LocalCluster};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a benchmark could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// Creating or starting the cluster failed.
    #[error("cluster: {0}")]
    Cluster(#[from] paxos_node::cluster::ClusterError),
    /// A server process exited during start-up (the tail of its log is included).
    #[error("server {server} exited during start-up: {log_tail}")]
    ServerExited {
        /// The server.
        server: usize,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The cluster did not elect a leader in time.
    #[error("no stable leader within {0:?}")]
    NoLeader(Duration),
    /// The client protocol failed.
    #[error("client protocol: {0}")]
    Protocol(String),
    /// An I/O failure.
    #[error("i/o: {0}")]
    Io(String),
    /// Drawing a figure failed.
    #[error("figure: {0}")]
    Figure(String),
    /// Reading the paper's data failed.
    #[error("paper data: {0}")]
    PaperData(String),
}

/// One throughput measurement's settings.
#[derive(Clone, Debug)]
pub struct ThroughputRun {
    /// The cluster.
    pub cluster: ClusterOptions,
    /// The clients.
    pub load: LoadSpec,
    /// Warm-up, not measured.
    pub warmup: Duration,
    /// Measured interval.
    pub measure: Duration,
    /// State written before the warm-up ([`state::preload`]), so snapshots copy something.
    pub preload_bytes: u64,
}

/// The settings of a run, as recorded with its result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    /// Servers.
    pub servers: usize,
    /// Closed-loop clients.
    pub clients: usize,
    /// Durability mode: `none`, `async`, `sync`.
    pub durability: String,
    /// Aggregation on.
    pub aggregation: bool,
    /// Storage backend.
    pub storage: String,
    /// Transport.
    pub transport: String,
    /// Election strategy.
    pub election: String,
    /// Update size in bytes.
    pub update_bytes: usize,
    /// Window W.
    pub window: u64,
    /// How the clients connect.
    pub client_mode: ClientMode,
    /// Logical clients per connection (mux mode).
    pub clients_per_connection: usize,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Measured seconds.
    pub measure_s: f64,
    /// State written before the warm-up, bytes.
    #[serde(default)]
    pub preload_bytes: u64,
    /// Updates per session before a logical client takes a new id (none: one id each).
    #[serde(default)]
    pub churn: Option<u64>,
    /// Slots between snapshots.
    #[serde(default)]
    pub snapshot_interval: u64,
    /// The servers' session bounds: idle expiry (s) and table size.
    #[serde(default)]
    pub sessions: Option<(u64, usize)>,
}

fn kebab<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl RunConfig {
    /// The recorded form of `run`.
    pub fn of(run: &ThroughputRun) -> RunConfig {
        let p = &run.cluster.protocol;
        RunConfig {
            servers: run.cluster.servers,
            clients: run.load.clients,
            durability: kebab(&p.durability),
            aggregation: p.aggregation,
            storage: kebab(&run.cluster.storage),
            transport: kebab(&run.cluster.transport),
            election: run.cluster.election.strategy.clone(),
            update_bytes: run.load.update_bytes,
            window: p.window,
            client_mode: run.load.mode,
            clients_per_connection: run.load.clients_per_connection,
            warmup_s: run.warmup.as_secs_f64(),
            measure_s: run.measure.as_secs_f64(),
            preload_bytes: run.preload_bytes,
            churn: run.load.churn,
            snapshot_interval: p.snapshot_interval,
            sessions: run.cluster.sessions.enabled.then_some((
                run.cluster.sessions.expire_after_s,
                run.cluster.sessions.max_sessions,
            )),
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThroughputResult {
    /// The settings.
    pub config: RunConfig,
    /// Updates completed in the measured interval.
    pub updates: u64,
    /// Updates per second over the measured interval.
    pub throughput: f64,
    /// Mean latency, microseconds (the paper's "client-weighted mean").
    pub mean_us: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// 99.9th percentile, microseconds.
    pub p999_us: u64,
    /// Maximum, microseconds.
    pub max_us: u64,
    /// Resends after an attempt timeout during the measured interval (updates the clients had to
    /// retry; none are lost: retries keep the update's name).
    pub retries: u64,
    /// `Rejected` answers.
    pub rejected: u64,
    /// Connections re-established.
    pub reconnects: u64,
    /// Raw samples: updates completed in each second of the measured interval.
    pub per_second: Vec<f64>,
    /// Raw samples: latency quantiles `(quantile, microseconds)` of the measured interval.
    pub quantiles: Vec<(f64, u64)>,
    /// Where the CPU went during the measured interval.
    pub cpu: sys::CpuUsage,
    /// Every server's Prometheus counters at the end of the run (warm-up included), e.g.
    /// `paxos_storage_syncs_total` or `paxos_dropped_total{..,reason="overload"}`.
    #[serde(default)]
    pub server_metrics: Vec<std::collections::BTreeMap<String, f64>>,
    /// Latency while some server built or wrote a snapshot image, against between snapshots.
    #[serde(default)]
    pub snapshots: state::SnapshotSplit,
    /// Sessions the clients registered (distinct client ids of the run, warm-up included).
    #[serde(default)]
    pub sessions_opened: u64,
    /// Every server at the end: sessions held and expired, snapshots taken, aru.
    #[serde(default)]
    pub servers: Vec<state::ServerEnd>,
    /// Peak resident set of every server process, KiB.
    #[serde(default)]
    pub server_peak_rss_kib: Vec<u64>,
}

impl ThroughputResult {
    /// The sum over every server of the metric samples whose name starts with `prefix`
    /// (e.g. `paxos_storage_syncs_total` or `paxos_dropped_total`).
    pub fn server_metric_sum(&self, prefix: &str) -> f64 {
        self.server_metrics
            .iter()
            .flat_map(|m| m.iter())
            .filter(|(k, _)| {
                k.strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// Machine and revision facts recorded with every result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the working tree, if available.
    pub git_revision: Option<String>,
    /// Whether the working tree had uncommitted changes.
    pub git_dirty: Option<bool>,
    /// Logical CPUs.
    pub cores: usize,
    /// CPU model.
    pub cpu_model: Option<String>,
    /// `uname -r`.
    pub kernel: Option<String>,
    /// `/proc/loadavg` when the run started (other work on the machine skews every number).
    pub load_average: Option<String>,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// The command line.
    pub command: Vec<String>,
    /// The `paxos-node` binary used.
    pub node_binary: String,
}

impl Provenance {
    /// Collects the facts now.
    pub fn collect(node_binary: &Path) -> Provenance {
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
            git_dirty: cmd("git", &["status", "--porcelain", "--untracked-files=no"])
                .map(|s| !s.is_empty()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: sys::cpu_model(),
            kernel: cmd("uname", &["-r"]),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|s| s.trim().to_owned()),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            command: std::env::args().collect(),
            node_binary: node_binary.display().to_string(),
        }
    }
}

/// Phases of a run, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Starting the servers and waiting for a leader.
    Starting,
    /// Load running, not measured.
    WarmingUp,
    /// Load running, measured.
    Measuring,
    /// Stopping the clients and the servers.
    Stopping,
}

/// Receives progress of a run (the binary draws it with indicatif).
pub trait Progress {
    /// The run entered `phase`.
    fn phase(&self, phase: Phase);
    /// One more second of the measured interval passed with `rate` updates/s.
    fn second(&self, done: usize, total: usize, rate: f64);
}

/// A [`Progress`] that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _: Phase) {}
    fn second(&self, _: usize, _: usize, _: f64) {}
}

fn log_tail(cluster: &LocalCluster, i: usize) -> String {
    let text =
        std::fs::read_to_string(cluster.dir().join(format!("node-{i}.log"))).unwrap_or_default();
    // The error and its causes, without a backtrace's frames.
    let frame = |l: &str| {
        let t = l.trim_start();
        t.starts_with("at ")
            || t.split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !frame(l) && !l.trim().is_empty())
        .collect();
    let start = lines
        .iter()
        .position(|l| l.contains("Error:"))
        .unwrap_or(lines.len().saturating_sub(5));
    lines[start..]
        .iter()
        .take_while(|l| !l.contains("backtrace"))
        .take(6)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until every server answers with the same leader and a settled role.
async fn wait_ready(cluster: &LocalCluster, within: Duration) -> Result<(), BenchError> {
    let until = Instant::now() + within;
    let started = Instant::now();
    let addrs = cluster.client_addrs();
    while Instant::now() < until {
        if started.elapsed() > Duration::from_millis(300) {
            let alive = sys::server_pids().len();
            if alive < cluster.len() {
                // Find which one died: the one whose client port does not answer.
                for (i, a) in addrs.iter().enumerate() {
                    if status(*a, Duration::from_millis(200)).await.is_err() {
                        return Err(BenchError::ServerExited {
                            server: i,
                            log_tail: log_tail(cluster, i),
                        });
                    }
                }
            }
        }
        let mut leaders = Vec::new();
        for a in &addrs {
            match status(*a, Duration::from_millis(300)).await {
                Ok(s) if s.role != "leader-election" => leaders.push(s.leader),
                _ => leaders.push(None),
            }
        }
        if leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BenchError::NoLeader(within))
}

/// Latency quantiles recorded as raw samples.
const QUANTILES: [f64; 12] = [
    0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
];

/// Starts a cluster of `binary` processes, drives the closed-loop clients, and measures.
///
/// Every loop is bounded: the warm-up and the measured interval are fixed, the clients stop
/// issuing updates at the end and drain for at most [`LoadSpec::drain`], and the cluster's
/// processes are killed when it is dropped.
pub async fn run_throughput(
    binary: &Path,
    run: &ThroughputRun,
    progress: &dyn Progress,
) -> Result<ThroughputResult, BenchError> {
    progress.phase(Phase::Starting);
    let mut options = run.cluster.clone();
    options.metrics = true;
    let mut cluster = LocalCluster::create(binary, &options, None)?;
    cluster.start_all()?;
    wait_ready(&cluster, Duration::from_secs(20)).await?;
    let pids = sys::server_pids();
    let addrs = cluster.client_addrs();
    if run.preload_bytes > 0 {
        state::preload(&addrs, run.preload_bytes).await?;
    }
    let shared = Arc::new(Shared::default());
    let tasks = load::spawn(&addrs, &run.load, shared.clone());

    progress.phase(Phase::WarmingUp);
    tokio::time::sleep(run.warmup).await;

    progress.phase(Phase::Measuring);
    let cpu0 = sys::CpuSnapshot::take(&pids);
    let watch = state::SnapshotWatch::start(addrs.clone(), shared.clone());
    shared.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let seconds = run.measure.as_secs_f64().ceil().max(1.0) as usize;
    let mut per_second = Vec::with_capacity(seconds);
    let mut last = 0u64;
    for s in 1..=seconds {
        let due = t0 + run.measure.min(Duration::from_secs(s as u64));
        tokio::time::sleep_until(due.into()).await;
        let now = shared.completed.load(Ordering::Relaxed);
        let span = if s as f64 > run.measure.as_secs_f64() {
            run.measure.as_secs_f64() - (s - 1) as f64
        } else {
            1.0
        };
        let rate = (now - last) as f64 / span.max(1e-3);
        per_second.push(rate);
        last = now;
        progress.second(s, seconds, rate);
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu1 = sys::CpuSnapshot::take(&pids);
    let busy_fraction = watch.finish().await;

    progress.phase(Phase::Stopping);
    shared.stop.store(true, Ordering::Relaxed);
    let mut hist = load::new_histogram();
    let mut split = load::Latencies {
        between_snapshots: load::new_histogram(),
        during_snapshot: load::new_histogram(),
    };
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(h)) => {
                let _ = hist.add(&h.between_snapshots);
                let _ = hist.add(&h.during_snapshot);
                let _ = split.between_snapshots.add(&h.between_snapshots);
                let _ = split.during_snapshot.add(&h.during_snapshot);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(BenchError::Protocol(format!("client task: {e}")));
            }
        }
    }
    let mut server_metrics = Vec::new();
    for f in &cluster.files {
        if let Some(addr) = f.metrics_addr {
            server_metrics.push(sys::scrape_metrics(addr).await.unwrap_or_default());
        }
    }
    let servers = state::server_ends(&addrs).await;
    let server_peak_rss_kib = state::peak_rss_kib(&pids);
    drop(cluster);
    let updates = shared.completed.load(Ordering::Relaxed);
    if updates == 0 {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    Ok(ThroughputResult {
        config: RunConfig::of(run),
        updates,
        throughput: updates as f64 / elapsed.as_secs_f64(),
        mean_us: hist.mean(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        retries: shared.retries.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        reconnects: shared.reconnects.load(Ordering::Relaxed),
        per_second,
        quantiles: QUANTILES
            .iter()
            .map(|&q| (q, hist.value_at_quantile(q)))
            .collect(),
        cpu: cpu0.usage_until(&cpu1),
        server_metrics,
        snapshots: state::SnapshotSplit::of(&split, busy_fraction),
        sessions_opened: shared.sessions_opened.load(Ordering::Relaxed),
        servers,
        server_peak_rss_kib,
    })
}
