//! A follower that crashes after its promise of view v is durable but before its PrepareOk(v)
//! leaves restarts in leader election with v installed and attempted. Under the oracle
//! strategies (highest-id, Ω, BLE) the leader of v stays the leader and keeps resending
//! Prepare(v), so the restarted follower must answer it (TR §5.9's retransmission); before the
//! fix it dropped it and, with one of three servers down, nothing was ordered again (found by
//! paxos-sim: `--seed 6438 --nodes 3 --election ble --schedule k`, a slow-disk episode and a
//! crash that kept the unsynced promise).

use bytes::Bytes;
use paxos_core::{
    CodecError, Config, Destination, Durability, DurableState, ElectionAction, ElectionContext,
    LeaderElection, Message, NodeId, NullStateMachine, Replica, Seq, ServerState, Time, View,
};

/// An oracle strategy that follows the leader of any view it is asked to prepare and never acts.
struct Follower;

impl LeaderElection for Follower {
    fn name(&self) -> &'static str {
        "follower"
    }
    fn handle_start(&mut self, _now: Time, _ctx: &ElectionContext) {}
    fn handle_tick(&mut self, _now: Time, _ctx: &ElectionContext) {}
    fn handle_message(
        &mut self,
        _now: Time,
        _from: NodeId,
        _payload: &[u8],
        _ctx: &ElectionContext,
    ) -> Result<(), CodecError> {
        Ok(())
    }
    fn accepts_prepare(&self, _from: NodeId, _view: View, _ctx: &ElectionContext) -> bool {
        true
    }
    fn poll_action(&mut self) -> Option<ElectionAction> {
        None
    }
    fn poll_message(&mut self) -> Option<(Destination, Bytes)> {
        None
    }
    fn leader(&self, _ctx: &ElectionContext) -> Option<NodeId> {
        Some(NodeId(1))
    }
}

type R = Replica<NullStateMachine, Follower>;

fn start(durable: DurableState) -> R {
    let mut c = Config::new(NodeId(0), 3);
    c.durability = Durability::Sync;
    R::new(c, NullStateMachine, Follower, durable, Time::ZERO).expect("starts")
}

fn prepare(v: u64) -> Message {
    Message::Prepare {
        view: View(v),
        local_aru: Seq(0),
    }
}

fn prepare_oks(out: &[(Destination, Message)]) -> usize {
    out.iter()
        .filter(|(to, m)| {
            *to == Destination::Node(NodeId(1))
                && matches!(m, Message::PrepareOk { view: View(1), .. })
        })
        .count()
}

/// Writes and reports every batch, then returns the messages released.
fn settle(r: &mut R, durable: &mut DurableState) -> Vec<(Destination, Message)> {
    while let Some(b) = r.poll_persist() {
        durable.apply(&b);
        r.handle_persisted(Time::ZERO, b.id);
    }
    std::iter::from_fn(|| r.poll_message()).collect()
}

#[test]
fn restarted_follower_answers_the_prepare_whose_promise_it_made_durable_before_crashing() {
    let mut durable = DurableState::default();
    let mut r = start(durable.clone());
    settle(&mut r, &mut durable);
    r.handle_message(Time::ZERO, NodeId(1), prepare(1));
    // The promise reaches the disk, but the crash comes before the completion is handled: the
    // PrepareOk, which waits for it, never leaves.
    while let Some(b) = r.poll_persist() {
        durable.apply(&b);
    }
    let out: Vec<_> = std::iter::from_fn(|| r.poll_message()).collect();
    assert_eq!(
        prepare_oks(&out),
        0,
        "a PrepareOk left before its promise was durable"
    );
    drop(r);

    durable.incarnation += 1;
    let mut r = start(durable.clone());
    settle(&mut r, &mut durable);
    let st = r.status();
    assert_eq!(st.state, ServerState::LeaderElection);
    assert_eq!(st.last_installed, View(1));
    // The leader of view 1 resends its Prepare; the follower answers and rejoins view 1.
    r.handle_message(Time::ZERO, NodeId(1), prepare(1));
    let out = settle(&mut r, &mut durable);
    assert_eq!(prepare_oks(&out), 1, "{out:?}");
    assert_eq!(r.status().state, ServerState::RegNonLeader);
    assert_eq!(r.status().last_installed, View(1));
}
