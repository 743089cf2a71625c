//! The `paxos-node` command as a script or an operator sees it: the client's exit codes and fast
//! failure when nothing listens, host names in `--servers`, the server's log lines, config paths,
//! and a restart on the same ports.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

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

/// A free port below the kernel's ephemeral range (no outgoing connection can be given it).
fn free_port() -> u16 {
    paxos_node::cluster::free_port().expect("a free port")
}

/// A one-server cluster's configuration in `dir` (keys generated in `dir/keys`), with the given
/// `keys_dir` spelling and storage section; returns the file's path and the client address.
fn one_server(dir: &Path, keys_dir: &str, storage: &str) -> (PathBuf, String) {
    let out = cli(&[
        "keygen",
        "--dir",
        dir.join("keys").to_str().unwrap(),
        "--nodes",
        "1",
        "--flat",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (peer, client) = (free_port(), free_port());
    let client = format!("127.0.0.1:{client}");
    let text = format!(
        "id = 0\n[[members]]\nid = 0\npeer = \"127.0.0.1:{peer}\"\nclient = \"{client}\"\n\
         [protocol]\ndurability = \"none\"\n{storage}\n\
         [transport]\nkind = \"quic\"\nkeys_dir = \"{keys_dir}\"\n"
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    (path, client)
}

/// `paxos-node run ARGS` started in `cwd` with stderr to a pipe, read until a line contains
/// "serving" (or the process ends): the process, its stderr and the lines read so far.
fn start_server(args: &[&str], cwd: &Path) -> (Child, BufReader<ChildStderr>, Vec<Vec<u8>>) {
    start_server_until(args, cwd, "serving")
}

/// [`start_server`], reading until a line contains `marker`.
fn start_server_until(
    args: &[&str],
    cwd: &Path,
    marker: &str,
) -> (Child, BufReader<ChildStderr>, Vec<Vec<u8>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paxos-node"))
        .arg("run")
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start paxos-node run");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        if stderr.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        let found = String::from_utf8_lossy(&line).contains(marker);
        lines.push(line);
        if found {
            break;
        }
    }
    (child, stderr, lines)
}

/// Stops a server with SIGTERM (a clean shutdown) and reads the rest of its stderr into `lines`.
fn stop_server(
    mut child: Child,
    mut stderr: BufReader<ChildStderr>,
    lines: &mut Vec<Vec<u8>>,
) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut rest = Vec::new();
    stderr.read_to_end(&mut rest).unwrap();
    lines.extend(rest.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec));
    child.wait().unwrap()
}

/// Runs `paxos-node run ARGS` in `cwd` until it logs "serving" (or ends), then stops it; returns
/// every stderr line and how it exited.
fn run_until_serving(args: &[&str], cwd: &Path) -> (Vec<Vec<u8>>, std::process::ExitStatus) {
    let (child, stderr, mut lines) = start_server(args, cwd);
    let status = stop_server(child, stderr, &mut lines);
    (lines, status)
}

#[test]
fn a_server_logs_serving_at_info_in_plain_text_on_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (config, client) = one_server(
        dir.path(),
        keys.to_str().unwrap(),
        "[storage]\nbackend = \"memory\"",
    );
    // A one-server cluster installs its view at once, after it logs "serving".
    let args = ["--config", config.to_str().unwrap()];
    let (child, stderr, mut lines) = start_server_until(&args, dir.path(), "view installed");
    stop_server(child, stderr, &mut lines);
    let text: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let serving = text.iter().position(|l| l.contains("serving"));
    assert!(serving.is_some_and(|i| i < 5), "{text:#?}");
    assert!(text[serving.unwrap()].contains(&client), "{text:#?}");
    assert!(text[serving.unwrap()].contains("INFO"), "{text:#?}");
    assert!(
        text.iter().any(|l| l.contains("view installed")),
        "{text:#?}"
    );
    assert!(lines.iter().all(|l| !l.contains(&0x1b)), "{text:#?}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (config, _) = one_server(
        dir.path(),
        keys.to_str().unwrap(),
        "[storage]\nbackend = \"memory\"",
    );
    let args = ["--config", config.to_str().unwrap(), "--log-format", "json"];
    let (lines, _) = run_until_serving(&args, dir.path());
    assert!(!lines.is_empty());
    let mut saw_serving = false;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
        saw_serving |= v["fields"]["message"] == "serving";
    }
    assert!(saw_serving, "{lines:?}");
}

#[test]
fn relative_paths_in_the_config_are_taken_from_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (config, _) = one_server(
        dir.path(),
        "keys",
        "[storage]\nbackend = \"wal\"\ndir = \"data\"",
    );
    let (lines, _) = run_until_serving(&["--config", config.to_str().unwrap()], elsewhere.path());
    let text = String::from_utf8_lossy(&lines.concat()).into_owned();
    assert!(text.contains("serving"), "{text}");
    assert!(dir.path().join("data").is_dir(), "{text}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn unreadable_keys_are_reported_with_their_field_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = one_server(
        dir.path(),
        "no-such-keys",
        "[storage]\nbackend = \"memory\"",
    );
    let (lines, status) = run_until_serving(&["--config", config.to_str().unwrap()], dir.path());
    let text = String::from_utf8_lossy(&lines.concat()).into_owned();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("transport.keys_dir"), "{text}");
    let path = dir.path().join("no-such-keys");
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(!text.contains("network"), "{text}");
}

#[test]
fn servers_may_be_given_by_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (config, client) = one_server(
        dir.path(),
        keys.to_str().unwrap(),
        "[storage]\nbackend = \"memory\"",
    );
    let (child, stderr, mut lines) =
        start_server(&["--config", config.to_str().unwrap()], dir.path());
    let port = client.rsplit_once(':').unwrap().1;
    let by_name = format!("localhost:{port}");
    let out = cli(&["client", "--servers", &by_name, "status"]);
    stop_server(child, stderr, &mut lines);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains(&by_name), "{stdout}");
    assert!(!stdout.contains("unreachable"), "{stdout}");
}

#[test]
fn an_unresolvable_or_malformed_server_is_a_usage_error() {
    let out = cli(&[
        "client",
        "--servers",
        "no-such-host.invalid:7100",
        "get",
        "k",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot resolve no-such-host.invalid:7100"),
        "{stderr}"
    );
    for bad in ["127.0.0.1", "localhost:http", ":7100"] {
        let out = cli(&["client", "--servers", bad, "status"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("HOST:PORT"), "{bad}: {stderr}");
    }
}

/// Sockets in TIME_WAIT whose local port is `port` (from /proc/net/tcp, state 06).
fn time_wait_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "06"
        })
        .count()
}

/// The client port is bound with SO_REUSEADDR (tokio's `TcpListener::bind` sets it on Unix):
/// connections the server closed itself leave TIME_WAIT sockets on its port, and a killed server
/// restarted at once must still bind it.
#[test]
fn a_killed_server_restarts_on_its_port_despite_time_wait() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (config, client) = one_server(
        dir.path(),
        keys.to_str().unwrap(),
        "[storage]\nbackend = \"memory\"",
    );
    let args = ["--config", config.to_str().unwrap()];
    let (mut child, _stderr, lines) = start_server(&args, dir.path());
    assert!(
        String::from_utf8_lossy(&lines.concat()).contains("serving"),
        "{lines:?}"
    );
    for _ in 0..20 {
        let mut c = std::net::TcpStream::connect(&client).unwrap();
        // A frame length over the limit: the server refuses it and closes first, so the
        // TIME_WAIT is on its side.
        c.write_all(&[0xff; 8]).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
    let port: u16 = client.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(time_wait_on(port) > 0, "no TIME_WAIT on the client port");
    child.kill().unwrap();
    child.wait().unwrap();
    let (lines, _) = run_until_serving(&args, dir.path());
    let text = String::from_utf8_lossy(&lines.concat()).into_owned();
    assert!(text.contains("serving"), "{text}");
    assert!(!text.contains("cannot listen"), "{text}");
}
