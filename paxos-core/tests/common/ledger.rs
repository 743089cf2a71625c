//! A small state machine for fuzzing: it folds every applied update into a count and a hash, and
//! its snapshots have a strict format so that `restore` fails on garbage (the core must then drop
//! the snapshot, not install it).

use bytes::Bytes;
use paxos_core::{ClientUpdate, Seq, SnapshotError, StateMachine};

/// The first bytes of every ledger snapshot.
const MAGIC: &[u8; 4] = b"LDG1";

/// Count and hash of the updates applied, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ledger {
    /// Updates applied.
    pub(crate) count: u64,
    /// Order-sensitive hash of (slot, client, timestamp, payload) of every applied update.
    pub(crate) hash: u64,
}

impl Ledger {
    /// The snapshot bytes of a ledger with this count and hash (what a peer would transfer).
    pub(crate) fn encode(count: u64, hash: u64) -> Bytes {
        let mut v = Vec::with_capacity(20);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&count.to_le_bytes());
        v.extend_from_slice(&hash.to_le_bytes());
        Bytes::from(v)
    }
}

fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x0100_0000_01b3).rotate_left(17)
}

impl StateMachine for Ledger {
    fn apply(&mut self, seq: Seq, update: &ClientUpdate) -> Bytes {
        self.count += 1;
        let mut h = mix(self.hash, seq.0);
        h = mix(h, update.client_id.0);
        h = mix(h, update.timestamp.0);
        for b in update.payload.iter() {
            h = mix(h, u64::from(*b));
        }
        self.hash = h;
        Bytes::copy_from_slice(&self.count.to_le_bytes())
    }

    fn snapshot(&self) -> Bytes {
        Ledger::encode(self.count, self.hash)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        if snapshot.len() != 20 || &snapshot[..4] != MAGIC {
            return Err(SnapshotError(format!(
                "not a ledger snapshot ({} bytes)",
                snapshot.len()
            )));
        }
        let word = |i: usize| u64::from_le_bytes(snapshot[i..i + 8].try_into().expect("8 bytes"));
        self.count = word(4);
        self.hash = word(12);
        Ok(())
    }
}
