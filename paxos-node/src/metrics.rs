//! Node counters, latency histograms and their exposition at `/metrics` (OpenMetrics text, through
//! the `prometheus-client` crate).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Live counters of one node (atomics and histograms: written and read from any task).
#[derive(Debug)]
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
    /// Storage write latency (one write: a group of batches and its fdatasync), seconds.
    pub sync_seconds: Histogram,
    /// Client update latency at this server: the request read from the connection to the reply
    /// handed to it, seconds (updates this server answers; a forwarded update counts here).
    pub client_update_seconds: Histogram,
    /// Leader election time: leaving a regular view to installing the next one, seconds.
    pub view_change_seconds: Histogram,
    /// State transfer time: the first snapshot chunk pulled to the image installed, seconds.
    pub state_transfer_seconds: Histogram,
    /// When this server entered leader election, and when its current transfer started.
    since: Mutex<Since>,
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

/// The starts of the intervals the histograms time across driver rounds.
#[derive(Debug, Default)]
struct Since {
    election: Option<Instant>,
    transfer: Option<Instant>,
}

/// `count` buckets from 100 µs, doubling (the last one about 100 µs x 2^(count-1)).
fn latency_buckets(count: u16) -> Histogram {
    Histogram::new(exponential_buckets(1e-4, 2.0, count))
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let z = AtomicU64::default;
        NodeMetrics {
            executed: z(),
            aru: z(),
            view: z(),
            snapshot_bytes_received: z(),
            snapshot_bytes_sent: z(),
            snapshot_builds_running: z(),
            snapshot_writes_running: z(),
            sessions: z(),
            sessions_expired: z(),
            is_leader: z(),
            view_changes: z(),
            syncs: z(),
            sync_micros_total: z(),
            // 100 µs .. 6.5 s: a healthy fdatasync to the disk watchdog's territory.
            sync_seconds: latency_buckets(17),
            client_update_seconds: latency_buckets(17),
            // 100 µs .. 107 s: view changes back off, state transfers of GiBs take minutes.
            view_change_seconds: latency_buckets(21),
            state_transfer_seconds: latency_buckets(23),
            since: Mutex::default(),
            batches_written: z(),
            batch_updates: z(),
            dropped_overload: z(),
            dropped_forged: z(),
            bad_client_frames: z(),
            replies_dropped: z(),
            send_errors: z(),
            clients_connected: z(),
            clients_refused: z(),
            clients_evicted: z(),
            clients_idle_closed: z(),
            clients_slow_closed: z(),
            client_id_conflicts: z(),
            in_view: z(),
            receiving_snapshot: z(),
            max_peer_aru: z(),
            driver_rounds: z(),
        }
    }
}

impl NodeMetrics {
    /// Records one completed storage write.
    pub fn record_sync(&self, took: Duration, batches: usize) {
        let us = took.as_micros() as u64;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros_total.fetch_add(us, Ordering::Relaxed);
        self.batches_written
            .fetch_add(batches as u64, Ordering::Relaxed);
        self.sync_seconds.observe(took.as_secs_f64());
    }

    /// Copies what the replica reports after a driver round into the counters, and times view
    /// changes and state transfers from the transitions it sees.
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
        let electing = st.state == ServerState::LeaderElection;
        set(&self.in_view, u64::from(!electing));
        set(&self.receiving_snapshot, u64::from(st.transfer.is_some()));
        let max_aru = st.peer_aru.iter().map(|s| s.0).max().unwrap_or(0);
        set(&self.max_peer_aru, max_aru.max(st.local_aru.0));
        self.driver_rounds.fetch_add(1, Ordering::Relaxed);
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        time_interval(
            &mut since.election,
            electing,
            now,
            &self.view_change_seconds,
        );
        time_interval(
            &mut since.transfer,
            st.transfer.is_some(),
            now,
            &self.state_transfer_seconds,
        );
    }

    /// Snapshot images being built or written now (0 between snapshots).
    pub fn snapshot_busy(&self) -> u64 {
        self.snapshot_builds_running.load(Ordering::Relaxed)
            + self.snapshot_writes_running.load(Ordering::Relaxed)
    }

    /// Every metric in OpenMetrics text format, labelled `node`, with extra `paxos_dropped_total`
    /// reasons (the transport's counters) appended.
    pub fn render(&self, node: u32, extra: &[(&str, &str, u64)]) -> String {
        let label = (Cow::Borrowed("node"), Cow::Owned(node.to_string()));
        let mut reg = Registry::with_labels(std::iter::once(label));
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        // Counters are named without `_total`: the encoder appends it.
        for (name, help, v) in [
            (
                "paxos_updates_executed",
                "Updates executed",
                g(&self.executed),
            ),
            (
                "paxos_snapshot_bytes_received",
                "Snapshot image bytes received in state transfer (its rate is the catch-up rate)",
                g(&self.snapshot_bytes_received),
            ),
            (
                "paxos_snapshot_bytes_sent",
                "Snapshot image bytes sent to lagging peers",
                g(&self.snapshot_bytes_sent),
            ),
            (
                "paxos_sessions_expired",
                "Client sessions expired (idle, or evicted by the session bounds)",
                g(&self.sessions_expired),
            ),
            (
                "paxos_view_changes",
                "Views installed since start",
                g(&self.view_changes),
            ),
            (
                "paxos_storage_syncs",
                "Storage writes completed",
                g(&self.syncs),
            ),
            (
                "paxos_storage_sync_micros",
                "Total storage write latency",
                g(&self.sync_micros_total),
            ),
            (
                "paxos_storage_batches",
                "Persist batches written",
                g(&self.batches_written),
            ),
            (
                "paxos_storage_batch_updates",
                "Records handed to storage",
                g(&self.batch_updates),
            ),
            (
                "paxos_replies_dropped",
                "Replies that could not be delivered",
                g(&self.replies_dropped),
            ),
            (
                "paxos_send_errors",
                "Peer sends that failed",
                g(&self.send_errors),
            ),
            (
                "paxos_driver_rounds",
                "Driver loop rounds completed",
                g(&self.driver_rounds),
            ),
        ] {
            reg.register(name, help, ConstCounter::new(v));
        }
        for (name, help, v) in [
            (
                "paxos_local_aru",
                "Every slot up to this one is executed here",
                g(&self.aru),
            ),
            ("paxos_view", "Installed view", g(&self.view)),
            (
                "paxos_snapshot_busy",
                "Snapshot images being built or written now (0 between snapshots)",
                self.snapshot_busy(),
            ),
            (
                "paxos_sessions",
                "Client sessions in the exactly-once table",
                g(&self.sessions),
            ),
            (
                "paxos_is_leader",
                "1 when this node leads the installed view",
                g(&self.is_leader),
            ),
            (
                "paxos_in_view",
                "1 when this node is a member of an installed view",
                g(&self.in_view),
            ),
            (
                "paxos_receiving_snapshot",
                "1 while this node receives a snapshot",
                g(&self.receiving_snapshot),
            ),
            (
                "paxos_max_peer_aru",
                "Highest aru any server announced",
                g(&self.max_peer_aru),
            ),
            (
                "paxos_client_connections",
                "Client connections open",
                g(&self.clients_connected),
            ),
        ] {
            reg.register(name, help, gauge(v));
        }
        let dropped = Family::<Vec<(String, String)>, Counter>::default();
        for (reason, v) in [
            ("overload", g(&self.dropped_overload)),
            ("forged_sender", g(&self.dropped_forged)),
            ("bad_client_frame", g(&self.bad_client_frames)),
            ("client_refused", g(&self.clients_refused)),
            ("client_evicted_idle", g(&self.clients_evicted)),
            ("client_idle_timeout", g(&self.clients_idle_closed)),
            ("client_slow_reader", g(&self.clients_slow_closed)),
            ("client_id_in_use", g(&self.client_id_conflicts)),
        ]
        .into_iter()
        .chain(extra.iter().map(|(reason, _, v)| (*reason, *v)))
        {
            dropped
                .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
                .inc_by(v);
        }
        reg.register("paxos_dropped", "Inputs dropped, by reason", dropped);
        for (name, help, h) in [
            (
                "paxos_storage_sync_seconds",
                "Storage write latency (a group of batches and its fdatasync)",
                &self.sync_seconds,
            ),
            (
                "paxos_client_update_seconds",
                "Client update latency at this server, request read to reply handed out",
                &self.client_update_seconds,
            ),
            (
                "paxos_view_change_seconds",
                "Leader election: leaving a regular view to installing the next",
                &self.view_change_seconds,
            ),
            (
                "paxos_state_transfer_seconds",
                "State transfer: first snapshot chunk pulled to the image installed",
                &self.state_transfer_seconds,
            ),
        ] {
            reg.register(name, help, h.clone());
        }
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        if let Err(e) = encode(&mut out, &reg) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

/// Times an interval across driver rounds: it starts when `active` turns true and is recorded
/// in `h` when it turns false again.
fn time_interval(start: &mut Option<Instant>, active: bool, now: Instant, h: &Histogram) {
    match (active, *start) {
        (true, None) => *start = Some(now),
        (false, Some(t)) => {
            h.observe(now.saturating_duration_since(t).as_secs_f64());
            *start = None;
        }
        _ => {}
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
            let mut content_type = "text/plain; charset=utf-8";
            let (status, body) = match (method, path) {
                (Some("GET"), Some("/metrics")) => {
                    let extra = extra();
                    let refs: Vec<(&str, &str, u64)> =
                        extra.iter().map(|(k, v)| (k.as_str(), "", *v)).collect();
                    content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
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
                "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
    fn render_has_histograms_counters_and_reasons() {
        let m = NodeMetrics::default();
        m.record_sync(Duration::from_micros(150), 3);
        m.record_sync(Duration::from_millis(30), 1);
        m.client_update_seconds.observe(0.002);
        let text = m.render(2, &[("bad_hmac", "", 5)]);
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has("paxos_storage_sync_seconds_bucket{node=\"2\",le=\"0.0002\"} 1"),
            "{text}"
        );
        assert!(
            has("paxos_storage_sync_seconds_bucket{node=\"2\",le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            has("paxos_storage_sync_seconds_count{node=\"2\"} 2"),
            "{text}"
        );
        assert!(
            has("paxos_client_update_seconds_count{node=\"2\"} 1"),
            "{text}"
        );
        assert!(has("paxos_storage_syncs_total{node=\"2\"} 2"), "{text}");
        assert!(has("paxos_storage_batches_total{node=\"2\"} 4"), "{text}");
        assert!(
            has("paxos_dropped_total{node=\"2\",reason=\"bad_hmac\"} 5"),
            "{text}"
        );
        assert!(has("paxos_view{node=\"2\"} 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn view_changes_and_transfers_are_timed_from_their_transitions() {
        let h = latency_buckets(4);
        let mut start = None;
        let t0 = Instant::now();
        time_interval(&mut start, false, t0, &h);
        time_interval(&mut start, true, t0, &h);
        time_interval(&mut start, true, t0 + Duration::from_millis(1), &h);
        time_interval(&mut start, false, t0 + Duration::from_millis(3), &h);
        let mut reg = Registry::default();
        reg.register("t_seconds", "t", h);
        let mut out = String::new();
        encode(&mut out, &reg).unwrap();
        assert!(out.lines().any(|l| l == "t_seconds_count 1"), "{out}");
        assert!(out.lines().any(|l| l == "t_seconds_sum 0.003"), "{out}");
    }
}
