//! Real-process fault tests: server processes on loopback under a concurrent client workload,
//! with SIGKILL + restart (the leader included), SIGSTOP/SIGCONT pauses and a full-cluster power
//! cut. Every operation is recorded with invoke and complete times; the history of every key must
//! be linearizable and the replicas must converge to the same state.
//!
//! Bounded: each scenario runs for a fixed number of seconds with a fixed number of clients.

mod common;

use common::*;
use paxos_node::cluster::{ClusterOptions, LocalCluster};
use paxos_node::config::ElectionSection;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn options(servers: usize) -> ClusterOptions {
    let mut o = ClusterOptions {
        servers,
        ..ClusterOptions::default()
    };
    o.election = ElectionSection {
        strategy: "psb".into(),
        timeout_ms: 400,
        heartbeat_ms: 40,
    };
    o
}

async fn kills_and_pauses(servers: usize, seconds: u64) {
    let mut cluster = LocalCluster::create(binary(), &options(servers), None).unwrap();
    cluster.start_all().unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let history: History = Arc::default();
    let tasks = shared_clients(&cluster, 2 * servers, start, until, &history);
    let (mut kills, mut pauses, mut leader_kills) = (0, 0, 0);
    let mut step = 0u64;
    let minority = (servers - 1) / 2;
    while Instant::now() + Duration::from_secs(2) < until {
        step += 1;
        if step % 2 == 1 {
            // Kill the leader on odd steps, a random other server otherwise.
            let victims: Vec<usize> = if step % 4 == 1 {
                match cluster.wait_for_leader(Duration::from_secs(5)).await {
                    Ok(l) => {
                        leader_kills += 1;
                        vec![l]
                    }
                    Err(_) => vec![step as usize % servers],
                }
            } else {
                (0..minority)
                    .map(|k| (step as usize + k) % servers)
                    .collect()
            };
            for &v in &victims {
                cluster.kill(v).unwrap();
                kills += 1;
            }
            tokio::time::sleep(Duration::from_millis(1200)).await;
            for &v in &victims {
                cluster.start(v).unwrap();
            }
        } else {
            let v = step as usize % servers;
            cluster.signal(v, true).unwrap();
            pauses += 1;
            tokio::time::sleep(Duration::from_millis(900)).await;
            cluster.signal(v, false).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let mut ops = 0;
    for t in tasks {
        ops += t.await.unwrap();
    }
    final_reads(&cluster, start, &history).await;
    let (aru, _) = cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let checked = check(&history);
    eprintln!(
        "{servers} servers: {kills} kills ({leader_kills} of the leader), {pauses} pauses, {ops} client operations, {checked} checked, final aru {aru}"
    );
    assert!(ops > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_survive_kills_and_pauses() {
    kills_and_pauses(3, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_servers_survive_kills_and_pauses() {
    kills_and_pauses(5, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_loses_no_acknowledged_write() {
    let mut cluster = LocalCluster::create(binary(), &options(3), None).unwrap();
    cluster.start_all().unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let start = Instant::now();
    let history: History = Arc::default();
    let until = start + Duration::from_secs(6);
    let tasks = shared_clients(&cluster, 6, start, until, &history);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Power cut: every process dies at once, mid-workload.
    for i in 0..cluster.len() {
        cluster.kill(i).unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    cluster.start_all().unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    final_reads(&cluster, start, &history).await;
    let checked = check(&history);
    eprintln!("power cut: {checked} operations checked");
}

/// Servers in separate network namespaces; the leader is cut off from the others (clients still
/// reach it), then one link is cut in a triangle, then everything heals. Only a majority side makes
/// progress; the history stays linearizable and the replicas converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_between_namespaces() {
    if !paxos_node::cluster::namespaces_available() {
        // Creating namespaces needs root and iproute2; scripts/test installs iproute2 and CI runs
        // as root, so this skip only happens on a developer's unprivileged machine.
        eprintln!("SKIP: network namespaces need root and `ip`");
        return;
    }
    let servers = 3;
    let mut o = options(servers);
    o.namespaces = true;
    let mut cluster = LocalCluster::create(binary(), &o, None).unwrap();
    cluster.start_all().unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let start = Instant::now();
    let until = start + Duration::from_secs(16);
    let history: History = Arc::default();
    let tasks = shared_clients(&cluster, 2 * servers, start, until, &history);
    let mut partitions = 0;
    let mut step = 0usize;
    while Instant::now() + Duration::from_secs(3) < until {
        step += 1;
        if step % 2 == 1 {
            // Isolate the leader: the majority must elect another one and continue.
            let l = cluster
                .wait_for_leader(Duration::from_secs(5))
                .await
                .unwrap_or(step % servers);
            cluster.isolate(l).unwrap();
        } else {
            // Cut one link: every server still reaches a majority through someone.
            cluster
                .partition(step % servers, (step + 1) % servers)
                .unwrap();
        }
        partitions += 1;
        tokio::time::sleep(Duration::from_millis(2000)).await;
        cluster.heal().unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let mut ops = 0;
    for t in tasks {
        ops += t.await.unwrap();
    }
    final_reads(&cluster, start, &history).await;
    let (aru, _) = cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let checked = check(&history);
    eprintln!(
        "namespaces: {partitions} partitions, {ops} client operations, {checked} checked, final aru {aru}"
    );
    assert!(partitions >= 3 && ops > 0);
}

/// A server down for longer than the others keep history comes back without manual steps: it
/// recovers from its WAL, learns that the slots it misses were compacted away, installs a snapshot
/// from a peer, and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_absent_server_rejoins_by_snapshot_transfer() {
    let mut o = options(3);
    o.protocol.snapshot_interval = 500;
    o.protocol.history_retention = 200;
    let mut cluster = LocalCluster::create(binary(), &o, None).unwrap();
    cluster.start_all().unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let absent = (leader + 1) % 3;
    cluster.kill(absent).unwrap();
    let start = Instant::now();
    let history: History = Arc::default();
    let mut servers = cluster.client_addrs();
    servers.remove(absent);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            tokio::spawn(client_loop(
                i,
                servers.clone(),
                start,
                start + Duration::from_secs(6),
                history.clone(),
            ))
        })
        .collect();
    let mut ops = 0;
    for t in tasks {
        ops += t.await.unwrap();
    }
    let before = cluster.status(leader).await.unwrap();
    assert!(
        before.aru > 2_000,
        "enough updates to compact well past the absent server"
    );
    cluster.start(absent).unwrap();
    let (aru, _) = cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let back = cluster.status(absent).await.unwrap();
    assert!(
        back.snapshots_installed >= 1,
        "caught up by state transfer: {back:?}"
    );
    final_reads(&cluster, start, &history).await;
    let checked = check(&history);
    eprintln!(
        "rejoin: {ops} operations while away, aru {aru}, {} snapshots installed, {checked} checked",
        back.snapshots_installed
    );
}
