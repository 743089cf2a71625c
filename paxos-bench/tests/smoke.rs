//! CI smoke test: a tiny real run (3 servers, memory storage, durability none, a few clients,
//! about two seconds) proves the bench works end to end and that its output files parse. Timings
//! are never asserted: only that updates completed and the files were written.

use paxos_bench::output::{Report, CSV_HEADER};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `paxos-node` binary of this build profile, built on demand (`cargo test -p paxos-bench`
/// does not build other packages' binaries).
fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/smoke-… → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("paxos-node");
    if !bin.exists() {
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "paxos-node"])
            .env("CARGO_TARGET_DIR", target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build -p paxos-node");
        assert!(status.success(), "building paxos-node failed");
    }
    assert!(bin.exists(), "no paxos-node at {}", bin.display());
    bin
}

#[test]
fn tiny_run_completes_updates_and_writes_parseable_files() {
    let node = node_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("run.json");
    let csv = dir.path().join("run.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_paxos-bench"))
        .arg("--node-binary")
        .arg(&node)
        .args([
            "throughput",
            "--servers",
            "3",
            "--clients",
            "4",
            "--durability",
            "none",
            "--storage",
            "memory",
            "--aggregation",
            "on",
            "--warmup",
            "0.5",
            "--seconds",
            "1.5",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--csv")
        .arg(&csv)
        .output()
        .expect("running paxos-bench");
    assert!(
        out.status.success(),
        "paxos-bench failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let report = Report::read(&json).expect("the JSON report parses");
    assert_eq!(report.kind, "throughput");
    assert!(report.provenance.cores >= 1);
    let r = report.results[0].result.as_ref().expect("a result");
    assert!(r.updates > 0, "no update completed");
    assert_eq!(r.config.servers, 3);
    assert_eq!(r.config.clients, 4);
    assert!(!r.per_second.is_empty());

    let text = std::fs::read_to_string(&csv).expect("the CSV file");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER));
    let row: Vec<&str> = lines.next().expect("one row").split(',').collect();
    assert_eq!(row.len(), CSV_HEADER.split(',').count());
    let updates: u64 = row[13].parse().expect("updates column");
    assert!(updates > 0);
}

#[test]
fn figures_render_from_a_report() {
    if paxos_bench::figures::load_font().is_err() {
        eprintln!("no TrueType font on this machine; figure rendering not exercised");
        return;
    }
    let text = include_str!("data/tiny-paper.json");
    let report: Report = serde_json::from_str(text).expect("fixture parses");
    let dir = tempfile::tempdir().expect("temp dir");
    let files =
        paxos_bench::paper::render(&report, &paxos_bench::paper_data::embedded(), dir.path())
            .expect("figures render");
    assert!(!files.is_empty());
    for f in files {
        assert!(std::fs::metadata(&f).expect("written").len() > 0);
    }
}
