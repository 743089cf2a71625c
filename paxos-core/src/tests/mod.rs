//! Unit and small-cluster tests of the engine, named after the spec step they cover.
//!
//! `Net` is a minimal deterministic harness (FIFO delivery, instant or manual persistence); the
//! randomized, fault-injecting simulator is the `paxos-sim` crate. `cluster` runs small clusters
//! through the normal case and faults, `random` drives them with random faults, `handlers` feeds
//! single replicas messages by hand, and `findings` holds regressions for bugs the simulator found.

use crate::*;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// Records every applied update.
#[derive(Default, Debug, Clone)]
struct Log {
    applied: Vec<(Seq, UpdateId)>,
}

impl StateMachine for Log {
    fn apply(&mut self, seq: Seq, update: &ClientUpdate) -> Bytes {
        self.applied.push((seq, update.id()));
        Bytes::from(format!("ok{}", seq.0))
    }
    fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(&self.applied).unwrap())
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        self.applied = postcard::from_bytes(snapshot).map_err(|e| SnapshotError(e.to_string()))?;
        Ok(())
    }
}

type R = Replica<Log, PsbViewChange>;

fn psb(id: u32, n: usize) -> PsbViewChange {
    PsbViewChange::new(
        NodeId(id),
        n,
        PsbConfig {
            progress_timeout: Duration::from_millis(200),
            max_progress_timeout: Duration::from_secs(2),
            resend_interval: Duration::from_millis(20),
        },
    )
}

fn config(id: u32, n: usize, durability: Durability) -> Config {
    let mut c = Config::new(NodeId(id), n);
    c.durability = durability;
    c.record_executions = true;
    c
}

struct Net {
    now: Time,
    nodes: Vec<Option<R>>,
    durable: Vec<DurableState>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    /// Links cut: (from, to).
    cut: Vec<(usize, usize)>,
    /// Persist automatically (and report durable) after each step.
    auto_persist: bool,
    unsynced: Vec<Vec<PersistBatch>>,
    replies: Vec<Vec<ClientReply>>,
    executed: Vec<Vec<Executed>>,
    sent: Vec<(NodeId, Destination, Message)>,
    /// Messages this returns true for are lost in transit.
    lose: Option<fn(&Message) -> bool>,
    /// Snapshot jobs handed out (`snapshot_off_loop`), built at the next tick.
    jobs: Vec<(usize, SnapshotJob)>,
}

impl Net {
    fn new(n: usize, durability: Durability) -> Net {
        Net::with(n, durability, |_| {})
    }

    /// A cluster whose configurations `tune` adjusts.
    fn with(n: usize, durability: Durability, tune: impl Fn(&mut Config)) -> Net {
        let now = Time::ZERO;
        let nodes = (0..n)
            .map(|i| {
                let mut c = config(i as u32, n, durability);
                tune(&mut c);
                Some(
                    R::new(
                        c,
                        Log::default(),
                        psb(i as u32, n),
                        DurableState::default(),
                        now,
                    )
                    .unwrap(),
                )
            })
            .collect();
        let mut net = Net {
            now,
            nodes,
            durable: vec![DurableState::default(); n],
            queue: VecDeque::new(),
            cut: vec![],
            auto_persist: true,
            unsynced: vec![vec![]; n],
            replies: vec![vec![]; n],
            executed: vec![vec![]; n],
            sent: vec![],
            lose: None,
            jobs: vec![],
        };
        net.drain_all();
        net
    }

    fn node(&mut self, i: usize) -> &mut R {
        self.nodes[i].as_mut().unwrap()
    }

    fn drain(&mut self, i: usize) {
        let Some(r) = self.nodes[i].as_mut() else {
            return;
        };
        let me = r.id();
        while let Some(b) = r.poll_persist() {
            self.unsynced[i].push(b);
        }
        if self.auto_persist {
            if let Some(last) = self.unsynced[i].last().map(|b| b.id) {
                for b in self.unsynced[i].drain(..) {
                    self.durable[i].apply(&b);
                }
                r.handle_persisted(self.now, last);
            }
        }
        while let Some((to, m)) = r.poll_message() {
            self.sent.push((me, to, m.clone()));
            let n = self.durable.len();
            match to {
                Destination::All => {
                    for j in 0..n {
                        if j != i {
                            self.queue.push_back((me, NodeId(j as u32), m.clone()));
                        }
                    }
                }
                Destination::Node(j) => self.queue.push_back((me, j, m)),
            }
        }
        while let Some(rep) = r.poll_client_reply() {
            self.replies[i].push(rep);
        }
        while let Some(e) = r.poll_executed() {
            self.executed[i].push(e);
        }
        while let Some(job) = r.poll_snapshot_job() {
            self.jobs.push((i, job));
        }
    }

    fn drain_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.drain(i);
        }
    }

    /// Delivers queued messages until the network is quiet (bounded).
    fn deliver(&mut self) {
        for _ in 0..100_000 {
            let Some((from, to, m)) = self.queue.pop_front() else {
                return;
            };
            let (f, t) = (from.index(), to.index());
            if self.cut.contains(&(f, t))
                || self.nodes[t].is_none()
                || self.lose.is_some_and(|lose| lose(&m))
            {
                continue;
            }
            let now = self.now;
            self.node(t).handle_message(now, from, m);
            self.drain(t);
        }
        panic!("network never went quiet");
    }

    /// Advances time by `ms` in 5 ms ticks, delivering everything between ticks.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 5 {
            self.now = self.now + Duration::from_millis(5);
            for (i, job) in std::mem::take(&mut self.jobs) {
                let snap = job.build();
                let now = self.now;
                if let Some(r) = self.nodes[i].as_mut() {
                    r.handle_snapshot_built(now, snap);
                    self.drain(i);
                }
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].is_some() {
                    let now = self.now;
                    self.node(i).handle_tick(now);
                    self.drain(i);
                }
            }
            self.deliver();
        }
    }

    fn submit(&mut self, server: usize, client: u64, ts: u64) {
        let u = ClientUpdate {
            client_id: ClientId(client),
            server_id: NodeId(server as u32),
            timestamp: Timestamp(ts),
            payload: Bytes::from(vec![client as u8; 16]),
        };
        let now = self.now;
        self.node(server).handle_client_update(now, u).unwrap();
        self.drain(server);
    }

    fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .flatten()
            .find_map(|r| (r.status().state == ServerState::RegLeader).then(|| r.id().index()))
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.unsynced[i].clear();
    }

    fn restart(&mut self, i: usize, durability: Durability) {
        let n = self.nodes.len();
        self.durable[i].incarnation += 1;
        let r = R::new(
            config(i as u32, n, durability),
            Log::default(),
            psb(i as u32, n),
            self.durable[i].clone(),
            self.now,
        )
        .unwrap();
        self.nodes[i] = Some(r);
        self.drain(i);
    }

    /// All live replicas executed the same sequence (prefix-consistent).
    fn assert_agreement(&self) {
        let logs: Vec<&Vec<(Seq, UpdateId)>> = self
            .nodes
            .iter()
            .flatten()
            .map(|r| &r.state_machine().applied)
            .collect();
        for a in &logs {
            for b in &logs {
                let k = a.len().min(b.len());
                assert_eq!(a[..k], b[..k], "replicas diverge");
            }
        }
    }
}

fn single(id: u32, n: usize) -> R {
    R::new(
        config(id, n, Durability::None),
        Log::default(),
        psb(id, n),
        DurableState::default(),
        Time::ZERO,
    )
    .unwrap()
}

fn outbox(r: &mut R) -> Vec<(Destination, Message)> {
    std::iter::from_fn(|| r.poll_message()).collect()
}

fn upd(client: u64, server: u32, ts: u64) -> ClientUpdate {
    ClientUpdate {
        client_id: ClientId(client),
        server_id: NodeId(server),
        timestamp: Timestamp(ts),
        payload: Bytes::from(vec![client as u8, ts as u8]),
    }
}

fn psb_msg(m: psb::PsbMessage) -> Message {
    Message::Election(Bytes::from(crate::codec::encode(&m).unwrap()))
}

mod cluster;
mod findings;
mod handlers;
mod random;
mod sessions;
mod transfer;
