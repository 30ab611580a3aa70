//! The HTML report's pictures, as inline SVG: a run's timeline (hosts as
//! lanes, events as marks by kind, failures red), the sequence diagram of
//! its first failing exchange, and a sweep's outcomes as a histogram.
//!
//! Every picture has a `viewBox` and `width="100%"`: it scales to the page
//! instead of widening it. Colors and shapes come from classes the page's
//! style sheet defines ([`STYLE`]), so a mark costs a few dozen bytes.

use std::fmt::Write;

use super::timeline::{Kind, Step, Timeline};
use super::{ellipsis, format_sim, xml_escape};

/// The classes the pictures use; the page includes it once.
pub const STYLE: &str = "\
svg text{font:11px system-ui,sans-serif;fill:#333}\n\
svg .lane{stroke:#e3e3e3}svg .axis{stroke:#999}svg .life{stroke:#bbb;stroke-dasharray:3 3}\n\
svg .k-connect{fill:#1565c0}svg .k-handshake{fill:#2e7d32}svg .k-fault{fill:#ef6c00}\n\
svg .k-timeline{fill:#6a1b9a}svg .k-request{fill:#78909c}svg .k-diagnostic{fill:#ad1457}\n\
svg .k-lifecycle{fill:#bdbdbd}svg .bad{fill:#c62828}svg .cut{stroke:#6a1b9a;stroke-dasharray:2 3}\n\
svg .arrow{stroke:#555;marker-end:url(#head)}svg .arrow.bad{stroke:#c62828}svg .note{fill:#f3f3f3;stroke:#bbb}\n\
svg .bar-pass{fill:#7cc47c}svg .bar-fail{fill:#e06666}svg .bar-xfail{fill:#f1c232}svg .bar-xpass{fill:#b27fd6}\n";

/// The arrowhead the sequence diagrams share: the page holds it once
/// (an id must be unique in a document).
pub const DEFS: &str = "<svg width=\"0\" height=\"0\" style=\"position:absolute\" aria-hidden=\"true\"><defs>\
<marker id=\"head\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\">\
<path d=\"M0 0L8 4L0 8z\"/></marker></defs></svg>";

const WIDTH: u32 = 1000;
/// Where a timeline's plot starts: the lanes' names are left of it.
const PLOT_X: u32 = 150;
const LANE_H: u32 = 18;

/// A mark's shape at `(x, y)`, of its kind's class.
fn shape(kind: Kind, x: u32, y: u32) -> String {
    match kind {
        Kind::Connect => format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"4\""),
        Kind::Handshake => format!("<rect x=\"{}\" y=\"{}\" width=\"7\" height=\"7\"", x.saturating_sub(3), y - 3),
        Kind::Fault => format!("<path d=\"M{x} {} l5 9 h-10z\"", y - 5),
        Kind::Timeline => format!("<rect x=\"{}\" y=\"{}\" width=\"3\" height=\"14\"", x.saturating_sub(1), y - 7),
        Kind::Request => format!("<rect x=\"{x}\" y=\"{}\" width=\"1.5\" height=\"10\"", y - 5),
        Kind::Diagnostic => format!("<path d=\"M{x} {} l5 5 l-5 5 l-5 -5z\"", y - 5),
        Kind::Lifecycle => format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\""),
    }
}

/// The x of simulated time `t_ms` on a plot `duration_ms` wide.
fn x_of(t_ms: u64, duration_ms: u64) -> u32 {
    let span = u64::from(WIDTH - PLOT_X - 10);
    // In u128: a crafted report's times cannot overflow the product.
    PLOT_X + (u128::from(t_ms.min(duration_ms)) * u128::from(span) / u128::from(duration_ms.max(1))) as u32
}

/// A run's timeline: one lane per host, its events as marks (hover for
/// what happened), the scenario's timeline events as dashed lines across
/// every lane, simulated time below.
pub fn timeline(t: &Timeline) -> String {
    let height = t.lanes.len() as u32 * LANE_H + 24;
    let mut out = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" role=\"img\" aria-label=\"timeline\">"
    );
    let bottom = t.lanes.len() as u32 * LANE_H;
    for (i, lane) in t.lanes.iter().enumerate() {
        let y = i as u32 * LANE_H + LANE_H / 2;
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{}\">{}</text><line class=\"lane\" x1=\"{PLOT_X}\" x2=\"{WIDTH}\" y1=\"{y}\" y2=\"{y}\"/>",
            y + 4,
            xml_escape(&ellipsis(&lane.host, 22))
        );
        for m in &lane.marks {
            let x = x_of(m.t_ms, t.duration_ms);
            if m.kind == Kind::Timeline {
                let _ = write!(out, "<line class=\"cut\" x1=\"{x}\" x2=\"{x}\" y1=\"0\" y2=\"{bottom}\"/>");
            }
            let class = if m.bad { "bad".to_string() } else { format!("k-{}", class_of(m.kind)) };
            let more = if m.n > 1 { format!(" (and {} more)", m.n - 1) } else { String::new() };
            let _ = write!(
                out,
                "{} class=\"{class}\"><title>{} {}{more}</title></{}>",
                shape(m.kind, x, y),
                format_sim(m.t_ms),
                xml_escape(&m.label),
                element_of(m.kind)
            );
        }
    }
    axis(&mut out, bottom, t.duration_ms);
    out.push_str("</svg>");
    out
}

/// Ticks at the start, quarters and end of the run.
fn axis(out: &mut String, y: u32, duration_ms: u64) {
    let _ = write!(out, "<line class=\"axis\" x1=\"{PLOT_X}\" x2=\"{WIDTH}\" y1=\"{y}\" y2=\"{y}\"/>");
    for q in 0..=4u64 {
        let t = duration_ms * q / 4;
        let x = x_of(t, duration_ms);
        let anchor = if q == 4 { "end" } else { "middle" };
        let _ = write!(out, "<text x=\"{x}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>", y + 16, format_sim(t));
    }
}

fn class_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Connect => "connect",
        Kind::Handshake => "handshake",
        Kind::Fault => "fault",
        Kind::Timeline => "timeline",
        Kind::Request => "request",
        Kind::Diagnostic => "diagnostic",
        Kind::Lifecycle => "lifecycle",
    }
}

fn element_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Connect | Kind::Lifecycle => "circle",
        Kind::Handshake | Kind::Timeline | Kind::Request => "rect",
        Kind::Fault | Kind::Diagnostic => "path",
    }
}

/// The timeline's legend: one of each mark, and red for a failure.
pub fn legend() -> String {
    let mut out =
        format!("<svg class=\"legend\" viewBox=\"0 0 {WIDTH} 20\" width=\"100%\" role=\"img\" aria-label=\"legend\">");
    let mut x = 8;
    for kind in Kind::ALL {
        let _ = write!(out, "{} class=\"k-{}\"/>", shape(kind, x, 10), class_of(kind));
        let _ = write!(out, "<text x=\"{}\" y=\"14\">{}</text>", x + 10, kind.name());
        x += 120;
    }
    let _ = write!(
        out,
        "{} class=\"bad\"/><text x=\"{}\" y=\"14\">failure</text></svg>",
        shape(Kind::Fault, x, 10),
        x + 10
    );
    out
}

/// The sequence diagram of steps between `hosts` (the timeline's lanes):
/// a lifeline for each host that takes part, a row per event, an arrow
/// from the host that sent what the event reacts to.
pub fn sequence(steps: &[Step], hosts: &[String]) -> String {
    let mut used: Vec<usize> = steps.iter().flat_map(|s| [s.from, s.at]).collect();
    used.sort_unstable();
    used.dedup();
    let column = |lane: usize| -> u32 {
        let i = used.iter().position(|&u| u == lane).unwrap_or(0) as u32;
        let w = WIDTH / used.len().max(1) as u32;
        w * i + w / 2
    };
    let height = steps.len() as u32 * 26 + 34;
    let mut out = format!(
        "<svg class=\"sequence\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" role=\"img\" aria-label=\"sequence diagram\">"
    );
    for &lane in &used {
        let x = column(lane);
        let name = hosts.get(lane).map_or("?", String::as_str);
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"14\" text-anchor=\"middle\" font-weight=\"bold\">{}</text><line class=\"life\" x1=\"{x}\" x2=\"{x}\" y1=\"20\" y2=\"{height}\"/>",
            xml_escape(&ellipsis(name, 30))
        );
    }
    for (i, s) in steps.iter().enumerate() {
        let y = 40 + i as u32 * 26;
        let text = format!("{} {}", format_sim(s.t_ms), ellipsis(&s.label, 70));
        let bad = if s.bad { " bad" } else { "" };
        let (from, at) = (column(s.from), column(s.at));
        if from == at {
            // Right of the lifeline, or left of it in the page's right half.
            let (x, anchor) = if at > WIDTH / 2 { (at.saturating_sub(9), "end") } else { (at + 9, "start") };
            let _ = write!(
                out,
                "<rect class=\"note\" x=\"{}\" y=\"{}\" width=\"10\" height=\"14\"/><text x=\"{x}\" y=\"{y}\" text-anchor=\"{anchor}\" class=\"{bad}\">{}<title>{}</title></text>",
                at.saturating_sub(5),
                y - 11,
                xml_escape(&text),
                xml_escape(&s.label)
            );
        } else {
            let _ = write!(
                out,
                "<line class=\"arrow{bad}\" x1=\"{from}\" x2=\"{at}\" y1=\"{y}\" y2=\"{y}\"/><text x=\"{}\" y=\"{}\" class=\"{bad}\">{}<title>{}</title></text>",
                from.min(at) + 6,
                y - 4,
                xml_escape(&text),
                xml_escape(&s.label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// A sweep's outcomes as horizontal bars: one per (status, outcome) with
/// its count, classes `bar-<status>`.
pub fn histogram(rows: &[(String, &'static str, usize)]) -> String {
    let max = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1);
    let height = rows.len() as u32 * 20 + 4;
    let mut out = format!(
        "<svg class=\"histogram\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" role=\"img\" aria-label=\"outcomes over seeds\">"
    );
    for (i, (label, class, n)) in rows.iter().enumerate() {
        let y = i as u32 * 20 + 2;
        let w = (*n as u64 * u64::from(WIDTH - 300) / max as u64).max(1);
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{}\">{}</text><rect class=\"bar-{class}\" x=\"240\" y=\"{y}\" width=\"{w}\" height=\"15\"/><text x=\"{}\" y=\"{}\">{n}</text>",
            y + 12,
            xml_escape(&ellipsis(label, 36)),
            240 + w + 6,
            y + 12
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::super::timeline::{Lane, Mark};
    use super::*;

    #[test]
    fn a_timeline_scales_and_escapes_and_draws_failures_red() {
        let mark = |t_ms, kind, bad| Mark { t_ms, kind, bad, n: 2, label: "a <b> & c".into() };
        let t = Timeline {
            duration_ms: 60_000,
            lanes: vec![
                Lane { host: "world".into(), marks: vec![mark(30_000, Kind::Timeline, false)] },
                Lane { host: "connector-1".into(), marks: vec![mark(60_000, Kind::Fault, true)] },
            ],
            exchange: Vec::new(),
        };
        let svg = timeline(&t);
        assert!(svg.starts_with("<svg class=\"timeline\" viewBox=\"0 0 1000 60\" width=\"100%\""), "{svg}");
        assert!(svg.contains("a &lt;b&gt; &amp; c (and 1 more)"));
        assert!(
            svg.contains("<path d=\"M990 22 l5 9 h-10z\" class=\"bad\">"),
            "the end of the run is the plot's right edge: {svg}"
        );
        assert!(svg.contains("class=\"cut\" x1=\"570\""), "a timeline event halfway: {svg}");
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn a_sequence_has_a_lifeline_per_host_that_takes_part() {
        let hosts: Vec<String> = ["users", "cloud", "connector-1"].map(String::from).to_vec();
        let steps = vec![
            Step { t_ms: 1, from: 1, at: 2, bad: false, label: "request dispatched".into() },
            Step { t_ms: 2, from: 2, at: 2, bad: true, label: "tunnel down".into() },
        ];
        let svg = sequence(&steps, &hosts);
        assert_eq!(svg.matches("class=\"life\"").count(), 2, "users takes no part: {svg}");
        assert!(svg.contains("class=\"arrow\" x1=\"250\" x2=\"750\""), "{svg}");
        assert!(svg.contains("class=\"note\""));
    }
}
