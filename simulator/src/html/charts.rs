//! The charts of the HTML report, each drawn for one [`Layout`]:
//!
//! - [`availability_per_run`]: each run's whole-run availability on the failure scale, one row per
//!   run, so runs between 99.5% and 100% stand apart;
//! - [`timeline`]: the request rate over time with every event and traffic spike as a labelled bar;
//! - [`availability_over_time`]: each run's availability per time bucket on the failure scale, the
//!   windows shaded;
//! - [`share`]: one run's share of attempts per provider over time, stacked.

use super::Page;
use super::scale::{FailScale, failed_per_10k, linear_ticks, percent, text_width, thin, truncate};
use super::svg::{
    Anchor, Frame, Layout, Svg, Window, assign_lanes, draw_lanes, lane_height, shade, time_axis,
    time_axis_margin,
};
use crate::report::RunReport;
use std::fmt::Write as _;

/// Longest run name drawn in full on a chart (the tables show every name whole).
const NAME_CHARS: usize = 22;

/// Whole-run availability per run: a lollipop per row on the failure scale, 100% at the left.
pub(crate) fn availability_per_run(page: &Page<'_>, layout: &Layout) -> String {
    let runs = &page.report.runs;
    let font = layout.font;
    let scale = FailScale::fit(runs.iter().map(|r| failed_per_10k(r.requests, r.answered)));
    let names: Vec<String> = runs.iter().map(|r| truncate(&r.name, NAME_CHARS)).collect();
    let name_w = names
        .iter()
        .map(|n| text_width(n, font))
        .fold(0.0, f64::max);
    let ticks = scale.ticks();
    let last_tick_w = ticks.last().map_or(0.0, |t| text_width(&t.1, font));
    let row_h = font * 2.0;
    let frame = Frame {
        left: name_w + 12.0,
        top: 4.0,
        w: layout.width - name_w - 12.0 - (last_tick_w / 2.0 + 4.0),
        h: row_h * runs.len() as f64,
    };
    let x_of = |per_10k: f64| frame.left + frame.w * scale.position(per_10k);
    let mut svg = Svg::new(
        layout,
        frame.bottom() + font * super::svg::AXIS_SPACE,
        "availability of each run on a log scale of failed requests",
    );
    // Grid and tick labels, thinned so none overlaps.
    let positions: Vec<f64> = ticks.iter().map(|t| frame.left + frame.w * t.0).collect();
    let widths: Vec<f64> = ticks.iter().map(|t| text_width(&t.1, font)).collect();
    for (i, x) in positions.iter().enumerate() {
        svg.line(
            (*x, frame.top),
            (*x, frame.bottom()),
            if i == 0 { "grid zero" } else { "grid" },
        );
    }
    for i in thin(&positions, &widths, font * 0.8) {
        svg.text(
            positions[i],
            frame.bottom() + font * super::svg::AXIS_BASELINE,
            Anchor::Middle,
            "lbl",
            &ticks[i].1,
        );
    }
    for (i, r) in runs.iter().enumerate() {
        let style = &page.run_styles[i];
        let y = frame.top + row_h * (i as f64 + 0.5);
        let per_10k = failed_per_10k(r.requests, r.answered);
        let x = x_of(per_10k);
        let baseline = svg.middle(y);
        svg.text(frame.left - 8.0, baseline, Anchor::End, "lbl", &names[i]);
        let _ = write!(
            svg,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{x:.1}" y2="{y:.1}" stroke="{}" stroke-width="3"/><circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{}"><title>{}: {} answered of {} ({} failed per 10k)</title></circle>"#,
            frame.left,
            style.color,
            style.color,
            super::svg::escape(&r.name),
            super::scale::group(r.answered),
            super::scale::group(r.requests),
            super::scale::trim_number(per_10k, 2),
        );
        let value = percent(r.requests, r.answered);
        let w = text_width(&value, font);
        if x + 8.0 + w <= frame.right() {
            svg.text(x + 8.0, baseline, Anchor::Start, "val", &value);
        } else {
            svg.text(x - 8.0, baseline, Anchor::End, "val", &value);
        }
    }
    svg.finish()
}

/// The left margin a y axis needs for `labels`.
fn axis_margin(labels: impl IntoIterator<Item = String>, font: f64) -> f64 {
    labels
        .into_iter()
        .map(|l| text_width(&l, font))
        .fold(0.0, f64::max)
        + 8.0
}

/// Bucket `b`'s span in seconds: `bucket_s` wide, the last one cut at the end of arrivals.
fn bucket_span(b: usize, bucket_s: f64, duration_s: f64) -> (f64, f64) {
    let start = b as f64 * bucket_s;
    (
        start.min(duration_s),
        ((b + 1) as f64 * bucket_s).min(duration_s),
    )
}

/// Appends a step line to path `d`: for each (y, x) a vertical move to y, then a horizontal one
/// to x; a step at the height of the one before only extends it.
fn steps(d: &mut String, points: impl Iterator<Item = (f64, f64)>) {
    let mut pending: Option<(String, String)> = None;
    for (y, x) in points {
        let (y, x) = (format!("{y:.1}"), format!("{x:.1}"));
        match &mut pending {
            Some((py, px)) if *py == y => *px = x,
            _ => {
                if let Some((py, px)) = pending.take() {
                    let _ = write!(d, "V{py}H{px}");
                }
                pending = Some((y, x));
            }
        }
    }
    if let Some((py, px)) = pending {
        let _ = write!(d, "V{py}H{px}");
    }
}

/// The request rate over time, the events and spikes as labelled bars in lanes above it.
pub(crate) fn timeline(page: &Page<'_>, layout: &Layout, id: &str) -> String {
    let report = page.report;
    let font = layout.font;
    let duration = report.duration_s;
    let series = report.runs.first().map(|r| &r.series);
    let bucket_s = series.map_or(duration, |s| s.bucket_s.max(1e-9));
    let rates: Vec<f64> = series.map_or_else(Vec::new, |s| {
        s.requests
            .iter()
            .enumerate()
            .map(|(b, n)| {
                let (a, z) = bucket_span(b, bucket_s, duration);
                if z > a { *n as f64 / (z - a) } else { 0.0 }
            })
            .collect()
    });
    let (ticks, top_rate) = linear_ticks(rates.iter().copied().fold(0.0, f64::max), 4);
    let margin = time_axis_margin(duration, font);
    let left = axis_margin(ticks.iter().map(|t| t.1.clone()), font).max(margin);
    let probe = Frame {
        left,
        top: 0.0,
        w: layout.width - left - margin,
        h: 0.0,
    };
    let lanes = assign_lanes(&page.windows, &probe, duration, font);
    let strip = lanes.count as f64 * lane_height(font);
    let frame = Frame {
        top: strip + if lanes.count > 0 { 6.0 } else { 4.0 },
        h: font * 7.0,
        ..probe
    };
    let mut svg = Svg::new(
        layout,
        frame.bottom() + font * super::svg::AXIS_SPACE,
        "requests per second over time, with the timeline's events and traffic spikes",
    );
    shade(&mut svg, &page.windows, &frame, duration, id);
    draw_lanes(
        &mut svg,
        &page.windows,
        &lanes,
        &frame,
        &super::svg::Strip {
            top: 0.0,
            font,
            full: true,
            id,
        },
        duration,
    );
    for (v, label) in &ticks {
        let y = frame.bottom() - frame.h * v / top_rate;
        svg.line((frame.left, y), (frame.right(), y), "grid");
        let baseline = svg.middle(y);
        svg.text(frame.left - 6.0, baseline, Anchor::End, "lbl", label);
    }
    // The rate as a step area.
    let mut d = format!("M{:.1},{:.1}", frame.left, frame.bottom());
    steps(
        &mut d,
        rates.iter().enumerate().map(|(b, rate)| {
            let (_, z) = bucket_span(b, bucket_s, duration);
            (
                frame.bottom() - frame.h * rate / top_rate,
                frame.x_of(z, duration),
            )
        }),
    );
    let _ = write!(d, "V{:.1}Z", frame.bottom());
    let _ = write!(
        svg,
        r#"<path d="{d}" class="rate"><title>requests arriving per second</title></path>"#
    );
    svg.raw(&frame_rect(&frame));
    time_axis(&mut svg, &frame, duration, font);
    svg.finish()
}

fn frame_rect(frame: &Frame) -> String {
    format!(
        r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" class="frame"/>"#,
        frame.left, frame.top, frame.w, frame.h
    )
}

/// Each run's availability per time bucket on the failure scale (100% at the top), the windows
/// shaded and keyed above.
pub(crate) fn availability_over_time(page: &Page<'_>, layout: &Layout, id: &str) -> String {
    let report = page.report;
    let font = layout.font;
    let duration = report.duration_s;
    let per_bucket = |r: &RunReport| -> Vec<Option<f64>> {
        r.series
            .requests
            .iter()
            .zip(&r.series.answered)
            .map(|(n, a)| (*n > 0).then(|| failed_per_10k(*n, *a)))
            .collect()
    };
    let values: Vec<Vec<Option<f64>>> = report.runs.iter().map(per_bucket).collect();
    let scale = FailScale::fit(values.iter().flatten().flatten().copied());
    let ticks = scale.ticks();
    let margin = time_axis_margin(duration, font);
    let left = axis_margin(ticks.iter().map(|t| t.1.clone()), font).max(margin);
    let right = if layout.roomy {
        axis_margin(ticks.iter().map(|t| t.2.clone()), font).max(margin)
    } else {
        margin
    };
    let probe = Frame {
        left,
        top: 0.0,
        w: layout.width - left - right,
        h: 0.0,
    };
    let lanes = assign_lanes(&page.windows, &probe, duration, font);
    let strip = lanes.count as f64 * lane_height(font);
    let step_h = font * 2.0;
    let frame = Frame {
        top: strip + font * 0.8,
        h: step_h * (ticks.len() - 1) as f64,
        ..probe
    };
    let mut svg = Svg::new(
        layout,
        frame.bottom() + font * super::svg::AXIS_SPACE,
        "availability of arriving requests over time, per run, on a log scale of failures",
    );
    shade(&mut svg, &page.windows, &frame, duration, id);
    draw_lanes(
        &mut svg,
        &page.windows,
        &lanes,
        &frame,
        &super::svg::Strip {
            top: 0.0,
            font,
            full: false,
            id,
        },
        duration,
    );
    for (i, (pos, availability, per_10k)) in ticks.iter().enumerate() {
        let y = frame.top + frame.h * pos;
        svg.line(
            (frame.left, y),
            (frame.right(), y),
            if i == 0 { "grid zero" } else { "grid" },
        );
        let baseline = svg.middle(y);
        svg.text(frame.left - 6.0, baseline, Anchor::End, "lbl", availability);
        if layout.roomy {
            svg.text(frame.right() + 6.0, baseline, Anchor::Start, "lbl", per_10k);
        }
    }
    let bucket_s = report
        .runs
        .first()
        .map_or(duration, |r| r.series.bucket_s.max(1e-9));
    // Baselines first, configs last, so the configs are drawn on top.
    let mut order: Vec<usize> = (0..report.runs.len()).collect();
    order.sort_by_key(|&i| (report.runs[i].kind == "config", std::cmp::Reverse(i)));
    for i in order {
        let style = &page.run_styles[i];
        let mut d = String::new();
        let mut pen = false;
        for (b, v) in values[i].iter().enumerate() {
            match v {
                Some(v) => {
                    let (a, z) = bucket_span(b, bucket_s, duration);
                    let x = frame.x_of((a + z) / 2.0, duration);
                    let y = frame.top + frame.h * scale.position(*v);
                    let _ = write!(d, "{}{x:.1},{y:.1}", if pen { "L" } else { "M" });
                    pen = true;
                }
                None => pen = false,
            }
        }
        let _ = write!(
            svg,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2"{}><title>{}</title></path>"#,
            style.color,
            if style.dashed {
                r#" stroke-dasharray="5 3""#
            } else {
                ""
            },
            super::svg::escape(&report.runs[i].name)
        );
    }
    svg.raw(&frame_rect(&frame));
    time_axis(&mut svg, &frame, duration, font);
    svg.finish()
}

/// One run's share of attempts per provider over time, stacked to 100%, the windows shaded.
pub(crate) fn share(page: &Page<'_>, layout: &Layout, run: usize, id: &str) -> String {
    let report = page.report;
    let r = &report.runs[run];
    let font = layout.font;
    let duration = report.duration_s;
    let margin = time_axis_margin(duration, font);
    let labels = ["0%", "50%", "100%"];
    let left = axis_margin(labels.iter().map(|l| (*l).to_string()), font).max(margin);
    let frame = Frame {
        left,
        top: font * 0.6,
        w: layout.width - left - margin,
        h: font * 5.0,
    };
    let mut svg = Svg::new(
        layout,
        frame.bottom() + font * super::svg::AXIS_SPACE,
        &format!("{}: share of attempts per provider over time", r.name),
    );
    shade(&mut svg, &page.windows, &frame, duration, id);
    let bucket_s = r.series.bucket_s.max(1e-9);
    let points = r.series.share.first().map_or(0, |p| p.share.len());
    let mut below = vec![0.0f64; points];
    for (p, series) in r.series.share.iter().enumerate() {
        if series.share.iter().all(|v| *v <= 0.0) {
            continue;
        }
        let top: Vec<f64> = below
            .iter()
            .zip(&series.share)
            .map(|(b, s)| (b + s).min(1.0))
            .collect();
        let y = |v: f64| frame.bottom() - frame.h * v;
        // A step outline: along the tops left to right, back along the bottoms (H and V only).
        let mut d = format!(
            "M{:.1},{:.1}",
            frame.left,
            y(top.first().copied().unwrap_or(0.0))
        );
        steps(
            &mut d,
            top.iter().enumerate().map(|(b, v)| {
                let (_, z) = bucket_span(b, bucket_s, duration);
                (y(*v), frame.x_of(z, duration))
            }),
        );
        steps(
            &mut d,
            below.iter().enumerate().rev().map(|(b, v)| {
                let (a, _) = bucket_span(b, bucket_s, duration);
                (y(*v), frame.x_of(a, duration))
            }),
        );
        let _ = write!(
            svg,
            r#"<path d="{d}Z" fill="{}" fill-opacity="0.85"><title>{}</title></path>"#,
            page.provider_colors[p % page.provider_colors.len()],
            super::svg::escape(&series.provider)
        );
        below = top;
    }
    for (i, label) in labels.iter().enumerate() {
        let y = frame.bottom() - frame.h * i as f64 / 2.0;
        svg.line((frame.left, y), (frame.right(), y), "grid");
        let baseline = svg.middle(y);
        svg.text(frame.left - 6.0, baseline, Anchor::End, "lbl", label);
    }
    svg.raw(&frame_rect(&frame));
    time_axis(&mut svg, &frame, duration, font);
    svg.finish()
}

/// The windows of the report: its events, then its traffic spikes.
pub(crate) fn windows(report: &crate::report::Report) -> Vec<Window> {
    let mut out: Vec<Window> = report
        .events
        .iter()
        .map(|e| {
            let providers = e.providers.join(", ");
            Window {
                key: format!("#{}", e.index),
                what: e.kind.to_string(),
                title: format!(
                    "#{} {} on {} from {} s to {} s{}{}",
                    e.index,
                    e.kind,
                    providers,
                    e.start_s,
                    e.end_s,
                    if e.note.is_empty() { "" } else { ": " },
                    e.note
                ),
                providers,
                start_s: e.start_s,
                end_s: e.end_s,
                color: super::kind_color(e.kind),
                spike: false,
            }
        })
        .collect();
    for (i, s) in report.spikes.iter().enumerate() {
        let factor = super::scale::trim_number(s.factor, 2);
        out.push(Window {
            key: format!("S{i}"),
            what: format!("spike ×{factor}"),
            providers: String::new(),
            start_s: s.start_s,
            end_s: s.end_s,
            color: super::SPIKE_COLOR,
            spike: true,
            title: format!(
                "traffic spike S{i}: the request rate x{factor} from {} s to {} s",
                s.start_s, s.end_s
            ),
        });
    }
    out
}
