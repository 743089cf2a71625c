//! Scheduling modes, process faults and the stable-majority-set liveness phase (issue #11 item 2).

use paxos_sim::{sweep, FaultProfile, LivenessSet, NodeFaults, ScheduleMode, Simulation, Workload};

#[test]
fn every_mode_is_deterministic_and_clean() {
    for mode in ScheduleMode::ALL {
        for nodes in [3, 5] {
            let base = Simulation::new(nodes, 0).schedule(mode);
            let report = sweep(&base, 0..40, 2, |_| {});
            for f in &report.failures {
                eprintln!(
                    "{mode} seed {} failed: {}\n  replay: {}",
                    f.seed, f.violation, f.replay
                );
            }
            assert_eq!(report.violations, 0, "{mode} {}", report.summary_line());
            let a = base.clone().seed(7).run();
            let b = base.clone().seed(7).run();
            assert_eq!(a.trace_hash, b.trace_hash, "{mode} nodes {nodes}");
            assert_eq!(a.counters, b.counters);
            assert_eq!(a.schedule, mode);
        }
    }
}

#[test]
fn multi_input_rounds_happen_only_where_the_mode_makes_them() {
    let count = |mode: ScheduleMode, faults: NodeFaults| {
        let base = Simulation::new(3, 0)
            .schedule(mode)
            .node_faults(faults)
            .faults(FaultProfile::Light);
        sweep(&base, 0..10, 2, |_| {}).counters
    };
    // One input per round and nothing queued: the pre-inbox scheduling, no multi-input rounds.
    let one = count(ScheduleMode::One, NodeFaults::none());
    assert_eq!(one.multi_input_rounds, 0);
    assert_eq!(one.max_round, 0, "no inbox round ran at all");
    // One input per round after pauses: rounds from the inbox, still one input each.
    let paused = count(ScheduleMode::One, NodeFaults::everything());
    assert!(paused.pauses > 0);
    assert_eq!(paused.multi_input_rounds, 0);
    assert_eq!(paused.max_round, 1);
    for mode in [ScheduleMode::K, ScheduleMode::Backlog] {
        let c = count(mode, NodeFaults::everything());
        assert!(c.multi_input_rounds > 0, "{mode}: {c:?}");
        // A pause of a second or more queues hundreds of inputs.
        assert!(c.max_round >= 50, "{mode}: max round {}", c.max_round);
        assert!(
            c.clock_jumps > 0 && c.slow_disk_episodes > 0,
            "{mode}: {c:?}"
        );
    }
}

#[test]
fn drawn_sweeps_cover_every_mode_and_fault() {
    let base = Simulation::new(3, 0);
    let mut modes = [0u32; 3];
    let mut majority_sets = 0;
    let report = sweep(&base, 0..60, 2, |r| {
        modes[ScheduleMode::ALL
            .iter()
            .position(|m| *m == r.schedule)
            .unwrap()] += 1;
        majority_sets += u32::from(r.liveness_set == Some(LivenessSet::MajoritySet));
    });
    assert_eq!(report.violations, 0, "{:?}", report.failures);
    assert!(modes.iter().all(|&m| m > 0), "modes drawn: {modes:?}");
    assert!(majority_sets > 0);
    let c = &report.counters;
    assert!(
        c.pauses > 0 && c.clock_jumps > 0 && c.slow_disk_episodes > 0,
        "{c:?}"
    );
    assert_eq!(u64::from(majority_sets), c.majority_set_phases);
}

#[test]
fn stable_majority_set_keeps_outside_servers_up_and_sending() {
    // Every outside server is restarted and keeps sending into the set; PSB must still converge.
    let base = Simulation::new(5, 0)
        .liveness_set(LivenessSet::MajoritySet)
        .faults(FaultProfile::Heavy);
    let mut with_outside = 0;
    let report = sweep(&base, 0..40, 2, |r| {
        if r.stable_set.len() < r.nodes {
            with_outside += 1;
            assert_eq!(r.liveness_set, Some(LivenessSet::MajoritySet));
        }
    });
    assert_eq!(report.violations, 0, "{:?}", report.failures);
    assert!(with_outside > 0);
    assert_eq!(report.counters.majority_set_phases, with_outside);
}

#[test]
fn classic_option_fixes_everything_the_seed_would_draw() {
    let r = Simulation::new(3, 5).classic().run();
    assert_eq!(r.schedule, ScheduleMode::One);
    assert_eq!(r.node_faults, NodeFaults::none());
    assert_ne!(r.liveness_set, Some(LivenessSet::MajoritySet));
    assert!(r
        .replay
        .contains("--schedule one --node-faults off --liveness component"));
    assert!(r.replay.contains("--workload classic"));
    // The long workload has more clients and a longer fault phase than the classic one.
    let long = sweep(
        &Simulation::new(3, 0).workload(Workload::Long),
        0..20,
        2,
        |_| {},
    );
    let classic = sweep(
        &Simulation::new(3, 0).workload(Workload::Classic),
        0..20,
        2,
        |_| {},
    );
    assert!(long.counters.updates_completed > classic.counters.updates_completed);
}

#[test]
fn sweep_results_do_not_depend_on_the_thread_count() {
    let base = Simulation::new(3, 0);
    let run = |threads| {
        let mut seen = Vec::new();
        let r = sweep(&base, 5..29, threads, |r| seen.push((r.seed, r.trace_hash)));
        (seen, r.trace_hash, r.events, r.counters, r.violations)
    };
    let one = run(1);
    assert_eq!(one.0.len(), 24);
    assert!(one.0.windows(2).all(|w| w[0].0 + 1 == w[1].0), "seed order");
    for threads in [2, 3, 8] {
        assert_eq!(run(threads), one, "{threads} threads");
    }
}
