//! `paxos-bench`: throughput and latency of real `paxos-node` clusters on this machine.
//!
//! - `throughput`: one closed-loop measurement;
//! - `paper`: the paper's figures scaled to this machine (results, CSV, PNG/SVG figures);
//! - `compare`: one workload against every storage × transport × election combination.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use paxos_bench::load::{ClientMode, LoadSpec};
use paxos_bench::output::{markdown_header, markdown_row, Report, Row};
use paxos_bench::{
    compare, paper, paper_data, run_throughput, Phase, Progress, Provenance, RunConfig,
    ThroughputRun,
};
use paxos_node::cluster::ClusterOptions;
use paxos_node::config::{
    parse_choice, DurabilityChoice, ElectionSection, ProtocolSection, StorageChoice,
    TransportChoice,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "paxos-bench",
    version,
    about = "Benchmarks of real paxos-node clusters on this machine"
)]
struct Cli {
    /// The paxos-node binary (default: next to this one).
    #[arg(long, global = true)]
    node_binary: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// How the clients run (shared by every subcommand).
#[derive(Args, Clone)]
struct ClientArgs {
    /// Update size in bytes.
    #[arg(long, default_value_t = 200)]
    update_bytes: usize,
    /// mux: many logical clients per connection (cheap); library: one paxos-node Client each.
    #[arg(long, default_value = "mux")]
    client_mode: String,
    /// Logical clients per TCP connection (mux mode).
    #[arg(long, default_value_t = 64)]
    clients_per_connection: usize,
    /// Window W of the protocol.
    #[arg(long, default_value_t = 256)]
    window: u64,
}

#[derive(Subcommand)]
enum Command {
    /// One closed-loop measurement.
    Throughput {
        /// Servers.
        #[arg(long, default_value_t = 3)]
        servers: usize,
        /// Closed-loop clients (one outstanding update each).
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Durability: none, async or sync.
        #[arg(long, default_value = "sync")]
        durability: String,
        /// Aggregation.
        #[arg(long, value_enum, default_value = "on")]
        aggregation: OnOff,
        /// Storage: memory, wal, rocksdb.
        #[arg(long, default_value = "wal")]
        storage: String,
        /// Transport: quic or udp-multicast.
        #[arg(long, default_value = "quic")]
        transport: String,
        /// Election: psb, highest-id, omega, ble.
        #[arg(long, default_value = "psb")]
        election: String,
        /// Warm-up seconds.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        state: paxos_bench::state::StateArgs,
        /// Write the result (with provenance and raw samples) as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the result as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// The paper's figures scaled to this machine: sweeps, results (JSON/CSV) and figures.
    Paper {
        /// Directory for results.json, results.csv and summary.md.
        #[arg(long, default_value = "bench-results/paper")]
        out: PathBuf,
        /// Directory for the figures (default: --out).
        #[arg(long)]
        figures: Option<PathBuf>,
        /// Measured seconds per point.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Warm-up seconds per point.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// A small subset (3 servers, a few client counts) for a quick look.
        #[arg(long)]
        quick: bool,
        /// Only these sweeps (comma-separated ids, e.g. nodisk-agg,sync-agg).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Transport for every point.
        #[arg(long, default_value = "quic")]
        transport: String,
        /// Election for every point.
        #[arg(long, default_value = "psb")]
        election: String,
        /// Do not measure: draw the figures of an existing results.json.
        #[arg(long)]
        from: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The same workload against every storage × transport × election combination.
    Compare {
        /// Servers.
        #[arg(long, default_value_t = 3)]
        servers: usize,
        /// Closed-loop clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Durability for wal and rocksdb (memory always runs with none).
        #[arg(long, default_value = "sync")]
        durability: String,
        /// Aggregation.
        #[arg(long, value_enum, default_value = "on")]
        aggregation: OnOff,
        /// Measured seconds per combination.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Warm-up seconds per combination.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Directory for compare.json, compare.csv and compare.md.
        #[arg(long, default_value = "bench-results/compare")]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Everything that defines one run.
struct Spec<'a> {
    servers: usize,
    clients: usize,
    durability: DurabilityChoice,
    aggregation: bool,
    storage: StorageChoice,
    transport: TransportChoice,
    election: &'a str,
    warmup: f64,
    seconds: f64,
    client: &'a ClientArgs,
}

fn make_run(s: &Spec<'_>) -> Result<ThroughputRun> {
    Ok(ThroughputRun {
        cluster: ClusterOptions {
            servers: s.servers,
            storage: s.storage,
            transport: s.transport,
            protocol: ProtocolSection {
                durability: s.durability,
                aggregation: s.aggregation,
                window: s.client.window,
                ..ProtocolSection::default()
            },
            election: ElectionSection {
                strategy: s.election.to_owned(),
                ..ElectionSection::default()
            },
            sessions: Default::default(),
            metrics: false,
            namespaces: false,
        },
        load: LoadSpec {
            clients: s.clients,
            update_bytes: s.client.update_bytes,
            clients_per_connection: s.client.clients_per_connection,
            mode: parse_choice::<ClientMode>("client mode", &s.client.client_mode)?,
            ..LoadSpec::default()
        },
        warmup: Duration::from_secs_f64(s.warmup),
        measure: Duration::from_secs_f64(s.seconds),
        preload_bytes: 0,
    })
}

/// Progress of one run on a spinner line.
struct Line {
    bar: ProgressBar,
    label: String,
}

impl Progress for Line {
    fn phase(&self, phase: Phase) {
        let what = match phase {
            Phase::Starting => "starting servers",
            Phase::WarmingUp => "warming up",
            Phase::Measuring => "measuring",
            Phase::Stopping => "stopping",
        };
        self.bar.set_message(format!("{} — {what}", self.label));
    }

    fn second(&self, done: usize, total: usize, rate: f64) {
        self.bar.set_message(format!(
            "{} — measuring {done}/{total} s, {rate:.0} updates/s",
            self.label
        ));
    }
}

fn spinner(mp: &MultiProgress) -> ProgressBar {
    let bar = mp.add(ProgressBar::new_spinner());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn label(s: &Spec<'_>) -> String {
    format!(
        "{} servers, {} clients, {:?}, aggregation {}, {:?}, {:?}, {}",
        s.servers,
        s.clients,
        s.durability,
        if s.aggregation { "on" } else { "off" },
        s.storage,
        s.transport,
        s.election
    )
    .to_lowercase()
}

fn node_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(b) = given {
        return Ok(b);
    }
    let exe = std::env::current_exe()?;
    let next = exe.with_file_name("paxos-node");
    if next.exists() {
        return Ok(next);
    }
    // `target/<profile>/deps/…` (tests): the binary is one level up.
    if let Some(up) = exe.parent().and_then(Path::parent) {
        let b = up.join("paxos-node");
        if b.exists() {
            return Ok(b);
        }
    }
    Ok(next)
}

/// [`run_throughput`], once more if the cluster did not come up (a free port taken between choosing
/// and binding it, or a slow election on a loaded machine): one lost point should not leave a hole
/// in a sweep.
async fn run_retrying(
    binary: &Path,
    run: &ThroughputRun,
    line: &Line,
) -> Result<paxos_bench::ThroughputResult, paxos_bench::BenchError> {
    match run_throughput(binary, run, line).await {
        // A backend this build lacks fails the same way every time.
        Err(e @ paxos_bench::BenchError::ServerExited { .. })
            if e.to_string().contains("no RocksDB backend") =>
        {
            Err(e)
        }
        Err(
            paxos_bench::BenchError::ServerExited { .. } | paxos_bench::BenchError::NoLeader(_),
        ) => run_throughput(binary, run, line).await,
        other => other,
    }
}

/// A line above the progress bars, or on stderr when they are hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn write_report(report: &Report, dir: &Path, stem: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    report.write_json(&dir.join(format!("{stem}.json")))?;
    report.write_csv(&dir.join(format!("{stem}.csv")))?;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let binary = node_binary(cli.node_binary)?;
    let needs_binary = !matches!(&cli.command, Command::Paper { from: Some(_), .. });
    if needs_binary && !binary.exists() {
        bail!(
            "paxos-node binary not found at {} (build it with `cargo build --release -p paxos-node` or pass --node-binary)",
            binary.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mp = MultiProgress::new();
    match cli.command {
        Command::Throughput {
            servers,
            clients,
            durability,
            aggregation,
            storage,
            transport,
            election,
            warmup,
            seconds,
            client,
            state,
            json,
            csv,
        } => {
            let spec = Spec {
                servers,
                clients,
                durability: parse_choice("durability", &durability)?,
                aggregation: matches!(aggregation, OnOff::On),
                storage: parse_choice("storage", &storage)?,
                transport: parse_choice("transport", &transport)?,
                election: &election,
                warmup,
                seconds,
                client: &client,
            };
            let mut run = make_run(&spec)?;
            state.apply(&mut run);
            let line = Line {
                bar: spinner(&mp),
                label: label(&spec),
            };
            let result = rt.block_on(run_throughput(&binary, &run, &line));
            line.bar.finish_and_clear();
            let result = result?;
            print!("{}{}", markdown_header(), markdown_row(&result));
            println!(
                "per-second updates: {:?}",
                result
                    .per_second
                    .iter()
                    .map(|x| x.round() as u64)
                    .collect::<Vec<_>>()
            );
            println!(
                "CPU: clients {:.2} s ({:.0}% of bench+servers), servers {:?} s, {:.2} cores busy, machine {:.0}% busy; retries {}, rejected {}, reconnects {}",
                result.cpu.bench_cpu_s,
                result.cpu.client_share * 100.0,
                result
                    .cpu
                    .servers_cpu_s
                    .iter()
                    .map(|s| (s * 100.0).round() / 100.0)
                    .collect::<Vec<_>>(),
                result.cpu.cores_used,
                result.cpu.machine_busy.unwrap_or(0.0) * 100.0,
                result.retries,
                result.rejected,
                result.reconnects
            );
            print!("{}", paxos_bench::state::describe(&result));
            let syncs = result.server_metric_sum("paxos_storage_syncs_total");
            println!(
                "servers (whole run): {:.0} inputs dropped, {:.0} replies dropped, {:.0} syncs (mean {:.0} µs, {:.1} updates per write)",
                result.server_metric_sum("paxos_dropped_total"),
                result.server_metric_sum("paxos_replies_dropped_total"),
                syncs,
                result.server_metric_sum("paxos_storage_sync_micros_total") / syncs.max(1.0),
                result.server_metric_sum("paxos_storage_batch_updates_total")
                    / result.server_metric_sum("paxos_storage_batches_total").max(1.0)
            );
            let report = Report {
                kind: "throughput".into(),
                provenance: Provenance::collect(&binary),
                results: vec![Row {
                    group: String::new(),
                    result: Some(result),
                    failed_config: None,
                    error: None,
                }],
            };
            if let Some(p) = json {
                report.write_json(&p)?;
            }
            if let Some(p) = csv {
                report.write_csv(&p)?;
            }
        }
        Command::Paper {
            out,
            figures,
            seconds,
            warmup,
            quick,
            only,
            transport,
            election,
            from,
            client,
        } => {
            let fig_dir = figures.unwrap_or_else(|| out.clone());
            let data = paper_data::embedded();
            let report = match from {
                Some(path) => Report::read(&path)?,
                None => {
                    let transport: TransportChoice = parse_choice("transport", &transport)?;
                    let sweeps: Vec<paper::Sweep> = paper::sweeps(quick)
                        .into_iter()
                        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.id))
                        .collect();
                    let total: usize = sweeps.iter().map(|s| s.points().len()).sum();
                    let overall = mp.add(ProgressBar::new(total as u64));
                    overall.set_style(
                        ProgressStyle::with_template(
                            "[{elapsed_precise}] {bar:40} {pos}/{len} points (eta {eta})",
                        )
                        .expect("static template"),
                    );
                    let line = Line {
                        bar: spinner(&mp),
                        label: String::new(),
                    };
                    let mut report = Report {
                        kind: "paper".into(),
                        provenance: Provenance::collect(&binary),
                        results: Vec::new(),
                    };
                    let started = Instant::now();
                    for sweep in &sweeps {
                        for (n, c) in sweep.points() {
                            let spec = Spec {
                                servers: n,
                                clients: c,
                                durability: sweep.durability,
                                aggregation: sweep.aggregation,
                                storage: sweep.storage,
                                transport,
                                election: &election,
                                warmup,
                                seconds,
                                client: &client,
                            };
                            let run = make_run(&spec)?;
                            let line = Line {
                                bar: line.bar.clone(),
                                label: format!("{}: {}", sweep.id, label(&spec)),
                            };
                            let row = match rt.block_on(run_retrying(&binary, &run, &line)) {
                                Ok(r) => {
                                    say(&overall, format!(
                                        "{:<17} {} servers {:>4} clients: {:>9.0} updates/s, mean {:.2} ms, p99 {:.2} ms",
                                        sweep.id,
                                        n,
                                        c,
                                        r.throughput,
                                        r.mean_us / 1e3,
                                        r.p99_us as f64 / 1e3
                                    ));
                                    Row {
                                        group: sweep.id.into(),
                                        result: Some(r),
                                        failed_config: None,
                                        error: None,
                                    }
                                }
                                Err(e) => {
                                    say(
                                        &overall,
                                        format!(
                                            "{:<17} {} servers {:>4} clients: failed: {e}",
                                            sweep.id, n, c
                                        ),
                                    );
                                    Row {
                                        group: sweep.id.into(),
                                        result: None,
                                        failed_config: Some(RunConfig::of(&run)),
                                        error: Some(e.to_string()),
                                    }
                                }
                            };
                            report.results.push(row);
                            // Partial results survive an interrupted sweep.
                            write_report(&report, &out, "results")?;
                            overall.inc(1);
                        }
                    }
                    overall.finish_and_clear();
                    line.bar.finish_and_clear();
                    eprintln!(
                        "measured {total} points in {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                    report
                }
            };
            let summary = paper::markdown(&report);
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("summary.md"), &summary)?;
            println!("{summary}");
            match paper::render(&report, &data, &fig_dir) {
                Ok(files) => {
                    for f in files {
                        println!("wrote {}", f.display());
                    }
                }
                Err(e) => eprintln!("figures not drawn: {e}"),
            }
        }
        Command::Compare {
            servers,
            clients,
            durability,
            aggregation,
            seconds,
            warmup,
            out,
            client,
        } => {
            let durability: DurabilityChoice = parse_choice("durability", &durability)?;
            let combos = compare::combinations();
            let overall = mp.add(ProgressBar::new(combos.len() as u64));
            overall.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {bar:40} {pos}/{len} combinations (eta {eta})",
                )
                .expect("static template"),
            );
            let bar = spinner(&mp);
            let mut report = Report {
                kind: "compare".into(),
                provenance: Provenance::collect(&binary),
                results: Vec::new(),
            };
            for (storage, transport, election) in combos {
                let spec = Spec {
                    servers,
                    clients,
                    durability: if storage == StorageChoice::Memory {
                        DurabilityChoice::None
                    } else {
                        durability
                    },
                    aggregation: matches!(aggregation, OnOff::On),
                    storage,
                    transport,
                    election,
                    warmup,
                    seconds,
                    client: &client,
                };
                let run = make_run(&spec)?;
                let line = Line {
                    bar: bar.clone(),
                    label: label(&spec),
                };
                let row = match rt.block_on(run_retrying(&binary, &run, &line)) {
                    Ok(r) => {
                        say(
                            &overall,
                            format!("{}: {:.0} updates/s", label(&spec), r.throughput),
                        );
                        Row {
                            group: "compare".into(),
                            result: Some(r),
                            failed_config: None,
                            error: None,
                        }
                    }
                    Err(e) => {
                        say(&overall, format!("{}: failed: {e}", label(&spec)));
                        compare::failed(RunConfig::of(&run), e.to_string())
                    }
                };
                report.results.push(row);
                write_report(&report, &out, "compare")?;
                overall.inc(1);
            }
            overall.finish_and_clear();
            bar.finish_and_clear();
            let table = compare::markdown(&report);
            std::fs::write(out.join("compare.md"), &table)?;
            println!("{table}");
        }
    }
    Ok(())
}
