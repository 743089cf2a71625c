//! Multi-host test: network namespaces joined by veth pairs to a bridge (itself in a namespace
//! of its own, so the host's network is not touched), with the UDP multicast and QUIC
//! transports running between them via the `pxt-node` helper. Needs root and `ip`; otherwise it
//! prints why it skips. Every name starts with `pxt` plus a random tag, and everything is
//! deleted at the end (also when the test fails).
#![allow(missing_docs)]

use paxos_core::NodeId;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NODES: u32 = 3;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces of one run; dropping it deletes them (and with them the veths and bridge).
struct Topology {
    switch: String,
    nodes: Vec<String>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.switch)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn addr(i: u32) -> String {
    format!("10.77.0.{}", i + 1)
}

fn setup(tag: &str) -> Result<Topology, String> {
    let mut topo = Topology {
        switch: format!("{tag}-sw"),
        nodes: Vec::new(),
    };
    let sw = topo.switch.clone();
    ip(&["netns", "add", &sw])?;
    ip(&["-n", &sw, "link", "set", "lo", "up"])?;
    ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
    // Without an IGMP querier a snooping bridge may stop forwarding the group: flood instead.
    let _ = ip(&[
        "-n",
        &sw,
        "link",
        "set",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    ip(&["-n", &sw, "link", "set", "br0", "up"])?;
    for i in 0..NODES {
        let ns = format!("{tag}-n{i}");
        ip(&["netns", "add", &ns])?;
        topo.nodes.push(ns.clone());
        let v = format!("{tag}v{i}");
        let b = format!("{tag}b{i}");
        ip(&[
            "link", "add", &v, "netns", &ns, "type", "veth", "peer", "name", &b, "netns", &sw,
        ])?;
        ip(&["-n", &sw, "link", "set", &b, "master", "br0"])?;
        ip(&["-n", &sw, "link", "set", &b, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", addr(i)),
            "dev",
            &v,
        ])?;
        ip(&["-n", &ns, "link", "set", &v, "up"])?;
        ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", &v])?;
    }
    Ok(topo)
}

/// Runs one helper per namespace and checks they all succeed.
fn run(topo: &Topology, kind: &str, keys: &std::path::Path, port: u16, extra: &[&str]) {
    let peers: Vec<String> = (0..NODES)
        .map(|i| format!("{i}={}:{port}", addr(i)))
        .collect();
    let peers = peers.join(",");
    let group = format!("239.77.0.1:{}", port + 1);
    let started = Instant::now();
    let children: Vec<_> = (0..NODES)
        .map(|i| {
            let mut args = vec![
                "netns".to_string(),
                "exec".into(),
                topo.nodes[i as usize].clone(),
                env!("CARGO_BIN_EXE_pxt-node").into(),
                kind.into(),
                i.to_string(),
                peers.clone(),
                group.clone(),
                addr(i),
                keys.display().to_string(),
                "30".into(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            Command::new("ip")
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn helper")
        })
        .collect();
    let mut failures = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("helper output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("[{kind} node {i}] {}{}", stdout.trim(), stderr.trim());
        if !out.status.success() || !stdout.contains("OK") {
            failures.push(format!("{kind} node {i}: {stdout} {stderr}"));
        }
    }
    println!("{kind}: {:?}", started.elapsed());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn udp_multicast_and_quic_across_namespaces() {
    if !is_root() {
        eprintln!("SKIP netns test: not root (creating network namespaces needs CAP_NET_ADMIN)");
        return;
    }
    if ip(&["netns", "list"]).is_err() {
        eprintln!("SKIP netns test: `ip netns` is unavailable (install iproute2)");
        return;
    }
    let tag = format!("pxt{:04x}", rand::random::<u16>());
    let topo = match setup(&tag) {
        Ok(t) => t,
        Err(e) => panic!("namespace setup failed: {e}"),
    };
    let keys = tempfile::tempdir().unwrap();
    paxos_transport::keygen::keygen(keys.path(), &(0..NODES).map(NodeId).collect::<Vec<_>>())
        .unwrap();

    run(&topo, "udp", keys.path(), 7000, &["1472"]);
    run(&topo, "quic", keys.path(), 7100, &[]);

    // A lossy link (10% on node 0's veth) when netem is available: retransmission (the helper
    // keeps sending) still gets every message type through.
    let lossy = Command::new("ip")
        .args(["netns", "exec", &topo.nodes[0], "tc", "qdisc", "add", "dev"])
        .arg(format!("{tag}v0"))
        .args(["root", "netem", "loss", "10%"])
        .output();
    match lossy {
        Ok(o) if o.status.success() => run(&topo, "udp", keys.path(), 7200, &["1472"]),
        Ok(o) => eprintln!(
            "netem unavailable ({}): lossy namespace run skipped (the lossy-link tests in \
             conformance.rs inject loss in the transport instead)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("tc unavailable ({e}): lossy namespace run skipped"),
    }
    let t = Instant::now();
    drop(topo);
    assert!(t.elapsed() < Duration::from_secs(10));
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&tag),
        "cleaned up"
    );
}
