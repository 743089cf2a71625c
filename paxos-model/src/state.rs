//! The model's state: three real replicas with their disks, the network, and the ghost record
//! the properties are checked on.

use crate::election::{CheckerElection, RecordingMachine};
use paxos_core::{
    ClientUpdate, DataItem, DurableState, Message, NodeId, PersistBatch, Replica, Seq, SeqRange,
    ServerState, Time, UpdateId, View, NOOP_CLIENT,
};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};

/// The replica type the model runs: the real core with the checker's election and a recording
/// state machine.
pub type ModelReplica = Replica<RecordingMachine, CheckerElection>;

/// One server: its replica, what its disk holds, and what it wrote but has not synced.
#[derive(Clone)]
pub struct Node {
    /// The real sans-IO replica.
    pub replica: ModelReplica,
    /// Every batch made durable so far, folded (what a restart recovers from).
    pub durable: DurableState,
    /// Batches drained and written but not yet synced: a crash loses them.
    pub unsynced: Vec<PersistBatch>,
    /// The server's own clock. Left out of the hash: the replica hashes its times relative to it.
    pub clock: Time,
}

impl Hash for Node {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.replica.hash(h);
        self.durable.hash(h);
        self.unsynced.hash(h);
    }
}

/// A message in flight from one server to another (a broadcast is one packet per receiver).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Packet {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The message.
    pub message: Message,
}

impl Packet {
    /// A digest used to keep the network in a canonical order.
    pub(crate) fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{} {}",
            self.from,
            self.to,
            MessageDisplay(&self.message)
        )
    }
}

/// A short rendering of a message for traces.
pub struct MessageDisplay<'a>(pub &'a Message);

fn upd(u: &ClientUpdate) -> String {
    if u.client_id == NOOP_CLIENT {
        "noop".to_string()
    } else {
        format!("c{}/{}", u.client_id.0, u.timestamp.0)
    }
}

fn ranges(rs: &[SeqRange]) -> String {
    rs.iter()
        .map(|r| {
            if r.start == r.end {
                format!("{}", r.start)
            } else {
                format!("{}..{}", r.start, r.end)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for MessageDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Message::ClientUpdate(u) => write!(f, "ClientUpdate({})", upd(u)),
            Message::Prepare { view, local_aru } => write!(f, "Prepare({view}, aru {local_aru})"),
            Message::PrepareOk {
                view,
                local_aru,
                data_list,
                part,
            } => {
                let items: Vec<String> = data_list
                    .iter()
                    .map(|d| match d {
                        DataItem::Proposal(p) => format!("{}={}@{}", p.seq, upd(&p.update), p.view),
                        DataItem::Ordered(o) => format!("{}={} ordered", o.seq, upd(&o.update)),
                    })
                    .collect();
                let through = part.through.map_or("end".to_string(), |t| t.to_string());
                write!(
                    f,
                    "PrepareOk({view}, aru {local_aru}, [{}], {}..{through})",
                    items.join(", "),
                    part.after
                )
            }
            Message::Proposal { view, items } => {
                let items: Vec<String> = items
                    .iter()
                    .map(|i| format!("{}={}", i.seq, upd(&i.update)))
                    .collect();
                write!(f, "Proposal({view}, [{}])", items.join(", "))
            }
            Message::Accept { view, seqs } => write!(f, "Accept({view}, [{}])", ranges(seqs)),
            Message::Alive {
                local_aru,
                last_installed,
            } => write!(f, "Alive(aru {local_aru}, {last_installed})"),
            Message::ReconRequest { from, to } => write!(f, "ReconRequest({from}..{to})"),
            Message::ReconReply { updates, complete } => {
                let items: Vec<String> = updates
                    .iter()
                    .map(|o| format!("{}={}", o.seq, upd(&o.update)))
                    .collect();
                write!(f, "ReconReply([{}], complete {complete})", items.join(", "))
            }
            Message::SnapshotChunk {
                seq,
                offset,
                data,
                total_len,
                ..
            } => write!(
                f,
                "SnapshotChunk({seq}, {offset}+{} of {total_len})",
                data.len()
            ),
            Message::SnapshotPull { seq, offset, .. } => {
                write!(f, "SnapshotPull({seq}, {offset})")
            }
            Message::Election(_) => write!(f, "Election"),
        }
    }
}

/// What the checker remembers about everything that happened, for the properties.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct Ghost {
    /// Every value proposed for a (view, slot), from the Proposals that left their leader.
    pub proposals: BTreeMap<(View, Seq), BTreeSet<UpdateId>>,
    /// Every accept sent for a (view, slot), one bit per server: Accepts, and a leader's own
    /// Proposal when the leader does not accept separately.
    pub accepts: BTreeMap<(View, Seq), u64>,
    /// Every execution any replica reported at any time (restarts included), per slot.
    pub executed: BTreeMap<Seq, BTreeSet<UpdateId>>,
    /// Every update a client was answered for.
    pub replies: BTreeSet<UpdateId>,
    /// Indices (into the configuration's updates) of the updates clients have submitted.
    pub submitted: BTreeSet<usize>,
    /// Crashes so far.
    pub crashes: u8,
    /// Duplicated deliveries so far.
    pub duplicates: u8,
}

impl Ghost {
    /// Records a message that left server `from`.
    pub(crate) fn record_sent(
        &mut self,
        from: NodeId,
        m: &Message,
        leader_accepts_separately: bool,
    ) {
        let bit = 1u64 << from.index();
        match m {
            Message::Proposal { view, items } => {
                for i in items {
                    self.proposals
                        .entry((*view, i.seq))
                        .or_default()
                        .insert(i.update.id());
                    if !leader_accepts_separately {
                        *self.accepts.entry((*view, i.seq)).or_default() |= bit;
                    }
                }
            }
            Message::Accept { view, seqs } => {
                for s in seqs.iter().flat_map(|r| r.iter()) {
                    *self.accepts.entry((*view, s)).or_default() |= bit;
                }
            }
            _ => {}
        }
    }

    /// The values chosen at each slot: a value is chosen in view v when a majority of servers sent
    /// an accept for (v, slot) and the leader of v proposed it there.
    pub fn chosen(&self, majority: usize) -> BTreeMap<Seq, BTreeSet<UpdateId>> {
        let mut out: BTreeMap<Seq, BTreeSet<UpdateId>> = BTreeMap::new();
        for (&(view, seq), &set) in &self.accepts {
            if set.count_ones() as usize >= majority {
                if let Some(values) = self.proposals.get(&(view, seq)) {
                    out.entry(seq).or_default().extend(values.iter().copied());
                }
            }
        }
        out
    }
}

/// The whole model state.
#[derive(Clone)]
pub struct ModelState {
    /// The servers, by id.
    pub nodes: Vec<Node>,
    /// Messages in flight, in a canonical order (by digest), without duplicates.
    pub network: Vec<Packet>,
    /// The ghost record.
    pub ghost: Ghost,
    /// The digest of everything above, set by [`ModelState::seal`] after every transition.
    pub(crate) fp: u64,
}

impl ModelState {
    /// Adds a packet unless an identical one is already in flight.
    pub(crate) fn send(&mut self, p: Packet) {
        let d = p.digest();
        match self.network.binary_search_by_key(&d, Packet::digest) {
            Ok(i) if self.network[i] == p => {}
            Ok(i) | Err(i) => self.network.insert(i, p),
        }
    }

    /// Computes the state's digest after a change.
    pub(crate) fn seal(&mut self) {
        let mut h = DefaultHasher::new();
        self.nodes.hash(&mut h);
        self.network.hash(&mut h);
        self.ghost.hash(&mut h);
        self.fp = h.finish();
    }

    /// The state's 64-bit digest (what the checker deduplicates on): the replicas' protocol state
    /// ([`paxos_core::Replica::fingerprint`]'s hash), their disks, the network and the ghost.
    pub fn digest(&self) -> u64 {
        self.fp
    }
}

impl Hash for ModelState {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.fp.hash(h);
    }
}

impl PartialEq for ModelState {
    fn eq(&self, other: &Self) -> bool {
        self.fp == other.fp
    }
}

impl fmt::Debug for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for n in &self.nodes {
            let s = n.replica.status();
            let role = match s.state {
                ServerState::LeaderElection => "election",
                ServerState::RegLeader => "leader",
                ServerState::RegNonLeader => "follower",
            };
            let accepted: Vec<String> = n
                .durable
                .accepted
                .values()
                .map(|a| format!("{}={}@{}", a.seq, upd(&a.update), a.view))
                .collect();
            let applied: Vec<String> = n
                .replica
                .state_machine()
                .applied
                .iter()
                .map(|(seq, id)| format!("{seq}=c{}/{}", id.client.0, id.timestamp.0))
                .collect();
            writeln!(
                f,
                "  {}: {role} attempted {} installed {} aru {} proposed {} | disk {}/{} accepted [{}] \
                 ordered {} | unsynced batches {} | applied [{}]",
                s.id,
                s.last_attempted,
                s.last_installed,
                s.local_aru,
                s.last_proposed,
                n.durable.view.last_attempted,
                n.durable.view.last_installed,
                accepted.join(", "),
                n.durable.ordered.len(),
                n.unsynced.len(),
                applied.join(", ")
            )?;
        }
        writeln!(f, "  network: {:?}", self.network)?;
        let id = |u: &UpdateId| {
            if u.client == NOOP_CLIENT {
                "noop".to_string()
            } else {
                format!("c{}/{}", u.client.0, u.timestamp.0)
            }
        };
        let ids = |set: &BTreeSet<UpdateId>| set.iter().map(id).collect::<Vec<_>>().join("|");
        let proposals: Vec<String> = self
            .ghost
            .proposals
            .iter()
            .map(|((v, seq), set)| format!("({v},{seq})={}", ids(set)))
            .collect();
        let accepts: Vec<String> = self
            .ghost
            .accepts
            .iter()
            .map(|((v, seq), bits)| {
                let who: Vec<String> = (0..64)
                    .filter(|i| bits >> i & 1 == 1)
                    .map(|i| format!("n{i}"))
                    .collect();
                format!("({v},{seq})={{{}}}", who.join(","))
            })
            .collect();
        let executed: Vec<String> = self
            .ghost
            .executed
            .iter()
            .map(|(seq, set)| format!("{seq}={}", ids(set)))
            .collect();
        write!(
            f,
            "  ghost: proposals [{}], accepts [{}], executed [{}], crashes {}, duplicates {}",
            proposals.join(", "),
            accepts.join(", "),
            executed.join(", "),
            self.ghost.crashes,
            self.ghost.duplicates
        )
    }
}
