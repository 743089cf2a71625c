//! An update older than the latest one its client id executed is answered `Superseded`, never
//! dropped in silence: a party that advanced a victim's id (a timestamp of u64::MAX) left the
//! victim's every later update unanswered (issue #16).

use bytes::Bytes;
use paxos_core::{
    ClientId, ClientUpdate, Config, Durability, DurableState, NodeId, NullStateMachine, PsbConfig,
    PsbViewChange, Replica, ReplyOutcome, ServerState, Time, Timestamp,
};

fn upd(ts: u64) -> ClientUpdate {
    ClientUpdate {
        client_id: ClientId(5),
        server_id: NodeId(0),
        timestamp: Timestamp(ts),
        payload: Bytes::from_static(b"x"),
    }
}

#[test]
fn an_update_older_than_the_executed_one_is_answered_superseded() {
    let mut c = Config::new(NodeId(0), 1);
    c.durability = Durability::None;
    let psb = PsbViewChange::new(NodeId(0), 1, PsbConfig::default());
    let mut r = Replica::new(c, NullStateMachine, psb, DurableState::default(), Time(0)).unwrap();
    let mut ms = 0;
    while r.status().state != ServerState::RegLeader {
        assert!(ms < 10_000, "a lone server leads");
        ms += 10;
        r.handle_tick(Time::from_millis(ms));
        while r.poll_message().is_some() {}
    }
    let mut replies = vec![];
    for ts in [u64::MAX, 3] {
        r.handle_client_update(Time::from_millis(ms), upd(ts))
            .unwrap();
        for _ in 0..10 {
            ms += 10;
            r.handle_tick(Time::from_millis(ms));
            while r.poll_message().is_some() {}
            replies.extend(std::iter::from_fn(|| r.poll_client_reply()));
        }
    }
    let got: Vec<_> = replies.iter().map(|x| (x.timestamp.0, x.outcome)).collect();
    assert_eq!(
        got,
        vec![
            (u64::MAX, ReplyOutcome::Applied),
            (3, ReplyOutcome::Superseded(Timestamp(u64::MAX)))
        ]
    );
}
