//! The client CLI as a script sees it: exit codes and fast failure when nothing listens.

use std::process::Command;

/// A port outside the ephemeral range (32768..61000) on which nothing listens.
const DEAD_PORTS: [u16; 3] = [17_931, 17_932, 17_933];

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_paxos-node"))
        .env("RUST_BACKTRACE", "1")
        .args(args)
        .output()
        .expect("run paxos-node")
}

fn servers() -> String {
    DEAD_PORTS
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn an_unreachable_cluster_exits_5_without_a_backtrace() {
    for op in [vec!["put", "k", "v"], vec!["get", "k"], vec!["status"]] {
        let s = servers();
        let mut args = vec!["client", "--servers", s.as_str()];
        args.extend(op.iter().copied());
        let out = cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{op:?}: {stderr}");
        assert!(stderr.contains("unreachable"), "{op:?}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{op:?}: {stderr}");
        assert!(!stderr.contains("Stack"), "{op:?}: {stderr}");
    }
}

#[test]
fn help_documents_the_exit_codes() {
    let out = cli(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "3  definite failure",
        "4  outcome unknown",
        "5  cluster unreachable",
    ] {
        assert!(text.contains(line), "{text}");
    }
}
