//! Exhaustive checks of the correct core: every `always` property holds within the bounds and
//! every `sometimes` property is reached (the search is not vacuous).

use paxos_model::{
    check, format_trace, scenarios, CheckOptions, CheckReport, ModelConfig, PaxosModel,
};

const EXAMPLES: [&str; 3] = ["value chosen", "leader change", "update executed"];

fn run(cfg: ModelConfig, max_steps: Option<usize>) -> (PaxosModel, CheckReport) {
    let model = PaxosModel::new(cfg).expect("script plays");
    let report = check(
        model.clone(),
        &CheckOptions {
            max_steps,
            ..CheckOptions::default()
        },
    );
    println!("{report}");
    (model, report)
}

fn assert_clean(model: &PaxosModel, report: &CheckReport) {
    for d in report.discoveries.iter().filter(|d| d.failure) {
        println!("{}", format_trace(model, d));
    }
    assert!(
        report.failures().is_empty(),
        "violations: {:?}",
        report.failures()
    );
    for p in EXAMPLES {
        assert!(
            report.reached().contains(&p),
            "`{p}` never reached: {report}"
        );
    }
    assert!(!report.timed_out);
}

#[test]
fn ci_configuration_holds_every_property_and_reaches_every_example() {
    let (model, report) = run(scenarios::ci(), None);
    assert_clean(&model, &report);
    // The whole bounded space, not a prefix of it (it has about 280,000 states).
    assert!(report.unique_states > 100_000, "{report}");
}

#[test]
fn all_stepwise_drivers_hold_every_property() {
    let (model, report) = run(scenarios::stepwise(), None);
    assert_clean(&model, &report);
    assert!(report.unique_states > 10_000, "{report}");
}

#[test]
fn issue11_scenario_is_clean_on_the_fixed_core() {
    // The bounds under which the planted mislabelled Accept is found (tests/planted.rs).
    let (model, report) = run(scenarios::issue11_n3(), Some(14));
    assert_clean(&model, &report);
}

#[test]
fn the_scripted_starts_are_where_they_say() {
    use paxos_core::{ServerState, View};
    let m = PaxosModel::new(scenarios::ci()).unwrap();
    let st: Vec<_> = m.start().nodes.iter().map(|n| n.replica.status()).collect();
    assert_eq!(st[1].state, ServerState::RegLeader);
    assert!(st.iter().all(|s| s.last_installed == View(1)));
    assert_eq!(m.initial_view(), View(1));

    let m = PaxosModel::new(scenarios::issue11_n3()).unwrap();
    let s = m.start();
    let st: Vec<_> = s.nodes.iter().map(|n| n.replica.status()).collect();
    assert_eq!(st[2].state, ServerState::RegLeader, "server 2 leads view 2");
    assert_eq!(st[0].last_installed, View(1), "F is still in view 1");
    assert!(
        s.nodes[1].durable.accepted.is_empty(),
        "server 1 lost U in its crash"
    );
    assert!(
        s.nodes[0].durable.accepted.is_empty(),
        "F has not drained U"
    );
}

/// The larger configuration (two clients, views up to 3). Run with
/// `cargo test --release -p paxos-model -- --ignored larger`.
#[test]
#[ignore = "minutes; run in release (see docs/simulator.md, Model checking)"]
fn larger_configuration_holds_every_property() {
    let (model, report) = run(scenarios::larger(), None);
    assert_clean(&model, &report);
}
