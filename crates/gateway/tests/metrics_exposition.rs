//! `GET /metrics` as scrapers and dashboards read it, from a real gateway after traffic that
//! moves every family: the Prometheus text format passes the real `promtool check metrics`; the
//! OpenMetrics answer passes a strict parser; every series exists before the first request; and
//! the shipped Grafana dashboard (docs/grafana/stilts-dashboard.json) queries only series the
//! gateway exports, with labels they carry.
//!
//! promtool comes from Debian's `prometheus` package; `.ci/run` installs it. Without it the
//! promtool test fails, naming the install command: it is never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// What Prometheus 3 sends when it scrapes.
const PROMETHEUS_3_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
const PROMTOOL_INSTALL: &str = "apt-get install -y --no-install-recommends prometheus";

/// A gateway over fake upstreams: `chat` fails over from a failing deployment to a priced one,
/// `down` has only a failing deployment (the request gives up), `stream` cuts its streams after
/// bytes reached the client.
struct World {
    h: Harness,
    config: String,
    _upstreams: Vec<MockUpstream>,
}

async fn world() -> World {
    let up = |name: &str, faults: Faults| {
        let mut config = MockConfig::named(name);
        config.faults = faults;
        MockUpstream::start_local(config)
    };
    let failing = Faults {
        status: Some(503),
        ..Faults::default()
    };
    let flaky = up("flaky", failing.clone()).await.unwrap();
    let steady = up("steady", Faults::default()).await.unwrap();
    let dead = up("dead", failing).await.unwrap();
    let cut = up(
        "cut",
        Faults {
            cut_after: Some(3),
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let deployment = |route: &str, name: &str, up: &MockUpstream, priority: u32| {
        format!(
            "[[routes.{route}.deployments]]\nname = \"{name}\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"{name}-model\"\npriority = {priority}\ninput_usd_per_mtok = 2.5\noutput_usd_per_mtok = 10.0\n",
            up.base_url()
        )
    };
    let mut config = SERVER.to_owned();
    config.push_str("[routes.chat.router]\npolicy = \"priority\"\n");
    config.push_str(&deployment("chat", "flaky", &flaky, 0));
    config.push_str(&deployment("chat", "steady", &steady, 1));
    config.push_str("[routes.down.router]\npolicy = \"priority\"\n");
    config.push_str(&deployment("down", "dead", &dead, 0));
    config.push_str("[routes.stream.router]\npolicy = \"priority\"\n");
    config.push_str(&deployment("stream", "cut", &cut, 0));
    World {
        h: Harness::start(&config).await,
        config,
        _upstreams: vec![flaky, steady, dead, cut],
    }
}

impl World {
    /// Requests that move every family: successes after failover (attempts, failures, tokens,
    /// cost, both histograms, breaker), a give-up, an unknown route, streams cut after bytes,
    /// and reloads applied and refused.
    async fn traffic(&self) {
        let h = &self.h;
        for _ in 0..6 {
            let (status, _, body) = h.chat(request("chat")).await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, _, body) = h.chat(request("down")).await;
        assert!(status >= 500, "{status} {body}");
        let (status, _, _) = h.chat(request("no-such-route")).await;
        assert_eq!(status, 404);
        for _ in 0..2 {
            let (status, _, body) = h.stream(stream_request("stream")).await;
            assert_eq!(status, 200);
            let (_, _, error) = sse_text(&body);
            assert!(
                error.is_some(),
                "the cut stream ends with an error event: {body}"
            );
        }
        assert!(stilts_gateway::server::reload_from_file(
            &h.gateway,
            &h.config_path
        ));
        std::fs::write(&h.config_path, "[routes.chat]\nnot_a_field = 1\n").unwrap();
        assert!(!stilts_gateway::server::reload_from_file(
            &h.gateway,
            &h.config_path
        ));
        std::fs::write(&h.config_path, with_plugin(&self.config)).unwrap();
        assert!(stilts_gateway::server::reload_from_file(
            &h.gateway,
            &h.config_path
        ));
        // A stream's end is accounted once its last byte is sent: wait for it, boundedly.
        let accounted = eventually(Duration::from_secs(5), || {
            let text = h.gateway.metrics_text().body(stilts_gateway::metrics::Format::Text);
            std::str::from_utf8(&text).unwrap().contains(
                "stilts_stream_interruptions_total{route=\"stream\",provider=\"cut\",action=\"error_event\"} 2",
            )
        })
        .await;
        assert!(accounted, "the cut streams were not counted");
    }

    /// `/metrics` with `accept` (none: no header), checking the answer's content type.
    async fn scrape(&self, accept: Option<&str>, content_type: &str) -> String {
        let mut request = self.h.http.get(self.h.url("/metrics"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let headers = response.headers();
        assert_eq!(
            headers.get("content-type").unwrap().to_str().unwrap(),
            content_type,
            "Accept: {accept:?}"
        );
        assert_eq!(headers.get("vary").unwrap().to_str().unwrap(), "accept");
        response.text().await.unwrap()
    }
}

/// Runs `promtool check metrics` on `text`: its verdict and everything it printed.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed; it comes with Debian's prometheus package: `{PROMTOOL_INSTALL}` (sudo if not root; .ci/run does it)"
        ),
        Err(e) => panic!("running promtool failed: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

#[test]
fn promtool_is_strict_enough_to_catch_the_bug_this_guards() {
    // The OpenMetrics form's HELP/TYPE lines name a counter without `_total`: promtool, which
    // reads the text format, calls that "no help text". If it ever stopped, the test below would
    // prove little.
    let (ok, printed) = promtool_check(
        "# HELP stilts_requests Requests\n# TYPE stilts_requests counter\nstilts_requests_total 1\n",
    );
    assert!(!ok, "promtool accepted a counter without help text");
    assert!(printed.contains("no help text"), "{printed}");
    let (ok, printed) = promtool_check(
        "# HELP stilts_requests_total Requests\n# TYPE stilts_requests_total counter\nstilts_requests_total 1\n",
    );
    assert!(ok, "{printed}");
}

#[tokio::test]
async fn promtool_accepts_the_text_format_after_traffic_in_every_family() {
    let w = world().await;
    w.traffic().await;
    // curl sends */*; some scrapers send no Accept at all; an old one asks for 0.0.4.
    let text = w.scrape(Some("*/*"), TEXT).await;
    // The same series (values move between scrapes: gauges of time and load, counters).
    let series = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name.to_owned()))
            .collect()
    };
    assert_eq!(series(&w.scrape(None, TEXT).await), series(&text));
    w.scrape(Some("text/plain;version=0.0.4"), TEXT).await;
    assert!(!text.contains("# EOF"), "{text}");
    assert!(!text.contains("_created"), "{text}");
    let (ok, printed) = promtool_check(&text);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool check metrics:\n{printed}\non:\n{text}"
    );
    // The traffic reached every family it can (the client limits have their own tests).
    for moved in [
        "stilts_requests_total{route=\"chat\",provider=\"steady\",outcome=\"ok\"} 6",
        "stilts_requests_total{route=\"unknown\",provider=\"none\",outcome=\"unknown_route\"} 1",
        "stilts_attempt_failures_total{route=\"chat\",provider=\"flaky\",class=\"server\"}",
        "stilts_request_duration_seconds_count{route=\"chat\"} 6",
        "stilts_gateway_overhead_seconds_count{route=\"chat\"} 6",
        "stilts_stream_interruptions_total{route=\"stream\",provider=\"cut\",action=\"error_event\"} 2",
        "stilts_config_reloads_total{result=\"ok\"} 2",
        "stilts_config_reloads_total{result=\"error\"} 1",
        "stilts_config_last_reload_ok 1",
    ] {
        assert!(text.contains(moved), "missing {moved} in\n{text}");
    }
    let nonzero = |prefix: &str| {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .any(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() > 0.0)
    };
    for family in [
        "stilts_attempts_total",
        "stilts_attempt_failures_total",
        "stilts_tokens_total",
        "stilts_cost_usd_total",
        "stilts_provider_latency_seconds",
        "stilts_retry_budget_available",
        "stilts_client_connections",
    ] {
        assert!(nonzero(family), "{family} never moved:\n{text}");
    }
}

#[tokio::test]
async fn the_openmetrics_answer_passes_a_strict_parser() {
    let w = world().await;
    w.traffic().await;
    for accept in [
        PROMETHEUS_3_ACCEPT,
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "application/openmetrics-text",
    ] {
        let om = w.scrape(Some(accept), OPENMETRICS).await;
        let families = openmetrics::parse(&om).unwrap_or_else(|e| panic!("{e}\n{om}"));
        let names: BTreeSet<&str> = families.iter().map(|f| f.name.as_str()).collect();
        for want in [
            "stilts_requests",
            "stilts_request_duration_seconds",
            "stilts_stream_interruptions",
            "stilts_config_reloads",
            "stilts_breaker_state",
        ] {
            assert!(names.contains(want), "no family {want}: {names:?}");
        }
        // The same series as the text form, under the names Prometheus stores.
        let text = w.scrape(None, TEXT).await;
        let from_om: BTreeSet<String> = families
            .iter()
            .flat_map(|f| f.samples.iter().map(|s| s.key()))
            .collect();
        let from_text: BTreeSet<String> =
            text::samples(&text).into_iter().map(|s| s.key()).collect();
        assert_eq!(from_om, from_text);
    }
}

#[tokio::test]
async fn every_series_exists_before_the_first_request() {
    let w = world().await;
    let series = |text: &str| -> BTreeSet<String> {
        text::samples(text).into_iter().map(|s| s.key()).collect()
    };
    let before = series(&w.scrape(None, TEXT).await);
    w.traffic().await;
    let after = series(&w.scrape(None, TEXT).await);
    let appeared: Vec<_> = after.difference(&before).collect();
    assert!(
        appeared.is_empty(),
        "series that appeared only after an event (create them at zero in metrics.rs): {appeared:#?}"
    );
    assert_eq!(before, after);
    // 11 process-wide, 3 routes (each 17 + 19 histogram series, the retry budget and 9 or 10
    // unserved outcomes), 4 deployments: within the documented bound.
    assert!(before.len() <= stilts_gateway::metrics::series_bound(3, 4));
    for family in [
        "stilts_config_reloads_total",
        "stilts_stream_interruptions_total",
        "stilts_client_timeouts_total",
        "stilts_client_connections_refused_total",
        "stilts_metrics_scrapes_refused_total",
    ] {
        assert!(
            before.iter().any(|s| s.starts_with(family)),
            "{family} missing before any event"
        );
    }
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_series() {
    let w = world().await;
    w.traffic().await;
    let text = w.scrape(None, TEXT).await;
    // Sample name -> the labels its series carry.
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in text::samples(&text) {
        exported
            .entry(s.name.clone())
            .or_default()
            .extend(s.labels.iter().map(|(k, _)| k.clone()));
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana/stilts-dashboard.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    grafana::check_structure(&dashboard);
    let queries = grafana::queries(&dashboard);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut used = BTreeSet::new();
    for q in &queries {
        let parsed = promql::scan(q).unwrap_or_else(|e| panic!("{e} in {q}"));
        assert!(!parsed.selectors.is_empty(), "no series in {q}");
        // `le` comes with the buckets; Prometheus adds `job` and `instance` to every series.
        let mut labels_here = BTreeSet::from(["le", "job", "instance"].map(str::to_owned));
        for (name, matchers) in &parsed.selectors {
            let Some(labels) = exported.get(name) else {
                panic!("{q} names {name}, which /metrics does not export");
            };
            for m in matchers {
                assert!(
                    labels.contains(m),
                    "{q}: {name} has no label {m} ({labels:?})"
                );
            }
            labels_here.extend(labels.iter().cloned());
            used.insert(name.clone());
        }
        for l in &parsed.grouping {
            assert!(
                labels_here.contains(l),
                "{q} groups by {l}, which none of its series carries"
            );
        }
        if q.contains("histogram_quantile") {
            assert!(
                parsed.selectors.iter().all(|(n, _)| n.ends_with("_bucket")),
                "histogram_quantile over a non-bucket series: {q}"
            );
        }
    }
    // Every family the gateway exports is on the dashboard (a histogram through its buckets).
    let families: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    for family in families {
        assert!(
            used.iter()
                .any(|u| u == &family || u.strip_suffix("_bucket") == Some(&family)),
            "{family} is on no panel of {path}: add one"
        );
    }
}

/// Reading the Prometheus text format (the one Prometheus stores names from).
mod text {
    /// One sample line.
    pub struct Sample {
        pub name: String,
        pub labels: Vec<(String, String)>,
        pub value: f64,
    }

    impl Sample {
        /// Name and labels, sorted: the series' identity (a histogram's `le` as a number).
        pub fn key(&self) -> String {
            let mut labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| match k.as_str() {
                    "le" => format!("le={}", super::openmetrics::number(v).unwrap()),
                    _ => format!("{k}={v:?}"),
                })
                .collect();
            labels.sort();
            format!("{}{{{}}}", self.name, labels.join(","))
        }
    }

    pub fn samples(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| super::openmetrics::sample_line(l).unwrap())
            .collect()
    }
}

/// A strict OpenMetrics 1.0 text parser, for what the gateway writes: every line is metadata
/// (`HELP`, `TYPE`, `UNIT`), a sample, or the final `# EOF`; a family's metadata precede its
/// samples, each at most once, and its lines are contiguous; every sample belongs to the family
/// declared above it, with a suffix its type allows; label names and escapes are valid, label
/// sets unique; values are numbers; counters are not negative; histogram buckets are cumulative
/// and end with `+Inf`, which equals `_count`.
mod openmetrics {
    use std::collections::BTreeSet;

    pub struct Family {
        pub name: String,
        pub kind: String,
        pub samples: Vec<super::text::Sample>,
    }

    pub fn parse(text: &str) -> Result<Vec<Family>, String> {
        let body = text
            .strip_suffix("# EOF\n")
            .or_else(|| text.strip_suffix("# EOF"))
            .ok_or("does not end with # EOF")?;
        let mut families: Vec<Family> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut metadata = BTreeSet::new();
        let lines = body.split('\n').count();
        for (n, line) in body.split('\n').enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            if line.is_empty() {
                if n + 1 == lines {
                    continue; // the newline before `# EOF`
                }
                return Err(at("empty line".into()));
            }
            if let Some(meta) = line.strip_prefix("# ") {
                let mut parts = meta.splitn(3, ' ');
                let (what, name, rest) = (
                    parts.next().unwrap_or(""),
                    parts.next().ok_or_else(|| at("no name".into()))?,
                    parts.next(),
                );
                valid_name(name).map_err(at)?;
                if families.last().is_none_or(|f| f.name != name) {
                    if !seen.insert(name.to_owned()) {
                        return Err(at(format!("family {name} is not contiguous")));
                    }
                    families.push(Family {
                        name: name.to_owned(),
                        kind: "unknown".to_owned(),
                        samples: Vec::new(),
                    });
                    metadata.clear();
                }
                let family = families.last_mut().unwrap();
                if !family.samples.is_empty() {
                    return Err(at("metadata after samples".into()));
                }
                if !metadata.insert(what.to_owned()) {
                    return Err(at(format!("second {what}")));
                }
                match (what, rest) {
                    ("HELP", Some(help)) => check_escapes(help).map_err(at)?,
                    ("HELP", None) => {}
                    ("TYPE", Some(kind)) => {
                        const KINDS: [&str; 8] = [
                            "counter",
                            "gauge",
                            "histogram",
                            "gaugehistogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown",
                        ];
                        if !KINDS.contains(&kind) {
                            return Err(at(format!("unknown type {kind}")));
                        }
                        if kind == "counter" && name.ends_with("_total") {
                            return Err(at("a counter family named with _total".into()));
                        }
                        family.kind = kind.to_owned();
                    }
                    ("UNIT", Some(unit)) => {
                        if !name.ends_with(&format!("_{unit}")) {
                            return Err(at(format!("{name} does not end with its unit")));
                        }
                    }
                    _ => return Err(at("not HELP, TYPE or UNIT with a value".into())),
                }
                continue;
            }
            let sample = sample_line(line).map_err(at)?;
            let (name, labels, value) = (&sample.name, &sample.labels, sample.value);
            let family = families
                .last_mut()
                .ok_or_else(|| at("a sample before any family".into()))?;
            if !metadata.contains("TYPE") {
                return Err(at(format!("{} has no TYPE", family.name)));
            }
            let suffix = name
                .strip_prefix(family.name.as_str())
                .ok_or_else(|| at(format!("not in family {}", family.name)))?;
            let allowed: &[&str] = match family.kind.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_count", "_sum", "_created"],
                "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
                "summary" => &["", "_count", "_sum", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            if !allowed.contains(&suffix) {
                return Err(at(format!("{name} under {} {}", family.kind, family.name)));
            }
            if suffix == "_bucket" && !labels.iter().any(|(k, _)| k == "le") {
                return Err(at("a bucket without le".into()));
            }
            if family.kind == "counter" && (value.is_nan() || value < 0.0) {
                return Err(at("a counter below zero or NaN".into()));
            }
            family.samples.push(sample);
        }
        for f in &families {
            check_family(f)?;
        }
        Ok(families)
    }

    fn check_family(f: &Family) -> Result<(), String> {
        let mut keys = BTreeSet::new();
        for s in &f.samples {
            let key = format!("{}{:?}", s.name, s.labels);
            if !keys.insert(key.clone()) {
                return Err(format!("{key} appears twice"));
            }
        }
        if f.kind != "histogram" {
            return Ok(());
        }
        // Per series (labels without le): buckets in order, cumulative, ending at +Inf = _count.
        let series_of = |s: &super::text::Sample| -> String {
            format!(
                "{:?}",
                s.labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .collect::<Vec<_>>()
            )
        };
        /// One histogram series: its buckets (bound, count) in order, `_count`, whether `_sum` is there.
        #[derive(Default)]
        struct Series {
            buckets: Vec<(f64, f64)>,
            count: Option<f64>,
            sum: bool,
        }
        let mut series: std::collections::BTreeMap<String, Series> = Default::default();
        for s in &f.samples {
            let entry = series.entry(series_of(s)).or_default();
            match &s.name[f.name.len()..] {
                "_bucket" => {
                    let le = &s.labels.iter().find(|(k, _)| k == "le").unwrap().1;
                    entry.buckets.push((number(le)?, s.value));
                }
                "_count" => entry.count = Some(s.value),
                "_sum" => entry.sum = true,
                _ => {}
            }
        }
        for (
            labels,
            Series {
                buckets,
                count,
                sum,
            },
        ) in series
        {
            let last = buckets
                .last()
                .ok_or(format!("{} {labels}: no buckets", f.name))?;
            if last.0 != f64::INFINITY {
                return Err(format!("{} {labels}: no +Inf bucket", f.name));
            }
            if Some(last.1) != count || !sum {
                return Err(format!(
                    "{} {labels}: +Inf bucket != _count, or no _sum",
                    f.name
                ));
            }
            for pair in buckets.windows(2) {
                if !(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1) {
                    return Err(format!("{} {labels}: buckets not cumulative", f.name));
                }
            }
        }
        Ok(())
    }

    /// `name{labels} value [timestamp]`, exemplars refused (the gateway writes none).
    pub fn sample_line(line: &str) -> Result<super::text::Sample, String> {
        let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
        let name = &line[..name_end];
        valid_name(name)?;
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let mut names = BTreeSet::new();
            loop {
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        let (i, _) = chars.next().unwrap();
                        rest = &after[i + 1..];
                        break;
                    }
                    Some((i, _)) => *i,
                    None => return Err("unterminated labels".into()),
                };
                let eq = after[start..].find('=').ok_or("a label without =")? + start;
                let label = &after[start..eq];
                valid_name(label)?;
                if label.starts_with("__") {
                    return Err(format!("reserved label {label}"));
                }
                if !names.insert(label.to_owned()) {
                    return Err(format!("label {label} twice"));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err("a label value not quoted".into());
                }
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('"') => break,
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => return Err(format!("bad escape \\{other:?}")),
                        },
                        Some('\n') | None => return Err("unterminated label value".into()),
                        Some(c) => value.push(c),
                    }
                }
                labels.push((label.to_owned(), value));
                match chars.peek().map(|(_, c)| *c) {
                    Some(',') => {
                        chars.next();
                    }
                    Some('}') => {}
                    _ => return Err("labels not separated by ,".into()),
                }
            }
        }
        let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
        if rest.contains('#') {
            return Err("an exemplar".into());
        }
        let mut fields = rest.split(' ');
        let value = number(fields.next().unwrap_or(""))?;
        if let Some(ts) = fields.next() {
            number(ts)?;
        }
        if fields.next().is_some() {
            return Err("trailing fields".into());
        }
        Ok(super::text::Sample {
            name: name.to_owned(),
            labels,
            value,
        })
    }

    pub fn number(s: &str) -> Result<f64, String> {
        match s {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ if s.is_empty()
                || !s.bytes().all(|b| {
                    b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')
                }) =>
            {
                Err(format!("not a number: {s:?}"))
            }
            _ => s.parse().map_err(|_| format!("not a number: {s:?}")),
        }
    }

    fn valid_name(name: &str) -> Result<(), String> {
        let mut bytes = name.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':');
        if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            Ok(())
        } else {
            Err(format!("invalid name {name:?}"))
        }
    }

    fn check_escapes(help: &str) -> Result<(), String> {
        let mut chars = help.chars();
        while let Some(c) = chars.next() {
            if c == '\\' && !matches!(chars.next(), Some('\\' | '"' | 'n')) {
                return Err("bad escape in HELP".into());
            }
        }
        Ok(())
    }

    #[test]
    fn the_parser_refuses_what_openmetrics_forbids() {
        let ok = "# HELP a_seconds A.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\na_seconds_bucket{le=\"1.0\"} 1\na_seconds_bucket{le=\"+Inf\"} 2\na_seconds_sum 3.0\na_seconds_count 2\n# TYPE b counter\nb_total{x=\"q\\\"\\\\\\n\"} 1\n# EOF\n";
        parse(ok).unwrap();
        for (bad, why) in [
            (ok.replace("# EOF\n", ""), "no EOF"),
            (
                ok.replace("# TYPE b counter\n", ""),
                "b_total under the histogram",
            ),
            (
                ok.replace("# TYPE b counter", "# TYPE b_total counter"),
                "counter named _total",
            ),
            (
                ok.replace("a_seconds_count 2", "a_seconds_count 3"),
                "+Inf != count",
            ),
            (
                ok.replace("} 1\na_seconds_bucket", "} 3\na_seconds_bucket"),
                "not cumulative",
            ),
            (
                ok.replace("a_seconds_bucket{le=\"+Inf\"} 2\n", ""),
                "no +Inf",
            ),
            (
                ok.replace("b_total{x=", "b_total{x=\"1\",x="),
                "label twice",
            ),
            (ok.replace("\\\"\\\\", "\\t"), "bad escape"),
            (ok.replace("b_total{x=\"q", "b_total{x=q"), "unquoted"),
            (ok.replace("} 1\n# EOF", "} -1\n# EOF"), "negative counter"),
            (
                ok.replace("} 1\n# EOF", "} 1 # {a=\"b\"} 1\n# EOF"),
                "exemplar",
            ),
            (
                ok.replace("# TYPE b counter\n", "# TYPE b counter\n\n"),
                "empty line",
            ),
            (
                format!(
                    "{}# TYPE a_seconds histogram\n# EOF\n",
                    ok.replace("# EOF\n", "")
                ),
                "not contiguous",
            ),
            (
                ok.replace(
                    "# TYPE b counter\nb_total",
                    "# TYPE b counter\nb_total 1\n# HELP b B\nb_total",
                ),
                "metadata after samples",
            ),
            (ok.replace("b counter", "b countr"), "unknown type"),
            (ok.replace("} 1\n# EOF", "} one\n# EOF"), "not a number"),
        ] {
            assert!(parse(&bad).is_err(), "accepted ({why}):\n{bad}");
        }
    }
}

/// Reading a Grafana dashboard's queries.
mod grafana {
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// Every PromQL expression: panel targets, and template variables' queries
    /// (`label_values(metric, label)` is read as `metric{label}`).
    pub fn queries(dashboard: &Value) -> Vec<String> {
        let mut out = Vec::new();
        walk(dashboard, &mut out);
        for var in dashboard["templating"]["list"].as_array().unwrap() {
            if var["type"] != "query" {
                continue;
            }
            let q = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .or(var["definition"].as_str())
                .unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable query {q}: not label_values(metric, label)"));
            let (metric, label) = inner.rsplit_once(',').unwrap();
            out.push(format!("{}{{{}=~\".*\"}}", metric.trim(), label.trim()));
        }
        out
    }

    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(targets) = map.get("targets").and_then(Value::as_array) {
                    for t in targets {
                        let expr = t["expr"]
                            .as_str()
                            .unwrap_or_else(|| panic!("a target without expr: {t}"));
                        out.push(expr.to_owned());
                    }
                }
                for (k, child) in map {
                    if k != "targets" {
                        walk(child, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }

    /// What an import needs: a title and uid, unique panel ids, each panel placed on the grid,
    /// and every query on the dashboard's Prometheus data source variable.
    pub fn check_structure(d: &Value) {
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(
            d["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && u.len() <= 40)
        );
        assert!(d["schemaVersion"].as_u64().is_some());
        assert!(
            d.get("id").is_none_or(Value::is_null),
            "an id ties the JSON to one Grafana"
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter().any(|v| v["type"] == "datasource"
                && v["query"] == "prometheus"
                && v["name"] == "datasource"),
            "no Prometheus data source variable"
        );
        let mut ids = BTreeSet::new();
        let mut panels = 0;
        for p in d["panels"].as_array().unwrap() {
            assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id twice: {p}");
            for k in ["x", "y", "w", "h"] {
                assert!(
                    p["gridPos"][k].is_u64(),
                    "panel without gridPos.{k}: {}",
                    p["title"]
                );
            }
            assert!(
                p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24
            );
            if p["type"] == "row" {
                continue;
            }
            panels += 1;
            assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{} has no query", p["title"]);
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(
                    refs.insert(t["refId"].as_str().unwrap()),
                    "refId twice in {}",
                    p["title"]
                );
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            }
        }
        assert!(panels >= 12, "{panels} panels");
    }
}

/// Just enough PromQL lexing to find the series an expression selects: metric names (an
/// identifier that is not a function, an aggregation, a keyword or a number) with the label
/// names of their matchers, and the labels of `by (...)`, `without (...)`, `on (...)` and
/// `ignoring (...)` clauses.
mod promql {
    pub struct Scan {
        pub selectors: Vec<(String, Vec<String>)>,
        pub grouping: Vec<String>,
    }

    const AGGREGATIONS: [&str; 14] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const KEYWORDS: [&str; 12] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
    ];

    pub fn scan(q: &str) -> Result<Scan, String> {
        let b = q.as_bytes();
        let mut i = 0;
        let mut out = Scan {
            selectors: Vec::new(),
            grouping: Vec::new(),
        };
        let skip_ws = |mut i: usize| {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            i
        };
        while i < b.len() {
            let c = b[i];
            match c {
                b'"' | b'\'' | b'`' => i = skip_string(b, i)?,
                b'[' => i = q[i..].find(']').ok_or("unclosed [")? + i + 1,
                b'{' => {
                    // Matchers without a metric name: {__name__=...} is not used here.
                    return Err(format!("a selector without a metric name at {i}"));
                }
                b'$' => {
                    i += 1;
                    while i < b.len()
                        && (b[i].is_ascii_alphanumeric()
                            || b[i] == b'_'
                            || b[i] == b'{'
                            || b[i] == b'}')
                    {
                        i += 1;
                    }
                }
                c if c.is_ascii_digit() || c == b'.' => {
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                        i += 1;
                    }
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                    let start = i;
                    while i < b.len()
                        && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                    {
                        i += 1;
                    }
                    let word = &q[start..i];
                    let next = skip_ws(i);
                    if [
                        "by",
                        "without",
                        "on",
                        "ignoring",
                        "group_left",
                        "group_right",
                    ]
                    .contains(&word)
                    {
                        if b.get(next) == Some(&b'(') {
                            let close = q[next..].find(')').ok_or("unclosed (")? + next;
                            out.grouping.extend(
                                q[next + 1..close]
                                    .split(',')
                                    .map(str::trim)
                                    .filter(|l| !l.is_empty())
                                    .map(str::to_owned),
                            );
                            i = close + 1;
                        }
                    } else if AGGREGATIONS.contains(&word)
                        || KEYWORDS.contains(&word)
                        || ["Inf", "NaN", "inf", "nan"].contains(&word)
                        || b.get(next) == Some(&b'(')
                    {
                        // a function, an aggregation, a keyword or a number
                    } else {
                        let mut matchers = Vec::new();
                        if b.get(next) == Some(&b'{') {
                            i = next + 1;
                            loop {
                                i = skip_ws(i);
                                match b.get(i) {
                                    Some(b'}') => {
                                        i += 1;
                                        break;
                                    }
                                    Some(b',') => i += 1,
                                    Some(_) => {
                                        let l = i;
                                        while i < b.len()
                                            && (b[i].is_ascii_alphanumeric() || b[i] == b'_')
                                        {
                                            i += 1;
                                        }
                                        if l == i {
                                            return Err(format!("a bad matcher at {i}"));
                                        }
                                        matchers.push(q[l..i].to_owned());
                                        i = skip_ws(i);
                                        while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
                                            i += 1;
                                        }
                                        i = skip_string(b, skip_ws(i))?;
                                    }
                                    None => return Err("unclosed {".into()),
                                }
                            }
                        }
                        out.selectors.push((word.to_owned(), matchers));
                    }
                }
                _ => i += 1,
            }
        }
        Ok(out)
    }

    fn skip_string(b: &[u8], i: usize) -> Result<usize, String> {
        let quote = *b.get(i).ok_or("expected a string")?;
        if !matches!(quote, b'"' | b'\'' | b'`') {
            return Err(format!("expected a string at {i}"));
        }
        let mut j = i + 1;
        while j < b.len() {
            match b[j] {
                b'\\' if quote != b'`' => j += 2,
                c if c == quote => return Ok(j + 1),
                _ => j += 1,
            }
        }
        Err("unterminated string".into())
    }

    #[test]
    fn scans_selectors_and_grouping() {
        let s = scan(r#"histogram_quantile(0.99, sum by (le, route) (rate(stilts_request_duration_seconds_bucket{route=~"$route", x!="a,b}"}[$__rate_interval]))) / on(route) group_left sum without (provider) (stilts_requests_total) * 3600 > bool 1e3"#).unwrap();
        assert_eq!(
            s.selectors,
            vec![
                (
                    "stilts_request_duration_seconds_bucket".to_owned(),
                    vec!["route".to_owned(), "x".to_owned()]
                ),
                ("stilts_requests_total".to_owned(), vec![]),
            ]
        );
        assert_eq!(s.grouping, ["le", "route", "route", "provider"]);
        assert!(scan(r#"{__name__="x"}"#).is_err());
        assert!(scan(r#"x{a="b}"#).is_err());
    }
}
