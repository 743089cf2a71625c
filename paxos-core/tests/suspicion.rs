//! A server that suspects its installed view keeps the evidence ([`Replica::last_suspicion`]):
//! the node logs it, so a leader change can be told apart as "leader silent" or "leader heard,
//! my update not ordered" (issue #13, the 1 GiB leader-change scenario).

use bytes::Bytes;
use paxos_core::psb::PsbMessage;
use paxos_core::{
    encode, ClientId, ClientUpdate, Config, Durability, DurableState, Message, NodeId,
    NullStateMachine, PsbConfig, PsbViewChange, Replica, Seq, ServerState, Time, Timestamp, View,
};
use std::time::Duration;

fn at(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn drain(r: &mut Replica<NullStateMachine, PsbViewChange>) {
    while r.poll_persist().is_some() {}
    while r.poll_message().is_some() {}
}

#[test]
fn a_follower_whose_update_is_never_ordered_records_that_the_leader_was_heard() {
    let mut c = Config::new(NodeId(0), 3);
    c.durability = Durability::None;
    let psb = PsbViewChange::new(
        NodeId(0),
        3,
        PsbConfig {
            progress_timeout: Duration::from_millis(1_000),
            max_progress_timeout: Duration::from_secs(60),
            resend_interval: Duration::from_millis(100),
        },
    );
    let mut r = Replica::new(c, NullStateMachine, psb, DurableState::default(), at(0)).unwrap();
    drain(&mut r);
    // Server 1 leads view 1: its view change, then its Prepare.
    let vc = PsbMessage::ViewChange { attempted: View(1) };
    for from in [NodeId(1), NodeId(2)] {
        r.handle_message(
            at(0),
            from,
            Message::Election(Bytes::from(encode(&vc).unwrap())),
        );
    }
    r.handle_message(
        at(1),
        NodeId(1),
        Message::Prepare {
            view: View(1),
            local_aru: Seq(0),
        },
    );
    drain(&mut r);
    assert_eq!(r.status().state, ServerState::RegNonLeader);
    assert_eq!(r.last_suspicion(), None);
    r.handle_client_update(
        at(10),
        ClientUpdate {
            client_id: ClientId(7),
            server_id: NodeId(0),
            timestamp: Timestamp(1),
            payload: Bytes::from_static(b"x"),
        },
    )
    .unwrap();
    drain(&mut r);
    // The leader keeps sending (a stale Prepare stands for any valid message) but never orders it.
    let mut ms = 20;
    while r.status().state != ServerState::LeaderElection {
        assert!(ms < 10_000, "never suspected");
        r.handle_message(
            at(ms),
            NodeId(1),
            Message::Prepare {
                view: View(1),
                local_aru: Seq(0),
            },
        );
        r.handle_tick(at(ms));
        drain(&mut r);
        ms += 50;
    }
    let s = r.last_suspicion().expect("the suspicion is kept").clone();
    assert_eq!(s.suspected, View(1));
    assert!(s.voted > View(1));
    assert_eq!(s.was, ServerState::RegNonLeader);
    assert_eq!(s.pending, 1);
    assert_eq!(s.oldest_pending_since, Some(at(10)));
    assert_eq!(s.last_view_progress, None, "nothing executed in view 1");
    let heard = s.last_heard_from_leader.expect("the leader was heard");
    assert!(
        s.at.saturating_since(heard) <= Duration::from_millis(50),
        "heard {heard:?}, suspected at {:?}",
        s.at
    );
    assert!(!s.receiving_snapshot);
}
