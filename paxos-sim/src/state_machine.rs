//! The replicated application the simulator runs: a hash chain plus a small key-value map.

use bytes::{Bytes, BytesMut};
use paxos_core::{ClientUpdate, Seq, SnapshotError, StateMachine};
use serde::{Deserialize, Serialize};

/// FxHash-style word mixer: cheap, deterministic and good enough to tell states apart.
#[inline]
pub(crate) fn mix(h: u64, x: u64) -> u64 {
    (h.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// Final avalanche so that similar inputs give unrelated digests.
#[inline]
pub(crate) fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A 64-bit hash of a byte string (length-prefixed; four independent lanes over 32-byte blocks so
/// the multiplies overlap).
pub fn payload_hash(bytes: &[u8]) -> u64 {
    #[inline]
    fn word(c: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    }
    let mut lanes = [
        0x243f_6a88_85a3_08d3u64,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    ];
    let mut blocks = bytes.chunks_exact(32);
    for b in &mut blocks {
        for (k, lane) in lanes.iter_mut().enumerate() {
            *lane = mix(*lane, word(&b[8 * k..8 * k + 8]));
        }
    }
    let mut h = mix(bytes.len() as u64, lanes[0]);
    h = mix(h, lanes[1]);
    h = mix(h, lanes[2]);
    h = mix(h, lanes[3]);
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    for c in &mut words {
        h = mix(h, word(c));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        h = mix(h, u64::from_le_bytes(w));
    }
    finish(h)
}

/// The state machine every simulated replica runs.
///
/// It keeps a running 64-bit hash chain over every applied `(seq, update id, payload)` and a small
/// key-value map (key: first payload byte mod 16, value: payload hash). Two replicas that applied
/// the same updates at the same slots have the same [`SimStateMachine::digest`]; the simulator's
/// checker recomputes the chain independently with [`SimStateMachine::chain_step`] and compares.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SimStateMachine {
    chain: u64,
    applied: u64,
    last_seq: u64,
    kv: [u64; 16],
    /// Replies are carved out of shared 4 KiB chunks: one allocation per 512 replies instead of
    /// one each (not part of the state).
    #[serde(skip)]
    replies: BytesMut,
}

impl PartialEq for SimStateMachine {
    fn eq(&self, other: &Self) -> bool {
        (self.chain, self.applied, self.last_seq, self.kv)
            == (other.chain, other.applied, other.last_seq, other.kv)
    }
}

impl Eq for SimStateMachine {}

impl SimStateMachine {
    /// A fresh, empty state machine.
    pub fn new() -> SimStateMachine {
        SimStateMachine::default()
    }

    /// The chain value after applying `update` at `seq` on top of `prev` (the one definition
    /// shared by the state machine and the checker).
    pub fn chain_step(prev: u64, seq: Seq, update: &ClientUpdate) -> u64 {
        Self::chain_step_hashed(prev, seq, update, payload_hash(&update.payload))
    }

    /// [`SimStateMachine::chain_step`] with the payload hash already computed.
    pub fn chain_step_hashed(prev: u64, seq: Seq, update: &ClientUpdate, payload: u64) -> u64 {
        let mut h = mix(prev, seq.0);
        h = mix(h, update.client_id.0);
        h = mix(h, update.timestamp.0);
        h = mix(h, payload);
        finish(h)
    }

    /// The digest of the whole state: the hash chain (the map is a function of it).
    pub fn digest(&self) -> u64 {
        self.chain
    }

    /// Number of updates applied (duplicates and no-ops are never applied).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The slot of the last applied update.
    pub fn last_seq(&self) -> Seq {
        Seq(self.last_seq)
    }

    /// The key-value map: value (payload hash of the last write, 0 if never written) per key.
    pub fn kv(&self) -> &[u64; 16] {
        &self.kv
    }
}

impl StateMachine for SimStateMachine {
    fn apply(&mut self, seq: Seq, update: &ClientUpdate) -> Bytes {
        let ph = payload_hash(&update.payload);
        self.chain = Self::chain_step_hashed(self.chain, seq, update, ph);
        self.applied += 1;
        self.last_seq = seq.0;
        let key = update.payload.first().copied().unwrap_or(0) % 16;
        self.kv[usize::from(key)] = ph;
        if self.replies.capacity() - self.replies.len() < 8 {
            self.replies = BytesMut::with_capacity(4096);
        }
        self.replies.extend_from_slice(&self.chain.to_le_bytes());
        self.replies.split().freeze()
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("state machine serialises"))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let restored: SimStateMachine =
            postcard::from_bytes(snapshot).map_err(|e| SnapshotError(e.to_string()))?;
        self.chain = restored.chain;
        self.applied = restored.applied;
        self.last_seq = restored.last_seq;
        self.kv = restored.kv;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos_core::{ClientId, NodeId, Timestamp};

    fn upd(c: u64, ts: u64, p: &[u8]) -> ClientUpdate {
        ClientUpdate {
            client_id: ClientId(c),
            server_id: NodeId(0),
            timestamp: Timestamp(ts),
            payload: Bytes::copy_from_slice(p),
        }
    }

    #[test]
    fn snapshot_roundtrip_and_chain_matches_checker() {
        let mut sm = SimStateMachine::new();
        let mut chain = 0;
        for i in 1..20u64 {
            let u = upd(i % 3, i, &[i as u8; 13]);
            sm.apply(Seq(i), &u);
            chain = SimStateMachine::chain_step(chain, Seq(i), &u);
        }
        assert_eq!(sm.digest(), chain);
        let snap = sm.snapshot();
        let mut other = SimStateMachine::new();
        other.restore(&snap).unwrap();
        assert_eq!(other, sm);
        assert!(other.restore(b"\xff\xff").is_err());
    }

    #[test]
    fn payload_hash_separates_lengths() {
        assert_ne!(payload_hash(b""), payload_hash(b"\0"));
        assert_ne!(payload_hash(b"abcdefgh"), payload_hash(b"abcdefgh\0"));
    }
}
