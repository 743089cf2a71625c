//! Real processes: a restarted follower must not disturb a healthy leader (issue #11 item 9).
//!
//! What a user saw before the fix: 3 servers (PSB, QUIC, WAL, sync), follower killed, 10 small
//! values written, follower restarted: within 2 s the cluster moved from view 1 to view 2 and the
//! restarted server led it; with large values written while it was away, the healthy servers
//! installed several new views while it caught up. These tests replay both stories with the
//! default election settings and require that the leader and its view never change.
//!
//! Bounded: about 15 s each.

use bytes::Bytes;
use paxos_node::client::Client;
use paxos_node::cluster::{ClusterOptions, LocalCluster};
use paxos_node::protocol::NodeStatus;
use std::path::Path;
use std::time::{Duration, Instant};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_paxos-node"))
}

/// Every server's status; `None` for one that does not answer.
async fn statuses(cluster: &LocalCluster) -> Vec<Option<NodeStatus>> {
    let mut out = Vec::new();
    for i in 0..cluster.len() {
        out.push(cluster.status(i).await);
    }
    out
}

/// Kills a follower, writes `values` values of `size` bytes through the others, restarts the
/// follower and watches for `watch`: the healthy servers must stay in the leader's view, and the
/// restarted one must rejoin it and catch up.
async fn restart_follower(mut o: ClusterOptions, values: usize, size: usize, watch: Duration) {
    o.servers = 3;
    let mut cluster = LocalCluster::create(binary(), &o, None).unwrap();
    cluster.start_all().unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let view = cluster.status(leader).await.unwrap().view;
    let follower = (leader + 1) % 3;
    cluster.kill(follower).unwrap();

    let mut others = cluster.client_addrs();
    others.remove(follower);
    let mut client = Client::new(others);
    client.op_timeout = Duration::from_secs(10);
    for k in 0..values {
        let value = Bytes::from(vec![b'a' + (k % 26) as u8; size]);
        client.put(format!("k{k}"), value).await.unwrap();
    }
    let target = cluster.status(leader).await.unwrap().aru;

    cluster.start(follower).unwrap();
    let restarted = Instant::now();
    let mut caught_up = None;
    while restarted.elapsed() < watch {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let all = statuses(&cluster).await;
        for (i, s) in all.iter().enumerate() {
            let Some(s) = s else {
                assert_ne!(i, leader, "the leader stopped answering");
                continue;
            };
            if i != follower || s.role != "leader-election" {
                assert_eq!(
                    (s.view, s.leader),
                    (view, Some(leader as u32)),
                    "{:?} after restarting n{follower}: n{i} left view {view} of n{leader}: {all:#?}",
                    restarted.elapsed()
                );
            }
        }
        if let Some(s) = &all[follower] {
            if caught_up.is_none() && s.role == "follower" && s.aru >= target {
                caught_up = Some(restarted.elapsed());
            }
        }
    }
    let caught_up = caught_up.expect("the restarted follower rejoined and caught up");
    // It serves again: a write through it alone commits, and every replica converges.
    let mut through = Client::new(vec![cluster.client_addrs()[follower]]);
    through.op_timeout = Duration::from_secs(10);
    through
        .put("after", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let (aru, _) = cluster
        .wait_converged(Duration::from_secs(30))
        .await
        .unwrap();
    eprintln!(
        "rejoin: n{follower} caught up to aru {target} in {caught_up:?}; view {view} of n{leader} \
         held for {watch:?}; converged at aru {aru}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_after_small_writes_leaves_the_leader_alone() {
    restart_follower(ClusterOptions::default(), 10, 16, Duration::from_secs(8)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catching_up_by_snapshot_leaves_the_leader_alone() {
    let mut o = ClusterOptions::default();
    o.protocol.snapshot_interval = 50;
    o.protocol.history_retention = 20;
    // About 6 MB while it is away: state transfer, but inside today's 16 MiB message limit
    // (larger states are issue #13).
    restart_follower(o, 60, 100 * 1024, Duration::from_secs(10)).await;
}
