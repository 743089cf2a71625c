//! The servers' state around a throughput run (issue #13): state written before the run so that
//! snapshots have something to copy, a watch that marks when some server builds or writes a
//! snapshot image (latencies are split into "during" and "between" by it), and what the servers
//! hold at the end (sessions, peak memory).

use crate::load::{Latencies, Shared};
use crate::BenchError;
use bytes::Bytes;
use hdrhistogram::Histogram;
use paxos_node::client::{status, Client};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of each preloaded value (the largest the KV store takes).
pub const PRELOAD_VALUE_BYTES: usize = 1 << 20;

/// Writes `bytes` of state as values of [`PRELOAD_VALUE_BYTES`] under keys `preload-<n>`, four
/// writers at a time; returns the values written.
pub async fn preload(servers: &[SocketAddr], bytes: u64) -> Result<u64, BenchError> {
    let values = bytes.div_ceil(PRELOAD_VALUE_BYTES as u64);
    let value = Bytes::from(vec![b'p'; PRELOAD_VALUE_BYTES]);
    let writers = 4u64;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let mut c = Client::new(servers.to_vec());
            c.op_timeout = Duration::from_secs(30);
            let value = value.clone();
            tokio::spawn(async move {
                let mut n = w;
                while n < values {
                    c.put(format!("preload-{n}"), value.clone())
                        .await
                        .map_err(|e| BenchError::Protocol(format!("preload: {e}")))?;
                    n += writers;
                }
                Ok::<(), BenchError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Protocol(format!("preload task: {e}")))??;
    }
    Ok(values)
}

/// Polls every server's status every [`SnapshotWatch::PERIOD`] and keeps
/// [`Shared::snapshotting`] set while any of them reports a snapshot image being built or
/// written. A latency is classed by the flag when it completes, so the split is as sharp as
/// the period.
pub struct SnapshotWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Duration>,
    started: Instant,
}

impl SnapshotWatch {
    /// How often the servers are asked.
    pub const PERIOD: Duration = Duration::from_millis(20);

    /// Starts watching `servers`.
    pub fn start(servers: Vec<SocketAddr>, shared: Arc<Shared>) -> SnapshotWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut busy = Duration::ZERO;
            let mut last = Instant::now();
            // Bounded: the measuring side raises `stop` when the measured interval ends.
            while !flag.load(Ordering::Relaxed) {
                let mut any = false;
                for a in &servers {
                    if let Ok(s) = status(*a, Duration::from_millis(200)).await {
                        any |= s.snapshot_busy;
                    }
                }
                let now = Instant::now();
                if shared.snapshotting.swap(any, Ordering::Relaxed) || any {
                    busy += now - last;
                }
                last = now;
                tokio::time::sleep(Self::PERIOD).await;
            }
            shared.snapshotting.store(false, Ordering::Relaxed);
            busy
        });
        SnapshotWatch {
            stop,
            task,
            started: Instant::now(),
        }
    }

    /// Stops watching; returns the fraction of the watched time some server was snapshotting.
    pub async fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let busy = self.task.await.unwrap_or_default();
        busy.as_secs_f64() / self.started.elapsed().as_secs_f64().max(1e-9)
    }
}

/// Latency during snapshots against between them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotSplit {
    /// Fraction of the measured interval in which some server built or wrote a snapshot image.
    pub busy_fraction: f64,
    /// Updates completed while some server was snapshotting.
    pub updates_during: u64,
    /// Updates completed while none was.
    pub updates_between: u64,
    /// p50 / p99 / max latency (µs) of the updates completed during snapshots.
    pub during_us: Option<(u64, u64, u64)>,
    /// p50 / p99 / max latency (µs) of the updates completed between snapshots.
    pub between_us: Option<(u64, u64, u64)>,
}

fn quantiles(h: &Histogram<u64>) -> Option<(u64, u64, u64)> {
    (!h.is_empty()).then(|| (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()))
}

impl SnapshotSplit {
    /// The split of every task's latencies.
    pub fn of(all: &Latencies, busy_fraction: f64) -> SnapshotSplit {
        SnapshotSplit {
            busy_fraction,
            updates_during: all.during_snapshot.len(),
            updates_between: all.between_snapshots.len(),
            during_us: quantiles(&all.during_snapshot),
            between_us: quantiles(&all.between_snapshots),
        }
    }

    /// p99 during snapshots over p99 between them, when both were seen.
    pub fn p99_ratio(&self) -> Option<f64> {
        match (self.during_us, self.between_us) {
            (Some(d), Some(b)) => Some(d.1 as f64 / b.1.max(1) as f64),
            _ => None,
        }
    }
}

/// One server at the end of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerEnd {
    /// Sessions in its exactly-once table.
    pub sessions: u64,
    /// Sessions it expired or evicted.
    pub sessions_expired: u64,
    /// Snapshots it took.
    pub snapshots_taken: u64,
    /// Its local aru.
    pub aru: u64,
    /// Size of its latest snapshot image.
    pub snapshot_bytes: u64,
}

/// Every server's [`ServerEnd`] (default for one that does not answer).
pub async fn server_ends(servers: &[SocketAddr]) -> Vec<ServerEnd> {
    let mut out = Vec::new();
    for a in servers {
        out.push(
            status(*a, Duration::from_millis(500))
                .await
                .map(|s| ServerEnd {
                    sessions: s.sessions,
                    sessions_expired: s.sessions_expired,
                    snapshots_taken: s.snapshots_taken,
                    aru: s.aru,
                    snapshot_bytes: s.snapshot_bytes,
                })
                .unwrap_or_default(),
        );
    }
    out
}

/// Peak resident set (`VmHWM`, KiB) of each process in `pids` (0 for one not readable).
pub fn peak_rss_kib(pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|&p| paxos_node::cluster::peak_rss_kib(p).unwrap_or(0))
        .collect()
}

/// The `throughput` options about state: preload, snapshots and client sessions.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct StateArgs {
    /// Write this many MiB of state (1 MiB values) before the warm-up, so snapshots copy it.
    #[arg(long, default_value_t = 0)]
    pub preload_mib: u64,
    /// Slots between snapshots (default: the node's).
    #[arg(long)]
    pub snapshot_interval: Option<u64>,
    /// A logical client takes a new client id (registers a new session) after this many updates.
    #[arg(long)]
    pub churn: Option<u64>,
    /// Servers expire a session idle for this many seconds (default: the node's).
    #[arg(long)]
    pub session_expiry_s: Option<u64>,
    /// Servers hold at most this many sessions (default: the node's).
    #[arg(long)]
    pub max_sessions: Option<usize>,
}

impl StateArgs {
    /// Applies the options to `run`.
    pub fn apply(&self, run: &mut crate::ThroughputRun) {
        run.preload_bytes = self.preload_mib << 20;
        if let Some(n) = self.snapshot_interval {
            run.cluster.protocol.snapshot_interval = n;
        }
        run.load.churn = self.churn;
        if let Some(s) = self.session_expiry_s {
            run.cluster.sessions.expire_after_s = s;
        }
        if let Some(m) = self.max_sessions {
            run.cluster.sessions.max_sessions = m;
        }
    }
}

/// Lines about state for a result: the snapshot split, sessions and memory.
pub fn describe(r: &crate::ThroughputResult) -> String {
    let s = &r.snapshots;
    let q = |v: Option<(u64, u64, u64)>| match v {
        Some((p50, p99, max)) => format!("p50 {p50} µs, p99 {p99} µs, max {max} µs"),
        None => "none".to_owned(),
    };
    let mut out = format!(
        "snapshots: some server busy {:.0}% of the time; during: {} updates, {}; between: {} \
         updates, {}; p99 ratio {}\n",
        s.busy_fraction * 100.0,
        s.updates_during,
        q(s.during_us),
        s.updates_between,
        q(s.between_us),
        s.p99_ratio().map_or("-".into(), |x| format!("{x:.2}")),
    );
    out += &format!(
        "sessions: {} opened by the clients; servers hold {:?}, expired {:?}; snapshots taken \
         {:?} (latest image {:?} bytes); peak RSS {:?} MiB\n",
        r.sessions_opened,
        r.servers.iter().map(|e| e.sessions).collect::<Vec<_>>(),
        r.servers
            .iter()
            .map(|e| e.sessions_expired)
            .collect::<Vec<_>>(),
        r.servers
            .iter()
            .map(|e| e.snapshots_taken)
            .collect::<Vec<_>>(),
        r.servers
            .iter()
            .map(|e| e.snapshot_bytes)
            .collect::<Vec<_>>(),
        r.server_peak_rss_kib
            .iter()
            .map(|k| k / 1024)
            .collect::<Vec<_>>(),
    );
    out
}
