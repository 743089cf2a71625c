//! The paper's experiments (section 17 of the protocol notes) scaled to this machine.
//!
//! The paper ran 4–20 servers on 20 dual-processor machines; here every server and every client
//! share two cores, so the sweeps use 3, 5 and 7 servers and client counts up to a few hundred,
//! with short measured intervals so the whole set finishes in well under 20 minutes:
//!
//! | sweep | our configuration | paper figures |
//! |---|---|---|
//! | `nodisk-noagg` | memory storage, durability none, aggregation off | TR 17 / 18 (LADIS 2) |
//! | `nodisk-agg` | memory storage, durability none, aggregation on | TR 31 / 32 (LADIS 4) |
//! | `sync-noagg` | WAL storage, durability sync, aggregation off | TR 21 / 22 (LADIS 3 / 6) |
//! | `sync-agg` | WAL storage, durability sync, aggregation on | TR 33 / 34 (LADIS 5 / 7) |
//! | `servers-*` | memory, none; N = 3…7 at 25 clients (aggregation off / on) and 256 clients (on) | TR 29 / 30, TR 31 at 400 clients |
//!
//! Latency in the figures is the mean (the paper's "client-weighted mean latency").

use crate::figures::{Curve, LineFigure};
use crate::output::{Report, Row};
use crate::paper_data::{figure_series, Point};
use crate::{BenchError, ThroughputResult};
use paxos_node::config::{DurabilityChoice, StorageChoice};
use std::path::{Path, PathBuf};

/// What a sweep varies along its x axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAxis {
    /// Number of clients (one curve per server count).
    Clients,
    /// Number of servers (one curve per client count / aggregation setting).
    Servers,
}

/// One sweep: every (servers, clients) pair of one configuration.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// Group name in the results (e.g. `nodisk-agg`).
    pub id: &'static str,
    /// Human title.
    pub title: &'static str,
    /// Durability.
    pub durability: DurabilityChoice,
    /// Aggregation.
    pub aggregation: bool,
    /// Storage.
    pub storage: StorageChoice,
    /// Server counts.
    pub servers: Vec<usize>,
    /// Client counts.
    pub clients: Vec<usize>,
    /// The x axis of its figures.
    pub x: XAxis,
}

impl Sweep {
    /// The `(servers, clients)` points, in measuring order.
    pub fn points(&self) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for &n in &self.servers {
            for &c in &self.clients {
                v.push((n, c));
            }
        }
        v
    }
}

/// The sweeps of `paxos-bench paper`; `quick` keeps 3 servers and a few client counts.
pub fn sweeps(quick: bool) -> Vec<Sweep> {
    let ns = if quick { vec![3] } else { vec![3, 5, 7] };
    let pick = |full: &[usize], q: &[usize]| if quick { q.to_vec() } else { full.to_vec() };
    let servers_axis = if quick {
        vec![3, 5, 7]
    } else {
        vec![3, 4, 5, 6, 7]
    };
    vec![
        Sweep {
            id: "nodisk-noagg",
            title: "No disk writes, no aggregation",
            durability: DurabilityChoice::None,
            aggregation: false,
            storage: StorageChoice::Memory,
            servers: ns.clone(),
            clients: pick(&[1, 2, 4, 8, 16, 32, 64, 128, 200], &[1, 16, 128]),
            x: XAxis::Clients,
        },
        Sweep {
            id: "nodisk-agg",
            title: "No disk writes, aggregation",
            durability: DurabilityChoice::None,
            aggregation: true,
            storage: StorageChoice::Memory,
            servers: ns.clone(),
            clients: pick(&[1, 5, 10, 25, 50, 100, 200, 400, 800], &[1, 25, 400]),
            x: XAxis::Clients,
        },
        Sweep {
            id: "sync-noagg",
            title: "Synchronous disk writes, no aggregation",
            durability: DurabilityChoice::Sync,
            aggregation: false,
            storage: StorageChoice::Wal,
            servers: ns.clone(),
            clients: pick(&[1, 2, 5, 10, 20, 50], &[1, 20]),
            x: XAxis::Clients,
        },
        Sweep {
            id: "sync-agg",
            title: "Synchronous disk writes, aggregation",
            durability: DurabilityChoice::Sync,
            aggregation: true,
            storage: StorageChoice::Wal,
            servers: ns,
            clients: pick(&[1, 25, 50, 100, 256, 450], &[1, 256]),
            x: XAxis::Clients,
        },
        Sweep {
            id: "servers-25-noagg",
            title: "25 clients, no aggregation",
            durability: DurabilityChoice::None,
            aggregation: false,
            storage: StorageChoice::Memory,
            servers: servers_axis.clone(),
            clients: vec![25],
            x: XAxis::Servers,
        },
        Sweep {
            id: "servers-25-agg",
            title: "25 clients, aggregation",
            durability: DurabilityChoice::None,
            aggregation: true,
            storage: StorageChoice::Memory,
            servers: servers_axis.clone(),
            clients: vec![25],
            x: XAxis::Servers,
        },
        Sweep {
            id: "servers-256-agg",
            title: "256 clients, aggregation",
            durability: DurabilityChoice::None,
            aggregation: true,
            storage: StorageChoice::Memory,
            servers: servers_axis,
            clients: vec![256],
            x: XAxis::Servers,
        },
    ]
}

/// Which paper figures go beside a client sweep: `(source, throughput fig, latency fig, latency
/// unit in ms)`.
fn paper_figures(sweep: &str) -> Option<(&'static str, u32, u32, f64)> {
    match sweep {
        "nodisk-noagg" => Some(("TR", 17, 18, 1.0)),
        "nodisk-agg" => Some(("TR", 31, 32, 1.0)),
        // TR 22 plots seconds.
        "sync-noagg" => Some(("TR", 21, 22, 1000.0)),
        "sync-agg" => Some(("TR", 33, 34, 1.0)),
        _ => None,
    }
}

fn results_of<'a>(report: &'a Report, group: &str) -> Vec<&'a ThroughputResult> {
    report
        .results
        .iter()
        .filter(|r| r.group == group)
        .filter_map(|r| r.result.as_ref())
        .collect()
}

fn paper_curves(
    data: &[Point],
    source: &str,
    figure: u32,
    scale: f64,
    first_colour: usize,
) -> Vec<Curve> {
    figure_series(data, source, figure)
        .into_iter()
        .enumerate()
        .map(|(i, (name, pts))| Curve {
            label: format!("2008 hardware, {name} ({source} fig. {figure})"),
            points: pts.into_iter().map(|(x, y)| (x, y * scale)).collect(),
            colour: first_colour + i,
            paper: true,
        })
        .collect()
}

/// The figures of a paper report: `(file stem, figure)`.
pub fn build_figures(report: &Report, data: &[Point]) -> Vec<(String, LineFigure)> {
    let mut out = Vec::new();
    for sweep in sweeps(false) {
        if sweep.x != XAxis::Clients {
            continue;
        }
        let Some((src, tfig, lfig, lscale)) = paper_figures(sweep.id) else {
            continue;
        };
        let rs = results_of(report, sweep.id);
        if rs.is_empty() {
            continue;
        }
        let mut ns: Vec<usize> = rs.iter().map(|r| r.config.servers).collect();
        ns.sort_unstable();
        ns.dedup();
        let ours = |metric: &dyn Fn(&ThroughputResult) -> f64| -> Vec<Curve> {
            ns.iter()
                .enumerate()
                .map(|(i, &n)| {
                    let mut pts: Vec<(f64, f64)> = rs
                        .iter()
                        .filter(|r| r.config.servers == n)
                        .map(|r| (r.config.clients as f64, metric(r)))
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Curve {
                        label: format!("this machine, {n} servers"),
                        points: pts,
                        colour: i,
                        paper: false,
                    }
                })
                .collect()
        };
        let mut tp = ours(&|r| r.throughput);
        tp.extend(paper_curves(data, src, tfig, 1.0, 3));
        out.push((
            format!("bench-{}-throughput", sweep.id),
            LineFigure {
                title: format!("Update throughput: {}", sweep.title),
                x_label: "clients (closed loop, one outstanding 200-byte update each)".into(),
                y_label: "updates/s".into(),
                curves: tp,
            },
        ));
        let mut lat = ours(&|r| r.mean_us / 1e3);
        lat.extend(paper_curves(data, src, lfig, lscale, 3));
        out.push((
            format!("bench-{}-latency", sweep.id),
            LineFigure {
                title: format!("Update latency (mean): {}", sweep.title),
                x_label: "clients (closed loop, one outstanding 200-byte update each)".into(),
                y_label: "mean latency, ms".into(),
                curves: lat,
            },
        ));
    }
    // Throughput and latency against the number of servers.
    let groups = [
        (
            "servers-25-noagg",
            "this machine, 25 clients, no aggregation",
        ),
        ("servers-25-agg", "this machine, 25 clients, aggregation"),
        ("servers-256-agg", "this machine, 256 clients, aggregation"),
    ];
    let series = |metric: &dyn Fn(&ThroughputResult) -> f64| -> Vec<Curve> {
        groups
            .iter()
            .enumerate()
            .filter_map(|(i, (g, label))| {
                let mut pts: Vec<(f64, f64)> = results_of(report, g)
                    .iter()
                    .map(|r| (r.config.servers as f64, metric(r)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                (!pts.is_empty()).then(|| Curve {
                    label: (*label).to_owned(),
                    points: pts,
                    colour: i,
                    paper: false,
                })
            })
            .collect()
    };
    // The paper's aggregation curve against N: TR 31/32 at 400 clients, one point per N.
    let at_400 = |fig: u32| -> Vec<(f64, f64)> {
        figure_series(data, "TR", fig)
            .into_iter()
            .filter_map(|(name, pts)| {
                let n: f64 = name.split_whitespace().next()?.parse().ok()?;
                pts.iter().find(|p| p.0 == 400.0).map(|p| (n, p.1))
            })
            .collect()
    };
    let mut tp = series(&|r| r.throughput);
    if !tp.is_empty() {
        tp.extend(paper_curves(data, "TR", 29, 1.0, 3));
        tp.push(Curve {
            label: "2008 hardware, 400 clients, aggregation (TR fig. 31)".into(),
            points: at_400(31),
            colour: 4,
            paper: true,
        });
        out.push((
            "bench-servers-throughput".into(),
            LineFigure {
                title: "Update throughput against the number of servers (no disk writes)".into(),
                x_label: "servers".into(),
                y_label: "updates/s".into(),
                curves: tp,
            },
        ));
        let mut lat = series(&|r| r.mean_us / 1e3);
        lat.extend(paper_curves(data, "TR", 30, 1.0, 3));
        lat.push(Curve {
            label: "2008 hardware, 400 clients, aggregation (TR fig. 32)".into(),
            points: at_400(32),
            colour: 4,
            paper: true,
        });
        out.push((
            "bench-servers-latency".into(),
            LineFigure {
                title: "Update latency (mean) against the number of servers (no disk writes)"
                    .into(),
                x_label: "servers".into(),
                y_label: "mean latency, ms".into(),
                curves: lat,
            },
        ));
    }
    out
}

/// Draws every figure of `report` into `dir`; returns the files written.
pub fn render(report: &Report, data: &[Point], dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let mut files = Vec::new();
    for (stem, fig) in build_figures(report, data) {
        files.extend(fig.write(dir, &stem)?);
    }
    Ok(files)
}

/// A markdown summary of a paper report: one table per sweep.
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    for sweep in sweeps(false) {
        let rows: Vec<&Row> = report
            .results
            .iter()
            .filter(|r| r.group == sweep.id)
            .collect();
        if rows.is_empty() {
            continue;
        }
        s.push_str(&format!("\n**{}** (`{}`)\n\n", sweep.title, sweep.id));
        s.push_str(&crate::output::markdown_header());
        for r in rows {
            match (&r.result, &r.failed_config) {
                (Some(res), _) => s.push_str(&crate::output::markdown_row(res)),
                (None, Some(c)) => s.push_str(&format!(
                    "{}| failed: {} |||||||||\n",
                    crate::output::config_cells(c),
                    r.error.as_deref().unwrap_or("?")
                )),
                _ => {}
            }
        }
    }
    s
}
