//! Line figures (PNG and SVG, plotters) of our measurements beside the paper's digitised curves.
//!
//! Text needs a TrueType font, read at run time through plotters' `ab_glyph` backend (no system
//! font library), found the way `paxos-sim` finds one: `$PAXOS_BENCH_FONT` (or `$PAXOS_SIM_FONT`)
//! if set, else the first of a few common DejaVu/Liberation paths. Without one, drawing fails with
//! [`BenchError::Figure`] and the results files are still written.
//!
//! Both axes are logarithmic: the client counts span three decades, and throughput on this machine
//! and on the paper's 2008 cluster differ by up to two orders of magnitude (synchronous disk).

use crate::BenchError;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

use paxos_sim::figures::{colour, write_png_svg, FONT};

/// Finds a TrueType font and registers it with plotters (once per process); returns its path.
pub fn load_font() -> Result<PathBuf, BenchError> {
    paxos_sim::figures::load_font_from(&["PAXOS_BENCH_FONT", "PAXOS_SIM_FONT"])
        .map_err(BenchError::Figure)
}

/// One line of a figure.
#[derive(Clone, Debug)]
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points, sorted by x.
    pub points: Vec<(f64, f64)>,
    /// Colour index (same index, same hue).
    pub colour: usize,
    /// A curve of the paper (drawn dashed and lighter, "2008 hardware").
    pub paper: bool,
}

/// A figure: curves on log–log axes.
#[derive(Clone, Debug)]
pub struct LineFigure {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The curves, ours first.
    pub curves: Vec<Curve>,
}

fn err<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Figure(e.to_string())
}

/// A log-axis range around `values` with some margin (powers of ten at the ends).
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf((lo.log10() - 0.05).floor());
    let hi = 10f64.powf((hi.log10() + 0.05).ceil());
    (lo, hi.max(lo * 10.0))
}

impl LineFigure {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), BenchError> {
        root.fill(&WHITE).map_err(err)?;
        let pts = || self.curves.iter().flat_map(|c| c.points.iter());
        let (x0, x1) = log_range(pts().map(|p| p.0));
        let (y0, y1) = log_range(pts().map(|p| p.1));
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, (FONT, 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| {
                if *v >= 1000.0 {
                    format!("{:.0}k", v / 1000.0)
                } else if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .draw()
            .map_err(err)?;
        for c in &self.curves {
            let pts: Vec<(f64, f64)> = c
                .points
                .iter()
                .copied()
                .filter(|p| p.0 > 0.0 && p.1 > 0.0)
                .collect();
            if pts.is_empty() {
                continue;
            }
            let col = colour(c.colour);
            if c.paper {
                let style = col.mix(0.55).stroke_width(2);
                chart
                    .draw_series(DashedLineSeries::new(pts.iter().copied(), 7, 5, style))
                    .map_err(err)?
                    .label(c.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 6, y)], col.mix(0.55).stroke_width(2))
                    });
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| TriangleMarker::new(p, 4, col.mix(0.55).filled())),
                    )
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(3)))
                    .map_err(err)?
                    .label(c.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(3))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, col.filled())))
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)
    }

    /// Writes `stem.png` and `stem.svg` in `dir`; returns the paths written.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, BenchError> {
        load_font()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::Io(format!("{}: {e}", dir.display())))?;
        write_png_svg(dir, stem, (1100, 700), |a| self.draw(a), |a| self.draw(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_range_covers_values_in_decades() {
        assert_eq!(log_range([3.0, 450.0].into_iter()), (1.0, 1000.0));
        assert_eq!(log_range(std::iter::empty()), (1.0, 10.0));
    }
}
