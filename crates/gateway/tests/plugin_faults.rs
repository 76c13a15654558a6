//! A plugin that breaks at run time is contained: a real `.so` (tests/fixtures/faulty-plugin) that
//! panics, returns a body or chunk that is not UTF-8, returns 65 MiB, or takes 400 ms a call. Each
//! request fails over to the next deployment (plain and streamed, the fault caught before a byte
//! reached the client), the process lives, and `stilts_plugin_faults_total` names the plugin and
//! the kind.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;
#[path = "../../plugin/tests/common/mod.rs"]
mod plugin_build;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use stilts_gateway::mock::{MockConfig, MockUpstream};

/// Builds the fixture once per test binary, out of the tree (it is its own workspace).
fn faulty_plugin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faulty-plugin");
        plugin_build::build_fixture_plugin(&src, "faulty-plugin", &[])
    })
    .clone()
}

/// A gateway whose `chat` route prefers a deployment of the faulty plugin with `model`, and falls
/// back to a healthy openai deployment.
async fn gateway(model: &str) -> (Harness, MockUpstream, MockUpstream) {
    let broken = MockUpstream::start_local(MockConfig::named("broken"))
        .await
        .unwrap();
    let backup = MockUpstream::start_local(MockConfig::named("backup"))
        .await
        .unwrap();
    let toml = format!(
        "{SERVER}\n[routes.chat.router]\npolicy = \"priority\"\n\n\
         [[routes.chat.deployments]]\nname = \"faulty\"\nplugin = \"{}\"\nbase_url = \"{}\"\nmodel = \"{model}\"\n\n\
         [[routes.chat.deployments]]\nname = \"backup\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\npriority = 1\n",
        faulty_plugin().display(),
        broken.base_url(),
        backup.base_url()
    );
    (Harness::start(&toml).await, broken, backup)
}

fn fault_count(metrics: &str, kind: &str) -> f64 {
    let series = format!("stilts_plugin_faults_total{{plugin=\"faulty\",kind=\"{kind}\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// Sends a plain and a streamed request: both must be answered by the backup.
async fn both_fail_over(h: &Harness, what: &str) {
    let (status, headers, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{what}, plain: {body}");
    assert_eq!(header(&headers, "x-provider"), "backup", "{what}, plain");
    let (status, headers, text) = h.stream(stream_request("chat")).await;
    assert_eq!(status, 200, "{what}, streamed: {text}");
    assert_eq!(header(&headers, "x-provider"), "backup", "{what}, streamed");
    let (content, _, error) = sse_text(&text);
    assert!(error.is_none(), "{what}, streamed: {text}");
    assert!(content.contains("backup"), "{what}, streamed: {content}");
}

#[tokio::test]
async fn a_plugin_that_panics_fails_over_and_is_counted() {
    let (h, _broken, _backup) = gateway("fault-panic").await;
    both_fail_over(&h, "panic").await;
    let metrics = h.get("/metrics").await;
    assert!(fault_count(&metrics, "panic") >= 2.0, "{metrics}");
    assert_eq!(fault_count(&metrics, "slow"), 0.0, "{metrics}");
}

#[tokio::test]
async fn a_plugin_returning_bytes_that_are_not_utf8_fails_over_and_is_counted() {
    let (h, broken, _backup) = gateway("fault-utf8").await;
    both_fail_over(&h, "invalid UTF-8").await;
    // The upstream answered; the plugin's translation of it was refused.
    assert!(broken.stats().requests >= 2);
    let metrics = h.get("/metrics").await;
    assert!(fault_count(&metrics, "contract") >= 2.0, "{metrics}");
}

#[tokio::test]
async fn a_plugin_returning_65_mib_fails_over_and_is_counted() {
    let (h, _broken, _backup) = gateway("fault-oversized").await;
    both_fail_over(&h, "oversized").await;
    let metrics = h.get("/metrics").await;
    assert!(fault_count(&metrics, "contract") >= 2.0, "{metrics}");
}

#[tokio::test]
async fn a_plugin_slower_than_the_call_limit_fails_over_and_is_counted() {
    let (h, broken, _backup) = gateway("fault-slow").await;
    both_fail_over(&h, "slow").await;
    // The slow call was the request's translation: nothing reached the broken upstream.
    assert_eq!(broken.stats().requests, 0);
    let metrics = h.get("/metrics").await;
    assert!(fault_count(&metrics, "slow") >= 2.0, "{metrics}");
    // The breaker learns: after enough slow calls, the plugin's deployment gets no more traffic.
    for _ in 0..8 {
        let (status, _, body) = h.chat(request("chat")).await;
        assert_eq!(status, 200, "{body}");
    }
    let status = h.gateway.status_json();
    let faulty = status["routes"]["chat"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "faulty")
        .unwrap()
        .clone();
    assert_ne!(faulty["breaker"]["state"], "closed", "{status}");
}
