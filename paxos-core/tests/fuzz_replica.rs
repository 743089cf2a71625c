//! Adversarial fuzzing of one replica (issue #11, item 6).
//!
//! proptest generates well-typed but arbitrary step sequences for one [`paxos_core::Replica`]:
//! messages of every kind from members, itself and non-members, client updates, ticks, drains,
//! durability reports for batches it handed out, and crash-restarts from the durable state so far.
//! After every step the checker (`common::checks`) verifies the replica's own promises, accepts and
//! executions. See docs/simulator.md, "Fuzzing one replica".
//!
//! Environment: `PAXOS_FUZZ_CASES` (default 3,000), `PAXOS_FUZZ_SEED` (default 1),
//! `PAXOS_FUZZ_HUGE=0` (no views and snapshot slots near `u64::MAX`). A failure shrinks and prints a `Case` that pastes into a regression test.

mod common;

use common::checks::Stats;
use common::harness::run;
use common::steps::case;
use common::steps::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// Cases per run unless `PAXOS_FUZZ_CASES` says otherwise (CI budget: the file runs in seconds).
const DEFAULT_CASES: u32 = 3_000;

/// Longest step sequence generated.
const MAX_STEPS: usize = 80;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn cases() -> u32 {
    u32::try_from(env_u64("PAXOS_FUZZ_CASES", u64::from(DEFAULT_CASES))).unwrap_or(u32::MAX)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        max_shrink_iters: 20_000,
        // Deterministic: the seed comes from the environment, not the OS. Failures replay from
        // the printed case, so no regression file is written.
        rng_seed: RngSeed::Fixed(env_u64("PAXOS_FUZZ_SEED", 1)),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn one_replica_keeps_its_promises_whatever_it_is_fed(case in case(MAX_STEPS)) {
        if let Err(v) = run(&case) {
            prop_assert!(false, "{}", v);
        }
    }
}

/// The generator reaches the states the properties are about: leadership, a regular non-leader
/// view, accepts and proposals sent, executions, snapshots installed and restarts. A change to the
/// generator that stops reaching one of them fails here instead of silently weakening the fuzzer.
#[test]
fn generator_reaches_leadership_accepts_executions_snapshots_and_restarts() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::new(ProptestConfig {
        rng_seed: RngSeed::Fixed(7),
        ..ProptestConfig::default()
    });
    let strategy = case(MAX_STEPS);
    let mut total = Stats::default();
    for _ in 0..200 {
        let c = strategy.new_tree(&mut runner).expect("generates").current();
        if let Ok(s) = run(&c) {
            total.as_leader += s.as_leader;
            total.as_non_leader += s.as_non_leader;
            total.accepts_sent += s.accepts_sent;
            total.proposals_sent += s.proposals_sent;
            total.prepare_oks_sent += s.prepare_oks_sent;
            total.executed += s.executed;
            total.snapshots_installed += s.snapshots_installed;
            total.restarts += s.restarts;
        }
    }
    println!("{total:?}");
    for (what, n) in [
        ("steps as leader", total.as_leader),
        ("steps as non-leader", total.as_non_leader),
        ("Accepts sent", total.accepts_sent),
        ("Proposals sent", total.proposals_sent),
        ("PrepareOks sent", total.prepare_oks_sent),
        ("executions", total.executed),
        ("snapshots installed", total.snapshots_installed),
        ("restarts", total.restarts),
    ] {
        assert!(n >= 10, "only {n} {what} in 200 cases: {total:?}");
    }
}

/// Exploration mode (`--ignored`): runs `PAXOS_FUZZ_CASES` cases without stopping at the first
/// failure, buckets failures by kind (and panic location), shrinks one case per bucket and prints
/// them. Used to list every distinct finding in one sweep.
#[test]
#[ignore = "exploration tool: cargo test --release -p paxos-core --test fuzz_replica explore -- --ignored --nocapture"]
fn explore() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeMap;
    let mut runner = TestRunner::new(config());
    let strategy = case(MAX_STEPS);
    let mut buckets: BTreeMap<String, (u64, Case, String)> = BTreeMap::new();
    let bucket_of = |c: &Case| run(c).err().map(|v| (v.bucket(), v.to_string()));
    for _ in 0..cases() {
        let mut tree = strategy.new_tree(&mut runner).expect("generates");
        let Some((bucket, detail)) = bucket_of(&tree.current()) else {
            continue;
        };
        if let Some(entry) = buckets.get_mut(&bucket) {
            entry.0 += 1;
            continue;
        }
        let mut best = (tree.current(), detail);
        let mut budget = 20_000;
        if tree.simplify() {
            while budget > 0 {
                budget -= 1;
                let c = tree.current();
                match bucket_of(&c) {
                    Some((b, d)) if b == bucket => {
                        best = (c, d);
                        if !tree.simplify() {
                            break;
                        }
                    }
                    _ => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        buckets.insert(bucket, (1, best.0, best.1));
    }
    for (bucket, (count, case, detail)) in &buckets {
        println!("== {bucket}: {count} case(s)\n   {detail}\n   {case:?}\n");
    }
    println!("{} distinct failure(s) in {} cases", buckets.len(), cases());
}

fn sync(servers: u8, me: u8) -> Setup {
    Setup {
        servers,
        me,
        durability: DSync,
        aggregation: false,
        separately: false,
        small: false,
        snapshot_every: None,
    }
}

fn client(c: u8) -> U {
    U {
        client: c,
        server: SrvSender,
        ts: 0,
        payload: 0,
    }
}

/// Runs a case that must pass, with the violation in the failure message.
fn must_pass(case: Case) {
    if let Err(v) = run(&case) {
        panic!("{v}\n{case:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// Regression tests for the findings (docs/simulator.md, "Fuzzing one replica"); each failed
// before its fix in paxos-core.
// ------------------------------------------------------------------------------------------------

/// F1. The leader of view 2 (of 2 servers) proposes a forwarded update at slot 1; in the same round
/// (no drain between) a peer's snapshot covering slot 1 arrives and compacts it. At the drain the
/// buffered proposal reaches the always-on assertion in `emit_proposal` ("Proposal(v2) for slot #1
/// that this leader accepted in None") and the leader panics. A leader more than
/// `history_retention` slots behind a peer gets such a snapshot in answer to its own
/// ReconRequest, and the node handles up to 1024 inputs per round.
#[test]

fn leader_survives_a_snapshot_covering_a_slot_it_proposed_in_the_same_round() {
    must_pass(Case {
        setup: sync(2, 0),
        steps: vec![
            Elect(NextMine(0)),
            Msg(ViewLeader, Fwd(client(0))),
            Msg(
                ViewLeader,
                SnapshotTransfer {
                    seq: AruPlus(1),
                    app: AppValid(0, 0),
                    clients: vec![],
                },
            ),
            PollMessages,
        ],
    });
}

/// F2 (first form). A peer's VcProof (or ViewChange, Prepare, Proposal, Alive) naming a view
/// near `u64::MAX` overflows the view arithmetic: `psb.rs` `last_attempted + 1` when the progress
/// timer fires, `View::next_led_by` in the floor-wait path.
#[test]

fn peer_view_near_u64_max_does_not_overflow_the_election() {
    must_pass(Case {
        setup: sync(2, 0),
        steps: vec![Client(client(0)), Elect(VHuge(0)), Tick(Millis(40))],
    });
    must_pass(Case {
        setup: sync(2, 0),
        steps: vec![
            Msg(Peer(0), VcProof(VHuge(1))),
            Msg(
                Peer(0),
                PrepareOk {
                    view: Installed,
                    aru: AruPlus(1),
                    data: vec![],
                },
            ),
            Tick(Secs(2)),
        ],
    });
}

/// F2 (second form, the worst): once a view near `u64::MAX` is installed its promise is durable,
/// and every restart from that storage overflows in `handle_start` (`last_attempted + 1`): the
/// server can never start again (in release builds the view wraps to 0 instead).
#[test]

fn restart_after_installing_a_view_near_u64_max_does_not_overflow() {
    must_pass(Case {
        setup: sync(3, 0),
        steps: vec![Msg(Peer(0), VcProof(VHuge(0))), Round, Crash(0)],
    });
}

/// F3. A SnapshotTransfer for a slot near `u64::MAX` is installed (the aru jumps there) and
/// overflows `History::truncate_through` (`seq + 1`), then every `local_aru + window` style bound
/// (send_proposal, on_proposal, apply_proposal, on_accept, apply_ordered, reconcile_if_behind).
#[test]

fn snapshot_near_u64_max_does_not_overflow_the_aru() {
    let snap = |k| SnapshotTransfer {
        seq: SHuge(k),
        app: AppValid(0, 0),
        clients: vec![],
    };
    must_pass(Case {
        setup: sync(2, 0),
        steps: vec![Msg(ViewLeader, snap(0))],
    });
    must_pass(Case {
        setup: sync(2, 0),
        steps: vec![
            Msg(ViewLeader, snap(1)),
            Msg(
                ViewLeader,
                ReconReply {
                    updates: vec![(AruPlus(1), client(0))],
                    complete: false,
                },
            ),
        ],
    });
    must_pass(Case {
        setup: sync(2, 0),
        steps: vec![
            Msg(ViewLeader, snap(1)),
            Elect(NextOther(0)),
            Msg(
                ViewLeader,
                Accept {
                    view: Installed,
                    ranges: vec![],
                },
            ),
        ],
    });
}

// ------------------------------------------------------------------------------------------------
// Every check can fail: with a planted bug the fuzzer finds a case, shrinks it, and the shrunk case
// breaks the property the bug targets (the violation kind is asserted).
// ------------------------------------------------------------------------------------------------

#[cfg(feature = "planted-bugs")]
mod planted {
    use super::*;
    use common::checks::{Kind, Violation};
    use common::harness::{run_with, Tweak};
    use proptest::test_runner::{TestCaseError, TestError, TestRunner};

    /// Runs the fuzzer with `tweak` until a case breaks a property in `kinds`, shrinks it, and
    /// returns the shrunk case's violation. Cases that fail otherwise (the core's own always-on
    /// assertions catch some planted bugs first) are skipped, so the check itself must fire.
    fn shrunk_violation(tweak: Tweak, kinds: &'static [Kind]) -> Violation {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: 5_000,
            max_global_rejects: 100_000,
            ..config()
        });
        let outcome = runner.run(&case(MAX_STEPS), |c| match run_with(&c, tweak) {
            Err(v) if kinds.contains(&v.kind) => Err(TestCaseError::fail(v.to_string())),
            Err(_) => Err(TestCaseError::reject("another violation")),
            Ok(_) => Ok(()),
        });
        match outcome {
            Err(TestError::Fail(_, minimal)) => {
                let v = run_with(&minimal, tweak).expect_err("the shrunk case fails");
                println!("{v}\n{minimal:?}");
                v
            }
            other => panic!("the fuzzer did not catch the planted bug: {other:?}"),
        }
    }

    macro_rules! planted {
        ($name:ident, $bug:ident, $($kind:ident)|+) => {
            #[test]
            fn $name() {
                let v = shrunk_violation(
                    |c| c.planted_bug = Some(paxos_core::config::PlantedBug::$bug),
                    &[$(Kind::$kind),+],
                );
                assert!(
                    matches!(v.kind, $(Kind::$kind)|+),
                    "planted {} caught as {:?}, expected {}",
                    stringify!($bug),
                    v.kind,
                    stringify!($($kind)|+)
                );
            }
        };
    }

    planted!(
        mislabelled_accept_is_an_accept_without_its_durable_proposal,
        MislabelledAccept,
        AcceptNotDurable
    );
    planted!(
        send_before_durable_releases_an_undurable_promise,
        SendBeforeDurable,
        PromiseNotDurable | AcceptNotDurable | ProposalNotDurable
    );
    planted!(
        accept_lower_view_accepts_below_the_promise,
        AcceptLowerView,
        AcceptedBelowPromise
    );
    planted!(
        execute_duplicate_applies_an_update_twice,
        ExecuteDuplicate,
        DuplicateExecution
    );
    planted!(
        skip_prepare_proposes_without_a_prepare_quorum,
        SkipPrepare,
        ProposalWithoutPrepareQuorum
    );
    planted!(
        minority_quorum_proposes_without_a_prepare_quorum,
        MinorityQuorum,
        ProposalWithoutPrepareQuorum
    );
    planted!(
        prepare_ok_omits_accepted_leaves_a_hole_in_the_data_list,
        PrepareOkOmitsAccepted,
        DataListIncomplete
    );
    planted!(
        snapshot_drops_client_table_applies_a_covered_update,
        SnapshotDropsClientTable,
        DuplicateExecution
    );
}

/// `status().last_attempted` is not monotonic, by design (TR Fig 6): a server attempting view 5
/// that receives a VcProof for view 4 installs 4 and its last attempted view becomes 4. The
/// promise is `last_installed`, which never decreases (checked after every fuzz step), and every
/// persisted view record has `last_attempted == last_installed`.
#[test]
fn last_attempted_drops_to_a_lower_view_a_vc_proof_installs() {
    use common::harness::Harness;
    let mut h = Harness::new(sync(3, 0), |_| {});
    for s in [
        Msg(Peer(0), ViewChange(VSmall(5))),
        Msg(ViewLeader, VcProof(VSmall(4))),
        Round,
    ] {
        let before = h.replica().status().last_attempted;
        h.step(&s).expect("no violation");
        if matches!(s, Msg(_, VcProof(_))) {
            assert_eq!(before, paxos_core::View(5));
        }
    }
    let st = h.replica().status();
    assert_eq!(
        (st.last_attempted, st.last_installed),
        (paxos_core::View(4), paxos_core::View(4))
    );
    assert_eq!(
        h.durable().view.last_attempted,
        h.durable().view.last_installed
    );
}
