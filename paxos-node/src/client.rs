//! The client library: exactly-once updates with retries and server fail-over.
//!
//! A [`Client`] names each update `(client_id, timestamp)` once and keeps that name across every
//! retry, on the same server or another one, so a retried write is executed at most once and
//! answered with its original result. A fresh client first registers a session (an update with
//! timestamp 0 naming a random nonce; the cluster answers with the session id, decided by the log)
//! and names its updates with that id. Sessions expire when idle for the cluster's
//! `sessions.expire_after` or when the cluster holds too many: an update of an expired session is
//! refused ([`ClientError::SessionExpired`]), never applied twice, and the next submit registers a
//! new session. A client that must survive restarts passes its session id and last timestamp (see
//! [`Client::with_identity`]).

use crate::kv::{KvCommand, KvResult};
use crate::protocol::{
    read_frame, write_frame, ClientRequest, ClientResponse, FrameError, NodeStatus,
};
use bytes::Bytes;
use paxos_core::{ClientId, Timestamp};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::net::{TcpSocket, TcpStream};

/// Why an operation did not complete.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No answer within the operation deadline: the update may or may not have been executed
    /// (retrying with the same client and timestamp is safe).
    #[error("no answer within {0:?} (outcome unknown)")]
    Timeout(Duration),
    /// The reply did not decode as a key-value result.
    #[error("malformed reply: {0}")]
    BadReply(String),
    /// The client was given no servers.
    #[error("no servers configured")]
    NoServers,
    /// Every server refused the connection (nothing listens): no server received the request,
    /// so it was not executed by this attempt.
    #[error("cluster unreachable: every server refused the connection")]
    Unreachable,
    /// The client's session expired before this update executed: it was not applied now, and
    /// whether an earlier attempt of it was applied is unknown. The next submit registers anew.
    #[error("session {0:?} expired (outcome of the update unknown)")]
    SessionExpired(ClientId),
    /// The client id already executed a later timestamp (`executed`): another party uses this
    /// id. The update was not applied now; whether it was applied before is unknown.
    #[error("client id {client:?} already executed timestamp {executed:?}: the id is in use elsewhere (outcome unknown)")]
    Superseded {
        /// The client id.
        client: ClientId,
        /// The later timestamp executed.
        executed: Timestamp,
    },
    /// Talking to a server failed.
    #[error("server {addr}: {source}")]
    Server {
        /// The server.
        addr: SocketAddr,
        /// What failed.
        source: FrameError,
    },
}

/// Connects to a cluster and submits updates, one at a time.
#[derive(Debug)]
pub struct Client {
    servers: Vec<SocketAddr>,
    current: usize,
    conn: Option<TcpStream>,
    client_id: ClientId,
    /// Whether `client_id` names a session (false: it is the nonce of the next registration).
    registered: bool,
    last_ts: u64,
    /// How long to wait for one attempt before retrying.
    pub attempt_timeout: Duration,
    /// How long one operation may take in all, retries included.
    pub op_timeout: Duration,
}

impl Client {
    /// A client that talks to `servers`, preferring the first; it registers a session with its
    /// first update.
    pub fn new(servers: Vec<SocketAddr>) -> Client {
        let mut c = Client::with_identity(servers, fresh_nonce(), 0);
        c.registered = false;
        c
    }

    /// A client with a chosen (session) id whose next update gets timestamp
    /// `last_timestamp + 1`: for a client that resumes after a restart.
    pub fn with_identity(
        servers: Vec<SocketAddr>,
        client_id: ClientId,
        last_timestamp: u64,
    ) -> Client {
        Client {
            servers,
            current: 0,
            conn: None,
            client_id,
            registered: true,
            last_ts: last_timestamp,
            attempt_timeout: Duration::from_millis(500),
            op_timeout: Duration::from_secs(10),
        }
    }

    /// This client's id: its session once registered (before that, the registration's nonce).
    pub fn id(&self) -> ClientId {
        self.client_id
    }

    /// The timestamp of the client's last update (0 before the first one of a session).
    pub fn last_timestamp(&self) -> u64 {
        self.last_ts
    }

    /// Registers a session now (a submit does it when needed); returns its id.
    pub async fn register(&mut self) -> Result<ClientId, ClientError> {
        if self.servers.is_empty() {
            return Err(ClientError::NoServers);
        }
        let nonce = self.client_id;
        let request = ClientRequest::Submit {
            client_id: nonce,
            timestamp: Timestamp(0),
            payload: Bytes::new(),
        };
        match self.run(&request, Timestamp(0)).await? {
            Outcome::Opened(session) => {
                self.client_id = session;
                self.registered = true;
                self.last_ts = 0;
                Ok(session)
            }
            Outcome::Result(_) | Outcome::Expired | Outcome::Superseded(_) => Err(
                ClientError::BadReply("registration answered as an update".into()),
            ),
        }
    }

    /// The server the client currently talks to.
    pub fn server(&self) -> Option<SocketAddr> {
        self.servers.get(self.current).copied()
    }

    /// Submits one update and waits for its result (exactly once, with retries).
    pub async fn submit(&mut self, payload: Bytes) -> Result<Bytes, ClientError> {
        if self.servers.is_empty() {
            return Err(ClientError::NoServers);
        }
        if !self.registered {
            self.register().await?;
        }
        self.last_ts += 1;
        let ts = Timestamp(self.last_ts);
        let request = ClientRequest::Submit {
            client_id: self.client_id,
            timestamp: ts,
            payload,
        };
        match self.run(&request, ts).await? {
            Outcome::Result(r) => Ok(r),
            Outcome::Expired => {
                let expired = self.client_id;
                self.client_id = fresh_nonce();
                self.registered = false;
                self.last_ts = 0;
                Err(ClientError::SessionExpired(expired))
            }
            Outcome::Opened(_) => Err(ClientError::BadReply(
                "update answered as a registration".into(),
            )),
            Outcome::Superseded(executed) => Err(ClientError::Superseded {
                client: self.client_id,
                executed,
            }),
        }
    }

    /// Sends `request` (named `(client_id, ts)`) until it is answered, failing over between
    /// servers, within `op_timeout`.
    async fn run(
        &mut self,
        request: &ClientRequest,
        ts: Timestamp,
    ) -> Result<Outcome, ClientError> {
        let deadline = Instant::now() + self.op_timeout;
        let mut attempts_here = 0;
        // Servers that refused a connection in a row, with nothing sent since: when every server
        // did, nothing listens anywhere and waiting out the deadline would only hide that.
        let mut refused_in_a_row = 0;
        let mut sent_anything = false;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .attempt(request, ts, self.attempt_timeout.min(left))
                .await
            {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => {
                    sent_anything = true;
                    refused_in_a_row = 0;
                    attempts_here += 1;
                    if attempts_here >= 3 {
                        self.fail_over();
                        attempts_here = 0;
                    }
                }
                Err(e) => {
                    if matches!(&e, FrameError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
                    {
                        refused_in_a_row += 1;
                        if refused_in_a_row >= self.servers.len() && !sent_anything {
                            return Err(ClientError::Unreachable);
                        }
                    } else {
                        sent_anything = true;
                        refused_in_a_row = 0;
                    }
                    self.fail_over();
                    attempts_here = 0;
                    tokio::time::sleep(Duration::from_millis(50).min(left)).await;
                }
            }
        }
        Err(ClientError::Timeout(self.op_timeout))
    }

    /// One attempt: `Ok(None)` on timeout, `Err` when the connection failed.
    async fn attempt(
        &mut self,
        request: &ClientRequest,
        ts: Timestamp,
        wait: Duration,
    ) -> Result<Option<Outcome>, FrameError> {
        let addr = self.servers[self.current];
        if self.conn.is_none() {
            let stream = tokio::time::timeout(wait, connect(addr))
                .await
                .map_err(|_| FrameError::Io(std::io::ErrorKind::TimedOut.into()))??;
            self.conn = Some(stream);
        }
        let me = self.client_id;
        let conn = self.conn.as_mut().expect("connected above");
        if let Err(e) = write_frame(conn, request).await {
            self.conn = None;
            return Err(e);
        }
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, read_frame::<ClientResponse, _>(conn)).await {
                Err(_) => return Ok(None),
                Ok(Err(e)) => {
                    self.conn = None;
                    return Err(e);
                }
                Ok(Ok(ClientResponse::Reply {
                    client_id,
                    timestamp,
                    result,
                })) if client_id == me && timestamp == ts => {
                    return Ok(Some(Outcome::Result(result)))
                }
                Ok(Ok(ClientResponse::SessionOpened { nonce, session }))
                    if nonce == me && ts == Timestamp(0) =>
                {
                    return Ok(Some(Outcome::Opened(session)))
                }
                Ok(Ok(ClientResponse::SessionExpired {
                    client_id,
                    timestamp,
                })) if client_id == me && timestamp == ts => return Ok(Some(Outcome::Expired)),
                Ok(Ok(ClientResponse::Superseded {
                    client_id,
                    timestamp,
                    executed,
                })) if client_id == me && timestamp == ts => {
                    return Ok(Some(Outcome::Superseded(executed)))
                }
                // Not taken: a pause before the next attempt, so a busy server is not hammered.
                Ok(Ok(ClientResponse::Rejected { .. } | ClientResponse::Overloaded { .. })) => {
                    tokio::time::sleep(REFUSED_PAUSE.min(left)).await;
                    return Ok(None);
                }
                Ok(Ok(_)) => {} // a late reply to an earlier attempt
            }
        }
    }

    fn fail_over(&mut self) {
        self.conn = None;
        self.current = (self.current + 1) % self.servers.len();
    }

    /// Runs a key-value command.
    pub async fn execute(&mut self, cmd: &KvCommand) -> Result<KvResult, ClientError> {
        let bytes = self.submit(cmd.encode()).await?;
        KvResult::decode(&bytes).map_err(|e| ClientError::BadReply(e.to_string()))
    }

    /// Sets a key.
    pub async fn put(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<KvResult, ClientError> {
        self.execute(&KvCommand::Put {
            key: key.into(),
            value: value.into(),
        })
        .await
    }

    /// Reads a key through the log (linearizable).
    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        match self.execute(&KvCommand::Get { key: key.into() }).await? {
            KvResult::Value(v) => Ok(v),
            other => Err(ClientError::BadReply(format!("unexpected {other:?}"))),
        }
    }

    /// Removes a key, returning its previous value.
    pub async fn delete(&mut self, key: impl Into<Bytes>) -> Result<KvResult, ClientError> {
        self.execute(&KvCommand::Delete { key: key.into() }).await
    }

    /// Compare-and-set.
    pub async fn cas(
        &mut self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    ) -> Result<KvResult, ClientError> {
        self.execute(&KvCommand::Cas {
            key: key.into(),
            expected,
            new,
        })
        .await
    }
}

/// What one request came to.
enum Outcome {
    Result(Bytes),
    Opened(ClientId),
    Expired,
    Superseded(Timestamp),
}

/// How long an attempt waits after a refusal (`Rejected`, `Overloaded`) before the next one.
const REFUSED_PAUSE: Duration = Duration::from_millis(20);

/// A random registration nonce (below 2^63, where session ids start).
/// Connects to a server, refusing a connection to itself: with no server listening on a port of
/// the local ephemeral range, the kernel can hand that very port to the connecting socket (TCP
/// simultaneous open), and the client would talk to itself.
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    connect_with(socket, addr).await
}

/// [`connect`] from a given socket (a test binds it to the server's address to force the
/// self-connect).
async fn connect_with(socket: TcpSocket, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = socket.connect(addr).await?;
    if stream.local_addr()? == stream.peer_addr()? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("connection to {addr} is connected to itself (no server listening)"),
        ));
    }
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn fresh_nonce() -> ClientId {
    ClientId(rand::random::<u64>() >> 1)
}

/// Asks one server for its status.
pub async fn status(addr: SocketAddr, wait: Duration) -> Result<NodeStatus, ClientError> {
    let fut = async {
        let mut s = connect(addr).await?;
        write_frame(&mut s, &ClientRequest::Status).await?;
        loop {
            if let ClientResponse::Status(st) = read_frame::<ClientResponse, _>(&mut s).await? {
                return Ok::<_, FrameError>(st);
            }
        }
    };
    match tokio::time::timeout(wait, fut).await {
        Err(_) => Err(ClientError::Timeout(wait)),
        Ok(Err(source)) => Err(ClientError::Server { addr, source }),
        Ok(Ok(st)) => Ok(st),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The self-connect of issue #16: a socket bound to the address it connects to, with nothing
    /// listening there, is connected to itself. Without the check it reads its own request back,
    /// which the direction tags refuse; with the check the connection is refused outright.
    #[tokio::test]
    async fn a_connection_to_itself_is_refused() {
        let bound = |addr: SocketAddr| {
            let s = TcpSocket::new_v4().unwrap();
            s.set_reuseaddr(true).unwrap();
            s.bind(addr).unwrap();
            s
        };
        let free = || bound("127.0.0.1:0".parse().unwrap()).local_addr().unwrap();
        let addr = free();

        // Raw self-connect: the request comes back, and does not decode as a response.
        let mut raw = bound(addr).connect(addr).await.unwrap();
        assert_eq!(raw.local_addr().unwrap(), raw.peer_addr().unwrap());
        let req = ClientRequest::Submit {
            client_id: ClientId(5),
            timestamp: Timestamp(1),
            payload: Bytes::from_static(b"x"),
        };
        write_frame(&mut raw, &req).await.unwrap();
        assert!(matches!(
            read_frame::<ClientResponse, _>(&mut raw).await,
            Err(FrameError::WrongTag { .. })
        ));
        drop(raw);

        // The client's connect refuses it.
        let addr = free();
        let err = connect_with(bound(addr), addr).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
