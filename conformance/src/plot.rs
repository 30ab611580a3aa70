//! Benchmark charts: the figures a bench prints as a table, drawn as SVG
//! bar charts (plotters) for BENCHMARKS.md. One chart is a column of
//! panels, one panel a set of labelled bars in one unit.

use std::path::Path;

use plotters::prelude::*;

/// One panel of a chart: bars in one unit, top to bottom.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub unit: String,
    pub bars: Vec<Bar>,
}

/// One bar: its label, its value, and whether it is the figure measured
/// (drawn dark) or a baseline or floor beside it (drawn light).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub measured: bool,
}

impl Bar {
    pub fn measured(label: impl Into<String>, value: f64) -> Bar {
        Bar { label: label.into(), value, measured: true }
    }

    pub fn baseline(label: impl Into<String>, value: f64) -> Bar {
        Bar { label: label.into(), value, measured: false }
    }
}

const WIDTH: u32 = 900;
const BAR_H: u32 = 26;
const PANEL_EXTRA: u32 = 70;

/// A chart that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("drawing the chart {path}: {message}")]
pub struct PlotError {
    pub path: std::path::PathBuf,
    pub message: String,
}

/// Writes `panels` as one SVG chart to `path`.
pub fn write_svg(path: &Path, panels: &[Panel]) -> Result<(), PlotError> {
    let heights: Vec<u32> = panels.iter().map(|p| p.bars.len() as u32 * BAR_H + PANEL_EXTRA).collect();
    let total: u32 = heights.iter().sum::<u32>().max(1);
    let root = SVGBackend::new(path, (WIDTH, total)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| PlotError { path: path.to_path_buf(), message: e.to_string() };
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut rest = root;
    for (panel, h) in panels.iter().zip(&heights) {
        let (area, below) = rest.split_vertically(*h);
        draw(&area, panel).map_err(|e| fail(&e))?;
        rest = below;
    }
    rest.present().map_err(|e| fail(&e))
}

/// What plotters reports: its error type depends on the backend.
type Failure = Box<dyn std::error::Error>;

/// One panel: horizontal bars, labels on the left, each bar's value at its
/// end.
fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, panel: &Panel) -> Result<(), Failure>
where
    DB::ErrorType: 'static,
{
    let n = panel.bars.len().max(1);
    let max = panel.bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1e-9) * 1.25;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(300)
        // `a..b` segmented has a segment for each of a..=b: one per bar.
        .build_cartesian_2d(0.0..max, (0..n - 1).into_segmented())?;
    let labels: Vec<String> = panel.bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(panel.unit.as_str())
        .y_labels(n)
        .y_label_formatter(&|v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => labels.get(n - 1 - *i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 12))
        .draw()?;
    let dark = RGBColor(0x15, 0x65, 0xc0);
    let light = RGBColor(0xa8, 0xc4, 0xe6);
    for (i, bar) in panel.bars.iter().enumerate() {
        let row = n - 1 - i;
        let color = if bar.measured { dark } else { light };
        let top = SegmentValue::Exact(row);
        let bottom = SegmentValue::Exact(row + 1);
        let mut rect = Rectangle::new([(0.0, top), (bar.value, bottom)], color.filled());
        rect.set_margin(3, 3, 0, 0);
        chart.draw_series(std::iter::once(rect))?;
        chart.draw_series(std::iter::once(Text::new(
            format_value(bar.value),
            (bar.value, SegmentValue::CenterOf(row)),
            ("sans-serif", 12),
        )))?;
    }
    Ok(())
}

/// A value as a chart prints it: three significant figures.
fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!(" {v:.0}")
    } else if v >= 10.0 {
        format!(" {v:.1}")
    } else {
        format!(" {v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_every_label_and_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chart.svg");
        let panels = vec![
            Panel {
                title: "sweep".into(),
                unit: "runs/s".into(),
                bars: vec![Bar::measured("happy path", 30.5), Bar::baseline("floor", 212.0)],
            },
            Panel { title: "30 days".into(), unit: "s".into(), bars: vec![Bar::measured("30 days", 1.234)] },
        ];
        write_svg(&path, &panels).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in ["sweep", "runs/s", "happy path", "30.5", "floor", "212", "30 days", "1.23"] {
            assert!(svg.contains(text), "no {text} in the chart");
        }
    }
}
