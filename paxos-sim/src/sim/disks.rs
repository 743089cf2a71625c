//! Storage: each server's durable state and its disk, crashes that lose or tear what was not yet
//! synced, and restarts from what is durable (testing.md (a), *Faults*: "crash/restart where each
//! unsynced write is lost, kept or torn"; *Invariants* 5, durable monotonicity across restarts).
//!
//! A batch the core hands out ([`paxos_core::Replica::poll_persist`]) is written at once and
//! becomes durable after a random sync delay, in order (a slow disk or a slow-disk episode
//! stretches the delay); only then does the core hear `handle_persisted`. A crash drops the
//! replica and its unsynced batches, or with torn writes keeps a random prefix of them; the
//! restart builds a new replica from the durable state, which must hold exactly the durable
//! prefix of the log.

use super::{Ev, Input, World};
use crate::report::ViolationKind;
use crate::state_machine::SimStateMachine;
use paxos_core::{Durability, DurableState, NodeId, PersistBatch, Replica, Seq, Time};
use rand::Rng;
use std::collections::VecDeque;
use std::time::Duration;

/// One server's storage.
#[derive(Default)]
pub(super) struct Disk {
    /// What survives a crash.
    pub(super) durable: DurableState,
    /// Written but not yet synced, oldest first.
    unsynced: VecDeque<PersistBatch>,
    /// When the disk finishes the last queued sync (syncs complete in order).
    free_at: Time,
}

/// The highest slot through which `d`'s ordered log (above its snapshot) has no gap.
fn contiguous_prefix(d: &DurableState) -> Seq {
    let mut s = d.snapshot_seq();
    while d.ordered.contains_key(&s.next()) {
        s = s.next();
    }
    s
}

impl World {
    /// Creates (or re-creates after a crash) server `i` from its durable state.
    pub(super) fn boot(&mut self, i: usize) {
        let n = self.p.n;
        let mut config = self.p.config.clone();
        config.id = NodeId(i as u32);
        let local = self.local_now(i);
        let node = &mut self.nodes[i];
        if node.replica.is_some() {
            return;
        }
        let restart = node.gen > 0;
        if restart {
            node.disk.durable.incarnation += 1;
        }
        node.gen += 1;
        let election = (self.factory)(NodeId(i as u32), n);
        let durable = node.disk.durable.clone();
        let expect = contiguous_prefix(&durable);
        let snap = durable.snapshot_seq();
        match Replica::new(config, SimStateMachine::new(), election, durable, local) {
            Ok(r) => {
                let aru = r.election_context().local_aru;
                node.replica = Some(Box::new(r));
                node.disk.free_at = self.now;
                let executed = self.checker.pos[i];
                match self.checker.on_boot(i, aru, expect, snap) {
                    Err((kind, detail)) => self.violation(kind, detail),
                    Ok(()) if restart && aru.0 < executed => self.log(1, || {
                        format!("n{i} restarts at aru {aru}, below the slot {executed} it executed")
                    }),
                    Ok(()) => {}
                }
            }
            Err(e) => {
                self.violation(ViolationKind::Codec, format!("n{i} refused to start: {e}"));
                return;
            }
        }
        let gen = self.nodes[i].gen;
        let offset = Duration::from_nanos(self.rng.gen_range(0..self.p.tick.as_nanos() as u64));
        self.schedule(self.now + offset, Ev::Tick { node: i as u8, gen });
        self.dirty |= 1 << i;
        if restart {
            self.counters.restarts += 1;
            self.log(1, || format!("restart n{i}"));
        }
    }

    /// Crashes server `i` (with `Durability::Sync` only): each unsynced batch is lost, or, with
    /// torn writes, a prefix of them is kept. Returns whether it crashed (it was up).
    pub(super) fn crash(&mut self, i: usize) -> bool {
        if self.p.config.durability != Durability::Sync {
            return false;
        }
        let Some(r) = self.nodes[i].replica.take() else {
            return false;
        };
        Self::fold_metrics(&mut self.counters, r.metrics());
        drop(r);
        self.set_leader(i, false);
        self.dirty &= !(1 << i);
        self.sched_crash(i);
        self.counters.crashes += 1;
        let len = self.nodes[i].disk.unsynced.len();
        let keep = if self.p.mix.torn_writes && len > 0 {
            self.rng.gen_range(0..=len)
        } else {
            0
        };
        if keep < len {
            self.counters.lost_writes += 1;
            if keep > 0 {
                self.counters.torn_writes += 1;
            }
        }
        for _ in 0..keep {
            if let Some(b) = self.nodes[i].disk.unsynced.pop_front() {
                self.make_durable(i, &b);
            }
        }
        let node = &mut self.nodes[i];
        node.disk.unsynced.clear();
        node.gen += 1; // invalidates ticks and fsyncs in flight
        self.log(1, || {
            format!("crash n{i} (kept {keep} of {len} unsynced batches)")
        });
        true
    }

    /// Server `i` wrote batch `b`: it syncs after a random delay, after every earlier batch.
    pub(super) fn write(&mut self, i: usize, b: PersistBatch) {
        if let Err((kind, detail)) = self.checker.on_written(i, &b) {
            self.violation(kind, detail);
        }
        let delay = if self.p.mix.slow_disk {
            self.rng.gen_range(100_000..40_000_000)
        } else if self.p.mode.is_bench() {
            50_000
        } else {
            self.rng.gen_range(50_000..2_000_000)
        };
        let delay = self.disk_delay(i, delay);
        let node = &mut self.nodes[i];
        let at = (self.now + Duration::from_nanos(delay)).max(node.disk.free_at);
        node.disk.free_at = at;
        node.disk.unsynced.push_back(b);
        let gen = node.gen;
        self.schedule(at, Ev::Synced { node: i as u8, gen });
    }

    /// [`Ev::Synced`]: the oldest unsynced batch of server `i` reaches the disk (unless the
    /// server crashed since it was written: `gen` changed).
    pub(super) fn synced(&mut self, i: usize, gen: u32) {
        if self.nodes[i].gen != gen {
            return;
        }
        let Some(b) = self.nodes[i].disk.unsynced.pop_front() else {
            return;
        };
        self.make_durable(i, &b);
        if self.nodes[i].replica.is_some() {
            self.input(i, Input::Persisted(b.id));
        }
    }

    /// Batch `b` of server `i` is on disk: checked, then applied to its durable state.
    fn make_durable(&mut self, i: usize, b: &PersistBatch) {
        let node = &mut self.nodes[i];
        if let Err((kind, detail)) = self.checker.on_durable(i, b, &node.disk.durable) {
            self.violation(kind, detail);
            return;
        }
        node.disk.durable.apply(b);
        if let Err((kind, detail)) = self.checker.after_durable(i, &node.disk.durable) {
            self.violation(kind, detail);
            return;
        }
        self.counters.batches_synced += 1;
    }
}
