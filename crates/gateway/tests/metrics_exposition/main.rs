//! `GET /metrics` as scrapers and dashboards read it, from a real gateway after traffic that
//! moves every family: the Prometheus text format passes the real `promtool check metrics`; the
//! OpenMetrics answer passes a strict parser; every series exists before the first request; and
//! the shipped Grafana dashboard (docs/grafana/stilts-dashboard.json) queries only series the
//! gateway exports, with labels they carry.
//!
//! promtool comes from Debian's `prometheus` package; `.ci/run` installs it. Without it the
//! promtool test fails, naming the install command: it is never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "../common/mod.rs"]
mod common;
mod grafana;
mod openmetrics;
mod promql;
mod text;

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
