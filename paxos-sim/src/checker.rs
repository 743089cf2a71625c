//! Every oracle of a run, in one place (testing.md (a), *Invariants*, "global checker after
//! every event"): the world reports what it sees ([`Checker`]'s `on_*` methods) and turns each
//! `Err` into a violation. Incremental: O(1) work per execution, O(items) per message or batch.
//!
//! * Here: the canonical order (invariants 1, 3, 4, 6). The first report of each slot (from any
//!   replica) becomes the *canonical* order; every other report of that slot must match it
//!   exactly. Validity and exactly-once are checked once, when a slot enters the canonical order;
//!   agreement at every report, digests whenever a replica's aru moves. A client reply must be
//!   for a submitted update the canonical order applied, with the result it produced. A message
//!   in a codec round trip must come back unchanged (*Invariants* of (e), on the sampled
//!   messages).
//! * [`durable`]: durable monotonicity across restarts (invariant 5).
//! * [`Oracles`] (`src/oracles/`): the effect-stream oracles, ghost accept record (invariant 2)
//!   and durability ordering; a slot entering the canonical order is checked against the ghost's
//!   chosen value and the ghost is trimmed with the canonical order.

mod durable;
mod sessions;

use crate::oracles::Oracles;
use crate::report::ViolationKind;
use crate::state_machine::{payload_hash, SimStateMachine};
use bytes::Bytes;
use paxos_core::{
    decode_envelope, encode_envelope, replica::Verdict, ClientReply, ClientUpdate, Config,
    DurableState, Envelope, Executed, Message, NodeId, PersistBatch, ReplyOutcome, Seq, ViewRecord,
    CLOCK_CLIENT, NOOP_CLIENT, SESSION_ID_BASE,
};
use std::collections::VecDeque;

/// The generator state and length of the payload of `(client, ts)`.
fn payload_seed(seed: u64, client: u64, ts: u64, fixed_len: Option<usize>) -> (u64, usize) {
    let state = crate::state_machine::finish(
        seed ^ client.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ts.rotate_left(32),
    ) | 1;
    (state, fixed_len.unwrap_or(1 + (state % 64) as usize))
}

/// xorshift64: cheap, and the content only has to be a function of (seed, client, ts).
#[inline]
fn next_word(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Deterministic payload of update `(client, ts)`: its content can be recomputed for validity
/// checks instead of being stored.
pub fn make_payload(seed: u64, client: u64, ts: u64, fixed_len: Option<usize>) -> Bytes {
    let (mut state, len) = payload_seed(seed, client, ts, fixed_len);
    let mut v = vec![0u8; len];
    let mut chunks = v.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&next_word(&mut state).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&next_word(&mut state).to_le_bytes()[..n]);
    Bytes::from(v)
}

/// Whether `bytes` is exactly the payload [`make_payload`] gives for `(client, ts)`, without
/// building it.
pub(crate) fn payload_matches(
    seed: u64,
    client: u64,
    ts: u64,
    fixed_len: Option<usize>,
    bytes: &[u8],
) -> bool {
    let (mut state, len) = payload_seed(seed, client, ts, fixed_len);
    if bytes.len() != len {
        return false;
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        if chunk != next_word(&mut state).to_le_bytes() {
            return false;
        }
    }
    let rest = chunks.remainder();
    rest == &next_word(&mut state).to_le_bytes()[..rest.len()]
}

#[derive(Clone, Copy, Debug)]
struct Canon {
    client: u64,
    ts: u64,
    payload_len: usize,
    applied: bool,
    chain: u64,
}

pub(crate) type Check = Result<(), (ViolationKind, String)>;

pub(crate) struct Checker {
    seed: u64,
    payload_len: Option<usize>,
    /// Slot of `canon[0]`.
    base: u64,
    canon: VecDeque<Canon>,
    /// Chain value at slot `base - 1`.
    base_chain: u64,
    /// Last slot each replica reported executed.
    pub(crate) pos: Vec<u64>,
    /// Snapshot installs not yet matched by a skip: each lets one later execution skip ahead.
    /// A count, not a flag: in one round a replica can execute reconciled slots and then install
    /// a snapshot above them (two skips for two installs in one drain; found by the `k` mode,
    /// omega N = 3 seed 6446). A spare credit (two installs with no execution between) can let
    /// one later gap pass here; the digest check at the aru still catches a skipped update.
    jump_ok: Vec<u64>,
    /// Snapshot installs each replica reported so far (its metrics counter).
    snaps_seen: Vec<u64>,
    /// The aru at which each replica's digest was last checked.
    digest_pos: Vec<u64>,
    /// The highest view record each server ever made durable.
    promised: Vec<ViewRecord>,
    applied_ts: Vec<u64>,
    applied_chain: Vec<u64>,
    /// Each client's latest timestamp.
    submitted: Vec<u64>,
    /// Address and length of each client's latest payload. The client keeps that `Bytes` alive and
    /// it is immutable, so an executed payload at the same address is byte-identical for free.
    submitted_at: Vec<(usize, usize)>,
    client_server: Vec<NodeId>,
    pub(crate) duplicates_skipped: u64,
    /// The digest of the first snapshot written at each slot, by any server.
    snapshot_digests: std::collections::BTreeMap<u64, (usize, paxos_core::Digest)>,
    pub(crate) noops: u64,
    pub(crate) executions: u64,
    /// The session rules' reference model, with sessions on.
    session_model: Option<sessions::SessionModel>,
    /// The client (index) that registered each session, from the canonical order.
    session_owner: std::collections::HashMap<u64, usize>,
    /// The effect-stream oracles.
    pub(crate) oracles: Oracles,
}

impl Checker {
    pub(crate) fn new(
        seed: u64,
        payload_len: Option<usize>,
        config: &Config,
        client_server: Vec<NodeId>,
    ) -> Checker {
        let c = client_server.len();
        let nodes = config.servers;
        Checker {
            seed,
            payload_len,
            base: 1,
            canon: VecDeque::new(),
            base_chain: 0,
            pos: vec![0; nodes],
            jump_ok: vec![0; nodes],
            snaps_seen: vec![0; nodes],
            digest_pos: vec![0; nodes],
            promised: vec![ViewRecord::default(); nodes],
            applied_ts: vec![0; c],
            applied_chain: vec![0; c],
            submitted: vec![0; c],
            submitted_at: vec![(0, 0); c],
            client_server,
            duplicates_skipped: 0,
            snapshot_digests: Default::default(),
            noops: 0,
            executions: 0,
            session_model: config.sessions.map(sessions::SessionModel::new),
            session_owner: Default::default(),
            oracles: Oracles::new(config),
        }
    }

    /// Slots in the canonical order so far.
    pub(crate) fn ordered(&self) -> u64 {
        self.base - 1 + self.canon.len() as u64
    }

    /// Highest timestamp of `client` applied in the canonical order, and the reply it produced.
    pub(crate) fn applied(&self, client: usize) -> (u64, u64) {
        (self.applied_ts[client], self.applied_chain[client])
    }

    /// The canonical digest after executing through `seq`, if still known.
    pub(crate) fn digest_at(&self, seq: u64) -> Option<u64> {
        if seq == 0 {
            return Some(0);
        }
        if seq + 1 == self.base {
            return Some(self.base_chain);
        }
        let i = seq.checked_sub(self.base)?;
        self.canon.get(i as usize).map(|c| c.chain)
    }

    /// Forgets canonical and ghost slots below `floor` (nobody can report them again).
    pub(crate) fn trim(&mut self, floor: u64) {
        self.oracles.trim(floor);
        // No server can write a snapshot below every server's executed prefix any more.
        self.snapshot_digests = self.snapshot_digests.split_off(&floor);
        while self.base < floor && self.canon.len() > 1 {
            let c = self.canon.pop_front().expect("non-empty");
            self.base_chain = c.chain;
            self.base += 1;
        }
    }

    /// `node` booted at `aru` from durable state whose snapshot ends at `snapshot` and whose log
    /// is contiguous through `durable_prefix`: it executes again from its snapshot.
    pub(crate) fn on_boot(
        &mut self,
        node: usize,
        aru: Seq,
        durable_prefix: Seq,
        snapshot: Seq,
    ) -> Check {
        self.snaps_seen[node] = 0;
        self.digest_pos[node] = u64::MAX;
        self.pos[node] = snapshot.0;
        self.jump_ok[node] = 0;
        durable::restart_at_prefix(node, aru, durable_prefix)
    }

    /// `poll_persist` of `node` handed out `b` (see [`Oracles::on_written`]).
    pub(crate) fn on_written(&mut self, node: usize, b: &PersistBatch) -> Check {
        if let Some(s) = &b.snapshot {
            let (first, digest) = *self
                .snapshot_digests
                .entry(s.seq().0)
                .or_insert((node, s.digest()));
            if digest != s.digest() {
                return Err((
                    ViolationKind::SnapshotDivergence,
                    format!(
                        "n{node}'s snapshot at {} has digest {}, n{first}'s {digest}",
                        s.seq(),
                        s.digest()
                    ),
                ));
            }
        }
        self.oracles.on_written(node, b)
    }

    /// `b` is about to be folded into `node`'s durable state `d`.
    pub(crate) fn on_durable(&mut self, node: usize, b: &PersistBatch, d: &DurableState) -> Check {
        durable::batch_keeps(node, d, b)?;
        self.oracles.on_durable(node, b, d)
    }

    /// A batch was folded into `node`'s durable state, which is now `d`.
    pub(crate) fn after_durable(&mut self, node: usize, d: &DurableState) -> Check {
        durable::promise_kept(node, d.view, self.promised[node])?;
        self.promised[node] = d.view;
        Ok(())
    }

    /// `node` releases `m`; `d` is its durable state at this instant (see [`Oracles::on_send`]).
    pub(crate) fn on_send(&mut self, node: usize, m: &Message, d: &DurableState) -> Check {
        self.oracles.on_send(node, m, d)
    }

    /// Client `c` submitted `u`, its update with the next timestamp.
    pub(crate) fn on_submitted(&mut self, c: usize, u: &ClientUpdate) {
        self.submitted_at[c] = (u.payload.as_ptr() as usize, u.payload.len());
        self.submitted[c] = u.timestamp.0;
    }

    /// `node` has installed `installed` snapshots so far: each new one lets one later execution
    /// skip ahead.
    pub(crate) fn on_snapshots_installed(&mut self, node: usize, installed: u64) {
        if installed != self.snaps_seen[node] {
            self.jump_ok[node] += installed.saturating_sub(self.snaps_seen[node]);
            self.snaps_seen[node] = installed;
        }
    }

    /// `node`'s aru is `pos`; when it moved, its state machine digest (`digest`) must be the
    /// canonical one at `pos`, if that is still known.
    pub(crate) fn on_aru(&mut self, node: usize, pos: u64, digest: impl FnOnce() -> u64) -> Check {
        if pos == self.digest_pos[node] {
            return Ok(());
        }
        self.digest_pos[node] = pos;
        if let Some(d) = self.digest_at(pos) {
            let mine = digest();
            if mine != d {
                return Err((
                    ViolationKind::Digest,
                    format!(
                        "n{node} at slot {pos} has digest {mine:#x}, the canonical order gives {d:#x}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `node` replied `rep`: to a known client, for an update it submitted and the canonical
    /// order applied, with the result that execution produced (a late duplicate is fine).
    pub(crate) fn on_reply(&self, node: usize, rep: &ClientReply) -> Check {
        let i = node;
        let c = self.client_index(rep.client_id.0);
        if c >= self.submitted.len() {
            return Err((
                ViolationKind::Validity,
                format!("n{i} replied to unknown client {}", rep.client_id.0),
            ));
        }
        let ts = rep.timestamp.0;
        match rep.outcome {
            ReplyOutcome::Applied if ts > 0 => {}
            ReplyOutcome::SessionOpened(sid) if ts == 0 => {
                return match self.session_owner.get(&sid.0) {
                    Some(&owner) if owner == c => Ok(()),
                    _ => Err((
                        ViolationKind::Validity,
                        format!(
                            "n{i} told {c} it opened session {}, which it did not",
                            sid.0
                        ),
                    )),
                };
            }
            // Refused: nothing to compare (the canonical verdict is checked by the model).
            ReplyOutcome::SessionExpired if self.session_model.is_some() => return Ok(()),
            // True only if the canonical order applied that later timestamp of this client.
            ReplyOutcome::Superseded(later) => {
                let (applied_ts, _) = self.applied(c);
                return if later.0 > ts && applied_ts >= later.0 {
                    Ok(())
                } else {
                    Err((
                        ViolationKind::Validity,
                        format!(
                            "n{i} told {c} that {ts} was superseded by {}, applied {applied_ts}",
                            later.0
                        ),
                    ))
                };
            }
            o => {
                return Err((
                    ViolationKind::Validity,
                    format!("n{i} answered {c}:{ts} with {o:?}"),
                ))
            }
        }
        let (applied_ts, applied_chain) = self.applied(c);
        if ts > self.submitted[c] {
            return Err((
                ViolationKind::ExactlyOnce,
                format!("n{i} replied to {c}:{ts}, which was never submitted"),
            ));
        }
        if ts > applied_ts {
            return Err((
                ViolationKind::ExactlyOnce,
                format!("n{i} replied to {c}:{ts}, which the canonical order never applied"),
            ));
        }
        if ts == applied_ts && rep.result.as_ref() != applied_chain.to_le_bytes() {
            return Err((
                ViolationKind::ExactlyOnce,
                format!("n{i} replied to {c}:{ts} with a result its execution did not produce"),
            ));
        }
        Ok(())
    }

    /// The client index behind a client id: a session's owner, or the id itself (a client's
    /// nonce, or its id without sessions). Unknown sessions map past every client.
    fn client_index(&self, id: u64) -> usize {
        if id >= SESSION_ID_BASE {
            self.session_owner.get(&id).copied().unwrap_or(usize::MAX)
        } else {
            id as usize
        }
    }

    pub(crate) fn on_executed(&mut self, node: usize, e: &Executed) -> Check {
        self.executions += 1;
        let s = e.seq.0;
        let p = self.pos[node];
        if s <= p {
            return Err((
                ViolationKind::Agreement,
                format!("n{node} executed slot {s} again (already at {p})"),
            ));
        }
        if s != p + 1 {
            if self.jump_ok[node] == 0 {
                return Err((
                    ViolationKind::Agreement,
                    format!("n{node} executed slot {s} after {p} without a snapshot in between"),
                ));
            }
            self.jump_ok[node] -= 1;
        }
        self.pos[node] = s;
        let u = &e.update;
        if s < self.base {
            return Ok(()); // trimmed: every replica that could disagree is past it
        }
        let idx = (s - self.base) as usize;
        if idx < self.canon.len() {
            // Payload bytes of applied updates are covered by the digest check (the chain hashes
            // them); comparing ids here keeps this O(1) without hashing every payload again.
            let c = self.canon[idx];
            if c.client != u.client_id.0
                || c.ts != u.timestamp.0
                || c.payload_len != u.payload.len()
            {
                return Err((
                    ViolationKind::Agreement,
                    format!(
                        "n{node} executed {}:{} at slot {s}, but the canonical order has {}:{} there",
                        u.client_id.0, u.timestamp.0, c.client, c.ts
                    ),
                ));
            }
            if c.applied != e.applied {
                return Err((
                    ViolationKind::ExactlyOnce,
                    format!(
                        "n{node} {} {}:{} at slot {s}, but the canonical order {} it",
                        if e.applied { "applied" } else { "skipped" },
                        c.client,
                        c.ts,
                        if c.applied { "applied" } else { "skipped" }
                    ),
                ));
            }
            return Ok(());
        }
        if idx > self.canon.len() {
            return Err((
                ViolationKind::Agreement,
                format!(
                    "n{node} executed slot {s} beyond the canonical order (which ends at {})",
                    self.ordered()
                ),
            ));
        }
        // A new canonical slot.
        let ph = payload_hash(&u.payload);
        let prev = self.canon.back().map_or(self.base_chain, |c| c.chain);
        let client = u.client_id.0;
        let ts = u.timestamp.0;
        let mut chain = prev;
        if let Some(m) = &mut self.session_model {
            let want = m.step(s, u);
            if want != e.verdict {
                return Err((
                    ViolationKind::ExactlyOnce,
                    format!(
                        "n{node} gave {client}:{ts} at slot {s} the verdict {:?}; the session \
                         rules give {want:?}",
                        e.verdict
                    ),
                ));
            }
        }
        if let Verdict::Opened(sid) = e.verdict {
            let c = client as usize;
            if ts != 0 || c >= self.submitted.len() || u.server_id != self.client_server[c] {
                return Err((
                    ViolationKind::Validity,
                    format!("slot {s} registers {client}:{ts}, which no client sent"),
                ));
            }
            self.session_owner.insert(sid.0, c);
        } else if ts == 0 && self.session_model.is_some() {
            // A registration retried while its session is open: a duplicate, nothing applied.
            let c = client as usize;
            if e.applied || c >= self.submitted.len() {
                return Err((
                    ViolationKind::Validity,
                    format!("slot {s} holds registration {client}:0 as {:?}", e.verdict),
                ));
            }
        } else if e.verdict == Verdict::Expired {
            let c = self.client_index(client);
            if c >= self.submitted.len() || ts > self.submitted[c] {
                return Err((
                    ViolationKind::Validity,
                    format!("slot {s} refuses {client}:{ts}, which no client submitted"),
                ));
            }
        } else if u.client_id == NOOP_CLIENT || u.client_id == CLOCK_CLIENT {
            if e.applied {
                return Err((
                    ViolationKind::ExactlyOnce,
                    format!("n{node} applied a no-op at slot {s}"),
                ));
            }
            self.noops += 1;
        } else {
            let c = self.client_index(client);
            if c >= self.submitted.len() || ts == 0 || ts > self.submitted[c] {
                return Err((
                    ViolationKind::Validity,
                    format!("slot {s} holds {client}:{ts}, which no client submitted"),
                ));
            }
            if u.server_id != self.client_server[c] {
                return Err((
                    ViolationKind::Validity,
                    format!(
                        "slot {s} holds {client}:{ts} naming server {} (client is attached to {})",
                        u.server_id, self.client_server[c]
                    ),
                ));
            }
            let same_buffer = ts == self.submitted[c]
                && self.submitted_at[c] == (u.payload.as_ptr() as usize, u.payload.len());
            if !same_buffer
                && !payload_matches(self.seed, c as u64, ts, self.payload_len, &u.payload)
            {
                return Err((
                    ViolationKind::Validity,
                    format!("slot {s} holds {client}:{ts} with a payload that was not submitted"),
                ));
            }
            if e.applied {
                if ts <= self.applied_ts[c] {
                    return Err((
                        ViolationKind::ExactlyOnce,
                        format!(
                            "slot {s} applies {client}:{ts}, but {client}:{} was already applied",
                            self.applied_ts[c]
                        ),
                    ));
                }
                chain = SimStateMachine::chain_step_hashed(prev, e.seq, u, ph);
                self.applied_ts[c] = ts;
                self.applied_chain[c] = chain;
            } else {
                if ts > self.applied_ts[c] {
                    return Err((
                        ViolationKind::ExactlyOnce,
                        format!(
                            "slot {s} skips {client}:{ts} as a duplicate, but it was never applied"
                        ),
                    ));
                }
                self.duplicates_skipped += 1;
            }
        }
        self.oracles.on_canonical(node, e.seq, u)?;
        self.canon.push_back(Canon {
            client,
            ts,
            payload_len: u.payload.len(),
            applied: e.applied,
            chain,
        });
        Ok(())
    }
}

/// `msg` from `from` after an encode and a decode, which must give it back unchanged.
pub(crate) fn codec_round_trip(
    from: usize,
    msg: Message,
) -> Result<Message, (ViolationKind, String)> {
    let env = Envelope {
        from: NodeId(from as u32),
        message: msg,
    };
    match encode_envelope(&env).and_then(|b| decode_envelope(&b)) {
        Ok(back) if back == env => Ok(back.message),
        Ok(_) => Err((
            ViolationKind::Codec,
            format!("{} changed in a codec round trip", env.message.kind()),
        )),
        Err(e) => Err((
            ViolationKind::Codec,
            format!("{} failed a codec round trip: {e}", env.message.kind()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracles::ghost::Value;
    use paxos_core::{ClientId, ClientUpdate, Timestamp, View};

    fn exec(seq: u64, c: u64, ts: u64, applied: bool) -> Executed {
        Executed {
            seq: Seq(seq),
            update: ClientUpdate {
                client_id: ClientId(c),
                server_id: NodeId(0),
                timestamp: Timestamp(ts),
                payload: make_payload(7, c, ts, None),
            },
            applied,
            verdict: if applied {
                paxos_core::replica::Verdict::Applied
            } else {
                paxos_core::replica::Verdict::Duplicate
            },
        }
    }

    /// Has every one of `nodes` servers accept `e`'s update at its slot in view 1 (in the ghost).
    fn choose(k: &mut Checker, nodes: usize, e: &Executed) {
        let g = &mut k.oracles.ghost;
        g.define(e.seq, View(1), Value::of(&e.update), "test")
            .unwrap();
        for i in 0..nodes {
            g.accept(e.seq, View(1), i, true, true).unwrap();
        }
    }

    #[test]
    fn a_first_execution_must_be_chosen() {
        let mut k = Checker::new(7, None, &Config::new(NodeId(0), 3), vec![NodeId(0); 2]);
        k.submitted = vec![3, 3];
        let e = exec(1, 0, 1, true);
        let g = &mut k.oracles.ghost;
        g.define(e.seq, View(1), Value::of(&e.update), "test")
            .unwrap();
        g.accept(e.seq, View(1), 2, true, true).unwrap();
        assert_eq!(
            k.on_executed(0, &e).unwrap_err().0,
            ViolationKind::UnchosenOrdered
        );
        let mut k = Checker::new(7, None, &Config::new(NodeId(0), 3), vec![NodeId(0); 2]);
        k.submitted = vec![3, 3];
        choose(&mut k, 2, &e);
        assert!(k.on_executed(0, &e).is_ok());
    }

    #[test]
    fn catches_disagreement_double_apply_and_invented_updates() {
        let mut k = Checker::new(7, None, &Config::new(NodeId(0), 2), vec![NodeId(0); 2]);
        k.submitted = vec![3, 3];
        for e in [exec(1, 0, 1, true), exec(2, 1, 1, true)] {
            choose(&mut k, 2, &e);
        }
        assert!(k.on_executed(0, &exec(1, 0, 1, true)).is_ok());
        assert!(k.on_executed(1, &exec(1, 0, 1, true)).is_ok());
        assert_eq!(
            k.on_executed(1, &exec(2, 1, 1, true)).map_err(|e| e.0),
            Ok(())
        );
        assert_eq!(
            k.on_executed(0, &exec(2, 1, 2, true)).unwrap_err().0,
            ViolationKind::Agreement
        );
        assert_eq!(
            k.on_executed(1, &exec(3, 0, 1, true)).unwrap_err().0,
            ViolationKind::ExactlyOnce
        );
        let mut k = Checker::new(7, None, &Config::new(NodeId(0), 1), vec![NodeId(0)]);
        k.submitted = vec![1];
        assert_eq!(
            k.on_executed(0, &exec(1, 0, 2, true)).unwrap_err().0,
            ViolationKind::Validity
        );
        assert!(k.digest_at(0) == Some(0));
    }
}
