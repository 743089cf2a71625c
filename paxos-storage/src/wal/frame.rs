//! Write framing: every write (the records one `pwrite` puts into a segment before the next
//! fdatasync) is one frame, so recovery can tell a torn last write from damage to synced data.
//!
//! A frame is a record of kind [`RecordKind::Frame`] (CRC seeded with the segment id, as every
//! record) whose payload is a fixed 25-byte header, followed by the frame's body: the records of
//! the write, each CRC-seeded with [`inner_seed`] of the segment id so that a record inside a
//! frame never validates as a bare record when the recovery scan looks for one.
//!
//! ```text
//! payload offset  size  field
//!              0     1  format version (FRAME_VERSION)
//!              1     8  start: the frame's own offset in the segment (u64 LE)
//!              9     4  body length in bytes (u32 LE)
//!             13     4  crc32c of the body, seeded with the segment id (u32 LE)
//!             17     8  synced_before: every byte of the segment below this offset had been
//!                       fdatasynced (the sync returned) before this frame was written (u64 LE)
//! ```
//!
//! `synced_before` is what makes the recovery rule sharp: a damaged frame at offset `x`
//! followed by a valid frame whose `synced_before > x` was damaged *after* its sync returned
//! (corruption, refused); if every valid frame after it says `synced_before <= x`, the damage is
//! confined to the writes since the last sync (a torn tail, truncated).

use super::record::{self, RecordKind, HEADER_LEN};

/// Version of the frame header layout.
pub(crate) const FRAME_VERSION: u8 = 1;
/// Payload bytes of a frame header record.
const PAYLOAD_LEN: usize = 25;
/// Bytes of a frame header record (record header + payload).
pub(crate) const FRAME_LEN: usize = HEADER_LEN + PAYLOAD_LEN;

/// The CRC seed of records inside a frame of `segment` (distinct from the bare-record seed).
pub(crate) fn inner_seed(segment: u64) -> u64 {
    !segment
}

/// Fills the frame header placeholder at the start of `buf` (`FRAME_LEN` bytes, followed by the
/// body) for a frame written at `start` of `segment` while `synced_before` bytes were synced.
pub(crate) fn seal_frame(buf: &mut [u8], segment: u64, start: u64, synced_before: u64) {
    let body_len = (buf.len() - FRAME_LEN) as u32;
    let body_crc = record::crc(segment, &buf[FRAME_LEN..]);
    let h = &mut buf[..FRAME_LEN];
    h[4..8].copy_from_slice(&(PAYLOAD_LEN as u32).to_le_bytes());
    h[8] = RecordKind::Frame as u8;
    h[9] = record::MAGIC;
    h[10] = 0;
    h[11] = 0;
    let p = &mut h[HEADER_LEN..];
    p[0] = FRAME_VERSION;
    p[1..9].copy_from_slice(&start.to_le_bytes());
    p[9..13].copy_from_slice(&body_len.to_le_bytes());
    p[13..17].copy_from_slice(&body_crc.to_le_bytes());
    p[17..25].copy_from_slice(&synced_before.to_le_bytes());
    record::stamp(&mut buf[..FRAME_LEN], segment);
}

/// A frame whose header and body both validate.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Offset of the body (just past the header).
    pub(crate) body: usize,
    /// Offset just past the body.
    pub(crate) end: usize,
    /// The header's `synced_before`.
    pub(crate) synced_before: u64,
}

/// Checks the frame whose header record (already parsed, of kind `Frame`) starts at `off` with
/// `payload`: version, start offset, body bounds and body CRC.
pub(crate) fn check(
    data: &[u8],
    off: usize,
    payload: &[u8],
    segment: u64,
) -> Result<Frame, &'static str> {
    if payload.len() != PAYLOAD_LEN {
        return Err("frame header of the wrong length");
    }
    if payload[0] != FRAME_VERSION {
        return Err("unknown frame format version");
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let u32_at = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&payload[i..i + 4]);
        u32::from_le_bytes(b)
    };
    if u64_at(1) != off as u64 {
        return Err("frame header names another offset");
    }
    let body = off + FRAME_LEN;
    let end = body.saturating_add(u32_at(9) as usize);
    if end > data.len() {
        return Err("frame extends past the end of the file");
    }
    if record::crc(segment, &data[body..end]) != u32_at(13) {
        return Err("frame body crc mismatch (torn or damaged write)");
    }
    Ok(Frame {
        body,
        end,
        synced_before: u64_at(17),
    })
}

/// The valid frame at `off`, if a whole one is there.
pub(crate) fn valid_at(data: &[u8], off: usize, segment: u64) -> Option<Frame> {
    let rec = record::parse(data, off, segment).ok()?;
    if rec.kind != RecordKind::Frame {
        return None;
    }
    check(data, off, rec.payload, segment).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(segment: u64, start: u64, synced: u64) -> Vec<u8> {
        let mut buf = vec![0u8; FRAME_LEN];
        record::encode(&mut buf, RecordKind::Truncate, &5u64, inner_seed(segment)).unwrap();
        seal_frame(&mut buf, segment, start, synced);
        buf
    }

    #[test]
    fn frames_validate_only_where_and_in_the_segment_they_were_written() {
        let mut data = vec![0u8; 100];
        data.extend(frame(3, 100, 40));
        let f = valid_at(&data, 100, 3).unwrap();
        assert_eq!((f.body, f.end, f.synced_before), (137, data.len(), 40));
        assert!(valid_at(&data, 100, 4).is_none(), "another segment");
        assert!(
            record::parse(&data, f.body, 3).is_err(),
            "inner record as bare"
        );
        assert!(record::parse(&data, f.body, inner_seed(3)).is_ok());
        let mut moved = frame(3, 100, 40);
        moved.splice(0..0, [0u8; 8]);
        assert!(valid_at(&moved, 8, 3).is_none(), "frame at another offset");
        for i in 100..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x10;
            assert!(valid_at(&d, 100, 3).is_none(), "flip at {i} not detected");
        }
    }
}
