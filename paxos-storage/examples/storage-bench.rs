//! Storage benchmark: every backend, sync and no-sync, batches of 1/16/256 updates of 200 bytes,
//! next to the raw write+fdatasync limit of the same disk.
//!
//! ```sh
//! cargo run --release -p paxos-storage --features rocksdb --example storage-bench -- \
//!     --dir /work/bench-scratch --seconds 2
//! ```

use paxos_storage::bench::{self, BenchBackend, BenchConfig};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dir = std::env::temp_dir().join("paxos-storage-bench");
    let mut seconds = 2.0;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(args.next().ok_or("--dir needs a path")?),
            "--seconds" => seconds = args.next().ok_or("--seconds needs a number")?.parse()?,
            "--backends" => only = Some(args.next().ok_or("--backends needs a list")?),
            "-h" | "--help" => {
                println!("storage-bench [--dir PATH] [--seconds PER_CELL] [--backends memory,wal,rocksdb]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut cfg = BenchConfig::standard(&dir, seconds);
    if let Some(list) = only {
        let names: Vec<&str> = list.split(',').collect();
        cfg.backends.retain(|b| {
            names
                .iter()
                .any(|n| b.label().split(' ').next() == Some(*n))
        });
    }
    eprintln!(
        "dir {} ({} s per cell, backends: {:?})",
        dir.display(),
        seconds,
        cfg.backends
            .iter()
            .map(|b: &BenchBackend| b.label())
            .collect::<Vec<_>>()
    );
    let report = bench::run(&cfg, |row| {
        eprintln!(
            "{:>7} {:>3} updates {:<20} {:>9.0} batches/s",
            if row.sync { "sync" } else { "no-sync" },
            row.updates,
            row.backend,
            row.batches_per_sec()
        );
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", report.to_markdown());
    Ok(())
}
