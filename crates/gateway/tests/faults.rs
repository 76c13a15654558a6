//! The design's error table, end to end: fake upstreams (and wiremock) behind real gateways that
//! route through the openai plugin loaded from its cargo-built shared library.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};

async fn mock(name: &str) -> MockUpstream {
    MockUpstream::start_local(MockConfig::named(name))
        .await
        .unwrap()
}

fn fault(status: u16) -> Faults {
    Faults {
        status: Some(status),
        ..Faults::default()
    }
}

#[tokio::test]
async fn plain_answer_names_the_provider_and_the_upstream_model() {
    let a = mock("a").await;
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a)], "")
    ))
    .await;
    let (status, headers, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "a");
    assert_eq!(header(&headers, "x-stilts-attempts"), "1");
    assert_eq!(
        body["model"], "a-model",
        "the model that served, not the route"
    );
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Hello from a")
    );
    assert_eq!(a.last_request().unwrap()["model"], "a-model");
}

#[tokio::test]
async fn server_errors_fail_over_in_priority_order() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    a.set_faults(fault(503));
    b.set_faults(fault(500));
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a), ("b", &b), ("c", &c)], "")
    ))
    .await;
    let (status, headers, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "c");
    assert_eq!(header(&headers, "x-stilts-attempts"), "3");
    assert_eq!(
        (a.stats().requests, b.stats().requests, c.stats().requests),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_lone_provider_is_retried_after_a_server_error() {
    let a = mock("a").await;
    a.script([fault(502)]);
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route(
            "chat",
            &[("a", &a)],
            "[routes.chat.router.retry]\nbackoff_base_ms = 10\nbackoff_max_ms = 20\n"
        )
    ))
    .await;
    let (status, headers, _) = h.chat(request("chat")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    assert_eq!(a.stats().requests, 2);
}

#[tokio::test]
async fn retry_after_is_honoured_before_retrying_the_preferred_provider() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.script([Faults {
        status: Some(429),
        error_code: Some("rate_limit_exceeded".into()),
        retry_after_s: Some(0.4),
        ..Faults::default()
    }]);
    // b is a lower tier: with a short Retry-After the router waits for a instead of falling to b.
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a), ("b", &b)], "")
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, headers, _) = h.chat(request("chat")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-provider"), "a");
    assert_eq!(b.stats().requests, 0);
    // A lower bound the gateway enforces, not a performance assertion.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "retried before Retry-After"
    );
}

#[tokio::test]
async fn every_provider_rate_limited_answers_429() {
    let (a, b) = (mock("a").await, mock("b").await);
    for m in [&a, &b] {
        m.set_faults(Faults {
            status: Some(429),
            error_code: Some("rate_limit_exceeded".into()),
            retry_after_s: Some(60.0),
            ..Faults::default()
        });
    }
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a), ("b", &b)], "")
    ))
    .await;
    let (status, headers, body) = h.chat(request("chat")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let after: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!(
        (50..=60).contains(&after),
        "Retry-After {after} should be the cool-down left"
    );
    let tried: Vec<&str> = body["error"]["stilts"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["provider"].as_str().unwrap())
        .collect();
    assert_eq!(tried, ["a", "b"]);
    // Cooling down: the next request is refused without calling either upstream.
    let (status, _, _) = h.chat(request("chat")).await;
    assert_eq!(status, 429);
    assert_eq!((a.stats().requests, b.stats().requests), (1, 1));
}

#[tokio::test]
async fn auth_and_quota_failures_fail_over_and_are_counted() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    a.set_faults(fault(401));
    b.set_faults(Faults {
        status: Some(429),
        error_code: Some("insufficient_quota".into()),
        ..Faults::default()
    });
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a), ("b", &b), ("c", &c)], "")
    ))
    .await;
    let (status, headers, _) = h.chat(request("chat")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-provider"), "c");
    // Long cool-downs: the next request goes straight to c.
    let (_, headers, _) = h.chat(request("chat")).await;
    assert_eq!(header(&headers, "x-provider"), "c");
    assert_eq!((a.stats().requests, b.stats().requests), (1, 1));
    let metrics = h.get("/metrics").await;
    assert!(
        metrics
            .contains(r#"stilts_attempt_failures_total{route="chat",provider="a",class="auth"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"stilts_attempt_failures_total{route="chat",provider="b",class="quota"} 1"#
        )
    );
}

#[tokio::test]
async fn client_errors_are_returned_without_retry() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        status: Some(400),
        error_code: Some("invalid_value".into()),
        ..Faults::default()
    });
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a), ("b", &b)], "")
    ))
    .await;
    let (status, headers, body) = h.chat(request("chat")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(header(&headers, "x-stilts-attempts"), "1");
    assert_eq!(
        b.stats().requests,
        0,
        "a bad request is never sent elsewhere"
    );
    assert_eq!(body["error"]["stilts"]["attempts"][0]["status"], 400);
}

#[tokio::test]
async fn context_length_is_returned_when_no_larger_window_exists() {
    let a = mock("a").await;
    a.set_faults(Faults {
        status: Some(400),
        error_code: Some("context_length_exceeded".into()),
        ..Faults::default()
    });
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a)], "")
    ))
    .await;
    let (status, _, body) = h.chat(request("chat")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(a.stats().requests, 1, "not resent unchanged");
}

#[tokio::test]
async fn a_silent_provider_times_out_and_is_not_retried_first() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        latency_ms: 5_000,
        ..Faults::default()
    });
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route(
            "chat",
            &[("a", &a), ("b", &b)],
            "[routes.chat.router.timeouts]\nheaders_ms = 200\n"
        )
    ))
    .await;
    // A small max_tokens keeps the plain-request headers limit (which may grow per expected
    // output token) well under a's 5 s silence.
    let mut req = request("chat");
    req["max_tokens"] = json!(16);
    let (status, headers, body) = h.chat(req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "b");
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"stilts_attempt_failures_total{route="chat",provider="a",class="timeout"} 1"#
        )
    );
}

#[tokio::test]
async fn a_hung_upstream_ends_at_the_deadline_with_504_and_is_cancelled() {
    let a = mock("a").await;
    a.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a)], "deadline_ms = 400\n")
    ))
    .await;
    let (status, _, body) = h.chat(request("chat")).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "deadline_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a: timeout")
    );
    assert!(
        eventually(Duration::from_secs(5), || a.stats().abandoned >= 1).await,
        "the upstream connection was not closed"
    );
}

#[tokio::test]
async fn all_failed_is_502_naming_every_attempt() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(fault(503));
    b.set_faults(fault(500));
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a), ("b", &b)], "max_attempts = 2\n")
    ))
    .await;
    let (status, headers, body) = h.chat(request("chat")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("a: server (HTTP 503") && msg.contains("b: server (HTTP 500"),
        "{msg}"
    );
}

#[tokio::test]
async fn open_breakers_answer_503_without_calling_upstream() {
    let a = mock("a").await;
    a.set_faults(fault(503));
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route(
            "chat",
            &[("a", &a)],
            "max_attempts = 1\n[routes.chat.router.breaker]\nconsecutive_failures = 1\nopen_base_ms = 60000\nopen_max_ms = 60000\n"
        )
    ))
    .await;
    assert_eq!(h.chat(request("chat")).await.0, 502);
    let (status, _, body) = h.chat(request("chat")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "no_healthy_provider");
    assert_eq!(a.stats().requests, 1);
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    assert_eq!(
        status["routes"]["chat"]["providers"][0]["breaker"]["state"],
        "open"
    );
    assert!(
        h.get("/metrics")
            .await
            .contains(r#"stilts_breaker_state{route="chat",provider="a"} 2"#)
    );
}

#[tokio::test]
async fn wiremock_upstream_gets_the_translated_request_and_a_503_fails_over() {
    use wiremock::matchers::{body_partial_json, header as has_header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let down = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"error": {"message": "engine overloaded", "type": "server_error", "code": null}})))
        .expect(1)
        .mount(&down)
        .await;
    let up = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(has_header("authorization", "Bearer sk-test-secret-wiremock"))
        .and(body_partial_json(json!({"model": "gpt-up", "messages": [{"role": "user", "content": "Say hi."}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "gpt-up",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        })))
        .expect(1)
        .mount(&up)
        .await;
    set_env("STILTS_TEST_KEY_WIREMOCK", "sk-test-secret-wiremock");
    let h = Harness::start(&format!(
        "{SERVER}[routes.w.router]\npolicy = \"priority\"\n\
         [[routes.w.deployments]]\nname = \"down\"\nplugin = \"PLUGIN\"\nbase_url = \"{}/v1\"\nmodel = \"gpt-down\"\n\
         [[routes.w.deployments]]\nname = \"up\"\nplugin = \"PLUGIN\"\nbase_url = \"{}/v1\"\nmodel = \"gpt-up\"\napi_key_env = \"STILTS_TEST_KEY_WIREMOCK\"\n\
         input_usd_per_mtok = 1000000.0\npriority = 1\n",
        down.uri(),
        up.uri()
    ))
    .await;
    let (status, headers, body) = h.chat(request("w")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "up");
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains(r#"stilts_tokens_total{route="w",provider="up",kind="input"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stilts_cost_usd_total{route="w",provider="up"} 5.0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_shipped_example_config_is_valid_and_builds() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/stilts.toml");
    let valid =
        stilts_gateway::GatewayConfig::load(&example).expect("examples/stilts.toml is valid");
    assert_eq!(valid.routes.len(), 2);
    assert!(valid.server.listen.ip().is_loopback());
    for (var, value) in [
        ("STILTS_CLIENT_KEYS", "k1,k2"),
        ("OPENAI_API_KEY", "sk-test-secret-example-a"),
        ("OPENAI_API_KEY_B", "sk-test-secret-example-b"),
        ("GROQ_API_KEY", "sk-test-secret-example-g"),
    ] {
        set_env(var, value);
    }
    let mut valid = valid;
    valid.server.plugin_dir = openai_plugin().parent().map(std::path::Path::to_path_buf);
    let gateway =
        stilts_gateway::Gateway::new(&valid).expect("the example builds with the real plugin");
    assert_eq!(gateway.route_names(), ["chat", "fast"]);
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_cancels_the_upstream_attempt() {
    let a = mock("a").await;
    a.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a)], "")
    ))
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = client
        .post(h.url("/v1/chat/completions"))
        .json(&request("chat"))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up");
    drop(client);
    assert!(
        eventually(Duration::from_secs(5), || a.stats().abandoned == 1).await,
        "the upstream attempt outlived the client"
    );
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    assert_eq!(status["routes"]["chat"]["providers"][0]["in_flight"], 0);
    assert_eq!(
        status["routes"]["chat"]["providers"][0]["failures"]["timeout"], 0,
        "cancelled, not failed"
    );
}

#[tokio::test]
async fn a_content_filter_refusal_is_returned_not_failed_over() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        status: Some(400),
        error_code: Some("content_policy_violation".into()),
        ..Faults::default()
    });
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", &a), ("b", &b)], "")
    ))
    .await;
    let (status, _, body) = h.chat(request("chat")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "content_filter");
    assert_eq!(b.stats().requests, 0, "no failover unless configured");

    // With retry.content_filter_failover the next provider is tried.
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route(
            "chat",
            &[("a", &a), ("b", &b)],
            "[routes.chat.router.retry]\ncontent_filter_failover = true\n"
        )
    ))
    .await;
    let (status, headers, _) = h.chat(request("chat")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-provider"), "b");
}

#[tokio::test]
async fn a_hedge_wins_over_a_slow_attempt_which_is_then_cancelled() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        latency_ms: 3_000,
        ..Faults::default()
    });
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route(
            "chat",
            &[("a", &a), ("b", &b)],
            "hedge = { delay_ms = 100 }\n"
        )
    ))
    .await;
    let (status, headers, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "b");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    assert!(
        eventually(Duration::from_secs(5), || a.stats().abandoned == 1).await,
        "the losing attempt was not cancelled"
    );
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    let a_status = &status["routes"]["chat"]["providers"][0];
    assert_eq!(a_status["in_flight"], 0);
    assert_eq!(
        a_status["failures"]["timeout"], 0,
        "a lost the race; it did not fail"
    );
}

#[tokio::test]
async fn attempts_header_counts_a_cancelled_hedge_on_an_error() {
    // a is silent, so a hedge goes to b after 50 ms; b refuses the request (400, not retried), and
    // the call ends there with a still pending: two attempts were made, one of them failed.
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_faults(Faults {
        latency_ms: 5_000,
        ..Faults::default()
    });
    b.set_faults(Faults {
        status: Some(400),
        ..Faults::default()
    });
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route(
            "chat",
            &[("a", &a), ("b", &b)],
            "hedge = { delay_ms = 50 }\n"
        )
    ))
    .await;
    let (status, headers, body) = h.chat(request("chat")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["stilts"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(header(&headers, "x-stilts-attempts"), "2", "{body}");
}

#[tokio::test]
async fn each_stage_limit_is_the_cores_timer_and_names_its_stage() {
    let a = mock("a").await;
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route(
            "chat",
            &[("a", &a)],
            "max_attempts = 1\n[routes.chat.router.timeouts]\nheaders_ms = 400\nplain_headers_ms_per_output_token = 0\nfirst_token_ms = 250\nstall_ms = 100\n"
        )
    ))
    .await;
    let message = |body: &Value| body["error"]["message"].as_str().unwrap_or("").to_owned();
    // Plain: no headers within headers_ms.
    a.set_faults(Faults {
        latency_ms: 5_000,
        ..Faults::default()
    });
    let (status, _, body) = h.chat(request("chat")).await;
    assert!(status >= 500, "{body}");
    assert!(
        message(&body).contains("a: timeout (no response headers within 400 ms)"),
        "{body}"
    );
    // Stream: the first-token limit runs from the send, while the headers are awaited too.
    let (status, _, body) = h.chat(stream_request("chat")).await;
    assert!(status >= 500, "{body}");
    assert!(
        message(&body).contains("a: timeout (no first token within 250 ms)"),
        "{body}"
    );
    // Stream: headers and the role chunk at once, then silence longer than stall_ms.
    a.set_faults(Faults {
        first_token_ms: 5_000,
        ..Faults::default()
    });
    let (status, _, body) = h.chat(stream_request("chat")).await;
    assert!(status >= 500, "{body}");
    assert!(
        message(&body).contains(
            "a: timeout (the stream stalled before the first token: no data within 100 ms)"
        ),
        "{body}"
    );
}

/// Quota-aware admission: a provider that reports no requests left (on a 200) gets no traffic
/// until its reported reset, so it is never asked into a 429; then it is preferred again.
#[tokio::test]
async fn the_remaining_headers_steer_traffic_before_a_429() {
    for anthropic in [false, true] {
        let primary = mock("primary").await;
        let backup = mock("backup").await;
        primary.set_faults(Faults {
            ratelimit_remaining_requests: Some(0),
            ratelimit_reset_ms: Some(1_500),
            ..Faults::default()
        });
        let mut config = format!(
            "{SERVER}{}",
            priority_route("chat", &[("primary", &primary), ("backup", &backup)], "")
        );
        if anthropic {
            // The same through the anthropic plugin: Anthropic's header names, an absolute reset.
            config = config.replacen("plugin = \"PLUGIN\"", "plugin = \"ANTHROPIC\"", 1);
        }
        let h = Harness::start(&config).await;
        let (status, headers, body) = h.chat(request("chat")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "x-provider"), "primary");
        for _ in 0..3 {
            let (status, headers, body) = h.chat(request("chat")).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                header(&headers, "x-provider"),
                "backup",
                "anthropic: {anthropic}"
            );
        }
        assert_eq!(
            primary.stats().requests,
            1,
            "the primary was never asked into a 429"
        );
        // After the reset the primary is preferred again (it still reports 0 left, so once).
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        let (_, headers, _) = h.chat(request("chat")).await;
        assert_eq!(
            header(&headers, "x-provider"),
            "primary",
            "anthropic: {anthropic}"
        );
    }
}

async fn primary_trips(h: &Harness) -> u64 {
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    status["routes"]["chat"]["providers"][0]["breaker_trips"]
        .as_u64()
        .unwrap()
}

/// Recovery in seconds: after a 60 s outage, and with the primary's last probe failing just
/// before it recovered, the primary gets traffic again within 15 s. Routing runs on a clock ten
/// times faster than wall time, so the minute-long outage takes six seconds.
#[tokio::test]
async fn a_primary_back_after_a_minute_gets_traffic_within_15_s_even_after_a_failed_last_probe() {
    const SPEED: f64 = 10.0;
    let primary = mock("primary").await;
    let backup = mock("backup").await;
    primary.set_faults(fault(503));
    let clock = stilts_gateway::engine::Clock::compressed(SPEED);
    let h = Harness::start_with_clock(
        &format!(
            "{SERVER}{}",
            priority_route("chat", &[("primary", &primary), ("backup", &backup)], "")
        ),
        clock,
    )
    .await;
    // A minute of outage under steady traffic (a request every 0.2 s of routing time).
    while clock.now().as_nanos() < 60_000_000_000 {
        let (status, _, body) = h.chat(request("chat")).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Wait for a probe to fail (a new trip), then bring the primary back at once.
    let before = primary_trips(&h).await;
    while primary_trips(&h).await == before {
        let _ = h.chat(request("chat")).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    primary.set_faults(Faults::default());
    let back = clock.now();
    loop {
        let (status, headers, body) = h.chat(request("chat")).await;
        assert_eq!(status, 200, "{body}");
        let waited = clock.now().saturating_since(back);
        if header(&headers, "x-provider") == "primary" {
            assert!(waited <= Duration::from_secs(15), "back after {waited:?}");
            break;
        }
        assert!(
            waited <= Duration::from_secs(15),
            "still on the backup {waited:?} after recovery"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn primary_status(h: &Harness) -> Value {
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    status["routes"]["chat"]["providers"][0].clone()
}

/// A probe costs the user no latency: the request that probes a half-open primary is hedged at
/// once to the backup and answered there while the probe is still running; the probe is not
/// cancelled, and its answer (and the next probe's) closes the breaker.
#[tokio::test]
async fn a_half_open_probe_is_hedged_at_once_and_still_closes_the_breaker() {
    let (primary, backup) = (mock("primary").await, mock("backup").await);
    primary.set_faults(fault(503));
    let h = Harness::start(&format!(
        "{SERVER}{}",
        priority_route(
            "chat",
            &[("primary", &primary), ("backup", &backup)],
            "breaker = { consecutive_failures = 2, open_base_ms = 200, open_jitter = 0.0 }\n"
        )
    ))
    .await;
    while primary_trips(&h).await == 0 {
        let (status, _, body) = h.chat(request("chat")).await;
        assert_eq!(status, 200, "{body}");
    }
    // Back, but slow: each answer takes a second and a half.
    primary.set_faults(Faults {
        latency_ms: 1_500,
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(primary_status(&h).await["breaker"]["state"], "half_open");
    let served_before = primary.stats().requests;
    // One plain probe, one stream probe (read to its end, as the plain one is).
    let mut output_tokens = 0;
    for probe in 1..=2 {
        let asked = if probe == 1 {
            request("chat")
        } else {
            stream_request("chat")
        };
        let (status, headers, body) = h.chat(asked).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "x-provider"), "backup");
        assert_eq!(header(&headers, "x-stilts-attempts"), "2");
        // The user has the backup's answer while the probe is still on its way.
        assert_eq!(primary_status(&h).await["in_flight"], 1, "probe {probe}");
        let mut waited = Duration::ZERO;
        while primary_status(&h).await["in_flight"] != 0 {
            assert!(
                waited < Duration::from_secs(10),
                "probe {probe} never ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        // Its answer's tokens are known and billed: a stream probe's too, from its end.
        let billed = primary_status(&h).await["output_tokens"].as_u64().unwrap();
        assert!(
            billed > output_tokens,
            "probe {probe}: {billed} output tokens"
        );
        output_tokens = billed;
    }
    assert_eq!(primary.stats().requests, served_before + 2);
    assert_eq!(primary.stats().abandoned, 0, "a probe was cancelled");
    let status = primary_status(&h).await;
    assert_eq!(status["breaker"]["state"], "closed", "{status}");
    assert_eq!(status["successes"], 2);
    // Closed: the primary answers again, alone.
    primary.set_faults(Faults::default());
    let (status, headers, _) = h.chat(request("chat")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-provider"), "primary");
    assert_eq!(header(&headers, "x-stilts-attempts"), "1");
}
