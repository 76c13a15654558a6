//! Scales and axes of the HTML report's charts: where a value lands and which labels an axis gets.
//!
//! Everything here is pure arithmetic on the report's numbers, so the page is the same bytes for the
//! same report, and every piece is unit-tested below.
//!
//! - [`FailScale`] places availability on a log scale of *failed requests per 10 000*: 99.5% and
//!   99.9% (50 and 10 per 10k) sit 0.7 decades apart instead of 0.4 percentage points, and a run
//!   that lost nothing sits on its own line above (or left of) the first decade.
//! - [`time_ticks`] picks a round step (1-2-5 seconds, 15/30 s, minutes, hours, days) and one unit
//!   for the whole axis (`0`, `0.5 h`, `1 h`, ...), the smallest step whose labels do not collide.
//! - [`linear_ticks`] does the same for a count axis (1-2-5 steps).
//! - [`text_width`] estimates a label's width so that labels can be laid out without a browser; it
//!   errs wide (the chart test in `simulator/tests/html_layout.rs` measures the real boxes).

/// Requests per "per 10k" unit: failures are shown per 10 000 requests.
pub(crate) const PER: f64 = 10_000.0;

/// Estimated width of `text` at `font` units, erring wide: glyph widths of DejaVu Sans (a wide
/// sans-serif, what Linux browsers fall back to), rounded up by class.
pub(crate) fn text_width(text: &str, font: f64) -> f64 {
    let em: f64 = text
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' | 'I' => 0.32,
            ' ' | 'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '-' => 0.42,
            'm' | 'w' | 'M' | 'W' | '%' | '@' | '…' | '—' => 1.0,
            'A'..='Z' | '#' | '&' | '×' => 0.78,
            _ => 0.66,
        })
        .sum();
    em * font
}

/// Cuts `text` to at most `max` characters, ending with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// A number with at most `decimals` decimals, trailing zeros dropped (`0.5`, `2`, `0.25`).
pub(crate) fn trim_number(value: f64, decimals: usize) -> String {
    let s = format!("{value:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" { "0".to_string() } else { s }
}

/// An integer with a space every three digits, as the docs write numbers (`1 234 567`).
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `t_s` as a clock from the start, `m:ss`, or `h:mm:ss` with `hours` (rounded to the second).
pub(crate) fn clock(t_s: f64, hours: bool) -> String {
    let t = t_s.max(0.0).round() as u64;
    if hours {
        format!("{}:{:02}:{:02}", t / 3_600, t / 60 % 60, t % 60)
    } else {
        format!("{}:{:02}", t / 60, t % 60)
    }
}

/// Failed requests per 10 000.
pub(crate) fn failed_per_10k(requests: u64, answered: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        requests.saturating_sub(answered) as f64 * PER / requests as f64
    }
}

/// Availability as a percentage that never rounds a loss up to `100%`: three decimals, more when
/// needed, up to six.
pub(crate) fn percent(requests: u64, answered: u64) -> String {
    if requests == 0 || answered >= requests {
        return "100%".to_string();
    }
    let p = answered as f64 * 100.0 / requests as f64;
    for decimals in 3..=6 {
        let s = format!("{p:.decimals$}");
        if !s.starts_with("100") {
            return format!("{s}%");
        }
    }
    "99.999999%".to_string()
}

/// A log scale of failed requests per 10 000, from none (position 0) through the decades
/// `10^lo ..= 10^hi` (position 1 at `10^hi`). "None" is one decade step before `10^lo`, so it is
/// apart from every loss, however small.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FailScale {
    /// The first decade shown: `10^lo` failures per 10k.
    pub lo: i32,
    /// The last decade shown: `10^hi` (4 = every request failed).
    pub hi: i32,
}

/// The smallest loss the scale resolves: 0.01 per 10k, i.e. 99.9999% availability.
const LO_MIN: i32 = -2;
/// Every request failed: 10 000 per 10k.
const HI_MAX: i32 = 4;

impl FailScale {
    /// The scale that shows `values` (failed per 10k; zeros are placed apart): from the decade at
    /// or below the smallest loss to the decade at or above the largest.
    pub(crate) fn fit(values: impl IntoIterator<Item = f64>) -> Self {
        let (mut min, mut max) = (f64::INFINITY, 0.0f64);
        for v in values {
            if v > 0.0 && v.is_finite() {
                min = min.min(v);
                max = max.max(v);
            }
        }
        if max <= 0.0 {
            // Nothing failed: show the top decades, so "100%" reads against 99.99% and 99.9%.
            return FailScale { lo: 0, hi: 1 };
        }
        let hi = (max.log10() - 1e-9)
            .ceil()
            .clamp(f64::from(LO_MIN + 1), f64::from(HI_MAX)) as i32;
        let lo = (min.log10() + 1e-9)
            .floor()
            .clamp(f64::from(LO_MIN), f64::from(hi - 1)) as i32;
        FailScale { lo, hi }
    }

    /// Steps from "none" to the last decade: `hi - lo + 1`.
    fn steps(&self) -> f64 {
        f64::from(self.hi - self.lo + 1)
    }

    /// Where `per_10k` lands, in `[0, 1]`: 0 for no failure, then one equal step per decade.
    /// Values beyond the scale are clamped to its ends (a loss below `10^lo` shows at `10^lo`).
    pub(crate) fn position(&self, per_10k: f64) -> f64 {
        if per_10k <= 0.0 || per_10k.is_nan() {
            return 0.0;
        }
        let decade = per_10k
            .log10()
            .clamp(f64::from(self.lo), f64::from(self.hi));
        (decade - f64::from(self.lo) + 1.0) / self.steps()
    }

    /// The ticks: "none" then every decade, as (position, availability label, per-10k label).
    pub(crate) fn ticks(&self) -> Vec<(f64, String, String)> {
        let mut out = vec![(0.0, "100%".to_string(), "0".to_string())];
        for k in self.lo..=self.hi {
            let per_10k = 10f64.powi(k);
            let availability = 100.0 - per_10k / 100.0;
            let decimals = (2 - k).max(0) as usize;
            out.push((
                self.position(per_10k),
                format!("{}%", trim_number(availability, decimals)),
                if k >= 0 {
                    group(per_10k as u64)
                } else {
                    trim_number(per_10k, (-k) as usize)
                },
            ));
        }
        out
    }
}

/// Steps a time axis may take, seconds: 1-2-5 below a second, then round clock intervals.
const TIME_STEPS_S: [f64; 33] = [
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1_800.0,
    3_600.0,
    7_200.0,
    10_800.0,
    21_600.0,
    43_200.0,
    86_400.0,
    172_800.0,
    345_600.0,
    604_800.0,
    1_209_600.0,
    2_419_200.0,
    4_838_400.0,
];

/// Units of a time axis: the largest one the duration spans at least three times.
const TIME_UNITS: [(f64, &str); 5] = [
    (86_400.0, "d"),
    (3_600.0, "h"),
    (60.0, "min"),
    (1.0, "s"),
    (0.001, "ms"),
];

/// The unit a time axis over `duration_s` speaks in.
pub(crate) fn time_unit(duration_s: f64) -> (f64, &'static str) {
    TIME_UNITS
        .iter()
        .copied()
        .find(|(u, _)| duration_s >= 3.0 * u)
        .unwrap_or((0.001, "ms"))
}

/// `t_s` in the axis unit, with as many decimals as the step needs (at most 2).
pub(crate) fn time_label(t_s: f64, unit: (f64, &str)) -> String {
    if t_s == 0.0 {
        return "0".to_string();
    }
    format!("{} {}", trim_number(t_s / unit.0, 2), unit.1)
}

/// A time axis over `[0, duration_s]`: (time, label) for each tick, the smallest round step in
/// the axis unit (representable with at most two decimals) whose labels, `font` units tall and
/// centred on their ticks, are at least one `font` apart on a `plot_w` wide axis. Always has the
/// tick at 0.
pub(crate) fn time_ticks(duration_s: f64, plot_w: f64, font: f64) -> Vec<(f64, String)> {
    let unit = time_unit(duration_s);
    let representable = |step: f64| {
        let hundredths = step / unit.0 * 100.0;
        (hundredths - hundredths.round()).abs() < 1e-6 && hundredths.round() >= 1.0
    };
    let ticks_of = |step: f64| -> Vec<(f64, String)> {
        let n = (duration_s / step + 1e-9).floor() as u64;
        (0..=n)
            .map(|i| {
                let t = i as f64 * step;
                (t, time_label(t, unit))
            })
            .collect()
    };
    for step in TIME_STEPS_S.iter().copied().filter(|s| representable(*s)) {
        let ticks = ticks_of(step);
        let widest = ticks
            .iter()
            .map(|(_, l)| text_width(l, font))
            .fold(0.0, f64::max);
        if step / duration_s * plot_w >= widest + font {
            return ticks;
        }
    }
    vec![(0.0, "0".to_string())]
}

/// A linear axis from 0 to at least `max`: a 1-2-5 step with at most `most` intervals, as
/// (value, label) ticks, and the axis top (the last tick).
pub(crate) fn linear_ticks(max: f64, most: usize) -> (Vec<(f64, String)>, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let most = most.max(1) as f64;
    let mut magnitude = 10f64.powf((max / most).log10().floor());
    let step = loop {
        if let Some(m) = [1.0, 2.0, 5.0]
            .iter()
            .map(|m| m * magnitude)
            .find(|s| (max / s).ceil() <= most)
        {
            break m;
        }
        magnitude *= 10.0;
    };
    let n = (max / step - 1e-9).ceil().max(1.0) as u64;
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    let label = |v: f64| {
        if v >= 1e6 && step >= 1e5 {
            format!("{}M", trim_number(v / 1e6, 1))
        } else if v >= 1e3 && step >= 100.0 {
            format!("{}k", trim_number(v / 1e3, 1))
        } else {
            trim_number(v, decimals)
        }
    };
    let ticks = (0..=n)
        .map(|i| {
            let v = i as f64 * step;
            (v, label(v))
        })
        .collect();
    (ticks, n as f64 * step)
}

/// Which labels of an axis to draw so that none overlaps: every `k`-th, for the smallest `k`
/// whose kept labels (centred at `positions`, `widths` wide, in axis units) keep `gap` apart.
/// Returns the indexes kept (always the first).
pub(crate) fn thin(positions: &[f64], widths: &[f64], gap: f64) -> Vec<usize> {
    let n = positions.len();
    for k in 1..=n.max(1) {
        let kept: Vec<usize> = (0..n).step_by(k).collect();
        let fits = kept.windows(2).all(|w| {
            let (a, b) = (w[0], w[1]);
            (positions[b] - positions[a]).abs() >= (widths[a] + widths[b]) / 2.0 + gap
        });
        if fits {
            return kept;
        }
    }
    (0..n.min(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_scale_separates_the_last_half_percent() {
        let values = [
            failed_per_10k(10_000, 9_960),
            failed_per_10k(10_000, 9_990),
            failed_per_10k(10_000, 9_999),
        ];
        let s = FailScale::fit(values);
        assert_eq!(s, FailScale { lo: 0, hi: 2 });
        // 99.6% and 99.9% are 0.6 decades apart: 20% of a 3-step scale, not 0.3% of a 0-100 axis.
        let (a, b) = (s.position(values[0]), s.position(values[1]));
        assert!((a - b - 0.602 / 3.0).abs() < 1e-3, "{a} {b}");
        // No failure is one step apart from the smallest decade.
        assert_eq!(s.position(0.0), 0.0);
        assert!((s.position(1.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.position(100.0) - 1.0).abs() < 1e-12);
        // Out of range values clamp to the ends.
        assert_eq!(s.position(1e6), 1.0);
        assert_eq!(s.position(1e-3), s.position(1.0));
    }

    #[test]
    fn fail_scale_bounds_and_labels() {
        assert_eq!(FailScale::fit([]), FailScale { lo: 0, hi: 1 });
        assert_eq!(FailScale::fit([0.0, 0.0]), FailScale { lo: 0, hi: 1 });
        assert_eq!(FailScale::fit([10_000.0]), FailScale { lo: 3, hi: 4 });
        assert_eq!(FailScale::fit([1e-5, 5.0]), FailScale { lo: -2, hi: 1 });
        // An exact decade is its own bound.
        assert_eq!(FailScale::fit([10.0, 100.0]), FailScale { lo: 1, hi: 2 });
        let labels: Vec<(String, String)> = FailScale { lo: -1, hi: 4 }
            .ticks()
            .into_iter()
            .map(|(_, a, f)| (a, f))
            .collect();
        let expected = [
            ("100%", "0"),
            ("99.999%", "0.1"),
            ("99.99%", "1"),
            ("99.9%", "10"),
            ("99%", "100"),
            ("90%", "1 000"),
            ("0%", "10 000"),
        ];
        assert_eq!(labels.len(), expected.len());
        for ((a, f), (ea, ef)) in labels.iter().zip(expected) {
            assert_eq!((a.as_str(), f.as_str()), (ea, ef));
        }
    }

    #[test]
    fn percent_never_rounds_a_loss_away() {
        assert_eq!(percent(1_000, 1_000), "100%");
        assert_eq!(percent(1_000, 999), "99.900%");
        assert_eq!(percent(8_640_000, 8_639_999), "99.99999%");
        assert_eq!(percent(3, 0), "0.000%");
        assert_eq!(percent(0, 0), "100%");
    }

    fn labels(duration_s: f64, plot_w: f64) -> Vec<String> {
        time_ticks(duration_s, plot_w, 12.0)
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }

    #[test]
    fn time_ticks_take_round_steps_in_one_unit() {
        assert_eq!(
            labels(86_400.0, 900.0),
            [
                "0", "2 h", "4 h", "6 h", "8 h", "10 h", "12 h", "14 h", "16 h", "18 h", "20 h",
                "22 h", "24 h"
            ]
        );
        assert_eq!(
            labels(86_400.0, 350.0),
            [
                "0", "3 h", "6 h", "9 h", "12 h", "15 h", "18 h", "21 h", "24 h"
            ]
        );
        assert_eq!(
            labels(86_400.0, 200.0),
            ["0", "6 h", "12 h", "18 h", "24 h"]
        );
        // 40 minutes: minutes.
        assert_eq!(
            labels(2_400.0, 900.0),
            [
                "0", "5 min", "10 min", "15 min", "20 min", "25 min", "30 min", "35 min", "40 min"
            ]
        );
        // 6 hours on a narrow axis: half hours would crowd, so whole hours.
        assert_eq!(
            labels(21_600.0, 350.0),
            ["0", "1 h", "2 h", "3 h", "4 h", "5 h", "6 h"]
        );
        assert_eq!(labels(21_600.0, 900.0)[..4], ["0", "0.5 h", "1 h", "1.5 h"]);
        // 30 seconds, 31 days.
        assert_eq!(labels(30.0, 900.0)[..3], ["0", "2 s", "4 s"]);
        assert_eq!(labels(31.0 * 86_400.0, 900.0)[..3], ["0", "2 d", "4 d"]);
        // The end need not be a tick.
        assert_eq!(labels(1_000.0, 350.0), ["0", "5 min", "10 min", "15 min"]);
    }

    #[test]
    fn time_ticks_never_overlap() {
        for duration in [
            0.5,
            7.0,
            59.0,
            61.0,
            600.0,
            3_599.0,
            28_020.0,
            47_640.0,
            2_678_400.0,
        ] {
            for plot_w in [200.0, 350.0, 900.0] {
                let ticks = time_ticks(duration, plot_w, 12.0);
                for w in ticks.windows(2) {
                    let gap = (w[1].0 - w[0].0) / duration * plot_w;
                    let half = (text_width(&w[0].1, 12.0) + text_width(&w[1].1, 12.0)) / 2.0;
                    assert!(gap >= half + 12.0, "{duration} {plot_w}: {w:?}");
                }
                assert!(ticks.last().is_some_and(|t| t.0 <= duration));
            }
        }
    }

    #[test]
    fn linear_ticks_are_round() {
        let (ticks, top) = linear_ticks(70.0, 5);
        let l: Vec<&str> = ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(l, ["0", "20", "40", "60", "80"]);
        assert_eq!(top, 80.0);
        let (ticks, top) = linear_ticks(0.35, 4);
        assert_eq!(ticks.last().map(|t| t.1.as_str()), Some("0.4"));
        assert!((top - 0.4).abs() < 1e-12);
        let (ticks, _) = linear_ticks(12_000_000.0, 4);
        assert_eq!(ticks[1].1, "5M");
        let (ticks, _) = linear_ticks(4_500.0, 5);
        assert_eq!(ticks[1].1, "1k");
        let (ticks, top) = linear_ticks(0.0, 4);
        assert_eq!((ticks.len(), top), (3, 1.0));
    }

    #[test]
    fn thin_keeps_every_kth_label_that_fits() {
        let pos = [0.0, 10.0, 20.0, 30.0, 40.0];
        assert_eq!(thin(&pos, &[5.0; 5], 2.0), [0, 1, 2, 3, 4]);
        assert_eq!(thin(&pos, &[15.0; 5], 2.0), [0, 2, 4]);
        assert_eq!(thin(&pos, &[100.0; 5], 2.0), [0]);
        assert!(thin(&[], &[], 1.0).is_empty());
    }

    #[test]
    fn small_helpers() {
        assert_eq!(group(1_234_567), "1 234 567");
        assert_eq!(group(12), "12");
        assert_eq!(clock(125.4, false), "2:05");
        assert_eq!(clock(70_800.0, true), "19:40:00");
        assert_eq!(clock(3_600.0 * 30.0 + 61.0, true), "30:01:01");
        assert_eq!(trim_number(0.50, 2), "0.5");
        assert_eq!(trim_number(3.0, 2), "3");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert!(text_width("99.99%", 12.0) > text_width("99", 12.0));
    }
}
