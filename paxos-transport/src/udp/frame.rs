//! The datagram format (see the [`udp`](super) module documentation): the header, the
//! HMAC-SHA256 tag over everything before it, and the batch payload; plus the big-endian field
//! readers the receiver parses with. Fragment payloads are built in `send` and parsed in `recv`.

use hmac::{Hmac, Mac};
use paxos_core::NodeId;
use sha2::Sha256;

/// The datagram authenticator.
pub(super) type HmacSha256 = Hmac<Sha256>;

/// First bytes of every datagram.
pub(super) const MAGIC: [u8; 4] = *b"PXU\x01";
/// `kind` of a datagram carrying one or more whole envelopes.
pub(super) const KIND_BATCH: u8 = 0;
/// `kind` of a datagram carrying one fragment of a large envelope.
pub(super) const KIND_FRAGMENT: u8 = 1;
/// Header bytes: magic, kind, sender, epoch, seq.
pub const HEADER_LEN: usize = 4 + 1 + 4 + 8 + 8;
/// Tag bytes.
pub const TAG_LEN: usize = 32;
/// Fragment header bytes: message id, index, count.
pub(super) const FRAGMENT_HEADER: usize = 8 + 2 + 2;

/// A keyed HMAC state (cloned per datagram, so the key pads are hashed once).
pub(super) fn mac(key: &[u8; 32]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

/// Builds a datagram: header, payload, tag. Exposed for tests that forge or tamper datagrams.
pub fn seal(
    key: &[u8; 32],
    kind: u8,
    sender: NodeId,
    epoch: u64,
    seq: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut d = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
    d.resize(HEADER_LEN, 0);
    d.extend_from_slice(payload);
    seal_in_place(&mac(key), kind, sender, epoch, seq, &mut d);
    d
}

/// Writes the header into the first [`HEADER_LEN`] bytes of `d` and appends the tag.
pub(super) fn seal_in_place(
    keyed: &HmacSha256,
    kind: u8,
    sender: NodeId,
    epoch: u64,
    seq: u64,
    d: &mut Vec<u8>,
) {
    d[..4].copy_from_slice(&MAGIC);
    d[4] = kind;
    d[5..9].copy_from_slice(&sender.0.to_be_bytes());
    d[9..17].copy_from_slice(&epoch.to_be_bytes());
    d[17..25].copy_from_slice(&seq.to_be_bytes());
    let mut m = keyed.clone();
    m.update(d);
    let tag = m.finalize().into_bytes();
    d.extend_from_slice(&tag);
}

/// Builds a batch payload (`u32 length | bytes` per item). Exposed for tests.
pub fn batch_payload(items: &[&[u8]]) -> Vec<u8> {
    let mut p = Vec::new();
    for i in items {
        p.extend_from_slice(&(i.len() as u32).to_be_bytes());
        p.extend_from_slice(i);
    }
    p
}

/// Big-endian field readers; the caller has checked the length (a short slice is a bug).
pub(super) fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}
pub(super) fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}
pub(super) fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b[..2].try_into().expect("2 bytes"))
}
