//! Ω for crash-recovery (Boichat, Dutta, Frølund & Guerraoui, *Deconstructing Paxos*; epochs from
//! Aguilera, Chen & Toueg; spec §15.3).
//!
//! Every heartbeat carries the sender's epoch: its storage incarnation, which the storage layer
//! increments and persists at every restart ([`ElectionContext::incarnation`]). A peer is trusted
//! while it keeps talking within its own, adaptive timeout; a heartbeat from a suspected peer whose
//! epoch did not change proves the suspicion wrong and lengthens that peer's timeout. The leader is
//! the trusted server with the fewest recoveries (lowest epoch), ties going to the highest id.
//! A crash-looping server raises its epoch at each return and drops out of contention; a server that
//! partitions and heals keeps its epoch and can still win at the wrong moment.

use crate::oracle::{decode_from_peer, delegate_to_oracle, Oracle};
use bytes::Bytes;
use paxos_core::codec::CodecError;
use paxos_core::{
    Destination, ElectionAction, ElectionContext, LeaderElection, NodeId, Time, View,
};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::time::Duration;

/// Timers of the Ω strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OmegaConfig {
    /// Period of the heartbeat broadcast.
    pub heartbeat_interval: Duration,
    /// Every peer's timeout before any false suspicion.
    pub initial_timeout: Duration,
    /// Δ added to a peer's timeout each time it is found to have been suspected wrongly.
    pub timeout_increment: Duration,
    /// Cap on a peer's timeout.
    pub max_timeout: Duration,
    /// How long this server's own Prepare may stall before it tries a higher view.
    pub prepare_stall_timeout: Duration,
}

impl Default for OmegaConfig {
    fn default() -> Self {
        OmegaConfig {
            heartbeat_interval: Duration::from_millis(100),
            initial_timeout: Duration::from_millis(500),
            timeout_increment: Duration::from_millis(250),
            max_timeout: Duration::from_secs(10),
            prepare_stall_timeout: Duration::from_secs(1),
        }
    }
}

/// The messages of the Ω strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OmegaMessage {
    /// `IAmAlive{epoch}` (the view its sender leads comes from the core's own `Alive`).
    Alive {
        /// The sender's epoch (incarnation).
        epoch: u64,
    },
    /// `Recovered{epoch}`, sent once at every start.
    Recovered {
        /// The sender's new epoch.
        epoch: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Peer {
    trusted: bool,
    /// Was trusted once and then timed out: a heartbeat of the same epoch proves us wrong.
    suspected: bool,
    last_heard: Time,
    timeout: Duration,
    /// Highest epoch heard from the peer.
    epoch: Option<u64>,
    /// Restarts observed while this server was running (epoch increases).
    observed_recoveries: u64,
}

/// Ω for crash-recovery as a [`LeaderElection`] strategy.
#[derive(Debug)]
pub struct Omega {
    me: NodeId,
    servers: usize,
    config: OmegaConfig,
    epoch: u64,
    /// The failure detector, one entry per server.
    peers: Vec<Peer>,
    oracle: Oracle,
}

impl Omega {
    /// A strategy for server `me` of `servers`.
    pub fn new(me: NodeId, servers: usize, config: OmegaConfig) -> Omega {
        let peer = Peer {
            trusted: false,
            suspected: false,
            last_heard: Time::ZERO,
            timeout: config.initial_timeout,
            epoch: None,
            observed_recoveries: 0,
        };
        Omega {
            me,
            servers,
            config,
            epoch: 0,
            peers: vec![peer; servers],
            oracle: Oracle::new(me, config.heartbeat_interval, config.prepare_stall_timeout),
        }
    }

    /// How many times `p` has recovered, as far as this server knows: its epoch (the number of
    /// starts the storage layer recorded). `None` if never heard. For this server, its own epoch.
    pub fn recoveries(&self, p: NodeId) -> Option<u64> {
        if p == self.me {
            return Some(self.epoch);
        }
        self.peers.get(p.index()).and_then(|s| s.epoch)
    }

    /// Restarts of `p` this server observed while running (epoch increases it saw).
    pub fn observed_recoveries(&self, p: NodeId) -> u64 {
        self.peers
            .get(p.index())
            .map_or(0, |s| s.observed_recoveries)
    }

    /// The current timeout for peer `p`.
    pub fn timeout(&self, p: NodeId) -> Duration {
        self.peers
            .get(p.index())
            .map_or(self.config.initial_timeout, |s| s.timeout)
    }

    /// The trusted servers, in id order (this server included).
    pub fn trusted(&self) -> Vec<NodeId> {
        (0..self.servers as u32)
            .map(NodeId)
            .filter(|p| *p == self.me || self.peers[p.index()].trusted)
            .collect()
    }

    /// The order of candidacy: fewer recoveries first, then higher id.
    fn rank(epoch: u64, id: NodeId) -> (u64, Reverse<NodeId>) {
        (epoch, Reverse(id))
    }

    fn expire(&mut self, now: Time) {
        for p in &mut self.peers {
            if p.trusted && now.saturating_since(p.last_heard) >= p.timeout {
                p.trusted = false;
                p.suspected = true;
            }
        }
        let best_peer = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.trusted)
            .filter_map(|(i, p)| p.epoch.map(|e| Self::rank(e, NodeId(i as u32))))
            .min();
        let mine = Self::rank(self.epoch, self.me);
        self.oracle
            .elect(now, best_peer.filter(|b| *b < mine).map(|b| b.1 .0));
    }

    fn heard(&mut self, now: Time, from: NodeId, epoch: u64) {
        let increment = self.config.timeout_increment;
        let max = self.config.max_timeout;
        let p = &mut self.peers[from.index()];
        match p.epoch {
            Some(old) if epoch < old => return, // from an earlier incarnation, delayed
            Some(old) if epoch > old => {
                // It crashed and came back: the suspicion (if any) was right.
                p.observed_recoveries += epoch - old;
                p.suspected = false;
            }
            _ => {
                if p.suspected && !p.trusted {
                    // Suspected wrongly: be more patient with this peer.
                    p.timeout = (p.timeout + increment).min(max);
                }
            }
        }
        p.epoch = Some(epoch);
        p.trusted = true;
        p.suspected = false;
        p.last_heard = now;
    }

    fn heartbeat(&mut self, now: Time) {
        let m = OmegaMessage::Alive { epoch: self.epoch };
        self.oracle.heartbeat(now, &m);
    }
}

impl LeaderElection for Omega {
    fn name(&self) -> &'static str {
        "omega"
    }

    fn handle_start(&mut self, now: Time, ctx: &ElectionContext) {
        self.epoch = ctx.incarnation;
        let fresh = Omega::new(self.me, self.servers, self.config);
        self.peers = fresh.peers;
        self.oracle.start(now, self.config.initial_timeout);
        self.oracle
            .broadcast(&OmegaMessage::Recovered { epoch: self.epoch });
        self.heartbeat(now);
    }

    fn handle_tick(&mut self, now: Time, ctx: &ElectionContext) {
        self.expire(now);
        if self.oracle.heartbeat_due(now) {
            self.heartbeat(now);
        }
        self.oracle.drive(now, ctx);
    }

    fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        payload: &[u8],
        ctx: &ElectionContext,
    ) -> Result<(), CodecError> {
        let Some(m) = decode_from_peer::<OmegaMessage>(self.me, self.servers, from, payload)?
        else {
            return Ok(());
        };
        match m {
            OmegaMessage::Alive { epoch } | OmegaMessage::Recovered { epoch } => {
                self.heard(now, from, epoch)
            }
        }
        self.expire(now);
        self.oracle.drive(now, ctx);
        Ok(())
    }

    delegate_to_oracle!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::tests::ctx;
    use paxos_core::codec::{decode_with_limit, encode};

    fn alive(s: &mut Omega, ms: u64, from: u32, epoch: u64) {
        let c = ctx(s.me.0, s.servers);
        let b = encode(&OmegaMessage::Alive { epoch }).unwrap();
        s.handle_message(Time::from_millis(ms), NodeId(from), &b, &c)
            .unwrap();
    }

    fn started(me: u32, n: usize) -> Omega {
        let mut s = Omega::new(NodeId(me), n, OmegaConfig::default());
        s.handle_start(Time::ZERO, &ctx(me, n));
        s
    }

    #[test]
    fn leader_is_fewest_recoveries_then_highest_id() {
        // spec §15.3: leader = trusted server with the fewest recoveries, ties -> highest id.
        let mut s = started(0, 5);
        alive(&mut s, 10, 1, 1);
        alive(&mut s, 10, 2, 1);
        alive(&mut s, 10, 4, 1);
        assert_eq!(s.oracle.leader(), Some(NodeId(4)));
        // 4 crashes and recovers: a higher epoch is a recovery, and it drops out of contention.
        let b = encode(&OmegaMessage::Recovered { epoch: 2 }).unwrap();
        s.handle_message(Time::from_millis(20), NodeId(4), &b, &ctx(0, 5))
            .unwrap();
        assert_eq!(s.recoveries(NodeId(4)), Some(2));
        assert_eq!(s.observed_recoveries(NodeId(4)), 1);
        assert_eq!(s.oracle.leader(), Some(NodeId(2)));
        // A delayed heartbeat of the old incarnation changes nothing.
        alive(&mut s, 30, 4, 1);
        assert_eq!(s.recoveries(NodeId(4)), Some(2));
        assert_eq!(s.oracle.leader(), Some(NodeId(2)));
    }

    #[test]
    fn false_suspicion_grows_the_timeout_but_a_recovery_does_not() {
        let mut s = started(0, 3);
        let c = ctx(0, 3);
        alive(&mut s, 0, 1, 1);
        alive(&mut s, 0, 2, 1);
        let t0 = OmegaConfig::default().initial_timeout;
        let d = OmegaConfig::default().timeout_increment;
        // Silence longer than the timeout: both suspected.
        s.handle_tick(Time::from_millis(600), &c);
        assert_eq!(s.trusted(), vec![NodeId(0)]);
        // 1 was alive all along (same epoch): its timeout grows. 2 restarted: unchanged.
        alive(&mut s, 700, 1, 1);
        alive(&mut s, 700, 2, 2);
        assert_eq!(s.timeout(NodeId(1)), t0 + d);
        assert_eq!(s.timeout(NodeId(2)), t0);
        // Again and again: growth per false suspicion, capped.
        let mut now = 700;
        for _ in 0..100 {
            now += 20_000;
            s.handle_tick(Time::from_millis(now), &c);
            alive(&mut s, now, 1, 1);
        }
        assert_eq!(s.timeout(NodeId(1)), OmegaConfig::default().max_timeout);
        // The longer timeout is honoured: 1 s of silence no longer suspects it.
        s.handle_tick(Time::from_millis(now + 1000), &c);
        assert!(s.trusted().contains(&NodeId(1)));
    }

    #[test]
    fn own_epoch_comes_from_the_storage_incarnation() {
        let mut c = ctx(3, 4);
        c.incarnation = 7;
        let mut s = Omega::new(NodeId(3), 4, OmegaConfig::default());
        s.handle_start(Time::ZERO, &c);
        assert_eq!(s.recoveries(NodeId(3)), Some(7));
        let first = s.poll_message().unwrap().1;
        assert_eq!(
            decode_with_limit::<OmegaMessage>(&first, 64).unwrap(),
            OmegaMessage::Recovered { epoch: 7 }
        );
        // Peers with fewer recoveries win even with lower ids.
        alive(&mut s, 10, 0, 1);
        assert_eq!(s.leader(&c), Some(NodeId(0)));
        // 0 falls silent: after its timeout this server is the only candidate left.
        s.handle_tick(Time::from_millis(600), &c);
        assert_eq!(s.leader(&c), Some(NodeId(3)));
    }
}
