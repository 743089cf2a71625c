//! A leader whose floor wait expires asks its election strategy; the core itself takes no
//! leadership decision (issue #11, item 8a; docs/architecture.md, deviation 15).
//!
//! The floor: a PrepareOk sender reported slots ordered up to its aru, so the new leader must not
//! propose at or below it until it learned them by reconciliation. If nobody answers (the sender
//! crashed right after its PrepareOk), the view cannot order anything.

use bytes::Bytes;
use paxos_core::psb::PsbMessage;
use paxos_core::{
    encode, ClientId, ClientUpdate, Config, Destination, Durability, DurableState, Message, NodeId,
    NullStateMachine, PsbConfig, PsbViewChange, Replica, Seq, ServerState, Time, Timestamp, View,
};
use std::time::Duration;

fn at(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn drain(r: &mut Replica<NullStateMachine, PsbViewChange>) -> Vec<(Destination, Message)> {
    while r.poll_persist().is_some() {}
    std::iter::from_fn(|| r.poll_message()).collect()
}

#[test]
fn psb_leader_with_an_unreachable_floor_suspects_its_view_instead_of_preparing_its_own() {
    let mut c = Config::new(NodeId(1), 3);
    c.durability = Durability::None;
    let psb = PsbViewChange::new(
        NodeId(1),
        3,
        PsbConfig {
            // Far beyond the floor wait (8 x recon_timeout = 1.6 s): only the floor wait can act.
            progress_timeout: Duration::from_secs(30),
            max_progress_timeout: Duration::from_secs(60),
            resend_interval: Duration::from_millis(100),
        },
    );
    let mut r = Replica::new(c, NullStateMachine, psb, DurableState::default(), at(0)).unwrap();
    drain(&mut r);
    let vc = PsbMessage::ViewChange { attempted: View(1) };
    r.handle_message(
        at(0),
        NodeId(0),
        Message::Election(Bytes::from(encode(&vc).unwrap())),
    );
    // Server 0 promises view 1 and reports slots 1..=5 ordered, then is never heard from again.
    r.handle_message(
        at(0),
        NodeId(0),
        Message::PrepareOk {
            view: View(1),
            local_aru: Seq(5),
            data_list: vec![],
            part: paxos_core::PrepareOkPart::WHOLE,
        },
    );
    assert_eq!(r.status().state, ServerState::RegLeader);
    r.handle_client_update(
        at(0),
        ClientUpdate {
            client_id: ClientId(7),
            server_id: NodeId(1),
            timestamp: Timestamp(1),
            payload: Bytes::from_static(b"x"),
        },
    )
    .unwrap();
    drain(&mut r);
    assert_eq!(
        r.status().last_proposed,
        Seq(0),
        "nothing proposed below the floor"
    );

    let mut sent = vec![];
    for ms in (10..=2_500).step_by(10) {
        r.handle_tick(at(ms));
        sent.extend(drain(&mut r));
    }
    assert_eq!(r.metrics().floor_wait_stalls, 1);
    let status = r.status();
    assert_eq!(status.state, ServerState::LeaderElection);
    assert_eq!(
        status.last_attempted,
        View(2),
        "PSB suspects: it votes for the next view"
    );
    assert!(
        !sent
            .iter()
            .any(|(_, m)| matches!(m, Message::Prepare { view, .. } if *view > View(1))),
        "the core prepared a higher view on its own: {sent:?}"
    );
}
