//! Turning symbolic steps into concrete inputs, against the replica's status at the time.

use super::ledger::Ledger;
use super::steps::{App, Srv, Who, D, M, S, U, V};
use bytes::Bytes;
use paxos_core::psb::PsbMessage;
use paxos_core::{
    encode, AcceptedProposal, ClientId, ClientRecord, ClientUpdate, DataItem, Message, NodeId,
    OrderedUpdate, ProposalItem, Seq, SeqRange, Snapshot, Status, Timestamp, View, NOOP_CLIENT,
};

/// What a resolved step needs to know about the replica.
pub(crate) struct Ctx {
    /// Cluster size.
    pub(crate) n: usize,
    /// The replica.
    pub(crate) me: NodeId,
    /// Its status before the step.
    pub(crate) status: Status,
}

/// `len` pseudo-random bytes from `seed`.
pub(crate) fn garbage(len: u8, seed: u8) -> Bytes {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

impl Ctx {
    /// The `k`-th server other than this one (itself in a cluster of one).
    pub(crate) fn peer(&self, k: u8) -> NodeId {
        if self.n == 1 {
            return self.me;
        }
        let i = usize::from(k) % (self.n - 1);
        let i = if i >= self.me.index() { i + 1 } else { i };
        NodeId(i as u32)
    }

    /// The leader of `v` (computed without overflow for huge views).
    pub(crate) fn leader(&self, v: View) -> NodeId {
        NodeId((v.0 % self.n as u64) as u32)
    }

    /// Resolves a view.
    pub(crate) fn view(&self, v: V) -> View {
        let installed = self.status.last_installed.0;
        let n = self.n as u64;
        let me = u64::from(self.me.0);
        View(match v {
            V::VSmall(k) => u64::from(k),
            V::VHuge(k) => u64::MAX - u64::from(k),
            V::Installed => installed,
            V::Attempted => self.status.last_attempted.0,
            V::InstalledPlus(k) => installed.saturating_add(u64::from(k)),
            V::NextMine(k) => {
                // The smallest view above `installed` led by me, then `k` rounds further.
                let base = u128::from(installed / n * n) + u128::from(me);
                let base = if base > u128::from(installed) {
                    base
                } else {
                    base + u128::from(n)
                };
                let w = base + u128::from(k) * u128::from(n);
                u64::try_from(w).unwrap_or(u64::MAX)
            }
            V::NextOther(k) => {
                let mut w = installed.saturating_add(1 + u64::from(k));
                if n > 1 && w % n == me {
                    w = w.saturating_add(1);
                }
                w
            }
        })
    }

    /// Resolves a slot.
    pub(crate) fn seq(&self, s: S) -> Seq {
        let aru = self.status.local_aru.0;
        Seq(match s {
            S::SSmall(k) => u64::from(k),
            S::AruPlus(k) => aru.saturating_add(u64::from(k)),
            S::AruMinus(k) => aru.saturating_sub(u64::from(k)),
            S::SHuge(k) => u64::MAX - u64::from(k),
        })
    }

    /// Resolves an update; `sender` is what `SrvSender` names.
    pub(crate) fn update(&self, u: U, sender: NodeId) -> ClientUpdate {
        let server_id = match u.server {
            Srv::SrvMe => self.me,
            Srv::SrvSender => sender,
            Srv::SrvOther(k) => self.peer(k),
            Srv::SrvOutOfRange => NodeId(self.n as u32 + 3),
        };
        ClientUpdate {
            client_id: if u.client == 255 {
                NOOP_CLIENT
            } else {
                ClientId(u64::from(u.client))
            },
            server_id,
            timestamp: Timestamp(u64::from(u.ts)),
            payload: Bytes::from(vec![u.payload; usize::from(u.payload)]),
        }
    }

    fn sender(&self, who: Who, view: Option<View>) -> NodeId {
        match who {
            Who::Peer(k) => self.peer(k),
            Who::ViewLeader => view.map_or_else(|| self.peer(0), |v| self.leader(v)),
            Who::Me => self.me,
            Who::OutOfRange(k) => NodeId(self.n as u32 + u32::from(k)),
        }
    }

    /// Resolves a message and its sender.
    pub(crate) fn message(&self, who: Who, m: &M) -> (NodeId, Message) {
        let view = match m {
            M::Prepare { view, .. }
            | M::PrepareOk { view, .. }
            | M::Proposal { view, .. }
            | M::Accept { view, .. }
            | M::Alive { view, .. } => Some(self.view(*view)),
            M::ViewChange(v) | M::VcProof(v) => Some(self.view(*v)),
            _ => None,
        };
        let from = self.sender(who, view);
        let v = view.unwrap_or_default();
        let items = |xs: &[(S, U)]| -> Vec<(Seq, ClientUpdate)> {
            xs.iter()
                .map(|(s, u)| (self.seq(*s), self.update(*u, from)))
                .collect()
        };
        let psb = |p: PsbMessage| Message::Election(Bytes::from(encode(&p).expect("encodes")));
        let message = match m {
            M::Fwd(u) => Message::ClientUpdate(self.update(*u, from)),
            M::Prepare { aru, .. } => Message::Prepare {
                view: v,
                local_aru: self.seq(*aru),
            },
            M::PrepareOk { aru, data, .. } => Message::PrepareOk {
                view: v,
                local_aru: self.seq(*aru),
                data_list: data
                    .iter()
                    .map(|d| match *d {
                        D::DProposal(s, pv, u) => DataItem::Proposal(AcceptedProposal {
                            seq: self.seq(s),
                            view: self.view(pv),
                            update: self.update(u, from),
                        }),
                        D::DOrdered(s, u) => DataItem::Ordered(OrderedUpdate {
                            seq: self.seq(s),
                            update: self.update(u, from),
                        }),
                    })
                    .collect(),
                part: paxos_core::PrepareOkPart::WHOLE,
            },
            M::Proposal { items: xs, .. } => Message::Proposal {
                view: v,
                items: items(xs)
                    .into_iter()
                    .map(|(seq, update)| ProposalItem { seq, update })
                    .collect(),
            },
            M::Accept { ranges, .. } => Message::Accept {
                view: v,
                seqs: ranges
                    .iter()
                    .map(|(a, b)| SeqRange {
                        start: self.seq(*a),
                        end: self.seq(*b),
                    })
                    .collect(),
            },
            M::Alive { aru, .. } => Message::Alive {
                local_aru: self.seq(*aru),
                last_installed: v,
            },
            M::ReconRequest { from: lo, to: hi } => Message::ReconRequest {
                from: self.seq(*lo),
                to: self.seq(*hi),
            },
            M::ReconReply { updates, complete } => Message::ReconReply {
                updates: items(updates)
                    .into_iter()
                    .map(|(seq, update)| OrderedUpdate { seq, update })
                    .collect(),
                complete: *complete,
            },
            M::SnapshotTransfer { seq, app, clients } => {
                let app_state = match *app {
                    App::AppValid(c, h) => {
                        Ledger::encode(u64::from(c), u64::from(h).wrapping_mul(0x9e37_79b9))
                    }
                    App::AppGarbage(len, seed) => garbage(len, seed),
                };
                let clients: Vec<ClientRecord> = clients
                    .iter()
                    .map(|&(c, ts)| ClientRecord {
                        client: ClientId(u64::from(c)),
                        last_executed: Timestamp(u64::from(ts)),
                        last_result: Bytes::new(),
                        last_active: paxos_core::Time::ZERO,
                        nonce: None,
                    })
                    .collect();
                let snap = Snapshot::new(self.seq(*seq), app_state, &clients);
                Message::snapshot_chunk(&snap, 0, usize::MAX)
            }
            M::ViewChange(_) => psb(PsbMessage::ViewChange { attempted: v }),
            M::VcProof(_) => psb(PsbMessage::VcProof { installed: v }),
            M::ElectionGarbage(len, seed) => Message::Election(garbage(*len, *seed)),
        };
        (from, message)
    }
}
