//! The disk watchdog (issue #17): a storage write that does not return within the disk timeout
//! stops the server with an error naming it, instead of leaving a server that answers but
//! persists nothing.

use bytes::Bytes;
use paxos_core::durable::{DurableState, PersistBatch};
use paxos_core::{Config, Durability, NodeId, Seq, Snapshot};
use paxos_node::client::Client;
use paxos_node::kv::KvStore;
use paxos_node::node::{NodeConfig, NodeError};
use paxos_node::NodeBuilder;
use paxos_storage::{MemoryStorage, Storage, StorageError};
use paxos_transport::mem::MemNetwork;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Memory storage whose appends hang for good once `hang` is set.
struct HangingDisk {
    inner: MemoryStorage,
    hang: Arc<AtomicBool>,
}

impl Storage for HangingDisk {
    fn name(&self) -> &'static str {
        "hanging"
    }
    fn load(&mut self) -> Result<DurableState, StorageError> {
        self.inner.load()
    }
    fn append(&mut self, batches: &[PersistBatch], sync: bool) -> Result<(), StorageError> {
        while self.hang.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.inner.append(batches, sync)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.inner.sync()
    }
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.inner.save_snapshot(snapshot)
    }
    fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.inner.load_snapshot()
    }
    fn truncate_through(&mut self, seq: Seq) -> Result<(), StorageError> {
        self.inner.truncate_through(seq)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_never_returns_stops_the_server_with_a_clear_error() {
    let net = MemNetwork::new([NodeId(0)]);
    let mut core = Config::new(NodeId(0), 1);
    core.durability = Durability::Sync;
    let mut cfg = NodeConfig::new(core, "127.0.0.1:0".parse().unwrap());
    cfg.disk_timeout = Some(Duration::from_millis(500));
    let hang = Arc::new(AtomicBool::new(false));
    let node = NodeBuilder::new(cfg, KvStore::new())
        .storage(HangingDisk {
            inner: MemoryStorage::new(),
            hang: hang.clone(),
        })
        .transport(Arc::new(net.endpoint(NodeId(0)).unwrap()))
        .start()
        .await
        .unwrap();
    let mut c = Client::new(vec![node.client_addr()]);
    c.op_timeout = Duration::from_secs(20);
    c.put(Bytes::from("k"), Bytes::from("v")).await.unwrap();
    hang.store(true, Ordering::Relaxed);
    c.op_timeout = Duration::from_secs(2);
    // Not acknowledged: its write never returned.
    assert!(c.put(Bytes::from("k2"), Bytes::from("v")).await.is_err());
    let stopped = tokio::time::timeout(Duration::from_secs(20), node.wait())
        .await
        .expect("the watchdog stops the server");
    match stopped {
        Err(NodeError::Storage(why)) => assert!(why.contains("disk timeout"), "{why}"),
        other => panic!("expected a storage failure, got {other:?}"),
    }
    hang.store(false, Ordering::Relaxed);
}
