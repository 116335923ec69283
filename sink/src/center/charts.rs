//! The alert center's charts as inline SVG, drawn on the server (the page makes no request of
//! its own and works offline). Pure.
//!
//! A chart is days along x and one polyline per series; every polyline has one point per day
//! (`data-points` on the `<svg>` says how many), so a day without data is a 0, never a gap.

use std::fmt::Write;

use chrono::NaiveDate;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// The series' key (`data-series`), e.g. a status or an alert kind.
    pub key: String,
    /// What the legend says (Japanese / English).
    pub label: String,
    /// One value per day of the chart.
    pub values: Vec<u64>,
}

/// A chart over `days` (oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    pub id: &'static str,
    pub title: String,
    pub days: Vec<NaiveDate>,
    pub series: Vec<Series>,
}

const W: f64 = 640.0;
const H: f64 = 180.0;
const PAD: f64 = 30.0;
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Chart {
    /// The chart as an `<svg>` element with its legend.
    pub fn svg(&self) -> String {
        let n = self.days.len();
        let max = self.series.iter().flat_map(|s| s.values.iter().copied()).max().unwrap_or(0).max(1);
        let x = |i: usize| PAD + (W - 2.0 * PAD) * if n > 1 { i as f64 / (n - 1) as f64 } else { 0.5 };
        let y = |v: u64| H - PAD - (H - 2.0 * PAD) * v as f64 / max as f64;
        let mut out = format!(
            "<svg class=\"chart\" id=\"{}\" data-points=\"{n}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" \
             xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>",
            self.id,
            esc(&self.title),
            esc(&self.title)
        );
        let _ = write!(
            out,
            "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/><text x=\"2\" y=\"{top}\" font-size=\"10\">{max}</text>\
             <text x=\"2\" y=\"{b}\" font-size=\"10\">0</text>",
            b = H - PAD,
            r = W - PAD,
            top = PAD
        );
        if let (Some(first), Some(last)) = (self.days.first(), self.days.last()) {
            let _ = write!(
                out,
                "<text x=\"{PAD}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
                H - 8.0,
                first.format("%m/%d"),
                W - PAD,
                H - 8.0,
                last.format("%m/%d")
            );
        }
        for (i, s) in self.series.iter().enumerate() {
            let points: Vec<String> =
                s.values.iter().enumerate().map(|(d, v)| format!("{:.1},{:.1}", x(d), y(*v))).collect();
            let _ = write!(
                out,
                "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
                esc(&s.key),
                COLORS[i % COLORS.len()],
                points.join(" ")
            );
        }
        out.push_str("</svg><ul class=\"legend\">");
        for (i, s) in self.series.iter().enumerate() {
            let total: u64 = s.values.iter().sum();
            let _ = write!(
                out,
                "<li><span style=\"color:{}\">■</span> {} ({total})</li>",
                COLORS[i % COLORS.len()],
                esc(&s.label)
            );
        }
        out.push_str("</ul>");
        out
    }
}

/// The `n` days up to and including `last`, oldest first.
pub fn days_until(last: NaiveDate, n: usize) -> Vec<NaiveDate> {
    (0..n).rev().filter_map(|i| last.checked_sub_days(chrono::Days::new(i as u64))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_has_one_point_per_day() {
        let days = days_until("2026-12-10".parse().unwrap(), 30);
        assert_eq!((days.len(), days[0].to_string()), (30, "2026-11-11".to_string()));
        let mut values = vec![0; 30];
        values[29] = 7;
        let chart = Chart {
            id: "orders-per-day",
            title: "注文 <per day>".into(),
            days,
            series: vec![
                Series { key: "new".into(), label: "新規 / new".into(), values },
                Series { key: "shipped".into(), label: "発送済 / shipped".into(), values: vec![1; 30] },
            ],
        };
        let svg = chart.svg();
        assert!(svg.contains("data-points=\"30\"") && svg.contains("注文 &lt;per day&gt;"), "{svg}");
        let polylines: Vec<&str> = svg.split("<polyline").skip(1).collect();
        assert_eq!(polylines.len(), 2);
        for p in polylines {
            let points = p.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
            assert_eq!(points.split(' ').count(), 30, "{points}");
        }
        assert!(svg.contains("(7)"), "the legend gives the sum: {svg}");
    }
}
