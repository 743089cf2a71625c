//! Node counters and their Prometheus text exposition.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live counters of one node (all atomics: read from any task).
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Updates executed.
    pub executed: AtomicU64,
    /// Local aru.
    pub aru: AtomicU64,
    /// Installed view.
    pub view: AtomicU64,
    /// Snapshot image bytes received from peers (state transfer).
    pub snapshot_bytes_received: AtomicU64,
    /// Snapshot image bytes sent to peers.
    pub snapshot_bytes_sent: AtomicU64,
    /// Snapshot images being built off the driver loop now.
    pub snapshot_builds_running: AtomicU64,
    /// Storage writes carrying a snapshot image in progress now (0 or 1).
    pub snapshot_writes_running: AtomicU64,
    /// Entries in the exactly-once table (client sessions).
    pub sessions: AtomicU64,
    /// Sessions expired (idle or evicted by a bound).
    pub sessions_expired: AtomicU64,
    /// 1 when this node leads.
    pub is_leader: AtomicU64,
    /// Views installed since start.
    pub view_changes: AtomicU64,
    /// Storage syncs completed.
    pub syncs: AtomicU64,
    /// Sum of sync latencies, microseconds.
    pub sync_micros_total: AtomicU64,
    /// Sync latency histogram bucket counts (upper bounds in [`SYNC_BUCKETS_MICROS`]).
    pub sync_buckets: [AtomicU64; 8],
    /// Persist batches written.
    pub batches_written: AtomicU64,
    /// Updates (accepted proposals and pending records) handed to storage.
    pub batch_updates: AtomicU64,
    /// Peer messages dropped because the node was overloaded.
    pub dropped_overload: AtomicU64,
    /// Peer messages whose envelope named another sender than the authenticated one.
    pub dropped_forged: AtomicU64,
    /// Client frames that did not decode or were too large.
    pub bad_client_frames: AtomicU64,
    /// Replies that could not be delivered (client gone or not reading).
    pub replies_dropped: AtomicU64,
    /// Sends that failed.
    pub send_errors: AtomicU64,
    /// Client connections open now.
    pub clients_connected: AtomicU64,
    /// Client connections refused at the limit.
    pub clients_refused: AtomicU64,
    /// Idle client connections closed to make room for a new one at a limit.
    pub clients_evicted: AtomicU64,
    /// Client connections closed after sending nothing for the idle timeout.
    pub clients_idle_closed: AtomicU64,
    /// Client connections closed for not reading their replies (byte budget or write timeout).
    pub clients_slow_closed: AtomicU64,
    /// Updates refused because their client id is bound to another connection.
    pub client_id_conflicts: AtomicU64,
    /// 1 when this server is a member of an installed view (leader or follower).
    pub in_view: AtomicU64,
    /// 1 while this server receives a snapshot (state transfer).
    pub receiving_snapshot: AtomicU64,
    /// Highest aru any server announced (this one's included).
    pub max_peer_aru: AtomicU64,
    /// Driver loop rounds completed (one at least every tick while the loop runs).
    pub driver_rounds: AtomicU64,
}

/// Upper bounds of the sync latency buckets, in microseconds.
pub const SYNC_BUCKETS_MICROS: [u64; 8] = [100, 200, 500, 1_000, 2_000, 5_000, 20_000, u64::MAX];

impl NodeMetrics {
    /// Records one completed storage write.
    pub fn record_sync(&self, took: Duration, batches: usize) {
        let us = took.as_micros() as u64;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros_total.fetch_add(us, Ordering::Relaxed);
        self.batches_written
            .fetch_add(batches as u64, Ordering::Relaxed);
        let i = SYNC_BUCKETS_MICROS
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(SYNC_BUCKETS_MICROS.len() - 1);
        self.sync_buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Copies what the replica reports after a driver round into the counters.
    pub(crate) fn observe_round(&self, st: &paxos_core::Status, m: &paxos_core::Metrics) {
        use paxos_core::ServerState;
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.executed, m.executed);
        set(&self.snapshot_bytes_received, m.snapshot_bytes_received);
        set(&self.snapshot_bytes_sent, m.snapshot_bytes_sent);
        set(&self.sessions_expired, m.sessions_expired);
        set(&self.sessions, st.sessions as u64);
        set(&self.aru, st.local_aru.0);
        set(&self.view, st.last_installed.0);
        set(
            &self.is_leader,
            u64::from(st.state == ServerState::RegLeader),
        );
        set(
            &self.in_view,
            u64::from(st.state != ServerState::LeaderElection),
        );
        set(&self.receiving_snapshot, u64::from(st.transfer.is_some()));
        let max_aru = st.peer_aru.iter().map(|s| s.0).max().unwrap_or(0);
        set(&self.max_peer_aru, max_aru.max(st.local_aru.0));
        self.driver_rounds.fetch_add(1, Ordering::Relaxed);
    }

    /// Snapshot images being built or written now (0 between snapshots).
    pub fn snapshot_busy(&self) -> u64 {
        self.snapshot_builds_running.load(Ordering::Relaxed)
            + self.snapshot_writes_running.load(Ordering::Relaxed)
    }

    /// The counters in Prometheus text format, with extra labelled counters appended.
    pub fn render(&self, node: u32, extra: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut line = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {v}"
            );
        };
        line(
            "paxos_updates_executed_total",
            "counter",
            "Updates executed.",
            g(&self.executed),
        );
        line(
            "paxos_local_aru",
            "gauge",
            "Every slot up to this one is executed here.",
            g(&self.aru),
        );
        line("paxos_view", "gauge", "Installed view.", g(&self.view));
        line(
            "paxos_snapshot_bytes_received_total",
            "counter",
            "Snapshot image bytes received in state transfer (its rate is the catch-up rate).",
            g(&self.snapshot_bytes_received),
        );
        line(
            "paxos_snapshot_bytes_sent_total",
            "counter",
            "Snapshot image bytes sent to lagging peers.",
            g(&self.snapshot_bytes_sent),
        );
        line(
            "paxos_snapshot_busy",
            "gauge",
            "Snapshot images being built or written now (0 between snapshots).",
            self.snapshot_busy(),
        );
        line(
            "paxos_sessions",
            "gauge",
            "Client sessions in the exactly-once table.",
            g(&self.sessions),
        );
        line(
            "paxos_sessions_expired_total",
            "counter",
            "Client sessions expired (idle, or evicted by the session bounds).",
            g(&self.sessions_expired),
        );
        line(
            "paxos_is_leader",
            "gauge",
            "1 when this node leads the installed view.",
            g(&self.is_leader),
        );
        line(
            "paxos_view_changes_total",
            "counter",
            "Views installed since start.",
            g(&self.view_changes),
        );
        line(
            "paxos_storage_syncs_total",
            "counter",
            "Storage writes completed.",
            g(&self.syncs),
        );
        line(
            "paxos_storage_sync_micros_total",
            "counter",
            "Total storage write latency.",
            g(&self.sync_micros_total),
        );
        line(
            "paxos_storage_batches_total",
            "counter",
            "Persist batches written.",
            g(&self.batches_written),
        );
        line(
            "paxos_storage_batch_updates_total",
            "counter",
            "Records handed to storage.",
            g(&self.batch_updates),
        );
        line(
            "paxos_client_connections",
            "gauge",
            "Client connections open.",
            g(&self.clients_connected),
        );
        line(
            "paxos_replies_dropped_total",
            "counter",
            "Replies that could not be delivered.",
            g(&self.replies_dropped),
        );
        line(
            "paxos_send_errors_total",
            "counter",
            "Peer sends that failed.",
            g(&self.send_errors),
        );
        let _ = writeln!(out, "# HELP paxos_dropped_total Inputs dropped, by reason.\n# TYPE paxos_dropped_total counter");
        for (reason, v) in [
            ("overload", g(&self.dropped_overload)),
            ("forged_sender", g(&self.dropped_forged)),
            ("bad_client_frame", g(&self.bad_client_frames)),
            ("client_refused", g(&self.clients_refused)),
            ("client_evicted_idle", g(&self.clients_evicted)),
            ("client_idle_timeout", g(&self.clients_idle_closed)),
            ("client_slow_reader", g(&self.clients_slow_closed)),
            ("client_id_in_use", g(&self.client_id_conflicts)),
        ] {
            let _ = writeln!(
                out,
                "paxos_dropped_total{{node=\"{node}\",reason=\"{reason}\"}} {v}"
            );
        }
        for (reason, _, v) in extra {
            let _ = writeln!(
                out,
                "paxos_dropped_total{{node=\"{node}\",reason=\"{reason}\"}} {v}"
            );
        }
        let _ = writeln!(out, "# HELP paxos_storage_sync_seconds Storage write latency.\n# TYPE paxos_storage_sync_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in SYNC_BUCKETS_MICROS.iter().enumerate() {
            cumulative += g(&self.sync_buckets[i]);
            let le = if *b == u64::MAX {
                "+Inf".to_owned()
            } else {
                format!("{}", *b as f64 / 1e6)
            };
            let _ = writeln!(
                out,
                "paxos_storage_sync_seconds_bucket{{node=\"{node}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "paxos_storage_sync_seconds_sum{{node=\"{node}\"}} {}",
            g(&self.sync_micros_total) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "paxos_storage_sync_seconds_count{{node=\"{node}\"}} {}",
            g(&self.syncs)
        );
        out
    }
}

/// Serves `GET /metrics` in Prometheus text format, and `GET /healthz` and `GET /readyz`
/// ([`crate::health`]), on `listener` until the task is dropped.
///
/// A deliberately small HTTP/1.0 responder: it reads at most 8 KiB of request, answers one request
/// per connection and closes it, so a slow or hostile scraper cannot hold memory.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<NodeMetrics>,
    node: u32,
    extra: std::sync::Arc<dyn Fn() -> Vec<(String, u64)> + Send + Sync>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let extra = extra.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let n = match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut words = head.split_whitespace();
            let (method, target) = (words.next(), words.next().unwrap_or(""));
            let path = target.split('?').next();
            let (status, body) = match (method, path) {
                (Some("GET"), Some("/metrics")) => {
                    let extra = extra();
                    let refs: Vec<(&str, &str, u64)> =
                        extra.iter().map(|(k, v)| (k.as_str(), "", *v)).collect();
                    ("200 OK", metrics.render(node, &refs))
                }
                (Some("GET"), Some("/healthz")) => {
                    crate::health::answer(crate::health::healthz(&metrics).await)
                }
                (Some("GET"), Some("/readyz")) => {
                    crate::health::answer(crate::health::readyz(&metrics).await)
                }
                _ => (
                    "404 Not Found",
                    "try /metrics, /healthz or /readyz\n".to_owned(),
                ),
            };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}

/// Logs why this server left the view it was regular in (the core's [`paxos_core::Suspicion`]),
/// each time as milliseconds before `now`: a leader heard from recently while the oldest
/// pending update waited long points at the pipeline, not at the leader.
pub(crate) fn log_suspicion(s: &paxos_core::Suspicion, now: paxos_core::Time) {
    let ago = |t: Option<paxos_core::Time>| t.map(|t| now.saturating_since(t).as_millis() as u64);
    tracing::warn!(
        suspected = s.suspected.0,
        voted = s.voted.0,
        was = ?s.was,
        pending = s.pending,
        oldest_pending_ms = ?ago(s.oldest_pending_since),
        queued = s.queued,
        aru = s.local_aru.0,
        max_seen = s.max_seen_seq.0,
        progress_ms = ?ago(s.last_view_progress),
        leader_heard_ms = ?ago(s.last_heard_from_leader),
        receiving_snapshot = s.receiving_snapshot,
        storage_wait_ms = ?ago(s.storage_wait_since),
        "suspecting the installed view"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_histogram_and_reasons() {
        let m = NodeMetrics::default();
        m.record_sync(Duration::from_micros(150), 3);
        m.record_sync(Duration::from_millis(30), 1);
        let text = m.render(2, &[("bad_hmac", "", 5)]);
        assert!(text.contains("paxos_storage_sync_seconds_bucket{node=\"2\",le=\"0.0002\"} 1"));
        assert!(text.contains("paxos_storage_sync_seconds_bucket{node=\"2\",le=\"+Inf\"} 2"));
        assert!(text.contains("paxos_dropped_total{node=\"2\",reason=\"bad_hmac\"} 5"));
    }
}
