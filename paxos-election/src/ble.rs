//! A quorum-connected ballot election in the spirit of OmniPaxos's Ballot Leader Election
//! (spec §16.1).
//!
//! Every election period a server asks all peers for a heartbeat; each peer answers with *its own*
//! ballot and whether *it* is quorum-connected (QC), never with its leader's ballot. At the end of a
//! period a server that heard from fewer than `majority − 1` peers marks itself not QC and changes
//! nothing else. A QC server takes the highest ballot among the QC answers and its own: if that is
//! below its current leader's ballot (the leader died or lost its quorum) it raises its own ballot
//! above the leader's and forgets the leader; otherwise the top ballot becomes its leader. Only QC
//! servers can raise a ballot or be elected, which is what keeps partially connected servers from
//! disrupting a leader that still has a quorum.
//!
//! Ballots map to core views order-preservingly (`view = n·N + pid`), so a newly elected leader
//! prepares the view of its ballot, and followers answer any Prepare for a view above their
//! installed one, as Sequence Paxos answers any higher ballot.

use crate::oracle::{decode_from_peer, follow};
use bytes::Bytes;
use paxos_core::codec::{encode, CodecError};
use paxos_core::{
    Destination, ElectionAction, ElectionContext, LeaderElection, NodeId, ServerState, Time, View,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// Timers of the quorum-connected ballot election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BleConfig {
    /// One heartbeat round (OmniPaxos's election timeout, `hb_delay`).
    pub election_timeout: Duration,
    /// How long this server's own Prepare may stall behind a higher view before it raises its
    /// ballot above that view.
    pub prepare_stall_timeout: Duration,
}

impl Default for BleConfig {
    fn default() -> Self {
        BleConfig {
            election_timeout: Duration::from_millis(250),
            prepare_stall_timeout: Duration::from_secs(1),
        }
    }
}

/// A ballot: ordered by round `n`, then by server id.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Ballot {
    /// The round.
    pub n: u64,
    /// The server that owns the ballot.
    pub pid: NodeId,
}

impl Ballot {
    /// The ballot whose view is `view` in a cluster of `servers` (the inverse of [`Ballot::view`]).
    pub fn of_view(view: View, servers: usize) -> Ballot {
        let n = servers.max(1) as u64;
        Ballot {
            n: view.0 / n,
            pid: NodeId((view.0 % n) as u32),
        }
    }

    /// The core view this ballot prepares in a cluster of `servers`: `n·N + pid`, so that ballot
    /// order and view order agree and the view's leader is `pid`.
    pub fn view(self, servers: usize) -> View {
        View(
            self.n
                .saturating_mul(servers as u64)
                .saturating_add(u64::from(self.pid.0)),
        )
    }
}

/// The messages of the quorum-connected ballot election.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BleMessage {
    /// Asks for a heartbeat for round `round`.
    HeartbeatRequest {
        /// The requester's round.
        round: u64,
    },
    /// Answers a request with the sender's own ballot and QC status.
    HeartbeatReply {
        /// The round answered.
        round: u64,
        /// The sender's own ballot (never its leader's).
        ballot: Ballot,
        /// Whether the sender is quorum-connected.
        qc: bool,
    },
}

/// The quorum-connected ballot election as a [`LeaderElection`] strategy.
#[derive(Debug)]
pub struct QuorumBallot {
    me: NodeId,
    servers: usize,
    config: BleConfig,
    ballot: Ballot,
    round: u64,
    replies: Vec<Option<(Ballot, bool)>>,
    qc: bool,
    leader: Option<Ballot>,
    period_end: Time,
    /// Elected with our own ballot and not yet asked the core to prepare it.
    install_pending: bool,
    /// The view we asked the core to prepare, and when.
    requested: Option<(View, Time)>,
    actions: VecDeque<ElectionAction>,
    messages: VecDeque<(Destination, Bytes)>,
}

impl QuorumBallot {
    /// A strategy for server `me` of `servers`.
    pub fn new(me: NodeId, servers: usize, config: BleConfig) -> QuorumBallot {
        QuorumBallot {
            me,
            servers,
            config,
            ballot: Ballot { n: 0, pid: me },
            round: 0,
            replies: vec![None; servers],
            qc: true,
            leader: None,
            period_end: Time::ZERO,
            install_pending: false,
            requested: None,
            actions: VecDeque::new(),
            messages: VecDeque::new(),
        }
    }

    /// This server's own ballot.
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// The ballot of the leader this server follows, if any.
    pub fn leader_ballot(&self) -> Option<Ballot> {
        self.leader
    }

    /// Whether this server heard from at least `majority − 1` peers in its last round.
    pub fn is_quorum_connected(&self) -> bool {
        self.qc
    }

    fn majority(&self) -> usize {
        self.servers / 2 + 1
    }

    /// End of an election period: the BLE rule of spec §16.1.
    ///
    /// DERIVED addition: the ballot of the view the core has installed counts as a leader this
    /// server follows. Followers answer any higher Prepare, so the core may have promised a
    /// ballot that this server's own rounds never saw (its owner was elected elsewhere and then
    /// cut off); without this, every server would keep a lower leader that can no longer order
    /// anything, and nobody would ever raise a ballot.
    fn end_period(&mut self, ctx: &ElectionContext) {
        let promised = (ctx.last_installed > View(0))
            .then(|| Ballot::of_view(ctx.last_installed, self.servers));
        if let Some(p) = promised {
            if self.leader.is_some_and(|l| l < p) {
                self.leader = Some(p);
            }
        }
        let heard = self.replies.iter().flatten().count();
        if heard + 1 < self.majority() {
            self.qc = false;
            return;
        }
        self.qc = true;
        // A QC answer from the owner of the promised ballot supports that ballot even if it was
        // sent before the owner raised its ballot to prepare it (the answer and the Prepare race).
        let top = self
            .replies
            .iter()
            .flatten()
            .filter(|(_, qc)| *qc)
            .map(|(b, _)| match promised {
                Some(p) if p.pid == b.pid => (*b).max(p),
                _ => *b,
            })
            .chain([self.ballot])
            .max()
            .unwrap_or(self.ballot);
        match self.leader {
            Some(l) if top < l => {
                // The leader is gone or lost its quorum: outbid it next round.
                self.ballot.n = self.ballot.n.max(l.n.saturating_add(1));
                self.leader = None;
            }
            Some(l) if top == l => {}
            _ => {
                self.leader = Some(top);
                if top == self.ballot {
                    self.install_pending = true;
                }
            }
        }
    }

    fn new_round(&mut self, now: Time) {
        self.round += 1;
        self.replies.iter_mut().for_each(|r| *r = None);
        self.period_end = now + self.config.election_timeout;
        self.send(
            Destination::All,
            BleMessage::HeartbeatRequest { round: self.round },
        );
    }

    fn send(&mut self, to: Destination, m: BleMessage) {
        if let Ok(b) = encode(&m) {
            self.messages.push_back((to, Bytes::from(b)));
        }
    }

    /// Asks the core to prepare our ballot's view, raising the ballot above every view seen first.
    fn install(&mut self, now: Time, ctx: &ElectionContext) {
        let top = ctx
            .max_view_seen
            .max(ctx.last_attempted)
            .max(ctx.last_installed);
        if self.ballot.view(self.servers) <= top {
            let n = self.servers as u64;
            self.ballot.n =
                top.0 / n + u64::from(self.ballot.view(self.servers).0 % n <= top.0 % n);
            debug_assert!(self.ballot.view(self.servers) > top);
        }
        self.leader = Some(self.ballot);
        let v = self.ballot.view(self.servers);
        self.requested = Some((v, now));
        self.install_pending = false;
        self.actions.push_back(ElectionAction::Install(v));
    }

    fn drive(&mut self, now: Time, ctx: &ElectionContext) {
        let Some(l) = self.leader else {
            return;
        };
        if l.pid != self.me {
            self.requested = None;
            follow(ctx, l.pid, &mut self.actions);
            return;
        }
        if self.install_pending {
            self.install(now, ctx);
            return;
        }
        // Prepare once per election; retry only if it stalls behind a higher view.
        let stalled = self.requested.is_some_and(|(v, since)| {
            ctx.state == ServerState::LeaderElection
                && ctx.last_attempted == v
                && ctx.max_view_seen > v
                && now.saturating_since(since) >= self.config.prepare_stall_timeout
        });
        // Only a quorum-connected server may raise its ballot (the BLE invariant): a server cut off
        // from its quorum keeps still instead of returning with a ballot that outbids everyone.
        if self.qc && stalled {
            self.install(now, ctx);
        }
    }
}

impl LeaderElection for QuorumBallot {
    fn name(&self) -> &'static str {
        "ble"
    }

    fn handle_start(&mut self, now: Time, _ctx: &ElectionContext) {
        // A recovering server starts at round 0, below any ballot the cluster moved to, so that its
        // return does not disrupt a working leader; if elected it raises its ballot above every view
        // it promised before preparing (see `install`).
        *self = QuorumBallot::new(self.me, self.servers, self.config);
        self.new_round(now);
    }

    fn handle_tick(&mut self, now: Time, ctx: &ElectionContext) {
        if now >= self.period_end {
            self.end_period(ctx);
            self.new_round(now);
        }
        self.drive(now, ctx);
    }

    fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        payload: &[u8],
        ctx: &ElectionContext,
    ) -> Result<(), CodecError> {
        let Some(m) = decode_from_peer::<BleMessage>(self.me, self.servers, from, payload)? else {
            return Ok(());
        };
        match m {
            BleMessage::HeartbeatRequest { round } => {
                let reply = BleMessage::HeartbeatReply {
                    round,
                    ballot: self.ballot,
                    qc: self.qc,
                };
                self.send(Destination::Node(from), reply);
            }
            BleMessage::HeartbeatReply { round, ballot, qc } => {
                if round == self.round && ballot.pid == from {
                    self.replies[from.index()] = Some((ballot, qc));
                }
                self.drive(now, ctx);
            }
        }
        Ok(())
    }

    fn handle_stalled(&mut self, now: Time, ctx: &ElectionContext) {
        // Raise the ballot and prepare again, only while quorum-connected (the BLE invariant) and
        // while we lead the stalled view.
        let leading = ctx.state == ServerState::RegLeader
            && ctx.last_installed.leader(self.servers) == self.me;
        if self.qc && leading {
            self.install(now, ctx);
        }
    }

    fn accepts_prepare(&self, from: NodeId, view: View, ctx: &ElectionContext) -> bool {
        // As Sequence Paxos: any higher ballot. Only elected (QC) servers prepare.
        from != ctx.me && view > ctx.last_installed
    }

    fn poll_action(&mut self) -> Option<ElectionAction> {
        self.actions.pop_front()
    }

    fn poll_message(&mut self) -> Option<(Destination, Bytes)> {
        self.messages.pop_front()
    }

    fn leader(&self, _ctx: &ElectionContext) -> Option<NodeId> {
        self.leader.map(|b| b.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::tests::ctx;

    /// A whole cluster of strategies over a FIFO network with a link filter, driven in lock-step
    /// periods (no core: the context stays at its start value except for installs).
    struct Cluster {
        nodes: Vec<QuorumBallot>,
        ctxs: Vec<ElectionContext>,
        /// `link(a, b)`: whether a message from a reaches b.
        cut: Vec<(usize, usize)>,
        now: Time,
        installs: Vec<(usize, View)>,
    }

    impl Cluster {
        fn new(n: usize) -> Cluster {
            let mut c = Cluster {
                nodes: (0..n)
                    .map(|i| QuorumBallot::new(NodeId(i as u32), n, BleConfig::default()))
                    .collect(),
                ctxs: (0..n).map(|i| ctx(i as u32, n)).collect(),
                cut: vec![],
                now: Time::ZERO,
                installs: vec![],
            };
            for i in 0..n {
                let cx = c.ctxs[i];
                c.nodes[i].handle_start(Time::ZERO, &cx);
            }
            c.flush();
            c
        }

        fn cut(&mut self, a: usize, b: usize) {
            self.cut.push((a, b));
            self.cut.push((b, a));
        }

        fn flush(&mut self) {
            let n = self.nodes.len();
            loop {
                let mut queue = vec![];
                for i in 0..n {
                    while let Some((to, b)) = self.nodes[i].poll_message() {
                        match to {
                            Destination::All => {
                                queue.extend((0..n).filter(|j| *j != i).map(|j| (i, j, b.clone())))
                            }
                            Destination::Node(j) => queue.push((i, j.index(), b)),
                        }
                    }
                    while let Some(a) = self.nodes[i].poll_action() {
                        if let ElectionAction::Install(v) = a {
                            self.installs.push((i, v));
                            self.ctxs[i].max_view_seen = self.ctxs[i].max_view_seen.max(v);
                        }
                    }
                }
                if queue.is_empty() {
                    return;
                }
                for (from, to, b) in queue {
                    if !self.cut.contains(&(from, to)) {
                        let cx = self.ctxs[to];
                        self.nodes[to]
                            .handle_message(self.now, NodeId(from as u32), &b, &cx)
                            .unwrap();
                    }
                }
            }
        }

        fn run_periods(&mut self, periods: u64) {
            let step = BleConfig::default().election_timeout;
            for _ in 0..periods {
                self.now = self.now + step;
                for i in 0..self.nodes.len() {
                    let cx = self.ctxs[i];
                    self.nodes[i].handle_tick(self.now, &cx);
                }
                self.flush();
            }
        }

        fn leaders(&self) -> Vec<Option<NodeId>> {
            self.nodes
                .iter()
                .zip(&self.ctxs)
                .map(|(s, c)| s.leader(c))
                .collect()
        }
    }

    #[test]
    fn fully_connected_elects_highest_ballot_once() {
        let mut c = Cluster::new(5);
        c.run_periods(10);
        assert_eq!(c.leaders(), vec![Some(NodeId(4)); 5]);
        assert_eq!(
            c.installs,
            vec![(4, View(4))],
            "one Prepare, for ballot (0, 4)"
        );
    }

    #[test]
    fn server_hearing_fewer_than_majority_minus_one_is_not_qc_and_never_raises() {
        // spec §16.1: fewer than majority−1 replies -> qc = false; nothing else changes.
        let mut c = Cluster::new(5);
        c.run_periods(4);
        // Isolate 1 from everyone but 0 (1 reply < majority−1 = 2).
        for j in 2..5 {
            c.cut(1, j);
        }
        // And take the leader down to a lone server, as far as the others can tell.
        for j in 0..4 {
            c.cut(4, j);
        }
        c.run_periods(20);
        assert!(!c.nodes[1].is_quorum_connected());
        assert_eq!(
            c.nodes[1].ballot().n,
            0,
            "a non-QC server never raises its ballot"
        );
        assert_eq!(c.nodes[1].leader_ballot().map(|b| b.pid), Some(NodeId(4)));
        assert!(!c.nodes[4].is_quorum_connected());
        // {0, 2, 3} are QC among themselves and elect one of their own.
        let l = c.leaders();
        assert_eq!(l[0], Some(NodeId(3)));
        assert_eq!(l[2], Some(NodeId(3)));
        assert_eq!(l[3], Some(NodeId(3)));
        assert_eq!(c.nodes[3].ballot().n, 1);
    }

    #[test]
    fn quorum_loss_star_hub_takes_over() {
        // spec §16.2 quorum-loss: every link among {B, C, D, E} cut, hub A keeps all four.
        let mut c = Cluster::new(5);
        c.run_periods(4);
        assert_eq!(c.leaders(), vec![Some(NodeId(4)); 5]);
        for a in 1..5 {
            for b in a + 1..5 {
                c.cut(a, b);
            }
        }
        c.run_periods(10);
        assert_eq!(c.nodes[0].leader(&c.ctxs[0]), Some(NodeId(0)));
        assert!(c.installs.iter().any(|(i, _)| *i == 0));
    }

    #[test]
    fn chained_does_not_livelock() {
        // spec §16.2 chained (N = 3): cut B–C only, C the leader. B takes over once, then every
        // server's opinion stays put: no flipping leaders.
        let mut c = Cluster::new(3);
        c.run_periods(4);
        assert_eq!(c.leaders(), vec![Some(NodeId(2)); 3]);
        c.cut(1, 2);
        c.run_periods(8);
        let settled = c.leaders();
        let installs = c.installs.len();
        let ballots: Vec<Ballot> = c.nodes.iter().map(|s| s.ballot()).collect();
        c.run_periods(200);
        assert_eq!(c.leaders(), settled);
        assert_eq!(c.installs.len(), installs, "no further Prepare");
        assert_eq!(
            c.nodes.iter().map(|s| s.ballot()).collect::<Vec<_>>(),
            ballots
        );
        assert_eq!(settled[0], Some(NodeId(1)), "A follows B's higher ballot");
    }

    #[test]
    fn a_promised_ballot_whose_owner_vanished_is_outbid() {
        // The core answered a higher Prepare (ballot (1, 0), view 5) that these servers' own rounds
        // never elected, and its owner is then cut off. The promised ballot counts as their leader,
        // so they notice it is gone and elect a new one above it.
        let mut c = Cluster::new(5);
        c.run_periods(4);
        assert_eq!(c.leaders(), vec![Some(NodeId(4)); 5]);
        for i in 1..5 {
            c.ctxs[i].last_installed = View(5);
            c.ctxs[i].max_view_seen = View(5);
            c.ctxs[i].state = ServerState::RegNonLeader;
            c.cut(0, i);
        }
        let before = c.installs.len();
        c.run_periods(6);
        let (who, v) = *c.installs.last().unwrap();
        assert!(c.installs.len() > before, "a new leader prepares");
        assert!(v > View(5) && who != 0, "{:?}", c.installs);
        for i in 1..5 {
            assert_eq!(c.leaders()[i], Some(NodeId(who as u32)));
        }
        assert_eq!(
            Ballot::of_view(View(17), 5),
            Ballot {
                n: 3,
                pid: NodeId(2)
            }
        );
    }

    #[test]
    fn ballot_views_preserve_order_and_install_outbids_seen_views() {
        let a = Ballot {
            n: 1,
            pid: NodeId(4),
        };
        let b = Ballot {
            n: 2,
            pid: NodeId(0),
        };
        assert!(a < b && a.view(5) < b.view(5));
        assert_eq!(b.view(5).leader(5), NodeId(0));
        let mut s = QuorumBallot::new(NodeId(1), 5, BleConfig::default());
        let mut cx = ctx(1, 5);
        cx.max_view_seen = View(13);
        s.install(Time::ZERO, &cx);
        assert_eq!(s.poll_action(), Some(ElectionAction::Install(View(16))));
        assert_eq!(s.ballot().view(5), View(16));
        cx.max_view_seen = View(10);
        let mut s = QuorumBallot::new(NodeId(1), 5, BleConfig::default());
        s.install(Time::ZERO, &cx);
        assert_eq!(s.poll_action(), Some(ElectionAction::Install(View(11))));
    }
}
