//! Each strategy drives real paxos-core replicas over the in-memory FIFO network: it elects a
//! leader, orders updates, and re-elects after the leader crashes (issue #5).

use paxos_core::{NodeId, ServerState, Time};
use paxos_election::memnet::{MemCluster, MemConfig};
use paxos_election::{
    run_scenario, scenario, ClusterDriver, ElectionConfig, RunOptions, ScenarioParams, Strategy,
};
use std::time::Duration;

fn config() -> ElectionConfig {
    ElectionConfig::uniform(Duration::from_millis(300))
}

fn cluster(n: usize, s: Strategy) -> MemCluster {
    let clients: Vec<NodeId> = (0..n as u32).map(NodeId).collect();
    MemCluster::new(n, s, config(), &clients, MemConfig::default())
}

#[test]
fn every_strategy_elects_orders_and_reelects_after_leader_crash() {
    for s in Strategy::ALL {
        let mut c = cluster(5, s);
        c.run_for(Duration::from_secs(3));
        let leader = c.leader().unwrap_or_else(|| panic!("{s}: no leader"));
        let done = c.completed();
        assert!(done > 50, "{s}: only {done} updates completed");
        // Exactly one regular leader among the live servers.
        let leaders = (0..5)
            .filter(|i| {
                c.replica(*i)
                    .is_some_and(|r| r.status().state == ServerState::RegLeader)
            })
            .count();
        assert_eq!(leaders, 1, "{s}");

        c.apply(paxos_election::Action::Crash(leader));
        // PSB's progress timer doubles at each preinstall: give it a few timer values.
        c.run_for(Duration::from_secs(8));
        let new_leader = c
            .leader()
            .unwrap_or_else(|| panic!("{s}: no leader after crash"));
        assert_ne!(new_leader, leader, "{s}");
        let before = c.completed();
        c.run_for(Duration::from_secs(1));
        assert!(
            c.completed() > before + 20,
            "{s}: no progress after re-election"
        );

        // The crashed server recovers and catches up.
        c.apply(paxos_election::Action::Restart(leader));
        c.run_for(Duration::from_secs(5));
        assert!(c.leader().is_some(), "{s}: no leader after recovery");
        let r = c.replica(leader.index()).unwrap();
        assert_ne!(
            r.status().state,
            ServerState::LeaderElection,
            "{s}: recovered server stuck"
        );
        let before = c.completed();
        c.run_for(Duration::from_secs(1));
        assert!(
            c.completed() > before + 20,
            "{s}: no progress after recovery"
        );
    }
}

#[test]
fn every_strategy_runs_the_stable_scenario_through_the_experiment_loop() {
    let p = ScenarioParams {
        duration: Duration::from_secs(6),
        ..ScenarioParams::default()
    };
    let sc = scenario::scenario("stable", &p).unwrap();
    for s in Strategy::ALL {
        let mut c = MemCluster::for_scenario(&sc, s, config(), MemConfig::default());
        let r = run_scenario(&mut c, &sc, &RunOptions::default());
        assert!(r.metrics.time_to_stable.is_some(), "{s}: {:?}", r.metrics);
        assert_eq!(r.metrics.leader_changes, 0, "{s}: {:?}", r.metrics);
        assert!(r.metrics.ordering_fraction > 0.5, "{s}: {:?}", r.metrics);
        assert_eq!(r.samples.last().unwrap().at, Time::ZERO + p.duration);
    }
}

#[test]
fn isolated_old_leader_steps_down_into_the_new_view_without_a_prepare() {
    // The core demotes an old leader only when a Prepare reaches it, and a leader of an installed
    // view no longer sends Prepare. With BLE, the isolated leader keeps believing in itself (it is
    // not QC, so nothing changes) while the others elect a new one; after healing it learns the
    // higher ballot, and the follower rule installs the view the new leader announces in the
    // core's Alive.
    let mut c = cluster(5, Strategy::QuorumBallot);
    c.run_for(Duration::from_secs(2));
    let old = c.leader().expect("leader");
    for j in 0..5u32 {
        if j != old.0 {
            c.apply(paxos_election::Action::Cut(old, NodeId(j)));
        }
    }
    c.run_for(Duration::from_secs(3));
    let new = c.leader().expect("new leader");
    assert_ne!(new, old);
    assert_eq!(
        c.replica(old.index()).unwrap().status().state,
        ServerState::RegLeader,
        "the isolated old leader still leads its dead view"
    );
    c.apply(paxos_election::Action::HealAll);
    c.run_for(Duration::from_secs(2));
    let s = c.replica(old.index()).unwrap().status();
    assert_eq!(s.state, ServerState::RegNonLeader);
    assert_eq!(s.leader, Some(new));
    assert_eq!(c.leader(), Some(new), "no disruption of the new leader");
}
