//! The event queue: what can happen in a run, and in which order (testing.md (a), *Harness*: "a
//! seeded PRNG drives a discrete-event queue").
//!
//! Events are ordered by virtual time, then by the order they were scheduled in (a sequence
//! number), so two events at the same instant always run in the same order and a seed replays
//! exactly. Every processed event's time and [`Ev::code`] go into the run's trace hash.

use super::schedule::SchedEv;
use paxos_core::{Message, Time};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One event of the world.
pub(super) enum Ev {
    /// A server's timer tick (stale once the server crashed: `gen` changed).
    Tick { node: u8, gen: u32 },
    /// A message reaches `to` (unless a partition blocks `from -> to` by then).
    Deliver { from: u8, to: u8, msg: Message },
    /// The oldest unsynced batch of `node` becomes durable.
    Synced { node: u8, gen: u32 },
    /// A client submits its next update.
    Submit { client: u32 },
    /// A client's update `ts` timed out (ignored once it completed).
    Timeout { client: u32, ts: u64 },
    /// The next random crash or partition.
    Chaos,
    /// A crashed server comes back.
    Restart { node: u8 },
    /// Partition `id` heals.
    PartitionEnd { id: u64 },
    /// Flapping partition `id` toggles (`left` more times).
    Flap { id: u64, left: u32 },
    /// The fault phase ends.
    Heal,
    /// The liveness phase checks for convergence.
    Check,
    /// Step `index` of the fault script.
    Script { index: u32 },
    /// Scheduling and process faults (`schedule.rs`, `nemesis.rs`).
    Sched(SchedEv),
    /// A snapshot job of `node` finished building (ignored once the server crashed).
    SnapshotBuilt {
        node: u8,
        gen: u32,
        job: paxos_core::SnapshotJob,
    },
}

impl Ev {
    /// What the trace hash records of this event.
    pub(super) fn code(&self) -> u64 {
        match self {
            Ev::Tick { node, .. } => u64::from(*node) << 8,
            Ev::Deliver { from, to, msg } => {
                1 | u64::from(*from) << 8 | u64::from(*to) << 16 | (msg_code(msg) << 24)
            }
            Ev::Synced { node, .. } => 2 | u64::from(*node) << 8,
            Ev::Submit { client } => 3 | u64::from(*client) << 8,
            Ev::Timeout { client, ts } => 4 | u64::from(*client) << 8 | ts << 40,
            Ev::Chaos => 5,
            Ev::Restart { node } => 6 | u64::from(*node) << 8,
            Ev::PartitionEnd { id } => 7 | id << 8,
            Ev::Flap { id, left } => 8 | id << 8 | u64::from(*left) << 40,
            Ev::Heal => 9,
            Ev::Check => 10,
            Ev::Script { index } => 11 | u64::from(*index) << 8,
            Ev::Sched(e) => 12 | e.code() << 8,
            Ev::SnapshotBuilt { node, job, .. } => 13 | u64::from(*node) << 8 | job.seq().0 << 16,
        }
    }
}

fn msg_code(m: &Message) -> u64 {
    match m {
        Message::ClientUpdate(_) => 0,
        Message::Prepare { .. } => 1,
        Message::PrepareOk { .. } => 2,
        Message::Proposal { .. } => 3,
        Message::Accept { .. } => 4,
        Message::Alive { .. } => 5,
        Message::ReconRequest { .. } => 6,
        Message::ReconReply { .. } => 7,
        Message::SnapshotChunk { .. } => 8,
        Message::Election(_) => 9,
        Message::SnapshotPull { .. } => 10,
    }
}

/// A heap key; the event itself lives in the queue's slab so heap moves stay small.
struct Entry {
    at: Time,
    seq: u64,
    slot: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we want the earliest (then first scheduled) event.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Pending events, earliest first; ties go to the event scheduled first.
#[derive(Default)]
pub(super) struct EventQueue {
    next_seq: u64,
    heap: BinaryHeap<Entry>,
    slab: Vec<Option<Ev>>,
    free: Vec<u32>,
}

impl EventQueue {
    /// Schedules `ev` at `at` (after every event already scheduled at `at`).
    pub(super) fn push(&mut self, at: Time, ev: Ev) {
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(ev);
                i
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Entry {
            at,
            seq: self.next_seq,
            slot,
        });
    }

    /// The time of the next event, if any.
    pub(super) fn next_time(&self) -> Option<Time> {
        self.heap.peek().map(|e| e.at)
    }

    /// Takes the next event off the queue.
    pub(super) fn pop(&mut self) -> Option<(Time, Ev)> {
        let e = self.heap.pop()?;
        let ev = self.slab[e.slot as usize]
            .take()
            .expect("a queued event's slot holds it");
        self.free.push(e.slot);
        Some((e.at, ev))
    }
}
