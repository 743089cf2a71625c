//! Streamed state transfer (replica/transfer.rs) and staggered, off-loop snapshots (snapshot.rs).

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// A 3-server cluster with small snapshot chunks, where server 2 misses `updates` updates while
/// cut off and then catches up by state transfer.
fn lagging_catch_up(updates: u64, tune: impl Fn(&mut Config)) -> Net {
    let mut net = Net::with(3, Durability::Sync, |c| {
        c.snapshot_interval = Some(10);
        c.history_retention = 0;
        c.snapshot_chunk_bytes = 64;
        c.snapshot_window = 2;
        tune(c);
    });
    net.run(100);
    net.cut = vec![(1, 2), (0, 2)];
    for ts in 1..=updates {
        net.submit(0, 1, ts);
        net.run(10);
    }
    net.cut.clear();
    net.run(3000);
    net
}

fn image_of(entries: u64) -> Snapshot {
    let applied: Vec<(Seq, UpdateId)> =
        (1..=entries).map(|i| (Seq(i), upd(1, 0, i).id())).collect();
    let app = Bytes::from(postcard::to_allocvec(&applied).unwrap());
    Snapshot::new(
        Seq(entries),
        app,
        &[ClientRecord {
            client: ClientId(1),
            last_executed: Timestamp(entries),
            last_result: Bytes::new(),
            last_active: Time::ZERO,
            nonce: None,
        }],
    )
}

fn pulls(out: &[(Destination, Message)]) -> Vec<u64> {
    out.iter()
        .filter_map(|(_, m)| match m {
            Message::SnapshotPull { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect()
}

#[test]
fn lagging_server_receives_the_snapshot_in_many_chunks() {
    let net = lagging_catch_up(200, |_| {});
    let r2 = net.nodes[2].as_ref().unwrap();
    let m = r2.metrics();
    assert!(m.snapshots_installed >= 1, "{m:?}");
    assert_eq!(m.snapshot_transfers_started, m.snapshots_installed, "{m:?}");
    // Far more than one chunk's worth arrived, in chunks of at most 64 bytes.
    assert!(m.snapshot_bytes_received > 10 * 64, "{m:?}");
    assert_eq!(r2.status().local_aru, Seq(200));
    assert_eq!(r2.state_machine().applied.len(), 200);
    assert_eq!(r2.status().transfer, None);
    net.assert_agreement();
}

static LOST_CHUNKS: AtomicU32 = AtomicU32::new(0);

#[test]
fn transfer_resumes_after_lost_chunks_without_starting_over() {
    // Every third chunk after the first is lost: the receiver pulls again from the first missing
    // byte and finishes the same transfer.
    let mut net = Net::with(3, Durability::Sync, |c| {
        c.snapshot_interval = Some(10);
        c.history_retention = 0;
        c.snapshot_chunk_bytes = 64;
        c.snapshot_window = 3;
    });
    net.run(100);
    net.cut = vec![(1, 2), (0, 2)];
    for ts in 1..=150 {
        net.submit(0, 1, ts);
        net.run(10);
    }
    net.lose = Some(|m| match m {
        Message::SnapshotChunk { offset, .. } if *offset > 0 => {
            LOST_CHUNKS.fetch_add(1, Ordering::Relaxed) % 3 == 2
        }
        _ => false,
    });
    net.cut.clear();
    net.run(5000);
    let r2 = net.nodes[2].as_ref().unwrap();
    let m = r2.metrics();
    assert!(LOST_CHUNKS.load(Ordering::Relaxed) > 3);
    assert!(m.snapshot_pull_retries >= 1, "{m:?}");
    assert_eq!(m.snapshot_transfers_replaced, 0, "{m:?}");
    assert!(m.snapshots_installed >= 1, "{m:?}");
    assert_eq!(r2.status().local_aru, Seq(150));
    net.assert_agreement();
}

#[test]
fn snapshots_built_off_loop_are_staggered_and_still_transfer() {
    let net = lagging_catch_up(60, |c| c.snapshot_off_loop = true);
    // Points: server i snapshots where (p + 10i/3) % 10 == 0: 10, 20 … / 7, 17 … / 4, 14 ….
    let seqs: Vec<Seq> = (0..2).map(|i| net.durable[i].snapshot_seq()).collect();
    assert_eq!(seqs, vec![Seq(60), Seq(57)]);
    for i in 0..2 {
        assert!(net.nodes[i].as_ref().unwrap().metrics().snapshots_taken >= 1);
    }
    let r2 = net.nodes[2].as_ref().unwrap();
    assert!(r2.metrics().snapshots_installed >= 1);
    assert_eq!(r2.status().local_aru, Seq(60));
    net.assert_agreement();
}

#[test]
fn receiver_keeps_window_pulls_outstanding_and_reorders_early_chunks() {
    let snap = image_of(600);
    let len = snap.len();
    assert!(len > 64 * 20, "image of {len} bytes");
    let mut r = single(2, 3);
    r.handle_message(Time::ZERO, NodeId(0), Message::snapshot_chunk(&snap, 0, 64));
    let window = u64::from(r.config().snapshot_window);
    assert_eq!(
        pulls(&outbox(&mut r)),
        (1..=window).map(|k| k * 64).collect::<Vec<_>>()
    );
    let progress = r.status().transfer.unwrap();
    assert_eq!((progress.received, progress.total), (64, len));
    // The window's chunks arrive last-first: nothing is pulled until the gap closes.
    for k in (2..=window).rev() {
        r.handle_message(
            Time::ZERO,
            NodeId(0),
            Message::snapshot_chunk(&snap, k * 64, 64),
        );
        assert!(pulls(&outbox(&mut r)).is_empty());
    }
    r.handle_message(
        Time::ZERO,
        NodeId(0),
        Message::snapshot_chunk(&snap, 64, 64),
    );
    let next = pulls(&outbox(&mut r));
    assert_eq!(next.first(), Some(&((window + 1) * 64)));
    assert_eq!(next.len() as u64, window);
    // Everything else, in order: installed.
    let mut offset = (window + 1) * 64;
    while offset < len {
        r.handle_message(
            Time::ZERO,
            NodeId(0),
            Message::snapshot_chunk(&snap, offset, 64),
        );
        offset += 64;
    }
    assert_eq!(r.status().local_aru, Seq(600));
    assert_eq!(r.metrics().snapshots_installed, 1);
    assert_eq!(r.state_machine().applied.len(), 600);
    assert_eq!(r.status().transfer, None);
}

#[test]
fn image_that_fails_its_digest_is_not_installed() {
    let snap = image_of(50);
    let Message::SnapshotChunk {
        seq,
        total_len,
        offset,
        data,
        ..
    } = Message::snapshot_chunk(&snap, 0, usize::MAX)
    else {
        unreachable!()
    };
    let mut r = single(2, 3);
    r.handle_message(
        Time::ZERO,
        NodeId(0),
        Message::SnapshotChunk {
            seq,
            digest: Digest::of(b"something else"),
            total_len,
            offset,
            data,
        },
    );
    assert_eq!(r.metrics().snapshots_rejected, 1);
    assert_eq!(r.metrics().snapshots_installed, 0);
    assert_eq!(r.status().local_aru, Seq(0));
    // Impossible sizes are dropped as invalid before anything is held.
    r.handle_message(
        Time::ZERO,
        NodeId(0),
        Message::SnapshotChunk {
            seq: Seq(9),
            digest: snap.digest(),
            total_len: 4,
            offset: 2,
            data: Bytes::from_static(b"abcd"),
        },
    );
    assert_eq!(r.metrics().dropped_invalid, 1);
    assert_eq!(r.status().transfer, None);
}

#[test]
fn sender_serves_a_replaced_snapshot_while_it_is_pulled() {
    let mut net = Net::with(3, Durability::Sync, |c| c.snapshot_interval = None);
    net.run(100);
    let pull = |s: &Snapshot, offset| Message::SnapshotPull {
        seq: s.seq(),
        digest: s.digest(),
        offset,
        len: 8,
    };
    let snapshot_of = |net: &mut Net| {
        net.node(0).take_snapshot();
        net.drain(0);
    };
    for ts in 1..=5 {
        net.submit(0, 1, ts);
        net.run(10);
    }
    snapshot_of(&mut net);
    let first = net.node(0).latest_snapshot().cloned().unwrap();
    let now = net.now;
    net.node(0).handle_message(now, NodeId(2), pull(&first, 8));
    assert_eq!(pulls_answered(&outbox(net.node(0))), vec![(first.seq(), 8)]);
    for ts in 6..=9 {
        net.submit(0, 1, ts);
        net.run(10);
    }
    snapshot_of(&mut net);
    let now = net.now;
    net.node(0).handle_message(now, NodeId(2), pull(&first, 16));
    assert_eq!(
        pulls_answered(&outbox(net.node(0))),
        vec![(first.seq(), 16)]
    );
    // Nobody pulls it for a long while: let go, and a pull for it is answered with the newer one.
    net.run(3000);
    let now = net.now;
    let _ = outbox(net.node(0));
    net.node(0).handle_message(now, NodeId(2), pull(&first, 16));
    assert_eq!(pulls_answered(&outbox(net.node(0))), vec![(Seq(9), 0)]);
}

fn pulls_answered(out: &[(Destination, Message)]) -> Vec<(Seq, u64)> {
    out.iter()
        .filter_map(|(_, m)| match m {
            Message::SnapshotChunk { seq, offset, .. } => Some((*seq, *offset)),
            _ => None,
        })
        .collect()
}
