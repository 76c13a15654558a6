//! The Anthropic Messages ingress (`POST /v1/messages`) end to end: a real gateway on loopback,
//! OpenAI-dialect fake upstreams behind the openai plugin, so every answer crosses the canonical
//! format both ways. The official SDK's view is checked by scripts/dialects-sdk-check.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use serde_json::{Value, json};
use stilts_gateway::mock::{Faults, MockUpstream};

/// A route `chat` over a deployment that refuses connections, then `up`.
fn failover_config(up: &MockUpstream, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nreload_poll_ms = 0\n{server_extra}\n\
         [routes.chat.router]\npolicy = \"priority\"\n\
         [[routes.chat.deployments]]\nname = \"dead\"\nplugin = \"PLUGIN\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"gone\"\npriority = 0\n\
         [[routes.chat.deployments]]\nname = \"up\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"up-model\"\npriority = 1\n",
        up.base_url()
    )
}

fn ask(stream: bool) -> Value {
    json!({"model": "chat", "max_tokens": 64, "stream": stream,
           "messages": [{"role": "user", "content": "Say hi."}]})
}

async fn post(
    h: &Harness,
    body: &Value,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = h
        .http
        .post(h.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(body);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn a_plain_message_is_served_through_a_failover() {
    let up = mock("up", Faults::default()).await;
    let h = Harness::start(&failover_config(&up, "")).await;
    let (status, headers, body) = post(&h, &ask(false), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "up");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    assert!(header(&headers, "request-id").starts_with("req_"));
    let message: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["content"][0]["type"], "text");
    assert!(
        message["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Hello from up")
    );
    assert!(message["usage"]["output_tokens"].as_u64().unwrap() > 0);
    // The upstream got the canonical request: the system prompt and the limit carried over.
    let sent = up.last_request().unwrap();
    assert_eq!(sent["max_tokens"], 64);
}

#[tokio::test]
async fn a_stream_is_the_messages_event_sequence() {
    let up = mock("up", Faults::default()).await;
    let h = Harness::start(&failover_config(&up, "")).await;
    let (status, headers, body) = post(&h, &ask(true), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), "text/event-stream");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    let events = named_events(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert_eq!(names[1], "content_block_start");
    assert_eq!(names[names.len() - 3], "content_block_stop");
    assert_eq!(names[names.len() - 2], "message_delta");
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(text.starts_with("Hello from up"), "{text}");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(
        !body.contains("[DONE]"),
        "no OpenAI terminator in a Messages stream"
    );
}

#[tokio::test]
async fn a_stream_cut_after_its_first_bytes_ends_with_an_error_event() {
    let up = mock(
        "up",
        Faults {
            cut_after: Some(2),
            chunk_interval_ms: 5,
            ..Faults::default()
        },
    )
    .await;
    let h = Harness::start(&failover_config(&up, "")).await;
    let (status, _, body) = post(&h, &ask(true), None).await;
    assert_eq!(status, 200, "the first bytes were sent: {body}");
    let events = named_events(&body);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "error", "{body}");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(data["error"]["message"].as_str().unwrap().contains("cut"));
    assert!(!events.iter().any(|(n, _)| n == "message_stop"), "{body}");
}

#[tokio::test]
async fn errors_have_anthropics_shape_status_and_retry_advice() {
    let up = mock(
        "up",
        Faults {
            status: Some(503),
            ..Faults::default()
        },
    )
    .await;
    let h = Harness::start(&failover_config(&up, "")).await;
    // Every attempt fails: 502 api_error, and the SDK is told not to repeat the failover.
    let (status, headers, body) = post(&h, &ask(false), None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(header(&headers, "x-should-retry"), "false");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    assert!(error["request_id"].as_str().unwrap().starts_with("req_"));
    // A field stilts cannot carry: 400 naming it.
    let mut bad = ask(false);
    bad["top_k"] = json!(3);
    let (status, _, body) = post(&h, &bad, None).await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("top_k")
    );
    // An unknown route.
    let mut unknown = ask(false);
    unknown["model"] = json!("nope");
    let (status, _, body) = post(&h, &unknown, None).await;
    assert_eq!(status, 404);
    assert!(body.contains("not_found_error"), "{body}");
}

#[tokio::test]
async fn the_client_key_comes_as_x_api_key_or_bearer() {
    set_env("STILTS_TEST_MESSAGES_KEYS", "sk-messages-1");
    let up = mock("up", Faults::default()).await;
    let h = Harness::start(&failover_config(
        &up,
        "client_keys_env = [\"STILTS_TEST_MESSAGES_KEYS\"]",
    ))
    .await;
    let (status, _, body) = post(&h, &ask(false), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("authentication_error"), "{body}");
    let (status, _, body) = post(&h, &ask(false), Some("sk-messages-1")).await;
    assert_eq!(status, 200, "{body}");
    let r = h
        .http
        .post(h.url("/v1/messages"))
        .bearer_auth("sk-messages-1")
        .json(&ask(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn chat_completions_errors_advise_the_sdks_on_retries() {
    let up = mock(
        "up",
        Faults {
            status: Some(503),
            ..Faults::default()
        },
    )
    .await;
    let h = Harness::start(&failover_config(&up, "")).await;
    let (status, headers, _) = h.chat(request("chat")).await;
    assert_eq!(status, 502);
    assert_eq!(header(&headers, "x-should-retry"), "false");
}

fn anthropic_deployment(name: &str, base_url: &str, priority: u32, prefill: bool) -> String {
    format!(
        "[[routes.chat.deployments]]\nname = \"{name}\"\nplugin = \"ANTHROPIC\"\nbase_url = \"{base_url}\"\nmodel = \"claude-haiku-4-5\"\npriority = {priority}\nprefill_continuation = {prefill}\n"
    )
}

fn openai_deployment(name: &str, base_url: &str, priority: u32) -> String {
    format!(
        "[[routes.chat.deployments]]\nname = \"{name}\"\nplugin = \"PLUGIN\"\nbase_url = \"{base_url}\"\nmodel = \"gpt-4o-mini\"\npriority = {priority}\n"
    )
}

fn stream_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_messages_request_is_served_by_an_anthropic_deployment() {
    let up = mock("claude", Faults::default()).await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n{}",
        anthropic_deployment("claude", &up.base_url(), 0, false)
    ))
    .await;
    let (status, _, body) = post(&h, &ask(false), None).await;
    assert_eq!(status, 200, "{body}");
    let message: Value = serde_json::from_str(&body).unwrap();
    assert!(
        message["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Hello from claude")
    );
    let (status, _, body) = post(&h, &ask(true), None).await;
    assert_eq!(status, 200, "{body}");
    let events = named_events(&body);
    assert_eq!(events.last().unwrap().0, "message_stop", "{body}");
    assert!(stream_text(&events).contains("Hello from claude"), "{body}");
}

/// A broken event, or Anthropic's in-band `overloaded_error` after the 200, before the first
/// token: failed over, invisible to the client but for X-Stilts-Attempts.
#[tokio::test]
async fn a_broken_or_overload_event_before_the_first_token_fails_over_invisibly() {
    let broken = Faults {
        malformed_after: Some(0),
        ..Faults::default()
    };
    let overload = Faults {
        overload_event_after: Some(0),
        ..Faults::default()
    };
    for faults in [broken, overload] {
        let bad = mock("claude", faults.clone()).await;
        let good = mock("gpt", Faults::default()).await;
        let h = Harness::start(&format!(
            "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n{}{}",
            anthropic_deployment("claude", &bad.base_url(), 0, false),
            openai_deployment("gpt", &good.base_url(), 1)
        ))
        .await;
        let (status, headers, body) = post(&h, &ask(true), None).await;
        assert_eq!(status, 200, "{faults:?}: {body}");
        assert_eq!(header(&headers, "x-provider"), "gpt");
        // An overload is a rate limit: the preferred tier is waited out once (a short
        // Retry-After) before the next tier, so two or three attempts, all invisible.
        let attempts: u64 = header(&headers, "x-stilts-attempts").parse().unwrap();
        assert!((2..=3).contains(&attempts), "{faults:?}: {attempts}");
        assert_eq!(bad.stats().requests, attempts - 1);
        let events = named_events(&body);
        assert_eq!(events.last().unwrap().0, "message_stop", "{body}");
        assert!(!events.iter().any(|(n, _)| n == "error"), "{body}");
        assert!(stream_text(&events).starts_with("Hello from gpt"), "{body}");
    }
}

#[tokio::test]
async fn a_cut_after_the_first_bytes_continues_exactly_inside_the_same_message() {
    let primary = mock(
        "gpt",
        Faults {
            cut_after: Some(3),
            ..Faults::default()
        },
    )
    .await;
    let fallback = mock("claude", Faults::default()).await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n{}{}",
        openai_deployment("gpt", &primary.base_url(), 0),
        anthropic_deployment("claude", &fallback.base_url(), 1, true)
    ))
    .await;
    let (status, _, body) = post(&h, &ask(true), None).await;
    assert_eq!(status, 200, "{body}");
    let events = named_events(&body);
    assert_eq!(events.last().unwrap().0, "message_stop", "{body}");
    assert_eq!(
        events.iter().filter(|(n, _)| n == "message_start").count(),
        1,
        "one message, continued: {body}"
    );
    assert!(
        stream_text(&events).starts_with("Hello from gpt! Hello from claude!"),
        "the answer goes on where the cut left it: {body}"
    );
}

#[tokio::test]
async fn a_tool_call_crosses_both_translations() {
    // An Anthropic client, an OpenAI deployment: tool_use → tool_calls → tool_use.
    let up = mock("gpt", Faults::default()).await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n{}",
        openai_deployment("gpt", &up.base_url(), 0)
    ))
    .await;
    let mut body = ask(false);
    body["tools"] = json!([{"name": "weather", "input_schema": {"type": "object",
        "properties": {"city": {"type": "string"}}}}]);
    let (status, _, text) = post(&h, &body, None).await;
    assert_eq!(status, 200, "{text}");
    let message: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(message["stop_reason"], "tool_use", "{text}");
    assert_eq!(message["content"][0]["type"], "tool_use");
    assert_eq!(message["content"][0]["name"], "weather");
    assert!(message["content"][0]["input"]["city"].is_string(), "{text}");
    // The upstream saw an OpenAI function tool.
    let sent = up.last_request().unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "weather", "{sent}");
    // Streamed: one tool_use block whose input_json_delta pieces make the same input.
    body["stream"] = json!(true);
    let (status, _, text) = post(&h, &body, None).await;
    assert_eq!(status, 200, "{text}");
    let events = named_events(&text);
    let json: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(str::to_owned))
        .collect();
    let input: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(input, message["content"][0]["input"]);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn count_tokens_counts_without_calling_a_provider_and_checks_like_messages() {
    let up = mock("up", Faults::default()).await;
    let h = Harness::start(&failover_config(&up, "")).await;
    let count = |body: Value| {
        let request = h
            .http
            .post(h.url("/v1/messages/count_tokens"))
            .header("anthropic-version", "2023-06-01")
            .json(&body);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.json::<Value>().await.unwrap())
        }
    };
    let short = json!({"model": "chat", "messages": [{"role": "user", "content": "Say hi."}]});
    let (status, headers, body) = count(short).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-stilts-token-count"), "o200k_base");
    assert!(header(&headers, "request-id").starts_with("req_"));
    let few = body["input_tokens"].as_u64().unwrap();
    assert!((5..20).contains(&few), "{body}");
    let long = json!({"model": "chat", "system": "Answer in French.",
        "messages": [{"role": "user", "content": "Say hi. ".repeat(100)}]});
    let (_, _, body) = count(long).await;
    assert!(body["input_tokens"].as_u64().unwrap() > few + 200, "{body}");
    assert!(
        up.last_request().is_none(),
        "a count never calls a provider"
    );

    let (status, _, body) =
        count(json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["type"], "not_found_error");
    let (status, _, body) = count(json!({"model": "chat", "top_k": 3,
        "messages": [{"role": "user", "content": "hi"}]}))
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("top_k"),
        "{body}"
    );
}
