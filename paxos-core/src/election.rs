//! The seam between leader election and ordering (spec §15.1, DERIVED).
//!
//! An election strategy is a sans-IO struct that decides *who should lead*; the core decides
//! everything that touches the log. The strategy speaks to the core through two actions:
//! [`ElectionAction::Suspect`] (stop trusting the installed view and attempt a higher one) and
//! [`ElectionAction::Install`] (install this view now: its leader runs Prepare, the others become
//! non-leaders in it). Prepare and PrepareOk still carry the promises, so safety never depends on the
//! strategy: a strategy can only choose who *tries* to lead.
//!
//! Call order, as the core drives it: `handle_start` once, then any number of `handle_tick`,
//! `handle_message`, `handle_progress` and `handle_view_installed`, each followed by draining
//! `poll_action` and `poll_message`.

use crate::codec::CodecError;
use crate::types::{Destination, NodeId, Seq, Time, View};
use bytes::Bytes;

/// The server's role in the ordering protocol [TR Fig 2].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerState {
    /// No installed view is trusted; a view is being attempted.
    LeaderElection,
    /// Leader of the installed view.
    RegLeader,
    /// Non-leader in the installed view.
    RegNonLeader,
}

/// A read-only picture of the core that a strategy decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionContext {
    /// This server.
    pub me: NodeId,
    /// Cluster size N.
    pub servers: usize,
    /// The server's current role.
    pub state: ServerState,
    /// Last view attempted.
    pub last_attempted: View,
    /// Last view installed.
    pub last_installed: View,
    /// The highest view seen anywhere (own promises, Prepare, Proposal, Alive).
    pub max_view_seen: View,
    /// The highest view `v` whose own leader (`v.leader(servers)`) sent this server an `Alive`
    /// naming `v` as the last view it was regular in (`View(0)` until one arrives after a start).
    /// What a follower that missed `v`'s Prepare joins, by the rejoin rule
    /// ([`ElectionContext::joins_announced_view`]), when its strategy names that leader. After a
    /// restart a leader announces the view it last installed, which may be one it only prepared;
    /// joining it is still safe (a promise), and its leader will prepare a higher view.
    pub leader_announced_view: View,
    /// Local aru.
    pub local_aru: Seq,
    /// Whether this server knows of work not yet executed (pending or queued client updates,
    /// proposals above its aru). PSB's progress timer only runs while there is work.
    pub has_outstanding_work: bool,
    /// The storage incarnation (how many times this server has started).
    pub incarnation: u64,
}

impl ElectionContext {
    /// The rejoin rule: whether this server should install `view` as a non-leader, given that a
    /// peer announces `view` as a view its leader prepared: PSB's `VcProof` (from any server that
    /// installed `view`), or an oracle's heartbeat from `view`'s leader saying it regularly leads
    /// `view`. The caller checks where the announcement comes from.
    ///
    /// - A *lagging* server (`view` above its last installed view) joins: the view's leader
    ///   prepared it, so accepting proposals in it is a promise for it, which Paxos allows. This
    ///   covers a follower that missed the Prepare (the core resends Prepare only while preparing)
    ///   and an old leader that would otherwise stay `RegLeader` of a dead view.
    /// - A *restarted* server (in leader election with `view` still its last installed view)
    ///   rejoins it, because its promise for `view` is durable, unless it leads `view` itself (a
    ///   restarted leader lost its leader state and must move past its view) or `view` is the
    ///   initial view 0, which no server ever installs. `restarted` says that the server is in
    ///   leader election only because it restarted: one that suspected `view` itself must not
    ///   rejoin it, or two suspicious servers would take turns rejoining a dead view. A strategy
    ///   that never suspects a view passes `true`.
    ///
    /// DERIVED (docs/architecture.md, deviation 9; docs/elections.md, "Follower rejoin").
    pub fn joins_announced_view(&self, view: View, restarted: bool) -> bool {
        let rejoin = restarted
            && self.state == ServerState::LeaderElection
            && view == self.last_installed
            && view > View(0)
            && view.leader(self.servers) != self.me;
        view > self.last_installed || rejoin
    }
}

/// What a strategy asks the core to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionAction {
    /// Stop trusting the installed view: enter LeaderElection, attempting this view
    /// (`shift_to_leader_election`, spec §5). Ignored (and counted) unless the view is above the
    /// last installed one.
    Suspect(View),
    /// Install this view. One rule, in this order (the core's `install_intent`):
    ///
    /// 1. Ignored if `v` is below the last installed view, or equal to it while the server is
    ///    regular (leader or non-leader) in it.
    /// 2. **Join**: if another server leads `v`, become a non-leader in it. With `v` equal to the
    ///    last installed view (possible only in LeaderElection, i.e. after a restart or a
    ///    suspicion) this is a *rejoin*: the promise for `v` is durable, so accepting its
    ///    proposals again is safe.
    /// 3. Ignored if this server leads `v` and is already preparing it (idempotent), or if `v` is
    ///    its last installed view (a view it led before a restart: its leader state is gone, so it
    ///    must move to a higher view of its own).
    /// 4. **Prepare**: otherwise attempt `v` and run the Prepare phase as its leader.
    ///
    /// Ignored actions are counted in `Metrics::election_actions_ignored`.
    Install(View),
}

/// A leader-election strategy: a deterministic, sans-IO state machine.
pub trait LeaderElection {
    /// A short name for tables and logs.
    fn name(&self) -> &'static str;

    /// Called once when the replica starts or recovers from storage.
    fn handle_start(&mut self, now: Time, ctx: &ElectionContext);

    /// Called periodically; strategies run their timers here.
    fn handle_tick(&mut self, now: Time, ctx: &ElectionContext);

    /// A message this strategy sent from another server.
    fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        payload: &[u8],
        ctx: &ElectionContext,
    ) -> Result<(), CodecError>;

    /// The installed view executed a new update (progress was made).
    fn handle_progress(&mut self, _now: Time, _ctx: &ElectionContext) {}

    /// The core installed `ctx.last_installed` (as leader or non-leader).
    fn handle_view_installed(&mut self, _now: Time, _ctx: &ElectionContext) {}
    /// The view this server leads cannot order anything by itself: slots that a PrepareOk sender
    /// reported ordered could not be learned from any peer for a while (they may have crashed).
    /// A Prepare for a higher view, answered by servers that are still reachable, unblocks it.
    /// The core takes no leadership decision of its own: the strategy decides whether and how to
    /// leave the view (PSB suspects it; the oracle strategies prepare a higher view of their own).
    /// Called again after every further wait while the stall lasts. Default: nothing, and the
    /// strategy's own progress rules must act.
    fn handle_stalled(&mut self, _now: Time, _ctx: &ElectionContext) {}

    /// Whether a Prepare for `view` from `from` may be answered although the core did not attempt
    /// that view itself (oracle strategies accept their leader's Prepare; PSB's view change does not).
    fn accepts_prepare(&self, _from: NodeId, _view: View, _ctx: &ElectionContext) -> bool {
        false
    }

    /// The next action for the core, if any.
    fn poll_action(&mut self) -> Option<ElectionAction>;

    /// The next message to send, if any.
    fn poll_message(&mut self) -> Option<(Destination, Bytes)>;

    /// The server this strategy currently believes should lead, if it has an opinion. Reported
    /// as `Status::election_leader` (and by the node's status request), so that an operator or an
    /// experiment can see where strategies disagree with the installed view.
    fn leader(&self, ctx: &ElectionContext) -> Option<NodeId>;
}

impl<T: LeaderElection + ?Sized> LeaderElection for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn handle_start(&mut self, now: Time, ctx: &ElectionContext) {
        (**self).handle_start(now, ctx)
    }
    fn handle_tick(&mut self, now: Time, ctx: &ElectionContext) {
        (**self).handle_tick(now, ctx)
    }
    fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        payload: &[u8],
        ctx: &ElectionContext,
    ) -> Result<(), CodecError> {
        (**self).handle_message(now, from, payload, ctx)
    }
    fn handle_progress(&mut self, now: Time, ctx: &ElectionContext) {
        (**self).handle_progress(now, ctx)
    }
    fn handle_view_installed(&mut self, now: Time, ctx: &ElectionContext) {
        (**self).handle_view_installed(now, ctx)
    }
    fn handle_stalled(&mut self, now: Time, ctx: &ElectionContext) {
        (**self).handle_stalled(now, ctx)
    }
    fn accepts_prepare(&self, from: NodeId, view: View, ctx: &ElectionContext) -> bool {
        (**self).accepts_prepare(from, view, ctx)
    }
    fn poll_action(&mut self) -> Option<ElectionAction> {
        (**self).poll_action()
    }
    fn poll_message(&mut self) -> Option<(Destination, Bytes)> {
        (**self).poll_message()
    }
    fn leader(&self, ctx: &ElectionContext) -> Option<NodeId> {
        (**self).leader(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(me: u32, state: ServerState, installed: u64) -> ElectionContext {
        ElectionContext {
            me: NodeId(me),
            servers: 3,
            state,
            last_attempted: View(installed),
            last_installed: View(installed),
            max_view_seen: View(installed),
            leader_announced_view: View(0),
            local_aru: Seq(0),
            has_outstanding_work: false,
            incarnation: 1,
        }
    }

    #[test]
    fn rejoin_rule_joins_higher_views_and_rejoins_only_after_a_restart() {
        // docs/architecture.md deviation 9: lagging servers join, restarted ones rejoin.
        for state in [
            ServerState::RegLeader,
            ServerState::RegNonLeader,
            ServerState::LeaderElection,
        ] {
            let c = ctx(0, state, 4);
            assert!(c.joins_announced_view(View(7), false), "{state:?}");
            assert!(!c.joins_announced_view(View(2), true), "{state:?}");
        }
        // A regular server never "rejoins" the view it is in.
        assert!(!ctx(0, ServerState::RegNonLeader, 4).joins_announced_view(View(4), true));
        // A restarted follower rejoins its view; a suspecting one does not.
        let restarted = ctx(0, ServerState::LeaderElection, 4);
        assert!(restarted.joins_announced_view(View(4), true));
        assert!(!restarted.joins_announced_view(View(4), false));
        // A restarted leader of its view (4 mod 3 = 1) moves past it; view 0 is never installed.
        assert!(!ctx(1, ServerState::LeaderElection, 4).joins_announced_view(View(4), true));
        assert!(!ctx(1, ServerState::LeaderElection, 0).joins_announced_view(View(0), true));
    }
}
