//! The load generator: many closed-loop logical clients multiplexed over few TCP connections.
//!
//! Every logical client has its own [`ClientId`] and keeps exactly one 200-byte update outstanding,
//! as in the paper. The server's client protocol routes each reply by client id, so one connection
//! can carry many logical clients; a connection task reads whatever replies are ready, issues the
//! next update of every answered client, and writes them all with one system call. That keeps the
//! benchmark's own CPU cost per update to a few microseconds, so the clients (which share the
//! machine's cores with the servers) do not become the bottleneck.
//!
//! An update unanswered for [`LoadSpec::attempt_timeout`] is resent with the same
//! `(client_id, timestamp)` (exactly once: a duplicate is answered from the server's table); a
//! broken connection is re-established to the next server and every outstanding update is resent.
//! Every loop is bounded: after [`Shared::stop`] no new update is issued, and a connection task
//! returns once its updates are answered or [`LoadSpec::drain`] has passed.

use crate::BenchError;
use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use paxos_core::{ClientId, Timestamp};
use paxos_node::client::Client;
use paxos_node::protocol::{
    decode_frame_body, encode_frame_into, ClientRequest, ClientResponse, MAX_FRAME_BYTES,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the logical clients reach the servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientMode {
    /// Many logical clients per TCP connection, one task per connection (the default; cheap).
    Mux,
    /// One `paxos_node::client::Client` (own connection and task) per logical client.
    Library,
}

/// The workload.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Closed-loop logical clients.
    pub clients: usize,
    /// Update size in bytes.
    pub update_bytes: usize,
    /// Logical clients per TCP connection ([`ClientMode::Mux`] only).
    pub clients_per_connection: usize,
    /// How clients connect.
    pub mode: ClientMode,
    /// Resend an update unanswered for this long.
    pub attempt_timeout: Duration,
    /// After stop, wait at most this long for outstanding updates.
    pub drain: Duration,
    /// After this many updates a logical client leaves its session and registers again under a
    /// new nonce: a new client id, as a fleet of short-lived clients would be
    /// ([`ClientMode::Mux`] only). `None`: one session per logical client for the whole run.
    pub churn: Option<u64>,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            clients: 16,
            update_bytes: 200,
            clients_per_connection: 64,
            mode: ClientMode::Mux,
            attempt_timeout: Duration::from_secs(1),
            drain: Duration::from_secs(3),
            churn: None,
        }
    }
}

/// Counters shared by every connection task and the measuring side.
#[derive(Debug, Default)]
pub struct Shared {
    /// Record latencies and counts while set.
    pub measuring: AtomicBool,
    /// Issue no new updates once set.
    pub stop: AtomicBool,
    /// Updates completed while measuring.
    pub completed: AtomicU64,
    /// Updates completed in all (warm-up included).
    pub completed_all: AtomicU64,
    /// Resends after an attempt timeout, while measuring.
    pub retries: AtomicU64,
    /// `Rejected` answers (any time).
    pub rejected: AtomicU64,
    /// Connections re-established after a failure (any time).
    pub reconnects: AtomicU64,
    /// Sessions the logical clients registered (any time).
    pub sessions_opened: AtomicU64,
    /// Updates answered "session expired" (any time; each one's client registers again).
    pub sessions_expired: AtomicU64,
    /// Set while some server builds or writes a snapshot image (kept by the measuring side):
    /// latencies completed meanwhile go to [`Latencies::during_snapshot`].
    pub snapshotting: AtomicBool,
}

/// The latencies one task measured, split by whether a snapshot was in progress at completion.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Completed while no server was snapshotting.
    pub between_snapshots: Histogram<u64>,
    /// Completed while some server was building or writing a snapshot image.
    pub during_snapshot: Histogram<u64>,
}

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            between_snapshots: new_histogram(),
            during_snapshot: new_histogram(),
        }
    }

    fn record(&mut self, shared: &Shared, micros: u64) {
        let h = if shared.snapshotting.load(Ordering::Relaxed) {
            &mut self.during_snapshot
        } else {
            &mut self.between_snapshots
        };
        let _ = h.record(micros.max(1));
    }
}

/// What one connection task measured.
pub type TaskResult = Result<Latencies, BenchError>;

/// An empty latency histogram (1 µs to 120 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds are valid")
}

/// Spawns the load: returns one join handle per task (connection or library client).
///
/// `servers` are the servers' client addresses; logical client `c` prefers server `c mod n`
/// (clients spread evenly, as in the paper).
pub fn spawn(
    servers: &[SocketAddr],
    spec: &LoadSpec,
    shared: Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<TaskResult>> {
    let n = servers.len().max(1);
    let payload = Bytes::from(vec![b'x'; spec.update_bytes]);
    let mut tasks = Vec::new();
    match spec.mode {
        ClientMode::Library => {
            for c in 0..spec.clients {
                let mut order = servers.to_vec();
                order.rotate_left(c % n);
                let (shared, payload) = (shared.clone(), payload.clone());
                tasks.push(tokio::spawn(library_client(order, payload, shared)));
            }
        }
        ClientMode::Mux => {
            let per = spec.clients_per_connection.max(1);
            // Group the logical clients by preferred server, then cut each group into connections.
            // Each connection draws its nonces from its own 2^40 range: unique across the run
            // however often its clients churn.
            // Nonces stay below the session ids (2^63, `SESSION_ID_BASE`): base < 2^62, plus
            // one 2^40 range per connection. A full random base put every registration of
            // about half the runs above it, all refused ("registration names session id").
            let base = rand::random::<u64>() >> 2;
            let mut conn = 0u64;
            for s in 0..n {
                let mine = (0..spec.clients).filter(|c| c % n == s).count() as u64;
                let mut first = 0u64;
                while first < mine {
                    let count = (mine - first).min(per as u64);
                    let mut order = servers.to_vec();
                    order.rotate_left(s);
                    let id0 = base.wrapping_add(conn << 40);
                    conn += 1;
                    tasks.push(tokio::spawn(connection(
                        order,
                        id0,
                        count as usize,
                        payload.clone(),
                        spec.clone(),
                        shared.clone(),
                    )));
                    first += count;
                }
            }
        }
    }
    tasks
}

async fn library_client(
    servers: Vec<SocketAddr>,
    payload: Bytes,
    shared: Arc<Shared>,
) -> TaskResult {
    let mut client = Client::new(servers);
    let mut hist = Latencies::new();
    // Bounded: the client's own op timeout bounds each submit; stop ends the loop.
    while !shared.stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ok = client.submit(payload.clone()).await.is_ok();
        shared
            .completed_all
            .fetch_add(u64::from(ok), Ordering::Relaxed);
        if shared.measuring.load(Ordering::Relaxed) {
            if ok {
                hist.record(&shared, t.elapsed().as_micros() as u64);
                shared.completed.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.retries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(hist)
}

/// One logical client of a multiplexed connection.
#[derive(Clone, Copy, Debug)]
struct Logical {
    ts: u64,
    /// When the current update was first sent (latency is measured from here).
    first_sent: Instant,
    /// When it was last (re)sent.
    last_sent: Instant,
    outstanding: bool,
    /// Its session, once registered (until then, `nonce` registers).
    session: Option<u64>,
    /// The nonce of its current (or next) registration.
    nonce: u64,
    /// Updates completed under the current session.
    in_session: u64,
}

/// Sends logical client `c`'s outstanding request: its update under its session, or the
/// registration of its nonce.
fn push_logical(out: &mut Vec<u8>, c: &Logical, payload: &Bytes) -> Result<(), BenchError> {
    match c.session {
        Some(s) => push_request(out, s, c.ts, payload),
        None => push_request(out, c.nonce, 0, &Bytes::new()),
    }
}

fn push_request(out: &mut Vec<u8>, id: u64, ts: u64, payload: &Bytes) -> Result<(), BenchError> {
    let req = ClientRequest::Submit {
        client_id: ClientId(id),
        timestamp: Timestamp(ts),
        payload: payload.clone(),
    };
    encode_frame_into(out, &req).map_err(|e| BenchError::Protocol(e.to_string()))
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn connection(
    servers: Vec<SocketAddr>,
    id0: u64,
    count: usize,
    payload: Bytes,
    spec: LoadSpec,
    shared: Arc<Shared>,
) -> TaskResult {
    let (attempt_timeout, drain) = (spec.attempt_timeout, spec.drain);
    let mut hist = Latencies::new();
    let now = Instant::now();
    let mut clients: Vec<Logical> = (0..count)
        .map(|i| Logical {
            ts: 1,
            first_sent: now,
            last_sent: now,
            outstanding: true,
            session: None,
            nonce: id0 + i as u64,
            in_session: 0,
        })
        .collect();
    // Nonces handed out so far (the next one is `id0 + issued`).
    let mut issued = count as u64;
    // Session id, and nonce of a registration in flight, to logical client.
    let mut by_session: std::collections::HashMap<u64, usize> = Default::default();
    let mut by_nonce: std::collections::HashMap<u64, usize> =
        (0..count).map(|i| (id0 + i as u64, i)).collect();
    let mut current = 0usize;
    let mut out = Vec::with_capacity(count * (payload.len() + 32));
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopped_at: Option<Instant> = None;
    let mut failures = 0u32;
    'reconnect: loop {
        if let Some(t) = stopped_at {
            if t.elapsed() >= drain {
                return Ok(hist);
            }
        }
        let stream = match connect(servers[current]).await {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                current = (current + 1) % servers.len();
                if failures > 50 {
                    return Err(BenchError::Io(format!("cannot reach any server: {e}")));
                }
                if shared.stop.load(Ordering::Relaxed) {
                    stopped_at.get_or_insert_with(Instant::now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'reconnect;
            }
        };
        let (mut rd, mut wr) = stream.into_split();
        inbuf.clear();
        out.clear();
        // (Re)send every outstanding update.
        let now = Instant::now();
        for c in clients.iter_mut() {
            if c.outstanding {
                c.last_sent = now;
                push_logical(&mut out, c, &payload)?;
            }
        }
        if wr.write_all(&out).await.is_err() {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
            current = (current + 1) % servers.len();
            continue 'reconnect;
        }
        loop {
            let outstanding = clients.iter().filter(|c| c.outstanding).count();
            if shared.stop.load(Ordering::Relaxed) {
                let t = *stopped_at.get_or_insert_with(Instant::now);
                if outstanding == 0 || t.elapsed() >= drain {
                    return Ok(hist);
                }
            }
            out.clear();
            tokio::select! {
                r = rd.read_buf(&mut inbuf) => {
                    match r {
                        Ok(0) | Err(_) => {
                            shared.reconnects.fetch_add(1, Ordering::Relaxed);
                            current = (current + 1) % servers.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue 'reconnect;
                        }
                        Ok(_) => {}
                    }
                    let measuring = shared.measuring.load(Ordering::Relaxed);
                    let stop = shared.stop.load(Ordering::Relaxed);
                    let mut done = 0u64;
                    let now = Instant::now();
                    while inbuf.len() >= 4 {
                        let len = u32::from_le_bytes([inbuf[0], inbuf[1], inbuf[2], inbuf[3]]) as usize;
                        if len > MAX_FRAME_BYTES {
                            return Err(BenchError::Protocol(format!("reply frame of {len} bytes")));
                        }
                        if inbuf.len() < 4 + len {
                            break;
                        }
                        let resp: ClientResponse = decode_frame_body(&inbuf[4..4 + len])
                            .map_err(|e| BenchError::Protocol(e.to_string()))?;
                        inbuf.advance(4 + len);
                        match resp {
                            ClientResponse::Reply { client_id, timestamp, .. } => {
                                let Some(&i) = by_session.get(&client_id.0) else {
                                    continue;
                                };
                                let c = &mut clients[i];
                                if !c.outstanding || timestamp.0 != c.ts || c.session != Some(client_id.0) {
                                    continue; // a late answer to a resend
                                }
                                c.outstanding = false;
                                c.in_session += 1;
                                done += 1;
                                if measuring {
                                    hist.record(&shared, now.duration_since(c.first_sent).as_micros() as u64);
                                }
                                if spec.churn.is_some_and(|n| c.in_session >= n) {
                                    // Leave the session: the next update goes under a new id.
                                    by_session.remove(&client_id.0);
                                    c.session = None;
                                    c.in_session = 0;
                                    c.nonce = id0 + issued;
                                    issued += 1;
                                    by_nonce.insert(c.nonce, i);
                                }
                                if !stop {
                                    c.ts += 1;
                                    c.outstanding = true;
                                    c.first_sent = now;
                                    c.last_sent = now;
                                    push_logical(&mut out, c, &payload)?;
                                }
                            }
                            ClientResponse::SessionOpened { nonce, session } => {
                                // Unknown: a late answer to a resent registration.
                                let Some(i) = by_nonce.remove(&nonce.0) else {
                                    continue;
                                };
                                let c = &mut clients[i];
                                c.session = Some(session.0);
                                by_session.insert(session.0, i);
                                shared.sessions_opened.fetch_add(1, Ordering::Relaxed);
                                c.first_sent = now;
                                c.last_sent = now;
                                push_logical(&mut out, c, &payload)?;
                            }
                            ClientResponse::SessionExpired { client_id, timestamp } => {
                                let Some(&i) = by_session.get(&client_id.0) else {
                                    continue;
                                };
                                let c = &mut clients[i];
                                if !c.outstanding || timestamp.0 != c.ts {
                                    continue;
                                }
                                // Outcome unknown: register again, then the next update.
                                by_session.remove(&client_id.0);
                                shared.sessions_expired.fetch_add(1, Ordering::Relaxed);
                                c.session = None;
                                c.in_session = 0;
                                c.nonce = id0 + issued;
                                issued += 1;
                                by_nonce.insert(c.nonce, i);
                                c.ts += 1;
                                c.last_sent = now;
                                push_logical(&mut out, c, &payload)?;
                            }
                            // Not taken: the resend timer sends it again.
                            ClientResponse::Rejected { .. } | ClientResponse::Overloaded { .. } => {
                                shared.rejected.fetch_add(1, Ordering::Relaxed);
                            }
                            // Only for a stale resend of an update this client already moved past.
                            ClientResponse::Superseded { .. } | ClientResponse::Status(_) => {}
                        }
                    }
                    if done > 0 {
                        failures = 0;
                        shared.completed_all.fetch_add(done, Ordering::Relaxed);
                        if measuring {
                            shared.completed.fetch_add(done, Ordering::Relaxed);
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let mut resent = 0u64;
                    for c in clients.iter_mut() {
                        if c.outstanding && now.duration_since(c.last_sent) >= attempt_timeout {
                            c.last_sent = now;
                            resent += 1;
                            push_logical(&mut out, c, &payload)?;
                        }
                    }
                    if resent > 0 {
                        failures += 1;
                        if shared.measuring.load(Ordering::Relaxed) {
                            shared.retries.fetch_add(resent, Ordering::Relaxed);
                        }
                        if failures >= 3 {
                            // Three rounds of silence: try the next server.
                            failures = 0;
                            shared.reconnects.fetch_add(1, Ordering::Relaxed);
                            current = (current + 1) % servers.len();
                            continue 'reconnect;
                        }
                    }
                }
            }
            if !out.is_empty() && wr.write_all(&out).await.is_err() {
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                current = (current + 1) % servers.len();
                continue 'reconnect;
            }
        }
    }
}
