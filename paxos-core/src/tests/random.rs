//! Small clusters under randomized faults, checked for agreement and completion.

use super::*;

/// A tiny deterministic PRNG for the randomized test below (the real simulator is `paxos-sim`).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Random loss, reordering, crashes (losing unsynced writes) and restarts; agreement must hold
/// throughout and every client must finish once the faults stop.
#[allow(clippy::needless_range_loop)]
fn random_run(seed: u64, n: usize) {
    let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut net = Net::new(n, Durability::Sync);
    net.auto_persist = false;
    let clients = 2 * n as u64;
    let mut ts = vec![0u64; clients as usize];
    let mut acked = vec![0u64; clients as usize];
    let mut next_submit = vec![0u64; clients as usize];
    let mut down_since: Vec<Option<u64>> = vec![None; n];
    for step in 0..30_000u64 {
        let faults = step < 2500;
        if !faults && (0..clients as usize).all(|c| acked[c] == 30) {
            break;
        }
        net.now = net.now + Duration::from_millis(1);
        // Deliver a random subset of the queue, possibly reordered or dropped.
        let k = net.queue.len().min(1 + rng.below(20) as usize);
        for _ in 0..k {
            let i = if faults {
                rng.below(net.queue.len() as u64) as usize
            } else {
                0
            };
            let (from, to, m) = net.queue.remove(i).unwrap();
            if faults && rng.chance(5) {
                continue;
            }
            if net.nodes[to.index()].is_some() {
                let now = net.now;
                net.node(to.index()).handle_message(now, from, m);
                net.drain(to.index());
            }
        }
        for i in 0..n {
            if net.nodes[i].is_none() {
                continue;
            }
            // Complete some writes.
            if !net.unsynced[i].is_empty() && rng.chance(60) {
                let b = net.unsynced[i].remove(0);
                net.durable[i].apply(&b);
                let now = net.now;
                net.node(i).handle_persisted(now, b.id);
                net.drain(i);
            }
            if step % 5 == 0 {
                let now = net.now;
                net.node(i).handle_tick(now);
                net.drain(i);
            }
        }
        // Crash and restart (never more than a minority down).
        if faults && rng.chance(1) {
            let i = rng.below(n as u64) as usize;
            let down = down_since.iter().filter(|d| d.is_some()).count();
            if net.nodes[i].is_some() && down < (n - 1) / 2 {
                // A random prefix of the unsynced writes survives.
                let keep = rng.below(net.unsynced[i].len() as u64 + 1) as usize;
                for b in net.unsynced[i].drain(..).take(keep) {
                    net.durable[i].apply(&b);
                }
                net.crash(i);
                down_since[i] = Some(step);
            }
        }
        for i in 0..n {
            if let Some(s) = down_since[i] {
                if step > s + 200 || !faults {
                    net.restart(i, Durability::Sync);
                    down_since[i] = None;
                }
            }
        }
        // Clients: one outstanding update each, retried on timeout.
        for c in 0..clients as usize {
            let server = c % n;
            for r in net.replies[server].drain(..).collect::<Vec<_>>() {
                let cc = r.client_id.0 as usize;
                acked[cc] = acked[cc].max(r.timestamp.0);
            }
            if net.nodes[server].is_none() {
                continue;
            }
            if acked[c] == ts[c] && ts[c] < 30 {
                ts[c] += 1;
                next_submit[c] = 0;
            }
            if acked[c] < ts[c] && step >= next_submit[c] {
                next_submit[c] = step + 300;
                net.submit(server, c as u64, ts[c]);
            }
        }
        net.assert_agreement();
    }
    for c in 0..clients as usize {
        assert_eq!(acked[c], ts[c], "seed {seed}: client {c} never finished");
    }
    if std::env::var("PAXOS_TEST_VERBOSE").is_ok() {
        let views: Vec<View> = net
            .nodes
            .iter()
            .flatten()
            .map(|r| r.status().last_installed)
            .collect();
        eprintln!(
            "seed {seed}: acked {:?} views {views:?} recon {:?}",
            acked,
            net.nodes
                .iter()
                .flatten()
                .map(|r| r.metrics().recon_requests)
                .collect::<Vec<_>>()
        );
    }
    // Exactly once: no update id applied twice.
    for r in net.nodes.iter().flatten() {
        let mut ids: Vec<UpdateId> = r.state_machine().applied.iter().map(|x| x.1).collect();
        let len = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), len, "seed {seed}: an update executed twice");
    }
}

#[test]
fn randomized_faults_keep_agreement_and_finish_three_servers() {
    let seeds: u64 = std::env::var("PAXOS_TEST_SEEDS").map_or(25, |s| s.parse().unwrap_or(25));
    for seed in 0..seeds {
        random_run(seed, 3);
    }
}

#[test]
fn randomized_faults_keep_agreement_and_finish_five_servers() {
    let seeds: u64 = std::env::var("PAXOS_TEST_SEEDS").map_or(15, |s| s.parse().unwrap_or(15));
    for seed in 100..100 + seeds {
        random_run(seed, 5);
    }
}
