//! `/healthz` and `/readyz` of real server processes: a lone server of a 3-server cluster is alive
//! but not ready; once its peers run, every member becomes ready, and `/metrics` times what it
//! did (client updates, storage writes, the view change that made it ready).

mod common;

use bytes::Bytes;
use paxos_node::client::Client;
use paxos_node::cluster::{ClusterOptions, LocalCluster};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on `addr`: the status code and the body, or `None` while nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

/// Asks `path` until `want(code)` holds; panics with the last answer after a generous bound (a
/// guard against a hang, not a measured time).
async fn until(addr: SocketAddr, path: &str, want: impl Fn(u16) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        last = get(addr, path).await;
        if let Some((code, body)) = &last {
            if want(*code) {
                return (*code, body.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr}{path}: last answer {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_server_is_alive_but_not_ready_and_a_full_cluster_becomes_ready() {
    let o = ClusterOptions {
        metrics: true,
        ..ClusterOptions::default()
    };
    let mut cluster = LocalCluster::create(common::binary(), &o, None).unwrap();
    let metrics: Vec<SocketAddr> = cluster
        .files
        .iter()
        .map(|f| f.metrics_addr.expect("metrics on"))
        .collect();

    cluster.start(0).unwrap();
    let (_, body) = until(metrics[0], "/healthz", |c| c == 200).await;
    assert_eq!(body, "ok\n");
    let (code, body) = get(metrics[0], "/readyz").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("installed view"), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");

    cluster.start(1).unwrap();
    cluster.start(2).unwrap();
    for m in &metrics {
        let (_, body) = until(*m, "/readyz", |c| c == 200).await;
        assert_eq!(body, "ok\n");
    }
    let mut c = Client::new(cluster.client_addrs());
    c.op_timeout = Duration::from_secs(20);
    for i in 0..10 {
        c.put(Bytes::from(format!("k{i}")), Bytes::from("v"))
            .await
            .unwrap();
    }
    let mut sums = [0.0; 3];
    for m in &metrics {
        let (code, body) = get(*m, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(body.ends_with("# EOF\n"), "{body}");
        for (i, name) in [
            "paxos_client_update_seconds_count",
            "paxos_view_change_seconds_count",
            "paxos_storage_sync_seconds_count",
        ]
        .iter()
        .enumerate()
        {
            sums[i] += sample(&body, name);
        }
    }
    assert!(sums[0] >= 10.0, "client update latencies: {sums:?}");
    assert!(sums[1] >= 1.0, "view changes timed: {sums:?}");
    assert!(sums[2] >= 10.0, "storage writes timed: {sums:?}");
    let (code, _) = get(metrics[0], "/nothing").await.unwrap();
    assert_eq!(code, 404);
    let status = cluster.status(0).await.unwrap();
    assert!(
        status.role == "leader" || status.role == "follower",
        "{status:?}"
    );
}

/// The value of the sample `name{...}` in an exposition (0 when absent).
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}
