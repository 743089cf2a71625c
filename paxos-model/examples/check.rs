//! Runs one of the model's configurations and prints its state counts and discoveries.
//!
//! `cargo run --release -p paxos-model --example check -- [ci|stepwise|larger|issue11] [key=value...]`

use paxos_model::{check, format_trace, scenarios, CheckOptions, PaxosModel};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map_or("ci", String::as_str);
    let cfg = match which {
        "ci" => scenarios::ci(),
        "stepwise" => scenarios::stepwise(),
        "larger" => scenarios::larger(),
        "issue11" => scenarios::issue11_n3(),
        other => {
            eprintln!("unknown configuration {other}: ci, stepwise, larger or issue11");
            std::process::exit(2);
        }
    };
    let mut cfg = cfg;
    let mut max_steps = None;
    // Overrides: steps=N views=N slots=N crashes=N dup=N|255 ticks=0|1 las=0|1 retries=0|1.
    for a in args.iter().skip(2) {
        let Some((k, v)) = a.split_once('=') else {
            eprintln!("argument {a} is not key=value");
            std::process::exit(2);
        };
        let num: u64 = v.parse().unwrap_or_else(|_| {
            eprintln!("{a}: not a number");
            std::process::exit(2)
        });
        match k {
            "steps" => max_steps = Some(num as usize),
            "views" => cfg.max_view = num,
            "slots" => cfg.max_slot = num,
            "crashes" => cfg.max_crashes = num as u8,
            // dup=255: unbounded duplication (every packet stays in flight).
            "dup" => cfg.max_duplicates = (num < 255).then_some(num as u8),
            "ticks" => cfg.ticks = num != 0,
            "las" => cfg.leader_accepts_separately = num != 0,
            "retries" => cfg.client_retries = num != 0,
            "vcproof" => cfg.nonleader_install = num != 0,
            #[cfg(feature = "planted-bugs")]
            "bug" => {
                use paxos_core::config::PlantedBug::*;
                cfg.planted_bug = [
                    None,
                    Some(MislabelledAccept),
                    Some(MinorityQuorum),
                    Some(SkipPrepare),
                    Some(SendBeforeDurable),
                    Some(AcceptLowerView),
                    Some(ExecuteDuplicate),
                    Some(SelfAcceptBeforeDurable),
                    Some(PrepareOkOmitsAccepted),
                    Some(SnapshotDropsClientTable),
                ]
                .get(num as usize)
                .copied()
                .flatten();
            }
            "sync" => {
                // Bit i set: server i has a synchronous driver.
                cfg.drivers = (0..cfg.servers)
                    .map(|i| {
                        if num >> i & 1 == 1 {
                            paxos_model::Driver::Synchronous
                        } else {
                            paxos_model::Driver::Stepwise
                        }
                    })
                    .collect();
            }
            "view1" => {
                if num != 0 {
                    cfg.script = scenarios::view1_installed();
                }
            }
            _ => {
                eprintln!("unknown key {k}");
                std::process::exit(2);
            }
        }
    }
    let model = match PaxosModel::new(cfg) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let opts = CheckOptions {
        max_steps,
        stop_at_first_failure: std::env::var_os("STOP").is_some(),
        stop_at: std::env::var("STOP_AT")
            .ok()
            .map(|p| &*Box::leak(p.into_boxed_str())),
        ..CheckOptions::default()
    };
    let report = check(model.clone(), &opts);
    println!("{which}: {report}");
    for d in &report.discoveries {
        if d.failure {
            println!("{}", format_trace(&model, d));
        }
    }
}
