//! The OpenAI Responses ingress (`POST /v1/responses`) and `GET /v1/models/{id}` end to end: a real
//! gateway on loopback, OpenAI-dialect fake upstreams behind the openai plugin, so every answer
//! crosses the canonical format both ways. The official SDK's view is checked by
//! scripts/dialects-sdk-check.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use serde_json::{Value, json};
use stilts_gateway::mock::{Faults, MockUpstream};

/// A route `chat` over a deployment that refuses connections, then `up`.
fn failover_config(up: &MockUpstream) -> String {
    format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n\
         [[routes.chat.deployments]]\nname = \"dead\"\nplugin = \"PLUGIN\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"gone\"\npriority = 0\n\
         [[routes.chat.deployments]]\nname = \"up\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"up-model\"\npriority = 1\n",
        up.base_url()
    )
}

async fn post(h: &Harness, body: &Value) -> (u16, reqwest::header::HeaderMap, String) {
    let r = h
        .http
        .post(h.url("/v1/responses"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn a_plain_response_is_served_through_a_failover() {
    let up = mock("up", Faults::default()).await;
    let h = Harness::start(&failover_config(&up)).await;
    let (status, headers, body) = post(
        &h,
        &json!({"model": "chat", "input": "Say hi.", "instructions": "Be brief.",
                "metadata": {"ticket": "42"}, "store": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "up");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "chat");
    assert_eq!(r["metadata"], json!({"ticket": "42"}));
    assert_eq!(r["output"][0]["type"], "message");
    let text = r["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("Hello from up"), "{text}");
    assert!(r["usage"]["output_tokens"].as_u64().unwrap() > 0);
    // The instructions reached the upstream as the system message.
    let sent = up.last_request().unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
}

#[tokio::test]
async fn a_stream_is_the_responses_event_sequence() {
    let up = mock("up", Faults::default()).await;
    let h = Harness::start(&failover_config(&up)).await;
    let (status, headers, body) = post(
        &h,
        &json!({"model": "chat", "input": "Say hi.", "stream": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), "text/event-stream");
    let events = named_events(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    for (n, (name, data)) in events.iter().enumerate() {
        assert_eq!(&data["type"], name.as_str());
        assert_eq!(data["sequence_number"], n as u64);
    }
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], deltas.as_str());
    assert!(done["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(!body.contains("[DONE]"));
}

#[tokio::test]
async fn a_stream_cut_after_its_first_bytes_ends_failed_with_an_error_event() {
    let up = mock(
        "up",
        Faults {
            cut_after: Some(2),
            chunk_interval_ms: 5,
            ..Faults::default()
        },
    )
    .await;
    let h = Harness::start(&failover_config(&up)).await;
    let (status, _, body) = post(
        &h,
        &json!({"model": "chat", "input": "Say hi.", "stream": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = named_events(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[names.len() - 2..],
        ["response.failed", "error"],
        "{names:?}"
    );
    assert!(!names.contains(&"response.completed"));
    let error = &events.last().unwrap().1;
    assert_eq!(
        error["error"]["code"], "stream_interrupted",
        "the SDKs raise on the nested error"
    );
}

#[tokio::test]
async fn what_cannot_be_served_is_refused_by_name_and_errors_advise_retries() {
    let up = mock(
        "up",
        Faults {
            status: Some(503),
            ..Faults::default()
        },
    )
    .await;
    let h = Harness::start(&failover_config(&up)).await;
    let (status, _, body) = post(
        &h,
        &json!({"model": "chat", "input": "hi", "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!(status, 400);
    let e: Value = serde_json::from_str(&body).unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("previous_response_id"),
        "{body}"
    );
    let (status, headers, body) = post(&h, &json!({"model": "chat", "input": "hi"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(header(&headers, "x-should-retry"), "false");
}

#[tokio::test]
async fn a_model_is_retrieved_by_route_name() {
    let up = mock("up", Faults::default()).await;
    let h = Harness::start(&failover_config(&up)).await;
    let model: Value = serde_json::from_str(&h.get("/v1/models/chat").await).unwrap();
    assert_eq!(
        model,
        json!({"id": "chat", "object": "model", "created": 0, "owned_by": "stilts"})
    );
    let r = h
        .http
        .get(h.url("/v1/models/nope%2Fx"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no route named \\\"nope/x\\\"")
    );
}

#[tokio::test]
async fn a_responses_request_is_served_by_an_anthropic_deployment() {
    let up = mock("claude", Faults::default()).await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n\
         [[routes.chat.deployments]]\nname = \"claude\"\nplugin = \"ANTHROPIC\"\nbase_url = \"{}\"\nmodel = \"claude-haiku-4-5\"\n",
        up.base_url()
    ))
    .await;
    let (status, _, body) = post(
        &h,
        &json!({"model": "chat", "input": "Say hi.", "instructions": "Be brief.", "max_output_tokens": 50}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    let text = r["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("Hello from claude"), "{body}");
    // The Anthropic upstream got its own dialect: the instructions as `system`, the limit as max_tokens.
    let sent = up.last_request().unwrap();
    assert_eq!(sent["system"], "Be brief.", "{sent}");
    assert_eq!(sent["max_tokens"], 50, "{sent}");
    let (status, _, body) = post(
        &h,
        &json!({"model": "chat", "input": "Say hi.", "stream": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = named_events(&body);
    assert_eq!(events.last().unwrap().0, "response.completed", "{body}");
}

#[tokio::test]
async fn a_function_call_from_an_anthropic_deployment_streams_as_a_function_call_item() {
    let up = mock("claude", Faults::default()).await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n\
         [[routes.chat.deployments]]\nname = \"claude\"\nplugin = \"ANTHROPIC\"\nbase_url = \"{}\"\nmodel = \"claude-haiku-4-5\"\n",
        up.base_url()
    ))
    .await;
    let tools = json!([{"type": "function", "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let (status, _, body) = post(
        &h,
        &json!({"model": "chat", "input": "Weather?", "tools": tools, "stream": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = named_events(&body);
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["status"], "completed", "{body}");
    let call = &done["output"][0];
    assert_eq!(call["type"], "function_call", "{body}");
    assert_eq!(call["name"], "weather");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{call}");
    // The Anthropic upstream got its own tool shape.
    let sent = up.last_request().unwrap();
    assert_eq!(sent["tools"][0]["name"], "weather", "{sent}");
    assert!(sent["tools"][0]["input_schema"].is_object(), "{sent}");
}

/// An overload error sent in-band after a 200, before the first token, fails over invisibly,
/// whichever dialect the provider speaks (Anthropic's `event: error`, OpenAI's error chunk).
#[tokio::test]
async fn an_in_band_overload_before_the_first_token_fails_over() {
    for plugin in ["ANTHROPIC", "PLUGIN"] {
        let bad = mock(
            "busy",
            Faults {
                overload_event_after: Some(0),
                ..Faults::default()
            },
        )
        .await;
        let good = mock("good", Faults::default()).await;
        let h = Harness::start(&format!(
            "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n\
             [[routes.chat.deployments]]\nname = \"busy\"\nplugin = \"{plugin}\"\nbase_url = \"{}\"\nmodel = \"m\"\npriority = 0\n\
             [[routes.chat.deployments]]\nname = \"good\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\npriority = 1\n",
            bad.base_url(),
            good.base_url()
        ))
        .await;
        let (status, headers, body) = post(
            &h,
            &json!({"model": "chat", "input": "Say hi.", "stream": true}),
        )
        .await;
        assert_eq!(status, 200, "{plugin}: {body}");
        assert_eq!(header(&headers, "x-provider"), "good", "{plugin}");
        // An overload is a rate limit: the preferred tier is waited out once (a short
        // Retry-After) before the next tier, so two or three attempts, all invisible.
        let attempts: u64 = header(&headers, "x-stilts-attempts").parse().unwrap();
        assert!((2..=3).contains(&attempts), "{plugin}: {attempts}");
        let events = named_events(&body);
        assert_eq!(
            events.last().unwrap().0,
            "response.completed",
            "{plugin}: {body}"
        );
        assert!(
            !events
                .iter()
                .any(|(n, _)| n == "error" || n == "response.failed"),
            "{body}"
        );
        assert_eq!(bad.stats().requests, attempts - 1, "{plugin}");
    }
}
