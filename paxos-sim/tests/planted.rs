//! The simulator catches every bug planted in paxos-core within a bounded number of seeds, and
//! with the oracle meant for it: each hunt asserts the kind of the first violation, so a check that
//! stopped working cannot hide behind another one that happens to fire later.
//!
//! Run with `cargo test -p paxos-sim --features planted-bugs --test planted`.
//! (`MislabelledAccept` needs several inputs per round: it is hunted with the scheduling modes
//! that produce them, below, and by the crafted scenario in the crate's `oracles` unit tests.
//! One input per round never finds it: 0 of 2000 seeds at N = 3 and at N = 5.)
#![cfg(feature = "planted-bugs")]

use paxos_core::{Durability, PsbConfig};
use paxos_sim::{
    planted_bug_name, psb_election, FaultMix, FaultProfile, NodeFaults, PartitionKind, PlantedBug,
    ScheduleMode, Simulation, ViolationKind,
};
use std::time::Duration;

const MAX_SEEDS: u64 = 200;

/// Runs seeds until one fails; the first violation must be of one of the `expected` kinds.
/// Returns the first failing seed and how many seeds it took.
fn hunt(bug: PlantedBug, base: Simulation, expected: &[ViolationKind]) -> (u64, u64) {
    hunt_within(bug, base, expected, MAX_SEEDS)
}

/// [`hunt`] over the seeds `0..max_seeds`.
fn hunt_within(
    bug: PlantedBug,
    base: Simulation,
    expected: &[ViolationKind],
    max_seeds: u64,
) -> (u64, u64) {
    for (i, seed) in (0..max_seeds).enumerate() {
        let r = base.clone().seed(seed).planted_bug(Some(bug)).run();
        if let Some(v) = r.violations.first() {
            println!(
                "{}: caught by seed {seed} after {} seeds: {v}\n  replay: {}",
                planted_bug_name(bug),
                i + 1,
                r.replay
            );
            assert!(
                expected.contains(&v.kind),
                "{}: seed {seed} was caught by {:?}, not by the oracle meant for it ({expected:?}): \
                 {v}\n  replay: {}",
                planted_bug_name(bug),
                v.kind,
                r.replay
            );
            return (seed, i as u64 + 1);
        }
    }
    panic!(
        "{} survived {max_seeds} seeds: the simulator has no teeth for it",
        planted_bug_name(bug)
    );
}

/// Crashes (often of the leader) with slow disks, so that writes are lost.
fn crashes_slow_disk() -> FaultMix {
    let mut mix = FaultMix::none();
    mix.crashes = true;
    mix.slow_disk = true;
    mix.fault_interval = Duration::from_millis(150);
    mix
}

/// Frequent view changes: a short progress timer and partitions aimed at the leader.
fn churn() -> (FaultMix, paxos_sim::ElectionFactory) {
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
    (mix, election)
}

#[test]
fn skip_prepare_is_caught() {
    // A leader that proposes without PrepareOks overwrites values chosen in earlier views: the
    // ghost sees the second majority form. Needs view changes while values are accepted. Without
    // the Prepare round trip a leader also proposes before its own promise of the view is
    // durable; crashing, it loses the promise, leads the same view again and binds a second
    // value to a slot it proposed before: the ghost's ProposalConflict, which fires first at
    // seed 9 since a leader keeps one clock entry in flight at a time (the traces changed).
    hunt(
        PlantedBug::SkipPrepare,
        Simulation::new(3, 0).faults(FaultProfile::Heavy),
        &[ViolationKind::ChosenTwice, ViolationKind::ProposalConflict],
    );
}

#[test]
fn send_before_durable_is_caught() {
    // Messages leave before the batch they depend on is durable: the durability oracle sees the
    // first one (a Prepare whose promise is not yet on disk), no crash needed.
    hunt(
        PlantedBug::SendBeforeDurable,
        Simulation::new(3, 0)
            .fault_mix(crashes_slow_disk())
            .durability(Durability::Sync),
        &[ViolationKind::UnjustifiedMessage],
    );
}

#[test]
fn accept_lower_view_is_caught() {
    // Needs proposals of a deposed leader that arrive after a new view is installed (and made
    // durable): the durable accept breaks the durable promise.
    let (mix, election) = churn();
    hunt(
        PlantedBug::AcceptLowerView,
        Simulation::new(3, 0)
            .fault_mix(mix)
            .clients(6)
            .durability(Durability::Sync)
            .election(election, None),
        &[ViolationKind::BrokenPromise],
    );
}

#[test]
fn execute_duplicate_is_caught() {
    // Needs the same update ordered twice: client retries across leader changes, duplication.
    hunt(
        PlantedBug::ExecuteDuplicate,
        Simulation::new(3, 0).faults(FaultProfile::Heavy),
        &[ViolationKind::ExactlyOnce],
    );
}

#[test]
fn self_accept_before_durable_is_caught() {
    // A server that counts its own accept before it is durable orders a value that only a
    // minority durably accepted: the ghost has no majority for it when the ordered update is
    // written, before any crash makes the difference visible to clients.
    hunt(
        PlantedBug::SelfAcceptBeforeDurable,
        Simulation::new(3, 0)
            .fault_mix(crashes_slow_disk())
            .durability(Durability::Sync),
        &[ViolationKind::UnchosenOrdered],
    );
}

#[test]
fn minority_quorum_is_caught() {
    // Quorums of ⌊N/2⌋: a leader of 3 orders on its own accept; the ghost counts a true majority.
    hunt(
        PlantedBug::MinorityQuorum,
        Simulation::new(3, 0).faults(FaultProfile::Light),
        &[ViolationKind::UnchosenOrdered],
    );
}

#[test]
fn prepare_ok_omits_accepted_is_caught() {
    // Needs a view change while a follower holds an accepted, unordered slot: the PrepareOk
    // without it is not justified by the follower's durable accepts.
    let (mix, election) = churn();
    hunt(
        PlantedBug::PrepareOkOmitsAccepted,
        Simulation::new(3, 0)
            .fault_mix(mix)
            .durability(Durability::Sync)
            .election(election, None),
        &[ViolationKind::UnjustifiedMessage],
    );
}

#[test]
fn snapshot_drops_client_table_is_caught() {
    // Needs a state transfer (a lagging server, frequent snapshots, no retained history) and a
    // later retry of an update the snapshot covers: the server applies it again. Since issue #13
    // the snapshot oracle usually sees it first: the server's next snapshot at a slot another
    // server also snapshotted lacks the table entries, so the two images differ.
    hunt(
        PlantedBug::SnapshotDropsClientTable,
        Simulation::new(3, 0)
            .faults(FaultProfile::Heavy)
            .snapshot_interval(Some(5)),
        &[
            ViolationKind::SnapshotDivergence,
            ViolationKind::ExactlyOnce,
        ],
    );
}

#[test]
fn snapshot_job_not_frozen_is_caught() {
    // Snapshots built off the loop (drawn per seed) while the replica executes on: the image
    // labelled with the snapshot point holds later state. Another server's snapshot at that slot,
    // or a restart from it, gives it away.
    hunt(
        PlantedBug::SnapshotJobNotFrozen,
        Simulation::new(3, 0)
            .faults(FaultProfile::Heavy)
            .snapshot_interval(Some(5)),
        &[
            ViolationKind::SnapshotDivergence,
            ViolationKind::Digest,
            ViolationKind::ExactlyOnce,
        ],
    );
}

/// Data lists cut into many parts: 64 clients keep a 256-slot window busy, PrepareOks are
/// limited to 1 KiB (a dozen updates a part), and views churn.
fn prepare_ok_parts_setup() -> Simulation {
    let (mix, election) = churn();
    Simulation::new(3, 0)
        .fault_mix(mix)
        .clients(64)
        .election(election, None)
        .tune(|c| {
            c.max_message_bytes = 1024;
            c.window = 256;
            c.accept_window = 512;
        })
}

#[test]
fn prepare_ok_counts_first_part_is_caught() {
    // A leader that counts a server at its first part misses the accepted proposals in the
    // later ones.
    hunt(
        PlantedBug::PrepareOkCountsFirstPart,
        prepare_ok_parts_setup(),
        &[
            ViolationKind::ChosenTwice,
            ViolationKind::UnchosenOrdered,
            ViolationKind::Agreement,
            ViolationKind::UnjustifiedMessage,
        ],
    );
}

#[test]
fn prepare_ok_parts_setup_is_clean_without_the_bug() {
    // The catch above is the bug's, not the setup's.
    let base = prepare_ok_parts_setup();
    for seed in 0..40 {
        let r = base.clone().seed(seed).run();
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
    }
}

/// The process faults and scheduling that give a follower a round with a Proposal of one view and
/// the message installing a later one: pauses (a backlog of a second or more), `Sync` (so the
/// durability oracle judges every Accept), heavy network faults for view changes.
fn backlogs(nodes: usize, mode: ScheduleMode) -> Simulation {
    Simulation::new(nodes, 0)
        .schedule(mode)
        .node_faults(NodeFaults::everything())
        .durability(Durability::Sync)
        .faults(FaultProfile::Heavy)
}

#[test]
fn mislabelled_accept_is_caught_when_a_backlog_is_handled_in_one_round() {
    // The resumed follower accepts the old view's Proposal and installs the new view in one
    // round; the old stamping at flush sends Accept(new view) for a slot whose durable accepted
    // proposal is of the old view: the durability oracle sees it leave.
    // Measured: first catch at seed 1 (2 seeds); 40 of 300 seeds caught.
    hunt_within(
        PlantedBug::MislabelledAccept,
        backlogs(5, ScheduleMode::Backlog),
        &[ViolationKind::UnjustifiedMessage],
        20,
    );
}

#[test]
fn mislabelled_accept_is_caught_with_k_inputs_per_round() {
    // Measured: N = 3, first catch at seed 16 (17 seeds); 12 of 300 seeds caught.
    hunt_within(
        PlantedBug::MislabelledAccept,
        backlogs(3, ScheduleMode::K),
        &[ViolationKind::UnjustifiedMessage],
        60,
    );
}

#[test]
fn mislabelled_accept_is_caught_by_the_default_sweep() {
    // Everything drawn per seed (mode, process faults, durability, profile `all`). Measured:
    // N = 3, first catch at seed 41 (mode k, 42 seeds); 4 of 2000 seeds caught. With streamed
    // state transfer and staggered snapshots (issue #13) the first catch moved to seed 129,
    // with shared-disk stalls (every server's writes slow at once) to seed 764 (3 of 2000
    // seeds caught). Without `Sync` the Accept names a (view, slot) nobody proposed.
    hunt_within(
        PlantedBug::MislabelledAccept,
        Simulation::new(3, 0),
        &[
            ViolationKind::UnjustifiedMessage,
            ViolationKind::AcceptUnproposed,
        ],
        1000,
    );
}

#[test]
fn session_expires_by_local_clock_is_caught() {
    // Each replica expiring sessions by its own clock (which runs at its own rate, jumps, and
    // reaches a slot at its own time) refuses updates another replica applied: the session
    // rules' reference model over the canonical order disagrees with some verdict.
    hunt(
        PlantedBug::SessionExpiresByLocalClock,
        Simulation::new(3, 0).sessions(true),
        &[ViolationKind::ExactlyOnce],
    );
}

#[test]
fn expired_session_reopens_is_caught() {
    // An update of a dropped session applied instead of refused: the reference model says
    // Expired (and a late copy of an executed update would be applied twice).
    hunt(
        PlantedBug::ExpiredSessionReopens,
        Simulation::new(3, 0).sessions(true),
        &[ViolationKind::ExactlyOnce],
    );
}
