//! Metrics of the election A/B experiment, computed from a sampled timeline, and the report.
//!
//! A driver samples the cluster at a fixed interval into [`Sample`]s: per server the view it is
//! regular in, and how many updates the cluster has executed. [`RunMetrics::compute`] turns one
//! run's timeline into the five numbers of issue #5; a [`Report`] collects runs per
//! (strategy, scenario) cell and renders them as a Markdown table, CSV or JSON.

use paxos_core::{Time, View};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The cluster at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When the sample was taken.
    pub at: Time,
    /// Per server: `Some(last_installed)` when it is regular (leader or non-leader) in that view,
    /// `None` when it is down or in leader election.
    pub views: Vec<Option<View>>,
    /// Updates executed so far, cluster-wide (the highest local aru among the servers is a good
    /// measure; it must not decrease).
    pub executed: u64,
}

impl Sample {
    /// The view with a working leader, if any: a majority of servers is regular in it, its leader
    /// among them.
    pub fn leader_view(&self) -> Option<View> {
        let n = self.views.len();
        if n == 0 {
            return None;
        }
        let majority = n / 2 + 1;
        self.views.iter().flatten().copied().find(|v| {
            self.views.get(v.leader(n).index()) == Some(&Some(*v))
                && self.views.iter().filter(|w| **w == Some(*v)).count() >= majority
        })
    }
}

/// How runs are judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// A leader is stable once its view has held this long without interruption.
    pub stable_for: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            stable_for: Duration::from_secs(2),
        }
    }
}

/// The measured numbers of one run, from the fault start to the end of the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunMetrics {
    /// From the fault start until a leader view began that then held for `stable_for`
    /// (`None`: never).
    pub time_to_stable: Option<Duration>,
    /// How many times the leader view changed (gaps without a leader do not count by themselves).
    pub leader_changes: u64,
    /// Fraction of the time in which the cluster executed new updates (per sampling interval).
    pub ordering_fraction: f64,
    /// Updates executed per simulated second.
    pub updates_per_second: f64,
    /// The longest interval without a newly executed update (resolution: the sample interval).
    pub longest_stall: Duration,
}

impl RunMetrics {
    /// Computes the metrics of the samples taken at or after `from` (the scenario's fault start).
    /// Samples must be in time order.
    pub fn compute(samples: &[Sample], from: Time, config: &MetricsConfig) -> RunMetrics {
        let s: Vec<&Sample> = samples.iter().filter(|s| s.at >= from).collect();
        let (Some(first), Some(last)) = (s.first(), s.last()) else {
            return RunMetrics {
                time_to_stable: None,
                leader_changes: 0,
                ordering_fraction: 0.0,
                updates_per_second: 0.0,
                longest_stall: Duration::ZERO,
            };
        };
        let views: Vec<Option<View>> = s.iter().map(|x| x.leader_view()).collect();

        // Time to a stable leader.
        let mut time_to_stable = None;
        let mut i = 0;
        while i < s.len() {
            let Some(v) = views[i] else {
                i += 1;
                continue;
            };
            let mut j = i;
            while j + 1 < s.len() && views[j + 1] == Some(v) {
                j += 1;
            }
            // The view holds on [s[i].at, s[j+1].at) (or to the end of the run).
            let held_until = s.get(j + 1).map_or(last.at, |x| x.at);
            if held_until.saturating_since(s[i].at) >= config.stable_for {
                time_to_stable = Some(s[i].at.saturating_since(from));
                break;
            }
            i = j + 1;
        }

        let mut leader_changes = 0;
        let mut current: Option<View> = None;
        for v in views.iter().flatten() {
            if current.is_some_and(|c| c != *v) {
                leader_changes += 1;
            }
            current = Some(*v);
        }

        let mut ordering = Duration::ZERO;
        let mut longest_stall = Duration::ZERO;
        let mut last_progress = from;
        for w in s.windows(2) {
            if w[1].executed > w[0].executed {
                ordering += w[1].at.saturating_since(w[0].at);
                longest_stall = longest_stall.max(w[1].at.saturating_since(last_progress));
                last_progress = w[1].at;
            }
        }
        longest_stall = longest_stall.max(last.at.saturating_since(last_progress));
        let span = last.at.saturating_since(first.at.min(from));
        let span_s = span.as_secs_f64();
        let executed = last.executed.saturating_sub(first.executed);
        RunMetrics {
            time_to_stable,
            leader_changes,
            ordering_fraction: if span_s > 0.0 {
                ordering.as_secs_f64() / span_s
            } else {
                0.0
            },
            updates_per_second: if span_s > 0.0 {
                executed as f64 / span_s
            } else {
                0.0
            },
            longest_stall,
        }
    }
}

/// A one-line text figure of a run, one character per `bucket` from `from` on:
/// `#` new updates executed under the same leader, `+` executed and the leader view changed,
/// `.` nothing executed, `x` nothing executed and the leader view changed.
pub fn strip(samples: &[Sample], from: Time, bucket: Duration) -> String {
    let bucket = bucket.max(Duration::from_nanos(1));
    let mut out = String::new();
    let mut prev_exec = None;
    let mut prev_leader: Option<View> = None;
    let mut start = from;
    let mut progress = false;
    let mut changed = false;
    let mut any = false;
    let symbol = |progress: bool, changed: bool| match (progress, changed) {
        (true, false) => '#',
        (true, true) => '+',
        (false, false) => '.',
        (false, true) => 'x',
    };
    for s in samples {
        if s.at < from {
            prev_exec = Some(s.executed);
            prev_leader = s.leader_view().or(prev_leader);
            continue;
        }
        while s.at >= start + bucket {
            if any {
                out.push(symbol(progress, changed));
            }
            start = start + bucket;
            progress = false;
            changed = false;
            any = true;
        }
        any = true;
        if prev_exec.is_some_and(|e| s.executed > e) {
            progress = true;
        }
        prev_exec = Some(s.executed);
        if let Some(v) = s.leader_view() {
            if prev_leader.is_some_and(|p| p != v) {
                changed = true;
            }
            prev_leader = Some(v);
        }
    }
    if any {
        out.push(symbol(progress, changed));
    }
    out
}

/// One run's result, as recorded in a [`Report`].
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Strategy name (see [`crate::Strategy`]).
    pub strategy: String,
    /// Scenario name.
    pub scenario: String,
    /// The run's seed.
    pub seed: u64,
    /// Its metrics.
    pub metrics: RunMetrics,
}

/// The aggregate of one (strategy, scenario) cell over its seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct CellSummary {
    /// Strategy name.
    pub strategy: String,
    /// Scenario name.
    pub scenario: String,
    /// Number of runs (seeds).
    pub runs: usize,
    /// Runs that reached a stable leader.
    pub stabilized: usize,
    /// Median time to a stable leader among the runs that reached one.
    pub time_to_stable_median: Option<Duration>,
    /// Worst time to a stable leader among the runs that reached one.
    pub time_to_stable_max: Option<Duration>,
    /// Mean number of leader changes.
    pub leader_changes_mean: f64,
    /// Most leader changes in one run.
    pub leader_changes_max: u64,
    /// Mean fraction of time ordering.
    pub ordering_fraction_mean: f64,
    /// Lowest fraction of time ordering in one run.
    pub ordering_fraction_min: f64,
    /// Mean updates per simulated second.
    pub updates_per_second_mean: f64,
    /// Median longest stall.
    pub longest_stall_median: Duration,
    /// Worst longest stall.
    pub longest_stall_max: Duration,
}

/// Results of an experiment, by cell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    runs: Vec<RunRecord>,
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "null".into()
    }
}

fn json_opt_secs(d: Option<Duration>) -> String {
    d.map_or("null".into(), |d| json_num(d.as_secs_f64()))
}

impl Report {
    /// An empty report.
    pub fn new() -> Report {
        Report::default()
    }

    /// Records one run.
    pub fn add(&mut self, strategy: &str, scenario: &str, seed: u64, metrics: RunMetrics) {
        self.runs.push(RunRecord {
            strategy: strategy.to_string(),
            scenario: scenario.to_string(),
            seed,
            metrics,
        });
    }

    /// Every run recorded, in insertion order.
    pub fn runs(&self) -> &[RunRecord] {
        &self.runs
    }

    /// One summary per cell, in order of first appearance (scenario-major).
    pub fn summaries(&self) -> Vec<CellSummary> {
        let mut order: Vec<(String, String)> = vec![];
        let mut cells: BTreeMap<(String, String), Vec<&RunMetrics>> = BTreeMap::new();
        for r in &self.runs {
            let key = (r.scenario.clone(), r.strategy.clone());
            if !cells.contains_key(&key) {
                order.push(key.clone());
            }
            cells.entry(key).or_default().push(&r.metrics);
        }
        order.sort_by_key(|k| self.runs.iter().position(|r| r.scenario == k.0));
        order
            .into_iter()
            .map(|key| {
                let ms = &cells[&key];
                let n = ms.len();
                let stable: Vec<Duration> = ms.iter().filter_map(|m| m.time_to_stable).collect();
                let mean = |f: &dyn Fn(&RunMetrics) -> f64| {
                    ms.iter().map(|m| f(m)).sum::<f64>() / n.max(1) as f64
                };
                CellSummary {
                    strategy: key.1.clone(),
                    scenario: key.0.clone(),
                    runs: n,
                    stabilized: stable.len(),
                    time_to_stable_max: stable.iter().max().copied(),
                    time_to_stable_median: median(stable),
                    leader_changes_mean: mean(&|m| m.leader_changes as f64),
                    leader_changes_max: ms.iter().map(|m| m.leader_changes).max().unwrap_or(0),
                    ordering_fraction_mean: mean(&|m| m.ordering_fraction),
                    ordering_fraction_min: ms
                        .iter()
                        .map(|m| m.ordering_fraction)
                        .fold(f64::INFINITY, f64::min),
                    updates_per_second_mean: mean(&|m| m.updates_per_second),
                    longest_stall_median: median(ms.iter().map(|m| m.longest_stall).collect())
                        .unwrap_or_default(),
                    longest_stall_max: ms.iter().map(|m| m.longest_stall).max().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The per-cell table in Markdown (times in seconds).
    pub fn to_markdown(&self) -> String {
        let mut out = String::from(
            "| scenario | strategy | runs | stable | time to stable s, median (max) | leader changes, mean (max) | ordering % of time, mean (min) | updates/s | longest stall s, median (max) |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for c in self.summaries() {
            let tts = match (c.time_to_stable_median, c.time_to_stable_max) {
                (Some(m), Some(x)) => format!("{} ({})", secs(m), secs(x)),
                _ => "never".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}/{} | {} | {:.1} ({}) | {:.1} ({:.1}) | {:.0} | {} ({}) |",
                c.scenario,
                c.strategy,
                c.runs,
                c.stabilized,
                c.runs,
                tts,
                c.leader_changes_mean,
                c.leader_changes_max,
                100.0 * c.ordering_fraction_mean,
                100.0 * c.ordering_fraction_min,
                c.updates_per_second_mean,
                secs(c.longest_stall_median),
                secs(c.longest_stall_max),
            );
        }
        out
    }

    /// A scenario × strategy matrix: per cell the mean ordering percentage, the mean number of
    /// leader changes and the worst stall, as `ordering% / changes / stall s`.
    pub fn to_markdown_matrix(&self) -> String {
        let cells = self.summaries();
        let mut strategies: Vec<&str> = vec![];
        let mut scenarios: Vec<&str> = vec![];
        for c in &cells {
            if !strategies.contains(&c.strategy.as_str()) {
                strategies.push(&c.strategy);
            }
            if !scenarios.contains(&c.scenario.as_str()) {
                scenarios.push(&c.scenario);
            }
        }
        let mut out = format!("| scenario | {} |\n|---|", strategies.join(" | "));
        out.push_str(&"---:|".repeat(strategies.len()));
        out.push('\n');
        for sc in &scenarios {
            let _ = write!(out, "| {sc} |");
            for st in &strategies {
                match cells
                    .iter()
                    .find(|c| c.scenario == *sc && c.strategy == *st)
                {
                    Some(c) => {
                        let _ = write!(
                            out,
                            " {:.0}% / {:.1} / {} |",
                            100.0 * c.ordering_fraction_mean,
                            c.leader_changes_mean,
                            secs(c.longest_stall_max)
                        );
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// One CSV row per run (times in seconds; empty when a run never stabilised).
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "scenario,strategy,seed,time_to_stable_s,leader_changes,ordering_fraction,updates_per_second,longest_stall_s\n",
        );
        for r in &self.runs {
            let m = &r.metrics;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{:.4},{:.2},{:.3}",
                r.scenario,
                r.strategy,
                r.seed,
                m.time_to_stable
                    .map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64())),
                m.leader_changes,
                m.ordering_fraction,
                m.updates_per_second,
                m.longest_stall.as_secs_f64(),
            );
        }
        out
    }

    /// The cell summaries as a JSON array of objects (times in seconds; `null` for never).
    pub fn to_json(&self) -> String {
        let cells: Vec<String> = self
            .summaries()
            .iter()
            .map(|c| {
                format!(
                    "{{\"scenario\":{},\"strategy\":{},\"runs\":{},\"stabilized\":{},\"time_to_stable_median_s\":{},\"time_to_stable_max_s\":{},\"leader_changes_mean\":{},\"leader_changes_max\":{},\"ordering_fraction_mean\":{},\"ordering_fraction_min\":{},\"updates_per_second_mean\":{},\"longest_stall_median_s\":{},\"longest_stall_max_s\":{}}}",
                    json_str(&c.scenario),
                    json_str(&c.strategy),
                    c.runs,
                    c.stabilized,
                    json_opt_secs(c.time_to_stable_median),
                    json_opt_secs(c.time_to_stable_max),
                    json_num(c.leader_changes_mean),
                    c.leader_changes_max,
                    json_num(c.ordering_fraction_mean),
                    json_num(c.ordering_fraction_min),
                    json_num(c.updates_per_second_mean),
                    json_num(c.longest_stall_median.as_secs_f64()),
                    json_num(c.longest_stall_max.as_secs_f64()),
                )
            })
            .collect();
        format!("[\n  {}\n]\n", cells.join(",\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every 100 ms from a compact description: per step (leader view or none, executed).
    fn timeline(steps: &[(Option<u64>, u64)]) -> Vec<Sample> {
        steps
            .iter()
            .enumerate()
            .map(|(i, (v, e))| Sample {
                at: Time::from_millis(100 * i as u64),
                // 3 servers: leader and one follower regular in v, or nobody regular.
                views: match v {
                    Some(v) => {
                        let mut views = vec![None; 3];
                        views[(*v % 3) as usize] = Some(View(*v));
                        views[((*v + 1) % 3) as usize] = Some(View(*v));
                        views
                    }
                    None => vec![None; 3],
                },
                executed: *e,
            })
            .collect()
    }

    #[test]
    fn leader_view_needs_a_majority_including_the_leader() {
        let s = Sample {
            at: Time::ZERO,
            views: vec![Some(View(4)), Some(View(4)), None, Some(View(3)), None],
            executed: 0,
        };
        // View 4's leader (4 mod 5 = server 4) is not regular in it.
        assert_eq!(s.leader_view(), None);
        let s = Sample {
            views: vec![Some(View(2)), Some(View(2)), Some(View(2)), None, None],
            ..s
        };
        assert_eq!(s.leader_view(), Some(View(2)));
    }

    #[test]
    fn metrics_of_a_crash_and_reelection() {
        // Leader v1 ordering, crash at 0.3 s, no leader until 0.8 s, then v2 ordering to the end.
        let mut steps = vec![(Some(1), 0), (Some(1), 10), (Some(1), 20), (Some(1), 30)];
        steps.extend([(None, 30); 4]);
        for k in 0..30 {
            steps.push((Some(2), 40 + 10 * k));
        }
        let samples = timeline(&steps);
        let cfg = MetricsConfig {
            stable_for: Duration::from_secs(1),
        };
        let m = RunMetrics::compute(&samples, Time::from_millis(300), &cfg);
        assert_eq!(m.leader_changes, 1);
        assert_eq!(m.time_to_stable, Some(Duration::from_millis(500)));
        // No progress from 0.3 s (last increase) to 0.8 s: stall of 0.5 s.
        assert_eq!(m.longest_stall, Duration::from_millis(500));
        // Executed 30 -> 330 over 3.4 s.
        assert!((m.updates_per_second - 300.0 / 3.4).abs() < 1e-9);
        // Progress in 30 of 34 intervals.
        assert!((m.ordering_fraction - 30.0 / 34.0).abs() < 1e-9);
    }

    #[test]
    fn strip_marks_progress_stalls_and_changes() {
        // 0.0–0.3 s v1 ordering; 0.4–0.7 s no leader, no progress; 0.8 s on v2 ordering.
        let mut steps = vec![(Some(1), 0), (Some(1), 10), (Some(1), 20), (Some(1), 30)];
        steps.extend([(None, 30); 4]);
        steps.extend((0..4).map(|k| (Some(2), 40 + 10 * k)));
        let s = strip(&timeline(&steps), Time::ZERO, Duration::from_millis(400));
        assert_eq!(s, "#.+");
    }

    #[test]
    fn flapping_leader_never_stabilises() {
        let steps: Vec<(Option<u64>, u64)> = (0..60)
            .map(|i| (Some(if (i / 5) % 2 == 0 { 1 } else { 2 }), i))
            .collect();
        let m = RunMetrics::compute(&timeline(&steps), Time::ZERO, &MetricsConfig::default());
        assert_eq!(m.time_to_stable, None);
        assert_eq!(m.leader_changes, 11);
    }

    #[test]
    fn report_formats_every_cell() {
        let mut r = Report::new();
        let m = RunMetrics {
            time_to_stable: Some(Duration::from_millis(1500)),
            leader_changes: 2,
            ordering_fraction: 0.5,
            updates_per_second: 100.0,
            longest_stall: Duration::from_secs(3),
        };
        r.add("omega", "crash-loop", 1, m);
        r.add(
            "omega",
            "crash-loop",
            2,
            RunMetrics {
                time_to_stable: None,
                ..m
            },
        );
        r.add("psb", "crash-loop", 1, m);
        let s = r.summaries();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].runs, 2);
        assert_eq!(s[0].stabilized, 1);
        let md = r.to_markdown();
        assert!(md.contains("| crash-loop | omega | 2 | 1/2 | 1.50 (1.50) |"));
        assert_eq!(r.to_csv().lines().count(), 4);
        let matrix = r.to_markdown_matrix();
        assert!(matrix.starts_with("| scenario | omega | psb |"));
        assert!(matrix.contains("| crash-loop | 50% / 2.0 / 3.00 | 50% / 2.0 / 3.00 |"));
        let json = r.to_json();
        assert!(json.contains("\"strategy\":\"psb\""));
        assert!(json.contains("\"time_to_stable_median_s\":1.5000"));
    }
}
