//! The paper's digitised figures (`data/psb-figures.csv`, a copy of the shared
//! `psb-figures.csv`), embedded so the bench draws them without network or path assumptions.
//!
//! Columns: `source,figure,caption,series,x,y`; `source` is `TR` (the technical report) or
//! `LADIS` (the workshop paper), `series` names the number of servers (`4 servers`) or
//! `25 clients`.

use crate::BenchError;

/// The embedded CSV.
pub const PSB_FIGURES_CSV: &str = include_str!("../data/psb-figures.csv");

/// One digitised point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// `TR` or `LADIS`.
    pub source: String,
    /// Figure number within the source.
    pub figure: u32,
    /// The figure's caption.
    pub caption: String,
    /// The series (e.g. `4 servers`).
    pub series: String,
    /// X value (clients or servers).
    pub x: f64,
    /// Y value (updates/s, or latency in the figure's unit).
    pub y: f64,
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Parses CSV text of this shape.
pub fn parse(text: &str) -> Result<Vec<Point>, BenchError> {
    let mut points = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f = split_csv(line);
        let bad = || BenchError::PaperData(format!("line {}: {line:?}", n + 1));
        if f.len() != 6 {
            return Err(bad());
        }
        points.push(Point {
            source: f[0].clone(),
            figure: f[1].parse().map_err(|_| bad())?,
            caption: f[2].clone(),
            series: f[3].clone(),
            x: f[4].parse().map_err(|_| bad())?,
            y: f[5].parse().map_err(|_| bad())?,
        });
    }
    Ok(points)
}

/// The embedded data.
pub fn embedded() -> Vec<Point> {
    parse(PSB_FIGURES_CSV).expect("the embedded CSV parses (checked by a test)")
}

/// The series of one figure: `(series name, points sorted by x)`, in order of first appearance.
pub fn figure_series(
    points: &[Point],
    source: &str,
    figure: u32,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for p in points
        .iter()
        .filter(|p| p.source == source && p.figure == figure)
    {
        match out.iter_mut().find(|(s, _)| *s == p.series) {
            Some((_, v)) => v.push((p.x, p.y)),
            None => out.push((p.series.clone(), vec![(p.x, p.y)])),
        }
    }
    for (_, v) in &mut out {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_parses_and_has_every_figure() {
        let p = embedded();
        assert!(p.len() > 1000);
        for fig in [17, 18, 21, 22, 29, 30, 31, 32, 33, 34] {
            assert!(!figure_series(&p, "TR", fig).is_empty(), "TR {fig}");
        }
        let s = figure_series(&p, "TR", 31);
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].0, "4 servers");
    }

    #[test]
    fn quoted_fields_keep_commas() {
        assert_eq!(split_csv(r#"a,"b, c",d"#), vec!["a", "b, c", "d"]);
    }
}
