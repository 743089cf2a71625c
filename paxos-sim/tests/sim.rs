//! Simulator tests: determinism, a small sweep with coverage, named scenarios, bench and CLI.

use paxos_core::{Durability, NodeId};
use paxos_sim::{scenarios, sweep, Bench, FaultProfile, ScriptStep, Simulation, ViolationKind};
use std::time::Duration;

#[test]
fn same_seed_gives_same_trace_hash() {
    for nodes in [3, 5] {
        for seed in [1, 7, 23] {
            let sim = Simulation::new(nodes, seed).faults(FaultProfile::All);
            let a = sim.run();
            let b = sim.run();
            assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} nodes {nodes}");
            assert_eq!(a.events, b.events);
            assert_eq!(a.counters, b.counters);
            assert_eq!(a.leader_changes, b.leader_changes);
            assert!(a.events > 1000);
        }
    }
    let x = Simulation::new(3, 1).run().trace_hash;
    let y = Simulation::new(3, 2).run().trace_hash;
    assert_ne!(x, y, "different seeds should give different traces");
}

#[test]
fn sweep_three_and_five_nodes_has_no_violations_and_full_coverage() {
    let mut total = paxos_sim::Counters::default();
    for nodes in [3, 5] {
        let base = Simulation::new(nodes, 0).faults(FaultProfile::All);
        let report = sweep(&base, 0..100, 2, |_| {});
        for f in &report.failures {
            eprintln!(
                "seed {} failed: {}\n  replay: {}",
                f.seed, f.violation, f.replay
            );
        }
        assert_eq!(report.violations, 0, "{}", report.summary_line());
        assert_eq!(report.seeds, 100);
        // Sweeps are deterministic too, whatever the thread count.
        let again = sweep(&base, 0..10, 1, |_| {});
        let first10 = sweep(&base, 0..10, 2, |_| {});
        assert_eq!(again.trace_hash, first10.trace_hash);
        total.add(&report.counters);
    }
    // "Sometimes" assertions: every fault type and protocol path was exercised somewhere.
    let cover = paxos_sim::SweepReport {
        counters: total,
        ..Default::default()
    };
    assert!(
        cover.never_exercised().is_empty(),
        "never exercised: {:?}",
        cover.never_exercised()
    );
}

#[test]
fn light_and_heavy_profiles_on_seven_nodes() {
    for profile in [FaultProfile::Light, FaultProfile::Heavy] {
        let base = Simulation::new(7, 0).faults(profile);
        let report = sweep(&base, 0..20, 2, |_| {});
        assert_eq!(report.violations, 0, "{:?}", report.failures);
    }
}

fn scripted(nodes: usize, seed: u64, steps: Vec<ScriptStep>) -> paxos_sim::RunReport {
    // Sessions off: the drawn session bounds can be tighter than the scripted outages (a
    // 150 ms expiry with all servers down), which starves clients by design; the sweep covers
    // sessions under faults.
    let r = Simulation::new(nodes, seed)
        .durability(Durability::Sync)
        .clients(2 * nodes)
        .sessions(false)
        .script(steps)
        .run();
    assert!(r.ok(), "{:?}\nreplay: {}", r.violations, r.replay);
    assert!(r.converged_at.is_some());
    r
}

#[test]
fn scenario_leader_crash() {
    for seed in 0..5 {
        let r = scripted(3, seed, scenarios::leader_crash());
        assert_eq!(r.counters.crashes, 1);
        assert!(r.leaderless > Duration::ZERO);
        assert!(r.counters.view_changes >= 2, "{:?}", r.leader_changes);
        // Progress resumed while the old leader was down.
        let first = r.leader_changes[0].leader;
        assert!(r.leader_changes.iter().any(|c| c.leader != first));
    }
}

#[test]
fn scenario_partition_of_the_leader() {
    for seed in 0..5 {
        let r = scripted(5, seed, scenarios::leader_partition());
        assert!(r.counters.view_changes >= 2, "{:?}", r.leader_changes);
        assert!(r.counters.partitions >= 1);
    }
}

#[test]
fn scenario_all_nodes_restart() {
    for seed in 0..5 {
        let r = scripted(3, seed, scenarios::all_restart());
        assert_eq!(r.counters.crashes, 6);
        assert!(
            r.counters.updates_completed > 0,
            "seed {seed}: {:?}",
            r.counters
        );
    }
}

#[test]
fn every_named_scenario_on_every_size() {
    for (name, steps) in scenarios::all() {
        for nodes in [3, 5, 7] {
            let r = scripted(nodes, 11, steps.clone());
            assert!(r.converged_at.is_some(), "{name} on {nodes}");
        }
    }
}

#[test]
fn bench_mode_is_clean() {
    let r = Bench {
        updates: 50_000,
        clients: 1000,
        ..Bench::default()
    }
    .run();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert!(r.ordered >= 50_000);
    // Every slot is executed by a majority at least (the run stops as soon as enough are ordered).
    assert!(r.executions >= r.ordered * 2);
    let r = Bench {
        updates: 20_000,
        durability: Durability::Async,
        ..Bench::default()
    }
    .run();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

#[test]
fn liveness_failure_is_reported() {
    // With a zero liveness bound nothing can complete after healing: the simulator must say so.
    let r = Simulation::new(3, 3)
        .faults(FaultProfile::None)
        .clients(3)
        .liveness_bound(Duration::ZERO)
        .run();
    assert_eq!(
        r.violations.first().map(|v| v.kind),
        Some(ViolationKind::NoConvergence)
    );
    assert!(r.replay.contains("--seed 3"));
}

#[test]
fn cli_prints_summary_line_and_exit_code() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paxos-sim"))
        .args(["--seeds", "4", "--nodes", "3", "--faults", "light"])
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("seeds: 4, events: ") && last.ends_with(", violations: 0"),
        "{last}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paxos-sim"))
        .args(["sweep", "--seeds", "2", "--nodes", "5"])
        .output()
        .expect("binary runs");
    assert!(out.status.success());
}

#[test]
fn coverage_check_notices_missing_fault_types() {
    let base = Simulation::new(3, 0).faults(FaultProfile::None);
    let report = sweep(&base, 0..3, 1, |_| {});
    assert_eq!(report.violations, 0);
    let missing = report.never_exercised();
    for name in [
        "crashes",
        "partitions",
        "lost_writes",
        "messages_duplicated",
    ] {
        assert!(
            missing.contains(&name),
            "{name} should be reported: {missing:?}"
        );
    }
}

/// An election strategy that never elects anyone and panics after one virtual second.
struct Bomb;

impl paxos_core::LeaderElection for Bomb {
    fn name(&self) -> &'static str {
        "bomb"
    }
    fn handle_start(&mut self, _now: paxos_core::Time, _ctx: &paxos_core::ElectionContext) {}
    fn handle_tick(&mut self, now: paxos_core::Time, _ctx: &paxos_core::ElectionContext) {
        assert!(now < paxos_core::Time::from_millis(1000), "bomb went off");
    }
    fn handle_message(
        &mut self,
        _now: paxos_core::Time,
        _from: NodeId,
        _payload: &[u8],
        _ctx: &paxos_core::ElectionContext,
    ) -> Result<(), paxos_core::CodecError> {
        Ok(())
    }
    fn poll_action(&mut self) -> Option<paxos_core::ElectionAction> {
        None
    }
    fn poll_message(&mut self) -> Option<(paxos_core::Destination, bytes::Bytes)> {
        None
    }
    fn leader(&self, _ctx: &paxos_core::ElectionContext) -> Option<NodeId> {
        None
    }
}

#[test]
fn a_panic_is_reported_as_a_violation_with_replay() {
    let factory: paxos_sim::ElectionFactory = std::sync::Arc::new(|_, _| Box::new(Bomb));
    let r = Simulation::new(3, 5)
        .election(factory, Some("--election bomb".into()))
        .run();
    let v = r.violations.first().expect("the panic is reported");
    assert_eq!(v.kind, ViolationKind::Panic);
    assert!(v.detail.contains("bomb went off"), "{v}");
    assert!(r.replay.contains("--election bomb"));
}
