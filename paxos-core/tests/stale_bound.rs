//! A new leader's own update that is bound only by a stale proposal must be proposed again once
//! that slot is ordered with another update, even when the update sat in the leader's queue when
//! it installed the view (found by paxos-sim: `--seed 5301 --nodes 5 --election highest-id
//! --schedule one --liveness component`, with skewed and jumping clocks; also Ω N = 5 seeds 1259
//! and 3350, highest-id N = 5 seed 5009). Installing the view dropped the queued update as bound
//! and recorded it in `last_enqueued`; when reconciliation ordered the stale slot with another
//! update the update left `bound_at_install`, but `last_enqueued` still said "already bound in
//! this view", so the leader refused it for the rest of the view. PSB's progress timer hid it;
//! a stable oracle leader kept the client waiting forever.

use bytes::Bytes;
use paxos_core::psb::PsbMessage;
use paxos_core::{
    encode, ClientId, ClientUpdate, Config, Durability, DurableState, Message, NodeId,
    NullStateMachine, OrderedUpdate, ProposalItem, PsbConfig, PsbViewChange, Replica, Seq,
    ServerState, Time, Timestamp, View,
};
use std::time::Duration;

type R = Replica<NullStateMachine, PsbViewChange>;

fn at(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn psb(m: PsbMessage) -> Message {
    Message::Election(Bytes::from(encode(&m).unwrap()))
}

fn upd(client: u64, server: u32) -> ClientUpdate {
    ClientUpdate {
        client_id: ClientId(client),
        server_id: NodeId(server),
        timestamp: Timestamp(1),
        payload: Bytes::from(vec![client as u8]),
    }
}

fn proposed(r: &mut R) -> Vec<ProposalItem> {
    std::iter::from_fn(|| r.poll_message())
        .filter_map(|(_, m)| match m {
            Message::Proposal { items, .. } => Some(items),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn queued_update_bound_by_a_stale_proposal_is_proposed_once_that_slot_is_ordered_otherwise() {
    let mut c = Config::new(NodeId(1), 5);
    c.durability = Durability::None;
    let election = PsbViewChange::new(
        NodeId(1),
        5,
        PsbConfig {
            progress_timeout: Duration::from_millis(200),
            max_progress_timeout: Duration::from_secs(2),
            resend_interval: Duration::from_millis(20),
        },
    );
    let mut r = R::new(
        c,
        NullStateMachine,
        election,
        DurableState::default(),
        at(0),
    )
    .unwrap();
    // Server 1 of 5 follows view 5 (led by 0) and holds its proposal of U (a client of server 1)
    // in slot 2.
    let u = upd(7, 1);
    r.handle_message(
        at(0),
        NodeId(0),
        psb(PsbMessage::VcProof { installed: View(5) }),
    );
    r.handle_message(
        at(0),
        NodeId(0),
        Message::Proposal {
            view: View(5),
            items: vec![ProposalItem {
                seq: Seq(2),
                update: u.clone(),
            }],
        },
    );
    // It suspects view 5; U's client submits while it is in leader election: U is queued.
    r.handle_tick(at(1));
    r.handle_tick(at(300));
    assert_eq!(r.status().state, ServerState::LeaderElection);
    r.handle_client_update(at(300), u.clone()).unwrap();
    // Servers 0 and 2 make it leader of view 6 (nothing above aru 2 in their PrepareOks): the
    // stale proposal binds U, so U leaves the queue.
    for from in [0, 2] {
        let vc = PsbMessage::ViewChange { attempted: View(6) };
        r.handle_message(at(300), NodeId(from), psb(vc));
    }
    for from in [0, 2] {
        r.handle_message(
            at(300),
            NodeId(from),
            Message::PrepareOk {
                view: View(6),
                local_aru: Seq(2),
                data_list: vec![],
                part: paxos_core::PrepareOkPart::WHOLE,
            },
        );
    }
    assert_eq!(r.status().state, ServerState::RegLeader);
    assert_eq!(r.status().last_installed, View(6));
    assert!(
        proposed(&mut r).iter().all(|i| i.update != u),
        "U is bound in slot 2"
    );
    // Reconciliation orders slots 1 and 2 with other updates: U is bound nowhere any more.
    let (x, w) = (upd(8, 0), upd(9, 0));
    r.handle_message(
        at(301),
        NodeId(0),
        Message::ReconReply {
            updates: vec![
                OrderedUpdate {
                    seq: Seq(1),
                    update: x,
                },
                OrderedUpdate {
                    seq: Seq(2),
                    update: w,
                },
            ],
            complete: true,
        },
    );
    assert_eq!(r.status().local_aru, Seq(2));
    // The update timer re-enqueues the leader's own pending U.
    let mut items = proposed(&mut r);
    for ms in (310..=700).step_by(10) {
        r.handle_tick(at(ms));
        items.extend(proposed(&mut r));
    }
    assert!(
        items.iter().any(|i| i.seq == Seq(3) && i.update == u),
        "U is proposed again: {items:?}"
    );
}
