//! SVG building blocks of the HTML report: a text buffer with escaping, plot frames, the time axis
//! and the lanes of event windows.
//!
//! Charts are drawn in user units of a `viewBox` (see [`Layout`]) and scale with the page: a wide
//! layout for screens, a narrow one (fewer ticks, larger text relative to the chart) for phones;
//! the page's CSS shows one of them. Every label is placed from estimated text widths
//! ([`super::scale::text_width`]) so that none overlaps another; the browser test checks the real
//! boxes.

use super::scale::{text_width, time_ticks};
use std::fmt::Write as _;

/// One of the two renderings of every chart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// CSS class that shows this rendering (`wide` or `narrow`).
    pub class: &'static str,
    /// viewBox width, user units.
    pub width: f64,
    /// Label font size, user units.
    pub font: f64,
    /// Whether there is room for secondary labels (the right-hand axis).
    pub roomy: bool,
}

/// Screens: 960 units across, shown from 720 px up (text between ~9 and ~15 px).
pub(crate) const WIDE: Layout = Layout {
    class: "wide",
    width: 960.0,
    font: 13.0,
    roomy: true,
};

/// Phones: 480 units across, shown below 720 px (text between ~10.5 and ~20 px).
pub(crate) const NARROW: Layout = Layout {
    class: "narrow",
    width: 480.0,
    font: 14.0,
    roomy: false,
};

/// Both renderings, wide first.
pub(crate) const LAYOUTS: [Layout; 2] = [WIDE, NARROW];

/// Escapes text for HTML and SVG content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The plot area of a chart, user units.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

impl Frame {
    /// Right edge.
    pub(crate) fn right(&self) -> f64 {
        self.left + self.w
    }

    /// Bottom edge.
    pub(crate) fn bottom(&self) -> f64 {
        self.top + self.h
    }

    /// The x of time `t_s` on an axis over `[0, duration_s]`, clamped to the frame.
    pub(crate) fn x_of(&self, t_s: f64, duration_s: f64) -> f64 {
        self.left + self.w * (t_s / duration_s.max(1e-9)).clamp(0.0, 1.0)
    }
}

/// An SVG element being written.
pub(crate) struct Svg {
    out: String,
    font: f64,
}

impl std::fmt::Write for Svg {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.out.push_str(s);
        Ok(())
    }
}

/// How a text is anchored at its x.
#[derive(Clone, Copy)]
pub(crate) enum Anchor {
    Start,
    Middle,
    End,
}

impl Svg {
    /// Opens an `<svg>` of `layout.width` x `height` units, labelled `label` for screen readers.
    pub(crate) fn new(layout: &Layout, height: f64, label: &str) -> Self {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg viewBox="0 0 {} {:.0}" role="img" aria-label="{}" font-size="{}">"#,
            layout.width,
            height.ceil(),
            escape(label),
            layout.font
        );
        Svg {
            out,
            font: layout.font,
        }
    }

    /// Raw markup.
    pub(crate) fn raw(&mut self, markup: &str) {
        self.out.push_str(markup);
    }

    /// A label: `class` is `lbl` (axis and legend labels, checked for overlaps) or `val`.
    pub(crate) fn text(&mut self, x: f64, y: f64, anchor: Anchor, class: &str, text: &str) {
        let anchor = match anchor {
            Anchor::Start => "",
            Anchor::Middle => r#" text-anchor="middle""#,
            Anchor::End => r#" text-anchor="end""#,
        };
        let _ = write!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}"{anchor} class="{class}">{}</text>"#,
            escape(text)
        );
    }

    /// A line.
    pub(crate) fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), class: &str) {
        let _ = write!(
            self.out,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" class="{class}"/>"#
        );
    }

    /// The baseline y that centres a label vertically on `y`.
    pub(crate) fn middle(&self, y: f64) -> f64 {
        y + self.font * 0.35
    }

    /// Closes the element.
    pub(crate) fn finish(mut self) -> String {
        self.out.push_str("</svg>");
        self.out
    }
}

/// Baseline of the labels under a plot, in fonts below its bottom: low enough that a label
/// centred on the bottom grid line of a y axis (its box reaches ~0.6 font below) stays clear of
/// them (their box starts ~0.9 font above the baseline).
pub(crate) const AXIS_BASELINE: f64 = 1.65;
/// Room under a plot for its axis labels, in fonts.
pub(crate) const AXIS_SPACE: f64 = 2.1;

/// Draws the time axis under `frame`: a grid line and a centred label per tick. Returns the height
/// the labels take below the frame.
pub(crate) fn time_axis(svg: &mut Svg, frame: &Frame, duration_s: f64, font: f64) -> f64 {
    for (t, label) in time_ticks(duration_s, frame.w, font) {
        let x = frame.x_of(t, duration_s);
        svg.line((x, frame.top), (x, frame.bottom()), "grid");
        svg.text(
            x,
            frame.bottom() + font * AXIS_BASELINE,
            Anchor::Middle,
            "lbl",
            &label,
        );
    }
    font * AXIS_SPACE
}

/// The space a time axis needs on each side of the plot: half of its widest possible label.
pub(crate) fn time_axis_margin(duration_s: f64, font: f64) -> f64 {
    // The end label is the widest; a tick can fall there.
    let unit = super::scale::time_unit(duration_s);
    let end = super::scale::time_label(duration_s, unit);
    (text_width(&end, font) / 2.0 + 2.0).max(font)
}

/// A time window drawn on the charts: a timeline event or a traffic spike.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    /// `#3` for event 3, `S1` for the second spike.
    pub key: String,
    /// `outage`, `spike x2`.
    pub what: String,
    /// Affected providers, joined (empty for spikes).
    pub providers: String,
    /// Start, seconds.
    pub start_s: f64,
    /// End, seconds.
    pub end_s: f64,
    /// Colour of its kind.
    pub color: &'static str,
    /// A traffic spike (hatched) rather than an event (filled).
    pub spike: bool,
    /// Tooltip text.
    pub title: String,
}

/// Most lanes of windows a chart stacks; more overlapping windows share the last lane unlabelled
/// (the list under the timeline names them all).
pub(crate) const MAX_LANES: usize = 8;

/// Windows assigned to lanes so that no two overlap in one lane (greedy, by start time).
pub(crate) struct Lanes {
    /// The lane of each window, and whether it is labelled.
    pub lane: Vec<(usize, bool)>,
    /// Lanes used.
    pub count: usize,
}

/// Assigns `windows` (as x spans on `frame`) to lanes, leaving room after each window's start
/// for at least its key at `font` (so every window in a lane can be labelled).
pub(crate) fn assign_lanes(windows: &[Window], frame: &Frame, duration_s: f64, font: f64) -> Lanes {
    let spans: Vec<(f64, f64)> = spans(windows, frame, duration_s)
        .into_iter()
        .zip(windows)
        .map(|((x0, x1), w)| (x0, x1.max(x0 + text_width(&w.key, font) + 6.0)))
        .collect();
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by(|&a, &b| spans[a].0.total_cmp(&spans[b].0).then(a.cmp(&b)));
    let mut lane_end: Vec<f64> = Vec::new();
    let mut lane = vec![(0, true); windows.len()];
    for i in order {
        let (x0, x1) = spans[i];
        match lane_end.iter().position(|end| *end + 2.0 <= x0) {
            Some(l) => {
                lane_end[l] = x1;
                lane[i] = (l, true);
            }
            None if lane_end.len() < MAX_LANES => {
                lane_end.push(x1);
                lane[i] = (lane_end.len() - 1, true);
            }
            None => {
                let last = MAX_LANES - 1;
                lane_end[last] = lane_end[last].max(x1);
                lane[i] = (last, false);
            }
        }
    }
    Lanes {
        lane,
        count: lane_end.len(),
    }
}

fn spans(windows: &[Window], frame: &Frame, duration_s: f64) -> Vec<(f64, f64)> {
    windows
        .iter()
        .map(|w| {
            let x0 = frame.x_of(w.start_s, duration_s);
            (x0, frame.x_of(w.end_s, duration_s).max(x0 + 2.0))
        })
        .collect()
}

/// Height of one lane.
pub(crate) fn lane_height(font: f64) -> f64 {
    font * 1.45
}

/// Where and how [`draw_lanes`] draws the lanes.
#[derive(Clone, Copy)]
pub(crate) struct Strip<'a> {
    /// y of the first lane.
    pub top: f64,
    /// Label font size.
    pub font: f64,
    /// Labels may name the kind and providers (else the key and kind at most).
    pub full: bool,
    /// The chart's id prefix (for the hatch pattern).
    pub id: &'a str,
}

/// Draws `windows` as bars in their lanes above the plot, each labelled with the longest of its
/// labels that fits before the next bar of its lane.
pub(crate) fn draw_lanes(
    svg: &mut Svg,
    windows: &[Window],
    lanes: &Lanes,
    frame: &Frame,
    strip: &Strip<'_>,
    duration_s: f64,
) {
    let Strip {
        top,
        font,
        full,
        id,
    } = *strip;
    let spans = spans(windows, frame, duration_s);
    let lh = lane_height(font);
    for (i, w) in windows.iter().enumerate() {
        let (lane, _) = lanes.lane[i];
        let (x0, x1) = spans[i];
        let y = top + lane as f64 * lh;
        let fill = if w.spike {
            format!("url(#{id}-hatch)")
        } else {
            w.color.to_string()
        };
        let _ = write!(
            svg.out,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}" fill-opacity="0.35" stroke="{}"><title>{}</title></rect>"#,
            y + 1.0,
            x1 - x0,
            lh - 2.0,
            w.color,
            escape(&w.title)
        );
    }
    // Labels, lane by lane, left to right: each may run past its bar up to the next one.
    for l in 0..lanes.count {
        let mut members: Vec<usize> = (0..windows.len())
            .filter(|&i| lanes.lane[i].0 == l)
            .collect();
        members.sort_by(|&a, &b| spans[a].0.total_cmp(&spans[b].0).then(a.cmp(&b)));
        for (k, &i) in members.iter().enumerate() {
            if !lanes.lane[i].1 {
                continue;
            }
            let w = &windows[i];
            let x = spans[i].0 + 3.0;
            let limit = members
                .get(k + 1)
                .map_or(frame.right(), |&next| spans[next].0)
                .min(frame.right())
                - 3.0;
            let mut candidates = Vec::with_capacity(3);
            if full && !w.providers.is_empty() {
                candidates.push(format!("{} {} · {}", w.key, w.what, w.providers));
            }
            candidates.push(format!("{} {}", w.key, w.what));
            candidates.push(w.key.clone());
            if let Some(label) = candidates
                .into_iter()
                .find(|c| x + text_width(c, font) <= limit)
            {
                let y = top + l as f64 * lh + lh / 2.0;
                let baseline = svg.middle(y);
                svg.text(x, baseline, Anchor::Start, "lbl", &label);
            }
        }
    }
}

/// Shades every window over the plot (`frame`), hatching the spikes; defines the hatch pattern
/// `{id}-hatch` used by the lanes too.
pub(crate) fn shade(svg: &mut Svg, windows: &[Window], frame: &Frame, duration_s: f64, id: &str) {
    let _ = write!(
        svg.out,
        r##"<defs><pattern id="{id}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/><line x1="0" y1="0" x2="0" y2="6" stroke="{}" stroke-width="3"/></pattern></defs>"##,
        super::SPIKE_COLOR
    );
    for (w, (x0, x1)) in windows.iter().zip(spans(windows, frame, duration_s)) {
        let fill = if w.spike {
            format!(r#"url(#{id}-hatch)" fill-opacity="0.3"#)
        } else {
            format!(r#"{}" fill-opacity="0.14"#, w.color)
        };
        let _ = write!(
            svg.out,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}"><title>{}</title></rect>"#,
            frame.top,
            x1 - x0,
            frame.h,
            escape(&w.title)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(key: &str, start_s: f64, end_s: f64) -> Window {
        Window {
            key: key.into(),
            what: "outage".into(),
            providers: "openai".into(),
            start_s,
            end_s,
            color: "#000",
            spike: false,
            title: String::new(),
        }
    }

    #[test]
    fn lanes_separate_overlapping_windows_and_reuse_free_ones() {
        let frame = Frame {
            left: 0.0,
            top: 0.0,
            w: 1000.0,
            h: 10.0,
        };
        let w = [
            window("#0", 0.0, 50.0),
            window("#1", 10.0, 20.0),
            window("#2", 60.0, 70.0),
            window("#3", 15.0, 65.0),
        ];
        let lanes = assign_lanes(&w, &frame, 100.0, 1.0);
        assert_eq!(lanes.count, 3);
        assert_eq!(
            lanes.lane.iter().map(|l| l.0).collect::<Vec<_>>(),
            [0, 1, 0, 2]
        );
        // More overlapping windows than lanes: the extra ones share the last lane, unlabelled.
        let many: Vec<Window> = (0..MAX_LANES + 2)
            .map(|i| window(&format!("#{i}"), 0.0, 100.0))
            .collect();
        let lanes = assign_lanes(&many, &frame, 100.0, 1.0);
        assert_eq!(lanes.count, MAX_LANES);
        assert_eq!(lanes.lane.iter().filter(|l| !l.1).count(), 2);
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
