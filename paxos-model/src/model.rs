//! The stateright [`Model`]: configuration, actions, transitions and properties.

use crate::election::{install_payload, CheckerElection, RecordingMachine};
use crate::state::{Ghost, ModelState, Node, Packet};
#[cfg(feature = "planted-bugs")]
use paxos_core::config::PlantedBug;
use paxos_core::{
    ClientId, ClientUpdate, Config, DurableState, Message, NodeId, Replica, ServerState, Time,
    Timestamp, UpdateId, View, NOOP_CLIENT,
};
use stateright::{Model, Property};
use std::collections::BTreeSet;
use std::time::Duration;
use thiserror::Error;

/// How far a `Tick` moves a server's clock: past every timer of the core (the longest is the
/// floor wait, `8 × recon_timeout` = 1.6 s by default), so a tick fires every timer that is set.
pub const TICK: Duration = Duration::from_secs(1_000);

/// One update a client may submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateSpec {
    /// The client.
    pub client: u64,
    /// The client's local server (the one it submits to).
    pub server: u32,
    /// The client's timestamp; a client submits its updates in timestamp order, each once the
    /// previous one was answered.
    pub timestamp: u64,
}

impl UpdateSpec {
    /// The update as the core sees it (empty payload).
    pub fn update(&self) -> ClientUpdate {
        ClientUpdate {
            client_id: ClientId(self.client),
            server_id: NodeId(self.server),
            timestamp: Timestamp(self.timestamp),
            payload: bytes::Bytes::new(),
        }
    }

    /// The update's name.
    pub fn id(&self) -> UpdateId {
        UpdateId {
            client: ClientId(self.client),
            timestamp: Timestamp(self.timestamp),
        }
    }
}

/// A step of a scripted start: the checker explores from the state the script leads to.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Take this action.
    Do(Action),
    /// Deliver the first packet in flight from `from` to `to` whose message is of this kind
    /// (`Message::kind`, e.g. "prepare").
    Deliver {
        /// Sender.
        from: u32,
        /// Receiver.
        to: u32,
        /// The message kind.
        kind: &'static str,
    },
}

/// How a server's driver schedules the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `Drain` and `Persist` are actions of their own: the server may handle several inputs
    /// before it drains, and its writes sync whenever the checker says (`paxos-node`'s driver).
    Stepwise,
    /// Every input is followed, in the same action, by drains and syncs until nothing is left
    /// (the simulator's driver with an instant disk). Fewer states; such a server never crashes
    /// with unsynced writes.
    Synchronous,
}

/// The bounds and switches of one model.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// Number of servers.
    pub servers: usize,
    /// The updates clients may submit.
    pub updates: Vec<UpdateSpec>,
    /// No server attempts a view above this.
    pub max_view: u64,
    /// States where a server proposed or executed a slot above this are not explored.
    pub max_slot: u64,
    /// Crash-restarts allowed in a run (each loses the crashed server's unsynced writes).
    pub max_crashes: u8,
    /// `Config::leader_accepts_separately` on every server.
    pub leader_accepts_separately: bool,
    /// Duplication. `None`: every delivered packet stays in flight and may be delivered again
    /// (unbounded duplication; the network is the set of every packet ever sent). `Some(k)`: a
    /// delivery consumes its packet, and up to `k` deliveries in a run may keep it
    /// ([`Action::DeliverCopy`]). Loss needs no action: a packet may simply never be delivered.
    pub max_duplicates: Option<u8>,
    /// Explore `Tick` actions (timers: Alive, resends, reconciliation, floor-wait stalls).
    pub ticks: bool,
    /// A client may submit its current update again before it is answered (a retry).
    pub client_retries: bool,
    /// The checker may tell a server that does not lead a view to install it (PSB's VcProof
    /// path), besides telling a view's leader to prepare it.
    pub nonleader_install: bool,
    /// Each server's driver (missing entries: [`Driver::Stepwise`]).
    pub drivers: Vec<Driver>,
    /// A scripted prefix: exploration starts from the state it leads to.
    pub script: Vec<Step>,
    /// A planted bug switched on at every server.
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl Default for ModelConfig {
    /// Three stepwise servers, one client with one update at server 0, views up to 2, two slots,
    /// one crash, one duplicated delivery, no ticks or retries, fresh start.
    fn default() -> Self {
        ModelConfig {
            servers: 3,
            updates: vec![UpdateSpec {
                client: 1,
                server: 0,
                timestamp: 1,
            }],
            max_view: 2,
            max_slot: 2,
            max_crashes: 1,
            leader_accepts_separately: false,
            max_duplicates: Some(1),
            ticks: false,
            client_retries: false,
            nonleader_install: false,
            drivers: Vec::new(),
            script: Vec::new(),
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

/// An action of the model: one input to one replica, or one thing its driver does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A client submits update `i` of the configuration to its local server.
    Submit(usize),
    /// The election strategy at `node` asks its core to install `view`.
    Elect {
        /// The server.
        node: NodeId,
        /// The view.
        view: View,
    },
    /// A packet is delivered to its receiver (handled, not yet drained).
    Deliver(Packet),
    /// A packet is delivered and a copy stays in flight (a duplicate), within `max_duplicates`.
    DeliverCopy(Packet),
    /// The driver drains a server: persist batches are written (not synced), messages sent,
    /// replies and executions reported.
    Drain(NodeId),
    /// Every batch a server wrote becomes durable and the core is told (`handle_persisted`).
    Persist(NodeId),
    /// The server's clock jumps by [`TICK`] and `handle_tick` runs.
    Tick(NodeId),
    /// The server crashes and restarts from its durable state; unsynced writes are lost.
    Crash(NodeId),
}

/// A scripted start that cannot be played.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ScriptError {
    /// No packet of that kind between those servers is in flight.
    #[error("step {step}: no {kind} in flight from n{from} to n{to}")]
    NoPacket {
        /// Index of the step.
        step: usize,
        /// Sender.
        from: u32,
        /// Receiver.
        to: u32,
        /// Kind asked for.
        kind: &'static str,
    },
    /// The configuration is refused by the core.
    #[error("configuration: {0}")]
    Config(String),
}

/// The model of `servers` real replicas (see the crate docs).
#[derive(Clone, Debug)]
pub struct PaxosModel {
    cfg: ModelConfig,
    init: ModelState,
    initial_view: View,
}

impl PaxosModel {
    /// Builds the model and plays its script.
    pub fn new(cfg: ModelConfig) -> Result<PaxosModel, ScriptError> {
        let mut nodes = Vec::with_capacity(cfg.servers);
        for i in 0..cfg.servers {
            let id = NodeId(i as u32);
            let durable = DurableState {
                incarnation: 1,
                ..DurableState::default()
            };
            let clock = Time::ZERO + TICK;
            let replica = Replica::new(
                replica_config(&cfg, id),
                RecordingMachine::default(),
                CheckerElection::default(),
                durable.clone(),
                clock,
            )
            .map_err(|e| ScriptError::Config(e.to_string()))?;
            nodes.push(Node {
                replica,
                durable,
                unsynced: Vec::new(),
                clock,
            });
        }
        let mut model = PaxosModel {
            cfg,
            init: ModelState {
                nodes,
                network: Vec::new(),
                ghost: Ghost::default(),
                fp: 0,
            },
            initial_view: View(0),
        };
        model.init.seal();
        let mut state = model.init.clone();
        // The script runs with stepwise drivers everywhere, so that it can leave writes unsynced
        // and outputs undrained; exploration then uses the configured drivers.
        let mut scripted = model.clone();
        scripted.cfg.drivers.clear();
        for (step, s) in model.cfg.script.clone().into_iter().enumerate() {
            let action = match s {
                Step::Do(a) => a,
                Step::Deliver { from, to, kind } => state
                    .network
                    .iter()
                    .find(|p| {
                        p.from == NodeId(from) && p.to == NodeId(to) && p.message.kind() == kind
                    })
                    .cloned()
                    .map(Action::Deliver)
                    .ok_or(ScriptError::NoPacket {
                        step,
                        from,
                        to,
                        kind,
                    })?,
            };
            // A step that changes nothing is skipped: a script written for the correct core
            // also runs where a planted bug shortcuts it (a leader that skips its Prepare).
            if let Some(next) = scripted.next_state(&state, action) {
                state = next;
            }
        }
        model.initial_view = state
            .nodes
            .iter()
            .map(|n| n.replica.status().last_installed)
            .max()
            .unwrap_or(View(0));
        model.init = state;
        Ok(model)
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The state exploration starts from (after the script).
    pub fn start(&self) -> &ModelState {
        &self.init
    }

    /// The highest view installed in the start state; the "leader change" property asks for a
    /// leader of a higher one.
    pub fn initial_view(&self) -> View {
        self.initial_view
    }

    /// ⌊N/2⌋ + 1, the true majority (whatever quorum a planted bug makes the replicas use).
    pub fn majority(&self) -> usize {
        self.cfg.servers / 2 + 1
    }

    fn submit_enabled(&self, s: &ModelState, i: usize) -> bool {
        let u = self.cfg.updates[i];
        let earlier_answered = self.cfg.updates[..i]
            .iter()
            .filter(|e| e.client == u.client)
            .all(|e| s.ghost.replies.contains(&e.id()));
        let first = !s.ghost.submitted.contains(&i);
        let retry = self.cfg.client_retries && !s.ghost.replies.contains(&u.id());
        earlier_answered && (first || retry)
    }
}

/// The digest of one server (replica protocol state, disk, unsynced writes).
fn node_digest(n: &Node) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    n.hash(&mut h);
    h.finish()
}

/// The core configuration of server `id` in model `cfg`.
fn replica_config(cfg: &ModelConfig, id: NodeId) -> Config {
    let mut c = Config::new(id, cfg.servers);
    c.leader_accepts_separately = cfg.leader_accepts_separately;
    c.snapshot_interval = None;
    c.record_executions = true;
    #[cfg(feature = "planted-bugs")]
    {
        c.planted_bug = cfg.planted_bug;
    }
    c
}

impl Model for PaxosModel {
    type State = ModelState;
    type Action = Action;

    fn init_states(&self) -> Vec<ModelState> {
        vec![self.init.clone()]
    }

    fn actions(&self, s: &ModelState, actions: &mut Vec<Action>) {
        for i in 0..self.cfg.updates.len() {
            if self.submit_enabled(s, i) {
                actions.push(Action::Submit(i));
            }
        }
        for (i, n) in s.nodes.iter().enumerate() {
            let node = NodeId(i as u32);
            let st = n.replica.status();
            let above = st.last_attempted.max(st.last_installed).0;
            for v in above + 1..=self.cfg.max_view {
                if View(v).leader(self.cfg.servers) == node || self.cfg.nonleader_install {
                    actions.push(Action::Elect {
                        node,
                        view: View(v),
                    });
                }
            }
        }
        actions.extend(s.network.iter().cloned().map(Action::Deliver));
        if self
            .cfg
            .max_duplicates
            .is_some_and(|k| s.ghost.duplicates < k)
        {
            actions.extend(s.network.iter().cloned().map(Action::DeliverCopy));
        }
        for (i, n) in s.nodes.iter().enumerate() {
            let node = NodeId(i as u32);
            if self.driver(node) == Driver::Stepwise {
                actions.push(Action::Drain(node));
                if !n.unsynced.is_empty() {
                    actions.push(Action::Persist(node));
                }
            }
            if self.cfg.ticks {
                actions.push(Action::Tick(node));
            }
            if s.ghost.crashes < self.cfg.max_crashes {
                actions.push(Action::Crash(node));
            }
        }
    }

    fn next_state(&self, last: &ModelState, action: Action) -> Option<ModelState> {
        let mut s = last.clone();
        let input_at = match &action {
            Action::Submit(i) => Some(NodeId(self.cfg.updates[*i].server)),
            Action::Elect { node, .. } | Action::Tick(node) | Action::Crash(node) => Some(*node),
            // Settled inside the arm.
            Action::Deliver(_) | Action::DeliverCopy(_) => None,
            Action::Drain(_) | Action::Persist(_) => None,
        };
        match action {
            Action::Submit(i) => {
                let u = self.cfg.updates[i];
                let n = &mut s.nodes[u.server as usize];
                // A refused update (wrong server) is a configuration mistake: nothing happens.
                let _ = n.replica.handle_client_update(n.clock, u.update());
                s.ghost.submitted.insert(i);
            }
            Action::Elect { node, view } => {
                let n = &mut s.nodes[node.index()];
                let peer = NodeId(((node.index() + 1) % self.cfg.servers) as u32);
                n.replica
                    .handle_message(n.clock, peer, Message::Election(install_payload(view)));
            }
            Action::Deliver(ref p) | Action::DeliverCopy(ref p) => {
                let p = p.clone();
                match (&action, self.cfg.max_duplicates) {
                    (_, None) => {}
                    (Action::DeliverCopy(_), Some(k)) => {
                        if s.ghost.duplicates >= k {
                            return None;
                        }
                        s.ghost.duplicates += 1;
                    }
                    _ => s.network.retain(|q| *q != p),
                }
                let to = p.to;
                let before = node_digest(&s.nodes[to.index()]);
                let (network_before, ghost_before) = (s.network.len(), s.ghost.clone());
                let n = &mut s.nodes[to.index()];
                n.replica.handle_message(n.clock, p.from, p.message);
                if self.driver(to) == Driver::Synchronous {
                    self.settle(&mut s, to);
                }
                if node_digest(&s.nodes[to.index()]) == before
                    && s.network.len() == network_before
                    && s.ghost == ghost_before
                {
                    // The receiver ignored it (nothing changed, nothing sent; the network only
                    // grows by sends). Consuming it would only make a state with fewer behaviours
                    // than the one where it is still in flight: not worth exploring.
                    return None;
                }
            }
            Action::Drain(node) => self.drain(&mut s, node),
            Action::Persist(node) => {
                if !Self::persist(&mut s, node) {
                    return None;
                }
            }
            Action::Tick(node) => {
                let n = &mut s.nodes[node.index()];
                n.clock = n.clock + TICK;
                n.replica.handle_tick(n.clock);
            }
            Action::Crash(node) => {
                if s.ghost.crashes >= self.cfg.max_crashes {
                    return None;
                }
                s.ghost.crashes += 1;
                let n = &mut s.nodes[node.index()];
                n.unsynced.clear();
                n.durable.incarnation += 1;
                n.replica = Replica::new(
                    replica_config(&self.cfg, node),
                    RecordingMachine::default(),
                    CheckerElection::default(),
                    n.durable.clone(),
                    n.clock,
                )
                .ok()?;
            }
        }
        if let Some(node) = input_at {
            if self.driver(node) == Driver::Synchronous {
                self.settle(&mut s, node);
            }
        }
        s.seal();
        (s.fp != last.fp).then_some(s)
    }

    fn within_boundary(&self, s: &ModelState) -> bool {
        s.nodes.iter().all(|n| {
            let st = n.replica.status();
            st.last_proposed.0 <= self.cfg.max_slot && st.local_aru.0 <= self.cfg.max_slot
        }) && s
            .ghost
            .proposals
            .keys()
            .all(|(_, seq)| seq.0 <= self.cfg.max_slot)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("agreement", |_, s: &ModelState| {
                s.ghost.executed.values().all(|ids| ids.len() <= 1)
            }),
            Property::always("chosen value unique", |m: &PaxosModel, s: &ModelState| {
                s.ghost
                    .chosen(m.majority())
                    .values()
                    .all(|ids| ids.len() <= 1)
            }),
            Property::always("one proposal per view and slot", |_, s: &ModelState| {
                s.ghost.proposals.values().all(|ids| ids.len() <= 1)
            }),
            Property::always("validity", |m: &PaxosModel, s: &ModelState| {
                let submitted: BTreeSet<UpdateId> =
                    m.cfg.updates.iter().map(UpdateSpec::id).collect();
                let ok = |id: &UpdateId| id.client == NOOP_CLIENT || submitted.contains(id);
                s.ghost.executed.values().flatten().all(ok)
                    && s.ghost.replies.iter().all(ok)
                    && s.nodes.iter().all(|n| {
                        n.replica
                            .state_machine()
                            .applied
                            .iter()
                            .all(|(_, id)| ok(id))
                    })
            }),
            Property::always("exactly once", |_, s: &ModelState| {
                s.nodes.iter().all(|n| {
                    let applied = &n.replica.state_machine().applied;
                    let distinct: BTreeSet<&UpdateId> = applied.iter().map(|(_, id)| id).collect();
                    distinct.len() == applied.len()
                })
            }),
            Property::sometimes("value chosen", |m: &PaxosModel, s: &ModelState| {
                s.ghost
                    .chosen(m.majority())
                    .values()
                    .flatten()
                    .any(|id| id.client != NOOP_CLIENT)
            }),
            Property::sometimes("leader change", |m: &PaxosModel, s: &ModelState| {
                s.nodes.iter().any(|n| {
                    let st = n.replica.status();
                    st.state == ServerState::RegLeader && st.last_installed > m.initial_view
                })
            }),
            Property::sometimes("update executed", |_, s: &ModelState| {
                s.ghost
                    .executed
                    .values()
                    .flatten()
                    .any(|id| id.client != NOOP_CLIENT)
            }),
        ]
    }
}

impl PaxosModel {
    /// The driver of server `node`.
    pub fn driver(&self, node: NodeId) -> Driver {
        self.cfg
            .drivers
            .get(node.index())
            .copied()
            .unwrap_or(Driver::Stepwise)
    }

    /// Syncs every batch `node` wrote and tells its core; false when there was none.
    fn persist(s: &mut ModelState, node: NodeId) -> bool {
        let n = &mut s.nodes[node.index()];
        let mut last_id = None;
        for b in n.unsynced.drain(..) {
            n.durable.apply(&b);
            last_id = Some(b.id);
        }
        match last_id {
            Some(upto) => {
                n.replica.handle_persisted(n.clock, upto);
                true
            }
            None => false,
        }
    }

    /// A synchronous driver's end of round: drain and sync until nothing is left.
    fn settle(&self, s: &mut ModelState, node: NodeId) {
        loop {
            self.drain(s, node);
            if !Self::persist(s, node) {
                break;
            }
        }
    }

    /// The driver's drain: write batches (unsynced), send messages (recording them in the
    /// ghost), collect replies and executions.
    fn drain(&self, s: &mut ModelState, node: NodeId) {
        let las = self.cfg.leader_accepts_separately;
        let servers = self.cfg.servers;
        let mut out = Vec::new();
        {
            let n = &mut s.nodes[node.index()];
            while let Some(b) = n.replica.poll_persist() {
                n.unsynced.push(b);
            }
            while let Some(m) = n.replica.poll_message() {
                out.push(m);
            }
            while let Some(r) = n.replica.poll_client_reply() {
                s.ghost.replies.insert(UpdateId {
                    client: r.client_id,
                    timestamp: r.timestamp,
                });
            }
            while let Some(e) = n.replica.poll_executed() {
                s.ghost
                    .executed
                    .entry(e.seq)
                    .or_default()
                    .insert(e.update.id());
            }
        }
        for (dest, m) in out {
            s.ghost.record_sent(node, &m, las);
            let receivers: Vec<NodeId> = match dest {
                paxos_core::Destination::All => (0..servers as u32)
                    .map(NodeId)
                    .filter(|&r| r != node)
                    .collect(),
                paxos_core::Destination::Node(r) => vec![r],
            };
            for to in receivers {
                s.send(Packet {
                    from: node,
                    to,
                    message: m.clone(),
                });
            }
        }
    }
}
