//! The single rule an `ElectionAction::Install` follows (see its rustdoc): join a view another
//! server leads (a rejoin when it is the installed view, after a restart), prepare one this server
//! leads, and ignore, counting it, anything stale, already running, already being prepared or led
//! here before a restart.

use bytes::Bytes;
use paxos_core::{
    CodecError, Config, Destination, DurableState, ElectionAction, ElectionContext, LeaderElection,
    NodeId, NullStateMachine, Replica, ServerState, Time, View, ViewRecord,
};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// A strategy that hands the core whatever actions the test queues.
struct Scripted(Rc<RefCell<VecDeque<ElectionAction>>>);

impl LeaderElection for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
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
    fn poll_action(&mut self) -> Option<ElectionAction> {
        self.0.borrow_mut().pop_front()
    }
    fn poll_message(&mut self) -> Option<(Destination, Bytes)> {
        None
    }
    fn leader(&self, _ctx: &ElectionContext) -> Option<NodeId> {
        None
    }
}

struct Server {
    r: Replica<NullStateMachine, Scripted>,
    actions: Rc<RefCell<VecDeque<ElectionAction>>>,
}

impl Server {
    /// Server 0 of 3, recovering the given view record.
    fn start(attempted: u64, installed: u64) -> Server {
        let actions = Rc::new(RefCell::new(VecDeque::new()));
        let durable = DurableState {
            view: ViewRecord {
                last_attempted: View(attempted),
                last_installed: View(installed),
            },
            ..DurableState::default()
        };
        let r = Replica::new(
            Config::new(NodeId(0), 3),
            NullStateMachine,
            Scripted(actions.clone()),
            durable,
            Time::ZERO,
        )
        .expect("starts");
        Server { r, actions }
    }

    /// Hands the core one action and returns (role, last installed view, ignored so far).
    fn act(&mut self, a: ElectionAction) -> (ServerState, View, u64) {
        self.actions.borrow_mut().push_back(a);
        self.r.handle_tick(Time::ZERO);
        let s = self.r.status();
        (
            s.state,
            s.last_installed,
            self.r.metrics().election_actions_ignored,
        )
    }
}

use ElectionAction::{Install, Suspect};
use ServerState::{LeaderElection as Electing, RegNonLeader as NonLeader};

#[test]
fn install_joins_prepares_or_ignores_by_one_rule() {
    let mut s = Server::start(0, 0);
    // View 1 is led by server 1: join it.
    assert_eq!(s.act(Install(View(1))), (NonLeader, View(1), 0));
    // Already running here, or stale: ignored and counted.
    assert_eq!(s.act(Install(View(1))), (NonLeader, View(1), 1));
    assert_eq!(s.act(Install(View(0))), (NonLeader, View(1), 2));
    // A suspicion of the installed view itself changes nothing either.
    assert_eq!(s.act(Suspect(View(1))), (NonLeader, View(1), 3));
    // View 3 is led by this server: attempt it and prepare (no majority yet).
    assert_eq!(s.act(Install(View(3))), (Electing, View(3), 3));
    // Asking again while preparing it is idempotent.
    assert_eq!(s.act(Install(View(3))), (Electing, View(3), 4));
}

#[test]
fn restarted_follower_rejoins_its_installed_view() {
    // Server 0 installed view 1 (led by server 1) before a restart: it starts electing, and an
    // Install of that same view rejoins it (its promise is durable).
    let mut s = Server::start(1, 1);
    assert_eq!(s.r.status().state, Electing);
    assert_eq!(s.act(Install(View(1))), (NonLeader, View(1), 0));
}

#[test]
fn restarted_leader_never_reuses_the_view_it_led() {
    // Server 0 led view 3 before a restart: its leader state is gone, so Install(3) is ignored
    // and only a higher view of its own (6) is prepared.
    let mut s = Server::start(3, 3);
    assert_eq!(s.act(Install(View(3))), (Electing, View(3), 1));
    assert_eq!(s.act(Install(View(6))), (Electing, View(6), 1));
}
