//! Result files: JSON (provenance, every result with its raw samples), CSV (one row per result)
//! and markdown tables.

use crate::{BenchError, Provenance, RunConfig, ThroughputResult};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// A results file: the provenance and every result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Which subcommand produced it (`throughput`, `paper`, `compare`).
    pub kind: String,
    /// Machine, revision and command.
    pub provenance: Provenance,
    /// The results, in the order they were measured.
    pub results: Vec<Row>,
}

/// One measured point, or why it could not be measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// The sweep or group this point belongs to (e.g. `nodisk-agg`), empty for single runs.
    pub group: String,
    /// The result, if the run succeeded.
    pub result: Option<ThroughputResult>,
    /// The settings, when the run failed (otherwise inside `result`).
    pub failed_config: Option<crate::RunConfig>,
    /// Why the run failed.
    pub error: Option<String>,
}

/// The CSV header of [`Report::write_csv`].
pub const CSV_HEADER: &str = "group,servers,clients,durability,aggregation,storage,transport,election,update_bytes,client_mode,clients_per_connection,warmup_s,measure_s,updates,throughput,mean_us,p50_us,p99_us,p999_us,max_us,retries,rejected,reconnects,client_cpu_share,cores_used,per_second,error";

impl Report {
    /// Reads a JSON report.
    pub fn read(path: &Path) -> Result<Report, BenchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError::Io(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| BenchError::Io(format!("{}: {e}", path.display())))
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Io(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| BenchError::Io(format!("{}: {e}", path.display())))
    }

    /// The report as CSV, one row per point (per-second samples joined by `;`).
    pub fn to_csv(&self) -> String {
        let mut s = String::from(CSV_HEADER);
        s.push('\n');
        for row in &self.results {
            let cfg = row
                .result
                .as_ref()
                .map(|r| &r.config)
                .or(row.failed_config.as_ref());
            let Some(c) = cfg else { continue };
            let _ = write!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},",
                row.group,
                c.servers,
                c.clients,
                c.durability,
                c.aggregation,
                c.storage,
                c.transport,
                c.election,
                c.update_bytes,
                serde_json::to_value(c.client_mode)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                c.clients_per_connection,
                c.warmup_s,
                c.measure_s
            );
            match &row.result {
                Some(r) => {
                    let per: Vec<String> = r.per_second.iter().map(|x| format!("{x:.0}")).collect();
                    let _ = writeln!(
                        s,
                        "{},{:.1},{:.1},{},{},{},{},{},{},{},{:.4},{:.3},{},",
                        r.updates,
                        r.throughput,
                        r.mean_us,
                        r.p50_us,
                        r.p99_us,
                        r.p999_us,
                        r.max_us,
                        r.retries,
                        r.rejected,
                        r.reconnects,
                        r.cpu.client_share,
                        r.cpu.cores_used,
                        per.join(";")
                    );
                }
                None => {
                    let e = row
                        .error
                        .as_deref()
                        .unwrap_or("")
                        .replace([',', '\n', '"'], " ");
                    let _ = writeln!(s, ",,,,,,,,,,,,,{e}");
                }
            }
        }
        s
    }

    /// Writes [`Report::to_csv`] to `path`.
    pub fn write_csv(&self, path: &Path) -> Result<(), BenchError> {
        std::fs::write(path, self.to_csv())
            .map_err(|e| BenchError::Io(format!("{}: {e}", path.display())))
    }
}

/// The markdown header of [`markdown_row`].
pub fn markdown_header() -> String {
    "| servers | clients | durability | aggregation | storage | transport | election | updates/s | mean ms | p50 ms | p99 ms | p99.9 ms | max ms | cores used | updates per core-s | client CPU |\n|---:|---:|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n".to_owned()
}

/// The first seven cells of a markdown row (servers to election), with their leading `| `.
pub fn config_cells(c: &RunConfig) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} ",
        c.servers,
        c.clients,
        c.durability,
        if c.aggregation { "on" } else { "off" },
        c.storage,
        c.transport,
        c.election,
    )
}

/// One markdown table row for a result.
pub fn markdown_row(r: &ThroughputResult) -> String {
    format!(
        "{}| {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.0} | {:.0}% |\n",
        config_cells(&r.config),
        r.throughput,
        r.mean_us / 1e3,
        r.p50_us as f64 / 1e3,
        r.p99_us as f64 / 1e3,
        r.p999_us as f64 / 1e3,
        r.max_us as f64 / 1e3,
        r.cpu.cores_used,
        r.throughput / r.cpu.cores_used.max(1e-9),
        r.cpu.client_share * 100.0
    )
}
