//! Compaction by checkpoint (docs/storage.md, "Record format" for the file and "Writing",
//! Checkpoints): the folded state and the log position it covers are written to `checkpoint`
//! (temp file, fsync, rename, directory fsync), then the segments wholly below that position go
//! to the free pool. Recovery reads the checkpoint back with [`read_checkpoint`].
//!
//! The file (`PSBWALC3`) is a run of records, none larger than about [`PART_BYTES`]: a head
//! (log position, view, incarnation, the image's name), parts holding the accepted, ordered and
//! pending entries, and an end record counting them. The folded state grows with the log kept
//! above the latest snapshot (both the accepted and the ordered copy of every slot): at 1 GiB of
//! state under steady writes it passed the 1 GiB record limit, and every server poisoned its WAL
//! at about the same slot. Files of the previous format (`PSBWALC2`, one record) are still read.

use super::fs::{self, CHECKPOINT_FILE};
use super::record::{self, RecordKind, HEADER_LEN};
use super::snapfile::SnapRef;
use super::{encode_err, WalStorage};
use crate::StorageError;
use paxos_core::durable::{DurableState, ViewRecord};
use paxos_core::{AcceptedProposal, ClientUpdate, OrderedUpdate};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// First bytes of the checkpoint file.
/// (`C3`: a run of bounded records; `C2`: one record, the snapshot a [`SnapRef`]; `C1`
/// embedded the image.)
const CHECKPOINT_MAGIC: &[u8; 8] = b"PSBWALC3";
/// The previous format, still read.
const CHECKPOINT_MAGIC_C2: &[u8; 8] = b"PSBWALC2";

/// Payload bytes after which a part is closed (entries are at most a few MiB each).
pub(super) const PART_BYTES: usize = 32 << 20;

/// The C2 file's single record (read only).
#[derive(Deserialize)]
struct CheckpointC2 {
    log_segment: u64,
    log_offset: u64,
    state: DurableState,
    snapshot: Option<SnapRef>,
}

/// The head record of a C3 file.
#[derive(Serialize, Deserialize)]
struct Head {
    /// Replay starts in this segment …
    log_segment: u64,
    /// … at this offset; everything before is folded into the state.
    log_offset: u64,
    incarnation: u64,
    view: ViewRecord,
    /// The state's image, named (it lives in its own file).
    snapshot: Option<SnapRef>,
}

/// A part of a C3 file, as written (entries borrowed).
#[derive(Serialize)]
enum PartRef<'a> {
    Accepted(Vec<&'a AcceptedProposal>),
    Ordered(Vec<&'a OrderedUpdate>),
    Pending(Vec<&'a ClientUpdate>),
}

/// A part of a C3 file, as read.
#[derive(Deserialize)]
enum Part {
    Accepted(Vec<AcceptedProposal>),
    Ordered(Vec<OrderedUpdate>),
    Pending(Vec<ClientUpdate>),
}

/// The end record of a C3 file: what came before it.
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug, Default)]
struct End {
    parts: u64,
    accepted: u64,
    ordered: u64,
    pending: u64,
}

/// The checkpoint file's content, as read back.
pub(super) struct CheckpointOwned {
    pub(super) log_segment: u64,
    pub(super) log_offset: u64,
    pub(super) state: DurableState,
    pub(super) snapshot: Option<SnapRef>,
}

/// A checkpoint to write: the folded state (without its image) at a log position.
#[derive(Debug)]
pub(super) struct CheckpointJob {
    seg: u64,
    offset: u64,
    state: DurableState,
    snapshot: Option<SnapRef>,
    /// `WalStorage::names_logged` when the job was taken: records naming images from then on
    /// lie after the checkpoint's position, and replay reads their files.
    names_before: u64,
}

/// What must stay once a checkpoint is durable: the segment its log replays from, the image it
/// names, and the first image record replayed after it.
pub(super) type CheckpointDone = (u64, Option<SnapRef>, u64);

impl CheckpointJob {
    /// What stays once it is durable.
    pub(super) fn done(&self) -> CheckpointDone {
        (self.seg, self.snapshot, self.names_before)
    }
}

/// Bytes an entry adds to a part, roughly (its payload dominates).
fn weight(u: &ClientUpdate) -> usize {
    u.payload.len() + 48
}

/// Splits `entries` into runs of about [`PART_BYTES`] and hands each to `emit`.
fn in_parts<'a, T: 'a>(
    entries: impl Iterator<Item = &'a T>,
    update: impl Fn(&T) -> &ClientUpdate,
    mut emit: impl FnMut(Vec<&'a T>) -> Result<(), StorageError>,
) -> Result<u64, StorageError> {
    let (mut run, mut bytes, mut n) = (Vec::new(), 0usize, 0u64);
    for e in entries {
        bytes += weight(update(e));
        run.push(e);
        n += 1;
        if bytes >= PART_BYTES {
            emit(std::mem::take(&mut run))?;
            bytes = 0;
        }
    }
    if !run.is_empty() {
        emit(run)?;
    }
    Ok(n)
}

/// Writes `job` as the checkpoint file of `fs`'s directory (temporary name, fsync, rename,
/// directory fsync); returns the segment from which its log replays and its size.
///
/// Record by record, through one buffer of about [`PART_BYTES`]: the whole file is never in
/// memory. The file is fdatasynced after each `flush_every` bytes when given, as images are (see
/// [`write_image`](super::snapfile::write_image)): a checkpoint of hundreds of MiB left dirty
/// for one final flush made the log's own syncs wait behind it.
pub(super) fn write_checkpoint(
    fs: &fs::Fs,
    job: &CheckpointJob,
    flush_every: Option<usize>,
) -> Result<(u64, usize), StorageError> {
    let tmp = fs.path(&format!("{CHECKPOINT_FILE}{}", fs::TMP_SUFFIX));
    let path = fs.path(CHECKPOINT_FILE);
    let file = fs.create(&tmp)?;
    let mut off = 0usize;
    let mut buf = CHECKPOINT_MAGIC.to_vec();
    let mut put = |buf: &mut Vec<u8>| -> Result<(), StorageError> {
        let from = off;
        off += buf.len();
        fs.write_at(&file, &tmp, buf, from as u64)?;
        if flush_every.is_some_and(|n| off / n > from / n) {
            fs.sync_data(&file, &tmp)?;
        }
        buf.clear();
        Ok(())
    };
    let st = &job.state;
    let head = Head {
        log_segment: job.seg,
        log_offset: job.offset,
        incarnation: st.incarnation,
        view: st.view,
        snapshot: job.snapshot,
    };
    record::encode(&mut buf, RecordKind::Checkpoint, &head, 0).map_err(encode_err)?;
    put(&mut buf)?;
    let mut end = End::default();
    let mut part = |p: PartRef<'_>, buf: &mut Vec<u8>| -> Result<(), StorageError> {
        record::encode(buf, RecordKind::CheckpointPart, &p, 0).map_err(encode_err)?;
        put(buf)
    };
    let mut parts = 0u64;
    end.accepted = in_parts(
        st.accepted.values(),
        |a| &a.update,
        |run| {
            parts += 1;
            part(PartRef::Accepted(run), &mut buf)
        },
    )?;
    end.ordered = in_parts(
        st.ordered.values(),
        |o| &o.update,
        |run| {
            parts += 1;
            part(PartRef::Ordered(run), &mut buf)
        },
    )?;
    end.pending = in_parts(
        st.pending.values(),
        |u| u,
        |run| {
            parts += 1;
            part(PartRef::Pending(run), &mut buf)
        },
    )?;
    end.parts = parts;
    record::encode(&mut buf, RecordKind::CheckpointEnd, &end, 0).map_err(encode_err)?;
    put(&mut buf)?;
    fs.sync_all(&file, &tmp)?;
    drop(file);
    // The checkpoint it replaces can be hundreds of MiB: freed off this thread.
    let old = fs.hold(&path);
    fs.rename(&tmp, &path)?;
    fs.sync_dir()?;
    fs.release(old);
    Ok((job.seg, off))
}

impl WalStorage {
    /// The folded state now, as a checkpoint to write (and the log since it starts counting
    /// again). Values are shared, not copied.
    pub(super) fn checkpoint_job(&mut self) -> CheckpointJob {
        let l = self.loaded.as_mut().expect("checked by ready()");
        l.since_checkpoint = 0;
        let mut state = l.state.clone();
        // The image stays out of the checkpoint: it is named, and lives in its own file.
        let snapshot = state.snapshot.take().as_ref().map(SnapRef::of);
        CheckpointJob {
            seg: l.w.id,
            offset: l.w.pos,
            state,
            snapshot,
            names_before: self.names_logged,
        }
    }

    /// After the checkpoint replaying from segment `seg` and naming `snapshot` is durable:
    /// recycles or deletes the segments it covers and the images nothing names any more.
    pub(super) fn checkpoint_durable(
        &mut self,
        (seg, snapshot, names_before): CheckpointDone,
    ) -> Result<(), StorageError> {
        let old: Vec<u64> = self
            .fs
            .list()?
            .ids
            .into_iter()
            .filter(|&id| id < seg)
            .collect();
        for &id in &old {
            self.recycle(&self.fs.path(&fs::segment_name(id)))?;
        }
        if !old.is_empty() {
            self.fs.sync_dir()?;
        }
        // Named now: the checkpoint's snapshot, and every image a `BatchRef` after the
        // checkpoint's position names (replay reads each one newer than the state so far).
        self.named_after.retain(|(n, _)| *n >= names_before);
        let mut keep: Vec<Option<SnapRef>> =
            self.named_after.iter().map(|(_, r)| Some(*r)).collect();
        keep.push(snapshot);
        // And the state's own (saved, or folded, but not yet named by any checkpoint).
        keep.push(self.loaded().state.snapshot.as_ref().map(SnapRef::of));
        self.remove_other_snapshot_files(&keep)?;
        Ok(())
    }

    /// Writes the folded state as the new checkpoint now, then recycles or deletes the segments
    /// it covers.
    pub(super) fn checkpoint(&mut self) -> Result<(), StorageError> {
        // One writer of the checkpoint file at a time: an older checkpoint still on the helper
        // must not land after (and over) this one.
        self.settle_helper()?;
        let started = std::time::Instant::now();
        let job = self.checkpoint_job();
        let (seg, bytes) = write_checkpoint(&self.fs, &job, None)?;
        self.checkpoint_durable(job.done())?;
        tracing::debug!(
            segment = seg,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "WAL checkpoint written"
        );
        Ok(())
    }
}

/// Reads the checkpoint file at `path` record by record (`None` when there is none); any damage
/// is [`StorageError::Corrupt`], since the file is only ever replaced by rename.
pub(super) fn read_checkpoint(path: &Path) -> Result<Option<CheckpointOwned>, StorageError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fs::io_err(path, e)),
    };
    let mut r = Records {
        path,
        input: std::io::BufReader::with_capacity(1 << 20, file),
        offset: 0,
        buf: Vec::new(),
    };
    let mut magic = [0u8; 8];
    if r.fill(&mut magic)? < magic.len() {
        return Err(r.corrupt("bad checkpoint magic"));
    }
    r.offset = magic.len() as u64;
    if &magic == CHECKPOINT_MAGIC_C2 {
        let kind = r.next()?.ok_or_else(|| r.corrupt("truncated checkpoint"))?;
        if kind != RecordKind::Checkpoint {
            return Err(r.corrupt("unexpected content in checkpoint"));
        }
        let c: CheckpointC2 = r.decode()?;
        if r.next()?.is_some() {
            return Err(r.corrupt("unexpected content in checkpoint"));
        }
        return Ok(Some(CheckpointOwned {
            log_segment: c.log_segment,
            log_offset: c.log_offset,
            state: c.state,
            snapshot: c.snapshot,
        }));
    }
    if &magic != CHECKPOINT_MAGIC {
        return Err(r.corrupt("bad checkpoint magic"));
    }
    if r.next()? != Some(RecordKind::Checkpoint) {
        return Err(r.corrupt("checkpoint without its head"));
    }
    let head: Head = r.decode()?;
    let mut state = DurableState {
        incarnation: head.incarnation,
        view: head.view,
        ..DurableState::default()
    };
    let mut seen = End::default();
    loop {
        match r.next()? {
            Some(RecordKind::CheckpointPart) => {
                seen.parts += 1;
                let fresh = match r.decode::<Part>()? {
                    Part::Accepted(v) => {
                        seen.accepted += v.len() as u64;
                        v.into_iter()
                            .all(|a| state.accepted.insert(a.seq, a).is_none())
                    }
                    Part::Ordered(v) => {
                        seen.ordered += v.len() as u64;
                        v.into_iter()
                            .all(|o| state.ordered.insert(o.seq, o).is_none())
                    }
                    Part::Pending(v) => {
                        seen.pending += v.len() as u64;
                        v.into_iter()
                            .all(|u| state.pending.insert(u.client_id, u).is_none())
                    }
                };
                if !fresh {
                    return Err(r.corrupt("an entry twice in the checkpoint"));
                }
            }
            Some(RecordKind::CheckpointEnd) => {
                let end: End = r.decode()?;
                if end != seen {
                    return Err(r.corrupt(&format!("checkpoint ends with {end:?}, holds {seen:?}")));
                }
                if r.next()?.is_some() {
                    return Err(r.corrupt("content after the checkpoint's end"));
                }
                break;
            }
            Some(_) => return Err(r.corrupt("unexpected record in checkpoint")),
            None => return Err(r.corrupt("checkpoint without its end (truncated)")),
        }
    }
    Ok(Some(CheckpointOwned {
        log_segment: head.log_segment,
        log_offset: head.log_offset,
        state,
        snapshot: head.snapshot,
    }))
}

/// Reads a checkpoint file's records one at a time (each checked by [`record::parse`]).
struct Records<'p, R> {
    path: &'p Path,
    input: R,
    /// Offset of the record in `buf` (or of the next one).
    offset: u64,
    /// The last record read, header included.
    buf: Vec<u8>,
}

impl<R: Read> Records<'_, R> {
    fn corrupt(&self, reason: &str) -> StorageError {
        StorageError::Corrupt {
            path: self.path.to_path_buf(),
            offset: self.offset,
            reason: reason.to_owned(),
        }
    }

    /// Reads into `out` until it is full or the file ends; returns the bytes read.
    fn fill(&mut self, out: &mut [u8]) -> Result<usize, StorageError> {
        let mut got = 0;
        while got < out.len() {
            match self.input.read(&mut out[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fs::io_err(self.path, e)),
            }
        }
        Ok(got)
    }

    /// The next record's kind (its payload stays in `buf`), or `None` at the end of the file.
    fn next(&mut self) -> Result<Option<RecordKind>, StorageError> {
        self.offset += self.buf.len() as u64;
        let mut header = [0u8; HEADER_LEN];
        match self.fill(&mut header)? {
            0 => {
                self.buf.clear();
                return Ok(None);
            }
            HEADER_LEN => {}
            _ => return Err(self.corrupt("truncated record header")),
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > record::MAX_PAYLOAD {
            return Err(self.corrupt("record length out of range"));
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&header);
        buf.resize(HEADER_LEN + len, 0);
        let got = self.fill(&mut buf[HEADER_LEN..]);
        self.buf = buf;
        if got? < len {
            return Err(self.corrupt("record extends past the end of the file"));
        }
        let rec = record::parse(&self.buf, 0, 0).map_err(|why| self.corrupt(why))?;
        Ok(Some(rec.kind))
    }

    /// Decodes the payload of the record `next` returned.
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, StorageError> {
        postcard::from_bytes(self.buf.get(HEADER_LEN..).unwrap_or_default()).map_err(|e| {
            StorageError::Corrupt {
                path: self.path.to_path_buf(),
                offset: self.offset + HEADER_LEN as u64,
                reason: format!("undecodable checkpoint record: {e}"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Storage;
    use paxos_core::{ClientId, NodeId, PersistBatch, Seq, Timestamp, View};

    fn entry(seq: u64, bytes: usize) -> AcceptedProposal {
        AcceptedProposal {
            seq: Seq(seq),
            view: View(1),
            update: ClientUpdate {
                client_id: ClientId(seq),
                server_id: NodeId(0),
                timestamp: Timestamp(seq),
                payload: vec![seq as u8; bytes].into(),
            },
        }
    }

    #[test]
    fn every_record_of_a_large_checkpoint_stays_near_the_part_bound() {
        let dir = tempfile::tempdir().unwrap();
        let opts = super::super::WalOptions {
            checkpoint_bytes: 0,
            defer_snapshots: false,
            ..Default::default()
        };
        let mut wal = WalStorage::open(dir.path(), opts).unwrap();
        let mut state = wal.load().unwrap();
        let accepted: Vec<_> = (2..=100).map(|s| entry(s, 1 << 20)).collect();
        let b = PersistBatch {
            id: paxos_core::BatchId(1),
            sync: true,
            accepted,
            ..Default::default()
        };
        wal.append(std::slice::from_ref(&b), true).unwrap();
        state.apply(&b);
        let snap = paxos_core::Snapshot::new(Seq(1), vec![7u8; 10].into(), &[]);
        wal.save_snapshot(&snap).unwrap();
        drop(wal);
        let data = std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
        let (mut off, mut parts) = (CHECKPOINT_MAGIC.len(), 0);
        while off < data.len() {
            let rec = record::parse(&data, off, 0).unwrap();
            assert!(
                rec.payload.len() <= PART_BYTES + (2 << 20),
                "{}",
                rec.payload.len()
            );
            parts += usize::from(rec.kind == RecordKind::CheckpointPart);
            off = rec.end;
        }
        assert!(parts >= 3, "99 MiB in {parts} parts");
        let back = read_checkpoint(&dir.path().join(CHECKPOINT_FILE))
            .unwrap()
            .unwrap();
        assert_eq!(back.state.accepted, state.accepted);
    }

    #[test]
    fn a_checkpoint_of_the_previous_format_is_still_read() {
        #[derive(Serialize)]
        struct C2<'a> {
            log_segment: u64,
            log_offset: u64,
            state: &'a DurableState,
            snapshot: Option<SnapRef>,
        }
        let mut state = DurableState {
            incarnation: 4,
            ..Default::default()
        };
        state.accepted.insert(Seq(9), entry(9, 100));
        let mut data = CHECKPOINT_MAGIC_C2.to_vec();
        let c = C2 {
            log_segment: 3,
            log_offset: 77,
            state: &state,
            snapshot: None,
        };
        record::encode(&mut data, RecordKind::Checkpoint, &c, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        std::fs::write(&path, &data).unwrap();
        let back = read_checkpoint(&path).unwrap().unwrap();
        assert_eq!((back.log_segment, back.log_offset), (3, 77));
        assert_eq!(back.state, state);
        std::fs::write(&path, &data[..data.len() - 1]).unwrap();
        assert!(matches!(
            read_checkpoint(&path),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
