//! Streams (failover before the first byte, honest errors after it, client disconnects), hot
//! reload (good and bad, state kept), client keys, limits, metrics, and that no key reaches a log
//! line, an error or a metric.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};

async fn mock(name: &str) -> MockUpstream {
    MockUpstream::start_local(MockConfig::named(name))
        .await
        .unwrap()
}

fn two(a: &MockUpstream, b: &MockUpstream, extra: &str) -> String {
    format!(
        "{SERVER}[routes.s.router]\npolicy = \"priority\"\n{extra}\n\
         [[routes.s.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"a-model\"\n\
         [[routes.s.deployments]]\nname = \"b\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"b-model\"\npriority = 1\n",
        a.base_url(),
        b.base_url()
    )
}

const FAST: &str = "[routes.s.router.timeouts]\nfirst_token_ms = 300\nstall_ms = 300\n";

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn a_stream_arrives_whole_with_one_done() {
    let (a, b) = (mock("a").await, mock("b").await);
    let h = Harness::start(&two(&a, &b, "")).await;
    let (status, headers, body) = h.stream(stream_request("s")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "text/event-stream");
    assert_eq!(header(&headers, "x-provider"), "a");
    let (text, done, error) = sse_text(&body);
    assert_eq!(
        text,
        "Hello from a! This answer came from a stilts mock upstream."
    );
    assert_eq!((done, error), (1, None));
    assert!(body.contains("\"model\":\"a-model\""));
    // The upstream is asked for usage (for accounting) …
    assert_eq!(
        a.last_request().unwrap()["stream_options"]["include_usage"],
        true
    );
    // … but a client that did not ask gets no usage-only chunk, as from OpenAI: code that reads
    // `chunk.choices[0]` on every chunk must not break.
    let chunks = sse_chunks(&body);
    assert!(!chunks.is_empty());
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "{body}"
    );
    // The tokens were still counted.
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains("stilts_tokens_total{route=\"s\",provider=\"a\",kind=\"output\"} 11"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_that_asks_for_usage_gets_the_usage_chunk_last() {
    let (a, b) = (mock("a").await, mock("b").await);
    let h = Harness::start(&two(&a, &b, "")).await;
    let mut request = stream_request("s");
    request["stream_options"] = serde_json::json!({"include_usage": true});
    let (status, _, body) = h.stream(request).await;
    assert_eq!(status, 200);
    let chunks = sse_chunks(&body);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], serde_json::json!([]), "{body}");
    assert_eq!(last["usage"]["completion_tokens"], 11, "{body}");
    let usage_only = chunks
        .iter()
        .filter(|c| c["choices"].as_array().is_some_and(|a| a.is_empty()))
        .count();
    assert_eq!(usage_only, 1, "{body}");
}

/// The JSON chunks of an SSE body (not `[DONE]`).
fn sse_chunks(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn a_slow_first_token_fails_over_before_any_byte_is_sent() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        first_token_ms: 3_000,
        ..Faults::default()
    });
    let h = Harness::start(&two(&a, &b, FAST)).await;
    let (status, headers, body) = h.stream(stream_request("s")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-provider"), "b");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    let (text, done, error) = sse_text(&body);
    assert!(text.starts_with("Hello from b!"), "only b's answer: {text}");
    assert_eq!((done, error), (1, None));
}

#[tokio::test]
async fn a_stream_cut_before_the_first_token_fails_over() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        cut_after: Some(0),
        ..Faults::default()
    });
    let h = Harness::start(&two(&a, &b, FAST)).await;
    let (_, headers, body) = h.stream(stream_request("s")).await;
    assert_eq!(header(&headers, "x-provider"), "b");
    assert_eq!(sse_text(&body).1, 1);
}

async fn broken_after_bytes(faults: Faults) -> (String, String) {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(faults);
    let h = Harness::start(&two(&a, &b, FAST)).await;
    let (status, headers, body) = h.stream(stream_request("s")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-provider"), "a");
    let (text, done, error) = sse_text(&body);
    assert_eq!(done, 0, "a broken stream must not end with [DONE]: {body}");
    let error = error.expect("an error event ends a broken stream");
    assert_eq!(error["error"]["code"], "stream_interrupted");
    assert_eq!(
        b.stats().requests,
        0,
        "openai cannot continue exactly: no resend"
    );
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"stilts_stream_interruptions_total{route="s",provider="a",action="error_event"} 1"#
        ),
        "{metrics}"
    );
    (text, error["error"]["message"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_stream_cut_after_bytes_ends_with_an_error_event() {
    let (text, message) = broken_after_bytes(Faults {
        cut_after: Some(3),
        ..Faults::default()
    })
    .await;
    assert_eq!(text, "Hello from a! ");
    assert!(message.contains("incomplete"), "{message}");
}

#[tokio::test]
async fn a_stall_after_bytes_ends_with_an_error_event() {
    let (text, message) = broken_after_bytes(Faults {
        stall_after: Some(2),
        ..Faults::default()
    })
    .await;
    assert_eq!(text, "Hello from ");
    assert!(message.contains("stalled"), "{message}");
}

#[tokio::test]
async fn a_malformed_chunk_is_a_cut_never_silently_dropped() {
    let (text, message) = broken_after_bytes(Faults {
        malformed_after: Some(2),
        ..Faults::default()
    })
    .await;
    assert_eq!(text, "Hello from ");
    assert!(message.contains("not valid JSON"), "{message}");
    assert!(logs().contains("stream broke after bytes reached the client"));
}

#[tokio::test]
async fn a_finish_reason_without_done_is_a_clean_end() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        no_done: true,
        ..Faults::default()
    });
    let h = Harness::start(&two(&a, &b, FAST)).await;
    let (_, _, body) = h.stream(stream_request("s")).await;
    let (text, done, error) = sse_text(&body);
    assert!(text.ends_with("mock upstream."));
    assert_eq!((done, error), (1, None));
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_attempt() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        chunk_interval_ms: 300,
        ..Faults::default()
    });
    let h = Harness::start(&two(&a, &b, "")).await;
    let response = h
        .http
        .post(h.url("/v1/chat/completions"))
        .json(&stream_request("s"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(body);
    assert!(
        eventually(Duration::from_secs(5), || a.stats().abandoned == 1).await,
        "upstream still streaming after the client left"
    );
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    assert_eq!(
        status["routes"]["s"]["providers"][0]["in_flight"], 0,
        "attempt recorded as cancelled"
    );
}

#[tokio::test]
async fn reload_applies_good_configs_keeps_breakers_and_refuses_bad_ones() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    let breaker = "max_attempts = 1\n[routes.s.router.breaker]\nconsecutive_failures = 1\nopen_base_ms = 60000\nopen_max_ms = 60000\n";
    let h = Harness::start(&two(&a, &b, breaker)).await;
    let watcher = tokio::spawn(stilts_gateway::server::watch_config(
        h.gateway.clone(),
        h.config_path.clone(),
        Duration::from_millis(50),
    ));
    assert_eq!(
        h.chat(request("s")).await.0,
        502,
        "a fails and trips its breaker"
    );

    // A good change: a new route appears; a's breaker is still open afterwards.
    let good = format!(
        "{}\n[[routes.extra.deployments]]\nname = \"b\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
        two(&a, &b, breaker),
        b.base_url()
    );
    std::fs::write(&h.config_path, with_plugin(&good)).unwrap();
    let mut seen = false;
    for _ in 0..250 {
        if h.get("/v1/models").await.contains("\"extra\"") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the new route never appeared");
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    assert_eq!(
        status["routes"]["s"]["providers"][0]["breaker"]["state"], "open",
        "breaker survived the reload"
    );
    let (_, headers, _) = h.chat(request("s")).await;
    assert_eq!(header(&headers, "x-provider"), "b");

    // A bad change: refused, counted, and the old config keeps serving.
    std::fs::write(&h.config_path, "[routes.s]\nnot_a_field = 1\n").unwrap();
    let mut refused = false;
    for _ in 0..250 {
        if h.get("/metrics")
            .await
            .contains(r#"stilts_config_reloads_total{result="error"} 1"#)
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the bad config was not refused");
    assert!(
        h.get("/metrics")
            .await
            .contains("stilts_config_last_reload_ok 0")
    );
    assert_eq!(
        h.chat(request("extra")).await.0,
        200,
        "the old config still serves"
    );
    assert!(logs().contains("config refused"));
    // A config whose key variable is unset is refused too (checked before anything changes).
    let missing_key = good.replace(
        "model = \"m\"\n",
        "model = \"m\"\napi_key_env = \"STILTS_TEST_UNSET_VAR\"\n",
    );
    std::fs::write(&h.config_path, with_plugin(&missing_key)).unwrap();
    let mut refused_again = false;
    for _ in 0..250 {
        if h.get("/metrics")
            .await
            .contains(r#"stilts_config_reloads_total{result="error"} 2"#)
        {
            refused_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused_again);
    assert_eq!(h.chat(request("extra")).await.0, 200);
    watcher.abort();
}

#[tokio::test]
async fn client_keys_limits_and_unknown_routes() {
    set_env("STILTS_TEST_CLIENT_KEYS", "client-one,client-two");
    let a = mock("a").await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nreload_poll_ms = 0\nbody_limit_bytes = 2048\nclient_keys_env = [\"STILTS_TEST_CLIENT_KEYS\"]\n\
         [[routes.s.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"a-model\"\n",
        a.base_url()
    );
    let h = Harness::start(&toml).await;
    let post = |key: Option<&str>, body: Value| {
        let mut r = h.http.post(h.url("/v1/chat/completions")).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    assert_eq!(post(None, request("s")).await.unwrap().status(), 401);
    assert_eq!(
        post(Some("nope"), request("s")).await.unwrap().status(),
        401
    );
    assert_eq!(
        post(Some("client-two"), request("s"))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = post(Some("client-one"), request("missing")).await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    let r = post(Some("client-one"), serde_json::json!({"model": "s"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "no messages");
    let big = serde_json::json!({"model": "s", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    assert_eq!(post(Some("client-one"), big).await.unwrap().status(), 413);
    assert_eq!(h.get("/healthz").await, "ok\n");
    assert_eq!(a.stats().requests, 1);
}

#[tokio::test]
async fn metrics_expose_every_family() {
    let (a, b) = (mock("a").await, mock("b").await);
    let h = Harness::start(&two(&a, &b, "")).await;
    assert_eq!(h.chat(request("s")).await.0, 200);
    let m = h.get("/metrics").await;
    for series in [
        r#"stilts_requests_total{route="s",provider="a",outcome="ok"} 1"#,
        r#"stilts_attempts_total{route="s",provider="a"} 1"#,
        r#"stilts_request_duration_seconds_count{route="s"} 1"#,
        r#"stilts_gateway_overhead_seconds_count{route="s"} 1"#,
        r#"stilts_breaker_state{route="s",provider="b"} 0"#,
        r#"stilts_tokens_total{route="s",provider="a",kind="output"} 11"#,
        r#"stilts_retry_budget_available{route="s"}"#,
        r#"stilts_in_flight_attempts{route="s",provider="a"} 0"#,
    ] {
        assert!(m.contains(series), "missing {series} in\n{m}");
    }
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_stream() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        chunk_interval_ms: 50,
        ..Faults::default()
    });
    let mut h = Harness::start(&two(&a, &b, "")).await;
    let response = h
        .http
        .post(h.url("/v1/chat/completions"))
        .json(&stream_request("s"))
        .send()
        .await
        .unwrap();
    h.shutdown();
    let body = response.text().await.unwrap();
    let (text, done, error) = sse_text(&body);
    assert!(text.ends_with("mock upstream."), "{body}");
    assert_eq!((done, error), (1, None));
    let served = tokio::time::timeout(Duration::from_secs(10), &mut h.served).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "server did not stop after draining"
    );
}

#[tokio::test]
async fn provider_keys_never_reach_logs_errors_or_metrics() {
    const KEY: &str = "sk-test-secret-7f3a9c";
    set_env("STILTS_TEST_KEY_LEAK", KEY);
    let mut cfg = MockConfig::named("a");
    cfg.require_key = Some("the-right-key".into());
    cfg.faults.echo_key = true;
    let a = MockUpstream::start_local(cfg).await.unwrap();
    let toml = format!(
        "{SERVER}[[routes.s.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"a-model\"\napi_key_env = \"STILTS_TEST_KEY_LEAK\"\n",
        a.base_url()
    );
    let h = Harness::start(&toml).await;
    let (status, _, body) = h.chat(request("s")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        a.last_auth().as_deref(),
        Some(&*format!("Bearer {KEY}")),
        "the key was sent upstream"
    );
    let body = body.to_string();
    assert!(body.contains("auth") && body.contains("***"), "{body}");
    assert!(!body.contains(KEY), "key in the error body: {body}");
    let (_, _, stream_body) = h.stream(stream_request("s")).await;
    assert!(!stream_body.to_string().contains(KEY));
    assert!(!h.get("/metrics").await.contains(KEY));
    assert!(!h.get("/status").await.contains(KEY));
    assert!(!format!("{:?}", h.gateway).contains(KEY));
    let logs = logs();
    assert!(logs.contains("attempt failed"), "the failure was logged");
    assert!(!logs.contains("sk-test-secret"), "a key reached a log line");
}

#[tokio::test]
async fn a_cut_stream_continues_exactly_on_a_prefill_capable_provider() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let a = mock("a").await;
    a.set_faults(Faults {
        cut_after: Some(3),
        ..Faults::default()
    });
    let b = MockServer::start().await;
    let sse = anthropic_text_stream(&["This answer ", "continued on b."]);
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .expect(1)
        .mount(&b)
        .await;
    let toml = format!(
        "{SERVER}[routes.s.router]\npolicy = \"priority\"\n\
         [[routes.s.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"a-model\"\n\
         [[routes.s.deployments]]\nname = \"b\"\nplugin = \"ANTHROPIC\"\nbase_url = \"{}/v1\"\nmodel = \"claude-b\"\npriority = 1\nprefill_continuation = true\n",
        a.base_url(),
        b.uri()
    );
    let h = Harness::start(&toml).await;
    let (status, headers, body) = h.stream(stream_request("s")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-provider"), "a");
    let (text, done, error) = sse_text(&body);
    assert_eq!(error, None, "{body}");
    assert_eq!(text, "Hello from a! This answer continued on b.");
    assert_eq!(done, 1);
    // b was asked to continue a's partial answer, placed last as the assistant's message.
    let sent: Value =
        serde_json::from_slice(&b.received_requests().await.unwrap()[0].body).unwrap();
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "assistant", "{sent}");
    assert!(last.to_string().contains("Hello from a! "), "{sent}");
    let m = h.get("/metrics").await;
    assert!(
        m.contains(
            r#"stilts_stream_interruptions_total{route="s",provider="a",action="continued"} 1"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn continuation_is_refused_for_a_plugin_that_cannot_do_it() {
    let a = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        with_plugin(&format!(
            "{SERVER}[[routes.s.deployments]]\nname = \"a\"\nplugin = \"GEMINI\"\nbase_url = \"{}\"\nmodel = \"m\"\nprefill_continuation = true\n",
            a.base_url()
        )),
    )
    .unwrap();
    let valid = stilts_gateway::GatewayConfig::load(&path).unwrap();
    let e = stilts_gateway::Gateway::new(&valid).unwrap_err();
    assert_eq!(e.path, "routes.s.deployments[0].prefill_continuation");
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let (a, b) = (mock("a").await, mock("b").await);
    let h = Harness::start(&two(&a, &b, "")).await;
    let hup = tokio::spawn(stilts_gateway::server::reload_on_sighup(
        h.gateway.clone(),
        h.config_path.clone(),
    ));
    let renamed = two(&a, &b, "").replace("routes.s", "routes.renamed");
    std::fs::write(&h.config_path, with_plugin(&renamed)).unwrap();
    // reload_poll_ms = 0: only the signal can apply the change.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut applied = false;
    for _ in 0..250 {
        let models = h.get("/v1/models").await;
        if models.contains("\"renamed\"") && !models.contains("\"s\"") {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(applied, "SIGHUP did not reload");
    assert_eq!(h.chat(request("renamed")).await.0, 200);
    hup.abort();
}

#[tokio::test]
async fn a_rate_limited_provider_fails_over_to_an_equal_peer_at_once() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        status: Some(429),
        error_code: Some("rate_limit_exceeded".into()),
        retry_after_s: Some(2.0),
        ..Faults::default()
    });
    let toml = format!(
        "{SERVER}[routes.s.router]\npolicy = \"round_robin\"\n\
         [[routes.s.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"a-model\"\n\
         [[routes.s.deployments]]\nname = \"b\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"b-model\"\n",
        a.base_url(),
        b.base_url()
    );
    let h = Harness::start(&toml).await;
    for _ in 0..4 {
        let (status, headers, _) = h.chat(request("s")).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-provider"), "b");
    }
    // a was asked once, then cooled down for its Retry-After while b took the traffic.
    assert_eq!(a.stats().requests, 1);
    assert_eq!(b.stats().requests, 4);
}
