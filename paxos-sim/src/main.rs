//! `paxos-sim`: run seeds of the deterministic cluster simulator from the command line.
//!
//! ```text
//! paxos-sim --seeds 1000 --nodes 5            # sweep seeds 0..1000
//! paxos-sim --seed 17 --nodes 5               # replay one seed verbosely
//! paxos-sim --bench                           # throughput of the simulator itself
//! paxos-sim --seeds 1000 --election omega      # sweep with another election strategy
//! paxos-sim elections --seeds 10 --out results # the election A/B experiment
//! ```

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use paxos_core::Durability;
use paxos_election::{scenario, ElectionConfig, RunOptions, Strategy};
use paxos_sim::figures::{Bars, Timelines};
use paxos_sim::{
    strategy_factory, sweep, Bench, ElectionExperiment, FaultMix, FaultProfile, LivenessSet,
    NodeFaults, ScheduleMode, Simulation, Workload,
};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "paxos-sim",
    about = "Deterministic simulation of paxos-core clusters",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sweep seeds (the default when no subcommand is given).
    Sweep(RunArgs),
    /// The election A/B experiment: every scenario of paxos-election's library with every
    /// strategy and seed on the simulated cluster; prints Markdown tables, writes CSV, JSON and
    /// figures with --out.
    Elections(ElectionArgs),
}

#[derive(Args, Debug, Clone)]
struct ElectionArgs {
    /// Seeds per (scenario, strategy) cell.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Only the scenarios with this many servers (the library has 3- and 5-server ones).
    #[arg(long)]
    nodes: Option<usize>,
    /// Strategies, comma-separated (psb, highest-id, omega, ble).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "psb,highest-id,omega,ble"
    )]
    strategies: Vec<Strategy>,
    /// Scenarios, comma-separated (default: the whole library).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Directory for elections.{md,csv,json} and the figures (created if missing).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Failure-detection time every strategy is tuned to (`ElectionConfig::uniform`), in ms.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
    /// Simulated length of each run, in seconds.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Network: `lossy` (`FaultMix::network()`: 1 % loss, 1 % duplicates, 5 % reordered, 0.5 %
    /// delayed up to 100 ms) or `clean` (no loss, duplication or reordering).
    #[arg(long, default_value = "lossy")]
    network: String,
    /// Print one line per run.
    #[arg(long)]
    per_run: bool,
    /// Simulator verbosity of every run (1: faults, leader changes, completions; use with one
    /// scenario, strategy and seed).
    #[arg(long, default_value_t = 0)]
    verbose: u8,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Number of seeds to sweep.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the sweep.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Replay this one seed verbosely instead of sweeping.
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Fault profile the per-seed mixes are drawn from: none, light, heavy or all.
    #[arg(long, default_value = "all")]
    faults: FaultProfile,
    /// Durability: sync, async, none, or random (drawn per seed).
    #[arg(long, default_value = "random")]
    durability: String,
    /// Aggregation: on, off, or random (drawn per seed).
    #[arg(long, default_value = "random")]
    aggregation: String,
    /// Number of clients (default: drawn per seed; bench: 2000).
    #[arg(long)]
    clients: Option<usize>,
    /// Length of the fault phase in virtual milliseconds (default: drawn per seed, 2000–5000).
    #[arg(long)]
    fault_ms: Option<u64>,
    /// Worker threads for the sweep.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Verbosity of a single-seed replay (1: faults and completions, 2: every event).
    #[arg(long, default_value_t = 1)]
    verbose: u8,
    /// Print one line per seed during a sweep.
    #[arg(long)]
    per_seed: bool,
    /// Benchmark the simulator: no faults, 3 replicas, closed-loop clients.
    #[arg(long)]
    bench: bool,
    /// Bench: stop after this many ordered updates.
    #[arg(long, default_value_t = 2_000_000)]
    bench_updates: u64,
    /// Election strategy of every server: psb, highest-id, omega or ble, tuned by
    /// `ElectionConfig::uniform(--election-timeout-ms)` (default: PSB's view change with the
    /// simulator's own short timers).
    #[arg(long)]
    election: Option<Strategy>,
    /// Failure-detection time of `--election`, in ms.
    #[arg(long, default_value_t = 300)]
    election_timeout_ms: u64,
    /// Scheduling of every server: one (one input per round), k (k inputs per round, k drawn
    /// per round in 1..=1024) or backlog (the whole backlog per round); default drawn per seed.
    #[arg(long)]
    schedule: Option<ScheduleMode>,
    /// Process faults (pauses, clock skew and jumps, slow disks): off, pauses
    /// (`NodeFaults::pauses(400 ms, 2 s)`), everything (`NodeFaults::everything()`), or drawn
    /// per seed from the fault profile (random, the default).
    #[arg(long, default_value = "random")]
    node_faults: String,
    /// What the liveness phase keeps stable when servers are left outside: component (cut off
    /// or crashed) or majority-set (LADIS Def. 3.1: outside servers up and sending into the set);
    /// default drawn per seed.
    #[arg(long)]
    liveness: Option<LivenessSet>,
    /// Client sessions (registered through the log, expiring): on, off, or random (drawn per
    /// seed with short expiries and small bounds).
    #[arg(long, default_value = "random")]
    sessions: String,
    /// Workload per seed: long (default) or classic (the draws before issue #11).
    #[arg(long, default_value = "long")]
    workload: Workload,
    /// The simulator before issue #11: --schedule one --node-faults off --liveness component
    /// --workload classic (reproduces its traces).
    #[arg(long)]
    classic: bool,
    /// Plant a core bug: skip-prepare, send-before-durable, accept-lower-view, execute-duplicate,
    /// mislabelled-accept, self-accept-before-durable, minority-quorum, prepare-ok-omits-accepted,
    /// snapshot-drops-client-table, snapshot-job-not-frozen, prepare-ok-counts-first-part,
    /// session-expires-by-local-clock, expired-session-reopens.
    #[cfg(feature = "planted-bugs")]
    #[arg(long)]
    planted_bug: Option<String>,
}

fn parse_durability(s: &str) -> Result<Option<Durability>> {
    Ok(match s {
        "sync" => Some(Durability::Sync),
        "async" => Some(Durability::Async),
        "none" => Some(Durability::None),
        "random" => None,
        _ => bail!("--durability must be sync, async, none or random"),
    })
}

fn parse_on_off(s: &str) -> Result<Option<bool>> {
    Ok(match s {
        "on" => Some(true),
        "off" => Some(false),
        "random" => None,
        _ => bail!("--aggregation must be on, off or random"),
    })
}

#[cfg(feature = "planted-bugs")]
fn parse_bug(s: &str) -> Result<paxos_sim::PlantedBug> {
    paxos_sim::PlantedBug::from_name(s).with_context(|| format!("unknown planted bug {s:?}"))
}

fn simulation(a: &RunArgs) -> Result<Simulation> {
    let mut sim = Simulation::new(a.nodes, a.first_seed).faults(a.faults);
    if let Some(d) = parse_durability(&a.durability)? {
        sim = sim.durability(d);
    }
    if let Some(on) = parse_on_off(&a.aggregation)? {
        sim = sim.aggregation(on);
    }
    if let Some(c) = a.clients {
        sim = sim.clients(c);
    }
    if let Some(ms) = a.fault_ms {
        sim = sim.duration(std::time::Duration::from_millis(ms));
    }
    if let Some(st) = a.election {
        let cfg = ElectionConfig::uniform(Duration::from_millis(a.election_timeout_ms));
        cfg.validate()?;
        let mut flag = format!("--election {st}");
        if a.election_timeout_ms != 300 {
            let _ = write!(flag, " --election-timeout-ms {}", a.election_timeout_ms);
        }
        sim = sim.election(strategy_factory(st, cfg), Some(flag));
    }
    #[cfg(feature = "planted-bugs")]
    if let Some(b) = &a.planted_bug {
        sim = sim.planted_bug(Some(parse_bug(b)?));
    }
    if a.classic {
        sim = sim.classic();
    }
    if let Some(m) = a.schedule {
        sim = sim.schedule(m);
    }
    match a.node_faults.as_str() {
        "random" => {}
        name => match NodeFaults::named(name) {
            Some(f) => sim = sim.node_faults(f),
            None => bail!("--node-faults must be off, pauses, everything or random"),
        },
    }
    if let Some(l) = a.liveness {
        sim = sim.liveness_set(l);
    }
    match a.sessions.as_str() {
        "random" => {}
        "on" => sim = sim.sessions(true),
        "off" => sim = sim.sessions(false),
        _ => bail!("--sessions must be on, off or random"),
    }
    if !a.classic {
        sim = sim.workload(a.workload);
    }
    Ok(sim)
}

fn bench(a: &RunArgs) -> Result<ExitCode> {
    let mut b = Bench {
        updates: a.bench_updates,
        ..Bench::default()
    };
    if let Some(c) = a.clients {
        b.clients = c;
    }
    if let Some(d) = parse_durability(&a.durability)? {
        if d == Durability::Sync {
            bail!("--bench supports --durability none or async");
        }
        b.durability = d;
    }
    if let Some(on) = parse_on_off(&a.aggregation)? {
        b.aggregation = on;
    }
    let r = b.run();
    println!(
        "bench: {} replicas, {} clients, {}-byte updates, aggregation {}, durability {:?}",
        b.nodes,
        b.clients,
        b.payload,
        if b.aggregation { "on" } else { "off" },
        b.durability
    );
    println!(
        "ordered {} updates ({} executions, {} replies) in {:.3} s wall, {:.3} s simulated, {} events",
        r.ordered,
        r.executions,
        r.completed,
        r.wall.as_secs_f64(),
        r.virtual_time.as_secs_f64(),
        r.events
    );
    println!(
        "throughput: {:.0} updates ordered/s wall, {:.0} executions/s wall, {:.0} updates ordered/s simulated",
        r.ordered_per_wall_sec(),
        r.executed_per_wall_sec(),
        r.ordered_per_virtual_sec()
    );
    for v in &r.violations {
        println!("violation: {v}");
    }
    println!(
        "seeds: 1, events: {}, violations: {}",
        r.events,
        r.violations.len()
    );
    Ok(if r.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run(a: &RunArgs) -> Result<ExitCode> {
    if a.bench {
        return bench(a);
    }
    let sim = simulation(a)?;
    if let Some(seed) = a.seed {
        let r = sim.seed(seed).verbose(a.verbose).run();
        println!(
            "seed {seed}: {} events, end {}, trace {:016x}, ordered {}, completed {}, leader changes {}, leaderless {:?}",
            r.events,
            r.end_time,
            r.trace_hash,
            r.counters.ordered,
            r.counters.updates_completed,
            r.leader_changes.len(),
            r.leaderless
        );
        for v in &r.violations {
            println!("violation: {v}");
            println!("replay: {}", r.replay);
        }
        println!(
            "seeds: 1, events: {}, violations: {}",
            r.events,
            r.violations.len()
        );
        return Ok(if r.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let start = Instant::now();
    let per_seed = a.per_seed;
    let report = sweep(&sim, a.first_seed..a.first_seed + a.seeds, a.threads, |r| {
        if per_seed {
            println!(
                "seed {}: {} events, ordered {}, view changes {}, crashes {}, {}",
                r.seed,
                r.events,
                r.counters.ordered,
                r.counters.view_changes,
                r.counters.crashes,
                if r.ok() { "ok" } else { "VIOLATION" }
            );
        }
        if let Some(v) = r.violations.first() {
            println!("seed {} FAILED: {v}", r.seed);
            println!("  replay: {}", r.replay);
        }
    });
    let counters: Vec<String> = report
        .counters
        .entries()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("coverage: {}", counters.join(" "));
    let missing = report.never_exercised();
    if !missing.is_empty() {
        println!("never exercised: {}", missing.join(", "));
    }
    let wall = start.elapsed().as_secs_f64();
    println!(
        "wall {wall:.1} s ({:.0} seeds/s, {} threads), sweep trace {:016x}",
        report.seeds as f64 / wall.max(1e-9),
        a.threads,
        report.trace_hash
    );
    println!("{}", report.summary_line());
    Ok(if report.violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn elections(a: &ElectionArgs) -> Result<ExitCode> {
    let timeout = Duration::from_millis(a.timeout_ms);
    let config = ElectionConfig::uniform(timeout);
    config.validate()?;
    let params = scenario::ScenarioParams {
        election_timeout: timeout,
        duration: Duration::from_secs(a.duration_s),
        ..Default::default()
    };
    let mut scenarios = scenario::library(&params);
    if !a.scenarios.is_empty() {
        for name in &a.scenarios {
            if !scenario::SCENARIO_NAMES.contains(&name.as_str()) {
                bail!(
                    "unknown scenario {name:?} (expected one of: {})",
                    scenario::SCENARIO_NAMES.join(", ")
                );
            }
        }
        scenarios.retain(|s| a.scenarios.iter().any(|n| n == s.name));
    }
    if let Some(n) = a.nodes {
        scenarios.retain(|s| s.servers == n);
    }
    if scenarios.is_empty() || a.strategies.is_empty() || a.seeds == 0 {
        bail!("nothing to run: no scenario, strategy or seed selected");
    }
    let network = match a.network.as_str() {
        "lossy" => FaultMix::network(),
        "clean" => FaultMix::none(),
        _ => bail!("--network must be lossy or clean"),
    };
    let seeds: Vec<u64> = (a.first_seed..a.first_seed + a.seeds).collect();
    let figure_seed = seeds[0];
    let exp = ElectionExperiment {
        scenarios: scenarios.clone(),
        strategies: a.strategies.clone(),
        seeds: seeds.clone(),
        config,
        options: RunOptions::default(),
        threads: a.threads,
        keep_samples: vec![
            "crash-loop",
            "partition-loop",
            "quorum-loss",
            "leader-crash",
        ],
        keep_samples_seeds: vec![figure_seed],
        network,
        verbose: a.verbose,
    };
    let total = scenarios.len() * a.strategies.len() * seeds.len();
    eprintln!(
        "elections: {} scenarios x {} strategies x {} seeds = {total} runs of {} s simulated, timeout {} ms, {} threads",
        scenarios.len(),
        a.strategies.len(),
        seeds.len(),
        a.duration_s,
        a.timeout_ms,
        a.threads
    );
    let start = Instant::now();
    let per_run = a.per_run;
    let outcome = exp.run(|r| {
        if per_run {
            let m = &r.result.metrics;
            eprintln!(
                "{} {} seed {}: stable {:?}, changes {}, ordering {:.1}%, stall {:.2} s, {} messages{}",
                scenarios[r.scenario].name,
                r.strategy,
                r.seed,
                m.time_to_stable.map(|d| d.as_secs_f64()),
                m.leader_changes,
                100.0 * m.ordering_fraction,
                m.longest_stall.as_secs_f64(),
                r.messages,
                if r.violations.is_empty() { "" } else { ", VIOLATION" }
            );
        }
    });
    let wall = start.elapsed().as_secs_f64();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Seeds {}..={} per cell; every strategy tuned by `ElectionConfig::uniform({} ms)`; {} s per run, faults from {} s; network `{}`; {total} runs in {wall:.0} s wall.\n",
        seeds[0],
        seeds[seeds.len() - 1],
        a.timeout_ms,
        a.duration_s,
        params.warmup.as_secs(),
        a.network
    );
    md.push_str(&outcome.report.to_markdown());
    md.push_str("\nSummary matrix (`ordering % / leader changes / worst stall s`):\n\n");
    md.push_str(&outcome.report.to_markdown_matrix());
    md.push_str("\nMessages between servers per simulated second (mean over seeds, whole run) and safety:\n\n");
    let _ = writeln!(
        md,
        "| scenario | {} |\n|---|{}",
        a.strategies
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(a.strategies.len())
    );
    for (i, sc) in scenarios.iter().enumerate() {
        let _ = write!(md, "| {} |", sc.name);
        for st in &a.strategies {
            let runs: Vec<_> = outcome
                .runs
                .iter()
                .filter(|r| r.scenario == i && r.strategy == *st)
                .collect();
            let msgs = runs.iter().map(|r| r.messages as f64).sum::<f64>()
                / runs.len().max(1) as f64
                / sc.duration.as_secs_f64();
            let bad = runs.iter().filter(|r| !r.violations.is_empty()).count();
            if bad == 0 {
                let _ = write!(md, " {msgs:.0} |");
            } else {
                let _ = write!(md, " {msgs:.0} (**{bad} unsafe**) |");
            }
        }
        md.push('\n');
    }
    print!("{md}");
    let mut unsafe_runs = 0;
    for r in outcome.unsafe_runs() {
        unsafe_runs += 1;
        println!(
            "VIOLATION {} {} seed {}: {}",
            scenarios[r.scenario].name, r.strategy, r.seed, r.violations[0]
        );
    }
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("elections.md"), &md)?;
        std::fs::write(dir.join("elections.csv"), outcome.report.to_csv())?;
        std::fs::write(dir.join("elections.json"), outcome.report.to_json())?;
        println!("wrote {}/elections.{{md,csv,json}}", dir.display());
        let bars = Bars::unavailability(&outcome, &scenarios);
        let lines = Timelines::from_outcome(
            &outcome,
            &scenarios,
            &[
                "crash-loop",
                "partition-loop",
                "quorum-loss",
                "leader-crash",
            ],
            figure_seed,
        );
        for written in [
            bars.write(dir, "elections-unavailability"),
            if lines.panels.is_empty() {
                Ok(vec![])
            } else {
                lines.write(dir, "elections-timelines")
            },
        ] {
            match written {
                Ok(paths) => {
                    for p in paths {
                        println!("wrote {}", p.display());
                    }
                }
                Err(e) => println!("figure not drawn: {e}"),
            }
        }
    }
    println!(
        "elections: {total} runs, {} events, safety violations: {unsafe_runs}, wall {wall:.1} s",
        outcome.runs.iter().map(|r| r.events).sum::<u64>()
    );
    Ok(if unsafe_runs == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Sweep(a)) => run(a),
        Some(Command::Elections(a)) => elections(a),
        None => run(&cli.run),
    }
}
