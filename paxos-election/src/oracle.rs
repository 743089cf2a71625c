//! Turning an oracle's opinion ("server L should lead") into core actions (spec §15.1).
//!
//! Shared by the liveness oracles (highest-id alive, Ω), which differ only in their failure
//! detector, and, for the follower side, by the quorum-connected ballot election. [`Oracle`] holds
//! everything the two liveness oracles have in common: the leader opinion with its start-up
//! grace, the heartbeat schedule, the leader side ([`OracleLeader`]) and the output queues. The
//! oracle only decides who *tries* to lead; Prepare and PrepareOk still carry the promises.
//!
//! Heartbeats say nothing about views: which view a leader regularly leads comes from the core's
//! own `Alive` messages ([`ElectionContext::leader_announced_view`]).

use bytes::Bytes;
use paxos_core::codec::{decode_with_limit, encode, CodecError};
use paxos_core::{Destination, ElectionAction, ElectionContext, NodeId, ServerState, Time, View};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Duration;

/// The state and rules the liveness oracles (highest-id alive, Ω) share; each strategy owns one
/// and adds its failure detector, which names the peer that outranks this server, if any.
///
/// Call order, as the strategies drive it: [`Oracle::start`] at every start; after each input,
/// [`Oracle::elect`] with the detector's verdict, then [`Oracle::drive`]; a heartbeat whenever
/// [`Oracle::heartbeat_due`].
#[derive(Debug)]
pub(crate) struct Oracle {
    me: NodeId,
    heartbeat_interval: Duration,
    /// The server the oracle names, `None` during the start-up grace with no better peer heard.
    leader: Option<NodeId>,
    /// Until then, listen before claiming leadership for ourselves.
    grace_until: Time,
    next_heartbeat: Time,
    driver: OracleLeader,
    actions: VecDeque<ElectionAction>,
    messages: VecDeque<(Destination, Bytes)>,
}

impl Oracle {
    /// The shared part of server `me`'s oracle.
    pub(crate) fn new(me: NodeId, heartbeat_interval: Duration, stall_timeout: Duration) -> Oracle {
        Oracle {
            me,
            heartbeat_interval,
            leader: None,
            grace_until: Time::ZERO,
            next_heartbeat: Time::ZERO,
            driver: OracleLeader::new(stall_timeout),
            actions: VecDeque::new(),
            messages: VecDeque::new(),
        }
    }

    /// A (re)start: forget the view being prepared, and do not claim leadership for `grace` (a
    /// restarted server listens before it claims).
    pub(crate) fn start(&mut self, now: Time, grace: Duration) {
        self.driver.reset();
        self.grace_until = now + grace;
        self.leader = None;
    }

    /// The detector's verdict: `outranking` is the best peer if it outranks this server. Without
    /// one this server names itself, except during the start-up grace.
    pub(crate) fn elect(&mut self, now: Time, outranking: Option<NodeId>) {
        self.leader = match outranking {
            Some(p) => Some(p),
            // During the start-up grace period we have not heard everyone yet: do not claim.
            None if now < self.grace_until => None,
            None => Some(self.me),
        };
    }

    /// The server the oracle names.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Whether the next heartbeat is due.
    pub(crate) fn heartbeat_due(&self, now: Time) -> bool {
        now >= self.next_heartbeat
    }

    /// Broadcasts heartbeat `m` and schedules the next one.
    pub(crate) fn heartbeat<M: Serialize>(&mut self, now: Time, m: &M) {
        self.next_heartbeat = now + self.heartbeat_interval;
        self.broadcast(m);
    }

    /// Broadcasts `m` to every peer.
    pub(crate) fn broadcast<M: Serialize>(&mut self, m: &M) {
        if let Ok(b) = encode(m) {
            self.messages.push_back((Destination::All, Bytes::from(b)));
        }
    }

    /// Acts on the current opinion: lead (prepare a view of our own when needed) or follow.
    pub(crate) fn drive(&mut self, now: Time, ctx: &ElectionContext) {
        match self.leader {
            Some(l) if l == self.me => self.driver.lead(now, ctx, &mut self.actions),
            Some(l) => {
                self.driver.reset();
                follow(ctx, l, &mut self.actions);
            }
            None => self.driver.reset(),
        }
    }

    /// The view we lead is stalled ([`paxos_core::LeaderElection::handle_stalled`]).
    pub(crate) fn stalled(&mut self, now: Time, ctx: &ElectionContext) {
        if self.leader == Some(self.me) {
            self.driver.stalled(now, ctx, &mut self.actions);
        }
    }

    /// [`paxos_core::LeaderElection::accepts_prepare`]: the Prepare of the server we name.
    pub(crate) fn accepts_prepare(&self, from: NodeId, view: View, ctx: &ElectionContext) -> bool {
        accepts_leader_prepare(self.leader, from, view, ctx)
    }

    /// The next action for the core.
    pub(crate) fn poll_action(&mut self) -> Option<ElectionAction> {
        self.actions.pop_front()
    }

    /// The next message to send.
    pub(crate) fn poll_message(&mut self) -> Option<(Destination, Bytes)> {
        self.messages.pop_front()
    }
}

/// The leader side of an oracle strategy: prepare a view of our own whenever the oracle names us
/// and we do not lead an unchallenged installed view.
///
/// A leader that leads its installed view does nothing more, whether or not it executes: the
/// core's floor wait reports a view that cannot order by itself ([`OracleLeader::stalled`]), and
/// there is no leader-side progress watchdog (docs/elections.md, "Leader watchdog (removed)").
#[derive(Debug, Clone)]
pub(crate) struct OracleLeader {
    stall_timeout: Duration,
    /// The view we asked the core to prepare, and when.
    requested: Option<(View, Time)>,
}

impl OracleLeader {
    pub(crate) fn new(stall_timeout: Duration) -> OracleLeader {
        OracleLeader {
            stall_timeout,
            requested: None,
        }
    }

    /// Forgets the view being prepared (after a restart, or when the oracle names someone else).
    pub(crate) fn reset(&mut self) {
        self.requested = None;
    }

    /// The core reports that the view we lead is stalled (its floor wait expired): prepare a
    /// higher view of our own, whose PrepareOk quorum is made of servers that still answer.
    pub(crate) fn stalled(
        &mut self,
        now: Time,
        ctx: &ElectionContext,
        actions: &mut VecDeque<ElectionAction>,
    ) {
        if ctx.state != ServerState::RegLeader || ctx.last_installed.leader(ctx.servers) != ctx.me {
            return;
        }
        let top = ctx
            .max_view_seen
            .max(ctx.last_attempted)
            .max(ctx.last_installed);
        let v = top.next_led_by(ctx.me, ctx.servers);
        self.requested = Some((v, now));
        actions.push_back(ElectionAction::Install(v));
    }

    /// Called whenever the oracle names this server as leader.
    pub(crate) fn lead(
        &mut self,
        now: Time,
        ctx: &ElectionContext,
        actions: &mut VecDeque<ElectionAction>,
    ) {
        let n = ctx.servers;
        let me = ctx.me;
        let top = ctx
            .max_view_seen
            .max(ctx.last_attempted)
            .max(ctx.last_installed);
        let leading = ctx.state == ServerState::RegLeader
            && ctx.last_installed.leader(n) == me
            && top <= ctx.last_installed;
        if leading {
            self.requested = None;
            return;
        }
        // Still preparing the view we asked for (or the core has not caught up with the request):
        // no view above it exists and the stall timeout has not expired.
        let preparing = self
            .requested
            .is_some_and(|(v, since)| top <= v && now.saturating_since(since) < self.stall_timeout);
        if preparing {
            return;
        }
        let v = top.next_led_by(me, n);
        self.requested = Some((v, now));
        actions.push_back(ElectionAction::Install(v));
    }
}

/// The follower side: join the view our leader announced, in the core's `Alive`, as the view it
/// is regular in ([`ElectionContext::leader_announced_view`]), if we have not installed it (the
/// rejoin rule, [`ElectionContext::joins_announced_view`]).
///
/// Installing a view as a non-leader without answering its Prepare is safe: it is a promise for that
/// view, and accepting proposals in the view we promised is exactly what Paxos allows. Oracle
/// strategies never suspect a view, so a follower in leader election with the announced view
/// installed is there because it restarted.
pub(crate) fn follow(
    ctx: &ElectionContext,
    leader: NodeId,
    actions: &mut VecDeque<ElectionAction>,
) {
    let v = ctx.leader_announced_view;
    if leader == ctx.me || v.leader(ctx.servers) != leader {
        return;
    }
    if ctx.joins_announced_view(v, true) {
        actions.push_back(ElectionAction::Install(v));
    }
}

/// `accepts_prepare` of an oracle: the Prepare of the server the oracle names, for a new view.
pub(crate) fn accepts_leader_prepare(
    leader: Option<NodeId>,
    from: NodeId,
    view: View,
    ctx: &ElectionContext,
) -> bool {
    leader == Some(from) && from != ctx.me && view > ctx.last_installed
}

/// Whether `from` names a peer of a cluster of `servers` other than `me`.
pub(crate) fn is_peer(me: NodeId, servers: usize, from: NodeId) -> bool {
    from != me && from.index() < servers
}

/// The largest strategy message any strategy sends (all are a few fixed-size fields).
pub(crate) const MAX_STRATEGY_MESSAGE: usize = 64;

/// A strategy message received from `from`: the decode error for a malformed payload, `None` for
/// one that claims to come from this server or from outside the cluster (dropped), else the
/// message.
pub(crate) fn decode_from_peer<M: DeserializeOwned>(
    me: NodeId,
    servers: usize,
    from: NodeId,
    payload: &[u8],
) -> Result<Option<M>, CodecError> {
    let m = decode_with_limit(payload, MAX_STRATEGY_MESSAGE)?;
    Ok(is_peer(me, servers, from).then_some(m))
}

/// The [`paxos_core::LeaderElection`] methods a liveness oracle strategy hands to its
/// [`Oracle`] unchanged (stall, Prepare acceptance, output queues, leader opinion). Expands inside
/// the strategy's `impl LeaderElection`; the strategy must have a field `oracle: Oracle`.
macro_rules! delegate_to_oracle {
    () => {
        fn handle_stalled(&mut self, now: Time, ctx: &ElectionContext) {
            self.oracle.stalled(now, ctx);
        }

        fn accepts_prepare(&self, from: NodeId, view: View, ctx: &ElectionContext) -> bool {
            self.oracle.accepts_prepare(from, view, ctx)
        }

        fn poll_action(&mut self) -> Option<ElectionAction> {
            self.oracle.poll_action()
        }

        fn poll_message(&mut self) -> Option<(Destination, Bytes)> {
            self.oracle.poll_message()
        }

        fn leader(&self, _ctx: &ElectionContext) -> Option<NodeId> {
            self.oracle.leader()
        }
    };
}
pub(crate) use delegate_to_oracle;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A context for tests: server `me` of `n`, everything else at its start value.
    pub(crate) fn ctx(me: u32, n: usize) -> ElectionContext {
        ElectionContext {
            me: NodeId(me),
            servers: n,
            state: ServerState::LeaderElection,
            last_attempted: View(0),
            last_installed: View(0),
            max_view_seen: View(0),
            leader_announced_view: View(0),
            local_aru: paxos_core::Seq(0),
            has_outstanding_work: false,
            incarnation: 1,
        }
    }

    #[test]
    fn leader_prepares_smallest_own_view_above_all_seen_once() {
        // spec §15.1: v = smallest view above every view seen with v mod N == me.
        let mut l = OracleLeader::new(Duration::from_secs(1));
        let mut out = VecDeque::new();
        let mut c = ctx(2, 5);
        c.max_view_seen = View(8);
        l.lead(Time::ZERO, &c, &mut out);
        assert_eq!(out.pop_front(), Some(ElectionAction::Install(View(12))));
        // The core now prepares v12: no re-emission while it does.
        c.last_attempted = View(12);
        c.last_installed = View(12);
        c.max_view_seen = View(12);
        l.lead(Time::from_millis(500), &c, &mut out);
        assert!(out.is_empty());
        // Stalled past the timeout: a higher view of ours.
        l.lead(Time::from_millis(1000), &c, &mut out);
        assert_eq!(out.pop_front(), Some(ElectionAction::Install(View(17))));
        // Installed and unchallenged: quiet.
        c.state = ServerState::RegLeader;
        c.last_attempted = View(17);
        c.last_installed = View(17);
        c.max_view_seen = View(17);
        l.lead(Time::from_millis(1100), &c, &mut out);
        assert!(out.is_empty());
        // A higher view appears (someone else prepared it): take over above it.
        c.max_view_seen = View(18);
        l.lead(Time::from_millis(1200), &c, &mut out);
        assert_eq!(out.pop_front(), Some(ElectionAction::Install(View(22))));
    }

    #[test]
    fn stalled_leader_prepares_a_higher_view_of_its_own_only_while_leading() {
        // The core's floor wait expired (handle_stalled): a fresh Prepare, answered by the
        // servers still reachable, replaces the PrepareOk quorum that included the lost sender.
        let mut l = OracleLeader::new(Duration::from_secs(1));
        let mut out = VecDeque::new();
        let mut c = ctx(1, 3);
        c.last_attempted = View(4);
        c.last_installed = View(4);
        c.max_view_seen = View(4);
        l.stalled(Time::ZERO, &c, &mut out);
        assert!(out.is_empty(), "not a regular leader: nothing to do");
        c.state = ServerState::RegLeader;
        l.stalled(Time::ZERO, &c, &mut out);
        assert_eq!(out.pop_front(), Some(ElectionAction::Install(View(7))));
        // It now prepares v7: lead() does not ask again while that is under way.
        c.state = ServerState::LeaderElection;
        c.last_attempted = View(7);
        c.last_installed = View(7);
        c.max_view_seen = View(7);
        l.lead(Time::from_millis(500), &c, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_leader_of_its_unchallenged_view_never_reprepares_on_its_own() {
        // No leader watchdog: outstanding work without progress is the core's business (its
        // floor wait calls `stalled`), not a reason to leave a view the oracle still names us for.
        let mut l = OracleLeader::new(Duration::from_secs(1));
        let mut out = VecDeque::new();
        let mut c = ctx(1, 3);
        c.state = ServerState::RegLeader;
        c.last_attempted = View(4);
        c.last_installed = View(4);
        c.max_view_seen = View(4);
        l.lead(Time::from_millis(10_000), &c, &mut out);
        c.has_outstanding_work = true;
        l.lead(Time::from_millis(60_000), &c, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn follower_joins_the_view_its_leader_leads() {
        let mut out = VecDeque::new();
        let mut c = ctx(0, 3);
        c.state = ServerState::RegLeader;
        c.last_installed = View(3);
        c.leader_announced_view = View(5);
        follow(&c, NodeId(2), &mut out);
        assert_eq!(out.pop_front(), Some(ElectionAction::Install(View(5))));
        // A view led by someone other than our leader, or one we installed: wait instead.
        follow(&c, NodeId(1), &mut out);
        c.leader_announced_view = View(3);
        follow(&c, NodeId(0), &mut out);
        follow(&c, NodeId(2), &mut out);
        assert!(out.is_empty());
        c.leader_announced_view = View(5);
        assert!(accepts_leader_prepare(
            Some(NodeId(2)),
            NodeId(2),
            View(5),
            &c
        ));
        assert!(!accepts_leader_prepare(
            Some(NodeId(1)),
            NodeId(2),
            View(5),
            &c
        ));
        assert!(!accepts_leader_prepare(
            Some(NodeId(2)),
            NodeId(2),
            View(3),
            &c
        ));
    }
}
