//! The send path (see the [`udp`](super) module documentation): the [`Outbox`] packs queued
//! envelopes per destination into batch datagrams or splits a large one into fragments, and the
//! [`Sender`] task seals each datagram (header, seq, tag), paces long fragment trains and hands
//! it to the unicast socket (multicast datagrams go to the group from that same socket).

use super::config::UdpConfig;
use super::frame::{
    be_u16, mac, seal_in_place, HmacSha256, FRAGMENT_HEADER, HEADER_LEN, KIND_BATCH, KIND_FRAGMENT,
    TAG_LEN,
};
use crate::{Counters, DropReason};
use paxos_core::NodeId;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

/// Within one fragmented message, the sender pauses 1 ms after each this many bytes (so a
/// multi-megabyte message does not overrun a receiver's socket buffer; messages up to twice this
/// size are not paced).
pub const PACE_BYTES: usize = 128 << 10;

/// Where a datagram goes: one member's unicast address, or the multicast group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Dest {
    Unicast(SocketAddr),
    Multicast,
}

/// Datagrams being assembled, shared by the senders and the sender task. Every buffer starts
/// with [`HEADER_LEN`] bytes reserved for the header, so sealing does not copy.
#[derive(Debug)]
pub(super) struct Outbox {
    state: Mutex<OutboxState>,
    notify: Notify,
    max_payload: usize,
    limit: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    /// Complete datagrams in order: destination, kind, buffer.
    ready: Vec<(Dest, u8, Vec<u8>)>,
    /// The batch being filled per destination.
    open: Vec<(Dest, Vec<u8>)>,
    bytes: usize,
    msg_id: u64,
}

impl Outbox {
    /// An empty outbox for datagrams of at most `max_payload` payload bytes, holding at most
    /// `limit` bytes of queued envelopes.
    pub(super) fn new(max_payload: usize, limit: usize) -> Outbox {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            notify: Notify::new(),
            max_payload,
            limit,
        }
    }

    /// Queues one encoded envelope; false if the queue is full.
    pub(super) fn push(&self, dest: Dest, msg: &[u8]) -> bool {
        let mut st = self.state.lock().expect("udp outbox");
        if st.bytes + msg.len() > self.limit {
            return false;
        }
        st.bytes += msg.len();
        let i = match st.open.iter().position(|(d, _)| *d == dest) {
            Some(i) => i,
            None => {
                st.open.push((dest, Vec::new()));
                st.open.len() - 1
            }
        };
        let fits_alone = msg.len() + 4 <= self.max_payload;
        let used = st.open[i].1.len().saturating_sub(HEADER_LEN);
        if used > 0 && (!fits_alone || used + 4 + msg.len() > self.max_payload) {
            let full = std::mem::take(&mut st.open[i].1);
            st.ready.push((dest, KIND_BATCH, full));
        }
        if fits_alone {
            let buf = &mut st.open[i].1;
            if buf.is_empty() {
                buf.reserve(HEADER_LEN + self.max_payload.min(4 * (msg.len() + 4)) + TAG_LEN);
                buf.resize(HEADER_LEN, 0);
            }
            buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            buf.extend_from_slice(msg);
        } else {
            let chunk = self.max_payload - FRAGMENT_HEADER;
            let count = msg.len().div_ceil(chunk);
            if count > u16::MAX as usize {
                st.bytes -= msg.len();
                return false;
            }
            let id = st.msg_id;
            st.msg_id += 1;
            for (index, part) in msg.chunks(chunk).enumerate() {
                let mut p = Vec::with_capacity(HEADER_LEN + FRAGMENT_HEADER + part.len() + TAG_LEN);
                p.resize(HEADER_LEN, 0);
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&(index as u16).to_be_bytes());
                p.extend_from_slice(&(count as u16).to_be_bytes());
                p.extend_from_slice(part);
                st.ready.push((dest, KIND_FRAGMENT, p));
            }
        }
        drop(st);
        self.notify.notify_one();
        true
    }

    /// Takes every queued datagram, complete ones first, in order.
    fn take(&self) -> Vec<(Dest, u8, Vec<u8>)> {
        let mut st = self.state.lock().expect("udp outbox");
        let mut out = std::mem::take(&mut st.ready);
        for (dest, buf) in st.open.iter_mut() {
            if buf.len() > HEADER_LEN {
                out.push((*dest, KIND_BATCH, std::mem::take(buf)));
            }
        }
        st.bytes = 0;
        out
    }
}

/// The sender task's state: the sealing key, this transport's epoch and its next seq.
pub(super) struct Sender {
    id: NodeId,
    mac: HmacSha256,
    epoch: u64,
    seq: u64,
    socket: Arc<UdpSocket>,
    group: SocketAddr,
    counters: Arc<Counters>,
    loss: f64,
}

impl Sender {
    /// A sender with epoch `epoch` (see [`new_epoch`](super::replay::new_epoch)), sending from `socket`.
    pub(super) fn new(
        config: &UdpConfig,
        epoch: u64,
        socket: Arc<UdpSocket>,
        counters: Arc<Counters>,
    ) -> Sender {
        Sender {
            id: config.id,
            mac: mac(&config.key),
            epoch,
            seq: 0,
            socket,
            group: SocketAddr::V4(config.group),
            counters,
            loss: config.loss.clamp(0.0, 1.0),
        }
    }

    /// Sends whatever the outbox holds each time it is notified; runs until aborted.
    pub(super) async fn run(mut self, outbox: Arc<Outbox>) {
        loop {
            outbox.notify.notified().await;
            // Let concurrent senders add to the batch before it is taken (costs microseconds).
            tokio::task::yield_now().await;
            loop {
                let datagrams = outbox.take();
                if datagrams.is_empty() {
                    break;
                }
                for (dest, kind, d) in datagrams {
                    if kind == KIND_FRAGMENT && d.len() > HEADER_LEN + FRAGMENT_HEADER {
                        // Pace long fragment trains (snapshots): a 1 ms pause every
                        // PACE_BYTES lets receivers with small socket buffers keep up.
                        let index = be_u16(&d[HEADER_LEN + 8..]) as usize;
                        let chunk = d.len() - HEADER_LEN - FRAGMENT_HEADER;
                        let every = (PACE_BYTES / chunk.max(1)).max(1);
                        if index > 0 && index % every == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    self.emit(dest, kind, d).await;
                }
            }
        }
    }

    /// Seals `d` with the next seq and sends it (unless the injected loss drops it).
    async fn emit(&mut self, dest: Dest, kind: u8, mut d: Vec<u8>) {
        seal_in_place(&self.mac, kind, self.id, self.epoch, self.seq, &mut d);
        self.seq += 1;
        if self.loss > 0.0 && rand::random::<f64>() < self.loss {
            self.counters.dropped(DropReason::Injected);
            return;
        }
        let addr = match dest {
            Dest::Unicast(a) => a,
            Dest::Multicast => self.group,
        };
        match self.socket.send_to(&d, addr).await {
            Ok(_) => self.counters.sent_packet(d.len()),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "udp send failed");
                self.counters.dropped(DropReason::QueueFull);
            }
        }
    }
}
