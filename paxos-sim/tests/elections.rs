//! The election experiment on the simulator, bounded for CI: every strategy in the scenarios of
//! paxos-election's library (shortened), a few seeds each. Asserts only what the protocol
//! guarantees: safety always (agreement, validity, exactly-once, durability, digests, checked by
//! the simulator as it runs), and that once the last fault is over and a majority is connected,
//! every strategy ends with a working leader and the cluster orders updates again. No timing of
//! the election itself is asserted.

use paxos_core::Time;
use paxos_election::{
    run_scenario, scenario, ElectionConfig, RunOptions, Sample, Scenario, Strategy,
};
use paxos_sim::SimCluster;
use std::time::Duration;

/// The library, shortened: 3 s warm-up, 4 unstable periods of 2 s, 6 s partial partitions, and
/// runs that end 12 s after the last fault.
fn scenarios() -> Vec<Scenario> {
    let timeout = Duration::from_millis(500);
    let p = scenario::ScenarioParams {
        warmup: Duration::from_secs(3),
        period: Duration::from_secs(2),
        periods: 4,
        partition: Duration::from_secs(6),
        election_timeout: timeout,
        duration: Duration::from_secs(24),
    };
    scenario::library(&p)
}

fn last_fault(sc: &Scenario) -> Time {
    sc.faults.last().map_or(Time::ZERO, |f| f.at)
}

/// Whether the run ends converged: a leader view (a majority regular in a view, its leader
/// included) in the last sample, and updates executed during the last 2 s.
fn converged(samples: &[Sample]) -> Result<(), String> {
    let last = samples.last().ok_or("no samples")?;
    if last.leader_view().is_none() {
        return Err(format!("no leader view at the end: {:?}", last.views));
    }
    let window_start = last
        .at
        .saturating_since(Time::ZERO)
        .saturating_sub(Duration::from_secs(2));
    let before = samples
        .iter()
        .rev()
        .find(|s| s.at.saturating_since(Time::ZERO) <= window_start)
        .ok_or("run too short")?;
    if last.executed <= before.executed {
        return Err(format!(
            "nothing executed in the last 2 s (executed {} at the end)",
            last.executed
        ));
    }
    Ok(())
}

#[test]
fn every_strategy_is_safe_and_converges_after_the_faults() {
    let cfg = ElectionConfig::uniform(Duration::from_millis(500));
    let opts = RunOptions::default();
    let mut failures = vec![];
    let mut runs = 0;
    for sc in scenarios() {
        assert!(
            sc.duration
                .saturating_sub(last_fault(&sc).saturating_since(Time::ZERO))
                >= Duration::from_secs(10),
            "{}: too little time after the last fault",
            sc.name
        );
        for strategy in Strategy::ALL {
            for seed in [1, 2] {
                runs += 1;
                let mut cluster = SimCluster::new(strategy, &cfg, &sc, seed);
                let run = run_scenario(&mut cluster, &sc, &opts);
                if let Some(v) = cluster.violations().first() {
                    failures.push(format!("{} {strategy} seed {seed}: UNSAFE {v}", sc.name));
                    continue;
                }
                if let Err(e) = converged(&run.samples) {
                    failures.push(format!("{} {strategy} seed {seed}: {e}", sc.name));
                }
            }
        }
    }
    assert!(runs > 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let sc = scenarios()
        .into_iter()
        .find(|s| s.name == "partition-loop")
        .unwrap();
    let cfg = ElectionConfig::uniform(Duration::from_millis(500));
    let run = |seed| {
        let mut c = SimCluster::new(Strategy::Omega, &cfg, &sc, seed);
        let r = run_scenario(&mut c, &sc, &RunOptions::default());
        (r.samples, r.actions, c.events())
    };
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a.2, run(6).2, "another seed, another run");
    // The scenario's faults were executed, against the resolved servers.
    assert_eq!(a.1.len(), sc.faults.len());
}
