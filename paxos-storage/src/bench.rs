//! The storage benchmark: batches/s and bytes/s of every backend, in sync and no-sync mode, next
//! to the raw limit of the disk measured in the same run.
//!
//! The raw limit writes the same number of bytes as one WAL record of the batch at increasing
//! offsets of a file that was preallocated with zeros, and calls `fdatasync` after each write:
//! no storage engine can sync one batch at a time faster on that file system. Run it with
//! `cargo run --release -p paxos-storage --example storage-bench -- --dir /some/real/disk`
//! (add `--features rocksdb` for RocksDB); `paxos-bench storage` calls [`run`] as well.

use crate::wal::{Preallocation, WalOptions, WalStorage};
use crate::{MemoryStorage, Storage, StorageError};
use bytes::Bytes;
use paxos_core::durable::{BatchId, PersistBatch};
use paxos_core::message::{AcceptedProposal, ClientUpdate};
use paxos_core::{ClientId, NodeId, Seq, Timestamp, View};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A backend the benchmark can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchBackend {
    /// [`MemoryStorage`] (no disk: the cost of the trait, encoding and folding alone).
    Memory,
    /// [`WalStorage`] with the given preallocation of its segments.
    Wal(Preallocation),
    /// RocksDB (only with the `rocksdb` feature).
    #[cfg(feature = "rocksdb")]
    RocksDb,
}

impl BenchBackend {
    /// The label used in the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Wal(Preallocation::Zeros) => "wal",
            Self::Wal(Preallocation::Fallocate) => "wal (fallocate)",
            Self::Wal(Preallocation::None) => "wal (no prealloc)",
            #[cfg(feature = "rocksdb")]
            Self::RocksDb => "rocksdb",
        }
    }

    /// Every backend compiled in: memory, the WAL with each preallocation, RocksDB.
    pub fn all() -> Vec<Self> {
        vec![
            Self::Memory,
            Self::Wal(Preallocation::Zeros),
            Self::Wal(Preallocation::Fallocate),
            Self::Wal(Preallocation::None),
            #[cfg(feature = "rocksdb")]
            Self::RocksDb,
        ]
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Scratch directory on the disk under test (subdirectories are created and removed).
    pub dir: PathBuf,
    /// Backends to measure.
    pub backends: Vec<BenchBackend>,
    /// Updates per batch, one table row each.
    pub batch_updates: Vec<usize>,
    /// Payload bytes of every update.
    pub update_bytes: usize,
    /// How long each cell runs in total.
    pub cell: Duration,
    /// Into how many turns each cell's time is split (raw limit and backends alternate).
    pub rounds: u32,
}

impl BenchConfig {
    /// The configuration: batches of 1, 16 and 256 updates of 200 bytes, every backend,
    /// `seconds` per cell.
    pub fn standard(dir: impl Into<PathBuf>, seconds: f64) -> Self {
        Self {
            dir: dir.into(),
            backends: BenchBackend::all(),
            batch_updates: vec![1, 16, 256],
            update_bytes: 200,
            cell: Duration::from_secs_f64(seconds),
            rounds: 30,
        }
    }
}

/// One measured cell.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// Backend label, or `raw write+fdatasync` / `raw write` for the limits.
    pub backend: String,
    /// Whether every batch was synced before the next.
    pub sync: bool,
    /// Updates per batch.
    pub updates: usize,
    /// Bytes written per batch (the WAL record size; the raw limit writes the same).
    pub record_bytes: usize,
    /// Batches completed.
    pub batches: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl BenchRow {
    /// Batches per second.
    pub fn batches_per_sec(&self) -> f64 {
        self.batches as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Record bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.batches_per_sec() * self.record_bytes as f64
    }
}

/// All rows of a run.
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    /// Measured cells, limits first for each batch size.
    pub rows: Vec<BenchRow>,
}

impl BenchReport {
    /// The raw limit for `updates` in the given mode, if measured.
    pub fn raw(&self, updates: usize, sync: bool) -> Option<&BenchRow> {
        self.rows
            .iter()
            .find(|r| r.updates == updates && r.sync == sync && r.backend.starts_with("raw"))
    }

    /// A markdown table: one row per cell, with the share of the raw limit of the same mode.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from(
            "| mode | updates/batch | backend | record bytes | batches/s | MB/s | % of raw |\n|---|---:|---|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            let pct = self
                .raw(r.updates, r.sync)
                .map(|raw| 100.0 * r.batches_per_sec() / raw.batches_per_sec().max(1e-9));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.0} | {:.1} | {} |",
                if r.sync { "sync" } else { "no-sync" },
                r.updates,
                r.backend,
                r.record_bytes,
                r.batches_per_sec(),
                r.bytes_per_sec() / 1e6,
                pct.map_or("-".into(), |p| format!("{p:.0}%")),
            );
        }
        s
    }
}

/// The benchmark's batch: `updates` accepted proposals of `bytes` bytes. Slots cycle through 64
/// batches' worth so the backends' in-memory state stays bounded during long runs.
pub fn bench_batch(id: u64, updates: usize, bytes: usize) -> PersistBatch {
    let base = (id % 64) * updates as u64;
    let payload = Bytes::from(vec![(id % 251) as u8; bytes]);
    PersistBatch {
        id: BatchId(id),
        sync: true,
        accepted: (0..updates as u64)
            .map(|i| AcceptedProposal {
                seq: Seq(base + i + 1),
                view: View(1),
                update: ClientUpdate {
                    client_id: ClientId(i),
                    server_id: NodeId(0),
                    timestamp: Timestamp(id),
                    payload: payload.clone(),
                },
            })
            .collect(),
        ..Default::default()
    }
}

/// Size of `batch` as one WAL record.
pub fn record_bytes(batch: &PersistBatch) -> usize {
    let mut buf = Vec::new();
    match crate::wal::record::encode(&mut buf, crate::wal::record::RecordKind::Batch, batch, 1) {
        Ok(()) => buf.len(),
        Err(_) => 0,
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// The raw limit: a file preallocated with zeros, written `record` bytes at a time at increasing
/// offsets (wrapping at its end), with an fdatasync after each write when syncing.
struct Raw {
    path: PathBuf,
    file: File,
    off: u64,
}

const RAW_FILE_BYTES: u64 = 256 << 20;

impl Raw {
    fn new(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join("raw.dat");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path))?;
        let zeros = vec![0u8; 1 << 20];
        for off in (0..RAW_FILE_BYTES).step_by(zeros.len()) {
            file.write_all_at(&zeros, off).map_err(io(&path))?;
        }
        file.sync_all().map_err(io(&path))?;
        Ok(Self { path, file, off: 0 })
    }

    fn slice(&mut self, data: &[u8], sync: bool, slice: Duration) -> Result<u64, StorageError> {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < slice {
            if self.off + data.len() as u64 > RAW_FILE_BYTES {
                self.off = 0;
            }
            self.file
                .write_all_at(data, self.off)
                .map_err(io(&self.path))?;
            if sync {
                self.file.sync_data().map_err(io(&self.path))?;
            }
            self.off += data.len() as u64;
            n += 1;
        }
        if !sync {
            self.file.sync_data().map_err(io(&self.path))?;
        }
        Ok(n)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn open_backend(b: BenchBackend, dir: &Path) -> Result<Box<dyn Storage>, StorageError> {
    Ok(match b {
        BenchBackend::Memory => Box::new(MemoryStorage::new()),
        // The default WAL runs in its steady state: segments recycled after checkpoints, and
        // enough of them prefilled that no zeros are written while measuring. The other
        // preallocation modes run without recycling, to show what preallocation alone buys.
        BenchBackend::Wal(Preallocation::Zeros) => Box::new(WalStorage::open(
            dir,
            WalOptions {
                prefill_segments: 3,
                ..WalOptions::default()
            },
        )?),
        BenchBackend::Wal(preallocation) => Box::new(WalStorage::open(
            dir,
            WalOptions {
                preallocation,
                max_free_segments: 0,
                ..WalOptions::default()
            },
        )?),
        #[cfg(feature = "rocksdb")]
        BenchBackend::RocksDb => Box::new(crate::rocks::RocksStorage::open(dir)?),
    })
}

/// One backend being measured: its store, its batches, and its running totals.
struct Cell {
    backend: BenchBackend,
    dir: PathBuf,
    store: Box<dyn Storage>,
    next_id: u64,
    batches: u64,
    elapsed: Duration,
}

impl Cell {
    fn open(b: BenchBackend, dir: PathBuf) -> Result<Self, StorageError> {
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = open_backend(b, &dir)?;
        store.load()?;
        Ok(Self {
            backend: b,
            dir,
            store,
            next_id: 0,
            batches: 0,
            elapsed: Duration::ZERO,
        })
    }

    fn slice(
        &mut self,
        pool: &[PersistBatch],
        sync: bool,
        slice: Duration,
    ) -> Result<(), StorageError> {
        let start = Instant::now();
        while start.elapsed() < slice {
            let mut batch = pool[(self.next_id % pool.len() as u64) as usize].clone();
            self.next_id += 1;
            batch.id = BatchId(self.next_id);
            self.store.append(std::slice::from_ref(&batch), sync)?;
            self.batches += 1;
        }
        self.store.sync()?;
        self.elapsed += start.elapsed();
        Ok(())
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Measures every configured backend and batch size, in sync then no-sync mode, each next to the
/// raw limit. The raw limit and the backends take turns in [`BenchConfig::rounds`] short slices,
/// so a change in the disk's speed during the run (other tenants, background writeback) hits
/// them alike. `progress` is called with each row as it completes.
pub fn run(
    cfg: &BenchConfig,
    mut progress: impl FnMut(&BenchRow),
) -> Result<BenchReport, StorageError> {
    std::fs::create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
    let mut raw = Raw::new(&cfg.dir)?;
    let rounds = cfg.rounds.max(1);
    let slice = cfg.cell / rounds;
    let mut report = BenchReport::default();
    for sync in [true, false] {
        for &updates in &cfg.batch_updates {
            let pool: Vec<PersistBatch> = (0..64)
                .map(|i| bench_batch(i, updates, cfg.update_bytes))
                .collect();
            let record = record_bytes(&pool[0]);
            let data = vec![0x5au8; record];
            let mut cells = Vec::new();
            for &b in &cfg.backends {
                // The preallocation variants differ only when syncing.
                if !sync && matches!(b, BenchBackend::Wal(p) if p != Preallocation::Zeros) {
                    continue;
                }
                let dir = cfg
                    .dir
                    .join(format!("bench-{}", b.label().replace(' ', "_")));
                cells.push(Cell::open(b, dir)?);
            }
            let (mut raw_n, mut raw_t) = (0u64, Duration::ZERO);
            for _ in 0..rounds {
                let t = Instant::now();
                raw_n += raw.slice(&data, sync, slice)?;
                raw_t += t.elapsed();
                for c in &mut cells {
                    c.slice(&pool, sync, slice)?;
                }
            }
            let row = BenchRow {
                backend: if sync {
                    "raw write+fdatasync"
                } else {
                    "raw write"
                }
                .into(),
                sync,
                updates,
                record_bytes: record,
                batches: raw_n,
                elapsed: raw_t,
            };
            progress(&row);
            report.rows.push(row);
            for c in cells {
                let row = BenchRow {
                    backend: c.backend.label().into(),
                    sync,
                    updates,
                    record_bytes: record,
                    batches: c.batches,
                    elapsed: c.elapsed,
                };
                progress(&row);
                report.rows.push(row);
            }
        }
    }
    Ok(report)
}
