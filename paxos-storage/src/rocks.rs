//! The RocksDB backend (cargo feature `rocksdb`).
//!
//! The folded [`DurableState`] is stored as keys, in three column families:
//!
//! | column family | key | value (postcard) |
//! |---|---|---|
//! | `meta` | `incarnation` | `u64` |
//! | `meta` | `view` | [`paxos_core::ViewRecord`] |
//! | `meta` | `p` + client id (u64 BE) | pending [`paxos_core::ClientUpdate`] |
//! | `log` | `a` + slot (u64 BE) | [`paxos_core::AcceptedProposal`] |
//! | `log` | `o` + slot (u64 BE) | [`paxos_core::OrderedUpdate`] |
//! | `snapshot` | `snapshot` | the snapshot's slot, digest, length and chunk count |
//! | `snapshot` | `c` + chunk index (u32 BE) | 4 MiB pieces of the snapshot image (raw bytes) |
//!
//! Each [`Storage::append`] call becomes one `WriteBatch` (so its batches are all-or-nothing,
//! stronger than the per-batch atomicity the trait asks for), written with
//! `WriteOptions::set_sync(sync)`. To reproduce [`DurableState::apply`] exactly (a lower view
//! never replaces an accepted proposal, the first ordered update of a slot wins, the newest
//! pending update per client wins, a snapshot drops history at or below it), the backend keeps
//! the folded state in memory, applies each batch to it, and writes the resulting value of every
//! key the batch touched; a snapshot adds range deletions of the `log` keys it covers. A snapshot
//! image is stored in chunks (no value grows with the state), replaced in the same write batch
//! as everything else, and checked against its length and digest when loaded.
//! RocksDB's own `LOCK` file keeps a second process out ([`StorageError::Locked`]).

use crate::{Storage, StorageError};
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::message::Snapshot;
use paxos_core::Seq;
use rocksdb::{ColumnFamily, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

const CF_META: &str = "meta";
const CF_LOG: &str = "log";
const CF_SNAPSHOT: &str = "snapshot";
const KEY_INCARNATION: &[u8] = b"incarnation";
const KEY_VIEW: &[u8] = b"view";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const PREFIX_PENDING: u8 = b'p';
const PREFIX_ACCEPTED: u8 = b'a';
const PREFIX_ORDERED: u8 = b'o';
const PREFIX_CHUNK: u8 = b'c';
/// Bytes of snapshot image per chunk record.
const CHUNK_BYTES: usize = 4 << 20;

/// What the `snapshot` key holds: the image itself is in the chunk records.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotMeta {
    seq: Seq,
    digest: paxos_core::Digest,
    len: u64,
    chunks: u32,
}

fn chunk_key(i: u32) -> Vec<u8> {
    let mut k = vec![PREFIX_CHUNK];
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// Durable state in a RocksDB database.
pub struct RocksStorage {
    dir: PathBuf,
    db: DB,
    state: Option<DurableState>,
    poisoned: Option<String>,
}

impl std::fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStorage")
            .field("dir", &self.dir)
            .field("loaded", &self.state.is_some())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

fn backend_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend {
        backend: "rocksdb",
        message: e.to_string(),
    }
}

fn key(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [prefix; 9];
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// The first key after every `prefix` key at or below `seq`.
fn range_end(prefix: u8, seq: Seq) -> Vec<u8> {
    match seq.0.checked_add(1) {
        Some(n) => key(prefix, n).to_vec(),
        None => vec![prefix + 1],
    }
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(v).map_err(backend_err)
}

impl RocksStorage {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(2);
        let db = DB::open_cf(&opts, &dir, [CF_META, CF_LOG, CF_SNAPSHOT]).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("lock file") || msg.contains("LOCK") {
                StorageError::Locked(dir.clone())
            } else {
                backend_err(msg)
            }
        })?;
        Ok(Self {
            dir,
            db,
            state: None,
            poisoned: None,
        })
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or(StorageError::Misuse("column family missing"))
    }

    fn corrupt(&self, what: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Corrupt {
            path: self.dir.clone(),
            offset: 0,
            reason: format!("{what}: {e}"),
        }
    }

    fn dec<T: DeserializeOwned>(&self, what: &str, v: &[u8]) -> Result<T, StorageError> {
        postcard::from_bytes(v).map_err(|e| self.corrupt(what, e))
    }

    fn read_state(&self) -> Result<DurableState, StorageError> {
        let mut s = DurableState::default();
        for item in self.db.iterator_cf(self.cf(CF_META)?, IteratorMode::Start) {
            let (k, v) = item.map_err(backend_err)?;
            match &*k {
                KEY_INCARNATION => s.incarnation = self.dec("incarnation", &v)?,
                KEY_VIEW => s.view = self.dec("view", &v)?,
                [PREFIX_PENDING, ..] if k.len() == 9 => {
                    let u: paxos_core::ClientUpdate = self.dec("pending update", &v)?;
                    s.pending.insert(u.client_id, u);
                }
                _ => return Err(self.corrupt("meta", format!("unexpected key {k:?}"))),
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_LOG)?, IteratorMode::Start) {
            let (k, v) = item.map_err(backend_err)?;
            match k.first() {
                Some(&PREFIX_ACCEPTED) if k.len() == 9 => {
                    let a: paxos_core::AcceptedProposal = self.dec("accepted proposal", &v)?;
                    s.accepted.insert(a.seq, a);
                }
                Some(&PREFIX_ORDERED) if k.len() == 9 => {
                    let o: paxos_core::OrderedUpdate = self.dec("ordered update", &v)?;
                    s.ordered.insert(o.seq, o);
                }
                _ => return Err(self.corrupt("log", format!("unexpected key {k:?}"))),
            }
        }
        s.snapshot = self.read_snapshot()?;
        Ok(s)
    }

    /// Reads the snapshot's chunks back and checks them against its length and digest.
    fn read_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let cf = self.cf(CF_SNAPSHOT)?;
        let Some(v) = self.db.get_cf(cf, KEY_SNAPSHOT).map_err(backend_err)? else {
            return Ok(None);
        };
        let meta: SnapshotMeta = self.dec("snapshot", &v)?;
        // A damaged length must not become an allocation: the chunks bound it.
        if meta.len > u64::from(meta.chunks) * CHUNK_BYTES as u64 {
            return Err(self.corrupt(
                "snapshot",
                format!("{} bytes recorded for {} chunks", meta.len, meta.chunks),
            ));
        }
        let mut image = Vec::with_capacity(meta.len as usize);
        for i in 0..meta.chunks {
            let Some(c) = self.db.get_cf(cf, chunk_key(i)).map_err(backend_err)? else {
                return Err(self.corrupt("snapshot", format!("chunk {i} missing")));
            };
            image.extend_from_slice(&c);
        }
        if image.len() as u64 != meta.len {
            return Err(self.corrupt(
                "snapshot",
                format!("{} bytes of image, {} recorded", image.len(), meta.len),
            ));
        }
        let snap = Snapshot::from_image(image.into(), Some(meta.digest))
            .map_err(|e| self.corrupt("snapshot", e))?;
        if snap.seq() != meta.seq {
            return Err(self.corrupt("snapshot", "image of another slot"));
        }
        Ok(Some(snap))
    }

    /// Replaces the stored snapshot with `snap` in `wb`: old chunks deleted, new ones and the
    /// meta key written (later writes of a batch win over its range deletion).
    fn put_snapshot(&self, wb: &mut WriteBatch, snap: &Snapshot) -> Result<(), StorageError> {
        let cf = self.cf(CF_SNAPSHOT)?;
        wb.delete_range_cf(cf, vec![PREFIX_CHUNK], vec![PREFIX_CHUNK + 1]);
        let mut chunks = 0u32;
        for (i, c) in snap.image().chunks(CHUNK_BYTES).enumerate() {
            wb.put_cf(cf, chunk_key(i as u32), c);
            chunks += 1;
        }
        let meta = SnapshotMeta {
            seq: snap.seq(),
            digest: snap.digest(),
            len: snap.len(),
            chunks,
        };
        wb.put_cf(cf, KEY_SNAPSHOT, enc(&meta)?);
        Ok(())
    }

    fn ready(&mut self) -> Result<(), StorageError> {
        if let Some(why) = &self.poisoned {
            return Err(StorageError::Poisoned(why.clone()));
        }
        if self.state.is_none() {
            return Err(StorageError::Misuse("call load() before using the storage"));
        }
        Ok(())
    }

    fn write(&self, wb: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(backend_err)
    }

    /// Adds the range deletions of every `log` key at or below `seq`.
    fn delete_through(&self, wb: &mut WriteBatch, seq: Seq) -> Result<(), StorageError> {
        let log = self.cf(CF_LOG)?;
        for p in [PREFIX_ACCEPTED, PREFIX_ORDERED] {
            wb.delete_range_cf(log, vec![p], range_end(p, seq));
        }
        Ok(())
    }

    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.ready()?;
        let r = f(self);
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    /// Turns `batches` into one write batch, updating the in-memory state as it goes.
    fn build(
        &self,
        state: &mut DurableState,
        batches: &[PersistBatch],
    ) -> Result<WriteBatch, StorageError> {
        let (meta, log) = (self.cf(CF_META)?, self.cf(CF_LOG)?);
        let mut wb = WriteBatch::default();
        for b in batches {
            let floor = state.snapshot_seq();
            state.apply(b);
            if b.view.is_some() {
                wb.put_cf(meta, KEY_VIEW, enc(&state.view)?);
            }
            for a in &b.accepted {
                if let Some(cur) = state.accepted.get(&a.seq) {
                    wb.put_cf(log, key(PREFIX_ACCEPTED, a.seq.0), enc(cur)?);
                }
            }
            for o in &b.ordered {
                if let Some(cur) = state.ordered.get(&o.seq) {
                    wb.put_cf(log, key(PREFIX_ORDERED, o.seq.0), enc(cur)?);
                }
            }
            for p in &b.pending {
                if let Some(cur) = state.pending.get(&p.client_id) {
                    wb.put_cf(meta, key(PREFIX_PENDING, p.client_id.0), enc(cur)?);
                }
            }
            // Executed pending updates: `apply` removed the entry when the stored one was not
            // newer, so the key goes too (a later batch's newer pending entry stays put).
            for done in &b.pending_done {
                if !state.pending.contains_key(&done.client) {
                    wb.delete_cf(meta, key(PREFIX_PENDING, done.client.0));
                }
            }
            if state.snapshot_seq() > floor {
                if let Some(s) = &state.snapshot {
                    self.put_snapshot(&mut wb, s)?;
                    self.delete_through(&mut wb, s.seq())?;
                }
            }
        }
        Ok(wb)
    }
}

impl Storage for RocksStorage {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn load(&mut self) -> Result<DurableState, StorageError> {
        if let Some(why) = &self.poisoned {
            return Err(StorageError::Poisoned(why.clone()));
        }
        if self.state.is_some() {
            return Err(StorageError::Misuse("load() called twice"));
        }
        let mut s = self.read_state()?;
        s.incarnation += 1;
        let mut wb = WriteBatch::default();
        wb.put_cf(self.cf(CF_META)?, KEY_INCARNATION, enc(&s.incarnation)?);
        self.write(wb, true)?;
        self.state = Some(s.clone());
        Ok(s)
    }

    fn append(&mut self, batches: &[PersistBatch], sync: bool) -> Result<(), StorageError> {
        self.guarded(|this| {
            let mut state = this.state.take().expect("checked by ready()");
            let r = this
                .build(&mut state, batches)
                .and_then(|wb| this.write(wb, sync));
            this.state = Some(state);
            r
        })
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.guarded(|this| this.db.flush_wal(true).map_err(backend_err))
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.guarded(|this| {
            let floor = this.state.as_ref().map_or(Seq(0), |s| s.snapshot_seq());
            if snapshot.seq() <= floor {
                return Ok(());
            }
            let mut wb = WriteBatch::default();
            this.put_snapshot(&mut wb, snapshot)?;
            this.delete_through(&mut wb, snapshot.seq())?;
            this.write(wb, true)?;
            if let Some(s) = this.state.as_mut() {
                s.truncate_through(snapshot.seq());
                s.snapshot = Some(snapshot.clone());
            }
            Ok(())
        })
    }

    fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.ready()?;
        Ok(self.state.as_ref().and_then(|s| s.snapshot.clone()))
    }

    fn truncate_through(&mut self, seq: Seq) -> Result<(), StorageError> {
        self.guarded(|this| {
            let mut wb = WriteBatch::default();
            this.delete_through(&mut wb, seq)?;
            this.write(wb, false)?;
            if let Some(s) = this.state.as_mut() {
                s.truncate_through(seq);
            }
            Ok(())
        })
    }
}
