//! A small in-memory cluster of paxos-core replicas for tests, examples and quick experiments.
//!
//! Not the simulator: no loss, duplication or reordering, and persistence is instant. Messages are
//! delivered in per-link FIFO order after a seeded latency; every server is ticked on a fixed
//! period with a seeded phase offset; each client server runs one closed-loop client. It implements [`ClusterDriver`], so the
//! experiment loop runs on it unchanged.

use crate::experiment::ClusterDriver;
use crate::metrics::Sample;
use crate::scenario::{Action, Scenario};
use crate::{build, ElectionConfig, LeaderElection, Strategy};
use bytes::Bytes;
use paxos_core::{
    ClientId, ClientUpdate, Config, Destination, Durability, DurableState, Message, NodeId,
    NullStateMachine, Replica, ServerState, Time, Timestamp, View,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The replica type a [`MemCluster`] runs.
pub type MemReplica = Replica<NullStateMachine, Box<dyn LeaderElection + Send>>;

/// Knobs of a [`MemCluster`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemConfig {
    /// Period of `handle_tick` on every server.
    pub tick: Duration,
    /// Minimum one-way latency.
    pub latency: Duration,
    /// Extra latency drawn uniformly from `[0, jitter]` per message (FIFO per link is kept).
    pub jitter: Duration,
    /// Seed of the latency draws.
    pub seed: u64,
    /// Interval at which a client re-submits an unanswered update.
    pub client_retry: Duration,
}

impl Default for MemConfig {
    fn default() -> Self {
        MemConfig {
            tick: Duration::from_millis(5),
            latency: Duration::from_micros(500),
            jitter: Duration::from_millis(1),
            seed: 1,
            client_retry: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Client {
    server: NodeId,
    next: u64,
    outstanding: Option<(u64, Time)>,
}

/// An in-memory cluster.
pub struct MemCluster {
    now: Time,
    /// Per server: its next tick (servers tick with seeded phase offsets).
    next_tick: Vec<Time>,
    n: usize,
    strategy: Strategy,
    election: ElectionConfig,
    config: MemConfig,
    nodes: Vec<Option<MemReplica>>,
    durable: Vec<DurableState>,
    /// In-flight messages by (delivery time, sequence).
    queue: BTreeMap<(Time, u64), (NodeId, NodeId, Message)>,
    seq: u64,
    /// Latest delivery time per link, to keep links FIFO.
    link_clock: Vec<Time>,
    cut: BTreeSet<(usize, usize)>,
    clients: Vec<Client>,
    rng: u64,
    executed: u64,
    completed: u64,
}

impl std::fmt::Debug for MemCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemCluster")
            .field("now", &self.now)
            .field("n", &self.n)
            .field("strategy", &self.strategy)
            .field("executed", &self.executed)
            .finish()
    }
}

impl MemCluster {
    /// `servers` replicas running `strategy`, clients at `clients`, at time zero.
    pub fn new(
        servers: usize,
        strategy: Strategy,
        election: ElectionConfig,
        clients: &[NodeId],
        config: MemConfig,
    ) -> MemCluster {
        let mut c = MemCluster {
            now: Time::ZERO,
            next_tick: vec![Time::ZERO; servers],
            n: servers,
            strategy,
            election,
            config,
            nodes: (0..servers).map(|_| None).collect(),
            durable: vec![DurableState::default(); servers],
            queue: BTreeMap::new(),
            seq: 0,
            link_clock: vec![Time::ZERO; servers * servers],
            cut: BTreeSet::new(),
            clients: clients
                .iter()
                .map(|s| Client {
                    server: *s,
                    next: 1,
                    outstanding: None,
                })
                .collect(),
            rng: config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            executed: 0,
            completed: 0,
        };
        let tick = c.config.tick.as_nanos() as u64;
        for i in 0..servers {
            c.next_tick[i] = Time(c.rand() % tick.max(1));
            c.start(i);
        }
        c
    }

    /// A cluster shaped for `scenario` (its size and client placement).
    pub fn for_scenario(
        scenario: &Scenario,
        strategy: Strategy,
        election: ElectionConfig,
        config: MemConfig,
    ) -> MemCluster {
        MemCluster::new(
            scenario.servers,
            strategy,
            election,
            &scenario.clients,
            config,
        )
    }

    fn start(&mut self, i: usize) {
        // The storage layer increments and persists the incarnation at every start.
        self.durable[i].incarnation += 1;
        let mut cfg = Config::new(NodeId(i as u32), self.n);
        cfg.durability = Durability::Sync;
        let e = build(self.strategy, NodeId(i as u32), self.n, &self.election);
        let r = Replica::new(cfg, NullStateMachine, e, self.durable[i].clone(), self.now)
            .expect("valid config");
        self.nodes[i] = Some(r);
        self.drain(i);
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn enqueue(&mut self, from: usize, to: usize, m: Message) {
        let jitter = self.config.jitter.as_nanos() as u64;
        let extra = if jitter == 0 {
            0
        } else {
            self.rand() % (jitter + 1)
        };
        let mut at = self.now + self.config.latency + Duration::from_nanos(extra);
        let link = from * self.n + to;
        at = at.max(self.link_clock[link]);
        self.link_clock[link] = at;
        self.seq += 1;
        self.queue
            .insert((at, self.seq), (NodeId(from as u32), NodeId(to as u32), m));
    }

    fn drain(&mut self, i: usize) {
        let Some(r) = self.nodes[i].as_mut() else {
            return;
        };
        let mut last = None;
        while let Some(b) = r.poll_persist() {
            last = Some(b.id);
            self.durable[i].apply(&b);
        }
        if let Some(id) = last {
            r.handle_persisted(self.now, id);
        }
        let mut out = vec![];
        while let Some(m) = r.poll_message() {
            out.push(m);
        }
        let mut replies = vec![];
        while let Some(rep) = r.poll_client_reply() {
            replies.push(rep);
        }
        self.executed = self.executed.max(r.election_context().local_aru.0);
        for (to, m) in out {
            match to {
                Destination::All => {
                    for j in 0..self.n {
                        if j != i {
                            self.enqueue(i, j, m.clone());
                        }
                    }
                }
                Destination::Node(j) => self.enqueue(i, j.index(), m),
            }
        }
        for rep in replies {
            for c in &mut self.clients {
                if c.server.index() == i
                    && c.outstanding.is_some_and(|(ts, _)| ts == rep.timestamp.0)
                    && ClientId(1000 + i as u64) == rep.client_id
                {
                    c.outstanding = None;
                    c.next += 1;
                    self.completed += 1;
                }
            }
        }
    }

    fn run_clients(&mut self, i: usize) {
        for k in 0..self.clients.len() {
            let c = self.clients[k];
            if c.server.index() != i {
                continue;
            }
            let due = match c.outstanding {
                None => true,
                Some((_, since)) => self.now.saturating_since(since) >= self.config.client_retry,
            };
            if !due || self.nodes[i].is_none() {
                continue;
            }
            let u = ClientUpdate {
                client_id: ClientId(1000 + i as u64),
                server_id: c.server,
                timestamp: Timestamp(c.next),
                payload: Bytes::from_static(b"update"),
            };
            self.clients[k].outstanding = Some((c.next, self.now));
            let now = self.now;
            if let Some(r) = self.nodes[i].as_mut() {
                let _ = r.handle_client_update(now, u);
            }
            self.drain(i);
        }
    }

    fn tick(&mut self, i: usize) {
        let now = self.now;
        if let Some(r) = self.nodes[i].as_mut() {
            r.handle_tick(now);
            self.drain(i);
        }
        self.run_clients(i);
    }

    /// Current simulated time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Server `i`'s replica, if it is up.
    pub fn replica(&self, i: usize) -> Option<&MemReplica> {
        self.nodes.get(i).and_then(|r| r.as_ref())
    }

    /// Client updates answered so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Highest local aru seen at any server.
    pub fn executed(&self) -> u64 {
        self.executed
    }

    /// The current leader: the server regular-leading a view a majority is regular in.
    pub fn leader(&self) -> Option<NodeId> {
        self.sample().leader_view().map(|v| v.leader(self.n))
    }

    /// Runs for `d` more simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }
}

impl ClusterDriver for MemCluster {
    fn run_until(&mut self, t: Time) {
        loop {
            let next_msg = self.queue.keys().next().map(|k| k.0);
            let (ticker, next_tick) = self
                .next_tick
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|(i, t)| (*t, *i))
                .unwrap_or((0, Time(u64::MAX)));
            let next = match next_msg {
                Some(m) if m < next_tick => m,
                _ => next_tick,
            };
            if next > t {
                break;
            }
            self.now = self.now.max(next);
            if next_msg == Some(next) && next < next_tick {
                let Some((_, (from, to, m))) = self.queue.pop_first() else {
                    break;
                };
                let (f, j) = (from.index(), to.index());
                if self.cut.contains(&(f, j)) {
                    continue;
                }
                let now = self.now;
                if let Some(r) = self.nodes[j].as_mut() {
                    r.handle_message(now, from, m);
                    self.drain(j);
                }
            } else {
                self.next_tick[ticker] = next_tick + self.config.tick;
                self.tick(ticker);
            }
        }
        self.now = self.now.max(t);
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Crash(n) => {
                if let Some(slot) = self.nodes.get_mut(n.index()) {
                    *slot = None;
                }
            }
            Action::Restart(n) => {
                if n.index() < self.n && self.nodes[n.index()].is_none() {
                    self.start(n.index());
                }
            }
            Action::Cut(a, b) => {
                self.cut.insert((a.index(), b.index()));
                self.cut.insert((b.index(), a.index()));
            }
            Action::Heal(a, b) => {
                self.cut.remove(&(a.index(), b.index()));
                self.cut.remove(&(b.index(), a.index()));
            }
            Action::HealAll => self.cut.clear(),
        }
    }

    fn sample(&self) -> Sample {
        let views: Vec<Option<View>> = self
            .nodes
            .iter()
            .map(|r| {
                r.as_ref().and_then(|r| {
                    let c = r.election_context();
                    (c.state != ServerState::LeaderElection).then_some(c.last_installed)
                })
            })
            .collect();
        Sample {
            at: self.now,
            views,
            executed: self.executed,
        }
    }
}
