//! `paxos-bench`: throughput and latency of real `paxos-node` clusters on this machine.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use paxos_bench::{run_throughput, Provenance, ThroughputRun};
use paxos_node::cluster::ClusterOptions;
use paxos_node::config::{
    DurabilityChoice, ElectionSection, ProtocolSection, StorageChoice, TransportChoice,
};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "paxos-bench",
    version,
    about = "Benchmarks of real paxos-node clusters"
)]
struct Cli {
    /// The paxos-node binary (default: next to this one).
    #[arg(long, global = true)]
    node_binary: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum Command {
    /// One closed-loop measurement.
    Throughput {
        /// Servers.
        #[arg(long, default_value_t = 3)]
        servers: usize,
        /// Closed-loop clients (one outstanding update each).
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Durability: none, async or sync.
        #[arg(long, default_value = "sync")]
        durability: String,
        /// Aggregation.
        #[arg(long, value_enum, default_value = "on")]
        aggregation: OnOff,
        /// Storage: memory, wal, rocksdb.
        #[arg(long, default_value = "wal")]
        storage: String,
        /// Transport: quic or udp-multicast.
        #[arg(long, default_value = "quic")]
        transport: String,
        /// Election: psb, highest-id, omega, ble.
        #[arg(long, default_value = "psb")]
        election: String,
        /// Update size in bytes.
        #[arg(long, default_value_t = 200)]
        update_bytes: usize,
        /// Warm-up seconds.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Write the result as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T> {
    let quoted = format!("\"{v}\"");
    serde_json::from_str(&quoted).with_context(|| format!("unknown {what} {v:?}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let binary = match cli.node_binary {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("paxos-node"),
    };
    if !binary.exists() {
        bail!(
            "paxos-node binary not found at {} (build it with `cargo build --release -p paxos-node` or pass --node-binary)",
            binary.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Throughput {
            servers,
            clients,
            durability,
            aggregation,
            storage,
            transport,
            election,
            update_bytes,
            warmup,
            seconds,
            json,
        } => {
            let durability: DurabilityChoice = parse("durability", &durability)?;
            let storage: StorageChoice = parse("storage", &storage)?;
            let transport: TransportChoice = parse("transport", &transport)?;
            let run = ThroughputRun {
                cluster: ClusterOptions {
                    servers,
                    storage,
                    transport,
                    protocol: ProtocolSection {
                        durability,
                        aggregation: matches!(aggregation, OnOff::On),
                        ..ProtocolSection::default()
                    },
                    election: ElectionSection {
                        strategy: election,
                        ..ElectionSection::default()
                    },
                    metrics: false,
                },
                clients,
                update_bytes,
                warmup: Duration::from_secs_f64(warmup),
                measure: Duration::from_secs_f64(seconds),
            };
            let result = rt.block_on(run_throughput(&binary, &run))?;
            println!(
                "| servers | clients | durability | aggregation | storage | transport | election | updates/s | p50 ms | p99 ms | p99.9 ms | max ms |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                result.servers,
                result.clients,
                result.durability,
                result.aggregation,
                result.storage,
                result.transport,
                result.election,
                result.throughput,
                result.p50_us as f64 / 1e3,
                result.p99_us as f64 / 1e3,
                result.p999_us as f64 / 1e3,
                result.max_us as f64 / 1e3
            );
            if let Some(path) = json {
                let doc =
                    serde_json::json!({ "provenance": Provenance::collect(), "result": result });
                std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
