//! Streamed state transfer (DERIVED, spec §11; docs/architecture.md, "State transfer").
//!
//! A server that asks for slots its peer compacted gets the peer's snapshot image in
//! [`Message::SnapshotChunk`]s instead. The first chunk (offset 0) answers the ReconRequest; the
//! receiver then pulls the rest with [`Message::SnapshotPull`], keeping `snapshot_window` pulls
//! outstanding (flow control: the sender sends only what was asked for and keeps no state per
//! receiver). Chunks are appended in order and digested as they come; a few that arrive early are
//! held until the gap before them fills. The image is checked against the announced digest and
//! decoded before anything is installed, and installed in one step (`on_snapshot`).
//!
//! Resuming: pulls that go unanswered for `recon_timeout` are sent again from the first missing
//! byte, to the server that last sent a chunk; a chunk of the same image from any other server
//! counts too, so a transfer survives a lost connection or a leader change; a transfer whose source
//! went quiet moves to another server that offers the same image. A stalled transfer lets
//! reconciliation run again and any other snapshot replace it; a live one is replaced only by a
//! newer image that arrives whole, so that a sender that snapshots faster than the receiver pulls
//! cannot keep restarting it.
//! A sender that took a newer snapshot keeps serving the one being pulled while pulls keep coming.

use super::*;
use crate::snapshot::{Digest, DigestHasher};
use std::collections::BTreeMap;
use std::time::Duration;

/// How many `recon_timeout`s a sender keeps serving a replaced snapshot nobody pulls any more.
const RETAIN_TIMEOUTS: u32 = 10;

/// How many `recon_timeout`s without progress before a transfer counts as stalled: reconciliation
/// runs again and any other snapshot may replace it.
const STALL_TIMEOUTS: u32 = 5;

/// A snapshot image arriving in chunks.
#[derive(Clone, Debug)]
pub(super) struct Incoming {
    seq: Seq,
    digest: Digest,
    total_len: u64,
    /// Who sent the last chunk; pulls go there.
    source: NodeId,
    /// The image's prefix received so far, digested as it grew.
    received: Vec<u8>,
    hasher: DigestHasher,
    /// Chunks beyond the prefix, by offset (at most `snapshot_window`).
    ahead: BTreeMap<u64, Bytes>,
    /// The next offset to pull.
    next_pull: u64,
    /// Bytes per pull.
    chunk: u32,
    last_progress: Time,
    /// When unanswered pulls were last sent again.
    retried: Time,
}

impl Incoming {
    fn is(&self, seq: Seq, digest: Digest, total_len: u64) -> bool {
        self.seq == seq && self.digest == digest && self.total_len == total_len
    }

    fn prefix(&self) -> u64 {
        self.received.len() as u64
    }

    fn append(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.received.extend_from_slice(data);
    }
}

/// Where a server stands in state transfer, for status pages ([`Status::transfer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransferProgress {
    /// The snapshot being received.
    pub seq: Seq,
    /// The server chunks come from.
    pub source: NodeId,
    /// Bytes received in order.
    pub received: u64,
    /// The image's length.
    pub total: u64,
}

/// Both sides of state transfer.
#[derive(Clone, Debug, Default)]
pub(super) struct Transfer {
    /// The image this server is receiving, if any.
    pub(super) incoming: Option<Incoming>,
    /// When a peer last pulled this server's latest snapshot.
    latest_pulled: Option<Time>,
    /// A replaced snapshot still being pulled, and when it last was.
    retained: Option<(Snapshot, Time)>,
}

impl Transfer {
    /// Whether an incoming transfer is under way and not stalled (reconciliation waits for it).
    pub(super) fn receiving(&self, now: Time, timeout: Duration) -> bool {
        self.incoming
            .as_ref()
            .is_some_and(|i| now.saturating_since(i.last_progress) < timeout * STALL_TIMEOUTS)
    }

    pub(super) fn progress(&self) -> Option<TransferProgress> {
        self.incoming.as_ref().map(|i| TransferProgress {
            seq: i.seq,
            source: i.source,
            received: i.prefix(),
            total: i.total_len,
        })
    }

    /// The latest snapshot is being replaced by a newer one: keep serving it if it is in use.
    pub(super) fn retire(&mut self, old: Option<Snapshot>, now: Time, timeout: Duration) {
        let pulled = self.latest_pulled.take();
        if let (Some(old), Some(at)) = (old, pulled) {
            if now.saturating_since(at) < timeout * RETAIN_TIMEOUTS {
                self.retained = Some((old, at));
            }
        }
    }

    /// The slot of a replaced snapshot still served to a receiver.
    pub(super) fn retained_seq(&self) -> Option<Seq> {
        self.retained.as_ref().map(|(s, _)| s.seq())
    }

    pub(super) fn hash_at<H: std::hash::Hasher>(
        &self,
        rel: impl Fn(Time) -> Option<u64>,
        h: &mut H,
    ) {
        use std::hash::Hash;
        match &self.incoming {
            None => 0u8.hash(h),
            Some(i) => {
                (i.seq, i.digest, i.total_len, i.source, &i.received).hash(h);
                (&i.ahead, i.next_pull, i.chunk).hash(h);
                (rel(i.last_progress), rel(i.retried)).hash(h);
            }
        }
        self.latest_pulled.map(&rel).hash(h);
        self.retained.as_ref().map(|(s, t)| (s, rel(*t))).hash(h);
    }
}

impl<S: StateMachine, E: LeaderElection> Replica<S, E> {
    /// Sends the piece of `snap` at `offset` (at most `len` bytes and one configured chunk).
    fn send_chunk(&mut self, to: NodeId, snap: &Snapshot, offset: u64, len: u64) {
        let len = len.min(u64::from(self.config.snapshot_chunk_bytes));
        let end = offset.saturating_add(len).min(snap.len());
        if offset >= end {
            return;
        }
        let data = snap.image().slice(offset as usize..end as usize);
        self.metrics.snapshot_bytes_sent += data.len() as u64;
        self.send(
            Destination::Node(to),
            Message::SnapshotChunk {
                seq: snap.seq(),
                digest: snap.digest(),
                total_len: snap.len(),
                offset,
                data,
            },
        );
    }

    /// A ReconRequest reached below this server's history: start a transfer of its snapshot.
    pub(super) fn offer_snapshot(&mut self, to: NodeId) -> bool {
        match self.latest_snapshot.clone() {
            Some(s) => {
                self.metrics.snapshot_offers += 1;
                self.send_chunk(to, &s, 0, u64::MAX);
                true
            }
            None => false,
        }
    }

    pub(super) fn on_snapshot_pull(
        &mut self,
        from: NodeId,
        seq: Seq,
        digest: Digest,
        offset: u64,
        len: u32,
    ) {
        let now = self.now;
        let wanted = |s: &Snapshot| s.seq() == seq && s.digest() == digest;
        if let Some(s) = self.latest_snapshot.clone().filter(wanted) {
            self.transfer.latest_pulled = Some(now);
            self.send_chunk(from, &s, offset, u64::from(len));
        } else if let Some(s) = self
            .transfer
            .retained
            .as_mut()
            .filter(|(s, _)| wanted(s))
            .map(|(s, at)| {
                *at = now;
                s.clone()
            })
        {
            self.send_chunk(from, &s, offset, u64::from(len));
        } else if self.latest_snapshot.as_ref().is_some_and(|s| s.seq() > seq) {
            // The one asked for is gone here; a newer one replaces it at the receiver.
            self.offer_snapshot(from);
        } else {
            self.metrics.snapshot_pulls_unserved += 1;
        }
    }

    pub(super) fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        seq: Seq,
        digest: Digest,
        total_len: u64,
        offset: u64,
        data: Bytes,
    ) {
        let len = data.len() as u64;
        let valid = total_len > 0
            && total_len <= self.config.max_snapshot_bytes
            && len > 0
            && offset.checked_add(len).is_some_and(|end| end <= total_len);
        if !valid {
            self.metrics.dropped_invalid += 1;
            return;
        }
        if seq <= self.local_aru {
            return; // nothing to gain
        }
        let now = self.now;
        let receiving = self.transfer.receiving(now, self.config.recon_timeout);
        let window = u64::from(self.config.snapshot_window);
        let start_new = match &self.transfer.incoming {
            None => offset == 0,
            Some(i) if i.is(seq, digest, total_len) => false,
            // Another image replaces the one under way only once that one stalled, or when it is
            // newer and arrives whole. Replacing a live transfer by every newer offer never ends
            // while the sender snapshots faster than the receiver pulls (sim: highest-id N = 3
            // seed 3315, a snapshot every 3 slots); finishing it and catching up from there does.
            Some(i) => offset == 0 && (!receiving || (seq > i.seq && len == total_len)),
        };
        if start_new {
            if self.transfer.incoming.is_some() {
                self.metrics.snapshot_transfers_replaced += 1;
            }
            self.metrics.snapshot_transfers_started += 1;
            // A short first chunk that is not the whole image is the sender's chunk size.
            let chunk = if len < total_len {
                self.config.snapshot_chunk_bytes.min(len as u32)
            } else {
                self.config.snapshot_chunk_bytes
            };
            self.transfer.incoming = Some(Incoming {
                seq,
                digest,
                total_len,
                source: from,
                received: Vec::new(),
                hasher: Digest::hasher(),
                ahead: BTreeMap::new(),
                next_pull: len,
                chunk,
                last_progress: now,
                retried: now,
            });
        }
        let Some(inc) = self.transfer.incoming.as_mut() else {
            return;
        };
        if !inc.is(seq, digest, total_len) {
            return; // a chunk of an image this server is not receiving
        }
        // The same image from another server while the current source has gone quiet (say it
        // can send but no longer hears our pulls): pull from this one instead (sim: psb N = 3
        // seed 5108, a server outside the stable set started the transfer).
        // (Retries are not progress: they go to the quiet source.)
        let switched = from != inc.source
            && now.saturating_since(inc.last_progress) >= self.config.recon_timeout;
        if switched {
            inc.source = from;
            inc.next_pull = inc.prefix();
            inc.retried = now;
        }
        let prefix = inc.prefix();
        if offset == prefix {
            inc.append(&data);
            while let Some(next) = inc.ahead.remove(&inc.prefix()) {
                inc.append(&next);
            }
            // Anything held that the prefix has overtaken is a duplicate.
            let p = inc.prefix();
            inc.ahead.retain(|&o, _| o > p);
        } else if offset > prefix
            && offset < prefix + window * u64::from(inc.chunk)
            && (inc.ahead.len() as u64) < window
        {
            inc.ahead.entry(offset).or_insert(data);
        } else {
            // A duplicate, or too far ahead to hold.
            if switched {
                self.metrics.snapshot_sources_switched += 1;
                self.pull_chunks();
            }
            return;
        }
        if switched {
            self.metrics.snapshot_sources_switched += 1;
        }
        self.metrics.snapshot_bytes_received += len;
        inc.source = from;
        inc.last_progress = now;
        if inc.prefix() == inc.total_len {
            self.finish_transfer();
        } else {
            self.pull_chunks();
        }
    }

    /// Sends pulls until `snapshot_window` chunks are outstanding.
    fn pull_chunks(&mut self) {
        let window = u64::from(self.config.snapshot_window);
        let Some(inc) = self.transfer.incoming.as_mut() else {
            return;
        };
        let limit = inc
            .prefix()
            .saturating_add(window * u64::from(inc.chunk))
            .min(inc.total_len);
        let mut pulls = Vec::new();
        while inc.next_pull < limit {
            if !inc.ahead.contains_key(&inc.next_pull) {
                pulls.push((inc.next_pull, inc.chunk));
            }
            inc.next_pull += u64::from(inc.chunk);
        }
        let (to, seq, digest) = (inc.source, inc.seq, inc.digest);
        for (offset, len) in pulls {
            self.send(
                Destination::Node(to),
                Message::SnapshotPull {
                    seq,
                    digest,
                    offset,
                    len,
                },
            );
        }
    }

    /// Every byte arrived: check, decode and install.
    fn finish_transfer(&mut self) {
        let Some(inc) = self.transfer.incoming.take() else {
            return;
        };
        let digest = inc.hasher.finish();
        match Snapshot::from_digested(Bytes::from(inc.received), digest, Some(inc.digest)) {
            Ok(snap) if snap.seq() == inc.seq => self.on_snapshot(snap),
            _ => self.metrics.snapshots_rejected += 1,
        }
    }

    /// Timer: pulls that went unanswered are sent again from the first missing byte; a sender's
    /// replaced snapshot nobody pulls any more is let go.
    pub(super) fn transfer_tick(&mut self, now: Time) {
        let timeout = self.config.recon_timeout;
        if self
            .transfer
            .retained
            .as_ref()
            .is_some_and(|(_, at)| now.saturating_since(*at) >= timeout * RETAIN_TIMEOUTS)
        {
            self.transfer.retained = None;
        }
        if self
            .transfer
            .incoming
            .as_ref()
            .is_some_and(|i| i.seq <= self.local_aru)
        {
            // Overtaken (reconciliation or another snapshot got this server past it).
            self.transfer.incoming = None;
        }
        let stalled = match self.transfer.incoming.as_mut() {
            Some(inc) if now.saturating_since(inc.last_progress.max(inc.retried)) >= timeout => {
                inc.next_pull = inc.prefix();
                inc.retried = now;
                true
            }
            _ => false,
        };
        if stalled {
            self.metrics.snapshot_pull_retries += 1;
            self.pull_chunks();
        }
    }
}
