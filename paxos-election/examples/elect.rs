//! Builds each strategy by name, runs a 5-server in-memory cluster with it, crashes the leader and
//! prints who leads before and after.
//!
//! `cargo run -p paxos-election --example elect -- [psb|highest-id|omega|ble ...]`

use paxos_core::NodeId;
use paxos_election::memnet::{MemCluster, MemConfig};
use paxos_election::{Action, ClusterDriver, ElectionConfig, Strategy};
use std::time::Duration;

fn main() {
    let names: Vec<String> = std::env::args().skip(1).collect();
    let strategies: Vec<Strategy> = if names.is_empty() {
        Strategy::ALL.to_vec()
    } else {
        names
            .iter()
            .map(|n| n.parse().unwrap_or_else(|e| panic!("{e}")))
            .collect()
    };
    let clients: Vec<NodeId> = (0..5).map(NodeId).collect();
    for s in strategies {
        let config = ElectionConfig::uniform(Duration::from_millis(500));
        let mut c = MemCluster::new(5, s, config, &clients, MemConfig::default());
        c.run_for(Duration::from_secs(3));
        let first = c.leader();
        let done = c.completed();
        if let Some(l) = first {
            c.apply(Action::Crash(l));
        }
        c.run_for(Duration::from_secs(5));
        println!(
            "{s:>10}: leader {:?}, {done} updates in 3 s; after crashing it: leader {:?}, {} more updates in 5 s",
            first.map(|l| l.0),
            c.leader().map(|l| l.0),
            c.completed() - done
        );
    }
}
