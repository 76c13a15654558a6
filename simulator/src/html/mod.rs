//! The HTML report: one self-contained page (no scripts, no external assets) with a summary table
//! and inline SVG charts of availability and provider share over time, event windows shaded.

use crate::report::Report;
use std::fmt::Write as _;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 44.0;
const TOP: f64 = 10.0;
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG chart of `lines` (label, values in [0, 1] or gaps) over `duration_s`, events shaded.
fn chart(report: &Report, title: &str, lines: &[(String, Vec<Option<f64>>)], y_min: f64) -> String {
    let mut s = String::new();
    let plot_w = WIDTH - LEFT - 10.0;
    let plot_h = HEIGHT - TOP - 24.0;
    let x_of = |t_s: f64| LEFT + plot_w * (t_s / report.duration_s.max(1e-9)).clamp(0.0, 1.0);
    let y_of = |v: f64| TOP + plot_h * (1.0 - ((v - y_min) / (1.0 - y_min)).clamp(0.0, 1.0));
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">"#,
        escape(title)
    );
    for e in &report.events {
        let (x0, x1) = (x_of(e.start_s), x_of(e.end_s));
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#f4c7c3" opacity="0.5"><title>#{} {} on {}</title></rect>"##,
            (x1 - x0).max(1.0),
            e.index,
            e.kind,
            escape(&e.providers.join(", "))
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##
    );
    for tick in [y_min, (1.0 + y_min) / 2.0, 1.0] {
        let y = y_of(tick);
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{:.0}%</text><line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/>"##,
            LEFT - 4.0,
            y + 3.0,
            tick * 100.0,
            LEFT + plot_w
        );
    }
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" font-size="10">0 s</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{} s</text>"#,
        HEIGHT - 6.0,
        LEFT + plot_w,
        HEIGHT - 6.0,
        report.duration_s
    );
    for (i, (label, values)) in lines.iter().enumerate() {
        let n = values.len().max(1) as f64;
        let mut path = String::new();
        let mut pen_down = false;
        for (j, v) in values.iter().enumerate() {
            match v {
                Some(v) => {
                    let x = x_of((j as f64 + 0.5) / n * report.duration_s);
                    let _ = write!(
                        path,
                        "{}{x:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        y_of(*v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            s,
            r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"><title>{}</title></path>"#,
            escape(label)
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="{color}">{}</text>"#,
            LEFT + 6.0 + (i as f64 % 4.0) * 150.0,
            TOP + 12.0 + (i / 4) as f64 * 12.0,
            escape(label)
        );
    }
    s.push_str("</svg></figure>\n");
    s
}

/// Renders the page.
pub(crate) fn render(report: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>stilts sim: {0}</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
.fail{{color:#b00;font-weight:bold}}.pass{{color:#070}}figure{{margin:1em 0}}</style></head><body>\n\
<h1>{0}</h1><p>{1}</p><p>seed {2}, {3} s, {4} requests</p>\n",
        escape(&report.scenario),
        escape(&report.description),
        report.seed,
        report.duration_s,
        report.requests
    );
    s.push_str("<table><tr><th>run</th><th>availability</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>TTFT p99 ms</th><th>attempts/req</th><th>$ per 1k</th><th>breaker trips</th></tr>\n");
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    for r in &report.runs {
        let trips: u64 = r.providers.iter().map(|p| p.breaker_trips).sum();
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{:.3}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.4}</td><td>{}</td></tr>",
            escape(&r.name),
            r.availability * 100.0,
            f(r.latency_ms_p50),
            f(r.latency_ms_p99),
            f(r.latency_ms_p999),
            f(r.ttft_ms_p99),
            r.amplification,
            r.cost_per_1k_usd,
            trips
        );
    }
    s.push_str("</table>\n");
    if !report.expectations.is_empty() {
        s.push_str("<h2>Expectations</h2><ul>\n");
        for e in &report.expectations {
            let _ = writeln!(
                s,
                "<li class=\"{}\">{} {}</li>",
                if e.passed { "pass" } else { "fail" },
                if e.passed { "pass" } else { "FAIL" },
                escape(&e.describe())
            );
        }
        s.push_str("</ul>\n");
    }
    s.push_str("<h2>Availability over time</h2>\n");
    let min = report
        .runs
        .iter()
        .flat_map(|r| r.series.availability.iter().flatten())
        .fold(1.0f64, |m, v| m.min(*v));
    let y_min = if min >= 0.9 { 0.9 } else { 0.0 };
    let lines: Vec<(String, Vec<Option<f64>>)> = report
        .runs
        .iter()
        .map(|r| (r.name.clone(), r.series.availability.clone()))
        .collect();
    s.push_str(&chart(
        report,
        "availability of requests by arrival time (shaded: events)",
        &lines,
        y_min,
    ));
    s.push_str("<h2>Provider share over time</h2>\n");
    for r in &report.runs {
        let lines: Vec<(String, Vec<Option<f64>>)> = r
            .series
            .share
            .iter()
            .map(|p| {
                (
                    p.provider.clone(),
                    p.share.iter().map(|v| Some(*v)).collect(),
                )
            })
            .collect();
        s.push_str(&chart(
            report,
            &format!("{}: share of attempts", r.name),
            &lines,
            0.0,
        ));
    }
    s.push_str("</body></html>\n");
    s
}
