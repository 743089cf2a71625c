//! Highest-id alive (De Prisco, Lampson & Lynch, as summarised in [TR §6.2]; spec §15.2).
//!
//! Every server broadcasts a heartbeat every `heartbeat_interval`. A peer is alive while its last
//! heartbeat is younger than `timeout`; the leader is the highest id among the alive peers and this
//! server. Simple and fast to settle, but any higher-id server that keeps coming back (after a
//! crash or a partition) takes the leadership every time it returns.

use crate::oracle::{decode_from_peer, delegate_to_oracle, Oracle};
use bytes::Bytes;
use paxos_core::codec::CodecError;
use paxos_core::{
    Destination, ElectionAction, ElectionContext, LeaderElection, NodeId, Time, View,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Timers of the highest-id-alive strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HighestIdConfig {
    /// Period `h` of the heartbeat broadcast.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer leaves the alive set (`T = h + δ`, spec §15.2).
    pub timeout: Duration,
    /// How long this server's own Prepare may stall before it tries a higher view.
    pub prepare_stall_timeout: Duration,
}

impl Default for HighestIdConfig {
    fn default() -> Self {
        HighestIdConfig {
            heartbeat_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            prepare_stall_timeout: Duration::from_secs(1),
        }
    }
}

/// The message of the highest-id strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HighestIdMessage {
    /// `IAmAlive` (the view its sender leads comes from the core's own `Alive`).
    Alive,
}

/// Highest-id alive as a [`LeaderElection`] strategy.
#[derive(Debug)]
pub struct HighestIdAlive {
    me: NodeId,
    servers: usize,
    config: HighestIdConfig,
    /// The failure detector: when each peer was last heard, `None` once it timed out.
    last_heard: Vec<Option<Time>>,
    oracle: Oracle,
}

impl HighestIdAlive {
    /// A strategy for server `me` of `servers`.
    pub fn new(me: NodeId, servers: usize, config: HighestIdConfig) -> HighestIdAlive {
        HighestIdAlive {
            me,
            servers,
            config,
            last_heard: vec![None; servers],
            oracle: Oracle::new(me, config.heartbeat_interval, config.prepare_stall_timeout),
        }
    }

    /// The servers currently believed alive, in id order (this server included).
    pub fn alive(&self) -> Vec<NodeId> {
        (0..self.servers as u32)
            .map(NodeId)
            .filter(|p| *p == self.me || self.last_heard[p.index()].is_some())
            .collect()
    }

    fn expire(&mut self, now: Time) {
        for t in &mut self.last_heard {
            if t.is_some_and(|t| now.saturating_since(t) >= self.config.timeout) {
                *t = None;
            }
        }
        let highest_peer = self
            .last_heard
            .iter()
            .enumerate()
            .rev()
            .find(|(_, t)| t.is_some())
            .map(|(i, _)| NodeId(i as u32));
        self.oracle
            .elect(now, highest_peer.filter(|p| *p > self.me));
    }

    fn heartbeat(&mut self, now: Time) {
        self.oracle.heartbeat(now, &HighestIdMessage::Alive);
    }
}

impl LeaderElection for HighestIdAlive {
    fn name(&self) -> &'static str {
        "highest-id"
    }

    fn handle_start(&mut self, now: Time, _ctx: &ElectionContext) {
        self.last_heard.iter_mut().for_each(|t| *t = None);
        self.oracle.start(now, self.config.timeout);
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
        let Some(HighestIdMessage::Alive) = decode_from_peer(self.me, self.servers, from, payload)?
        else {
            return Ok(());
        };
        self.last_heard[from.index()] = Some(now);
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
    use paxos_core::codec::encode;

    fn alive(s: &mut HighestIdAlive, now: Time, from: u32, c: &ElectionContext) {
        let b = encode(&HighestIdMessage::Alive).unwrap();
        s.handle_message(now, NodeId(from), &b, c).unwrap();
    }

    #[test]
    fn picks_highest_alive_and_drops_a_silent_peer_after_timeout() {
        // spec §15.2: leader = highest id in alive ∪ {me}; a peer leaves after T of silence.
        let c = ctx(1, 4);
        let mut s = HighestIdAlive::new(NodeId(1), 4, HighestIdConfig::default());
        s.handle_start(Time::ZERO, &c);
        assert_eq!(s.leader(&c), None, "listens during the grace period");
        alive(&mut s, Time::from_millis(10), 0, &c);
        alive(&mut s, Time::from_millis(10), 3, &c);
        assert_eq!(s.leader(&c), Some(NodeId(3)));
        assert_eq!(s.alive(), vec![NodeId(0), NodeId(1), NodeId(3)]);
        // 3 falls silent; 0 keeps talking.
        for t in (100..=600).step_by(100) {
            alive(&mut s, Time::from_millis(t), 0, &c);
            s.handle_tick(Time::from_millis(t), &c);
        }
        assert_eq!(s.alive(), vec![NodeId(0), NodeId(1)]);
        assert_eq!(s.leader(&c), Some(NodeId(1)));
        // As leader it asks the core to prepare its own view above every view seen.
        let mut actions = vec![];
        while let Some(a) = s.poll_action() {
            actions.push(a);
        }
        assert_eq!(actions, vec![ElectionAction::Install(View(1))]);
        // 3 comes back and takes over at once.
        alive(&mut s, Time::from_millis(700), 3, &c);
        assert_eq!(s.leader(&c), Some(NodeId(3)));
        assert!(s.accepts_prepare(NodeId(3), View(7), &c));
        assert!(!s.accepts_prepare(NodeId(0), View(8), &c));
    }

    #[test]
    fn heartbeats_are_periodic_and_garbage_is_rejected() {
        let c = ctx(0, 3);
        let mut s = HighestIdAlive::new(NodeId(0), 3, HighestIdConfig::default());
        s.handle_start(Time::ZERO, &c);
        let mut sent = 0;
        for t in (0..1000).step_by(10) {
            s.handle_tick(Time::from_millis(t), &c);
            while s.poll_message().is_some() {
                sent += 1;
            }
        }
        assert_eq!(sent, 10, "one at start, then every 100 ms");
        assert!(s
            .handle_message(Time::ZERO, NodeId(1), &[1, 9, 9], &c)
            .is_err());
    }
}
