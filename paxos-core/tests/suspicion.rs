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

fn drain(r: &mut R) {
    while r.poll_persist().is_some() {}
    while r.poll_message().is_some() {}
}

type R = Replica<NullStateMachine, PsbViewChange>;

/// Server 0 of 3 configured by `c`, with a 1 s progress timer, made a follower of view 1 (led
/// by server 1); `drain(replica, ms)` takes its outputs after each input.
fn follower_of_view_1(c: Config, mut drain: impl FnMut(&mut R, u64)) -> R {
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
    drain(&mut r, 0);
    // Server 1 leads view 1: the view changes, then its Prepare.
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
    drain(&mut r, 1);
    assert_eq!(r.status().state, ServerState::RegNonLeader);
    r
}

/// Client 7's first update, at server 0.
fn update() -> ClientUpdate {
    ClientUpdate {
        client_id: ClientId(7),
        server_id: NodeId(0),
        timestamp: Timestamp(1),
        payload: Bytes::from_static(b"x"),
    }
}

#[test]
fn a_follower_whose_update_is_never_ordered_records_that_the_leader_was_heard() {
    let mut c = Config::new(NodeId(0), 3);
    c.durability = Durability::None;
    let mut r = follower_of_view_1(c, |r, _| drain(r));
    assert_eq!(r.last_suspicion(), None);
    r.handle_client_update(at(10), update()).unwrap();
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

/// Drives a follower of view 1 whose pending update's write is stuck for 5 s, then returns, with
/// the leader never ordering it. Returns when it suspected the view (ms) and when the write
/// returned.
fn stuck_follower(storage_stall: Duration) -> (u64, u64) {
    let mut c = Config::new(NodeId(0), 3);
    c.durability = Durability::Sync;
    c.storage_stall = storage_stall;
    // Hands out every batch; reports them durable unless `stuck`. Returns the last one.
    let step = |r: &mut R, ms: u64, stuck: bool| {
        let mut last = None;
        while let Some(b) = r.poll_persist() {
            last = Some(b.id);
        }
        if let (Some(id), false) = (last, stuck) {
            r.handle_persisted(at(ms), id);
        }
        while r.poll_message().is_some() {}
        last
    };
    let mut r = follower_of_view_1(c, |r, ms| {
        step(r, ms, false);
    });
    r.handle_client_update(at(10), update()).unwrap();
    let stuck = step(&mut r, 10, true).expect("the pending update is persisted");
    let mut ms = 20;
    let back = 5_000;
    while r.status().state != ServerState::LeaderElection {
        assert!(ms < back + 3_000, "never suspected");
        if ms == back {
            r.handle_persisted(at(ms), stuck);
        }
        r.handle_tick(at(ms));
        step(&mut r, ms, ms < back);
        ms += 10;
    }
    (ms - 10, back)
}

/// A server whose own sync write is outstanding past `Config::storage_stall` holds its progress
/// timer: no view would progress faster while its disk is the one waited for. Once the write
/// returns, the timer runs again from the start and the view is suspected as usual. Without
/// the rule (`storage_stall` zero) the same follower suspects the view while its disk stalls.
#[test]
fn a_server_waiting_on_its_own_disk_holds_its_progress_timer() {
    let (suspected, back) = stuck_follower(Duration::from_millis(250));
    assert!(
        suspected >= back + 1_000,
        "suspected at {suspected} ms; its write returned at {back} ms"
    );
    let (suspected, back) = stuck_follower(Duration::ZERO);
    assert!(
        suspected < back,
        "without the rule it suspects during the stall: {suspected} ms"
    );
}
