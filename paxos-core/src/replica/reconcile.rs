//! Liveness announcements and reconciliation [TR §5.6, §5.9; spec §10, §11].
//!
//! Every server announces its aru in `Alive`; a server that learns it is behind (a peer's aru, or
//! a slot ordered above a hole) waits `recon_delay`, then asks one peer at a time for the missing
//! slots in chunks, preferring the peer that answered last and skipping peers whose last request
//! timed out. The [`Reconciliation`] type holds that bookkeeping; the replica half answers requests
//! and applies replies.

use super::*;

/// Who is ahead, how far behind this server is, and which request is in flight.
#[derive(Clone, Debug)]
pub(super) struct Reconciliation {
    me: usize,
    n: usize,
    /// Highest aru each peer announced (own index unused).
    peer_aru: Vec<Seq>,
    /// The highest slot this server knows to be ordered somewhere.
    target: Seq,
    /// Since when this server has been behind `target`.
    behind_since: Option<Time>,
    /// The request in flight: to whom, sent when.
    outstanding: Option<(NodeId, Time)>,
    /// The peer asked last (the rotation continues after it).
    cursor: usize,
    /// The peer that answered the last reconciliation request with updates: asked again first.
    preferred: Option<usize>,
    /// Peers whose last reconciliation request timed out, one bit per server; cleared when they
    /// are heard from again. Their announced aru may be stale (crashed or cut off), so they are
    /// asked only when no other peer is ahead.
    silent: u64,
}

impl Reconciliation {
    pub(super) fn new(me: NodeId, n: usize) -> Reconciliation {
        Reconciliation {
            me: me.index(),
            n,
            peer_aru: vec![Seq(0); n],
            target: Seq(0),
            behind_since: None,
            outstanding: None,
            cursor: me.index(),
            preferred: None,
            silent: 0,
        }
    }

    /// Each peer's announced aru, with `local_aru` at this server's own index.
    pub(super) fn peer_arus(&self, local_aru: Seq) -> Vec<Seq> {
        let mut v = self.peer_aru.clone();
        v[self.me] = local_aru;
        v
    }

    /// Server `i` was heard from: it is no longer presumed silent.
    pub(super) fn heard_from(&mut self, i: usize) {
        self.silent &= !(1u64 << i);
    }

    /// Peer `i` announced `aru`.
    pub(super) fn note_peer_aru(&mut self, i: usize, aru: Seq) {
        if aru > self.peer_aru[i] {
            self.peer_aru[i] = aru;
        }
    }

    /// Slot `target` is ordered somewhere: behind it since `now` unless already behind.
    pub(super) fn note_target(&mut self, target: Seq, local_aru: Seq, now: Time) {
        if target > self.target {
            self.target = target;
        }
        if self.target > local_aru && self.behind_since.is_none() {
            self.behind_since = Some(now);
        }
    }

    /// Stops reconciling once the aru reached the target; returns whether it has.
    pub(super) fn caught_up(&mut self, local_aru: Seq) -> bool {
        if local_aru >= self.target {
            self.behind_since = None;
            self.outstanding = None;
            return true;
        }
        false
    }

    /// The next request to send at `now`, if one is due: `(peer, from, to)`.
    pub(super) fn next_request(
        &mut self,
        now: Time,
        local_aru: Seq,
        config: &Config,
    ) -> Option<(NodeId, Seq, Seq)> {
        let since = self.behind_since?;
        if self.caught_up(local_aru) {
            return None;
        }
        if now.saturating_since(since) < config.recon_delay {
            return None;
        }
        if let Some((p, sent)) = self.outstanding {
            if now.saturating_since(sent) < config.recon_timeout {
                return None;
            }
            // Unanswered: prefer others until this peer is heard from again.
            self.silent |= 1u64 << p.index();
            if self.preferred == Some(p.index()) {
                self.preferred = None;
            }
        }
        let i = self.pick_peer(local_aru);
        if i == self.me {
            return None; // a cluster of one has nobody to ask
        }
        self.cursor = i;
        let from = local_aru.next();
        let to = Seq(self.target.0.min(from.0 + config.recon_chunk - 1));
        let peer = NodeId(i as u32);
        self.outstanding = Some((peer, now));
        Some((peer, from, to))
    }

    /// The peer to ask for missing slots: the one that answered last while it is still ahead,
    /// else the next peer (rotating) that announced an aru above ours and has not gone silent,
    /// else the next one ahead at all, else simply the next one.
    fn pick_peer(&self, local_aru: Seq) -> usize {
        let me = self.me;
        let ahead = |i: usize| i != me && self.peer_aru[i] > local_aru;
        if let Some(p) = self.preferred.filter(|p| ahead(*p)) {
            return p;
        }
        let order = || (1..=self.n).map(|k| (self.cursor + k) % self.n);
        order()
            .find(|i| ahead(*i) && self.silent & (1u64 << i) == 0)
            .or_else(|| order().find(|i| ahead(*i)))
            .unwrap_or_else(|| {
                let mut i = (self.cursor + 1) % self.n;
                if i == me {
                    i = (i + 1) % self.n;
                }
                i
            })
    }

    /// `from` answered: with updates (`got`), or saying it cannot supply the range
    /// (`!complete`). Returns true when the answer settled the request in flight and had updates.
    pub(super) fn answered(&mut self, from: NodeId, got: bool, complete: bool) -> bool {
        if !(self.outstanding.is_some_and(|(p, _)| p == from) && (got || !complete)) {
            return false;
        }
        self.outstanding = None;
        if got {
            // It has the slots: keep asking it.
            self.preferred = Some(from.index());
        } else if self.preferred == Some(from.index()) {
            // It cannot supply the range (compacted, or it lacks it): try another peer.
            self.preferred = None;
        }
        got
    }

    /// Feeds the state to a fingerprint hasher, times relative to now (see `fingerprint.rs`).
    pub(super) fn hash_at<H: std::hash::Hasher>(
        &self,
        rel: impl Fn(Time) -> Option<u64>,
        h: &mut H,
    ) {
        use std::hash::Hash;
        let Reconciliation {
            me: _,
            n: _,
            peer_aru,
            target,
            behind_since,
            outstanding,
            cursor,
            preferred,
            silent,
        } = self;
        peer_aru.hash(h);
        target.hash(h);
        behind_since.map(&rel).hash(h);
        outstanding.map(|(p, t)| (p, rel(t))).hash(h);
        (cursor, preferred, silent).hash(h);
    }
}

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    pub(super) fn on_alive(&mut self, from: NodeId, aru: Seq, installed: View) {
        self.recon.heard_from(from.index());
        self.see_view(installed);
        if installed.leader(self.n) == from && installed > self.leader_announced_view {
            self.leader_announced_view = installed;
        }
        self.note_peer_aru(from, aru);
    }

    pub(super) fn note_peer_aru(&mut self, from: NodeId, aru: Seq) {
        self.recon.note_peer_aru(from.index(), aru);
        if aru > self.local_aru {
            self.note_recon_target(aru);
        }
    }

    pub(super) fn note_recon_target(&mut self, target: Seq) {
        self.recon.note_target(target, self.local_aru, self.now);
    }

    pub(super) fn reconcile_if_behind(&mut self, now: Time) {
        if self.transfer.receiving(now, self.config.recon_timeout) {
            return; // the snapshot under way covers what is missing
        }
        if let Some((peer, from, to)) = self.recon.next_request(now, self.local_aru, &self.config) {
            self.metrics.recon_requests += 1;
            self.send(Destination::Node(peer), Message::ReconRequest { from, to });
        }
    }

    pub(super) fn on_recon_request(&mut self, from: NodeId, lo: Seq, hi: Seq) {
        if lo.0 == 0 || hi < lo {
            self.metrics.dropped_invalid += 1;
            return;
        }
        if lo < self.history.first() {
            // Compacted here: state transfer instead.
            if self.latest_snapshot.as_ref().is_some_and(|s| s.seq() >= lo)
                && self.offer_snapshot(from)
            {
                return;
            }
        }
        let hi = Seq(hi.0.min(lo.0.saturating_add(self.config.recon_chunk - 1)));
        let mut updates = Vec::new();
        let mut bytes = 0usize;
        let mut complete = true;
        for s in lo.0..=hi.0 {
            match self.ordered_update(Seq(s)) {
                Some(u) => {
                    bytes += u.wire_size();
                    updates.push(OrderedUpdate {
                        seq: Seq(s),
                        update: u,
                    });
                    if bytes >= self.config.max_message_bytes {
                        break;
                    }
                }
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if updates.is_empty() && complete {
            return;
        }
        self.send(
            Destination::Node(from),
            Message::ReconReply { updates, complete },
        );
    }

    pub(super) fn on_recon_reply(
        &mut self,
        from: NodeId,
        updates: Vec<OrderedUpdate>,
        complete: bool,
    ) {
        let got = !updates.is_empty();
        let aru_before = self.local_aru;
        for o in updates {
            self.apply_ordered(o.seq, o.update);
        }
        self.make_progress();
        // If this reply moved us on, ask again at once rather than at the next tick (only then: a
        // duplicated or stale reply must not multiply the requests in flight).
        if self.recon.answered(from, got, complete) && self.local_aru > aru_before {
            self.reconcile_if_behind(self.now);
        }
    }
}
