//! The `paxos-node` command: run a server, generate keys, talk to a cluster, or run the demo.

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use paxos_node::client::{status, Client, ClientError};
use paxos_node::cluster::ClusterOptions;
use paxos_node::config::{
    parse_choice, DurabilityChoice, NodeFile, StorageChoice, TransportChoice,
};
use paxos_node::demo::DemoOptions;
use paxos_node::kv::KvResult;
use paxos_node::kv::KvStore;
use paxos_node::logging::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "paxos-node",
    version,
    about = "Paxos for System Builders: a replicated key-value service",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The exit codes, for `--help`.
const EXIT_CODES: &str = "Exit codes:
  0  success
  1  error (configuration, I/O, a bug)
  2  usage error (also a --servers name that does not resolve)
  3  definite failure: cas failed, the update was refused, or `get` found no value
  4  outcome unknown: no answer in time (the update may or may not have executed)
  5  cluster unreachable: every server refused the connection (nothing was sent)";

/// Exit code of a usage error (the same code clap exits with for a malformed command line).
const EXIT_USAGE: i32 = 2;
/// Exit code of a definite failure (the operation certainly did not take effect).
const EXIT_DEFINITE: i32 = 3;
/// Exit code of an unknown outcome.
const EXIT_UNKNOWN: i32 = 4;
/// Exit code when no server could be reached.
const EXIT_UNREACHABLE: i32 = 5;

/// An expected failure of a client command: printed as one line and mapped to its exit code
/// (never a backtrace).
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

fn failure(code: i32, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code,
        message: message.into(),
    })
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn client_failure(e: ClientError) -> anyhow::Error {
    let code = match e {
        ClientError::Unreachable => EXIT_UNREACHABLE,
        ClientError::Timeout(_) | ClientError::SessionExpired(_) => EXIT_UNKNOWN,
        ClientError::Superseded { .. } => EXIT_UNKNOWN,
        ClientError::BadReply(_) | ClientError::Server { .. } => EXIT_UNKNOWN,
        ClientError::NoServers => 1,
    };
    failure(code, e.to_string())
}

#[derive(Subcommand)]
enum Command {
    /// Run one server from a configuration file.
    Run {
        /// The node's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Override `protocol.durability` (none, async, sync).
        #[arg(long)]
        durability: Option<String>,
        /// Override `election.strategy` (psb, highest-id, omega, ble).
        #[arg(long)]
        election: Option<String>,
        /// Override `storage.dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Override `metrics_addr`.
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
        /// Log lines as text (coloured only on a terminal) or as JSON objects, one per line.
        /// The level is info unless RUST_LOG says otherwise.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Generate the cluster CA, per-node certificates (QUIC) and the cluster key (UDP).
    Keygen {
        /// Directory to write the key material to: `ca/` (the CA key, keep it offline) and one
        /// bundle `node-<id>/` per server, that server's `keys_dir`. Refuses to overwrite.
        #[arg(long)]
        dir: PathBuf,
        /// Number of servers (ids 0..N).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        nodes: u32,
        /// Days the node certificates are valid.
        #[arg(long, default_value_t = paxos_transport::keygen::DEFAULT_VALID_DAYS)]
        valid_days: u32,
        /// Write every file flat into `dir`, CA key included (local test clusters only: any node
        /// reading that directory could mint every identity).
        #[arg(long)]
        flat: bool,
        /// Client bundles to write, `client-<name>/` each (comma-separated names: a-z, 0-9, '-'):
        /// the certificates clients present on the TLS client port.
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
    },
    /// Start a local 3-server cluster, run a workload, kill and restart the leader, and verify.
    Demo {
        /// Seconds of workload.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Number of servers.
        #[arg(long, default_value_t = 3)]
        servers: usize,
        /// Election strategy (psb, highest-id, omega, ble).
        #[arg(long, default_value = "psb")]
        election: String,
        /// Transport (quic, udp-multicast).
        #[arg(long, default_value = "quic")]
        transport: String,
        /// Storage (wal, rocksdb).
        #[arg(long, default_value = "wal")]
        storage: String,
    },
    /// Talk to a running cluster.
    Client {
        /// Client addresses of the servers as HOST:PORT (comma-separated; HOST an IP address or a
        /// name such as localhost), the first preferred.
        #[arg(long, value_delimiter = ',', required = true, value_parser = host_port)]
        servers: Vec<String>,
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
        /// The value, stored as given (unlike in `cas`, "-" is an ordinary value here).
        value: String,
    },
    /// Read a key (through the log: linearizable). Prints the value; an absent key exits 3.
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

/// Checks the form `HOST:PORT` of one `--servers` entry (resolved later, once the runtime runs).
fn host_port(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not HOST:PORT")),
    }
}

/// Every address of each `--servers` entry, in the order given; a name that does not resolve
/// is a usage error naming it.
async fn resolve(servers: &[String]) -> Result<Vec<Vec<SocketAddr>>> {
    let mut out = Vec::with_capacity(servers.len());
    for s in servers {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(s.as_str())
            .await
            .map_err(|e| failure(EXIT_USAGE, format!("--servers: cannot resolve {s}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(failure(
                EXIT_USAGE,
                format!("--servers: {s} resolves to no address"),
            ));
        }
        out.push(addrs);
    }
    Ok(out)
}

/// The status of the server at any of `addrs` (the addresses of one name), the first that answers.
async fn status_of(
    addrs: Vec<SocketAddr>,
) -> Result<paxos_node::protocol::NodeStatus, ClientError> {
    let mut last = ClientError::NoServers;
    for a in addrs {
        match status(a, Duration::from_secs(2)).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn client(names: Vec<String>, op: ClientOp) -> Result<()> {
    let resolved = resolve(&names).await?;
    if let ClientOp::Status = op {
        // Every server at once, each with its own timeout: one dead server costs 2 s in all.
        let asks: Vec<_> = resolved
            .iter()
            .map(|a| tokio::spawn(status_of(a.clone())))
            .collect();
        let mut rows = Vec::new();
        for (a, ask) in names.iter().zip(asks) {
            match ask.await.context("status task")? {
                Ok(s) => rows.push((a, Some(s))),
                Err(e) => {
                    eprintln!("{a}: {e}");
                    rows.push((a, None));
                }
            }
        }
        let reached = rows.iter().filter(|(_, s)| s.is_some()).count();
        let max_aru = rows
            .iter()
            .filter_map(|(_, s)| s.as_ref().map(|s| s.aru))
            .max()
            .unwrap_or(0);
        println!(
            "{:<22} {:>3} {:<16} {:>6} {:>6} {:>6} {:>10} {:>6} {:>18} {:>9} {:>14} {:>6} {:>6} {:>12}",
            "server",
            "id",
            "role",
            "leader",
            "wants",
            "view",
            "aru",
            "lag",
            "digest",
            "sessions",
            "transfer",
            "snaps",
            "inst",
            "snap-bytes"
        );
        for (a, s) in rows {
            match s {
                Some(s) => println!(
                    "{:<22} {:>3} {:<16} {:>6} {:>6} {:>6} {:>10} {:>6} {:>18x} {:>9} {:>14} {:>6} {:>6} {:>12}",
                    a.to_string(),
                    s.id,
                    s.role,
                    s.leader.map_or("-".into(), |l| l.to_string()),
                    s.election_leader.map_or("-".into(), |l| l.to_string()),
                    s.view,
                    s.aru,
                    max_aru - s.aru,
                    s.state_digest,
                    s.sessions,
                    s.transfer
                        .map_or("-".into(), |(got, total)| format!("{got}/{total}")),
                    s.snapshots_taken,
                    s.snapshots_installed,
                    s.snapshot_bytes,
                ),
                None => println!("{a:<22} unreachable"),
            }
        }
        if reached == 0 {
            return Err(failure(
                EXIT_UNREACHABLE,
                "cluster unreachable: no server answered",
            ));
        }
        return Ok(());
    }
    let mut servers: Vec<SocketAddr> = resolved.into_iter().flatten().collect();
    // `localhost` and 127.0.0.1 given both must not make one server count twice.
    let mut seen = std::collections::HashSet::new();
    servers.retain(|a| seen.insert(*a));
    let mut c = Client::new(servers);
    let result = match op {
        ClientOp::Put { key, value } => c.put(key, value).await.map_err(client_failure)?,
        ClientOp::Get { key } => {
            // The value exactly as stored on stdout; an absent key prints nothing there and
            // exits 3, so a stored "(absent)" cannot be mistaken for no value.
            return match c.get(key).await.map_err(client_failure)? {
                Some(v) => {
                    // Raw bytes plus a newline: a binary value survives `get k | head -c -1`.
                    use std::io::Write as _;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&v)
                        .and_then(|()| out.write_all(b"\n"))
                        .and_then(|()| out.flush())
                        .context("write the value to stdout")?;
                    Ok(())
                }
                None => Err(failure(EXIT_DEFINITE, "(absent)")),
            };
        }
        ClientOp::Delete { key } => c.delete(key).await.map_err(client_failure)?,
        ClientOp::Cas { key, expected, new } => c
            .cas(key, opt(&expected), opt(&new))
            .await
            .map_err(client_failure)?,
        ClientOp::Status => unreachable!("handled above"),
    };
    match result {
        KvResult::Done | KvResult::Swapped => println!("ok"),
        KvResult::Value(v) => println!("ok (was {})", show(&v)),
        KvResult::CasFailed { current } => {
            return Err(failure(
                EXIT_DEFINITE,
                format!("cas failed: key holds {}", show(&current)),
            ))
        }
        KvResult::Invalid(why) => return Err(failure(EXIT_DEFINITE, format!("refused: {why}"))),
    }
    Ok(())
}

async fn run(
    config: PathBuf,
    durability: Option<String>,
    election: Option<String>,
    data_dir: Option<PathBuf>,
    metrics_addr: Option<SocketAddr>,
) -> Result<()> {
    let mut file = NodeFile::load(&config)?;
    if let Some(d) = durability {
        file.protocol.durability = parse_choice::<DurabilityChoice>("durability", &d)?;
    }
    if let Some(e) = election {
        file.election.strategy = e;
    }
    if let Some(d) = data_dir {
        file.storage.dir = Some(d);
    }
    if metrics_addr.is_some() {
        file.metrics_addr = metrics_addr;
    }
    file.validate()?;
    let node = paxos_node::launch(&file, KvStore::new())
        .await
        .with_context(|| format!("starting server {}", file.id))?;
    tracing::info!(
        id = file.id,
        clients = %node.client_addr(),
        peers = %file.me().peer,
        metrics = ?file.metrics_addr,
        election = %file.election.strategy,
        storage = ?file.storage.backend,
        transport = ?file.transport.kind,
        "serving"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    node.run_until(stop).await?;
    Ok(())
}

async fn demo(
    seconds: u64,
    clients: usize,
    servers: usize,
    election: String,
    transport: String,
    storage: String,
) -> Result<()> {
    let binary = std::env::current_exe().context("locating the paxos-node binary")?;
    let mut cluster = ClusterOptions {
        servers,
        storage: parse_choice::<StorageChoice>("storage", &storage)?,
        transport: parse_choice::<TransportChoice>("transport", &transport)?,
        ..ClusterOptions::default()
    };
    cluster.election.strategy = election;
    if cluster.storage == StorageChoice::Memory {
        // Memory cannot sync; a killed server then rejoins with an empty state, which is safe only
        // because the paper's memory mode never lets a crashed server vote on what it forgot.
        cluster.protocol.durability = DurabilityChoice::None;
    }
    let opts = DemoOptions {
        clients,
        duration: Duration::from_secs(seconds),
        cluster,
    };
    let s = paxos_node::demo::run(&binary, opts).await?;
    println!();
    println!("Summary");
    println!("  updates acknowledged   {}", s.updates);
    println!("  throughput             {:.0} updates/s", s.throughput);
    println!(
        "  latency p50 / p99      {:.2} ms / {:.2} ms",
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
    println!("  leader changes         {}", s.leader_changes);
    println!(
        "  client timeouts        {} (retried with the same id: exactly once)",
        s.timeouts
    );
    println!(
        "  replicas identical     yes: aru {} on every server, state digest {:016x}",
        s.aru, s.digest
    );
    println!(
        "  writes read back       {} of the latest per key, all present",
        s.verified_writes
    );
    Ok(())
}

fn main() {
    let code = match real_main() {
        Ok(()) => 0,
        Err(e) => {
            // `{:#}`: the error and its causes on one line; an anyhow error's Debug form would add
            // a backtrace under RUST_BACKTRACE=1, which only a bug (a panic) should print.
            eprintln!("error: {e:#}");
            e.downcast_ref::<Failure>().map_or(1, |f| f.code)
        }
    };
    std::process::exit(code);
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    // A server's lifecycle (serving, views, transfers, refusals) is info; the client and the
    // demo print their own results and log only what went wrong.
    let (format, level) = match &cli.command {
        Command::Run { log_format, .. } => (*log_format, "info"),
        _ => (LogFormat::Text, "warn"),
    };
    paxos_node::logging::init(format, level)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Command::Client { servers, op } => rt.block_on(client(servers, op)),
        Command::Run {
            config,
            durability,
            election,
            data_dir,
            metrics_addr,
            log_format: _,
        } => rt.block_on(run(config, durability, election, data_dir, metrics_addr)),
        Command::Keygen {
            dir,
            nodes,
            valid_days,
            flat,
            clients,
        } => {
            let ids: Vec<paxos_core::NodeId> = (0..nodes).map(paxos_core::NodeId).collect();
            if flat && !clients.is_empty() {
                anyhow::bail!("--clients writes bundles: it does not go with --flat");
            }
            if flat {
                paxos_transport::keygen::keygen(&dir, &ids)
            } else {
                paxos_transport::keygen::keygen_bundles_with_clients(
                    &dir, &ids, &clients, valid_days,
                )
            }
            .with_context(|| format!("writing keys to {}", dir.display()))?;
            if flat {
                println!("wrote keys for {nodes} servers to {}", dir.display());
            } else {
                println!(
                    "wrote the CA to {0}/ca (keep it offline) and one bundle per server, \
                     {0}/node-<id> (that server's keys_dir); certificates valid {valid_days} days",
                    dir.display()
                );
                for name in &clients {
                    println!("wrote client bundle {}/client-{name}", dir.display());
                }
            }
            Ok(())
        }
        Command::Demo {
            seconds,
            clients,
            servers,
            election,
            transport,
            storage,
        } => rt.block_on(demo(
            seconds, clients, servers, election, transport, storage,
        )),
    }
}
