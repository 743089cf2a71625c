//! Oracles on the effect stream: what leaves a replica (messages, persist batches) is checked the
//! moment it leaves, after every event, instead of waiting for a wrong execution.
//!
//! * [`ghost`]: the ghost accept record, chosen-value uniqueness [TR §5.5; Paxos P2].
//! * [`justify`]: with `Durability::Sync`, every message is justified by its sender's durable
//!   state at that instant, and durable accepts keep the durable promise [TR §4.3, §7.3; spec §9].
//!
//! The simulator calls [`Oracles::on_written`] for each batch `poll_persist` hands out,
//! [`Oracles::on_durable`] just before a batch is folded into the server's `DurableState`,
//! [`Oracles::on_send`] for each message `poll_message` releases (before fan-out, so a
//! `Destination::All` message is checked once), and the checker calls [`Oracles::on_canonical`]
//! when a slot enters the canonical order.

pub(crate) mod ghost;
mod justify;

use crate::checker::Check;
use ghost::{Ghost, Value};
use paxos_core::{
    ClientUpdate, Config, DataItem, Durability, DurableState, Message, PersistBatch, Seq,
};

/// The run's oracles; see the module docs.
pub(crate) struct Oracles {
    pub(crate) ghost: Ghost,
    n: usize,
    durability: Durability,
    /// `!leader_accepts_separately`: a leader's Proposal is its accept.
    proposal_is_accept: bool,
    /// Per server and client, the highest timestamp whose pending entry a durable batch deleted
    /// as executed (`PersistBatch::pending_done`): a forward of it needs no pending entry any more.
    done: Vec<std::collections::HashMap<paxos_core::ClientId, paxos_core::Timestamp>>,
}

impl Oracles {
    pub(crate) fn new(config: &Config) -> Oracles {
        Oracles {
            ghost: Ghost::new(config.servers),
            n: config.servers,
            durability: config.durability,
            proposal_is_accept: !config.leader_accepts_separately,
            done: vec![Default::default(); config.servers],
        }
    }

    fn sync(&self) -> bool {
        self.durability == Durability::Sync
    }

    /// `poll_persist` of `node` handed out `b` (written, not yet durable). Its accepted proposals
    /// define values (and, without `Sync`, are already counted by their server); its ordered
    /// updates must be chosen: the server ordered them in memory when it wrote them.
    pub(crate) fn on_written(&mut self, node: usize, b: &PersistBatch) -> Check {
        let count = !self.sync();
        for a in &b.accepted {
            let what = format!("n{node}'s accepted record");
            self.ghost
                .define(a.seq, a.view, Value::of(&a.update), &what)?;
            if count {
                self.ghost.accept(a.seq, a.view, node, false, true)?;
            }
        }
        for o in &b.ordered {
            self.ordered(o.seq, &o.update, node, "persisted ordered update")?;
        }
        Ok(())
    }

    /// `b` is about to be folded into `node`'s durable state `d`: its accepted proposals are
    /// durable accepts (the server counts its own accept now with `Sync`), and must respect the
    /// durable view promise.
    pub(crate) fn on_durable(&mut self, node: usize, b: &PersistBatch, d: &DurableState) -> Check {
        justify::accepts_keep_promise(node, b, d)?;
        for id in &b.pending_done {
            let ts = self.done[node].entry(id.client).or_default();
            *ts = (*ts).max(id.timestamp);
        }
        for a in &b.accepted {
            if a.seq > d.snapshot_seq() {
                let what = format!("n{node}'s durable accepted record");
                self.ghost
                    .define(a.seq, a.view, Value::of(&a.update), &what)?;
                self.ghost.accept(a.seq, a.view, node, true, true)?;
            }
        }
        Ok(())
    }

    /// `node` releases `m` (`d`: its durable state at this instant).
    pub(crate) fn on_send(&mut self, node: usize, m: &Message, d: &DurableState) -> Check {
        let sync = self.sync();
        match m {
            Message::Prepare { view, local_aru } => {
                if view.leader(self.n).index() == node {
                    self.ghost.note_prepare(*view, *local_aru);
                }
                if sync {
                    justify::prepare(node, *view, d)?;
                }
            }
            Message::PrepareOk {
                view,
                local_aru,
                data_list,
                part,
            } => {
                for item in data_list {
                    match item {
                        // A report, not a proposal: checked against the ghost, never defining.
                        DataItem::Proposal(p) if self.ghost.value(p.seq, p.view).is_some() => {
                            let what = format!("n{node}'s PrepareOk({view}) data list");
                            self.ghost
                                .define(p.seq, p.view, Value::of(&p.update), &what)?;
                        }
                        DataItem::Proposal(_) => {}
                        DataItem::Ordered(o) => {
                            self.ordered(o.seq, &o.update, node, "PrepareOk data list")?
                        }
                    }
                }
                if sync {
                    let floor = self.ghost.prepare_aru(*view).map(|a| a.max(*local_aru));
                    justify::prepare_ok(node, *view, floor, data_list, *part, d)?;
                }
            }
            Message::Proposal { view, items } => {
                if view.leader(self.n).index() != node {
                    return Ok(()); // every receiver drops it
                }
                for it in items {
                    let what = format!("n{node}'s Proposal({view})");
                    self.ghost
                        .define(it.seq, *view, Value::of(&it.update), &what)?;
                    if self.proposal_is_accept {
                        if sync {
                            justify::accepted(&self.ghost, node, *view, it.seq, "Proposal", d)?;
                        }
                        self.ghost.accept(it.seq, *view, node, false, true)?;
                    }
                }
            }
            Message::Accept { view, seqs } => {
                // Without batches (Durability::None) a leader's accept of a proposal dropped at
                // flush has no record the ghost could have seen; it cannot complete a majority.
                let strict =
                    self.durability != Durability::None || view.leader(self.n).index() != node;
                for r in seqs {
                    for s in r.iter() {
                        if sync {
                            justify::accepted(&self.ghost, node, *view, s, "Accept", d)?;
                        }
                        self.ghost.accept(s, *view, node, false, strict)?;
                    }
                }
            }
            Message::ClientUpdate(u) => {
                // An update that executed may still leave in a forward queued before: harmless.
                let done = self.done[node].get(&u.client_id);
                if sync && done.is_none_or(|&ts| ts < u.timestamp) {
                    justify::forwarded(node, u, d)?;
                }
            }
            Message::ReconReply { updates, .. } => {
                for o in updates {
                    self.ordered(o.seq, &o.update, node, "ReconReply")?;
                }
            }
            Message::Alive { .. }
            | Message::ReconRequest { .. }
            | Message::SnapshotChunk { .. }
            | Message::SnapshotPull { .. }
            | Message::Election(_) => {}
        }
        Ok(())
    }

    /// `node` claims `u` is ordered at `seq` (in a batch or a message).
    fn ordered(&self, seq: Seq, u: &ClientUpdate, node: usize, what: &str) -> Check {
        // Without batches a server's own accept is visible only through the Accept message of its
        // drain, which may leave after a message that already reports the slot ordered.
        if self.durability == Durability::None {
            return Ok(());
        }
        self.ghost
            .check_chosen(seq, Value::of(u), &format!("n{node}'s {what}"), None)
    }

    /// `node`'s execution of `u` at `seq` is the first in the run: it must be the chosen value.
    ///
    /// With `Durability::None` the executing server's own accept is presumed: a server that
    /// accepts, orders, executes and compacts a slot in one round never announces its accept
    /// (flush drops accepts of compacted slots) and writes no batch that would record it.
    pub(crate) fn on_canonical(&self, node: usize, seq: Seq, u: &ClientUpdate) -> Check {
        let presumed = (self.durability == Durability::None).then_some(node);
        self.ghost
            .check_chosen(seq, Value::of(u), &format!("n{node}'s execution"), presumed)
    }

    /// Forgets slots below `floor` (the canonical order's trim floor).
    pub(crate) fn trim(&mut self, floor: u64) {
        self.ghost.trim(floor);
    }
}

/// The mislabelled Accept of issue #11 (planted `MislabelledAccept`), crafted as in
/// `paxos-core/tests/accept_view.rs`: today's scheduling drains every server after every instant,
/// so a Proposal and a view change in one round are only produced by hand. Real replicas, with
/// every batch and message of the follower and of the view-3 leader fed through the oracles.
#[cfg(all(test, feature = "planted-bugs"))]
mod mislabelled_accept {
    use super::*;
    use crate::report::ViolationKind;
    use bytes::Bytes;
    use paxos_core::config::PlantedBug;
    use paxos_core::psb::PsbMessage;
    use paxos_core::{
        encode, ClientId, Destination, NodeId, NullStateMachine, ProposalItem, PsbConfig,
        PsbViewChange, Replica, ServerState, Time, Timestamp, View,
    };
    use std::time::Duration;

    struct Server {
        id: usize,
        r: Replica<NullStateMachine, PsbViewChange>,
        durable: DurableState,
        out: Vec<(Destination, Message)>,
    }

    fn config(id: u32, bug: Option<PlantedBug>) -> Config {
        let mut c = Config::new(NodeId(id), 5);
        c.planted_bug = bug;
        c
    }

    impl Server {
        fn new(id: u32, bug: Option<PlantedBug>) -> Server {
            let psb = PsbViewChange::new(
                NodeId(id),
                5,
                PsbConfig {
                    progress_timeout: Duration::from_secs(5),
                    max_progress_timeout: Duration::from_secs(10),
                    resend_interval: Duration::from_millis(100),
                },
            );
            let r = Replica::new(
                config(id, bug),
                NullStateMachine,
                psb,
                DurableState::default(),
                Time::ZERO,
            )
            .unwrap();
            Server {
                id: id as usize,
                r,
                durable: DurableState::default(),
                out: vec![],
            }
        }

        /// Writes, syncs and reports every batch, then releases messages, all through `o`.
        fn drain(&mut self, o: &mut Oracles) -> Check {
            let mut last = None;
            while let Some(b) = self.r.poll_persist() {
                o.on_written(self.id, &b)?;
                o.on_durable(self.id, &b, &self.durable)?;
                self.durable.apply(&b);
                last = Some(b.id);
            }
            if let Some(id) = last {
                self.r.handle_persisted(Time::ZERO, id);
            }
            while let Some((to, m)) = self.r.poll_message() {
                o.on_send(self.id, &m, &self.durable)?;
                self.out.push((to, m));
            }
            Ok(())
        }

        fn input(&mut self, from: u32, m: Message) {
            self.r.handle_message(Time::ZERO, NodeId(from), m);
        }
    }

    fn election(m: PsbMessage) -> Message {
        Message::Election(Bytes::from(encode(&m).unwrap()))
    }

    fn upd(client: u64, server: u32) -> ClientUpdate {
        ClientUpdate {
            client_id: ClientId(client),
            server_id: NodeId(server),
            timestamp: Timestamp(1),
            payload: Bytes::from(vec![client as u8; 8]),
        }
    }

    /// Plays the story; returns the first violation the oracles report in the follower's
    /// round (none before it).
    fn story(bug: Option<PlantedBug>) -> Check {
        let mut o = Oracles::new(&config(0, bug));
        // Server 3 leads view 3 (PrepareOks from 0 and 2, who never saw U) and proposes U'.
        let mut v3 = Server::new(3, bug);
        v3.drain(&mut o).unwrap();
        for v in [0, 2] {
            v3.input(v, election(PsbMessage::ViewChange { attempted: View(3) }));
        }
        v3.drain(&mut o).unwrap();
        for v in [0, 2] {
            let ok = Message::PrepareOk {
                view: View(3),
                local_aru: Seq(0),
                data_list: vec![],
                part: paxos_core::PrepareOkPart::WHOLE,
            };
            v3.input(v, ok);
        }
        v3.drain(&mut o).unwrap();
        assert_eq!(v3.r.status().state, ServerState::RegLeader);
        v3.r.handle_client_update(Time::ZERO, upd(20, 3)).unwrap();
        v3.drain(&mut o).unwrap();
        assert_eq!(v3.r.status().last_proposed, Seq(1));

        // Follower 4 installs view 1, then in one round accepts view 1's Proposal of U at slot 1
        // and installs view 3.
        let mut f = Server::new(4, bug);
        f.drain(&mut o).unwrap();
        f.input(1, election(PsbMessage::VcProof { installed: View(1) }));
        f.drain(&mut o).unwrap();
        let items = vec![ProposalItem {
            seq: Seq(1),
            update: upd(10, 1),
        }];
        f.input(
            1,
            Message::Proposal {
                view: View(1),
                items,
            },
        );
        f.input(3, election(PsbMessage::VcProof { installed: View(3) }));
        f.drain(&mut o)
    }

    #[test]
    fn the_accept_of_a_view_one_value_stamped_view_three_is_unjustified() {
        let (kind, detail) = story(Some(PlantedBug::MislabelledAccept)).unwrap_err();
        assert_eq!(kind, ViolationKind::UnjustifiedMessage, "{detail}");
        assert!(detail.contains("Accept(v3) for slot #1"), "{detail}");
        // The fixed core announces the accept in view 1, where it was made.
        story(None).unwrap();
    }
}
