//! Running the checker and reading its results: state counts, which properties failed or were
//! reached, and the traces that show it.

use crate::model::{Action, PaxosModel};
use crate::state::ModelState;
use stateright::{Checker, HasDiscoveries, Model};
use std::fmt;
use std::time::{Duration, Instant};

/// How to run the checker.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Check only states at most this many actions from the start state (`None`: no bound).
    pub max_steps: Option<usize>,
    /// Checker threads.
    pub threads: usize,
    /// Stop at the first failing `always` property instead of exploring everything.
    pub stop_at_first_failure: bool,
    /// Stop once this property has a discovery (overrides `stop_at_first_failure`).
    pub stop_at: Option<&'static str>,
    /// Give up after this long (the report then says `timed_out`).
    pub timeout: Option<Duration>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps: None,
            threads: 1,
            stop_at_first_failure: false,
            stop_at: None,
            timeout: None,
        }
    }
}

/// One discovery: a property and the path that shows it.
#[derive(Clone, Debug)]
pub struct Discovery {
    /// The property.
    pub property: &'static str,
    /// Whether it is a failure (an `always` property violated) rather than an example of a
    /// `sometimes` property.
    pub failure: bool,
    /// The path from the start state: each state with the action taken from it (none for the
    /// last state).
    pub path: Vec<(ModelState, Option<Action>)>,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// States generated (with repeats).
    pub states: usize,
    /// Distinct states (by digest).
    pub unique_states: usize,
    /// Deepest state reached, as stateright counts it (the start state is depth 1; with a
    /// `max_steps` bound, states at depth `max_steps + 2` are generated but not checked).
    pub max_depth: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether the run stopped on its timeout (then the counts are a lower bound).
    pub timed_out: bool,
    /// Every discovery, failures first, then by property name.
    pub discoveries: Vec<Discovery>,
}

impl CheckReport {
    /// Names of the `always` properties violated.
    pub fn failures(&self) -> Vec<&'static str> {
        self.discoveries
            .iter()
            .filter(|d| d.failure)
            .map(|d| d.property)
            .collect()
    }

    /// Names of the `sometimes` properties reached.
    pub fn reached(&self) -> Vec<&'static str> {
        self.discoveries
            .iter()
            .filter(|d| !d.failure)
            .map(|d| d.property)
            .collect()
    }

    /// The discovery for `property`, if any.
    pub fn discovery(&self, property: &str) -> Option<&Discovery> {
        self.discoveries.iter().find(|d| d.property == property)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} unique states, {} generated, max depth {}, {:.1} s{}; failed: {:?}; reached: {:?}",
            self.unique_states,
            self.states,
            self.max_depth,
            self.elapsed.as_secs_f64(),
            if self.timed_out { " (timed out)" } else { "" },
            self.failures(),
            self.reached()
        )
    }
}

/// Runs a breadth-first search of `model` (shortest counterexamples first).
pub fn check(model: PaxosModel, opts: &CheckOptions) -> CheckReport {
    let expectations: Vec<(&'static str, bool)> = model
        .properties()
        .iter()
        .map(|p| (p.name, p.expectation.discovery_is_failure()))
        .collect();
    let mut builder = model.checker().threads(opts.threads.max(1));
    if let Some(steps) = opts.max_steps {
        // stateright counts the start state as depth 1 and skips states at the target depth.
        builder = builder.target_max_depth(steps + 2);
    }
    if let Some(p) = opts.stop_at {
        builder = builder.finish_when(HasDiscoveries::AnyOf([p].into_iter().collect()));
    } else if opts.stop_at_first_failure {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    if let Some(t) = opts.timeout {
        builder = builder.timeout(t);
    }
    let started = Instant::now();
    let checker = builder.spawn_bfs().join();
    let elapsed = started.elapsed();
    let mut discoveries: Vec<Discovery> = checker
        .discoveries()
        .into_iter()
        .map(|(property, path)| Discovery {
            property,
            failure: expectations
                .iter()
                .any(|(name, failure)| *name == property && *failure),
            path: path.into_vec(),
        })
        .collect();
    discoveries.sort_by_key(|d| (!d.failure, d.property));
    CheckReport {
        states: checker.state_count(),
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        elapsed,
        timed_out: opts.timeout.is_some_and(|t| elapsed >= t),
        discoveries,
    }
}

/// Renders a discovery's path: one line per action, then the last state.
pub fn format_trace(model: &PaxosModel, d: &Discovery) -> String {
    let mut out = format!(
        "{} `{}` after {} steps from the start state:\n",
        if d.failure {
            "counterexample to"
        } else {
            "example of"
        },
        d.property,
        d.path.len().saturating_sub(1)
    );
    for (i, (_, action)) in d.path.iter().enumerate() {
        if let Some(a) = action {
            out.push_str(&format!("{:>3}. {}\n", i + 1, format_action(model, a)));
        }
    }
    if let Some((last, _)) = d.path.last() {
        out.push_str("last state:\n");
        out.push_str(&format!("{last:?}\n"));
    }
    out
}

/// One action, in words.
pub fn format_action(model: &PaxosModel, a: &Action) -> String {
    match a {
        Action::Submit(i) => {
            let u = model.config().updates[*i];
            format!(
                "client c{} submits c{}/{} to n{}",
                u.client, u.client, u.timestamp, u.server
            )
        }
        Action::Elect { node, view } => format!("{node}: election asks to install {view}"),
        Action::Deliver(p) => format!("deliver {p:?}"),
        Action::DeliverCopy(p) => format!("deliver {p:?} (a copy stays in flight)"),
        Action::Drain(n) => format!("{n}: drain (write batches, send, reply)"),
        Action::Persist(n) => format!("{n}: writes synced (handle_persisted)"),
        Action::Tick(n) => format!("{n}: tick"),
        Action::Crash(n) => format!("{n}: CRASH and restart (unsynced writes lost)"),
    }
}
