//! Record framing: `crc32c | len | kind | magic | reserved`, then a postcard payload.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32c (Castagnoli), little endian, of the segment id (u64 LE) followed by
//!               bytes 4 .. 12 + len
//!      4     4  len: payload length in bytes, little endian
//!      8     1  kind (RecordKind)
//!      9     1  magic 0xB7
//!     10     2  reserved, zero
//!     12   len  payload (postcard)
//! ```
//!
//! The CRC covers the length and the kind as well as the payload, so a flipped bit anywhere in a
//! record is caught. It is seeded with the id of the segment the record belongs to, so records
//! left in a recycled segment file from its previous life never validate. The magic byte and the closed set of kinds let the recovery scan find record
//! boundaries after a damaged one cheaply.

use serde::Serialize;

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 12;
/// Marks a record header (never zero, so preallocated space is never a header).
pub(crate) const MAGIC: u8 = 0xB7;
/// Upper bound on one payload; a larger length field is damage, not a record.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;
/// Space always kept free at the end of a segment for its seal record.
pub(crate) const SEAL_RESERVE: usize = HEADER_LEN + 16;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A [`paxos_core::durable::PersistBatch`].
    Batch = 1,
    /// The incarnation counter (`u64`), written and synced at every load.
    Incarnation = 2,
    /// [`paxos_core::durable::DurableState::truncate_through`] (`Seq`).
    Truncate = 3,
    /// Last record of a full segment: the next segment's id (`u64`).
    Seal = 4,
    /// The checkpoint file's single record.
    Checkpoint = 5,
    /// A batch that carried a snapshot: `(PersistBatch without it, SnapRef)`; the image is in its
    /// own file (`snapfile.rs`).
    BatchRef = 6,
    /// A checkpoint file's part: a bounded run of its accepted, ordered or pending entries.
    CheckpointPart = 7,
    /// A checkpoint file's last record: how many parts and entries came before it.
    CheckpointEnd = 8,
    /// The header of a write's frame (`frame.rs`); the write's records follow it.
    Frame = 9,
}

impl RecordKind {
    pub(crate) fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Batch,
            2 => Self::Incarnation,
            3 => Self::Truncate,
            4 => Self::Seal,
            5 => Self::Checkpoint,
            6 => Self::BatchRef,
            7 => Self::CheckpointPart,
            8 => Self::CheckpointEnd,
            9 => Self::Frame,
            _ => return None,
        })
    }
}

/// Appends one framed record holding `value` to `buf`.
pub(crate) fn encode<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    kind: RecordKind,
    value: &T,
    segment: u64,
) -> Result<(), postcard::Error> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    postcard::serialize_with_flavor(value, Append(buf))?;
    let len = buf.len() - start - HEADER_LEN;
    if len > MAX_PAYLOAD {
        buf.truncate(start);
        return Err(postcard::Error::SerializeBufferFull);
    }
    let h = &mut buf[start..start + HEADER_LEN];
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    h[8] = kind as u8;
    h[9] = MAGIC;
    stamp(&mut buf[start..], segment);
    Ok(())
}

/// CRC32C of `body`, seeded with `segment` (as u64 LE).
pub(crate) fn crc(segment: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&segment.to_le_bytes()), body)
}

/// (Re)computes the CRC of the single record in `rec` for `segment` (a record encoded for one
/// segment that ends up in the next after a rotation).
pub(crate) fn stamp(rec: &mut [u8], segment: u64) {
    let c = crc(segment, &rec[4..]);
    rec[..4].copy_from_slice(&c.to_le_bytes());
}

/// A postcard flavor that appends to a `Vec` with `push` / `extend_from_slice` (payload bytes
/// are copied with one memcpy each).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A record found in a buffer.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub(crate) kind: RecordKind,
    pub(crate) payload: &'a [u8],
    /// Offset just past the record.
    pub(crate) end: usize,
}

/// Parses the record at `off`, or says why there is none.
pub(crate) fn parse(data: &[u8], off: usize, segment: u64) -> Result<Parsed<'_>, &'static str> {
    let Some(h) = data.get(off..off + HEADER_LEN) else {
        return Err("truncated record header");
    };
    if h.iter().all(|&b| b == 0) {
        return Err("zeroed record header");
    }
    if h[9] != MAGIC || h[10] != 0 || h[11] != 0 {
        return Err("bad record magic");
    }
    let Some(kind) = RecordKind::from_u8(h[8]) else {
        return Err("unknown record kind");
    };
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Err("record length out of range");
    }
    let end = off + HEADER_LEN + len;
    if end > data.len() {
        return Err("record extends past the end of the file");
    }
    let stored = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    if crc(segment, &data[off + 4..end]) != stored {
        return Err("crc mismatch");
    }
    Ok(Parsed {
        kind,
        payload: &data[off + HEADER_LEN..end],
        end,
    })
}

/// The first offset after `from` where a valid record starts, if any. Linear in the bytes scanned
/// (zero runs are skipped eight bytes at a time; a CRC is computed only where the magic byte, the
/// reserved bytes and the kind all match).
pub(crate) fn find_valid_after(data: &[u8], from: usize, segment: u64) -> Option<usize> {
    let mut i = from;
    while i + HEADER_LEN <= data.len() {
        if i % 8 == 0 && i + 8 <= data.len() && data[i..i + 8] == [0u8; 8] {
            i += 8;
            continue;
        }
        if data[i + 9] == MAGIC
            && data[i + 10] == 0
            && data[i + 11] == 0
            && RecordKind::from_u8(data[i + 8]).is_some()
            && parse(data, i, segment).is_ok()
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Offset just past the last non-zero byte at or after `from` (`from` when all are zero).
pub(crate) fn nonzero_end(data: &[u8], from: usize) -> usize {
    data[from.min(data.len())..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(from, |p| from + p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode(&mut buf, RecordKind::Incarnation, &7u64, 3).unwrap();
        encode(&mut buf, RecordKind::Truncate, &9u64, 3).unwrap();
        assert!(
            parse(&buf, 0, 4).is_err(),
            "a record of another segment must not validate"
        );
        let a = parse(&buf, 0, 3).unwrap();
        assert_eq!(a.kind, RecordKind::Incarnation);
        assert_eq!(postcard::from_bytes::<u64>(a.payload).unwrap(), 7);
        let b = parse(&buf, a.end, 3).unwrap();
        assert_eq!(b.end, buf.len());
        for bit in 0..a.end * 8 {
            let mut d = buf.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(parse(&d, 0, 3).is_err(), "bit {bit} not detected");
            assert_eq!(find_valid_after(&d, 1, 3), Some(a.end));
        }
    }

    #[test]
    fn zero_scan() {
        let d = [0u8; 100];
        assert_eq!(find_valid_after(&d, 0, 1), None);
        assert_eq!(nonzero_end(&d, 10), 10);
        let mut d = d;
        d[57] = 1;
        assert_eq!(nonzero_end(&d, 10), 58);
    }
}
