//! The client port: accepting client connections, reading their requests and writing their
//! replies, within limits that hold against a hostile or broken client.
//!
//! * **Connections.** At most [`ClientLimits::max_clients`] at once and
//!   [`ClientLimits::max_per_ip`] per source address. A new connection beyond either cap evicts
//!   the longest-idle connection in its scope if that one sent nothing for
//!   [`ClientLimits::evict_idle_after`], and is refused otherwise: idle sockets cannot lock a
//!   working client out.
//! * **Idle and slow readers.** A connection that sends no request for
//!   [`ClientLimits::idle_timeout`] is closed, and so is one whose replies do not drain
//!   within [`ClientLimits::write_timeout`].
//! * **Reply bytes.** Replies are queued per connection up to [`ClientLimits::reply_budget`]
//!   bytes (and [`ClientLimits::reply_queue`] replies). A client that does not read past its
//!   budget is closed, and its queued replies freed. A never-reading client pipelining 1 MiB gets
//!   cannot grow the server's memory.
//! * **Overload.** Requests handed to the driver and not yet handled hold at most
//!   [`ClientLimits::inflight_bytes`] across all connections. A request that would pass it, or
//!   that finds the driver's queue full, is answered [`ClientResponse::Overloaded`] at once (it
//!   was not taken), never dropped in silence.

use crate::logging::LogLimiter;
use crate::metrics::NodeMetrics;
use crate::protocol::{encode_frame_into, read_frame, ClientRequest, ClientResponse};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

/// Refusals of outside input, each kind logged at most once a second.
static REFUSED_FRAME: LogLimiter = LogLimiter::new();
static REFUSED_CONNECTION: LogLimiter = LogLimiter::new();

/// Limits of the client port (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Most client connections served at once.
    pub max_clients: usize,
    /// Most connections from one source address.
    pub max_per_ip: usize,
    /// Replies queued per connection (a count bound beside the byte bound).
    pub reply_queue: usize,
    /// Reply bytes queued per connection and not yet written.
    pub reply_budget: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A connection whose queued replies do not drain within this long is closed.
    pub write_timeout: Duration,
    /// At a cap, a connection idle this long may be closed for a new one.
    pub evict_idle_after: Duration,
    /// Request bytes read from all connections and not yet handled by the driver.
    pub inflight_bytes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_clients: 4096,
            max_per_ip: 1024,
            reply_queue: 1024,
            reply_budget: 64 << 20,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            evict_idle_after: Duration::from_secs(10),
            inflight_bytes: 256 << 20,
        }
    }
}

/// One client connection as its tasks, the acceptor and the driver share it.
pub(crate) struct Conn {
    /// The connection's number (the driver's key).
    pub(crate) id: u64,
    ip: IpAddr,
    /// When the last request was read, in ms since the port's epoch.
    last_request_ms: AtomicU64,
    /// Reply bytes queued and not yet written.
    queued: AtomicUsize,
    budget: usize,
    closing: AtomicBool,
    close: Notify,
}

impl Conn {
    /// Asks the connection's tasks to close it (idempotent).
    fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.close.notify_one();
        }
    }
}

/// What the driver holds per connection: the reply queue and the shared accounting.
pub(crate) struct ConnHandle {
    tx: mpsc::Sender<ClientResponse>,
    conn: Arc<Conn>,
}

/// Approximate bytes a reply holds while queued (its payload dominates).
fn reply_bytes(r: &ClientResponse) -> usize {
    64 + match r {
        ClientResponse::Reply { result, .. } => result.len(),
        ClientResponse::Status(_) => 512,
        ClientResponse::Rejected { reason } => reason.len(),
        _ => 0,
    }
}

impl ConnHandle {
    /// Queues `reply`. False when it does not fit the connection's count or byte budget: the
    /// reply is dropped and the connection closed (a client that does not read is not served).
    pub(crate) fn send(&self, reply: ClientResponse, metrics: &NodeMetrics) -> bool {
        if self.conn.closing.load(Ordering::Acquire) {
            return false;
        }
        let bytes = reply_bytes(&reply);
        let before = self.conn.queued.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.conn.budget || self.tx.try_send(reply).is_err() {
            self.conn.queued.fetch_sub(bytes, Ordering::AcqRel);
            metrics.clients_slow_closed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                conn = self.conn.id,
                queued = before,
                "client does not read its replies: closing"
            );
            self.conn.close();
            return false;
        }
        true
    }
}

/// The live connections, by number, and how many per source address.
#[derive(Default)]
struct Table {
    conns: HashMap<u64, Arc<Conn>>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            if let Some(n) = self.per_ip.get_mut(&c.ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&c.ip);
                }
            }
        }
    }

    /// The longest-idle connection (from `ip` only, when given) if idle at least `min` ms.
    fn idlest(&self, ip: Option<IpAddr>, now_ms: u64, min_ms: u64) -> Option<u64> {
        self.conns
            .values()
            .filter(|c| ip.is_none_or(|ip| c.ip == ip))
            .min_by_key(|c| c.last_request_ms.load(Ordering::Relaxed))
            .filter(|c| now_ms.saturating_sub(c.last_request_ms.load(Ordering::Relaxed)) >= min_ms)
            .map(|c| c.id)
    }
}

/// Request bytes counted against [`ClientLimits::inflight_bytes`] until dropped (once the driver
/// handled the request).
pub(crate) struct Inflight {
    bytes: usize,
    total: Arc<AtomicUsize>,
}

impl Inflight {
    /// Counts `bytes` in `total` if that stays within `budget`.
    fn take(total: &Arc<AtomicUsize>, bytes: usize, budget: usize) -> Option<Inflight> {
        total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t + bytes <= budget).then_some(t + bytes)
            })
            .ok()
            .map(|_| Inflight {
                bytes,
                total: total.clone(),
            })
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What a connection task hands the driver.
pub(crate) enum PortEvent {
    /// A new connection and its reply queue.
    New(u64, ConnHandle),
    /// A request read from connection `0`, and its bytes in flight.
    Request(u64, ClientRequest, Inflight),
    /// The connection closed.
    Gone(u64),
}

/// Accepts client connections on `listener` until `stop`, wrapping every [`PortEvent`] with
/// `wrap` into the driver's event queue.
pub(crate) async fn accept_clients<E: Send + 'static>(
    listener: TcpListener,
    events: mpsc::Sender<E>,
    wrap: fn(PortEvent) -> E,
    mut stop: watch::Receiver<bool>,
    limits: ClientLimits,
    metrics: Arc<NodeMetrics>,
) {
    let epoch = Instant::now();
    let table: Arc<Mutex<Table>> = Arc::default();
    let inflight: Arc<AtomicUsize> = Arc::default();
    let mut next_conn = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let now_ms = epoch.elapsed().as_millis() as u64;
        next_conn += 1;
        let conn = Arc::new(Conn {
            id: next_conn,
            ip: peer.ip(),
            last_request_ms: AtomicU64::new(now_ms),
            queued: AtomicUsize::new(0),
            budget: limits.reply_budget,
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        if !admit(&table, &conn, peer, now_ms, &limits, &metrics) {
            metrics.clients_refused.fetch_add(1, Ordering::Relaxed);
            crate::logging::refused(
                &REFUSED_CONNECTION,
                "a client connection",
                &format_args!(
                    "from {peer}: at the limit ({} connections, {} per address) and none idle",
                    limits.max_clients, limits.max_per_ip
                ),
            );
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(limits.reply_queue.max(1));
        let handle = ConnHandle {
            tx: tx.clone(),
            conn: conn.clone(),
        };
        if events
            .send(wrap(PortEvent::New(conn.id, handle)))
            .await
            .is_err()
        {
            return;
        }
        metrics.clients_connected.fetch_add(1, Ordering::Relaxed);
        let own = ConnHandle { tx, conn };
        tokio::spawn(serve_client(
            own,
            stream,
            rx,
            events.clone(),
            wrap,
            stop.clone(),
            limits.clone(),
            epoch,
            table.clone(),
            inflight.clone(),
            metrics.clone(),
        ));
    }
}

/// Whether `conn` (from `peer`) may be served now, evicting an idle connection at a cap.
fn admit(
    table: &Mutex<Table>,
    conn: &Arc<Conn>,
    peer: SocketAddr,
    now_ms: u64,
    limits: &ClientLimits,
    metrics: &NodeMetrics,
) -> bool {
    let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
    let min_idle = limits.evict_idle_after.as_millis() as u64;
    let mut scopes = Vec::with_capacity(2);
    if t.per_ip.get(&peer.ip()).copied().unwrap_or(0) >= limits.max_per_ip {
        scopes.push(Some(peer.ip()));
    }
    if t.conns.len() >= limits.max_clients {
        scopes.push(None);
    }
    for scope in scopes {
        // Still at the cap (an earlier eviction may have made room in both scopes).
        let full = match scope {
            Some(ip) => t.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_per_ip,
            None => t.conns.len() >= limits.max_clients,
        };
        if !full {
            continue;
        }
        let Some(victim) = t.idlest(scope, now_ms, min_idle) else {
            return false;
        };
        if let Some(c) = t.conns.get(&victim) {
            c.close();
        }
        t.remove(victim);
        metrics.clients_evicted.fetch_add(1, Ordering::Relaxed);
    }
    t.conns.insert(conn.id, conn.clone());
    *t.per_ip.entry(peer.ip()).or_default() += 1;
    true
}

#[allow(clippy::too_many_arguments)]
async fn serve_client<E: Send + 'static>(
    own: ConnHandle,
    stream: TcpStream,
    mut replies: mpsc::Receiver<ClientResponse>,
    events: mpsc::Sender<E>,
    wrap: fn(PortEvent) -> E,
    mut stop: watch::Receiver<bool>,
    limits: ClientLimits,
    epoch: Instant,
    table: Arc<Mutex<Table>>,
    inflight: Arc<AtomicUsize>,
    metrics: Arc<NodeMetrics>,
) {
    let conn = own.conn.clone();
    let id = conn.id;
    let (rd, mut wr) = stream.into_split();
    // Buffered: one read system call takes every request the client has pipelined, instead of two
    // per frame (length, body).
    let mut rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
    let writer = {
        let conn = conn.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(16 * 1024);
            while let Some(first) = replies.recv().await {
                // Every reply already queued goes out with one write system call.
                buf.clear();
                let mut bytes = 0;
                let mut next = Some(first);
                while let Some(r) = next {
                    bytes += reply_bytes(&r);
                    if encode_frame_into(&mut buf, &r).is_err() {
                        conn.close();
                        return;
                    }
                    next = if buf.len() < 256 * 1024 {
                        replies.try_recv().ok()
                    } else {
                        None
                    };
                }
                match tokio::time::timeout(limits.write_timeout, wr.write_all(&buf)).await {
                    Ok(Ok(())) => {
                        conn.queued.fetch_sub(bytes, Ordering::AcqRel);
                    }
                    Ok(Err(_)) => break,
                    Err(_) => {
                        metrics.clients_slow_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(conn = conn.id, "client replies do not drain: closing");
                        break;
                    }
                }
            }
            conn.close();
        })
    };
    loop {
        tokio::select! {
            r = tokio::time::timeout(limits.idle_timeout, read_frame::<ClientRequest, _>(&mut rd)) => match r {
                Ok(Ok(req)) => {
                    conn.last_request_ms
                        .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    let answer = overload_answer(&req);
                    let bytes = match &req {
                        ClientRequest::Submit { payload, .. } => payload.len() + 64,
                        ClientRequest::Status => 64,
                    };
                    let taken = Inflight::take(&inflight, bytes, limits.inflight_bytes)
                        .is_some_and(|f| events.try_send(wrap(PortEvent::Request(id, req, f))).is_ok());
                    if !taken {
                        metrics.dropped_overload.fetch_add(1, Ordering::Relaxed);
                        own.send(answer, &metrics);
                    }
                }
                Ok(Err(crate::protocol::FrameError::Closed)) => break,
                Ok(Err(e)) => {
                    metrics.bad_client_frames.fetch_add(1, Ordering::Relaxed);
                    crate::logging::refused(&REFUSED_FRAME, "a client frame", &e);
                    break;
                }
                Err(_) => {
                    metrics.clients_idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("client {id}: idle for {:?}; closing", limits.idle_timeout);
                    break;
                }
            },
            () = conn.close.notified() => break,
            _ = stop.changed() => break,
        }
    }
    conn.close();
    table.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    let _ = events.send(wrap(PortEvent::Gone(id))).await;
    metrics.clients_connected.fetch_sub(1, Ordering::Relaxed);
    writer.abort();
}

/// The answer to `req` when the driver cannot take it.
fn overload_answer(req: &ClientRequest) -> ClientResponse {
    match req {
        ClientRequest::Submit {
            client_id,
            timestamp,
            ..
        } => ClientResponse::Overloaded {
            client_id: Some(*client_id),
            timestamp: Some(*timestamp),
        },
        ClientRequest::Status => ClientResponse::Overloaded {
            client_id: None,
            timestamp: None,
        },
    }
}
