//! Process and machine facts from `/proc`: CPU time of the bench and of its server processes, and
//! the machine's busy fraction, so a result shows where the cores went.

use serde::Serialize;

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on every Linux this runs on).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) of process `pid`, if readable.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// Children of this process that run `paxos-node` (the servers the bench started), by pid.
pub fn server_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let (state, ppid) = (
            f.first().copied(),
            f.get(1).and_then(|p| p.parse::<u32>().ok()),
        );
        if ppid == Some(me) && comm.starts_with("paxos-node") && state != Some("Z") {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Busy and total jiffies of the whole machine (`/proc/stat`, first line).
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// A snapshot of CPU counters.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    bench: f64,
    servers: Vec<(u32, f64)>,
    machine: Option<(u64, u64)>,
    at: std::time::Instant,
}

impl CpuSnapshot {
    /// Takes a snapshot of this process, the given server processes and the machine.
    pub fn take(servers: &[u32]) -> CpuSnapshot {
        CpuSnapshot {
            bench: process_cpu_seconds(std::process::id()).unwrap_or(0.0),
            servers: servers
                .iter()
                .map(|&p| (p, process_cpu_seconds(p).unwrap_or(0.0)))
                .collect(),
            machine: machine_jiffies(),
            at: std::time::Instant::now(),
        }
    }

    /// CPU used between `self` (earlier) and `later`.
    pub fn usage_until(&self, later: &CpuSnapshot) -> CpuUsage {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let servers: Vec<f64> = self
            .servers
            .iter()
            .map(|(p, a)| {
                later
                    .servers
                    .iter()
                    .find(|(q, _)| q == p)
                    .map_or(0.0, |(_, b)| (b - a).max(0.0))
            })
            .collect();
        let bench = (later.bench - self.bench).max(0.0);
        let total = bench + servers.iter().sum::<f64>();
        let machine_busy = match (self.machine, later.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        };
        CpuUsage {
            wall_s: wall,
            bench_cpu_s: bench,
            servers_cpu_s: servers,
            client_share: if total > 0.0 { bench / total } else { 0.0 },
            cores_used: total / wall,
            machine_busy,
        }
    }
}

/// Where the CPU went during the measured interval.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct CpuUsage {
    /// Wall-clock seconds measured.
    pub wall_s: f64,
    /// CPU seconds of the bench process (the clients).
    pub bench_cpu_s: f64,
    /// CPU seconds of each server process.
    pub servers_cpu_s: Vec<f64>,
    /// The clients' share of the CPU the bench and the servers used.
    pub client_share: f64,
    /// Cores busy with the bench and the servers (CPU seconds per wall second).
    pub cores_used: f64,
    /// Busy fraction of the whole machine (all processes), if `/proc/stat` is readable.
    pub machine_busy: Option<f64>,
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    s.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_owned())
}

/// Fetches `http://addr/metrics` and returns every non-zero sample (histogram buckets left out) as
/// `(name with labels, value)`.
pub async fn scrape_metrics(
    addr: std::net::SocketAddr,
) -> Option<std::collections::BTreeMap<String, f64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    let text = tokio::time::timeout(std::time::Duration::from_secs(2), fetch)
        .await
        .ok()??;
    let body = text.split("\r\n\r\n").nth(1)?;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("_bucket{"))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                let v: f64 = v.parse().ok()?;
                // Zero counters carry no information; histogram buckets are summarised by sum/count.
                (v != 0.0).then(|| (k.to_owned(), v))
            })
            .collect(),
    )
}
