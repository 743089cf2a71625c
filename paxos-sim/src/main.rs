//! `paxos-sim`: run seeds of the deterministic cluster simulator from the command line.
//!
//! ```text
//! paxos-sim --seeds 1000 --nodes 5            # sweep seeds 0..1000
//! paxos-sim --seed 17 --nodes 5               # replay one seed verbosely
//! paxos-sim --bench                           # throughput of the simulator itself
//! ```

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use paxos_core::Durability;
use paxos_sim::{sweep, Bench, FaultProfile, Simulation};
use std::process::ExitCode;
use std::time::Instant;

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
    /// Plant a core bug: skip-prepare, send-before-durable, accept-lower-view, execute-duplicate.
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
    use paxos_sim::PlantedBug::*;
    for b in [
        SkipPrepare,
        SendBeforeDurable,
        AcceptLowerView,
        ExecuteDuplicate,
    ] {
        if paxos_sim::planted_bug_name(b) == s {
            return Ok(b);
        }
    }
    bail!("unknown planted bug {s:?}")
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
    #[cfg(feature = "planted-bugs")]
    if let Some(b) = &a.planted_bug {
        sim = sim.planted_bug(Some(parse_bug(b)?));
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
    println!(
        "wall {:.1} s, sweep trace {:016x}",
        start.elapsed().as_secs_f64(),
        report.trace_hash
    );
    println!("{}", report.summary_line());
    Ok(if report.violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Sweep(a)) => run(a),
        None => run(&cli.run),
    }
}
