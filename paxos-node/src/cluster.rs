//! A local cluster of `paxos-node` server processes, for the demo, the fault tests and the
//! benchmarks.
//!
//! Every server is a separate OS process started from the `paxos-node` binary with a generated
//! configuration file, on loopback ports chosen free at creation. Faults are real: SIGKILL, SIGSTOP
//! and SIGCONT on the processes.

use crate::client::status;
use crate::config::{
    ElectionSection, Member, NodeFile, ProtocolSection, SessionsSection, StorageChoice,
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
    /// Client session settings.
    pub sessions: SessionsSection,
    /// Serve metrics on a free port per server.
    pub metrics: bool,
    /// Run every server in its own network namespace on a bridge (needs root and `ip`), so
    /// [`LocalCluster::partition`] can cut links. Otherwise every server runs on loopback.
    pub namespaces: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            servers: 3,
            storage: StorageChoice::Wal,
            transport: TransportChoice::Quic,
            protocol: ProtocolSection::default(),
            election: ElectionSection::default(),
            sessions: SessionsSection::default(),
            metrics: false,
            namespaces: false,
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
    netns: Option<Netns>,
}

/// Network namespaces `px<tag>-<i>`, one per server, joined by the bridge `pxbr<tag>` in the
/// caller's namespace (which holds `10.213.<tag>.254`, so clients in the test process reach every
/// server). Links are cut with blackhole routes inside the namespaces.
#[derive(Debug)]
struct Netns {
    tag: u8,
    servers: usize,
    cut: Vec<(usize, usize)>,
}

fn ip(args: &[&str]) -> Result<(), ClusterError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(io(format!("ip {}", args.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Failed(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Netns {
    fn ns(&self, i: usize) -> String {
        format!("px{}-{i}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("pxbr{}", self.tag)
    }

    fn addr(&self, i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 213, self.tag, i as u8 + 1)
    }

    /// Creates the namespaces and the bridge, choosing a tag no other cluster on this machine uses.
    fn create(servers: usize) -> Result<Netns, ClusterError> {
        let seed = std::process::id() as usize;
        for attempt in 0..200 {
            let tag = ((seed + attempt * 7) % 200 + 20) as u8;
            let mut n = Netns {
                tag,
                servers: 0,
                cut: Vec::new(),
            };
            // The bridge name is the lock: creating it fails when another cluster holds the tag.
            if ip(&["link", "add", &n.bridge(), "type", "bridge"]).is_err() {
                continue;
            }
            n.servers = servers;
            n.setup().inspect_err(|_| n.teardown())?;
            return Ok(n);
        }
        Err(ClusterError::Failed("no free network-namespace tag".into()))
    }

    fn setup(&self) -> Result<(), ClusterError> {
        let br = self.bridge();
        let gw = format!("10.213.{}.254/24", self.tag);
        ip(&["addr", "add", &gw, "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..self.servers {
            let ns = self.ns(i);
            let host_end = format!("pxv{}-{i}", self.tag);
            let _ = ip(&["netns", "del", &ns]);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host_end, "master", &br])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let a = format!("{}/24", self.addr(i));
            ip(&["-n", &ns, "addr", "add", &a, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "multicast", "on"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(())
    }

    fn set_cut(&mut self, a: usize, b: usize, cut: bool) -> Result<(), ClusterError> {
        let verb = if cut { "add" } else { "del" };
        for (x, y) in [(a, b), (b, a)] {
            let dst = format!("{}/32", self.addr(y));
            ip(&["-n", &self.ns(x), "route", verb, "blackhole", &dst])?;
        }
        if cut {
            self.cut.push((a, b));
        } else {
            self.cut.retain(|&p| p != (a, b));
        }
        Ok(())
    }

    fn teardown(&self) {
        for i in 0..self.servers {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// Whether this process can create network namespaces (root with `ip` available).
pub fn namespaces_available() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Lowest port of the kernel's ephemeral range (what outgoing connections are given).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback port free for both TCP and UDP now, below the kernel's ephemeral range, and not
/// handed out before by this process.
///
/// Below the range: a port that outgoing connections can be given may be taken by one between
/// this probe and the server's bind (or be a client's own port, a self-connection). Each process
/// starts its search at another place, so concurrent test processes rarely probe the same ports.
pub fn free_port() -> Result<u16, ClusterError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = u32::from(ephemeral_low()).max(LOW + 1_000);
    let span = high - LOW;
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(ClusterError::Failed(format!(
        "no free port in {LOW}..{high}"
    )))
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
        // The node files name paths under `dir`; relative ones would be taken from the files'
        // own directory, i.e. doubled.
        let dir = std::path::absolute(&dir).map_err(io(format!("resolving {}", dir.display())))?;
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
        let netns = if options.namespaces {
            Some(Netns::create(options.servers)?)
        } else {
            None
        };
        let mut members = Vec::new();
        if let Some(n) = &netns {
            for id in 0..options.servers as u32 {
                let a = n.addr(id as usize);
                members.push(Member {
                    id,
                    peer: SocketAddr::from((a, 7000)),
                    client: SocketAddr::from((a, 7100)),
                });
            }
        }
        for id in (0..options.servers as u32).filter(|_| netns.is_none()) {
            let peer_port = match options.transport {
                TransportChoice::Quic | TransportChoice::UdpMulticast => free_port()?,
            };
            members.push(Member {
                id,
                peer: SocketAddr::from(([127, 0, 0, 1], peer_port)),
                client: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            });
        }
        let group_port = free_port()?;
        let mut files = Vec::new();
        for id in 0..options.servers as u32 {
            let file = NodeFile {
                id,
                members: members.clone(),
                protocol: options.protocol.clone(),
                election: options.election.clone(),
                sessions: options.sessions.clone(),
                clients: Default::default(),
                storage: StorageSection {
                    backend: options.storage,
                    dir: Some(dir.join(format!("data-{id}"))),
                    disk_timeout_s: 60,
                    stall_ms: 250,
                },
                transport: TransportSection {
                    kind: options.transport,
                    keys_dir: keys.join(format!("node-{id}")),
                    multicast_group: (options.transport == TransportChoice::UdpMulticast)
                        .then(|| SocketAddr::from(([239, 255, 77, 1], group_port))),
                },
                metrics_addr: if options.metrics && netns.is_some() {
                    Some(SocketAddr::new(members[id as usize].client.ip(), 9100))
                } else if options.metrics {
                    Some(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
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
            netns,
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
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the binary after entering the namespace: same pid, so
            // signals reach the server itself.
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.ns(i)]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        let child = cmd
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

    /// The process id of server `i`, while it runs (for `/proc` figures such as peak RSS).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(Child::id)
    }

    /// Peak resident set of server `i` so far, KiB (`VmHWM`), while it runs.
    pub fn peak_rss_kib(&self, i: usize) -> Option<u64> {
        self.pid(i).and_then(peak_rss_kib)
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

    /// Cuts the link between servers `a` and `b` in both directions (namespaces only).
    pub fn partition(&mut self, a: usize, b: usize) -> Result<(), ClusterError> {
        let n = self.netns.as_mut().ok_or_else(|| {
            ClusterError::Failed("partitions need a cluster created with namespaces".into())
        })?;
        if a != b && !n.cut.contains(&(a, b)) && !n.cut.contains(&(b, a)) {
            n.set_cut(a, b, true)?;
        }
        Ok(())
    }

    /// Cuts server `i` off from every other server (clients still reach it).
    pub fn isolate(&mut self, i: usize) -> Result<(), ClusterError> {
        (0..self.len()).try_for_each(|j| self.partition(i, j))
    }

    /// Restores every cut link.
    pub fn heal(&mut self) -> Result<(), ClusterError> {
        if let Some(n) = self.netns.as_mut() {
            while let Some(&(a, b)) = n.cut.first() {
                n.set_cut(a, b, false)?;
            }
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
        if let Some(n) = &self.netns {
            n.teardown();
        }
    }
}

/// Peak resident set of process `pid`, KiB (`VmHWM` of `/proc/<pid>/status`), if readable.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
