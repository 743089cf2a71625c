//! A small deterministic hasher for lookup-only maps on the hot path.
//!
//! `std`'s default hasher is randomly seeded; iteration order of such maps would differ between
//! runs and break the simulator's determinism. These maps are never iterated where order matters,
//! and the fixed multiplicative hash keeps lookups cheap.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style hasher: deterministic and fast for integer keys.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.hash = (self.hash.rotate_left(5) ^ i).wrapping_mul(SEED);
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` with the deterministic hasher.
pub(crate) type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
/// A `HashSet` with the deterministic hasher.
pub(crate) type FxHashSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;
