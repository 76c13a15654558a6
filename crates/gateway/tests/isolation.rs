//! No client can hurt another: what one client (or one upstream) does to the gateway must not
//! fail, slow or expose another client's requests. Real gateways on loopback, fake upstreams and
//! wiremock, the openai plugin from its cargo-built shared library.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use serde_json::{Value, json};
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};

async fn slow_mock(name: &str, latency_ms: u64) -> MockUpstream {
    let mut cfg = MockConfig::named(name);
    cfg.faults = Faults {
        latency_ms,
        first_token_ms: latency_ms,
        ..Faults::default()
    };
    MockUpstream::start_local(cfg).await.unwrap()
}

fn two_deployments(a: &MockUpstream, b: &MockUpstream) -> String {
    format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n\
         [[routes.chat.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"a-model\"\npriority = 0\n\
         [[routes.chat.deployments]]\nname = \"b\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"b-model\"\npriority = 1\n",
        a.base_url(),
        b.base_url()
    )
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn post_with(h: &Harness, body: &Value, name: &str, value: &str) -> (u16, Value) {
    let r = h
        .http
        .post(h.url("/v1/chat/completions"))
        .header(name, value)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn a_clients_short_deadline_never_opens_the_breakers_for_everyone_else() {
    let a = slow_mock("a", 50).await;
    let b = slow_mock("b", 50).await;
    let h = Harness::start(&two_deployments(&a, &b)).await;
    for body in [request("chat"), stream_request("chat")] {
        for _ in 0..10 {
            let (status, error) = post_with(&h, &body, "x-stilts-deadline-ms", "10").await;
            assert_eq!(status, 504, "{error}");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("deadline of 10 ms (X-Stilts-Deadline-Ms)"),
                "the error names the client's deadline: {message}"
            );
            assert!(
                !message.contains("within"),
                "no stage limit is blamed: {message}"
            );
        }
    }
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    let providers = status["routes"]["chat"]["providers"].as_array().unwrap();
    for p in providers {
        assert_eq!(p["breaker"]["state"], "closed", "{p}");
        assert_eq!(p["failures"]["timeout"], 0, "{p}");
    }
    let cut: u64 = providers
        .iter()
        .map(|p| p["cut_by_client_deadline"].as_u64().unwrap())
        .sum();
    assert!(
        cut >= 20,
        "every cut attempt is counted as the client's: {status}"
    );
    let metrics = h.get("/metrics").await;
    assert!(
        !metrics
            .lines()
            .any(|l| l.contains("class=\"timeout\"") && !l.ends_with(" 0")),
        "no provider timeout counted in the metrics:\n{metrics}"
    );
    // Another client, without a deadline, is served by the primary every time.
    for _ in 0..10 {
        let (code, headers, body) = h.chat(request("chat")).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(header(&headers, "x-provider"), "a");
    }
}

#[tokio::test]
async fn a_malformed_deadline_header_is_a_400_naming_it() {
    let a = slow_mock("a", 0).await;
    let b = slow_mock("b", 0).await;
    let h = Harness::start(&two_deployments(&a, &b)).await;
    for bad in ["abc", "-5", "0", "1.5", "99999999999999999999999", " "] {
        let (status, error) = post_with(&h, &request("chat"), "x-stilts-deadline-ms", bad).await;
        assert_eq!(status, 400, "{bad:?}: {error}");
        assert_eq!(error["error"]["code"], "invalid_deadline");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("X-Stilts-Deadline-Ms")
        );
    }
    assert_eq!(
        a.stats().requests,
        0,
        "nothing was sent for a malformed header"
    );
    let (status, _) = post_with(&h, &request("chat"), "x-stilts-deadline-ms", "5000").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let a = slow_mock("a", 0).await;
    let b = slow_mock("b", 0).await;
    set_env("STILTS_TEST_CLIENT_KEYS_CASE", "ck-one");
    let toml = two_deployments(&a, &b).replace(
        "reload_poll_ms = 0\n",
        "reload_poll_ms = 0\nclient_keys_env = [\"STILTS_TEST_CLIENT_KEYS_CASE\"]\n",
    );
    let h = Harness::start(&toml).await;
    for value in [
        "Bearer ck-one",
        "bearer ck-one",
        "BEARER   ck-one",
        "bEaReR ck-one ",
    ] {
        let (status, body) = post_with(&h, &request("chat"), "authorization", value).await;
        assert_eq!(status, 200, "{value:?}: {body}");
    }
    for value in [
        "Bearer",
        "Bearer ",
        "Basic ck-one",
        "Bearerck-one",
        "Bearer ck-two",
    ] {
        let (status, _) = post_with(&h, &request("chat"), "authorization", value).await;
        assert_eq!(status, 401, "{value:?}");
    }
}

#[tokio::test]
async fn a_request_the_plugin_refuses_is_the_clients_error_not_the_providers() {
    let a = slow_mock("a", 0).await;
    let b = slow_mock("b", 0).await;
    let h = Harness::start(&two_deployments(&a, &b)).await;
    let body = json!({"model": "chat", "messages": [{"role": "wizard", "content": "hi"}]});
    let (status, headers, error) = h.chat(body).await;
    assert_eq!(status, 400, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("stilts cannot send this request"),
        "{message}"
    );
    assert!(!message.contains("provider rejected"), "{message}");
    assert_eq!(header(&headers, "x-stilts-attempts"), "0");
    assert_eq!(a.stats().requests + b.stats().requests, 0);
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    for p in status["routes"]["chat"]["providers"].as_array().unwrap() {
        assert_eq!(p["failures"]["bad_request"], 0, "{p}");
    }
    let metrics = h.get("/metrics").await;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("stilts_attempts_total{") && !l.ends_with(" 0")),
        "no attempt counted:\n{metrics}"
    );
}

#[tokio::test]
async fn upstream_text_cannot_forge_log_lines_or_leak_the_key_in_any_encoding() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let key = "sk-live-ISOLATION+key/0123456789";
    set_env("STILTS_TEST_KEY_ISOLATION", key);
    let percent = "sk-live-ISOLATION%2Bkey%2F0123456789";
    let base64 = "dXNlcjpzay1saXZlLUlTT0xBVElPTitrZXkvMDEyMzQ1Njc4OQ=="; // "user:" + key
    let forged = "2026-11-30T00:00:00.000000Z ERROR stilts_gateway: forged line";
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "error": {
                "message": format!("upstream broke\n{forged}\r\x1b[31mred\x1b[0m key={percent} auth=Basic {base64}"),
                "type": "server_error"
            }
        })))
        .mount(&server)
        .await;
    let toml = format!(
        "{SERVER}[[routes.chat.deployments]]\nname = \"w\"\nplugin = \"PLUGIN\"\nbase_url = \"{}/v1\"\nmodel = \"m\"\napi_key_env = \"STILTS_TEST_KEY_ISOLATION\"\n",
        server.uri()
    );
    let h = Harness::start(&toml).await;
    let (status, _, error) = h.chat(request("chat")).await;
    assert_eq!(status, 502, "{error}");
    let text = error.to_string();
    let logs = logs();
    for (what, haystack) in [("error body", &text), ("logs", &logs)] {
        for secret in [key, percent, base64, "LUlTT0xBVElPTitrZXkvMDEyMzQ1Njc4OQ"] {
            assert!(!haystack.contains(secret), "{what} leak {secret}");
        }
        assert!(!haystack.contains('\x1b'), "{what} carry an ANSI escape");
    }
    assert!(
        !logs.lines().any(|l| l.starts_with(forged)),
        "a forged log line:\n{logs}"
    );
    assert!(
        logs.contains("upstream broke\\n2026-11-30"),
        "escaped, kept on one line"
    );
}

/// Makes a FIFO (named pipe) at `path`: opening it for reading blocks until a writer comes.
fn fifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
}

#[tokio::test]
async fn a_plugin_path_that_is_a_fifo_is_refused_at_once_while_requests_go_on() {
    let a = slow_mock("a", 0).await;
    let b = slow_mock("b", 0).await;
    let h = Harness::start(&two_deployments(&a, &b)).await;
    let pipe = h.config_path.with_file_name("plugin.so");
    fifo(&pipe);
    // Refused when building a gateway (what `stilts config check` and `serve` do)...
    let toml = with_plugin(&two_deployments(&a, &b)).replacen(
        &openai_plugin().display().to_string(),
        &pipe.display().to_string(),
        1,
    );
    let other = h.config_path.with_file_name("other.toml");
    std::fs::write(&other, &toml).unwrap();
    let valid = stilts_gateway::GatewayConfig::load(&other).unwrap();
    let built = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::task::spawn_blocking(move || stilts_gateway::Gateway::new(&valid).map(|_| ())),
    )
    .await
    .expect("refused at once, not blocked on the FIFO")
    .unwrap();
    let error = built.unwrap_err().to_string();
    assert!(error.contains("FIFO"), "{error}");
    // ...and on reload, while requests keep being answered.
    std::fs::write(&h.config_path, &toml).unwrap();
    let reload = tokio::spawn({
        let (gateway, path) = (h.gateway.clone(), h.config_path.clone());
        async move { stilts_gateway::server::reload_bounded(&gateway, &path).await }
    });
    for _ in 0..5 {
        let (status, _, body) = h.chat(request("chat")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(!reload.await.unwrap(), "the FIFO config was refused");
    assert!(logs().contains("FIFO"), "the refusal names the FIFO");
}

#[tokio::test]
async fn a_reload_that_blocks_is_abandoned_at_its_limit_and_never_lands_later() {
    let a = slow_mock("a", 0).await;
    let b = slow_mock("b", 0).await;
    let toml = two_deployments(&a, &b).replace(
        "reload_poll_ms = 0\n",
        "reload_poll_ms = 0\nreload_timeout_ms = 300\n",
    );
    let h = Harness::start(&toml).await;
    // The config path becomes a FIFO: reading it blocks until a writer comes.
    let new_config = with_plugin(&toml).replace("routes.chat", "routes.late");
    std::fs::remove_file(&h.config_path).unwrap();
    fifo(&h.config_path);
    let started = std::time::Instant::now();
    let reload = tokio::spawn({
        let (gateway, path) = (h.gateway.clone(), h.config_path.clone());
        async move { stilts_gateway::server::reload_bounded(&gateway, &path).await }
    });
    // Requests, health checks and metrics are answered while the reload is stuck.
    for _ in 0..5 {
        let (status, _, body) = h.chat(request("chat")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(h.get("/healthz").await, "ok\n");
    }
    assert!(
        !reload.await.unwrap(),
        "an abandoned reload reports failure"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the reload was not bounded"
    );
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains("stilts_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    // Now the blocked read gets its data: the abandoned reload must not apply it.
    let path = h.config_path.clone();
    tokio::task::spawn_blocking(move || std::fs::write(path, new_config))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(h.gateway.route_names(), vec!["chat".to_owned()]);
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains("stilts_config_reloads_total{result=\"error\"} 1"),
        "counted once: {metrics}"
    );
}

#[tokio::test]
async fn a_client_deadline_ending_a_flowing_stream_is_not_the_providers_failure() {
    // First token at once, then a chunk every 400 ms: the stream is still flowing when the
    // client's 2.5 s deadline ends it, longer than twice the provider's usual latency (the 1 s
    // default), so only knowing it was flowing keeps it off the provider's record.
    let mut cfg = MockConfig::named("flowing");
    cfg.faults = Faults {
        chunk_interval_ms: 400,
        ..Faults::default()
    };
    let up = MockUpstream::start_local(cfg).await.unwrap();
    let h = Harness::start(&format!(
        "{SERVER}[routes.midstream.router.breaker]\nconsecutive_failures = 2\n\
         [[routes.midstream.deployments]]\nname = \"flowing\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
        up.base_url()
    ))
    .await;
    for _ in 0..2 {
        let r = h
            .http
            .post(h.url("/v1/chat/completions"))
            .header("x-stilts-deadline-ms", "2500")
            .json(&stream_request("midstream"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body = r.text().await.unwrap();
        let (_, done, error) = sse_text(&body);
        assert_eq!(done, 0, "cut, not complete: {body}");
        assert!(error.is_some(), "an error event ends it: {body}");
    }
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    let p = &status["routes"]["midstream"]["providers"][0];
    assert_eq!(p["breaker"]["state"], "closed", "{p}");
    assert_eq!(p["failures"]["timeout"], 0, "{p}");
}
