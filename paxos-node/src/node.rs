//! The server: one [`paxos_core::Replica`] driven by tokio, with storage on its own thread.
//!
//! The driver loop owns the replica. It feeds it peer messages, client requests, ticks and storage
//! completions, and after each round drains its outputs: persist batches go to the storage thread
//! (which group-commits everything queued into one write and one sync), messages go to the network,
//! replies go to the client connections. Messages that depend on a write are released by the core
//! only after the storage thread reports that write durable, so nothing here can send a promise early.
//! The loop never blocks: storage runs on its own OS thread and every queue is bounded.

use crate::client_port::{accept_clients, ClientLimits, ConnHandle, PortEvent};
use crate::logging::LogLimiter;
use crate::metrics::NodeMetrics;
use crate::protocol::{ClientRequest, ClientResponse};
use paxos_core::{
    ClientId, ClientUpdate, Config, Destination, Envelope, LeaderElection, PersistBatch, Replica,
    ReplyOutcome, ServerState, StateMachine, Time, Timestamp,
};
use paxos_storage::Storage;
use paxos_transport::{Transport, TransportError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Why the node stopped or could not start.
#[derive(Debug, Error)]
pub enum NodeError {
    /// Invalid configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// Storage failed; the node stops rather than risk acknowledging lost data.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The network failed.
    #[error("network: {0}")]
    Network(String),
    /// Could not bind the client or metrics port.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Node settings beyond the core's.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The core's configuration (id, cluster size, durability, window, aggregation, timers).
    pub core: Config,
    /// Where clients connect.
    pub client_addr: SocketAddr,
    /// Tick period of the core's timers.
    pub tick: Duration,
    /// Limits of the client port (connections, idle and slow clients, reply bytes).
    pub clients: ClientLimits,
    /// A storage write that has not returned after this long stops the server (fail-stop with
    /// a clear error) instead of leaving it hung; `None`: wait forever.
    pub disk_timeout: Option<Duration>,
}

impl NodeConfig {
    /// Defaults around a core configuration. Snapshots are built off the driver loop, on a
    /// blocking thread (`Config::snapshot_off_loop` is turned on).
    pub fn new(mut core: Config, client_addr: SocketAddr) -> NodeConfig {
        core.snapshot_off_loop = true;
        NodeConfig {
            core,
            client_addr,
            tick: Duration::from_millis(2),
            clients: ClientLimits::default(),
            disk_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// What the driver loop is fed.
pub(crate) enum Event {
    Peer(paxos_core::NodeId, Envelope),
    /// A client connection's event.
    Port(PortEvent),
    Persisted(paxos_core::BatchId, Duration, usize),
    StorageFailed(String),
    /// A snapshot built on a blocking thread (`Config::snapshot_off_loop`).
    SnapshotBuilt(Box<paxos_core::Snapshot>),
}

/// A running node.
pub struct NodeHandle {
    shutdown: watch::Sender<bool>,
    driver: JoinHandle<Result<(), NodeError>>,
    client_addr: SocketAddr,
    /// Live counters.
    pub metrics: Arc<NodeMetrics>,
}

impl NodeHandle {
    /// The address clients connect to (useful with port 0).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Stops the node and waits for it.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        self.driver
            .await
            .unwrap_or_else(|e| Err(NodeError::Network(format!("driver panicked: {e}"))))
    }

    /// Runs until `stop` completes (then shuts down cleanly) or the node stops by itself (a fatal
    /// error such as a failed storage write, which is returned).
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::select! {
            r = &mut self.driver => {
                return r.unwrap_or_else(|e| Err(NodeError::Network(format!("driver panicked: {e}"))));
            }
            () = stop => {}
        }
        self.shutdown().await
    }

    /// Waits until the node stops by itself (e.g. a storage failure).
    pub async fn wait(self) -> Result<(), NodeError> {
        self.driver
            .await
            .unwrap_or_else(|e| Err(NodeError::Network(format!("driver panicked: {e}"))))
    }
}

/// Starts a node: recovers from `storage`, binds the client port, and runs until shut down.
///
/// [`crate::NodeBuilder`] is the friendlier way in; this is the same thing with every part given.
pub async fn start<S, E, L, N>(
    config: NodeConfig,
    state_machine: S,
    election: E,
    mut log: L,
    network: Arc<N>,
) -> Result<NodeHandle, NodeError>
where
    S: StateMachine + Send + 'static,
    E: LeaderElection + Send + 'static,
    L: Storage,
    N: Transport + ?Sized + 'static,
{
    config
        .core
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let (log, durable) = tokio::task::spawn_blocking(move || {
        let d = log.load();
        (log, d)
    })
    .await
    .map_err(|e| NodeError::Storage(e.to_string()))?;
    let durable = durable.map_err(|e| NodeError::Storage(e.to_string()))?;
    tracing::info!(
        storage = log.name(),
        incarnation = durable.incarnation,
        view = durable.view.last_installed.0,
        accepted = durable.accepted.len(),
        snapshot = durable.snapshot_seq().0,
        "recovered"
    );
    let epoch = Instant::now();
    let now = move || Time(epoch.elapsed().as_nanos() as u64);
    let election_name = election.name().to_owned();
    let replica = Replica::new(config.core.clone(), state_machine, election, durable, now())
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let metrics = Arc::new(NodeMetrics::default());

    let (events_tx, events_rx) = mpsc::channel::<Event>(65_536);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // Storage thread: group commit.
    let (persist_tx, persist_rx) = std::sync::mpsc::channel::<PersistBatch>();
    {
        let events = events_tx.clone();
        let storage_metrics = metrics.clone();
        let disk_timeout = config.disk_timeout;
        std::thread::Builder::new()
            .name(format!("paxos-storage-{}", config.core.id.0))
            .spawn(move || {
                crate::storage_thread::run(log, persist_rx, events, storage_metrics, disk_timeout)
            })
            .map_err(|e| NodeError::Storage(e.to_string()))?;
    }

    // Peer messages.
    {
        let events = events_tx.clone();
        let net = network.clone();
        let metrics = metrics.clone();
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = net.recv() => match r {
                        Ok((from, env)) => {
                            if events.try_send(Event::Peer(from, env)).is_err() {
                                metrics.dropped_overload.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(TransportError::Closed) => break,
                        Err(e) => {
                            tracing::warn!("network receive failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
        });
    }

    // Clients.
    let listener = TcpListener::bind(config.client_addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: config.client_addr,
            source,
        })?;
    let client_addr = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: config.client_addr,
        source,
    })?;
    tokio::spawn(accept_clients(
        listener,
        events_tx.clone(),
        Event::Port,
        shutdown_rx.clone(),
        config.clients.clone(),
        metrics.clone(),
    ));

    let driver = tokio::spawn(drive(
        replica,
        config,
        election_name,
        network,
        events_rx,
        events_tx.clone(),
        persist_tx,
        shutdown_rx,
        now,
        metrics.clone(),
    ));
    Ok(NodeHandle {
        shutdown: shutdown_tx,
        driver,
        client_addr,
        metrics,
    })
}

/// A driver round (or a gap between ticks) at least this long is logged (a warning).
const DRIVER_STALL: Duration = Duration::from_millis(200);

/// Refused client updates, logged at most once a second.
static REFUSED_UPDATE: LogLimiter = LogLimiter::new();

#[allow(clippy::too_many_arguments)]
async fn drive<S, E, N>(
    mut replica: Replica<S, E>,
    config: NodeConfig,
    election_name: String,
    network: Arc<N>,
    mut events: mpsc::Receiver<Event>,
    jobs_done: mpsc::Sender<Event>,
    persist: std::sync::mpsc::Sender<PersistBatch>,
    mut stop: watch::Receiver<bool>,
    now: impl Fn() -> Time,
    metrics: Arc<NodeMetrics>,
) -> Result<(), NodeError>
where
    S: StateMachine + Send + 'static,
    E: LeaderElection + Send + 'static,
    N: Transport + ?Sized + 'static,
{
    let me = config.core.id;
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conns: HashMap<u64, ConnHandle> = HashMap::new();
    let mut client_conn: HashMap<ClientId, u64> = HashMap::new();
    // When each client's update in progress here was read (its latency histogram); an entry
    // leaves with the reply or with the connection.
    let mut submitted = Submitted::new();
    // A lone server installs its view as it is built: logged below like any other (a recovered
    // server in leader election is in no view, whatever view it last installed).
    let mut last_view = Some(replica.status())
        .filter(|st| st.state == ServerState::LeaderElection)
        .map_or(paxos_core::View::default(), |st| st.last_installed);
    let mut last_suspicion = replica.last_suspicion().map(|s| s.at);
    let mut outgoing: Vec<(Option<paxos_core::NodeId>, Envelope)> = Vec::new();
    let mut last_tick = Instant::now();
    let mut progress_log = crate::logging::ProgressLog::default();
    loop {
        let mut handled = 0usize;
        let mut round_started = None;
        tokio::select! {
            _ = tick.tick() => {
                // Ticks come every `tick` (2 ms): a long gap means this loop did not run, the
                // first thing to rule out after a view change nobody's storage explains.
                let at = Instant::now();
                let gap = at.duration_since(last_tick);
                last_tick = at;
                if gap >= DRIVER_STALL {
                    tracing::warn!(ms = gap.as_millis() as u64, "driver loop stalled (no tick)");
                }
                replica.handle_tick(now())
            }
            ev = events.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                round_started = Some(Instant::now());
                handle_event(ev, &mut replica, &mut conns, (&mut client_conn, &mut submitted), &election_name, &now, &metrics)?;
                handled += 1;
                // Take whatever else is ready: one round, one batch, one flush (aggregation).
                while handled < 1024 {
                    match events.try_recv() {
                        Ok(ev) => {
                            handle_event(ev, &mut replica, &mut conns, (&mut client_conn, &mut submitted), &election_name, &now, &metrics)?;
                            handled += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
            _ = stop.changed() => return Ok(()),
        }
        while let Some(batch) = replica.poll_persist() {
            metrics.batch_updates.fetch_add(
                (batch.accepted.len() + batch.pending.len()) as u64,
                Ordering::Relaxed,
            );
            if persist.send(batch).is_err() {
                return Err(NodeError::Storage("storage thread stopped".into()));
            }
        }
        // Snapshots are serialised and digested off the driver: the job holds a frozen state.
        while let Some(job) = replica.poll_snapshot_job() {
            let done = jobs_done.clone();
            metrics
                .snapshot_builds_running
                .fetch_add(1, Ordering::Relaxed);
            // Its own thread at a lower priority: serialising and digesting a large state takes
            // seconds of CPU, and on a small machine it must not delay the driver and the
            // transport (that delay alone caused view changes at 1 GiB on 2 cores).
            let spawned = std::thread::Builder::new()
                .name("snapshot-build".into())
                .spawn(move || {
                    let _ = rustix::process::setpriority_process(
                        Some(rustix::thread::gettid()),
                        paxos_storage::wal::BACKGROUND_NICE,
                    );
                    let started = Instant::now();
                    let snap = job.build();
                    tracing::info!(
                        seq = snap.seq().0,
                        bytes = snap.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "snapshot built"
                    );
                    let _ = done.blocking_send(Event::SnapshotBuilt(Box::new(snap)));
                });
            if let Err(e) = spawned {
                return Err(NodeError::Storage(format!(
                    "cannot start a snapshot build: {e}"
                )));
            }
        }
        // One hand-over per round: transports that batch pack these into as few packets as fit.
        outgoing.clear();
        while let Some((to, message)) = replica.poll_message() {
            let to = match to {
                Destination::All => None,
                Destination::Node(n) => Some(n),
            };
            outgoing.push((to, Envelope { from: me, message }));
        }
        if !outgoing.is_empty() {
            if let Err(e) = network.send_batch(&outgoing).await {
                metrics
                    .send_errors
                    .fetch_add(e.failed_messages() as u64, Ordering::Relaxed);
                tracing::debug!("send failed: {e}");
            }
        }
        while let Some(reply) = replica.poll_client_reply() {
            if let Some((ts, at)) = submitted.remove(&reply.client_id) {
                if ts == reply.timestamp {
                    metrics
                        .client_update_seconds
                        .observe(at.elapsed().as_secs_f64());
                }
            }
            let delivered = client_conn
                .get(&reply.client_id)
                .and_then(|c| conns.get(c))
                .is_some_and(|tx| {
                    let response = match reply.outcome {
                        ReplyOutcome::Applied => ClientResponse::Reply {
                            client_id: reply.client_id,
                            timestamp: reply.timestamp,
                            result: reply.result,
                        },
                        ReplyOutcome::SessionOpened(session) => ClientResponse::SessionOpened {
                            nonce: reply.client_id,
                            session,
                        },
                        ReplyOutcome::SessionExpired => ClientResponse::SessionExpired {
                            client_id: reply.client_id,
                            timestamp: reply.timestamp,
                        },
                        ReplyOutcome::Superseded(executed) => ClientResponse::Superseded {
                            client_id: reply.client_id,
                            timestamp: reply.timestamp,
                            executed,
                        },
                    };
                    tx.send(response, &metrics)
                });
            if let ReplyOutcome::SessionOpened(session) = reply.outcome {
                // The nonce names nothing any more: its connection is found by the session id.
                if let Some(conn) = client_conn.remove(&reply.client_id) {
                    client_conn.insert(session, conn);
                }
            }
            if !delivered {
                metrics.replies_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let st = replica.status();
        if st.last_installed != last_view {
            last_view = st.last_installed;
            metrics.view_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(view = last_view.0, state = ?st.state, "view installed");
        }
        if let Some(s) = replica
            .last_suspicion()
            .filter(|s| Some(s.at) != last_suspicion)
        {
            last_suspicion = Some(s.at);
            crate::metrics::log_suspicion(s, now());
        }
        if let Some(took) = round_started
            .map(|t| t.elapsed())
            .filter(|t| *t >= DRIVER_STALL)
        {
            tracing::warn!(
                ms = took.as_millis() as u64,
                events = handled,
                "slow driver round"
            );
        }
        progress_log.observe(&st);
        metrics.observe_round(&st, replica.metrics());
    }
}

/// Per client, the timestamp of its update in progress here and when it was read.
type Submitted = HashMap<ClientId, (Timestamp, Instant)>;

fn handle_event<S: StateMachine, E: LeaderElection>(
    ev: Event,
    replica: &mut Replica<S, E>,
    conns: &mut HashMap<u64, ConnHandle>,
    (client_conn, submitted): (&mut HashMap<ClientId, u64>, &mut Submitted),
    election_name: &str,
    now: &impl Fn() -> Time,
    metrics: &NodeMetrics,
) -> Result<(), NodeError> {
    match ev {
        Event::Peer(from, env) => {
            if env.from != from {
                metrics.dropped_forged.fetch_add(1, Ordering::Relaxed);
            } else {
                replica.handle_message(now(), from, env.message);
            }
        }
        Event::Port(PortEvent::New(conn, tx)) => {
            conns.insert(conn, tx);
        }
        Event::Port(PortEvent::Gone(conn)) => {
            conns.remove(&conn);
            client_conn.retain(|_, c| *c != conn);
            submitted.retain(|id, _| client_conn.contains_key(id));
        }
        Event::Port(PortEvent::Request(
            conn,
            ClientRequest::Submit {
                client_id,
                timestamp,
                payload,
            },
            _inflight,
        )) => {
            // A client id is bound to the connection that uses it while that one lives: another
            // connection naming it would take its replies (or advance its timestamps).
            if let Some(&owner) = client_conn.get(&client_id) {
                if owner != conn && conns.contains_key(&owner) {
                    metrics.client_id_conflicts.fetch_add(1, Ordering::Relaxed);
                    if let Some(tx) = conns.get(&conn) {
                        tx.send(
                            ClientResponse::Rejected {
                                reason: format!(
                                    "client id {} is in use by another connection",
                                    client_id.0
                                ),
                            },
                            metrics,
                        );
                    }
                    return Ok(());
                }
            }
            client_conn.insert(client_id, conn);
            submitted.insert(client_id, (timestamp, Instant::now()));
            let update = ClientUpdate {
                client_id,
                server_id: replica.id(),
                timestamp,
                payload,
            };
            if let Err(e) = replica.handle_client_update(now(), update) {
                submitted.remove(&client_id);
                crate::logging::refused(&REFUSED_UPDATE, "a client update", &e);
                if let Some(tx) = conns.get(&conn) {
                    if !tx.send(
                        ClientResponse::Rejected {
                            reason: e.to_string(),
                        },
                        metrics,
                    ) {
                        metrics.replies_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Event::Port(PortEvent::Request(conn, ClientRequest::Status, _inflight)) => {
            let status = crate::status::node_status(replica, election_name, metrics);
            if let Some(tx) = conns.get(&conn) {
                if !tx.send(ClientResponse::Status(status), metrics) {
                    metrics.replies_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Event::Persisted(id, took, batches) => {
            metrics.record_sync(took, batches);
            replica.handle_persisted(now(), id);
        }
        Event::SnapshotBuilt(snap) => {
            metrics
                .snapshot_builds_running
                .fetch_sub(1, Ordering::Relaxed);
            replica.handle_snapshot_built(now(), *snap)
        }
        Event::StorageFailed(e) => {
            tracing::error!("storage failed, stopping: {e}");
            return Err(NodeError::Storage(e));
        }
    }
    Ok(())
}
