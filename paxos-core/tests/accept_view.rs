//! Regressions for the mislabelled Accept (issue #11): a follower that accepts a view-`v` proposal
//! and installs a higher view `v'` before its driver drains must never announce the slot as
//! accepted in `v'`.
//!
//! The node's driver handles many inputs (up to 1024) before it drains the replica, so "a Proposal
//! and a view change in one round" is the normal pattern under load. Before the fix the follower
//! stamped its buffered accepts with the view installed at drain time, and the leader of `v'`
//! counted an accept for a value the follower never accepted in `v'`: two replicas could then
//! execute different updates at one slot. Each test plays the story of one scenario from the issue
//! with real replicas and checks both the Accept itself and its effect on the leader of `v'`.

use bytes::Bytes;
use paxos_core::psb::PsbMessage;
use paxos_core::{
    encode, ClientId, ClientUpdate, Config, Destination, DurableState, Message, NodeId,
    NullStateMachine, ProposalItem, PsbConfig, PsbViewChange, Replica, Seq, SeqRange, ServerState,
    Time, Timestamp, View,
};
use std::time::Duration;

type R = Replica<NullStateMachine, PsbViewChange>;

/// One server under test with its durable state; persistence is completed by hand.
struct Server {
    r: R,
    durable: DurableState,
    out: Vec<(Destination, Message)>,
}

impl Server {
    fn new(id: u32, n: usize, separately: bool) -> Server {
        let mut c = Config::new(NodeId(id), n);
        c.leader_accepts_separately = separately;
        let psb = PsbViewChange::new(
            NodeId(id),
            n,
            PsbConfig {
                progress_timeout: Duration::from_secs(5),
                max_progress_timeout: Duration::from_secs(10),
                resend_interval: Duration::from_millis(100),
            },
        );
        let r = R::new(
            c,
            NullStateMachine,
            psb,
            DurableState::default(),
            Time::ZERO,
        )
        .unwrap();
        let mut s = Server {
            r,
            durable: DurableState::default(),
            out: vec![],
        };
        s.drain();
        s.out.clear();
        s
    }

    /// What the node's driver does after a round of inputs: write every batch, report it durable,
    /// then send what was released.
    fn drain(&mut self) {
        let mut last = None;
        while let Some(b) = self.r.poll_persist() {
            self.durable.apply(&b);
            last = Some(b.id);
        }
        if let Some(id) = last {
            self.r.handle_persisted(Time::ZERO, id);
        }
        while let Some(m) = self.r.poll_message() {
            self.out.push(m);
        }
    }

    fn take_out(&mut self) -> Vec<(Destination, Message)> {
        std::mem::take(&mut self.out)
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

fn accepts(out: &[(Destination, Message)]) -> Vec<(View, Vec<SeqRange>)> {
    out.iter()
        .filter_map(|(_, m)| match m {
            Message::Accept { view, seqs } => Some((*view, seqs.clone())),
            _ => None,
        })
        .collect()
}

fn names(ranges: &[SeqRange], seq: Seq) -> bool {
    ranges.iter().any(|r| r.start <= seq && seq <= r.end)
}

/// Makes `leader` (of `n`) the regular leader of `view` via PSB ViewChanges and empty PrepareOks
/// from `voters`, then has it propose `u` at slot 1. Returns its outgoing messages.
fn leader_proposes(leader: &mut Server, view: u64, voters: &[u32], u: ClientUpdate) {
    for &v in voters {
        leader.input(
            v,
            election(PsbMessage::ViewChange {
                attempted: View(view),
            }),
        );
    }
    leader.drain();
    for &v in voters {
        leader.input(
            v,
            Message::PrepareOk {
                view: View(view),
                local_aru: Seq(0),
                data_list: vec![],
                part: paxos_core::PrepareOkPart::WHOLE,
            },
        );
    }
    leader.drain();
    assert_eq!(leader.r.status().state, ServerState::RegLeader);
    assert_eq!(leader.r.status().last_installed, View(view));
    leader.take_out();
    leader.r.handle_client_update(Time::ZERO, u).unwrap();
    leader.drain();
    assert_eq!(leader.r.status().last_proposed, Seq(1));
}

/// The follower F (non-leader of view 1) handles the view-1 Proposal of `u` and a VcProof for
/// `higher` in one round, then drains once. Returns what F sent.
fn follower_round(
    f: &mut Server,
    v1_leader: u32,
    higher: u64,
    higher_leader: u32,
    u: &ClientUpdate,
) {
    f.input(
        v1_leader,
        election(PsbMessage::VcProof { installed: View(1) }),
    );
    f.drain();
    assert_eq!(f.r.status().state, ServerState::RegNonLeader);
    assert_eq!(f.r.status().last_installed, View(1));
    f.take_out();
    // One round: no drain between these inputs (the node handles up to 1024 before draining).
    f.input(
        v1_leader,
        Message::Proposal {
            view: View(1),
            items: vec![ProposalItem {
                seq: Seq(1),
                update: u.clone(),
            }],
        },
    );
    f.input(
        higher_leader,
        election(PsbMessage::VcProof {
            installed: View(higher),
        }),
    );
    assert_eq!(f.r.status().last_installed, View(higher));
    f.drain();
}

/// Every Accept F sent names, for each slot, the view of the proposal F holds durably there.
fn assert_accepts_match_durable_proposals(f: &Server, sent: &[(Destination, Message)]) {
    for (view, ranges) in accepts(sent) {
        for r in &ranges {
            for s in r.start.0..=r.end.0 {
                let held = f.durable.accepted.get(&Seq(s)).map(|a| a.view);
                assert_eq!(
                    held,
                    Some(view),
                    "Accept({view}) names slot {s}, whose durable proposal is of {held:?}"
                );
            }
        }
    }
}

#[test]
fn five_servers_stalled_follower_accepts_view_one_proposal_and_installs_view_three_in_one_round() {
    // N = 5, default configuration. Leader of view 1 (server 1) proposes U at slot 1; only the
    // stalled follower F (server 4) gets it. Server 3 leads view 3 with PrepareOks from 0 and 2,
    // which never saw U, and proposes U' at slot 1.
    let u = upd(10, 1);
    let u2 = upd(20, 3);
    let mut f = Server::new(4, 5, false);
    let mut v3 = Server::new(3, 5, false);
    leader_proposes(&mut v3, 3, &[0, 2], u2.clone());
    v3.take_out();

    follower_round(&mut f, 1, 3, 3, &u);
    let sent = f.take_out();
    assert_accepts_match_durable_proposals(&f, &sent);
    assert!(
        !accepts(&sent)
            .iter()
            .any(|(v, r)| *v == View(3) && names(r, Seq(1))),
        "F announced slot 1 as accepted in view 3, but it only accepted U in view 1: {sent:?}"
    );

    // The view-3 leader gets everything F sent, and server 0's genuine Accept(v3, [1]). One real
    // accept plus its own proposal is 2 of 5: U' must not be ordered.
    for (to, m) in sent {
        if matches!(to, Destination::All | Destination::Node(NodeId(3))) {
            v3.input(4, m);
        }
    }
    v3.input(
        0,
        Message::Accept {
            view: View(3),
            seqs: vec![SeqRange {
                start: Seq(1),
                end: Seq(1),
            }],
        },
    );
    v3.drain();
    assert_eq!(
        v3.r.status().local_aru,
        Seq(0),
        "the view-3 leader executed U' at slot 1 on an accept F never made; a later view formed by \
         servers 1, 2 and 4 would choose U there"
    );
}

#[test]
fn three_servers_leader_accepts_separately_view_one_leader_crashes_before_its_fsync() {
    // N = 3, leader_accepts_separately: the view-1 leader (server 1) sends its Proposal of U
    // before its own sync and crashes before the sync completes, so only F (server 2) holds U.
    // Server 0 leads view 3 with server 1's PrepareOk (which lost U) and proposes U' at slot 1.
    let u = upd(10, 1);
    let u2 = upd(20, 0);
    let mut f = Server::new(2, 3, true);
    let mut v3 = Server::new(0, 3, true);
    leader_proposes(&mut v3, 3, &[1], u2.clone());
    v3.take_out();

    follower_round(&mut f, 1, 3, 0, &u);
    let sent = f.take_out();
    assert_accepts_match_durable_proposals(&f, &sent);
    assert!(
        !accepts(&sent)
            .iter()
            .any(|(v, r)| *v == View(3) && names(r, Seq(1))),
        "F announced slot 1 as accepted in view 3, but it only accepted U in view 1: {sent:?}"
    );

    // With leader_accepts_separately the quorum is 2 accepts including the leader's own (which it
    // counts after its own sync): F's Accept must not be the second.
    for (to, m) in sent {
        if matches!(to, Destination::All | Destination::Node(NodeId(0))) {
            v3.input(2, m);
        }
    }
    v3.drain();
    assert_eq!(
        v3.r.status().local_aru,
        Seq(0),
        "the view-3 leader executed U' at slot 1 on an accept F never made; view 4 (server 1 \
         with F) would choose U there"
    );
}
