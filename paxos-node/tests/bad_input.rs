//! Bad input from outside: garbage and oversized frames on the client port, a client that never
//! reads its replies, garbage datagrams on the peer ports, and wrong configuration files. Each is
//! refused or dropped and counted; the cluster keeps serving.

mod common;

use bytes::Bytes;
use paxos_node::client::Client;
use paxos_node::config::NodeFile;
use paxos_node::kv::KvResult;
use paxos_node::node::NodeHandle;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn cluster(dir: &std::path::Path, n: u32) -> (Vec<NodeFile>, Vec<NodeHandle>) {
    common::in_process::quic_cluster(dir, n, Default::default()).await
}

async fn some_puts(addrs: &[SocketAddr], tag: &str) {
    let mut c = Client::new(addrs.to_vec());
    c.op_timeout = Duration::from_secs(20);
    for i in 0..20 {
        let r = c
            .put(Bytes::from(format!("{tag}{i}")), Bytes::from("v"))
            .await
            .unwrap();
        assert_eq!(r, KvResult::Done);
    }
}

/// Reads until the server closes the connection (or 5 s pass).
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused_and_counted_and_the_cluster_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (files, handles) = cluster(dir.path(), 3).await;
    let addrs: Vec<SocketAddr> = files[0].members.iter().map(|m| m.client).collect();
    some_puts(&addrs, "before").await;

    // Garbage on the client port: a frame that does not decode.
    let mut s = TcpStream::connect(addrs[0]).await.unwrap();
    s.write_all(&[16, 0, 0, 0]).await.unwrap();
    s.write_all(&[0xde; 16]).await.unwrap();
    assert!(closed_by_server(&mut s).await, "malformed frame closes");

    // An oversized frame header: refused before any allocation.
    let mut s = TcpStream::connect(addrs[0]).await.unwrap();
    s.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    assert!(closed_by_server(&mut s).await, "oversized frame closes");
    assert!(handles[0].metrics.bad_client_frames.load(Ordering::Relaxed) >= 2);

    // A client that sends many requests and never reads a reply.
    let mut hog = TcpStream::connect(addrs[1]).await.unwrap();
    let status = {
        let mut f = Vec::new();
        paxos_node::protocol::encode_frame_into(
            &mut f,
            &paxos_node::protocol::ClientRequest::Status,
        )
        .unwrap();
        f
    };
    let flood: Vec<u8> = status
        .iter()
        .copied()
        .cycle()
        .take(status.len() * 300_000)
        .collect();
    let wrote = tokio::time::timeout(Duration::from_secs(10), hog.write_all(&flood)).await;
    assert!(wrote.is_ok(), "the server keeps reading requests");
    // Garbage datagrams on every peer (QUIC) port.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for m in &files[0].members {
        for i in 0..2000u32 {
            let len = 1 + (i as usize * 37) % 1400;
            let pkt: Vec<u8> = (0..len).map(|k| (k as u32 * 31 + i) as u8).collect();
            let _ = junk.send_to(&pkt, m.peer);
        }
    }

    // Still serving, and every replica agrees.
    some_puts(&addrs, "after").await;
    let mut dropped = 0;
    for _ in 0..150 {
        dropped = handles[1].metrics.replies_dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dropped > 0,
        "replies to the client that never reads are dropped, not buffered without bound"
    );
    drop(hog);
    for h in handles {
        h.shutdown().await.unwrap();
    }
}

#[test]
fn wrong_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_paxos-node");
    let run = |text: &str| {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new(bin)
            .args(["run", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let good = r#"
id = 0
[[members]]
id = 0
peer = "127.0.0.1:17000"
client = "127.0.0.1:17100"
[storage]
backend = "wal"
dir = "/nonexistent-parent/x"
[transport]
kind = "quic"
keys_dir = "/nonexistent-keys"
"#;
    let e = run(&good.replace("id = 0\n[[", "id = 5\n[["));
    assert!(e.contains("`id`"), "{e}");
    let e = run(&good.replace("backend = \"wal\"", "backend = \"floppy\""));
    assert!(e.contains("floppy"), "{e}");
    let e = run("this is = not toml [");
    assert!(e.contains("bad.toml"), "{e}");
    let e = run(&good.replace(
        "[transport]",
        "[election]\nstrategy = \"dictator\"\n[transport]",
    ));
    assert!(e.contains("election.strategy"), "{e}");
    let missing = std::process::Command::new(bin)
        .args(["run", "--config", "/nonexistent/node.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/node.toml"));
}
