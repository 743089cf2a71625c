//! The node's configuration file (TOML), validated once with errors that name the field.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use thiserror::Error;

/// A configuration the node refuses, naming the field at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field, as a TOML path.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One cluster member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Server id, `0..N`.
    pub id: u32,
    /// Address for server-to-server traffic.
    pub peer: SocketAddr,
    /// Address clients connect to.
    pub client: SocketAddr,
}

/// Durability mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityChoice {
    /// No disk writes (the paper's memory mode; a crashed node must not rejoin with old state).
    None,
    /// Writes without waiting for them.
    Async,
    /// Every promise synced before the message that carries it.
    Sync,
}

/// Parses one of the configuration's choice names (`"sync"`, `"udp-multicast"`, `"wal"` …) as the
/// file spells it, for command-line overrides; the error names `field` and the value.
pub fn parse_choice<T: serde::de::DeserializeOwned>(
    field: &str,
    value: &str,
) -> Result<T, ConfigError> {
    use serde::de::value::{Error, StrDeserializer};
    T::deserialize(StrDeserializer::<Error>::new(value)).map_err(|e| invalid(field, e.to_string()))
}

impl From<DurabilityChoice> for paxos_core::Durability {
    fn from(choice: DurabilityChoice) -> Self {
        match choice {
            DurabilityChoice::None => paxos_core::Durability::None,
            DurabilityChoice::Async => paxos_core::Durability::Async,
            DurabilityChoice::Sync => paxos_core::Durability::Sync,
        }
    }
}

/// Storage backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageChoice {
    /// In memory (tests, or with durability none).
    Memory,
    /// The file write-ahead log.
    Wal,
    /// RocksDB (only in builds with the `rocksdb` feature).
    Rocksdb,
}

/// Transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportChoice {
    /// QUIC with mutual TLS.
    Quic,
    /// UDP multicast with HMAC.
    UdpMulticast,
}

/// `[protocol]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolSection {
    /// Durability mode.
    pub durability: DurabilityChoice,
    /// Aggregate many updates per message.
    pub aggregation: bool,
    /// Window W.
    pub window: u64,
    /// The leader sends its Accept after its own sync, overlapping the followers' writes.
    pub leader_accepts_separately: bool,
    /// Snapshot every this many executed updates (0: never).
    pub snapshot_interval: u64,
    /// Tick period, milliseconds.
    pub tick_ms: u64,
    /// Ordered slots kept in memory beyond the last snapshot, to serve lagging peers by
    /// reconciliation; a peer further behind gets the snapshot instead.
    pub history_retention: u64,
    /// A snapshot point is skipped unless the log executed since the last snapshot is at least
    /// this percent of its size (0: snapshot at every point). A large state changed by small
    /// updates is then not rewritten whole every `snapshot_interval` updates.
    pub snapshot_min_log_percent: u32,
}

impl Default for ProtocolSection {
    fn default() -> Self {
        ProtocolSection {
            durability: DurabilityChoice::Sync,
            aggregation: true,
            window: 256,
            leader_accepts_separately: true,
            snapshot_interval: 100_000,
            tick_ms: 2,
            history_retention: 20_000,
            snapshot_min_log_percent: 25,
        }
    }
}

/// `[sessions]`: client sessions registered through the log (docs/architecture.md, "Client
/// sessions").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// Sessions expire and the exactly-once table is bounded (false: every client id is kept
    /// forever, as the TR's table).
    pub enabled: bool,
    /// A session with no update executed for this many seconds (of the log's clock) expires.
    pub expire_after_s: u64,
    /// Most sessions held; a registration beyond it expires the least recently active.
    pub max_sessions: usize,
    /// Most bytes of stored replies across sessions.
    pub max_result_bytes: usize,
    /// How often the leader orders a clock entry, milliseconds.
    pub clock_interval_ms: u64,
    /// Most local updates pending at this server (one per connected client).
    pub max_pending: usize,
}

impl Default for SessionsSection {
    fn default() -> Self {
        let r = paxos_core::SessionRules::new();
        SessionsSection {
            enabled: true,
            expire_after_s: r.expire_after.as_secs(),
            max_sessions: r.max_sessions,
            max_result_bytes: r.max_result_bytes,
            clock_interval_ms: r.clock_interval.as_millis() as u64,
            max_pending: 1_000_000,
        }
    }
}

/// `[clients]`: limits of the client port (see `paxos_node::client_port`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsSection {
    /// Most client connections served at once.
    pub max_connections: usize,
    /// Most connections from one source address.
    pub max_per_ip: usize,
    /// Reply bytes queued per connection; a client that does not read past it is closed.
    pub reply_budget_bytes: usize,
    /// A connection that sends nothing for this many seconds is closed.
    pub idle_timeout_s: u64,
    /// A connection whose replies do not drain within this many seconds is closed.
    pub write_timeout_s: u64,
    /// At a connection cap, a connection idle this many milliseconds may be closed for a new one.
    pub evict_idle_after_ms: u64,
    /// Request bytes read from all clients and not yet handled; beyond it requests are answered
    /// `Overloaded`.
    pub max_inflight_bytes: usize,
}

impl Default for ClientsSection {
    fn default() -> Self {
        let l = crate::client_port::ClientLimits::default();
        ClientsSection {
            max_connections: l.max_clients,
            max_per_ip: l.max_per_ip,
            reply_budget_bytes: l.reply_budget,
            idle_timeout_s: l.idle_timeout.as_secs(),
            write_timeout_s: l.write_timeout.as_secs(),
            evict_idle_after_ms: l.evict_idle_after.as_millis() as u64,
            max_inflight_bytes: l.inflight_bytes,
        }
    }
}

impl ClientsSection {
    /// The limits these settings name.
    pub fn limits(&self) -> crate::client_port::ClientLimits {
        crate::client_port::ClientLimits {
            max_clients: self.max_connections,
            max_per_ip: self.max_per_ip,
            reply_budget: self.reply_budget_bytes,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_s),
            write_timeout: std::time::Duration::from_secs(self.write_timeout_s),
            evict_idle_after: std::time::Duration::from_millis(self.evict_idle_after_ms),
            inflight_bytes: self.max_inflight_bytes,
            ..crate::client_port::ClientLimits::default()
        }
    }
}

/// `[election]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElectionSection {
    /// Strategy name: `psb`, `highest-id`, `omega`, `ble`.
    pub strategy: String,
    /// Base timeout, milliseconds (progress timer for PSB, failure-detector timeout otherwise).
    pub timeout_ms: u64,
    /// Heartbeat or resend period, milliseconds.
    pub heartbeat_ms: u64,
}

impl Default for ElectionSection {
    fn default() -> Self {
        ElectionSection {
            strategy: "psb".into(),
            timeout_ms: 1000,
            heartbeat_ms: 50,
        }
    }
}

/// `[storage]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Backend.
    pub backend: StorageChoice,
    /// Directory (wal, rocksdb).
    pub dir: Option<PathBuf>,
    /// A write that has not returned after this many seconds stops the server with an error
    /// (the disk watchdog); 0: wait forever. Default 60.
    #[serde(default = "default_disk_timeout_s")]
    pub disk_timeout_s: u64,
    /// A sync write outstanding this many milliseconds holds this server's progress timer until
    /// it returns (`paxos_core::Config::storage_stall`): a server waiting on its own disk does
    /// not suspect a healthy leader. 0: off. Default 250.
    #[serde(default = "default_stall_ms")]
    pub stall_ms: u64,
}

fn default_disk_timeout_s() -> u64 {
    60
}

fn default_stall_ms() -> u64 {
    250
}

/// `[transport]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// Kind.
    pub kind: TransportChoice,
    /// Directory with `ca.pem`, `node-<id>.pem`, `node-<id>.key` (quic) or `cluster.key` (udp).
    pub keys_dir: PathBuf,
    /// Multicast group address (udp-multicast).
    pub multicast_group: Option<SocketAddr>,
}

/// A node's configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This server's id.
    pub id: u32,
    /// Every member, this one included.
    pub members: Vec<Member>,
    /// Protocol settings.
    #[serde(default)]
    pub protocol: ProtocolSection,
    /// Election settings.
    #[serde(default)]
    pub election: ElectionSection,
    /// Client sessions.
    #[serde(default)]
    pub sessions: SessionsSection,
    /// Limits of the client port.
    #[serde(default)]
    pub clients: ClientsSection,
    /// Storage settings.
    pub storage: StorageSection,
    /// Transport settings.
    pub transport: TransportSection,
    /// Where to serve Prometheus metrics (`http://ADDR/metrics`), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
}

impl NodeFile {
    /// Reads and validates a file. Relative paths in it (`storage.dir`, `transport.keys_dir`)
    /// are taken relative to the file's directory, not to the working directory, so a file
    /// means the same wherever the server is started from.
    pub fn load(path: &std::path::Path) -> Result<NodeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = NodeFile::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        let base = path.parent().unwrap_or(std::path::Path::new(""));
        Ok(file.relative_to(base))
    }

    /// This file with every relative path in it joined to `base`.
    pub fn relative_to(mut self, base: &std::path::Path) -> NodeFile {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(dir) = self.storage.dir.as_mut() {
            resolve(dir);
        }
        resolve(&mut self.transport.keys_dir);
        self
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<NodeFile, ConfigError> {
        let file: NodeFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        file.validate()?;
        Ok(file)
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configuration always serialises")
    }

    /// Checks every constraint.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.members.len();
        if n == 0 || n > paxos_core::config::MAX_SERVERS {
            return Err(invalid("members", format!("need 1..=64 members, got {n}")));
        }
        let mut ids: Vec<u32> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        if ids != (0..n as u32).collect::<Vec<_>>() {
            return Err(invalid(
                "members",
                format!("ids must be exactly 0..{n}, got {ids:?}"),
            ));
        }
        if !ids.contains(&self.id) {
            return Err(invalid("id", format!("{} is not a member", self.id)));
        }
        for (i, a) in self.members.iter().enumerate() {
            for b in &self.members[i + 1..] {
                if a.peer == b.peer || a.client == b.client {
                    return Err(invalid(
                        "members",
                        format!("members {} and {} share an address", a.id, b.id),
                    ));
                }
            }
        }
        if self.protocol.window == 0 {
            return Err(invalid("protocol.window", "must be at least 1"));
        }
        let c = &self.clients;
        for (field, v) in [
            ("clients.max_connections", c.max_connections as u64),
            ("clients.max_per_ip", c.max_per_ip as u64),
            ("clients.idle_timeout_s", c.idle_timeout_s),
            ("clients.write_timeout_s", c.write_timeout_s),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        // One frame of the largest kind must fit, or such a request (or reply) never would.
        for (field, v) in [
            ("clients.reply_budget_bytes", c.reply_budget_bytes),
            ("clients.max_inflight_bytes", c.max_inflight_bytes),
        ] {
            if v < 2 * crate::protocol::MAX_FRAME_BYTES {
                return Err(invalid(
                    field,
                    format!("must be at least {}", 2 * crate::protocol::MAX_FRAME_BYTES),
                ));
            }
        }
        if self.protocol.tick_ms == 0 || self.protocol.tick_ms > 1000 {
            return Err(invalid("protocol.tick_ms", "must be in 1..=1000"));
        }
        if self.election.timeout_ms == 0 || self.election.heartbeat_ms == 0 {
            return Err(invalid(
                "election",
                "timeout_ms and heartbeat_ms must be positive",
            ));
        }
        if self.election.heartbeat_ms >= self.election.timeout_ms {
            return Err(invalid(
                "election.heartbeat_ms",
                "must be below election.timeout_ms",
            ));
        }
        match self.storage.backend {
            StorageChoice::Memory => {
                if self.protocol.durability == DurabilityChoice::Sync {
                    return Err(invalid(
                        "storage.backend",
                        "memory storage cannot provide durability \"sync\"; use wal or rocksdb",
                    ));
                }
            }
            StorageChoice::Wal | StorageChoice::Rocksdb => {
                if self.storage.dir.is_none() {
                    return Err(invalid("storage.dir", "required for this backend"));
                }
            }
        }
        if self.transport.kind == TransportChoice::UdpMulticast {
            match self.transport.multicast_group {
                Some(g) if g.ip().is_multicast() => {}
                Some(g) => {
                    return Err(invalid(
                        "transport.multicast_group",
                        format!("{g} is not a multicast address"),
                    ))
                }
                None => {
                    return Err(invalid(
                        "transport.multicast_group",
                        "required for udp-multicast",
                    ))
                }
            }
        }
        Ok(())
    }

    /// This server's member entry.
    pub fn me(&self) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == self.id)
            .expect("validated: id is a member")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 1
metrics_addr = "127.0.0.1:9101"
[[members]]
id = 0
peer = "127.0.0.1:7000"
client = "127.0.0.1:7100"
[[members]]
id = 1
peer = "127.0.0.1:7001"
client = "127.0.0.1:7101"
[[members]]
id = 2
peer = "127.0.0.1:7002"
client = "127.0.0.1:7102"
[storage]
backend = "wal"
dir = "/tmp/n1"
[transport]
kind = "quic"
keys_dir = "/tmp/keys"
"#;

    #[test]
    fn good_file_parses_with_defaults() {
        let f = NodeFile::parse(GOOD).unwrap();
        assert_eq!(f.me().client.port(), 7101);
        assert_eq!(f.protocol.durability, DurabilityChoice::Sync);
        assert_eq!(f.election.strategy, "psb");
        assert_eq!(NodeFile::parse(&f.to_toml()).unwrap(), f);
    }

    #[test]
    fn relative_paths_are_taken_from_the_file_s_directory() {
        let text = GOOD
            .replace("\"/tmp/n1\"", "\"data/n1\"")
            .replace("\"/tmp/keys\"", "\"../keys\"");
        let f = NodeFile::parse(&text)
            .unwrap()
            .relative_to(std::path::Path::new("/etc/paxos"));
        assert_eq!(f.storage.dir, Some(PathBuf::from("/etc/paxos/data/n1")));
        assert_eq!(f.transport.keys_dir, PathBuf::from("/etc/paxos/../keys"));
        let f = NodeFile::parse(GOOD)
            .unwrap()
            .relative_to(std::path::Path::new("/etc/paxos"));
        assert_eq!(f.transport.keys_dir, PathBuf::from("/tmp/keys"));
    }

    /// The README's example file lists every key of the optional sections with its real
    /// default, and parses.
    #[test]
    fn the_readme_shows_every_default() {
        let readme = include_str!("../README.md");
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .expect("README has a toml block");
        let f = NodeFile::parse(block).unwrap();
        assert_eq!(f.protocol, ProtocolSection::default());
        assert_eq!(f.election, ElectionSection::default());
        assert_eq!(f.sessions, SessionsSection::default());
        assert_eq!(f.clients, ClientsSection::default());
        assert_eq!(f.storage.disk_timeout_s, default_disk_timeout_s());
        assert_eq!(f.storage.stall_ms, default_stall_ms());
        let defaults = [
            toml::to_string(&ProtocolSection::default()).unwrap(),
            toml::to_string(&ElectionSection::default()).unwrap(),
            toml::to_string(&SessionsSection::default()).unwrap(),
            toml::to_string(&ClientsSection::default()).unwrap(),
            format!("disk_timeout_s = {}", default_disk_timeout_s()),
            format!("stall_ms = {}", default_stall_ms()),
        ];
        let shown: Vec<String> = block
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
            .collect();
        for line in defaults.iter().flat_map(|d| d.lines()) {
            assert!(shown.iter().any(|s| s == line), "README lacks `{line}`");
        }
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            (GOOD.replacen("id = 1\n", "id = 7\n", 1), "id"),
            (GOOD.replace("dir = \"/tmp/n1\"\n", ""), "storage.dir"),
            (
                GOOD.replace("backend = \"wal\"", "backend = \"memory\""),
                "storage.backend",
            ),
            (
                GOOD.replace("kind = \"quic\"", "kind = \"udp-multicast\""),
                "transport.multicast_group",
            ),
            (GOOD.replace("127.0.0.1:7102", "127.0.0.1:7101"), "members"),
        ];
        for (text, field) in cases {
            match NodeFile::parse(&text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected invalid, got {other:?}"),
            }
        }
        assert!(matches!(
            NodeFile::parse("id = 0\nbogus = 1\n"),
            Err(ConfigError::Parse { .. })
        ));
    }
}
