//! The network: delivery, delays, loss, duplication, codec round trips, partitions and cut links
//! (testing.md (a), *Faults*: "loss, dup/replay, unbounded reorder, delay; … partitions (isolate
//! one, majority/minority, asymmetric one-way)"; a flapping split stands in for link clogging).
//!
//! A sent message is one [`Ev::Deliver`] per destination (two when duplicated), each after its own
//! delay: the seed's base delay plus jitter, sometimes a reordering delay of up to 20 ms and
//! sometimes a long delay. Loss is decided when the message is sent; a partition is checked when
//! it arrives, so a partition that heals in between lets it through. Which partitions exist and
//! when they start or end is decided by the faults (`chaos.rs`, the liveness phase, a driver);
//! this module keeps them and answers "is `f -> t` blocked".

use super::{all_mask, Ev, World};
use crate::checker::codec_round_trip;
use paxos_core::{Destination, Message, NodeId};
use rand::Rng;
use std::time::Duration;

/// One partition: bit `t` of `masks[f]` blocks `f -> t` while it is active.
struct Partition {
    id: u64,
    masks: Vec<u64>,
    active: bool,
}

/// The links between servers: partitions, links cut by a driver, and the current loss rate.
pub(super) struct Network {
    partitions: Vec<Partition>,
    next_partition: u64,
    /// Links cut by a driver, per sender: bit `t` of `cuts[f]` blocks `f -> t`.
    cuts: Vec<u64>,
    /// The cuts and every active partition, per sender (recomputed on every change).
    blocked: Vec<u64>,
    /// Probability that a sent message is lost (the mix's during the fault phase, then 0).
    pub(super) loss: f64,
}

impl Network {
    /// A network of `n` servers with nothing blocked.
    pub(super) fn new(n: usize, loss: f64) -> Network {
        Network {
            partitions: Vec::new(),
            next_partition: 1,
            cuts: vec![0; n],
            blocked: vec![0; n],
            loss,
        }
    }

    /// Whether a message from `f` to `t` is blocked now.
    fn blocks(&self, f: usize, t: usize) -> bool {
        self.blocked[f] & (1 << t) != 0
    }

    fn recompute_blocked(&mut self) {
        self.blocked.copy_from_slice(&self.cuts);
        for p in &self.partitions {
            if p.active {
                for (b, m) in self.blocked.iter_mut().zip(&p.masks) {
                    *b |= m;
                }
            }
        }
    }

    /// Adds an active partition; returns its id.
    fn add(&mut self, masks: Vec<u64>) -> u64 {
        let id = self.next_partition;
        self.next_partition += 1;
        self.partitions.push(Partition {
            id,
            masks,
            active: true,
        });
        self.recompute_blocked();
        id
    }

    /// Removes every partition (driver cuts stay).
    pub(super) fn clear_partitions(&mut self) {
        self.partitions.clear();
        self.recompute_blocked();
    }

    /// Removes every partition and every driver cut.
    pub(super) fn heal_all(&mut self) {
        self.cuts.iter_mut().for_each(|c| *c = 0);
        self.clear_partitions();
    }

    /// Cuts (`cut`) or heals the link between `a` and `b`, both ways.
    pub(super) fn set_link(&mut self, a: usize, b: usize, cut: bool) {
        if cut {
            self.cuts[a] |= 1 << b;
            self.cuts[b] |= 1 << a;
        } else {
            self.cuts[a] &= !(1 << b);
            self.cuts[b] &= !(1 << a);
        }
        self.recompute_blocked();
    }

    /// Replaces the masks of the partition added last, if any.
    pub(super) fn reshape_last(&mut self, masks: Vec<u64>) {
        if let Some(p) = self.partitions.last_mut() {
            p.masks = masks;
        }
        self.recompute_blocked();
    }
}

impl World {
    /// Adds a partition (counted as a fault) that heals after `lasts`, or never.
    pub(super) fn add_partition(&mut self, masks: Vec<u64>, lasts: Option<Duration>) -> u64 {
        let id = self.net.add(masks);
        self.counters.partitions += 1;
        if let Some(d) = lasts {
            self.schedule(self.now + d, Ev::PartitionEnd { id });
        }
        id
    }

    /// [`Ev::PartitionEnd`]: partition `id` heals (if nothing removed it before).
    pub(super) fn end_partition(&mut self, id: u64) {
        let net = &mut self.net;
        let before = net.partitions.len();
        net.partitions.retain(|p| p.id != id);
        if net.partitions.len() != before {
            net.recompute_blocked();
            self.log(1, || format!("partition {id} healed"));
        }
    }

    /// [`Ev::Flap`]: flapping partition `id` toggles, `left` more times before it is removed.
    pub(super) fn flap(&mut self, id: u64, left: u32) {
        let Some(p) = self.net.partitions.iter_mut().find(|p| p.id == id) else {
            return;
        };
        if left == 0 {
            self.net.partitions.retain(|p| p.id != id);
        } else {
            p.active = !p.active;
            if p.active {
                self.counters.partitions += 1;
            }
            let gap = Duration::from_millis(self.rng.gen_range(20..300));
            self.schedule(self.now + gap, Ev::Flap { id, left: left - 1 });
        }
        self.net.recompute_blocked();
    }

    /// Masks that cut server `x` off from every other server, both ways.
    pub(super) fn isolate_masks(&self, x: usize) -> Vec<u64> {
        let n = self.p.n;
        (0..n)
            .map(|f| {
                if f == x {
                    all_mask(n) & !(1 << x)
                } else {
                    1 << x
                }
            })
            .collect()
    }

    /// A random proper, non-empty subset of the servers (one side of a split).
    pub(super) fn random_split(&mut self) -> u64 {
        let n = self.p.n;
        let all = all_mask(n);
        loop {
            let s = self.rng.gen_range(0..=all);
            if s != 0 && s != all {
                return s;
            }
        }
    }

    /// Masks that split the servers into `side` and the rest, both ways.
    pub(super) fn split_masks(&self, side: u64) -> Vec<u64> {
        let all = all_mask(self.p.n);
        (0..self.p.n)
            .map(|f| {
                if side & (1 << f) != 0 {
                    all & !side
                } else {
                    side
                }
            })
            .collect()
    }

    /// [`Ev::Deliver`]: `msg` reaches `t` unless `f -> t` is blocked or `t` is down.
    pub(super) fn deliver(&mut self, f: usize, t: usize, msg: Message) {
        if self.net.blocks(f, t) {
            self.counters.messages_dropped += 1;
            if self.p.verbose >= 3 {
                println!(
                    "{} n{f} -> n{t} {} DROPPED (partition)",
                    self.now,
                    msg.kind()
                );
            }
            return;
        }
        if self.nodes[t].replica.is_some() {
            let from = NodeId(f as u32);
            self.input(t, super::Input::Message { from, msg });
        } else {
            self.counters.messages_dropped += 1;
        }
    }

    /// Sends a message a replica emitted: sometimes through a codec round trip first (which must
    /// give the message back unchanged), then to each destination.
    pub(super) fn send(&mut self, from: usize, to: Destination, msg: Message) {
        let msg = if self.p.mix.codec_sample > 0.0 && self.rng.gen_bool(self.p.mix.codec_sample) {
            self.counters.codec_roundtrips += 1;
            match codec_round_trip(from, msg) {
                Ok(back) => back,
                Err((kind, detail)) => {
                    self.violation(kind, detail);
                    return;
                }
            }
        } else {
            msg
        };
        match to {
            Destination::Node(j) => {
                if j.index() < self.p.n && j.index() != from {
                    self.send_one(from, j.index(), msg);
                }
            }
            Destination::All => {
                let n = self.p.n;
                let last = if from == n - 1 {
                    n.wrapping_sub(2)
                } else {
                    n - 1
                };
                for j in 0..n {
                    if j == from {
                        continue;
                    }
                    if j == last {
                        self.send_one(from, j, msg);
                        break;
                    }
                    self.send_one(from, j, msg.clone());
                }
            }
        }
    }

    /// One message's network delay.
    fn delay(&mut self) -> Duration {
        if self.p.mode.is_bench() {
            return self.p.base_delay;
        }
        let mut d = self.p.base_delay;
        if !self.p.jitter.is_zero() {
            d += Duration::from_nanos(self.rng.gen_range(0..=self.p.jitter.as_nanos() as u64));
        }
        let m = &self.p.mix;
        if m.reorder > 0.0 && self.rng.gen_bool(m.reorder) {
            d += Duration::from_micros(self.rng.gen_range(0..20_000));
        }
        if m.long_delay > 0.0 && self.rng.gen_bool(m.long_delay) {
            let max = m.long_delay_max.as_micros().max(1) as u64;
            d += Duration::from_micros(self.rng.gen_range(0..max));
        }
        d
    }

    /// Sends `msg` from `from` to `to`: lost, or delivered once or twice after random delays.
    fn send_one(&mut self, from: usize, to: usize, msg: Message) {
        self.counters.messages_sent += 1;
        if self.net.loss > 0.0 && self.rng.gen_bool(self.net.loss) {
            self.counters.messages_dropped += 1;
            return;
        }
        let d = self.delay();
        if self.p.mix.duplicate > 0.0 && self.rng.gen_bool(self.p.mix.duplicate) {
            self.counters.messages_duplicated += 1;
            let d2 = self.delay();
            self.schedule(
                self.now + d2,
                Ev::Deliver {
                    from: from as u8,
                    to: to as u8,
                    msg: msg.clone(),
                },
            );
        }
        self.schedule(
            self.now + d,
            Ev::Deliver {
                from: from as u8,
                to: to as u8,
                msg,
            },
        );
    }
}
