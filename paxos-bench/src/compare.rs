//! One workload against every storage × transport × election combination.
//!
//! Memory storage cannot sync, so its rows run with durability `none` whatever the workload asks
//! (the table says so). A backend this `paxos-node` build lacks (RocksDB without the `rocksdb`
//! feature) shows up as a failed row with the server's own error message.

use crate::output::{Report, Row};
use paxos_node::config::{StorageChoice, TransportChoice};

/// Every storage backend.
pub const STORAGES: [StorageChoice; 3] = [
    StorageChoice::Memory,
    StorageChoice::Wal,
    StorageChoice::Rocksdb,
];
/// Every transport.
pub const TRANSPORTS: [TransportChoice; 2] = [TransportChoice::Quic, TransportChoice::UdpMulticast];
/// Every election strategy.
pub const ELECTIONS: [&str; 4] = ["psb", "highest-id", "omega", "ble"];

/// Every `(storage, transport, election)` combination, storage slowest-varying.
pub fn combinations() -> Vec<(StorageChoice, TransportChoice, &'static str)> {
    let mut v = Vec::new();
    for s in STORAGES {
        for t in TRANSPORTS {
            for e in ELECTIONS {
                v.push((s, t, e));
            }
        }
    }
    v
}

/// The comparison as one markdown table.
pub fn markdown(report: &Report) -> String {
    let mut s = String::from(
        "| storage | transport | election | durability | updates/s | mean ms | p50 ms | p99 ms | p99.9 ms | cores used | updates per core-s | client CPU |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &report.results {
        match (&row.result, &row.failed_config) {
            (Some(r), _) => {
                let c = &r.config;
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0}% |\n",
                    c.storage,
                    c.transport,
                    c.election,
                    c.durability,
                    r.throughput,
                    r.mean_us / 1e3,
                    r.p50_us as f64 / 1e3,
                    r.p99_us as f64 / 1e3,
                    r.p999_us as f64 / 1e3,
                    r.cpu.cores_used,
                    r.throughput / r.cpu.cores_used.max(1e-9),
                    r.cpu.client_share * 100.0
                ));
            }
            (None, Some(c)) => {
                let why = row
                    .error
                    .as_deref()
                    .unwrap_or("failed")
                    .replace('|', "/")
                    .chars()
                    .take(160)
                    .collect::<String>();
                s.push_str(&format!(
                    "| {} | {} | {} | {} | not run: {} | | | | | | | |\n",
                    c.storage, c.transport, c.election, c.durability, why
                ));
            }
            _ => {}
        }
    }
    s
}

/// The row for a failed combination.
pub fn failed(config: crate::RunConfig, error: String) -> Row {
    Row {
        group: "compare".into(),
        result: None,
        failed_config: Some(config),
        error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_combination_once() {
        let c = super::combinations();
        assert_eq!(c.len(), 24);
        let mut d = c.clone();
        d.dedup();
        assert_eq!(d.len(), 24);
    }
}
