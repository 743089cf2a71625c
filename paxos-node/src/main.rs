//! The `paxos-node` command: run a server, generate keys, talk to a cluster, or run the demo.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use paxos_node::client::{status, Client};
use paxos_node::kv::KvResult;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "paxos-node",
    version,
    about = "Paxos for System Builders: a replicated key-value service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Talk to a running cluster.
    Client {
        /// Client addresses of the servers (comma-separated), the first preferred.
        #[arg(long, value_delimiter = ',', required = true)]
        servers: Vec<SocketAddr>,
        #[command(subcommand)]
        op: ClientOp,
    },
}

#[derive(Subcommand)]
enum ClientOp {
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key (through the log: linearizable).
    Get {
        /// The key.
        key: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Compare-and-set: set KEY to NEW only if it holds EXPECTED ("-" means absent).
    Cas {
        /// The key.
        key: String,
        /// The expected value, or "-" for absent.
        expected: String,
        /// The new value, or "-" to delete.
        new: String,
    },
    /// Show every server's role, view, aru and lag.
    Status,
}

fn opt(s: &str) -> Option<Bytes> {
    (s != "-").then(|| Bytes::from(s.to_owned()))
}

fn show(v: &Option<Bytes>) -> String {
    match v {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "(absent)".into(),
    }
}

async fn client(servers: Vec<SocketAddr>, op: ClientOp) -> Result<()> {
    if let ClientOp::Status = op {
        let mut rows = Vec::new();
        for a in &servers {
            match status(*a, Duration::from_secs(2)).await {
                Ok(s) => rows.push((a, Some(s))),
                Err(e) => {
                    eprintln!("{a}: {e}");
                    rows.push((a, None));
                }
            }
        }
        let max_aru = rows
            .iter()
            .filter_map(|(_, s)| s.as_ref().map(|s| s.aru))
            .max()
            .unwrap_or(0);
        println!(
            "{:<22} {:>3} {:<16} {:>6} {:>6} {:>10} {:>6} {:>18}",
            "server", "id", "role", "leader", "view", "aru", "lag", "digest"
        );
        for (a, s) in rows {
            match s {
                Some(s) => println!(
                    "{:<22} {:>3} {:<16} {:>6} {:>6} {:>10} {:>6} {:>18x}",
                    a.to_string(),
                    s.id,
                    s.role,
                    s.leader.map_or("-".into(), |l| l.to_string()),
                    s.view,
                    s.aru,
                    max_aru - s.aru,
                    s.state_digest
                ),
                None => println!("{:<22} unreachable", a.to_string()),
            }
        }
        return Ok(());
    }
    let mut c = Client::new(servers);
    let result = match op {
        ClientOp::Put { key, value } => c.put(key, value).await?,
        ClientOp::Get { key } => {
            println!("{}", show(&c.get(key).await?));
            return Ok(());
        }
        ClientOp::Delete { key } => c.delete(key).await?,
        ClientOp::Cas { key, expected, new } => c.cas(key, opt(&expected), opt(&new)).await?,
        ClientOp::Status => unreachable!("handled above"),
    };
    match result {
        KvResult::Done | KvResult::Swapped => println!("ok"),
        KvResult::Value(v) => println!("ok (was {})", show(&v)),
        KvResult::CasFailed { current } => bail!("cas failed: key holds {}", show(&current)),
        KvResult::Invalid(why) => bail!("refused: {why}"),
    }
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Command::Client { servers, op } => rt.block_on(client(servers, op)),
    }
}
