//! The replicated key-value store: the state machine `paxos-node` runs by default.
//!
//! Commands and results travel as postcard inside client updates. Every command goes through the
//! log, reads included, so every read is linearizable. A command that does not decode is answered
//! with [`KvResult::Invalid`] at every replica alike; the store never panics on client bytes.

use bytes::Bytes;
use imbl::OrdMap;
use paxos_core::SnapshotSource;
use paxos_core::{ClientUpdate, Seq, SnapshotError, StateMachine};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest value accepted.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// An operation on the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Read `key`.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Set `key` to `new` (or remove it when `new` is `None`) only if it currently holds `expected`
    /// (`None`: absent).
    Cas {
        /// The key.
        key: Bytes,
        /// The value expected now.
        expected: Option<Bytes>,
        /// The value to set.
        new: Option<Bytes>,
    },
}

impl KvCommand {
    /// Encodes the command as a client-update payload.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("commands always serialise"))
    }

    /// Decodes a payload.
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The outcome of a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResult {
    /// A Put or Delete was applied.
    Done,
    /// The value read (Get), or the previous value (Delete).
    Value(Option<Bytes>),
    /// Cas applied.
    Swapped,
    /// Cas refused: the key holds `current`.
    CasFailed {
        /// What the key holds.
        current: Option<Bytes>,
    },
    /// The command was malformed or too large; nothing changed.
    Invalid(String),
}

impl KvResult {
    /// Encodes the result as reply bytes.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("results always serialise"))
    }

    /// Decodes reply bytes.
    pub fn decode(bytes: &[u8]) -> Result<KvResult, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// An in-memory ordered map driven by the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    /// A persistent map: cloning it is O(1) and shares structure, so [`StateMachine::freeze`]
    /// hands out a frozen copy while `apply` goes on.
    map: OrdMap<Bytes, Bytes>,
    applied: Seq,
    /// The incremental digest (see [`KvStore::digest`]).
    sum: u64,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// Reads a key locally (not linearizable; for tests and status).
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.map.get(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The last slot applied.
    pub fn applied(&self) -> Seq {
        self.applied
    }

    /// A 64-bit digest of the contents, to compare replicas: the wrapping sum of a hash of every
    /// (key, value) pair, kept up to date by each write (O(1) to read, whatever the size).
    pub fn digest(&self) -> u64 {
        self.sum
    }

    fn insert(&mut self, key: Bytes, value: Bytes) {
        self.sum = self.sum.wrapping_add(pair_hash(&key, &value));
        if let Some(old) = self.map.insert(key.clone(), value) {
            self.sum = self.sum.wrapping_sub(pair_hash(&key, &old));
        }
    }

    fn remove(&mut self, key: &Bytes) -> Option<Bytes> {
        let old = self.map.remove(key)?;
        self.sum = self.sum.wrapping_sub(pair_hash(key, &old));
        Some(old)
    }

    fn run(&mut self, cmd: KvCommand) -> KvResult {
        let too_big = |k: &Bytes, v: Option<&Bytes>| {
            k.len() > MAX_KEY_BYTES || v.is_some_and(|v| v.len() > MAX_VALUE_BYTES)
        };
        match cmd {
            KvCommand::Put { key, value } => {
                if too_big(&key, Some(&value)) {
                    return KvResult::Invalid("key or value too large".into());
                }
                self.insert(key, value);
                KvResult::Done
            }
            KvCommand::Get { key } => KvResult::Value(self.map.get(&key).cloned()),
            KvCommand::Delete { key } => KvResult::Value(self.remove(&key)),
            KvCommand::Cas { key, expected, new } => {
                if too_big(&key, new.as_ref()) {
                    return KvResult::Invalid("key or value too large".into());
                }
                let current = self.map.get(&key).cloned();
                if current != expected {
                    return KvResult::CasFailed { current };
                }
                match new {
                    Some(v) => {
                        self.insert(key, v);
                    }
                    None => {
                        self.remove(&key);
                    }
                }
                KvResult::Swapped
            }
        }
    }
}

/// A hash of the length-prefixed key and value, taken 8 bytes at a time (multiply, rotate), then
/// mixed (splitmix64's finaliser) so that the sum over pairs does not cancel structurally. Every
/// put hashes the pair it replaces and the new one, and a restore hashes every pair on the
/// driver: byte-at-a-time FNV-1a took seconds over a 1 GiB state (a 6 s driver round at
/// install). Equal on every replica; not persisted, so its definition may change.
fn pair_hash(k: &[u8], v: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let step = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(29);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [k, v] {
        h = step(h, part.len() as u64);
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            h = step(h, u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        let rest = words.remainder();
        last[..rest.len()].copy_from_slice(rest);
        h = step(h, u64::from_le_bytes(last));
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The snapshot's bytes: postcard of `(applied, [(key, value)])`, keys in order; read with the
/// keys and values borrowed from the buffer.
#[derive(Deserialize)]
struct SnapshotBody<'a> {
    applied: Seq,
    #[serde(borrow)]
    entries: Vec<(&'a [u8], &'a [u8])>,
}

/// A frozen store: the map as it was at the snapshot point (shared structure, never changed), to
/// serialise on any thread. It writes exactly the bytes [`SnapshotBody`] reads.
struct Frozen {
    applied: Seq,
    map: OrdMap<Bytes, Bytes>,
}

impl Serialize for Frozen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeTuple};
        struct Entries<'a>(&'a OrdMap<Bytes, Bytes>);
        impl Serialize for Entries<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for kv in self.0.iter() {
                    seq.serialize_element(&kv)?;
                }
                seq.end()
            }
        }
        // A struct of two fields encodes as the tuple of them in postcard.
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.applied)?;
        t.serialize_element(&Entries(&self.map))?;
        t.end()
    }
}

impl SnapshotSource for Frozen {
    fn write_to(&self, out: &mut Vec<u8>) {
        // Straight into the image: no second copy of the state.
        let taken = std::mem::take(out);
        *out = postcard::to_extend(self, taken).expect("snapshots always serialise");
    }
}

impl KvStore {
    fn frozen(&self) -> Frozen {
        Frozen {
            applied: self.applied,
            map: self.map.clone(),
        }
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, seq: Seq, update: &ClientUpdate) -> Bytes {
        self.applied = seq;
        let result = match KvCommand::decode(&update.payload) {
            Ok(cmd) => self.run(cmd),
            Err(e) => KvResult::Invalid(format!("malformed command: {e}")),
        };
        result.encode()
    }

    fn snapshot(&self) -> Bytes {
        let mut out = Vec::new();
        self.frozen().write_to(&mut out);
        Bytes::from(out)
    }

    fn freeze(&self) -> Arc<dyn SnapshotSource> {
        Arc::new(self.frozen())
    }

    fn state_digest(&self) -> u64 {
        self.sum
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        self.restore_with(snapshot, Bytes::copy_from_slice, Bytes::copy_from_slice)
    }

    fn restore_shared(&mut self, snapshot: &Bytes) -> Result<(), SnapshotError> {
        // Values stay slices of the image, which the core keeps anyway to serve peers: a 1 GiB
        // state restored from a 1 GiB image costs 1 GiB, not 2. The image lives while any of
        // them does; keys, small and never replaced, are copied so they do not pin it.
        self.restore_with(snapshot, Bytes::copy_from_slice, |v| snapshot.slice_ref(v))
    }
}

impl KvStore {
    /// Replaces the state with `snapshot`'s, each key made a `Bytes` by `key` and each value by
    /// `value`.
    fn restore_with(
        &mut self,
        snapshot: &[u8],
        key: impl Fn(&[u8]) -> Bytes,
        value: impl Fn(&[u8]) -> Bytes,
    ) -> Result<(), SnapshotError> {
        let body: SnapshotBody =
            postcard::from_bytes(snapshot).map_err(|e| SnapshotError(e.to_string()))?;
        self.applied = body.applied;
        self.map = body
            .entries
            .into_iter()
            .map(|(k, v)| (key(k), value(v)))
            .collect();
        self.sum = self
            .map
            .iter()
            .fold(0u64, |s, (k, v)| s.wrapping_add(pair_hash(k, v)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos_core::{ClientId, NodeId, Timestamp};

    fn update(cmd: &KvCommand) -> ClientUpdate {
        ClientUpdate {
            client_id: ClientId(1),
            server_id: NodeId(0),
            timestamp: Timestamp(1),
            payload: cmd.encode(),
        }
    }

    fn run(kv: &mut KvStore, cmd: KvCommand) -> KvResult {
        KvResult::decode(&kv.apply(Seq(kv.applied().0 + 1), &update(&cmd))).unwrap()
    }

    #[test]
    fn put_get_delete_cas() {
        let mut kv = KvStore::new();
        let k = Bytes::from_static(b"k");
        let v = Bytes::from_static(b"v");
        assert_eq!(
            run(&mut kv, KvCommand::Get { key: k.clone() }),
            KvResult::Value(None)
        );
        assert_eq!(
            run(
                &mut kv,
                KvCommand::Put {
                    key: k.clone(),
                    value: v.clone()
                }
            ),
            KvResult::Done
        );
        assert_eq!(
            run(
                &mut kv,
                KvCommand::Cas {
                    key: k.clone(),
                    expected: None,
                    new: None
                }
            ),
            KvResult::CasFailed {
                current: Some(v.clone())
            }
        );
        assert_eq!(
            run(
                &mut kv,
                KvCommand::Cas {
                    key: k.clone(),
                    expected: Some(v.clone()),
                    new: Some(k.clone())
                }
            ),
            KvResult::Swapped
        );
        assert_eq!(
            run(&mut kv, KvCommand::Delete { key: k.clone() }),
            KvResult::Value(Some(k.clone()))
        );
        assert!(kv.is_empty());
    }

    #[test]
    fn malformed_and_oversized_commands_are_answered_not_applied() {
        let mut kv = KvStore::new();
        let bad = ClientUpdate {
            client_id: ClientId(1),
            server_id: NodeId(0),
            timestamp: Timestamp(1),
            payload: Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        assert!(matches!(
            KvResult::decode(&kv.apply(Seq(1), &bad)).unwrap(),
            KvResult::Invalid(_)
        ));
        let huge = KvCommand::Put {
            key: Bytes::from(vec![0u8; MAX_KEY_BYTES + 1]),
            value: Bytes::new(),
        };
        assert!(matches!(run(&mut kv, huge), KvResult::Invalid(_)));
        assert!(kv.is_empty());
    }

    #[test]
    fn snapshot_round_trip_preserves_digest() {
        let mut kv = KvStore::new();
        for i in 0..50u32 {
            run(
                &mut kv,
                KvCommand::Put {
                    key: Bytes::from(i.to_be_bytes().to_vec()),
                    value: Bytes::from(vec![i as u8; 10]),
                },
            );
        }
        let snap = kv.snapshot();
        let mut other = KvStore::new();
        other.restore(&snap).unwrap();
        assert_eq!(other, kv);
        assert_eq!(other.digest(), kv.digest());
        assert!(other.restore(b"\xff\xff").is_err());
    }

    #[test]
    fn the_pair_hash_sees_every_byte_and_the_split() {
        let base = pair_hash(b"key", &[7u8; 21]);
        for i in 0..21 {
            let mut v = [7u8; 21];
            v[i] ^= 1;
            assert_ne!(pair_hash(b"key", &v), base, "byte {i} ignored");
        }
        // The length prefix: the same bytes split differently between key and value.
        assert_ne!(pair_hash(b"ab", b"c"), pair_hash(b"a", b"bc"));
        assert_ne!(pair_hash(b"", &[0u8; 8]), pair_hash(b"", &[0u8; 9]));
    }

    #[test]
    fn a_shared_restore_keeps_the_values_in_the_image() {
        let mut kv = KvStore::new();
        for i in 0..20u32 {
            let put = KvCommand::Put {
                key: Bytes::from(i.to_be_bytes().to_vec()),
                value: Bytes::from(vec![i as u8; 1000]),
            };
            run(&mut kv, put);
        }
        let snap = kv.snapshot();
        let mut other = KvStore::new();
        other.restore_shared(&snap).unwrap();
        assert_eq!(other, kv);
        assert_eq!(other.digest(), kv.digest());
        let image = snap.as_ptr_range();
        for (k, v) in other.map.iter() {
            assert!(image.contains(&v.as_ptr()), "a value was copied");
            assert!(!image.contains(&k.as_ptr()), "a key pins the image");
        }
        assert!(other
            .restore_shared(&Bytes::from_static(b"\xff\xff"))
            .is_err());
    }

    #[test]
    fn a_frozen_store_serialises_the_state_of_its_point_in_the_old_format() {
        let mut kv = KvStore::new();
        for i in 0..100u32 {
            let put = KvCommand::Put {
                key: Bytes::from(format!("k{i:03}")),
                value: Bytes::from(vec![i as u8; 10]),
            };
            run(&mut kv, put);
        }
        let at = kv.snapshot();
        let frozen = kv.freeze();
        for i in 0..50u32 {
            run(
                &mut kv,
                KvCommand::Delete {
                    key: Bytes::from(format!("k{i:03}")),
                },
            );
        }
        let mut later = Vec::new();
        frozen.write_to(&mut later);
        assert_eq!(
            later,
            at.as_ref(),
            "the frozen copy did not see later updates"
        );
        // Byte for byte what a BTreeMap body of (applied, entries) encodes to.
        let mut old = KvStore::new();
        old.restore(&at).unwrap();
        let entries: Vec<(Bytes, Bytes)> = old
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let expected = postcard::to_allocvec(&(old.applied, entries)).unwrap();
        assert_eq!(expected, at.as_ref());
        assert_eq!(old.len(), 100);
        assert_eq!(kv.len(), 50);
    }
}
