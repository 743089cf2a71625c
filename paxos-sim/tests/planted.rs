//! The simulator catches every bug planted in paxos-core within a bounded number of seeds.
//!
//! Run with `cargo test -p paxos-sim --features planted-bugs --test planted`.
#![cfg(feature = "planted-bugs")]

use paxos_core::{Durability, PsbConfig};
use paxos_sim::{
    planted_bug_name, psb_election, FaultMix, FaultProfile, PartitionKind, PlantedBug, Simulation,
};
use std::time::Duration;

const MAX_SEEDS: u64 = 200;

/// Runs seeds until one fails; returns the first failing seed and how many seeds it took.
fn hunt(bug: PlantedBug, base: Simulation) -> (u64, u64) {
    for (i, seed) in (0..MAX_SEEDS).enumerate() {
        let r = base.clone().seed(seed).planted_bug(Some(bug)).run();
        if let Some(v) = r.violations.first() {
            println!(
                "{}: caught by seed {seed} after {} seeds: {v}\n  replay: {}",
                planted_bug_name(bug),
                i + 1,
                r.replay
            );
            return (seed, i as u64 + 1);
        }
    }
    panic!(
        "{} survived {MAX_SEEDS} seeds: the simulator has no teeth for it",
        planted_bug_name(bug)
    );
}

#[test]
fn skip_prepare_is_caught() {
    // Needs view changes while values are accepted: crashes and partitions of the leader.
    hunt(
        PlantedBug::SkipPrepare,
        Simulation::new(3, 0).faults(FaultProfile::Heavy),
    );
}

#[test]
fn send_before_durable_is_caught() {
    // Needs crashes that lose written-but-unsynced promises, with slow disks.
    let mut mix = FaultMix::none();
    mix.crashes = true;
    mix.slow_disk = true;
    mix.fault_interval = Duration::from_millis(150);
    hunt(
        PlantedBug::SendBeforeDurable,
        Simulation::new(3, 0)
            .fault_mix(mix)
            .durability(Durability::Sync),
    );
}

#[test]
fn accept_lower_view_is_caught() {
    // Needs proposals of a deposed leader that arrive after a new view is installed: frequent view
    // changes (short progress timer, partitions aimed at the leader) and long message delays.
    let mut mix = FaultMix::none();
    mix.partitions = vec![PartitionKind::OneWay, PartitionKind::IsolateOne];
    mix.long_delay = 0.3;
    mix.long_delay_max = Duration::from_millis(800);
    mix.fault_interval = Duration::from_millis(300);
    let election = psb_election(PsbConfig {
        progress_timeout: Duration::from_millis(100),
        max_progress_timeout: Duration::from_secs(1),
        resend_interval: Duration::from_millis(30),
    });
    hunt(
        PlantedBug::AcceptLowerView,
        Simulation::new(3, 0)
            .fault_mix(mix)
            .clients(6)
            .election(election, None),
    );
}

#[test]
fn execute_duplicate_is_caught() {
    // Needs the same update ordered twice: client retries across leader changes, duplication.
    hunt(
        PlantedBug::ExecuteDuplicate,
        Simulation::new(3, 0).faults(FaultProfile::Heavy),
    );
}
