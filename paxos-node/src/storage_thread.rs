//! The storage thread: group commit of the core's persist batches, and the disk watchdog.
//!
//! Every batch queued while the previous write ran goes into the next write, with one sync for
//! all (group commit). The thread reports each write durable to the driver, or its failure, after
//! which the server stops: a failed write is never reported durable.
//!
//! The watchdog is a second thread. A write that has not returned after the disk timeout stops
//! the server with an error that names the timeout. A hung disk would otherwise leave a server
//! that still answers status requests and holds its clients, but persists nothing. Its peers see
//! it as alive, and a leader on such a disk stalls its view until their timers replace it.

use crate::metrics::NodeMetrics;
use crate::node::Event;
use paxos_core::PersistBatch;
use paxos_storage::Storage;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A storage write at least this long is logged (a warning).
const SLOW_STORAGE_WRITE: Duration = Duration::from_millis(300);

/// Runs the storage thread until the driver goes away or a write fails.
pub(crate) fn run<L: Storage>(
    mut log: L,
    rx: std::sync::mpsc::Receiver<PersistBatch>,
    events: mpsc::Sender<Event>,
    metrics: Arc<NodeMetrics>,
    disk_timeout: Option<Duration>,
) {
    let epoch = Instant::now();
    // When the write in progress started (µs since `epoch`, plus one), 0 when none runs.
    let writing_since = Arc::new(AtomicU64::new(0));
    if let Some(t) = disk_timeout {
        if let Err(e) = watchdog(t, epoch, writing_since.clone(), events.clone()) {
            // Asked for and not running: stop rather than run without it.
            let why = format!("cannot start the disk watchdog: {e}");
            let _ = events.blocking_send(Event::StorageFailed(why));
            return;
        }
    }
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < 4096 {
            match rx.try_recv() {
                Ok(b) => group.push(b),
                Err(_) => break,
            }
        }
        let sync = group.iter().any(|b| b.sync);
        let last = group.last().expect("non-empty").id;
        let started = Instant::now();
        let snapshot = group.iter().any(|b| b.snapshot.is_some());
        metrics
            .snapshot_writes_running
            .store(u64::from(snapshot), Ordering::Relaxed);
        writing_since.store(
            started.duration_since(epoch).as_micros() as u64 + 1,
            Ordering::Release,
        );
        let r = log.append(&group, sync);
        writing_since.store(0, Ordering::Release);
        let took = started.elapsed();
        if took >= SLOW_STORAGE_WRITE {
            // Everything this server persists waits behind such a write (and so do its peers,
            // when they need its votes): the first thing to look at after an unexpected view
            // change.
            tracing::warn!(
                ms = took.as_millis() as u64,
                batches = group.len(),
                snapshot,
                "slow storage write"
            );
        }
        // Own snapshots may still be written on the backend's helper thread.
        metrics
            .snapshot_writes_running
            .store(log.snapshot_writes_in_flight() as u64, Ordering::Relaxed);
        match r {
            Ok(()) => {
                if events
                    .blocking_send(Event::Persisted(last, started.elapsed(), group.len()))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                // Fail-stop: the failed write is never reported durable.
                let _ = events.blocking_send(Event::StorageFailed(e.to_string()));
                return;
            }
        }
    }
}

/// Watches `writing_since`; a write running for `timeout` stops the server.
fn watchdog(
    timeout: Duration,
    epoch: Instant,
    writing_since: Arc<AtomicU64>,
    events: mpsc::Sender<Event>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let poll = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
    std::thread::Builder::new()
        .name("disk-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(poll);
            if events.is_closed() {
                return;
            }
            let since = writing_since.load(Ordering::Acquire);
            if since == 0 {
                continue;
            }
            let started = epoch + Duration::from_micros(since - 1);
            let running = started.elapsed();
            if running >= timeout {
                let why = format!(
                    "a storage write has not returned after {:.1} s (disk timeout {:?}): the disk \
                     is hung or far too slow; stopping rather than serving without persisting",
                    running.as_secs_f64(),
                    timeout
                );
                tracing::error!("{why}");
                let _ = events.blocking_send(Event::StorageFailed(why));
                return;
            }
        })
}
