//! The HTML report in a real browser: headless Chromium lays the page out at three viewport
//! widths (a phone, a laptop, a wide screen) and a script measures what a person would see.
//!
//! The report itself has no scripts. The test writes it unchanged next to a harness page that
//! loads it into three iframes (390, 1024 and 1600 CSS px wide; a browser window cannot be narrower
//! than 500 px, an iframe can) and, once everything has loaded, measures in each: every chart
//! label (SVG text) and legend entry must be visible inside the viewport and inside its chart, no
//! two may overlap, SVG text must be at least 10 px tall, and the page must not scroll sideways.
//! The harness writes its verdict as JSON into its own DOM, which `chromium --dump-dom` prints.
//!
//! Chromium is required: without it the test fails and says how to install it (`.ci/run` does).
//! `STILTS_CHROMIUM` names another binary.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken fixture should fail the test loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use stilts_sim::{Scenario, simulate};

const WIDTHS: [u32; 3] = [390, 1024, 1600];

/// The Chromium binary, or a failure that says how to get it.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("STILTS_CHROMIUM") {
        return PathBuf::from(path);
    }
    let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
    if let Some(found) = candidates.iter().map(Path::new).find(|p| p.exists()) {
        return found.to_path_buf();
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        for name in ["chromium", "chromium-browser"] {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!(
        "the HTML report layout test needs Chromium (headless), which is not installed: \
         run `apt-get install -y chromium` (Debian/Ubuntu; .ci/run does it), or set \
         STILTS_CHROMIUM to a Chromium binary"
    );
}

const HARNESS_SCRIPT: &str = r#"
const WIDTHS = [390, 1024, 1600];
function overlap(a, b) {
  const ix = Math.min(a.right, b.right) - Math.max(a.left, b.left);
  const iy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
  return ix > 0.5 && iy > 0.5;
}
function measure(frame, width) {
  const doc = frame.contentDocument;
  const vw = doc.documentElement.clientWidth;
  const res = { width, viewport: vw, scroll_width: doc.documentElement.scrollWidth, labels: 0,
    charts: 0, overlaps: [], overflows: [], small: [], timeline: [] };
  const items = [];
  for (const el of doc.querySelectorAll('svg text, .legend li')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue; // in the layout the page does not show
    items.push({ el, r, text: el.textContent });
  }
  res.labels = items.length;
  for (let i = 0; i < items.length; i++) {
    for (let j = i + 1; j < items.length; j++) {
      if (overlap(items[i].r, items[j].r) && res.overlaps.length < 20) {
        res.overlaps.push(items[i].text + ' | ' + items[j].text);
      }
    }
  }
  for (const it of items) {
    const r = it.r;
    if (r.left < -0.5 || r.right > vw + 0.5) {
      res.overflows.push(it.text + ' spans ' + r.left.toFixed(1) + '..' + r.right.toFixed(1));
    }
    if (it.el.tagName.toLowerCase() === 'text') {
      const s = it.el.ownerSVGElement.getBoundingClientRect();
      if (r.left < s.left - 0.5 || r.right > s.right + 0.5 || r.top < s.top - 0.5 || r.bottom > s.bottom + 0.5) {
        res.overflows.push('outside its chart: ' + it.text);
      }
      if (r.height < 10) res.small.push(it.text + ' ' + r.height.toFixed(1) + 'px');
    }
  }
  for (const c of doc.querySelectorAll('.chart')) {
    if (c.getBoundingClientRect().width === 0) continue;
    res.charts++;
    if (c.dataset.chart.startsWith('timeline')) {
      for (const t of c.querySelectorAll('text')) res.timeline.push(t.textContent);
    }
  }
  return res;
}
window.addEventListener('load', () => {
  const out = WIDTHS.map((w, i) => {
    try { return measure(document.getElementById('f' + i), w); }
    catch (e) { return { width: w, error: String(e) }; }
  });
  document.getElementById('verdict').textContent = JSON.stringify(out);
});
"#;

/// What the harness measured at one width.
#[derive(Debug, serde::Deserialize)]
struct Verdict {
    width: u32,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    viewport: f64,
    #[serde(default)]
    scroll_width: f64,
    #[serde(default)]
    labels: usize,
    #[serde(default)]
    charts: usize,
    #[serde(default)]
    overlaps: Vec<String>,
    #[serde(default)]
    overflows: Vec<String>,
    #[serde(default)]
    small: Vec<String>,
    #[serde(default)]
    timeline: Vec<String>,
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Renders `html` at the three widths in Chromium and returns what the harness measured.
fn measure(name: &str, html: &str) -> Vec<Verdict> {
    let browser = chromium();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("html-layout")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("report.html"), html).unwrap();
    let frames: String = WIDTHS
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "<iframe id=\"f{i}\" src=\"report.html\" style=\"display:block;border:0;width:{w}px;height:1200px\"></iframe>"
            )
        })
        .collect();
    std::fs::write(
        dir.join("harness.html"),
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"></head><body><pre id=\"verdict\">pending</pre>{frames}<script>{HARNESS_SCRIPT}</script></body></html>"
        ),
    )
    .unwrap();
    let profile = dir.join("profile");
    let dump = dir.join("dom.html");
    let log = dir.join("chromium.log");
    let mut child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--allow-file-access-from-files",
            "--window-size=1700,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", dir.join("harness.html").display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dump).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start Chromium at {}: {e}; install it with `apt-get install -y chromium` \
                 (Debian/Ubuntu; .ci/run does it) or point STILTS_CHROMIUM at one",
                browser.display()
            )
        });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not finish in 180 s; its log is {}",
                browser.display(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = std::fs::read_to_string(&dump).unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        status.success(),
        "{} failed ({status}); its log is {}",
        browser.display(),
        log.display()
    );
    let start = dom
        .find("<pre id=\"verdict\">")
        .map(|i| i + "<pre id=\"verdict\">".len())
        .unwrap_or_else(|| panic!("no verdict in the dumped DOM: {dom}"));
    let end = start + dom[start..].find("</pre>").expect("the verdict ends");
    let json = unescape(&dom[start..end]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("verdict {json:?}: {e}"))
}

/// Checks every width's verdict: no errors, overlaps, overflows or tiny labels.
fn assert_clean(name: &str, verdicts: &[Verdict]) {
    assert_eq!(verdicts.len(), WIDTHS.len(), "{name}");
    for v in verdicts {
        let at = format!("{name} at {} px", v.width);
        assert!(v.error.is_none(), "{at}: the harness failed: {:?}", v.error);
        assert!(
            (v.viewport - f64::from(v.width)).abs() < 1.0,
            "{at}: the viewport is {} px",
            v.viewport
        );
        assert!(
            v.scroll_width <= v.viewport + 0.5,
            "{at}: the page scrolls sideways ({} px wide)",
            v.scroll_width
        );
        assert!(v.charts >= 4, "{at}: only {} charts shown", v.charts);
        assert!(v.labels >= 40, "{at}: only {} labels measured", v.labels);
        assert!(
            v.overlaps.is_empty(),
            "{at}: labels overlap: {:#?}",
            v.overlaps
        );
        assert!(
            v.overflows.is_empty(),
            "{at}: labels overflow: {:#?}",
            v.overflows
        );
        assert!(v.small.is_empty(), "{at}: labels too small: {:#?}", v.small);
    }
}

#[test]
fn shipped_report_lays_out_cleanly_with_every_window_labelled() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/launch-spike-outage.toml");
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let report = simulate(&scenario, scenario.seed, &mut |_| {});
    assert!(!report.events.is_empty() && !report.spikes.is_empty());
    let verdicts = measure("launch-spike-outage", &report.to_html());
    assert_clean("launch-spike-outage", &verdicts);
    // Every event and spike carries a label on the timeline, at every width.
    let keys: Vec<String> = report
        .events
        .iter()
        .map(|e| format!("#{}", e.index))
        .chain((0..report.spikes.len()).map(|i| format!("S{i}")))
        .collect();
    for v in &verdicts {
        for key in &keys {
            assert!(
                v.timeline
                    .iter()
                    .any(|t| t == key || t.starts_with(&format!("{key} "))),
                "{} px: no timeline label for {key}: {:?}",
                v.width,
                v.timeline
            );
        }
    }
}

/// Long names, many runs and providers, every event kind, overlapping windows and a window of one
/// second: the labels still fit.
#[test]
fn crowded_report_lays_out_cleanly() {
    let providers = [
        "openai-gpt-4o-mini-eastus-2",
        "anthropic-claude-haiku-4-5",
        "gemini-2-5-flash-europe-west4",
        "groq-llama-3-3-70b",
        "mistral-small-latest",
        "local-vllm-qwen",
        "azure-openai-gpt-4-1-mini",
        "bedrock-claude",
    ];
    let mut text = String::from(
        "name = \"crowded-report-with-a-rather-long-scenario-name-that-does-not-break\"\n\
         description = \"Everything at once & <escaped>: see https://example.com/incident?id=1\"\n\
         duration_s = 600\n[traffic]\nrate_rps = 4\nstream_share = 0.5\n\
         spikes = [{ start_s = 100, duration_s = 60, factor = 3 }, { start_s = 130, duration_s = 1, factor = 2 }]\n",
    );
    for (i, p) in providers.iter().enumerate() {
        text += &format!(
            "[[providers]]\nname = \"{p}\"\nmodel = \"m{}\"\ncapacity = {{ concurrency = 50 }}\n",
            i % 3
        );
    }
    let events = [
        ("outage", 0, 60.0, Some(120.0), ""),
        (
            "error_burst",
            1,
            50.0,
            Some(100.0),
            "class = \"server\"\nfraction = 0.5\n",
        ),
        ("brownout", 2, 55.0, Some(30.0), "factor = 3\n"),
        ("hang", 3, 58.0, Some(1.0), "fraction = 0.2\n"),
        (
            "rate_limit",
            0,
            61.0,
            Some(90.0),
            "fraction = 0.3\nretry_after_ms = 1000\n",
        ),
        ("quota_exhausted", 4, 200.0, Some(60.0), ""),
        ("stream_cut", 5, 201.0, Some(60.0), "fraction = 0.2\n"),
        ("slow_first_token", 6, 202.0, Some(60.0), "factor = 4\n"),
        ("stream_stall", 7, 203.0, Some(60.0), "fraction = 0.1\n"),
        ("malformed", 1, 204.0, Some(60.0), "fraction = 0.1\n"),
        (
            "flapping",
            2,
            205.0,
            Some(60.0),
            "period_s = 10\ndown_s = 3\n",
        ),
        (
            "partial_outage",
            0,
            206.0,
            Some(60.0),
            "model = \"m1\"\nfraction = 0.5\n",
        ),
        ("capacity", 3, 207.0, Some(60.0), "factor = 0.5\n"),
        ("outage", 1, 500.0, None, ""),
    ];
    for (kind, p, start, duration, extra) in events {
        text += &format!(
            "[[events]]\nkind = \"{kind}\"\nprovider = \"{}\"\nstart_s = {start}\n{}{extra}",
            providers[p],
            duration.map_or(String::new(), |d| format!("duration_s = {d}\n"))
        );
    }
    let list: Vec<String> = providers
        .iter()
        .map(|p| format!("{{ name = \"{p}\" }}"))
        .collect();
    for (name, policy) in [
        ("stilts-priority-with-a-long-descriptive-name", "priority"),
        ("stilts-weighted", "weighted"),
        ("stilts-round-robin", "round_robin"),
        ("stilts-least-latency", "least_latency"),
        ("stilts-cost", "cost"),
    ] {
        text += &format!(
            "[[configs]]\nname = \"{name}\"\n[configs.router]\npolicy = \"{policy}\"\nproviders = [{}]\n",
            list.join(", ")
        );
    }
    let scenario =
        Scenario::parse(&text, Path::new("crowded.toml")).unwrap_or_else(|e| panic!("{e}"));
    let report = simulate(&scenario, 1, &mut |_| {});
    let html = report.to_html();
    assert_eq!(html, simulate(&scenario, 1, &mut |_| {}).to_html());
    assert_clean("crowded", &measure("crowded", &html));
}

/// The page loads nothing: no scripts, links, images, imports or external `url()`s.
#[test]
fn report_is_self_contained() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/hang-blackhole.toml");
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let html = simulate(&scenario, 1, &mut |_| {}).to_html();
    for banned in [
        "<script",
        "<link",
        "<img",
        "<iframe",
        "src=",
        "href=",
        "@import",
        "@font-face",
    ] {
        assert!(!html.contains(banned), "the report contains {banned}");
    }
    for (i, _) in html.match_indices("url(") {
        assert!(
            html[i..].starts_with("url(#"),
            "an external url(): {}",
            &html[i..(i + 40).min(html.len())]
        );
    }
    // Charts scale with the page (viewBox and CSS): no fixed width on an <svg>.
    for (i, _) in html.match_indices("<svg") {
        let tag = &html[i..i + html[i..].find('>').unwrap_or(0)];
        assert!(!tag.contains(" width="), "a fixed width: {tag}");
    }
}

/// The harness itself: on a page that breaks each rule it reports each breach.
#[test]
fn the_layout_check_catches_overlaps_overflows_and_tiny_text() {
    let broken = "<!doctype html><html><head><meta charset=\"utf-8\"></head><body>\
        <div class=\"chart\" data-chart=\"x\"><svg viewBox=\"0 0 100 50\" style=\"width:100%\">\
        <text x=\"10\" y=\"20\" font-size=\"8\">overlap one</text>\
        <text x=\"12\" y=\"22\" font-size=\"8\">overlap two</text>\
        <text x=\"90\" y=\"40\" font-size=\"8\">outside</text>\
        <text x=\"10\" y=\"48\" font-size=\"0.5\">tiny</text></svg></div>\
        <div style=\"width:2000px\">too wide</div></body></html>";
    for v in measure("broken", broken) {
        assert!(v.error.is_none(), "{:?}", v.error);
        assert_eq!(v.labels, 4, "{v:?}");
        assert_eq!(v.overlaps, ["overlap one | overlap two"], "{v:?}");
        assert!(
            v.overflows
                .iter()
                .any(|o| o == "outside its chart: outside"),
            "{v:?}"
        );
        assert!(v.small.iter().any(|s| s.starts_with("tiny ")), "{v:?}");
        assert!(v.scroll_width > v.viewport, "{v:?}");
    }
}
