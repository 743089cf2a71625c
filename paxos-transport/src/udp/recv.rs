//! The receive path (see the [`udp`](super) module documentation and docs/transport.md, "UDP
//! multicast", for the order of checks): each [`Receiver`] task reads one socket (unicast or
//! group), authenticates and de-duplicates every datagram, splits batches, reassembles fragments
//! under the `reassembly_bytes` bound, and checks each envelope's `from` before queueing it.

use super::config::UdpConfig;
use super::frame::{
    be_u16, be_u32, be_u64, mac, HmacSha256, FRAGMENT_HEADER, HEADER_LEN, KIND_BATCH,
    KIND_FRAGMENT, MAGIC, TAG_LEN,
};
use super::replay::Window;
use crate::{Counters, DropReason, Inbox, InboxSender};
use hmac::Mac;
use paxos_core::codec::decode_with_limit;
use paxos_core::{Envelope, NodeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// How long a partially reassembled message is kept.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    got: usize,
    bytes: usize,
    started: Instant,
}

/// What the receiver tasks share: the replay windows and the partial messages.
#[derive(Debug, Default)]
struct RecvState {
    windows: HashMap<NodeId, Window>,
    partials: HashMap<(NodeId, u64, u64), Partial>,
    partial_bytes: usize,
}

/// The receive side of one transport, shared by its two receiver tasks.
#[derive(Debug)]
pub(super) struct Receiver {
    id: NodeId,
    members: Vec<NodeId>,
    mac: HmacSha256,
    max_message: usize,
    reassembly_bytes: usize,
    state: Mutex<RecvState>,
    inbound: InboxSender,
    counters: Arc<Counters>,
}

impl Receiver {
    /// A receiver accepting datagrams from `members` and queueing envelopes into `inbound`.
    pub(super) fn new(
        config: &UdpConfig,
        members: Vec<NodeId>,
        inbound: InboxSender,
        counters: Arc<Counters>,
    ) -> Receiver {
        Receiver {
            id: config.id,
            members,
            mac: mac(&config.key),
            max_message: config.max_message,
            reassembly_bytes: config.reassembly_bytes,
            state: Mutex::new(RecvState::default()),
            inbound,
            counters,
        }
    }

    /// Reads `socket` and handles every datagram; runs until aborted.
    pub(super) async fn run(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, _)) => self.datagram(&buf[..n]),
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive failed");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// Handles one datagram, checks in the documented order, dropping (and counting) at the
    /// first that fails.
    fn datagram(&self, d: &[u8]) {
        self.counters.received_bytes(d.len());
        if d.len() < HEADER_LEN + TAG_LEN || d[..4] != MAGIC {
            self.counters.dropped(DropReason::Malformed);
            return;
        }
        if be_u32(&d[5..]) == self.id.0 {
            // Our own multicast, looped back: no genuine datagram claims to come from us.
            return;
        }
        let (body, tag) = d.split_at(d.len() - TAG_LEN);
        let mut m = self.mac.clone();
        m.update(body);
        if m.verify_slice(tag).is_err() {
            self.counters.dropped(DropReason::Unauthenticated);
            return;
        }
        let kind = body[4];
        let sender = NodeId(be_u32(&body[5..]));
        let epoch = be_u64(&body[9..]);
        let seq = be_u64(&body[17..]);
        let payload = &body[HEADER_LEN..];
        if !self.members.contains(&sender) {
            self.counters.dropped(DropReason::NonMember);
            return;
        }
        let mut state = self.state.lock().expect("udp receive state");
        let fresh = match state.windows.get_mut(&sender) {
            Some(w) => w.accept(epoch, seq),
            None => {
                state.windows.insert(sender, Window::new(epoch, seq));
                true
            }
        };
        if !fresh {
            self.counters.dropped(DropReason::Replay);
            return;
        }
        match kind {
            KIND_BATCH => {
                drop(state);
                let mut out = Vec::new();
                self.batch(sender, payload, &mut out);
                Inbox::push(&self.inbound, out, &self.counters);
            }
            KIND_FRAGMENT => {
                if let Some(msg) = self.fragment(&mut state, sender, epoch, payload) {
                    drop(state);
                    let mut out = Vec::new();
                    self.deliver(sender, &msg, &mut out);
                    Inbox::push(&self.inbound, out, &self.counters);
                }
            }
            _ => self.counters.dropped(DropReason::Malformed),
        }
    }

    /// Splits a batch payload into envelopes.
    fn batch(&self, sender: NodeId, mut p: &[u8], out: &mut Vec<(NodeId, Envelope)>) {
        if p.is_empty() {
            self.counters.dropped(DropReason::Malformed);
        }
        while !p.is_empty() {
            if p.len() < 4 {
                self.counters.dropped(DropReason::Malformed);
                return;
            }
            let len = be_u32(p) as usize;
            if len == 0 || len > p.len() - 4 {
                self.counters.dropped(DropReason::Malformed);
                return;
            }
            self.deliver(sender, &p[4..4 + len], out);
            p = &p[4 + len..];
        }
    }

    /// Adds a fragment to its partial message, evicting expired and then the oldest partials
    /// to stay under the bound; the whole message once its last fragment arrives.
    fn fragment(
        &self,
        state: &mut RecvState,
        sender: NodeId,
        epoch: u64,
        p: &[u8],
    ) -> Option<Vec<u8>> {
        if p.len() <= FRAGMENT_HEADER {
            self.counters.dropped(DropReason::Malformed);
            return None;
        }
        let id = be_u64(p);
        let index = be_u16(&p[8..]) as usize;
        let count = be_u16(&p[10..]) as usize;
        let data = &p[FRAGMENT_HEADER..];
        if count < 2
            || index >= count
            || count.saturating_mul(data.len()) > self.max_message + data.len()
        {
            self.counters.dropped(DropReason::Malformed);
            return None;
        }
        let key = (sender, epoch, id);
        // Expire old partials and make room.
        let now = Instant::now();
        if !state.partials.contains_key(&key)
            || state.partial_bytes + data.len() > self.reassembly_bytes
        {
            let mut evicted = 0;
            loop {
                let expired: Vec<_> = state
                    .partials
                    .iter()
                    .filter(|(_, v)| now.duration_since(v.started) > REASSEMBLY_TIMEOUT)
                    .map(|(k, _)| *k)
                    .collect();
                for k in expired {
                    if let Some(v) = state.partials.remove(&k) {
                        state.partial_bytes -= v.bytes;
                        evicted += 1;
                    }
                }
                if state.partial_bytes + data.len() <= self.reassembly_bytes {
                    break;
                }
                let oldest = state
                    .partials
                    .iter()
                    .min_by_key(|(_, v)| v.started)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => {
                        let v = state.partials.remove(&k).expect("present");
                        state.partial_bytes -= v.bytes;
                        evicted += 1;
                    }
                    None => {
                        self.counters.dropped(DropReason::Reassembly);
                        return None;
                    }
                }
            }
            for _ in 0..evicted {
                self.counters.dropped(DropReason::Reassembly);
            }
        }
        let partial = state.partials.entry(key).or_insert_with(|| Partial {
            parts: vec![None; count],
            got: 0,
            bytes: 0,
            started: now,
        });
        if partial.parts.len() != count || partial.parts[index].is_some() {
            self.counters.dropped(DropReason::Malformed);
            return None;
        }
        partial.parts[index] = Some(data.to_vec());
        partial.got += 1;
        partial.bytes += data.len();
        state.partial_bytes += data.len();
        if partial.got < count {
            return None;
        }
        let done = state.partials.remove(&key).expect("present");
        state.partial_bytes -= done.bytes;
        let mut msg = Vec::with_capacity(done.bytes);
        for part in done.parts.into_iter().flatten() {
            msg.extend_from_slice(&part);
        }
        Some(msg)
    }

    /// Decodes one envelope and checks that it names its authenticated sender.
    fn deliver(&self, sender: NodeId, bytes: &[u8], out: &mut Vec<(NodeId, Envelope)>) {
        let env: Envelope = match decode_with_limit(bytes, self.max_message) {
            Ok(env) => env,
            Err(_) => {
                self.counters.dropped(DropReason::Malformed);
                return;
            }
        };
        if env.from != sender {
            self.counters.dropped(DropReason::ForgedSender);
            return;
        }
        out.push((sender, env));
    }
}
