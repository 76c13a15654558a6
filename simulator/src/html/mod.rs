//! The HTML report (`stilts sim --format html`): one self-contained page that shows what the
//! terminal table shows and what it cannot: how runs compare near 100%, when things went wrong and
//! how each router spread its attempts.
//!
//! The page has no scripts and loads nothing (inline CSS and SVG only), so it can be mailed,
//! archived as a CI artefact or opened offline; the same report always gives the same bytes. Its
//! parts, top to bottom:
//!
//! - availability per run, on a log scale of failed requests per 10 000 ([`scale::FailScale`]);
//! - the timeline: request rate, every event and traffic spike as a labelled bar;
//! - availability over time per run, on the same scale, event windows shaded;
//! - each run's share of attempts per provider over time;
//! - the summary, failure-reason, failed-attempt and time-to-recover tables (the terminal report's
//!   numbers, formatted by the same functions), and the expectations.
//!
//! Charts are inline SVG with a `viewBox` and CSS width, drawn twice (a wide and a narrow layout,
//! [`svg::LAYOUTS`]; a media query shows one), with labels laid out from estimated text widths so
//! that none overlaps. `simulator/tests/html_layout.rs` renders the page in headless Chromium at
//! three widths and checks the real label boxes.

mod charts;
mod scale;
mod svg;

use crate::metrics::REASONS;
use crate::report::{Report, opt, recover_s};
use scale::{failed_per_10k, group, percent, trim_number};
use std::fmt::Write as _;
use stilts_core::ErrorClass;
use svg::{LAYOUTS, Layout, escape};

/// Colour of traffic spikes.
pub(crate) const SPIKE_COLOR: &str = "#1b7fa6";

/// Colours of the configs under test, in file order.
const CONFIG_COLORS: [&str; 6] = [
    "#1f5fbf", "#2a9d3a", "#8e44ad", "#00a3a3", "#c2185b", "#6d7f00",
];
/// Colours of providers, in world order.
const PROVIDER_COLORS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// How one run is drawn.
pub(crate) struct RunStyle {
    /// Line colour.
    pub color: &'static str,
    /// Dashed (the oracle: a bound, not a router).
    pub dashed: bool,
}

fn run_style(name: &str, kind: &str, config_index: usize) -> RunStyle {
    let color = match (kind, name) {
        ("config", _) => CONFIG_COLORS[config_index % CONFIG_COLORS.len()],
        (_, "single") => "#d62728",
        (_, "naive") => "#ff7f0e",
        (_, "seed_router") => "#8c564b",
        _ => "#555555",
    };
    RunStyle {
        color,
        dashed: kind == "oracle",
    }
}

/// The colour of an event kind: failures red, partial failures orange, silence brown, slowness
/// purple, rate limits olive, capacity grey.
pub(crate) fn kind_color(kind: &str) -> &'static str {
    match kind {
        "outage" | "flapping" | "quota_exhausted" => "#d62728",
        "error_burst" | "partial_outage" | "malformed" => "#f07b00",
        "hang" | "stream_stall" | "stream_cut" => "#8c564b",
        "brownout" | "slow_first_token" => "#9467bd",
        "rate_limit" => "#a3a500",
        _ => "#7f7f7f",
    }
}

/// What the charts share: the report, its windows and the colours.
pub(crate) struct Page<'a> {
    /// The report drawn.
    pub report: &'a Report,
    /// Events, then spikes.
    pub windows: Vec<svg::Window>,
    /// One per run.
    pub run_styles: Vec<RunStyle>,
    /// Provider colours.
    pub provider_colors: &'static [&'static str],
}

const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;color:#1d1d1f;background:#fff;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;overflow-wrap:anywhere}\
main{max-width:1120px;margin:0 auto;padding:12px 16px 32px}\
h1{font-size:1.5em;margin:.3em 0 .1em}\
h2{font-size:1.15em;margin:1.6em 0 .3em;padding-bottom:.2em;border-bottom:1px solid #ddd}\
h3{font-size:1em;margin:1em 0 .1em}\
h3 small{font-weight:normal;color:#555}\
p{margin:.3em 0}\
.meta,.note{color:#555}\
.note{font-size:.9em}\
.verdict{font-weight:600}\
.pass{color:#17741c}\
.fail{color:#b00020;font-weight:600}\
.chart svg{display:block;width:100%;height:auto}\
.narrow{display:none}\
@media (max-width:719px){body{font-size:14px}main{padding:8px 10px 24px}.wide{display:none}.narrow{display:block}}\
svg text{fill:#333}\
svg .val{fill:#111;font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:3px}\
svg .grid{stroke:#e4e4e4;stroke-width:1}\
svg .zero{stroke:#bbb;stroke-dasharray:3 3}\
svg .frame{fill:none;stroke:#999}\
svg .rate{fill:#9fb8d0;stroke:#4e6f90;stroke-width:1}\
.legend{list-style:none;padding:0;margin:.4em 0;display:flex;flex-wrap:wrap;gap:.2em 1.2em;font-size:.9em}\
.legend li{display:flex;align-items:center;gap:.4em;min-width:0}\
.sw{display:inline-block;width:1.6em;border-top:3px solid}\
.box{display:inline-block;width:.9em;height:.9em;border:1px solid}\
.hatch{background:repeating-linear-gradient(45deg,#1b7fa6 0 2px,#fff 2px 5px)}\
.events{padding-left:1.2em;font-size:.9em}\
.scroll{overflow-x:auto;max-width:100%}\
table{border-collapse:collapse;font-size:.9em;font-variant-numeric:tabular-nums;margin:.3em 0}\
th,td{padding:3px 8px;border-bottom:1px solid #e6e6e6;text-align:right;white-space:nowrap}\
th{font-weight:600;background:#f6f6f6}\
th:first-child,td:first-child{text-align:left}\
td.z{color:#bbb}\
";

/// Renders the page.
pub(crate) fn render(report: &Report) -> String {
    let mut configs = 0;
    let run_styles = report
        .runs
        .iter()
        .map(|r| {
            let style = run_style(&r.name, r.kind, configs);
            if r.kind == "config" {
                configs += 1;
            }
            style
        })
        .collect();
    let page = Page {
        report,
        windows: charts::windows(report),
        run_styles,
        provider_colors: &PROVIDER_COLORS,
    };
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>stilts sim: {}</title><style>{CSS}</style></head><body><main>\n",
        escape(&report.scenario)
    );
    header(&mut s, report);
    section(
        &mut s,
        "Availability per run",
        "Requests answered within the client's deadline over the whole run. The scale is \
         logarithmic in failed requests per 10 000: each grid step is ten times more failures \
         (99.99%, 99.9%, 99%...), and a run that lost nothing sits apart on the dashed 100% line.",
    );
    figure(&mut s, "run-avail", |layout, _| {
        charts::availability_per_run(&page, layout)
    });
    timeline_section(&mut s, &page);
    section(
        &mut s,
        "Availability over time",
        "Availability of the requests arriving in each time bucket, per run, on the same scale \
         (left: availability; right, on wide screens: failed requests per 10 000). Shaded: the \
         events and spikes of the timeline, keyed above the plot.",
    );
    run_legend(&mut s, &page);
    figure(&mut s, "over-time", |layout, id| {
        charts::availability_over_time(&page, layout, id)
    });
    shares_section(&mut s, &page);
    summary_table(&mut s, report);
    failure_tables(&mut s, report);
    recovery_table(&mut s, report);
    expectations(&mut s, report);
    let _ = write!(
        s,
        "<p class=\"note\">stilts sim, report schema {} (the JSON of <code>--format json</code> holds \
         the same numbers).</p>\n</main></body></html>\n",
        crate::report::SCHEMA
    );
    s
}

fn header(s: &mut String, report: &Report) {
    let _ = write!(s, "<h1>{}</h1>", escape(&report.scenario));
    if !report.description.is_empty() {
        let _ = write!(s, "<p>{}</p>", escape(&report.description));
    }
    let configs = report.runs.iter().filter(|r| r.kind == "config").count();
    let _ = write!(
        s,
        "<p class=\"meta\">seed {} · {} s of traffic · {} requests · {} providers · {} config{} \
         and 4 baselines</p>",
        report.seed,
        trim_number(report.duration_s, 3),
        group(report.requests),
        report.providers.len(),
        configs,
        if configs == 1 { "" } else { "s" }
    );
    let total = report.expectations.len();
    let failed = report.expectations.iter().filter(|e| !e.passed).count();
    if total > 0 {
        let _ = writeln!(
            s,
            "<p class=\"verdict {}\">{}</p>",
            if failed == 0 { "pass" } else { "fail" },
            if failed == 0 {
                format!("all {total} expectations hold")
            } else {
                format!("{failed} of {total} expectations FAIL (listed at the end)")
            }
        );
    }
}

fn section(s: &mut String, title: &str, note: &str) {
    let _ = writeln!(
        s,
        "<h2>{}</h2><p class=\"note\">{}</p>",
        escape(title),
        escape(note)
    );
}

/// A chart in both layouts; `draw` gets the layout and an id prefix unique in the page.
fn figure(s: &mut String, id: &str, draw: impl Fn(&Layout, &str) -> String) {
    for layout in &LAYOUTS {
        let id = format!("{id}-{}", layout.class);
        let _ = writeln!(
            s,
            "<div class=\"chart {}\" data-chart=\"{id}\">{}</div>",
            layout.class,
            draw(layout, &id)
        );
    }
}

fn run_legend(s: &mut String, page: &Page<'_>) {
    s.push_str("<ul class=\"legend\">");
    for (r, style) in page.report.runs.iter().zip(&page.run_styles) {
        let _ = write!(
            s,
            "<li><span class=\"sw\" style=\"border-top-color:{};border-top-style:{}\"></span>{}</li>",
            style.color,
            if style.dashed { "dashed" } else { "solid" },
            escape(&r.name)
        );
    }
    s.push_str("</ul>\n");
}

fn timeline_section(s: &mut String, page: &Page<'_>) {
    let report = page.report;
    section(
        s,
        "Timeline",
        "Requests arriving per second (area) and, above it, every event of the scenario (#n, \
         coloured by kind) and every traffic spike (Sn, hatched), also shaded on the plots.",
    );
    // A legend of the kinds present.
    let mut kinds: Vec<&str> = report.events.iter().map(|e| e.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    if !kinds.is_empty() || !report.spikes.is_empty() {
        s.push_str("<ul class=\"legend\">");
        for kind in kinds {
            let color = kind_color(kind);
            let _ = write!(
                s,
                "<li><span class=\"box\" style=\"background:{color}59;border-color:{color}\"></span>{kind}</li>"
            );
        }
        if !report.spikes.is_empty() {
            s.push_str("<li><span class=\"box hatch\" style=\"border-color:#1b7fa6\"></span>traffic spike</li>");
        }
        s.push_str("</ul>\n");
    }
    figure(s, "timeline", |layout, id| {
        charts::timeline(page, layout, id)
    });
    if page.windows.is_empty() {
        s.push_str("<p class=\"note\">No events and no spikes: a calm day.</p>\n");
        return;
    }
    s.push_str("<ul class=\"events\">");
    for e in &report.events {
        let _ = write!(
            s,
            "<li><b>#{} {}</b> on {}, {}{}</li>",
            e.index,
            e.kind,
            escape(&e.providers.join(", ")),
            span(e.start_s, e.end_s, report.duration_s),
            if e.note.is_empty() {
                String::new()
            } else {
                format!(": {}", escape(&e.note))
            }
        );
    }
    for (i, sp) in report.spikes.iter().enumerate() {
        let _ = write!(
            s,
            "<li><b>S{i} spike</b>: the request rate x{}, {}</li>",
            trim_number(sp.factor, 2),
            span(sp.start_s, sp.end_s, report.duration_s)
        );
    }
    s.push_str("</ul>\n");
}

/// `600 s to 1 500 s (10:00 to 25:00)`: the seconds of the terminal report, and the clock time
/// from the start when the scenario is longer than two minutes.
fn span(start_s: f64, end_s: f64, duration_s: f64) -> String {
    let secs = |t: f64| {
        if t.fract() == 0.0 && t < 1e15 {
            group(t as u64)
        } else {
            trim_number(t, 3)
        }
    };
    let mut out = format!("{} s to {} s", secs(start_s), secs(end_s));
    if duration_s > 120.0 {
        let hours = duration_s >= 3_600.0;
        let _ = write!(
            out,
            " ({} to {})",
            scale::clock(start_s, hours),
            scale::clock(end_s, hours)
        );
    }
    out
}

fn shares_section(s: &mut String, page: &Page<'_>) {
    let report = page.report;
    section(
        s,
        "Provider share of attempts",
        "For each run, the share of its attempts sent to each provider over time (stacked to \
         100%), and over the whole run in the heading.",
    );
    s.push_str("<ul class=\"legend\">");
    for (i, p) in report.providers.iter().enumerate() {
        let color = page.provider_colors[i % page.provider_colors.len()];
        let _ = write!(
            s,
            "<li><span class=\"box\" style=\"background:{color};border-color:{color}\"></span>{}</li>",
            escape(p)
        );
    }
    s.push_str("</ul>\n");
    for (i, r) in report.runs.iter().enumerate() {
        let shares: Vec<String> = r
            .providers
            .iter()
            .filter(|p| p.attempts > 0)
            .map(|p| format!("{} {}%", escape(&p.name), trim_number(p.share * 100.0, 1)))
            .collect();
        let _ = writeln!(
            s,
            "<h3>{} <small>{} attempts{}{}</small></h3>",
            escape(&r.name),
            group(r.attempts),
            if shares.is_empty() { "" } else { ": " },
            shares.join(" · ")
        );
        figure(s, &format!("share-{i}"), |layout, id| {
            charts::share(page, layout, i, id)
        });
    }
}

fn table_open(s: &mut String, headers: &[String]) {
    s.push_str("<div class=\"scroll\"><table><thead><tr>");
    for h in headers {
        let _ = write!(s, "<th>{h}</th>");
    }
    s.push_str("</tr></thead><tbody>\n");
}

fn table_close(s: &mut String) {
    s.push_str("</tbody></table></div>\n");
}

fn summary_table(s: &mut String, report: &Report) {
    section(
        s,
        "Summary",
        "The terminal report's table (availability with as many decimals as it takes not to \
         round a loss away): latency of answered requests, time to first token of answered \
         streams, attempts per request, spend per 1 000 requests at list prices.",
    );
    let headers: Vec<String> = [
        "run",
        "availability",
        "failed /10k",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "TTFT p99 ms",
        "attempts/req",
        "$ per 1k req",
        "breaker trips",
    ]
    .iter()
    .map(|h| (*h).to_string())
    .collect();
    table_open(s, &headers);
    for r in &report.runs {
        let trips: u64 = r.providers.iter().map(|p| p.breaker_trips).sum();
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.3}</td><td>{:.4}</td><td>{}</td></tr>",
            escape(&r.name),
            percent(r.requests, r.answered),
            trim_number(failed_per_10k(r.requests, r.answered), 2),
            opt(r.latency_ms_p50),
            opt(r.latency_ms_p99),
            opt(r.latency_ms_p999),
            opt(r.ttft_ms_p99),
            r.amplification,
            r.cost_per_1k_usd,
            trips
        );
    }
    table_close(s);
}

fn failure_tables(s: &mut String, report: &Report) {
    section(
        s,
        "Why requests failed",
        "Unanswered requests by the reason the run gave up (the terminal report's failures \
         column), then failed attempts by error class, answered requests included.",
    );
    let reasons: Vec<&str> = REASONS
        .iter()
        .copied()
        .filter(|reason| report.runs.iter().any(|r| r.failures.contains_key(reason)))
        .collect();
    if reasons.is_empty() {
        s.push_str("<p>Every run answered every request.</p>\n");
    } else {
        s.push_str("<h3>Unanswered requests by reason</h3>\n");
        let mut headers = vec!["run".to_string(), "unanswered".to_string()];
        headers.extend(reasons.iter().map(|r| escape(r)));
        table_open(s, &headers);
        for r in &report.runs {
            let _ = write!(
                s,
                "<tr><td>{}</td>{}",
                escape(&r.name),
                count_cell(r.requests.saturating_sub(r.answered))
            );
            for reason in &reasons {
                s.push_str(&count_cell(r.failures.get(reason).copied().unwrap_or(0)));
            }
            s.push_str("</tr>\n");
        }
        table_close(s);
    }
    let classes: Vec<&str> = ErrorClass::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|class| {
            report
                .runs
                .iter()
                .any(|r| r.attempt_errors.contains_key(class))
        })
        .collect();
    if !classes.is_empty() {
        s.push_str("<h3>Failed attempts by error class</h3>\n");
        let mut headers = vec!["run".to_string(), "attempts".to_string()];
        headers.extend(classes.iter().map(|c| escape(c)));
        table_open(s, &headers);
        for r in &report.runs {
            let _ = write!(
                s,
                "<tr><td>{}</td>{}",
                escape(&r.name),
                count_cell(r.attempts)
            );
            for class in &classes {
                s.push_str(&count_cell(
                    r.attempt_errors.get(class).copied().unwrap_or(0),
                ));
            }
            s.push_str("</tr>\n");
        }
        table_close(s);
    }
}

fn count_cell(n: u64) -> String {
    if n == 0 {
        "<td class=\"z\">0</td>".to_string()
    } else {
        format!("<td>{n}</td>")
    }
}

fn recovery_table(s: &mut String, report: &Report) {
    if report.events.is_empty() {
        return;
    }
    section(
        s,
        "Time to recover",
        "Seconds from the end of each event until the availability of arriving requests is back \
         at the recovery level and stays there (the scenario's [report] settings); never: not \
         before the scenario ended.",
    );
    let mut headers = vec!["event".to_string(), "window".to_string()];
    headers.extend(report.runs.iter().map(|r| escape(&r.name)));
    table_open(s, &headers);
    for e in &report.events {
        let _ = write!(
            s,
            "<tr><td>#{} {} on {}</td><td>{}</td>",
            e.index,
            e.kind,
            escape(&e.providers.join(", ")),
            span(e.start_s, e.end_s, report.duration_s)
        );
        let cells: Vec<Option<String>> = report
            .runs
            .iter()
            .map(|r| {
                r.recovery
                    .iter()
                    .find(|x| x.event == e.index)
                    .map(recover_s)
            })
            .collect();
        if cells.iter().all(Option::is_none) {
            let _ = write!(
                s,
                "<td colspan=\"{}\" class=\"z\">lasts to the end</td>",
                report.runs.len()
            );
        } else {
            for cell in cells {
                let _ = write!(s, "<td>{}</td>", cell.unwrap_or_else(|| "-".into()));
            }
        }
        s.push_str("</tr>\n");
    }
    table_close(s);
}

fn expectations(s: &mut String, report: &Report) {
    if report.expectations.is_empty() {
        return;
    }
    section(
        s,
        "Expectations",
        "The scenario's [[expect]] checks, in file order.",
    );
    s.push_str("<ul>\n");
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use crate::{Report, Scenario, simulate};
    use std::path::Path;

    fn report() -> Report {
        let text = r#"
name = "tables"
duration_s = 120
[traffic]
rate_rps = 20
spikes = [{ start_s = 10, duration_s = 20, factor = 2 }]
[[providers]]
name = "a"
errors = { server = 0.01 }
[[providers]]
name = "b"
[[events]]
kind = "outage"
provider = "a"
start_s = 30
duration_s = 30
[[events]]
kind = "hang"
provider = "b"
start_s = 40
duration_s = 10
fraction = 0.5
[[events]]
kind = "brownout"
provider = "b"
start_s = 100
factor = 2
[[configs]]
name = "stilts"
[configs.router]
policy = "priority"
providers = [{ name = "a" }, { name = "b" }]
"#;
        let scenario = Scenario::parse(text, Path::new("tables.toml")).unwrap();
        simulate(&scenario, 3, &mut |_| {})
    }

    /// The cells of the table that follows `marker` in `html`, row by row.
    fn table_after(html: &str, marker: &str) -> Vec<Vec<String>> {
        let start = html.find(marker).expect("the table is there");
        let rest = &html[start..];
        let table = &rest[..rest.find("</table>").expect("the table ends")];
        table.split("<tr>").skip(1).map(cells).collect()
    }

    /// The text of each `<td>` and `<th>` of a row.
    fn cells(row: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = row;
        while let Some(i) = rest.find("<t") {
            let tag = &rest[i..];
            let is_cell = (tag.starts_with("<td") || tag.starts_with("<th"))
                && matches!(tag.as_bytes().get(3), Some(b' ' | b'>'));
            if !is_cell {
                rest = &tag[2..];
                continue;
            }
            let open = tag.find('>').expect("a tag ends") + 1;
            let close = tag.find("</t").expect("a cell ends");
            out.push(tag[open..close].to_string());
            rest = &tag[close + 3..];
        }
        out
    }

    #[test]
    fn failure_and_recovery_tables_show_the_terminal_numbers() {
        let report = report();
        let terminal = report.to_table();
        let html = report.to_html();
        let failures = table_after(&html, "Unanswered requests by reason");
        let header = &failures[0];
        for r in &report.runs {
            let row = failures
                .iter()
                .find(|row| row[0] == r.name)
                .expect("a row per run");
            let unanswered = r.requests - r.answered;
            assert_eq!(row[1], unanswered.to_string(), "{}", r.name);
            assert_eq!(r.failures.values().sum::<u64>(), unanswered, "{}", r.name);
            for (reason, n) in &r.failures {
                assert!(terminal.contains(&format!("{reason}={n}")), "{terminal}");
                let column = header.iter().position(|h| h == reason).unwrap();
                assert_eq!(row[column], n.to_string(), "{} {reason}", r.name);
            }
        }
        let recovery = table_after(&html, "<h2>Time to recover</h2>");
        let header = &recovery[0];
        let mut checked = 0;
        for line in terminal.lines().filter(|l| l.starts_with("  #")) {
            let event = line.trim().split(' ').next().unwrap();
            let row = recovery
                .iter()
                .find(|row| row[0].starts_with(&format!("{event} ")))
                .unwrap();
            if line.ends_with("(lasts to the end)") {
                assert_eq!(row[2], "lasts to the end");
                continue;
            }
            for pair in line.split_whitespace().filter(|t| t.contains('=')) {
                let (run, value) = pair.split_once('=').unwrap();
                let column = header.iter().position(|h| h == run).unwrap();
                assert_eq!(row[column], value, "{event} {run}");
                checked += 1;
            }
        }
        assert!(checked >= 10, "{terminal}");
        assert!(html.contains("lasts to the end"));
    }
}
