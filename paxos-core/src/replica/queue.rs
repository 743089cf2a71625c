//! The leader's update queue (`update_queue`, TR Fig 2), bounded by count and by payload bytes.
//!
//! A count alone let `max_queue` updates of up to 2 MiB each, 200 GiB at the defaults, wait at
//! the leader. The byte bound [`crate::Config::max_queue_bytes`] holds the memory. One update
//! larger than the whole bound is still taken into an empty queue, so no update is refused
//! forever.

use crate::message::ClientUpdate;
use std::collections::VecDeque;

/// A FIFO of client updates that knows its payload bytes.
#[derive(Clone, Debug, Default)]
pub(super) struct UpdateQueue {
    q: VecDeque<ClientUpdate>,
    bytes: usize,
}

fn weight(u: &ClientUpdate) -> usize {
    u.payload.len()
}

impl UpdateQueue {
    pub(super) fn len(&self) -> usize {
        self.q.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Whether `u` fits beside what is queued: fewer than `max` updates, and `max_bytes` of
    /// payload (or an empty queue).
    pub(super) fn fits(&self, u: &ClientUpdate, max: usize, max_bytes: usize) -> bool {
        self.q.len() < max && (self.q.is_empty() || self.bytes + weight(u) <= max_bytes)
    }

    pub(super) fn push_back(&mut self, u: ClientUpdate) {
        self.bytes += weight(&u);
        self.q.push_back(u);
    }

    pub(super) fn push_front(&mut self, u: ClientUpdate) {
        self.bytes += weight(&u);
        self.q.push_front(u);
    }

    pub(super) fn pop_front(&mut self) -> Option<ClientUpdate> {
        let u = self.q.pop_front()?;
        self.bytes -= weight(&u);
        Some(u)
    }

    pub(super) fn clear(&mut self) {
        self.q.clear();
        self.bytes = 0;
    }

    /// Everything queued, leaving the queue empty.
    pub(super) fn take(&mut self) -> VecDeque<ClientUpdate> {
        self.bytes = 0;
        std::mem::take(&mut self.q)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &ClientUpdate> {
        self.q.iter()
    }
}

/// As the queued updates alone (the byte count follows from them).
impl std::hash::Hash for UpdateQueue {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.q.hash(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientId, NodeId, Timestamp};

    fn upd(c: u64, len: usize) -> ClientUpdate {
        ClientUpdate {
            client_id: ClientId(c),
            server_id: NodeId(0),
            timestamp: Timestamp(1),
            payload: vec![0u8; len].into(),
        }
    }

    #[test]
    fn bytes_bound_the_queue_but_an_empty_queue_takes_anything() {
        let mut q = UpdateQueue::default();
        assert!(
            q.fits(&upd(1, 10_000), 100, 1_000),
            "an empty queue takes one oversized update"
        );
        q.push_back(upd(1, 600));
        assert!(q.fits(&upd(2, 400), 100, 1_000));
        assert!(!q.fits(&upd(2, 401), 100, 1_000));
        q.push_front(upd(3, 400));
        assert!(!q.fits(&upd(4, 1), 2, 1_000_000), "the count bound too");
        assert_eq!(q.pop_front().unwrap().client_id, ClientId(3));
        assert!(q.fits(&upd(2, 400), 100, 1_000));
        let all = q.take();
        assert_eq!(all.len(), 1);
        assert!(q.is_empty() && q.fits(&upd(5, 1_000), 100, 1_000));
        q.push_back(upd(6, 5));
        q.clear();
        assert_eq!((q.len(), q.bytes), (0, 0));
    }
}
