//! A view change whose PrepareOk carries a full window of 1 MiB values, on real processes
//! (issue #13, "bounded view change").
//!
//! The server that will lead the next view is paused (SIGSTOP) while a window's worth
//! (`protocol.window`, 256 by default; `PAXOS_WINDOW_VALUES` overrides it) of 1 MiB values is
//! written through the others. Then the leader is killed, a write is sent to the survivors (so
//! that PSB's progress timer runs) and the paused server resumed once the other has suspected
//! the dead leader: the next view (led by the resumed server) must be installed and every value
//! must read back whole. The figures printed include how much the survivor's PrepareOks carried:
//! on loopback the resumed server reconciles the window (one 1 MiB value per request) before it
//! prepares, so they are small here; large PrepareOks go in parts of at most the core's
//! `max_message_bytes` (core test `a_prepare_ok_of_a_full_window_of_1_mib_values_goes_in_parts`).
//! Bounded: one window of writes, every wait has a deadline.

mod common;

use bytes::Bytes;
use common::*;
use paxos_node::client::Client;
use paxos_node::cluster::ClusterOptions;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_change_with_a_full_window_of_1_mib_values_completes() {
    let values: u64 = std::env::var("PAXOS_WINDOW_VALUES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut o = ClusterOptions::default();
    o.protocol.window = values;
    let (mut cluster, leader, view) = started(&o, None).await;
    // PSB: view v is led by server v mod n.
    let next = ((view + 1) % 3) as usize;
    let other = 3 - leader - next;
    cluster.signal(next, true).unwrap();

    let mut servers = cluster.client_addrs();
    servers.remove(next);
    let writers = 8u64;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let mut c = Client::new(servers.clone());
            c.op_timeout = Duration::from_secs(30);
            tokio::spawn(async move {
                let mut n = w;
                while n < values {
                    let value = Bytes::from(vec![b'a' + (n % 26) as u8; MIB]);
                    c.put(format!("w{n}"), value).await.expect("writes succeed");
                    n += writers;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let target = cluster.status(other).await.unwrap().aru;
    let lagging = target - cluster.status(leader).await.map_or(0, |s| s.peer_aru[next]);

    let started = Instant::now();
    cluster.kill(leader).unwrap();
    // A write for the survivors: PSB's progress timer runs only while there is work, so
    // without one nobody would replace the dead leader. The paused server resumes once the
    // other has suspected it (its timer is 1 s), so the view change starts while the resumed
    // one is still far behind (it reconciles meanwhile; whatever it lacks, the PrepareOk brings).
    let mut survivors = cluster.client_addrs();
    survivors.remove(leader);
    let mut c = Client::new(survivors.clone());
    c.op_timeout = Duration::from_secs(60);
    let trigger = tokio::spawn(async move { c.put("after", Bytes::from_static(b"x")).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.signal(next, false).unwrap();
    let deadline = Duration::from_secs(90);
    let new_leader = loop {
        assert!(
            started.elapsed() < deadline,
            "no view after {view} within {deadline:?}: {:?} {:?}",
            cluster.status(next).await,
            cluster.status(other).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (Some(a), Some(b)) = (cluster.status(next).await, cluster.status(other).await) else {
            continue;
        };
        let regular = a.role != "leader-election" && b.role != "leader-election";
        if regular && a.view == b.view && a.view > view && a.leader == b.leader {
            break a.leader.unwrap() as usize;
        }
    };
    let took = started.elapsed();
    let sent = cluster.status(other).await.unwrap().prepare_ok_sent;
    let new_view = cluster.status(next).await.unwrap().view;

    trigger
        .await
        .unwrap()
        .expect("the write after the kill succeeds");
    // Every value reads back whole.
    let mut c = Client::new(survivors);
    c.op_timeout = Duration::from_secs(30);
    for n in 0..values {
        let got = c.get(format!("w{n}")).await.unwrap();
        let want = vec![b'a' + (n % 26) as u8; MIB];
        assert!(got.as_deref() == Some(&want[..]), "w{n} lost or damaged");
    }
    eprintln!(
        "full window: {values} values of 1 MiB, n{next} paused {lagging} slots behind; view \
         {view} -> {new_view} (leader n{new_leader}) in {took:.2?}; n{other}'s PrepareOks \
         carried {} MiB in {} parts; every value read back",
        sent.0 / MIB as u64,
        sent.1
    );
}
