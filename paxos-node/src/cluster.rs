//! A local cluster of `paxos-node` server processes, for the demo, the fault tests and the
//! benchmarks.
//!
//! Every server is a separate OS process started from the `paxos-node` binary with a generated
//! configuration file, on loopback ports chosen free at creation. Faults are real: SIGKILL, SIGSTOP
//! and SIGCONT on the processes.

use crate::client::status;
use crate::config::{
    DurabilityChoice, ElectionSection, Member, NodeFile, ProtocolSection, StorageChoice,
    StorageSection, TransportChoice, TransportSection,
};
use crate::protocol::NodeStatus;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;

/// A cluster operation that failed.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// Spawning or signalling a process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A process exited with an error (e.g. keygen).
    #[error("{0}")]
    Failed(String),
    /// The cluster did not reach the awaited condition in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of servers.
    pub servers: usize,
    /// Storage backend.
    pub storage: StorageChoice,
    /// Transport.
    pub transport: TransportChoice,
    /// Protocol settings.
    pub protocol: ProtocolSection,
    /// Election settings.
    pub election: ElectionSection,
    /// Serve metrics on a free port per server.
    pub metrics: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            servers: 3,
            storage: StorageChoice::Wal,
            transport: TransportChoice::Quic,
            protocol: ProtocolSection::default(),
            election: ElectionSection::default(),
            metrics: false,
        }
    }
}

/// A running (or partly running) local cluster.
pub struct LocalCluster {
    binary: PathBuf,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// The configuration of every server.
    pub files: Vec<NodeFile>,
    procs: Vec<Option<Child>>,
}

fn free_tcp_port() -> Result<u16, ClusterError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(l.local_addr().map_err(io("finding a free port"))?.port())
}

fn free_udp_port() -> Result<u16, ClusterError> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(s.local_addr().map_err(io("finding a free port"))?.port())
}

impl LocalCluster {
    /// Generates keys and configuration files under `dir` (a fresh temporary directory when `None`).
    pub fn create(
        binary: &Path,
        options: &ClusterOptions,
        dir: Option<PathBuf>,
    ) -> Result<LocalCluster, ClusterError> {
        let (tmp, dir) = match dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("paxos-cluster-")
                    .tempdir()
                    .map_err(io("creating a temporary directory"))?;
                let p = t.path().to_owned();
                (Some(t), p)
            }
        };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let keys = dir.join("keys");
        let out = Command::new(binary)
            .args(["keygen", "--dir"])
            .arg(&keys)
            .args(["--nodes", &options.servers.to_string()])
            .output()
            .map_err(io("running keygen"))?;
        if !out.status.success() {
            return Err(ClusterError::Failed(format!(
                "keygen failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut members = Vec::new();
        for id in 0..options.servers as u32 {
            let peer_port = match options.transport {
                TransportChoice::Quic | TransportChoice::UdpMulticast => free_udp_port()?,
            };
            members.push(Member {
                id,
                peer: SocketAddr::from(([127, 0, 0, 1], peer_port)),
                client: SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?)),
            });
        }
        let group_port = free_udp_port()?;
        let mut files = Vec::new();
        for id in 0..options.servers as u32 {
            let file = NodeFile {
                id,
                members: members.clone(),
                protocol: options.protocol.clone(),
                election: options.election.clone(),
                storage: StorageSection {
                    backend: options.storage,
                    dir: Some(dir.join(format!("data-{id}"))),
                },
                transport: TransportSection {
                    kind: options.transport,
                    keys_dir: keys.clone(),
                    multicast_group: (options.transport == TransportChoice::UdpMulticast)
                        .then(|| SocketAddr::from(([239, 255, 77, 1], group_port))),
                },
                metrics_addr: if options.metrics {
                    Some(SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?)))
                } else {
                    None
                },
            };
            let path = dir.join(format!("node-{id}.toml"));
            std::fs::write(&path, file.to_toml())
                .map_err(io(format!("writing {}", path.display())))?;
            files.push(file);
        }
        Ok(LocalCluster {
            binary: binary.to_owned(),
            dir,
            _tmp: tmp,
            files,
            procs: (0..options.servers).map(|_| None).collect(),
        })
    }

    /// The working directory (configs, keys, data, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the cluster has no servers.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Client addresses of all servers.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.files[0].members.iter().map(|m| m.client).collect()
    }

    /// Starts server `i` (no-op when it runs).
    pub fn start(&mut self, i: usize) -> Result<(), ClusterError> {
        if self.procs[i].is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{i}.log")))
            .map_err(io("opening the node log"))?;
        let log2 = log.try_clone().map_err(io("opening the node log"))?;
        let child = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(self.dir.join(format!("node-{i}.toml")))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io(format!("starting server {i}")))?;
        self.procs[i] = Some(child);
        Ok(())
    }

    /// Starts every server.
    pub fn start_all(&mut self) -> Result<(), ClusterError> {
        (0..self.len()).try_for_each(|i| self.start(i))
    }

    /// Whether server `i` runs (as far as this handle knows).
    pub fn is_running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    /// SIGKILL server `i` and reap it.
    pub fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Sends SIGSTOP (`pause`) or SIGCONT to server `i`.
    pub fn signal(&mut self, i: usize, pause: bool) -> Result<(), ClusterError> {
        if let Some(c) = &self.procs[i] {
            let sig = if pause {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            kill(Pid::from_raw(c.id() as i32), sig)
                .map_err(|e| ClusterError::Failed(format!("signal {sig} to server {i}: {e}")))?;
        }
        Ok(())
    }

    /// Status of server `i`, if it answers.
    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        status(self.files[i].members[i].client, Duration::from_millis(500))
            .await
            .ok()
    }

    /// Waits until some running server reports itself leader; returns its id.
    pub async fn wait_for_leader(&self, within: Duration) -> Result<usize, ClusterError> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            for i in 0..self.len() {
                if self.procs[i].is_some() {
                    if let Some(s) = self.status(i).await {
                        if s.role == "leader" {
                            return Ok(i);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ClusterError::Timeout("a leader".into()))
    }

    /// Waits until every running server has the same aru and state digest; returns them.
    pub async fn wait_converged(&self, within: Duration) -> Result<(u64, u64), ClusterError> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            let mut seen = Vec::new();
            for i in 0..self.len() {
                if self.procs[i].is_some() {
                    seen.push(self.status(i).await.map(|s| (s.aru, s.state_digest)));
                }
            }
            if let Some(Some(first)) = seen.first() {
                if seen.iter().all(|s| *s == Some(*first)) {
                    return Ok(*first);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClusterError::Timeout("replicas to converge".into()))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            let _ = self.signal(i, false);
            let _ = self.kill(i);
        }
    }
}

/// Durability choice as the core's type.
pub fn durability(choice: DurabilityChoice) -> paxos_core::Durability {
    match choice {
        DurabilityChoice::None => paxos_core::Durability::None,
        DurabilityChoice::Async => paxos_core::Durability::Async,
        DurabilityChoice::Sync => paxos_core::Durability::Sync,
    }
}
