//! Assembling a node from chosen parts: the main use of this project.
//!
//! [`NodeBuilder`] takes a state machine plus any election strategy, storage backend and transport
//! (anything implementing the traits of `paxos-core`, `paxos-storage` and `paxos-transport`) and
//! starts the server. [`launch`] does the same from a [`NodeFile`], which is what
//! `paxos-node run` calls.

use crate::config::{NodeFile, ProtocolSection, SessionsSection, StorageChoice, TransportChoice};
use crate::metrics::serve_metrics;
use crate::node::{start, NodeConfig, NodeError, NodeHandle};
use paxos_core::{Config, LeaderElection, NodeId, SessionRules, StateMachine};
use paxos_election::{ElectionConfig, Strategy};
use paxos_storage::{MemoryStorage, Storage};
use paxos_transport::quic::{QuicConfig, QuicTransport};
use paxos_transport::udp::{UdpConfig, UdpTransport};
use paxos_transport::{PeerConfig, Transport};
use std::sync::Arc;
use std::time::Duration;

/// Builds a node from parts. Only the transport is mandatory: the election defaults to PSB's view
/// change with a one-second progress timer, and storage to memory when the durability is
/// `None` (any other durability without a storage backend is a configuration error).
///
/// ```no_run
/// # async fn demo(transport: std::sync::Arc<dyn paxos_transport::Transport>) -> Result<(), paxos_node::node::NodeError> {
/// use paxos_node::{kv::KvStore, node::NodeConfig, NodeBuilder};
/// use paxos_core::{Config, Durability, NodeId};
/// let mut core = Config::new(NodeId(0), 3);
/// core.durability = Durability::None;
/// let node = NodeBuilder::new(NodeConfig::new(core, "127.0.0.1:7100".parse().unwrap()), KvStore::new())
///     .election(paxos_election::build(
///         paxos_election::Strategy::Omega,
///         NodeId(0),
///         3,
///         &paxos_election::ElectionConfig::uniform(std::time::Duration::from_millis(500)),
///     ))
///     .storage(paxos_storage::MemoryStorage::new())
///     .transport(transport)
///     .start()
///     .await?;
/// node.wait().await
/// # }
/// ```
pub struct NodeBuilder<S> {
    config: NodeConfig,
    state_machine: S,
    election: Option<Box<dyn LeaderElection + Send>>,
    storage: Option<Box<dyn Storage>>,
    transport: Option<Arc<dyn Transport>>,
}

impl<S: StateMachine + Send + 'static> NodeBuilder<S> {
    /// Starts a description of a node that runs `state_machine`.
    pub fn new(config: NodeConfig, state_machine: S) -> Self {
        NodeBuilder {
            config,
            state_machine,
            election: None,
            storage: None,
            transport: None,
        }
    }

    /// The leader-election strategy.
    pub fn election(mut self, election: impl LeaderElection + Send + 'static) -> Self {
        self.election = Some(Box::new(election));
        self
    }

    /// The storage backend.
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Box::new(storage));
        self
    }

    /// The transport.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Recovers from storage, binds the client port and runs.
    pub async fn start(self) -> Result<NodeHandle, NodeError> {
        let core = &self.config.core;
        let transport = self
            .transport
            .ok_or_else(|| NodeError::Config("no transport given".into()))?;
        if transport.local_id() != core.id {
            return Err(NodeError::Config(format!(
                "transport is bound as {:?} but the node is {:?}",
                transport.local_id(),
                core.id
            )));
        }
        let election = match self.election {
            Some(e) => e,
            None => paxos_election::build(
                Strategy::PsbViewChange,
                core.id,
                core.servers,
                &ElectionConfig::uniform(Duration::from_secs(1)),
            ),
        };
        let storage = match self.storage {
            Some(s) => s,
            None if core.durability == paxos_core::Durability::None => Box::new(MemoryStorage::new()),
            // Async and sync promise that state survives a restart: memory would quietly not.
            None => {
                return Err(NodeError::Config(format!(
                    "durability {:?} needs a storage backend (.storage(..)); only durability None runs without one",
                    core.durability
                )))
            }
        };
        start(
            self.config,
            self.state_machine,
            election,
            storage,
            transport,
        )
        .await
    }
}

/// The core's configuration described by a node file.
///
/// The `[protocol]` section is destructured field by field so that a field added to it without
/// being mapped here (or explicitly marked as used elsewhere) fails to compile rather than being
/// silently ignored.
pub fn core_config(file: &NodeFile) -> Config {
    let ProtocolSection {
        durability,
        aggregation,
        window,
        leader_accepts_separately,
        snapshot_interval,
        history_retention,
        snapshot_min_log_percent,
        // The driver's tick, not the core's: set on `NodeConfig` by `launch`.
        tick_ms: _,
    } = &file.protocol;
    let mut core = Config::new(NodeId(file.id), file.members.len());
    core.durability = (*durability).into();
    core.aggregation = *aggregation;
    core.window = *window;
    core.accept_window = core.accept_window.max(window * 2);
    core.leader_accepts_separately = *leader_accepts_separately;
    core.snapshot_interval = (*snapshot_interval > 0).then_some(*snapshot_interval);
    core.history_retention = *history_retention;
    core.snapshot_min_log_percent = *snapshot_min_log_percent;
    let SessionsSection {
        enabled,
        expire_after_s,
        max_sessions,
        max_result_bytes,
        clock_interval_ms,
        max_pending,
    } = &file.sessions;
    core.sessions = enabled.then_some(SessionRules {
        expire_after: Duration::from_secs(*expire_after_s),
        max_sessions: *max_sessions,
        max_result_bytes: *max_result_bytes,
        clock_interval: Duration::from_millis(*clock_interval_ms),
    });
    core.max_pending = *max_pending;
    core.storage_stall = Duration::from_millis(file.storage.stall_ms);
    core
}

/// The election strategy and timers described by a node file.
pub fn election_config(file: &NodeFile) -> Result<(Strategy, ElectionConfig), NodeError> {
    let strategy: Strategy = file
        .election
        .strategy
        .parse()
        .map_err(|e| NodeError::Config(format!("election.strategy: {e}")))?;
    let mut cfg = ElectionConfig::uniform(Duration::from_millis(file.election.timeout_ms));
    let hb = Duration::from_millis(file.election.heartbeat_ms);
    cfg.psb.resend_interval = hb;
    cfg.highest_id.heartbeat_interval = hb;
    cfg.omega.heartbeat_interval = hb;
    cfg.validate()
        .map_err(|e| NodeError::Config(format!("election: {e}")))?;
    Ok((strategy, cfg))
}

/// Opens the storage backend a node file names.
pub fn open_storage(file: &NodeFile) -> Result<Box<dyn Storage>, NodeError> {
    let dir = || {
        file.storage
            .dir
            .clone()
            .ok_or_else(|| NodeError::Config("storage.dir is required for this backend".into()))
    };
    let backend = match file.storage.backend {
        StorageChoice::Memory => paxos_storage::Backend::Memory,
        StorageChoice::Wal => paxos_storage::Backend::Wal { dir: dir()? },
        StorageChoice::Rocksdb => paxos_storage::Backend::RocksDb { dir: dir()? },
    };
    paxos_storage::open(&backend).map_err(|e| NodeError::Storage(e.to_string()))
}

/// Binds the transport a node file names.
pub async fn bind_transport(file: &NodeFile) -> Result<Arc<dyn Transport>, NodeError> {
    let peers: Vec<PeerConfig> = file
        .members
        .iter()
        .map(|m| PeerConfig {
            id: NodeId(m.id),
            addr: m.peer,
        })
        .collect();
    let id = NodeId(file.id);
    let err = |e: paxos_transport::TransportError| NodeError::Network(e.to_string());
    let keys_dir = &file.transport.keys_dir;
    // The key material is configuration: name the field and the path the operator can fix.
    let keys_err = |e: paxos_transport::TransportError| {
        NodeError::Config(format!("transport.keys_dir {}: {e}", keys_dir.display()))
    };
    Ok(match file.transport.kind {
        TransportChoice::Quic => {
            let cfg = QuicConfig::from_keys_dir(id, peers, keys_dir).map_err(keys_err)?;
            Arc::new(QuicTransport::bind(cfg).await.map_err(err)?)
        }
        TransportChoice::UdpMulticast => {
            let group = match file.transport.multicast_group {
                Some(std::net::SocketAddr::V4(g)) => g,
                other => {
                    return Err(NodeError::Config(format!(
                        "transport.multicast_group must be an IPv4 group address, got {other:?}"
                    )))
                }
            };
            let mut cfg = UdpConfig::from_keys_dir(id, peers, group, keys_dir).map_err(keys_err)?;
            // Beside the server's durable state: epochs increase across restarts even when the
            // clock steps back (without a data directory, the clock's epoch).
            cfg.epoch_file = file.storage.dir.as_ref().map(|d| d.join("udp-epoch"));
            Arc::new(UdpTransport::bind(cfg).await.map_err(err)?)
        }
    })
}

/// Starts the server a node file describes, with `state_machine`, and its metrics endpoint when
/// the file asks for one.
pub async fn launch<S: StateMachine + Send + 'static>(
    file: &NodeFile,
    state_machine: S,
) -> Result<NodeHandle, NodeError> {
    file.validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let core = core_config(file);
    let (strategy, ecfg) = election_config(file)?;
    let election = paxos_election::build(strategy, core.id, core.servers, &ecfg);
    let storage = open_storage(file)?;
    let transport = bind_transport(file).await?;
    let mut node_cfg = NodeConfig::new(core, file.me().client);
    node_cfg.tick = Duration::from_millis(file.protocol.tick_ms);
    node_cfg.clients = file.clients.limits();
    node_cfg.disk_timeout =
        (file.storage.disk_timeout_s > 0).then(|| Duration::from_secs(file.storage.disk_timeout_s));
    let handle = NodeBuilder::new(node_cfg, state_machine)
        .election(election)
        .storage(storage)
        .transport(transport.clone())
        .start()
        .await?;
    if let Some(addr) = file.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })?;
        let t = transport.clone();
        let extra: Arc<dyn Fn() -> Vec<(String, u64)> + Send + Sync> = Arc::new(move || {
            let s = t.stats();
            // Rendered as `paxos_dropped_total{reason=...}`.
            vec![
                (
                    "transport_unauthenticated".into(),
                    s.dropped_unauthenticated,
                ),
                ("transport_malformed".into(), s.dropped_malformed),
                ("transport_replay".into(), s.dropped_replay),
                ("transport_non_member".into(), s.dropped_non_member),
                ("transport_forged_sender".into(), s.dropped_forged_sender),
                ("transport_queue_full".into(), s.dropped_queue_full),
                ("transport_inbound_full".into(), s.dropped_inbound_full),
                ("transport_reassembly".into(), s.dropped_reassembly),
            ]
        });
        tokio::spawn(serve_metrics(
            listener,
            handle.metrics.clone(),
            file.id,
            extra,
        ));
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
id = 1
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
[protocol]
durability = "async"
aggregation = false
window = 1000
leader_accepts_separately = false
snapshot_interval = 500
history_retention = 200
[storage]
backend = "wal"
dir = "/tmp/n1"
[transport]
kind = "quic"
keys_dir = "/tmp/keys"
"#;

    /// Regression: `protocol.history_retention` was parsed from the file but never reached the
    /// core, so every node kept the default 20,000 slots behind its snapshot and served a long
    /// absent peer every slot by reconciliation instead of sending it a snapshot.
    #[test]
    fn core_config_maps_every_protocol_field() {
        let mut f = NodeFile::parse(FILE).unwrap();
        let c = core_config(&f);
        assert_eq!(c.id, NodeId(1));
        assert_eq!(c.servers, 3);
        assert_eq!(c.durability, paxos_core::Durability::Async);
        assert!(!c.aggregation);
        assert_eq!(c.window, 1_000);
        assert!(c.accept_window >= 2_000);
        assert!(!c.leader_accepts_separately);
        assert_eq!(c.snapshot_interval, Some(500));
        assert_eq!(c.history_retention, 200);
        c.validate().unwrap();

        f.protocol.snapshot_interval = 0;
        f.protocol.history_retention = 0;
        let c = core_config(&f);
        assert_eq!(c.snapshot_interval, None);
        assert_eq!(c.history_retention, 0);
    }
}
