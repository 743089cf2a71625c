//! Figures of the election experiment (`paxos-sim elections --out DIR`), drawn with plotters into
//! PNG and SVG.
//!
//! Text needs a TrueType font, read at run time (plotters' `ab_glyph` backend, no system font
//! library): `$PAXOS_SIM_FONT` if set, else the first of a few common DejaVu/Liberation paths.
//! Without one, [`load_font`] fails and no figure is drawn.

use crate::elections::ElectionOutcome;
use paxos_election::Sample;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;
use plotters::style::{register_font, FontStyle};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const FONT_PATHS: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// The family name every figure's text uses (registered by [`load_font`]).
pub const FONT: &str = "sans-serif";

/// Finds a TrueType font and registers it with plotters (once per process); returns its path.
pub fn load_font() -> Result<PathBuf, String> {
    load_font_from(&["PAXOS_SIM_FONT"])
}

/// [`load_font`], trying the files named by the environment variables `env` first. The first call
/// in a process decides; later calls return its outcome (plotters' font registry is global).
pub fn load_font_from(env: &[&str]) -> Result<PathBuf, String> {
    static LOADED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let candidates: Vec<PathBuf> = env
                .iter()
                .filter_map(std::env::var_os)
                .map(PathBuf::from)
                .chain(FONT_PATHS.iter().map(PathBuf::from))
                .collect();
            for path in candidates {
                if let Ok(bytes) = std::fs::read(&path) {
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    if register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                        return Ok(path);
                    }
                }
            }
            Err(format!(
                "no TrueType font found (set {} or install fonts-dejavu-core; tried {})",
                env.first().copied().unwrap_or("a font path"),
                FONT_PATHS.join(", ")
            ))
        })
        .clone()
}

/// The colour of the `i`-th curve or series (table order of strategies: psb, highest-id, omega,
/// ble); shared with `paxos-bench`'s figures.
pub fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// Draws one figure twice, as `stem.png` and `stem.svg` in `dir` (which must exist), at `size`
/// pixels; returns the paths written. The font must be registered first ([`load_font`]).
pub fn write_png_svg<E>(
    dir: &Path,
    stem: &str,
    size: (u32, u32),
    draw: impl Fn(DrawingArea<BitMapBackend, Shift>) -> Result<(), E>,
    draw_svg: impl Fn(DrawingArea<SVGBackend, Shift>) -> Result<(), E>,
) -> Result<Vec<PathBuf>, E> {
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    draw(BitMapBackend::new(&png, size).into_drawing_area())?;
    draw_svg(SVGBackend::new(&svg, size).into_drawing_area())?;
    Ok(vec![png, svg])
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Grouped bars: per group (scenario) one bar per series (strategy).
#[derive(Clone, Debug)]
pub struct Bars {
    /// Figure title.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Series names, in legend order.
    pub series: Vec<String>,
    /// Per group: its name and one value per series (`None`: no bar).
    pub groups: Vec<(String, Vec<Option<f64>>)>,
}

impl Bars {
    /// Median unavailability per scenario and strategy: the time without newly executed updates
    /// after the fault start, `(1 − ordering fraction) × measured span`, median over the seeds.
    pub fn unavailability(
        outcome: &ElectionOutcome,
        scenarios: &[paxos_election::Scenario],
    ) -> Bars {
        let mut series: Vec<String> = vec![];
        for r in &outcome.runs {
            if !series.contains(&r.strategy.name().to_string()) {
                series.push(r.strategy.name().to_string());
            }
        }
        let groups = scenarios
            .iter()
            .enumerate()
            .map(|(i, sc)| {
                let span = (sc
                    .duration
                    .saturating_sub(sc.fault_start.saturating_since(paxos_core::Time::ZERO)))
                .as_secs_f64();
                let values = series
                    .iter()
                    .map(|st| {
                        let mut v: Vec<f64> = outcome
                            .runs
                            .iter()
                            .filter(|r| r.scenario == i && r.strategy.name() == st)
                            .map(|r| (1.0 - r.result.metrics.ordering_fraction) * span)
                            .collect();
                        v.sort_by(f64::total_cmp);
                        v.get(v.len() / 2).copied()
                    })
                    .collect();
                (sc.name.to_string(), values)
            })
            .collect();
        Bars {
            title: "Unavailability after the fault start (median over seeds; simulator)".into(),
            y_label: "seconds without newly executed updates".into(),
            series,
            groups,
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let max = self
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().flatten())
            .copied()
            .fold(0.0_f64, f64::max);
        let top = (max * 1.12).max(1.0);
        let n = self.groups.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, (FONT, 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(&self.y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(err)?;
        let k = self.series.len().max(1) as f64;
        let width = 0.8 / k;
        for (s, name) in self.series.iter().enumerate() {
            let c = colour(s);
            let bars: Vec<(f64, f64)> = self
                .groups
                .iter()
                .enumerate()
                .filter_map(|(g, (_, v))| v.get(s).copied().flatten().map(|y| (g as f64, y)))
                .collect();
            chart
                .draw_series(bars.iter().map(|&(g, y)| {
                    let x0 = g + 0.1 + s as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.92, y)], c.filled())
                }))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
            chart
                .draw_series(bars.iter().map(|&(g, y)| {
                    let x = g + 0.1 + (s as f64 + 0.5) * width;
                    Text::new(
                        format!("{y:.1}"),
                        (x, y + top * 0.005),
                        (FONT, 10)
                            .into_font()
                            .color(&BLACK)
                            .pos(text_anchor::Pos::new(
                                text_anchor::HPos::Center,
                                text_anchor::VPos::Bottom,
                            )),
                    )
                }))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 15))
            .draw()
            .map_err(err)?;
        let style = (FONT, 14)
            .into_font()
            .color(&BLACK)
            .pos(text_anchor::Pos::new(
                text_anchor::HPos::Center,
                text_anchor::VPos::Top,
            ));
        for (g, (name, _)) in self.groups.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            root.draw(&Text::new(name.as_str(), (px, py + 8), style.clone()))
                .map_err(err)?;
        }
        root.present().map_err(err)
    }

    /// Writes `stem.png` and `stem.svg` in `dir`; returns the paths written.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
        load_font()?;
        let size = (1500, 620);
        write_png_svg(dir, stem, size, |a| self.draw(a), |a| self.draw(a))
    }
}

/// One line of a [`Timelines`] panel: the strategy and its `(second, updates per second)` points.
pub type Line = (String, Vec<(f64, f64)>);

/// Throughput over time of one run per strategy, one panel per scenario.
#[derive(Clone, Debug)]
pub struct Timelines {
    /// Figure title.
    pub title: String,
    /// Per panel: scenario name, fault start (s), and per strategy its name and the updates
    /// executed in each second (`(second, updates)`).
    pub panels: Vec<(String, f64, Vec<Line>)>,
}

/// Updates executed per `bucket`, as (bucket start in seconds, updates per second).
pub fn throughput(samples: &[Sample], bucket: Duration) -> Vec<(f64, f64)> {
    let b = bucket.max(Duration::from_millis(1));
    let bs = b.as_secs_f64();
    let mut out = vec![];
    let mut start = match samples.first() {
        Some(s) => s.at,
        None => return out,
    };
    let mut base = samples[0].executed;
    let mut last = base;
    for s in samples {
        while s.at >= start + b {
            out.push((
                start.saturating_since(paxos_core::Time::ZERO).as_secs_f64(),
                (last - base) as f64 / bs,
            ));
            start = start + b;
            base = last;
        }
        last = s.executed;
    }
    out
}

impl Timelines {
    /// The kept timelines of `outcome` for the scenarios named in `names`, seed `seed`.
    pub fn from_outcome(
        outcome: &ElectionOutcome,
        scenarios: &[paxos_election::Scenario],
        names: &[&str],
        seed: u64,
    ) -> Timelines {
        let panels = names
            .iter()
            .filter_map(|name| {
                let i = scenarios.iter().position(|s| s.name == *name)?;
                let lines: Vec<Line> = outcome
                    .runs
                    .iter()
                    .filter(|r| r.scenario == i && r.seed == seed && !r.result.samples.is_empty())
                    .map(|r| {
                        (
                            r.strategy.name().to_string(),
                            throughput(&r.result.samples, Duration::from_secs(1)),
                        )
                    })
                    .collect();
                let start = scenarios[i]
                    .fault_start
                    .saturating_since(paxos_core::Time::ZERO)
                    .as_secs_f64();
                (!lines.is_empty()).then(|| (name.to_string(), start, lines))
            })
            .collect();
        Timelines {
            title: format!("Updates executed per second, seed {seed} (simulator)"),
            panels,
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let (title, body) = root.split_vertically(40);
        title.titled(&self.title, (FONT, 22)).map_err(err)?;
        let rows = self.panels.len().max(1);
        let areas = body.split_evenly((rows, 1));
        for ((name, start, lines), area) in self.panels.iter().zip(areas) {
            let x_max = lines
                .iter()
                .flat_map(|(_, l)| l.iter().map(|p| p.0))
                .fold(1.0_f64, f64::max)
                + 1.0;
            let y_max = lines
                .iter()
                .flat_map(|(_, l)| l.iter().map(|p| p.1))
                .fold(1.0_f64, f64::max)
                * 1.1;
            let mut chart = ChartBuilder::on(&area)
                .caption(name.as_str(), (FONT, 18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("simulated time, s")
                .y_desc("updates/s")
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw()
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*start, 0.0), (*start, y_max)],
                    BLACK.mix(0.4),
                )))
                .map_err(err)?;
            for (s, (strategy, points)) in lines.iter().enumerate() {
                let c = colour(s);
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
                    .map_err(err)?
                    .label(strategy.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(3))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font((FONT, 13))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)
    }

    /// Writes `stem.png` and `stem.svg` in `dir`; returns the paths written.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
        load_font()?;
        let size = (1400, 330 * self.panels.len().max(1) as u32 + 40);
        write_png_svg(dir, stem, size, |a| self.draw(a), |a| self.draw(a))
    }
}
