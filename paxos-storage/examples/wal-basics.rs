//! The storage API in a few lines: open a WAL, load, append with group commit, snapshot, restart.
//!
//! ```sh
//! cargo run -p paxos-storage --example wal-basics
//! ```

use bytes::Bytes;
use paxos_core::{
    AcceptedProposal, BatchId, ClientId, ClientUpdate, NodeId, PersistBatch, Seq, Snapshot,
    Timestamp, View, ViewRecord,
};
use paxos_storage::{open_config, Backend, Storage, StorageConfig, WalOptions};

fn main() -> Result<(), paxos_storage::StorageError> {
    let dir = std::env::temp_dir().join(format!("paxos-wal-basics-{}", std::process::id()));
    // What a node's config file would say; small segments for the example.
    let config = StorageConfig {
        backend: Backend::Wal { dir: dir.clone() },
        wal: WalOptions {
            segment_bytes: 1 << 20,
            ..WalOptions::default()
        },
    };

    let mut store = open_config(&config)?;
    let state = store.load()?; // recovery; the incarnation goes up at every load
    println!("first start: incarnation {}", state.incarnation);

    // The core hands out PersistBatches; the node writes everything pending in one call and
    // one fdatasync (group commit), then reports the batches persisted.
    let batches: Vec<PersistBatch> = (1..=3u64)
        .map(|i| PersistBatch {
            id: BatchId(i),
            sync: true,
            view: (i == 1).then_some(ViewRecord {
                last_attempted: View(1),
                last_installed: View(1),
            }),
            accepted: vec![AcceptedProposal {
                seq: Seq(i),
                view: View(1),
                update: ClientUpdate {
                    client_id: ClientId(7),
                    server_id: NodeId(0),
                    timestamp: Timestamp(i),
                    payload: Bytes::from(format!("op {i}")),
                },
            }],
            ..PersistBatch::default()
        })
        .collect();
    store.append(&batches, true)?;

    // A snapshot through slot 2 drops the history it covers.
    store.save_snapshot(&Snapshot::new(
        Seq(2),
        Bytes::from_static(b"state after slot 2"),
        &[],
    ))?;
    drop(store); // a restart

    let mut store = open_config(&config)?;
    let state = store.load()?;
    println!(
        "after restart: incarnation {}, view {:?}, accepted slots {:?}, snapshot through {:?}",
        state.incarnation,
        state.view.last_installed,
        state.accepted.keys().collect::<Vec<_>>(),
        state.snapshot_seq()
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
