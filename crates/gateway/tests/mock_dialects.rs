//! The fake upstream speaks each dialect as its API does: the real openai and anthropic plugins
//! (cargo-built shared libraries) read its plain answers, streams and errors, and the gateway
//! fails over, continues a cut stream on the Anthropic dialect, and classifies each error.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};

fn anthropic_route(name: &str, base_url: &str, priority: u32, prefill: bool) -> String {
    format!(
        "[[routes.chat.deployments]]\nname = \"{name}\"\nplugin = \"ANTHROPIC\"\nbase_url = \"{base_url}\"\nmodel = \"claude-haiku-4-5\"\npriority = {priority}\nprefill_continuation = {prefill}\n"
    )
}

fn openai_route(name: &str, base_url: &str, priority: u32) -> String {
    format!(
        "[[routes.chat.deployments]]\nname = \"{name}\"\nplugin = \"PLUGIN\"\nbase_url = \"{base_url}\"\nmodel = \"gpt-4o-mini\"\npriority = {priority}\n"
    )
}

async fn mock(name: &str, faults: Faults) -> MockUpstream {
    let mut cfg = MockConfig::named(name);
    cfg.faults = faults;
    MockUpstream::start_local(cfg).await.unwrap()
}

/// A route with a broken Anthropic primary (`faults`) and a healthy OpenAI fallback.
async fn anthropic_then_openai(faults: Faults) -> (MockUpstream, MockUpstream, Harness) {
    let bad = mock("claude", faults).await;
    let good = mock("gpt", Faults::default()).await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n{}{}",
        anthropic_route("claude", &bad.base_url(), 0, false),
        openai_route("gpt", &good.base_url(), 1)
    ))
    .await;
    (bad, good, h)
}

#[tokio::test]
async fn the_anthropic_dialect_answers_plain_and_streamed_through_the_anthropic_plugin() {
    let up = mock("claude", Faults::default()).await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n{}",
        anthropic_route("claude", &up.base_url(), 0, false)
    ))
    .await;
    let (status, _, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Hello from claude"), "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );
    let (status, _, sse) = h.stream(stream_request("chat")).await;
    assert_eq!(status, 200, "{sse}");
    let (text, done, error) = sse_text(&sse);
    assert!(text.starts_with("Hello from claude!"), "{text}");
    assert_eq!((done, error), (1, None), "{sse}");
    let sent = up.last_request().unwrap();
    assert_eq!(sent["model"], "claude-haiku-4-5");
    assert!(sent["max_tokens"].as_u64().is_some(), "{sent}");
}

#[tokio::test]
async fn anthropic_errors_are_classified_and_fail_over() {
    for (status, kind, class) in [
        (529, "overloaded_error", "rate_limited"),
        (429, "rate_limit_error", "rate_limited"),
        (500, "api_error", "server"),
        (401, "authentication_error", "auth"),
    ] {
        let (_bad, _good, h) = anthropic_then_openai(Faults {
            status: Some(status),
            error_code: Some(kind.to_owned()),
            ..Faults::default()
        })
        .await;
        let (code, headers, body) = h.chat(request("chat")).await;
        assert_eq!(code, 200, "{kind}: {body}");
        assert_eq!(headers["x-provider"], "gpt", "{kind}");
        let status_page: serde_json::Value = serde_json::from_str(&h.get("/status").await).unwrap();
        let claude = &status_page["routes"]["chat"]["providers"][0];
        // A 429 or 529 may be retried once on the same deployment after a short cool-down.
        assert!(
            claude["failures"][class].as_u64().unwrap() >= 1,
            "{kind}: {claude}"
        );
        assert_eq!(
            claude["attempts"], claude["failures"][class],
            "every attempt failed as {class}: {claude}"
        );
    }
}

#[tokio::test]
async fn a_cut_stream_continues_exactly_on_an_anthropic_deployment() {
    // The OpenAI primary cuts after 3 content chunks; the Anthropic fallback continues the answer.
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
        openai_route("gpt", &primary.base_url(), 0),
        anthropic_route("claude", &fallback.base_url(), 1, true)
    ))
    .await;
    let (status, _, sse) = h.stream(stream_request("chat")).await;
    assert_eq!(status, 200, "{sse}");
    assert!(sse.trim_end().ends_with("data: [DONE]"), "{sse}");
    assert!(!sse.contains("\"error\""), "{sse}");
    // The fallback was asked to continue the text already sent, as a final assistant message.
    let sent = fallback.last_request().unwrap();
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "assistant", "{sent}");
    assert_eq!(
        last["content"], "Hello from gpt! ",
        "the prefill is exactly the text already streamed: {sent}"
    );
    let (text, done, error) = sse_text(&sse);
    assert_eq!(done, 1, "{sse}");
    assert!(error.is_none(), "{sse}");
    assert!(
        text.starts_with("Hello from gpt! Hello from claude!"),
        "the answer goes on where the cut left it: {text}"
    );
}

#[tokio::test]
async fn a_malformed_anthropic_event_before_the_first_token_fails_over() {
    let (_bad, _good, h) = anthropic_then_openai(Faults {
        malformed_after: Some(0),
        ..Faults::default()
    })
    .await;
    let (status, headers, sse) = h.stream(stream_request("chat")).await;
    assert_eq!(status, 200, "{sse}");
    assert_eq!(headers["x-provider"], "gpt", "{sse}");
    let (text, _, error) = sse_text(&sse);
    assert!(text.starts_with("Hello from gpt"), "{text}");
    assert!(error.is_none(), "{sse}");
}

#[tokio::test]
async fn n_choices_come_back_plain_and_streamed_one_choice_a_chunk() {
    let up = mock("gpt", Faults::default()).await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n{}",
        openai_route("gpt", &up.base_url(), 0)
    ))
    .await;
    let mut ask = request("chat");
    ask["n"] = serde_json::json!(3);
    let (status, _, body) = h.chat(ask.clone()).await;
    assert_eq!(status, 200, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{body}");
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i, "{body}");
        assert!(
            choice["message"]["content"]
                .as_str()
                .unwrap()
                .contains("Hello from gpt")
        );
    }
    let plain_text = choices[0]["message"]["content"].as_str().unwrap();
    ask["stream"] = serde_json::json!(true);
    let (status, _, sse) = h.stream(ask).await;
    assert_eq!(status, 200, "{sse}");
    let mut texts = vec![String::new(); 3];
    let mut finished = [false; 3];
    for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(chunk) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let i = choice["index"].as_u64().unwrap() as usize;
            texts[i] += choice["delta"]["content"].as_str().unwrap_or("");
            finished[i] |= choice["finish_reason"] == "stop";
        }
    }
    assert!(texts.iter().all(|t| t == plain_text), "{texts:?}");
    assert_eq!(finished, [true; 3]);
}
