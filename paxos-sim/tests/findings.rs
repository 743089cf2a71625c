//! Seeds on which the simulator found a problem in paxos-core, kept as regression tests. Each
//! failed (`NoConvergence` within the Paxos-L1 bound of 60 s of virtual time after healing) before
//! the fix named with it; all of them are fixed. The traces are valid for the simulator version that
//! recorded them: once the core behaves differently the seed plays out differently, so the unit
//! tests in `paxos-core/src/tests.rs` pin each mechanism down as well.
//!
//! * Lagging server never joins a view change (2249/5, 95/7): a server of the stable majority far
//!   behind stayed `RegNonLeader`, catching up by reconciliation, while the others were in leader
//!   election. Every reconciled slot it executed called the election's `handle_progress`, which
//!   reset PSB's progress timer and cleared `peer_suspects`, so it never voted for the new view.
//!   Fixed: only executing a slot ordered by a quorum of accepts in the installed view is progress.
//! * Slow catch-up (20590/5): `reconcile_if_behind` rotated to the next peer after every request,
//!   including isolated or crashed peers whose announced aru stayed high, so every other chunk
//!   waited `recon_timeout`. Fixed: it keeps asking the peer that answers (at once when the answer
//!   moved the aru) and skips peers whose requests timed out until they are heard from again.
//! * Stale view membership (21295/5): a non-leader of an old view, with no pending work, cut off
//!   while the others installed a newer view, never joined it after healing: the PSB strategy
//!   ignored `VcProof` outside leader election, its progress timer was idle without work, and
//!   nobody suspected the healthy new view. Fixed: a regular server joins the view a `VcProof`
//!   names when it is above its own.

use paxos_sim::{FaultProfile, Simulation};
use std::time::Duration;

fn check(nodes: usize, seed: u64) {
    check_with(Simulation::new(nodes, seed).faults(FaultProfile::Heavy));
}

fn check_with(sim: Simulation) {
    let r = sim.run();
    assert!(r.ok(), "{:?}\nreplay: {}", r.violations, r.replay);
}

#[test]
fn five_nodes_heavy_seed_2249_converges() {
    check(5, 2249);
}

#[test]
fn seven_nodes_heavy_seed_95_converges() {
    check(7, 95);
}

#[test]
fn five_nodes_heavy_seed_21295_converges() {
    check_with(
        Simulation::new(5, 21295)
            .faults(FaultProfile::Heavy)
            .clients(10)
            .duration(Duration::from_secs(10)),
    );
}

#[test]
fn five_nodes_heavy_seed_20590_converges() {
    check_with(
        Simulation::new(5, 20590)
            .faults(FaultProfile::Heavy)
            .clients(10)
            .duration(Duration::from_secs(10)),
    );
}
