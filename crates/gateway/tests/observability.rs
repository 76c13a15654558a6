//! What an operator reads: one access log line per request (never a prompt or a key), breaker
//! transitions and cool-downs logged once each, and failures attributed to whoever caused them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};

async fn mock(name: &str) -> MockUpstream {
    MockUpstream::start_local(MockConfig::named(name))
        .await
        .unwrap()
}

/// The captured log lines that contain every one of `needles`.
fn lines_with(needles: &[&str]) -> Vec<String> {
    logs()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_request_gets_one_access_line_without_its_prompt_or_key() {
    set_env("STILTS_TEST_KEY_ACCESS", "sk-access-log-secret-0123");
    let a = mock("a").await;
    let h = Harness::start(&format!(
        "{SERVER}[[routes.access-ok.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"a-model\"\napi_key_env = \"STILTS_TEST_KEY_ACCESS\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n",
        a.base_url()
    ))
    .await;
    let prompt = "PROMPT-NEVER-LOGGED-42";
    let body = json!({"model": "access-ok", "messages": [{"role": "user", "content": prompt}]});
    let (status, _, answer) = h.chat(body).await;
    assert_eq!(status, 200, "{answer}");
    let mut stream = stream_request("access-ok");
    stream["messages"][0]["content"] = json!(prompt);
    let (status, _, _) = h.stream(stream).await;
    assert_eq!(status, 200);
    let (status, _, _) = h.chat(request("no-such-route")).await;
    assert_eq!(status, 404);
    let access = lines_with(&["stilts::access", "route=access-ok"]);
    assert_eq!(access.len(), 2, "one line per request: {access:#?}");
    let unrouted = lines_with(&["stilts::access", "route=no-such-route", "status=404"]);
    assert_eq!(unrouted.len(), 1, "a refused request has its line too");
    for line in &access {
        for field in [
            "provider=a",
            "attempts=1",
            "status=200",
            "duration_ms=",
            "input_tokens=",
            "output_tokens=",
            "cost_usd=",
        ] {
            assert!(line.contains(field), "{field} missing: {line}");
        }
        assert!(!line.contains("input_tokens=0 "), "tokens counted: {line}");
    }
    assert!(access.iter().any(|l| l.contains("stream=true")));
    let all = logs();
    assert!(!all.contains(prompt), "a prompt reached the log");
    assert!(
        !all.contains("sk-access-log-secret"),
        "a key reached the log"
    );
}

#[tokio::test]
async fn breaker_transitions_and_cool_downs_are_logged_once_each() {
    let a = mock("a").await;
    let b = mock("b").await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.transitions.router]\npolicy = \"priority\"\n\
         [routes.transitions.router.breaker]\nconsecutive_failures = 2\nopen_base_ms = 300\nopen_jitter = 0.0\n\
         [[routes.transitions.deployments]]\nname = \"flaky\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\npriority = 0\n\
         [[routes.transitions.deployments]]\nname = \"steady\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\npriority = 1\n",
        a.base_url(),
        b.base_url()
    ))
    .await;
    a.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    for _ in 0..6 {
        let (status, _, body) = h.chat(request("transitions")).await;
        assert_eq!(status, 200, "{body}");
    }
    let opened = lines_with(&["route=transitions", "provider=flaky", "breaker opened"]);
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert!(opened[0].contains("WARN"), "{}", opened[0]);
    // Healthy again: the next probe after the open time closes it, logged once.
    a.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..4 {
        let (status, _, _) = h.chat(request("transitions")).await;
        assert_eq!(status, 200);
    }
    let closed = lines_with(&["route=transitions", "provider=flaky", "breaker closed"]);
    assert_eq!(closed.len(), 1, "{closed:#?}");
    // A 429 with Retry-After starts one cool-down line, not one per 429.
    a.set_faults(Faults {
        status: Some(429),
        retry_after_s: Some(5.0),
        ..Faults::default()
    });
    for _ in 0..3 {
        let (status, _, _) = h.chat(request("transitions")).await;
        assert_eq!(status, 200);
    }
    let cooling = lines_with(&["route=transitions", "provider=flaky", "cooling down"]);
    assert_eq!(cooling.len(), 1, "{cooling:#?}");
    assert!(cooling[0].contains("kind=ratelimited"), "{}", cooling[0]);
}

#[tokio::test]
async fn a_stream_cut_mid_answer_is_counted_against_the_provider_that_cut_it() {
    let mut cfg = MockConfig::named("cutter");
    cfg.faults = Faults {
        cut_after: Some(2),
        ..Faults::default()
    };
    let up = MockUpstream::start_local(cfg).await.unwrap();
    let h = Harness::start(&format!(
        "{SERVER}[[routes.cut.deployments]]\nname = \"cutter\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
        up.base_url()
    ))
    .await;
    let (status, _, body) = h.stream(stream_request("cut")).await;
    assert_eq!(status, 200);
    let (_, done, error) = sse_text(&body);
    assert_eq!(done, 0);
    assert!(error.is_some(), "{body}");
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains(
            "stilts_requests_total{route=\"cut\",provider=\"cutter\",outcome=\"stream_interrupted\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("provider=\"none\",outcome=\"stream_interrupted\""),
        "{metrics}"
    );
}
