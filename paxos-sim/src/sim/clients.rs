//! The clients: closed-loop, one outstanding update each, retried on timeout at the same server
//! (testing.md (a), *Harness*; the clients whose replies *Invariants* 4 and the *Liveness*
//! condition judge).
//!
//! Each client is attached to one server (drawn per seed, or one per driven server). It submits
//! an update whose payload is a function of `(seed, client, timestamp)`, resends it to its server
//! every client timeout until a reply with its timestamp arrives, then thinks and submits the
//! next. The reply is checked against the canonical order (`checker.rs`) before it counts.
//!
//! With client sessions (`Config::sessions`) a client first registers (timestamp 0, its index as
//! the nonce) and sends its updates under the session id the reply names. An update answered
//! "session expired" ends with an unknown outcome; the client registers again and goes on with
//! the next timestamp (timestamps keep growing across a client's sessions, so the checker's
//! per-client order holds across them).

use super::{Ev, Input, Mode, Params, World};
use crate::checker::make_payload;
use crate::report::Latency;
use bytes::Bytes;
use paxos_core::{
    ClientId, ClientReply, ClientUpdate, NodeId, ReplyOutcome, Time, Timestamp, SESSION_ID_BASE,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// One client.
pub(super) struct Client {
    pub(super) id: u64,
    /// The server it sends to.
    pub(super) server: NodeId,
    /// Timestamp of its latest update.
    pub(super) ts: u64,
    /// Whether that update still waits for its reply.
    pub(super) outstanding: bool,
    first_sent: Time,
    update: Option<ClientUpdate>,
    /// Its session id, once registered (with sessions on).
    session: Option<u64>,
}

/// Every client of the world.
pub(super) struct Clients {
    pub(super) list: Vec<Client>,
    /// Whether a completed update is followed by the next one (not in the liveness phase, nor
    /// while a driver stopped them).
    pub(super) active: bool,
    /// Stopped by a driver: scheduled submissions are dropped too.
    pub(super) paused: bool,
    /// Clients with zero think time whose next update goes in right after the current drain.
    resubmit: Vec<u32>,
    /// Completed updates (when the run records them).
    pub(super) latencies: Vec<Latency>,
    /// Whether clients register sessions first (`Config::sessions`).
    sessions: bool,
    /// Session id to client index.
    by_session: std::collections::HashMap<u64, usize>,
}

impl Clients {
    /// The clients of `p`, each attached to its server (drawn from `rng` in a random run).
    pub(super) fn new(p: &Params, rng: &mut ChaCha8Rng) -> Clients {
        let n = p.n;
        let list = (0..p.clients)
            .map(|c| Client {
                id: c as u64,
                server: match &p.mode {
                    Mode::Driven { clients } => clients[c],
                    Mode::Bench { .. } => NodeId((c % n) as u32),
                    Mode::Random { .. } | Mode::Scripted { .. } => {
                        NodeId(rng.gen_range(0..n as u32))
                    }
                },
                ts: 0,
                outstanding: false,
                first_sent: Time::ZERO,
                update: None,
                session: None,
            })
            .collect();
        Clients {
            list,
            active: true,
            paused: false,
            resubmit: Vec::new(),
            latencies: Vec::new(),
            sessions: p.config.sessions.is_some(),
            by_session: Default::default(),
        }
    }
}

impl World {
    /// Schedules every client's first submission.
    pub(super) fn start_clients(&mut self) {
        for c in 0..self.clients.list.len() {
            let at = if self.p.mode.is_bench() {
                Time(1_000_000)
            } else {
                Time::ZERO + Duration::from_millis(self.rng.gen_range(0..200))
            };
            self.schedule(at, Ev::Submit { client: c as u32 });
        }
    }

    /// [`Ev::Submit`]: client `c` submits its next update, unless a driver stopped the clients.
    pub(super) fn scheduled_submit(&mut self, c: usize) {
        if !self.clients.paused {
            self.submit(c);
        }
    }

    /// [`Ev::Timeout`]: client `c` resends update `ts` if it still waits for its reply.
    pub(super) fn client_timeout(&mut self, client: u32, ts: u64) {
        let c = client as usize;
        let cl = &self.clients.list[c];
        if cl.outstanding && cl.update.as_ref().map(|u| u.timestamp.0) == Some(ts) {
            self.counters.client_retries += 1;
            self.send_to_server(c);
            let at = self.now + self.p.client_timeout;
            self.schedule(at, Ev::Timeout { client, ts });
        }
    }

    /// Submits the next update of every client that completed one in this instant with zero
    /// think time; false if there was none.
    pub(super) fn resubmit(&mut self) -> bool {
        if self.clients.resubmit.is_empty() {
            return false;
        }
        let mut batch = std::mem::take(&mut self.clients.resubmit);
        for &c in &batch {
            self.submit(c as usize);
        }
        batch.clear();
        self.clients.resubmit = batch;
        true
    }

    /// Client `c` submits its next update (unless one is outstanding).
    pub(super) fn submit(&mut self, c: usize) {
        if self.clients.list[c].outstanding {
            return;
        }
        let sessions = self.clients.sessions;
        let cl = &mut self.clients.list[c];
        let update = match cl.session {
            None if sessions => ClientUpdate {
                client_id: ClientId(cl.id),
                server_id: cl.server,
                timestamp: Timestamp(0),
                payload: Bytes::new(),
            },
            session => {
                cl.ts += 1;
                ClientUpdate {
                    client_id: ClientId(session.unwrap_or(cl.id)),
                    server_id: cl.server,
                    timestamp: Timestamp(cl.ts),
                    payload: make_payload(self.p.seed, cl.id, cl.ts, self.p.mode.payload_len()),
                }
            }
        };
        let ts = update.timestamp.0;
        if ts > 0 {
            self.checker.on_submitted(c, &update);
        }
        cl.update = Some(update);
        cl.outstanding = true;
        cl.first_sent = self.now;
        self.send_to_server(c);
        if !self.p.mode.is_bench() {
            let at = self.now + self.p.client_timeout;
            self.schedule(
                at,
                Ev::Timeout {
                    client: c as u32,
                    ts,
                },
            );
        }
    }

    /// Sends client `c`'s outstanding update to its server, if the server is up.
    fn send_to_server(&mut self, c: usize) {
        let i = self.clients.list[c].server.index();
        if self.nodes[i].replica.is_none() {
            return;
        }
        let Some(u) = self.clients.list[c].update.clone() else {
            return;
        };
        self.input(i, Input::Client(u));
    }

    /// Server `i` replied to a client: checked against the canonical order, then the client
    /// completes its update and, while clients are active, submits the next one.
    pub(super) fn on_reply(&mut self, i: usize, rep: ClientReply) {
        if let Err((kind, detail)) = self.checker.on_reply(i, &rep) {
            self.violation(kind, detail);
            return;
        }
        let id = rep.client_id.0;
        let c = if id >= SESSION_ID_BASE {
            match self.clients.by_session.get(&id) {
                Some(&c) => c,
                None => return, // checked above: a session of a client that moved on
            }
        } else {
            id as usize
        };
        let ts = rep.timestamp.0;
        let cl = &mut self.clients.list[c];
        let current = cl.update.as_ref().map(|u| (u.client_id.0, u.timestamp.0));
        if current != Some((id, ts)) || !cl.outstanding {
            return; // a late duplicate reply
        }
        cl.outstanding = false;
        match rep.outcome {
            ReplyOutcome::SessionOpened(sid) => {
                // Registered: the client's real update goes out at once under its session.
                cl.session = Some(sid.0);
                self.clients.by_session.insert(sid.0, c);
                self.counters.sessions_opened += 1;
                if self.clients.active {
                    self.submit(c);
                }
                return;
            }
            ReplyOutcome::SessionExpired => {
                // Outcome unknown; register again and carry on with the next timestamp.
                if let Some(old) = cl.session.take() {
                    self.clients.by_session.remove(&old);
                }
                self.counters.updates_expired += 1;
                // Not in the liveness phase: bounds below the client count would livelock it.
                if self.clients.active {
                    self.submit(c);
                }
                return;
            }
            // Never for an honest client's outstanding update (its later timestamps come after
            // this one's answer); the checker verifies the claim.
            ReplyOutcome::Superseded(_) => return,
            ReplyOutcome::Applied => {}
        }
        let latency = self.now - cl.first_sent;
        let submitted = cl.first_sent;
        self.counters.updates_completed += 1;
        if self.p.mode.records_latencies() {
            self.clients.latencies.push(Latency {
                client: ClientId(c as u64),
                submitted,
                latency,
            });
        }
        if self.p.verbose >= 1 && !self.p.mode.is_bench() {
            println!("{} client {c}:{ts} done via n{i} in {latency:?}", self.now);
        }
        if self.clients.active {
            if self.p.think.is_zero() {
                self.clients.resubmit.push(c as u32);
            } else {
                let at = self.now + self.p.think;
                self.schedule(at, Ev::Submit { client: c as u32 });
            }
        }
    }
}
