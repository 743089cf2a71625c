//! Snapshot images: what a compacted prefix of the log becomes, on disk and on the wire (DERIVED,
//! spec §11; docs/storage.md, "Snapshot image").
//!
//! A [`Snapshot`] is one immutable byte string, its *image*, with the slot it covers and its
//! SHA-256 [`Digest`]. The image holds the exactly-once table and the application's own bytes:
//!
//! ```text
//! version u8 (= 2) | seq u64 LE | table_len u64 LE | table | app bytes
//! table = postcard (log_time Time, Vec<ClientRecord>)
//! ```
//!
//! Because it is one byte string it can be cut into chunks at any offset (state transfer sends it
//! in pieces; see `replica/transfer.rs`), kept by storage as a file, and checked end to end by its
//! digest before it is installed. The application's part is a zero-copy slice of the image.
//!
//! Producing an image can be slow (the whole state is serialised), so it is split in two: a cheap
//! [`SnapshotJob`] the replica captures at the snapshot point (the table and a frozen
//! [`SnapshotSource`] from [`crate::StateMachine::freeze`]), and [`SnapshotJob::build`], which a
//! driver may run on another thread.

use crate::message::ClientRecord;
use crate::state_machine::SnapshotError;
use crate::types::{Seq, Time};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::sync::Arc;

/// The image format version, the first byte of every image.
pub const IMAGE_VERSION: u8 = 2;

/// Bytes before the table in an image: version, seq, table length.
const HEADER_BYTES: usize = 1 + 8 + 8;

/// A SHA-256 digest of a snapshot image.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// A streaming digest, for images that arrive in pieces.
    pub fn hasher() -> DigestHasher {
        DigestHasher(Sha256::new())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A digest computed over bytes fed in order ([`Digest::hasher`]).
#[derive(Clone)]
pub struct DigestHasher(Sha256);

impl DigestHasher {
    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestHasher")
    }
}

/// A frozen copy of an application's state that can be serialised later, on any thread.
///
/// [`crate::StateMachine::freeze`] returns one; it must not change when the state machine applies
/// further updates (a persistent map, a copy-on-write handle, or simply the serialised bytes).
pub trait SnapshotSource: Send + Sync {
    /// Appends the serialised state to `out`; [`crate::StateMachine::restore`] must accept exactly
    /// these bytes.
    fn write_to(&self, out: &mut Vec<u8>);

    /// A guess of how many bytes `write_to` appends (for one allocation); 0 if unknown.
    fn size_hint(&self) -> usize {
        0
    }
}

impl SnapshotSource for Bytes {
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }

    fn size_hint(&self) -> usize {
        self.len()
    }
}

/// A state-machine snapshot at a slot, with the exactly-once table at that point, as one image.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    seq: Seq,
    digest: Digest,
    image: Bytes,
}

/// A snapshot's contents, decoded from its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotParts {
    /// The exactly-once table.
    pub clients: Vec<ClientRecord>,
    /// The log's clock at the snapshot point (session expiry; see `SessionRules`).
    pub log_time: Time,
    /// The application's bytes (a slice of the image).
    pub app_state: Bytes,
}

impl Snapshot {
    /// The snapshot of `app_state` and `clients` at `seq`, log time zero (serialises and digests
    /// at once).
    pub fn new(seq: Seq, app_state: Bytes, clients: &[ClientRecord]) -> Snapshot {
        Self::build(seq, Time::ZERO, clients, &app_state)
    }

    /// Serialises the table (`log_time`, `clients`) and `source` into an image at `seq` and
    /// digests it.
    pub fn build(
        seq: Seq,
        log_time: Time,
        clients: &[ClientRecord],
        source: &dyn SnapshotSource,
    ) -> Snapshot {
        let table =
            postcard::to_allocvec(&(log_time, clients)).expect("client records always serialise");
        let mut out = Vec::with_capacity(HEADER_BYTES + table.len() + source.size_hint());
        out.push(IMAGE_VERSION);
        out.extend_from_slice(&seq.0.to_le_bytes());
        out.extend_from_slice(&(table.len() as u64).to_le_bytes());
        out.extend_from_slice(&table);
        source.write_to(&mut out);
        let digest = Digest::of(&out);
        Snapshot {
            seq,
            digest,
            image: Bytes::from(out),
        }
    }

    /// A snapshot from an image read back from storage or received in chunks: checks the header
    /// and the table and computes the digest. `expected`, when given, must match.
    pub fn from_image(image: Bytes, expected: Option<Digest>) -> Result<Snapshot, SnapshotError> {
        let digest = Digest::of(&image);
        Self::from_digested(image, digest, expected)
    }

    /// Like [`Snapshot::from_image`] with the digest already computed (while the image arrived).
    pub fn from_digested(
        image: Bytes,
        digest: Digest,
        expected: Option<Digest>,
    ) -> Result<Snapshot, SnapshotError> {
        if expected.is_some_and(|e| e != digest) {
            return Err(SnapshotError(format!(
                "image digest {digest} differs from the announced {}",
                expected.unwrap_or_default()
            )));
        }
        let seq = header(&image)?.0;
        let snap = Snapshot { seq, digest, image };
        snap.parts()?;
        Ok(snap)
    }

    /// The slot the snapshot covers: every slot up to and including it is reflected.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// The image's digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The image.
    pub fn image(&self) -> &Bytes {
        &self.image
    }

    /// The image's length in bytes.
    pub fn len(&self) -> u64 {
        self.image.len() as u64
    }

    /// Whether the image is empty (never, for a built snapshot).
    pub fn is_empty(&self) -> bool {
        self.image.is_empty()
    }

    /// Decodes the table and slices out the application's bytes.
    pub fn parts(&self) -> Result<SnapshotParts, SnapshotError> {
        let (_, table_len) = header(&self.image)?;
        let table_end = HEADER_BYTES
            .checked_add(table_len)
            .filter(|&e| e <= self.image.len())
            .ok_or_else(|| SnapshotError("image shorter than its client table".into()))?;
        let (log_time, clients): (Time, Vec<ClientRecord>) =
            postcard::from_bytes(&self.image[HEADER_BYTES..table_end])
                .map_err(|e| SnapshotError(format!("client table: {e}")))?;
        Ok(SnapshotParts {
            clients,
            log_time,
            app_state: self.image.slice(table_end..),
        })
    }
}

/// The version, seq and table length of an image.
fn header(image: &[u8]) -> Result<(Seq, usize), SnapshotError> {
    if image.len() < HEADER_BYTES {
        return Err(SnapshotError(format!(
            "image of {} bytes has no header",
            image.len()
        )));
    }
    if image[0] != IMAGE_VERSION {
        return Err(SnapshotError(format!(
            "unknown image version {} (this build reads {IMAGE_VERSION})",
            image[0]
        )));
    }
    let word = |at: usize| u64::from_le_bytes(image[at..at + 8].try_into().expect("8 bytes"));
    let table_len = usize::try_from(word(9))
        .map_err(|_| SnapshotError("client table length overflows".into()))?;
    Ok((Seq(word(1)), table_len))
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("seq", &self.seq)
            .field("len", &self.image.len())
            .field("digest", &self.digest)
            .finish()
    }
}

/// A snapshot captured at a slot but not yet serialised: the table and a frozen application state.
///
/// [`crate::Replica::poll_snapshot_job`] hands these out when snapshots are built off the driver
/// loop; run [`SnapshotJob::build`] anywhere and give the result back with
/// [`crate::Replica::handle_snapshot_built`].
#[derive(Clone)]
pub struct SnapshotJob {
    seq: Seq,
    log_time: Time,
    clients: Vec<ClientRecord>,
    source: Arc<dyn SnapshotSource>,
}

impl SnapshotJob {
    /// A job for the state `source` froze at `seq`, with the table (`log_time`, `clients`) at
    /// that point.
    pub fn new(
        seq: Seq,
        log_time: Time,
        clients: Vec<ClientRecord>,
        source: Arc<dyn SnapshotSource>,
    ) -> Self {
        SnapshotJob {
            seq,
            log_time,
            clients,
            source,
        }
    }

    /// The slot the snapshot will cover.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// Serialises and digests the snapshot (the slow part; any thread).
    pub fn build(&self) -> Snapshot {
        Snapshot::build(self.seq, self.log_time, &self.clients, self.source.as_ref())
    }
}

impl fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotJob")
            .field("seq", &self.seq)
            .field("clients", &self.clients.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientId, Timestamp};

    fn record(c: u64) -> ClientRecord {
        ClientRecord {
            client: ClientId(c),
            last_executed: Timestamp(c + 1),
            last_result: Bytes::from(vec![c as u8; 3]),
            last_active: Time::ZERO,
            nonce: None,
        }
    }

    #[test]
    fn image_round_trips_and_is_checked() {
        let clients = vec![record(1), record(2)];
        let s = Snapshot::new(Seq(7), Bytes::from_static(b"app"), &clients);
        assert_eq!(s.seq(), Seq(7));
        let parts = s.parts().unwrap();
        assert_eq!(parts.clients, clients);
        assert_eq!(&parts.app_state[..], b"app");
        let back = Snapshot::from_image(s.image().clone(), Some(s.digest())).unwrap();
        assert_eq!(back, s);
        // A flipped byte fails the digest; a cut image fails the header or the table.
        let mut bad = s.image().to_vec();
        bad[20] ^= 1;
        assert!(Snapshot::from_image(Bytes::from(bad), Some(s.digest())).is_err());
        for cut in [0, 5, HEADER_BYTES, HEADER_BYTES + 2] {
            assert!(
                Snapshot::from_image(s.image().slice(..cut), None).is_err(),
                "{cut}"
            );
        }
        let mut version = s.image().to_vec();
        version[0] = 9;
        assert!(Snapshot::from_image(Bytes::from(version), None).is_err());
    }

    #[test]
    fn job_builds_what_new_builds() {
        let clients = vec![record(3)];
        let app = Bytes::from_static(b"state");
        let job = SnapshotJob::new(Seq(4), Time::ZERO, clients.clone(), Arc::new(app.clone()));
        assert_eq!(job.build(), Snapshot::new(Seq(4), app, &clients));
    }
}
