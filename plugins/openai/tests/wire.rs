//! The OpenAI plugin on recorded wire fixtures (OpenAI, Ollama, vLLM, llama.cpp), through its rlib.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};
use stilts_plugin::canonical::{ChatRequest, Content, FinishReason, Message, Role};
use stilts_plugin::testing::{ErrorCase, run_transcript};
use stilts_plugin::{ApiKey, DeploymentConfig, ErrorClass, PluginError, StreamEnd, Translator};
use stilts_plugin_openai::OpenAi;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn cfg(base: &str) -> DeploymentConfig {
    DeploymentConfig {
        base_url: base.to_owned(),
        model: "gpt-4o-mini".to_owned(),
        api_key: Some(ApiKey::new("sk-test")),
        extra_headers: vec![("x-team".to_owned(), "search".to_owned())],
        options: Default::default(),
    }
}

fn header<'a>(h: &'a [(String, String)], n: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(n))
        .map(|(_, v)| v.as_str())
}

#[test]
fn request_is_a_pass_through_with_model_key_and_headers() {
    let raw = fixture("request_basic.json");
    let req: ChatRequest = serde_json::from_slice(&raw).unwrap();
    let http = OpenAi.build_request(&req, &cfg("")).unwrap();
    assert_eq!(http.method, "POST");
    assert_eq!(http.url, "https://api.openai.com/v1/chat/completions");
    assert_eq!(
        header(&http.headers, "authorization"),
        Some("Bearer sk-test")
    );
    assert_eq!(header(&http.headers, "x-team"), Some("search"));
    let body: Value = serde_json::from_slice(&http.body).unwrap();
    let mut expected: Value = serde_json::from_slice(&raw).unwrap();
    expected["model"] = json!("gpt-4o-mini");
    assert_eq!(body, expected, "every field, known or not, passes through");
}

#[test]
fn streaming_request_asks_for_usage_and_keeps_tools_and_images() {
    let req: ChatRequest = serde_json::from_slice(&fixture("request_tools.json")).unwrap();
    let http = OpenAi
        .build_request(&req, &cfg("http://localhost:11434/v1/"))
        .unwrap();
    assert_eq!(http.url, "http://localhost:11434/v1/chat/completions");
    let body: Value = serde_json::from_slice(&http.body).unwrap();
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["tools"][0]["function"]["name"], "get_current_weather");
    assert_eq!(
        body["messages"][0]["content"][1]["image_url"]["detail"],
        "low"
    );
    assert_eq!(body["messages"][2]["tool_call_id"], "call_abc123");

    let mut c = cfg("http://vllm:8000/v1");
    c.options.insert("include_usage".into(), json!(false));
    c.api_key = None;
    let http = OpenAi.build_request(&req, &c).unwrap();
    let body: Value = serde_json::from_slice(&http.body).unwrap();
    assert!(body.get("stream_options").is_none());
    assert!(header(&http.headers, "authorization").is_none());
}

#[test]
fn responses_pass_through_with_usage_and_finish_reason() {
    for (file, finish, prompt, completion, model) in [
        (
            "response_basic.json",
            FinishReason::Stop,
            19,
            10,
            "gpt-4.1-2025-04-14",
        ),
        (
            "response_tool_calls.json",
            FinishReason::ToolCalls,
            82,
            17,
            "gpt-4o-mini",
        ),
        (
            "ollama_response.json",
            FinishReason::Stop,
            12,
            18,
            "qwen3:0.6b",
        ),
        (
            "llamacpp_response.json",
            FinishReason::Length,
            10,
            4,
            "gpt-3.5-turbo",
        ),
    ] {
        let body = fixture(file);
        let p = OpenAi.parse_response(200, &[], &body).unwrap();
        assert_eq!(p.finish_reason, Some(finish), "{file}");
        let u = p.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens),
            (prompt, completion),
            "{file}"
        );
        assert_eq!(p.model.as_deref(), Some(model));
        assert_eq!(p.body, body, "{file}: byte-for-byte pass-through");
        // And it is valid canonical JSON.
        serde_json::from_slice::<stilts_plugin::canonical::ChatResponse>(&p.body).unwrap();
    }
}

#[test]
fn error_in_a_200_body_is_an_upstream_error() {
    let body = br#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#;
    match OpenAi.parse_response(200, &[], body) {
        Err(PluginError::Upstream(e)) => assert_eq!(e.class, ErrorClass::Server),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        OpenAi.parse_response(200, &[], b"<html>"),
        Err(PluginError::BadInput(_))
    ));
    assert!(matches!(
        OpenAi.parse_response(200, &[], b"{\"id\":1}"),
        Err(PluginError::BadInput(_))
    ));
}

#[test]
fn every_recorded_error_shape_is_classified() {
    let cases: Vec<ErrorCase> = serde_json::from_slice(&fixture("errors.json")).unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let info = OpenAi.classify_error(c.status, &c.headers, c.body.as_bytes());
        assert_eq!(info.class.as_str(), c.class, "{}: {info:?}", c.name);
        assert_eq!(info.retry_after_ms, c.retry_after_ms, "{}", c.name);
        if c.provider_code.is_some() {
            assert_eq!(info.provider_code, c.provider_code, "{}", c.name);
        }
        assert!(!info.message.is_empty(), "{}", c.name);
    }
}

#[test]
fn full_stream_ends_clean_with_usage() {
    let t = run_transcript(&OpenAi, &fixture("stream_basic.sse"));
    assert_eq!(t.text, "Hello! How can I help?");
    assert_eq!(t.finish_reason.as_deref(), Some("stop"));
    assert_eq!(t.usage.as_ref().map(|u| u.total_tokens), Some(16));
    assert_eq!(t.end, StreamEnd::Clean);
    assert_eq!(t.ended_at_event, Some(5), "[DONE] is the sixth event");
    assert_eq!(t.chunks.len(), 5);
}

#[test]
fn tool_call_fragments_reassemble() {
    let t = run_transcript(&OpenAi, &fixture("stream_tool_calls.sse"));
    assert_eq!(t.tool_calls.len(), 1);
    assert_eq!(t.tool_calls[0].id, "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_eq!(t.tool_calls[0].function.name, "get_current_weather");
    let args: Value = serde_json::from_str(&t.tool_calls[0].function.arguments).unwrap();
    assert_eq!(args, json!({"location": "Boston, MA"}));
    assert_eq!(t.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(t.end, StreamEnd::Clean);
}

#[test]
fn finish_then_close_without_done_is_clean() {
    let t = run_transcript(&OpenAi, &fixture("stream_no_done.sse"));
    assert_eq!(t.end, StreamEnd::Clean);
    assert_eq!(t.ended_at_event, None, "ended by close, not by an event");
    assert_eq!(t.usage.as_ref().map(|u| u.completion_tokens), Some(7));
}

#[test]
fn stream_cut_before_finish_is_cut() {
    let t = run_transcript(&OpenAi, &fixture("stream_cut.sse"));
    assert_eq!(t.text, "Hello");
    assert!(matches!(t.end, StreamEnd::Cut { .. }), "{:?}", t.end);
}

#[test]
fn midstream_error_payload_ends_the_stream_with_its_class() {
    let t = run_transcript(&OpenAi, &fixture("stream_midstream_error.sse"));
    assert_eq!(t.text, "The answer is");
    match t.end {
        StreamEnd::Error { error } => {
            assert_eq!(error.class, ErrorClass::Server);
            assert_eq!(error.provider_code.as_deref(), Some("server_error"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_event_data_is_a_cut_never_dropped_and_unknown_events_are_ignored() {
    let mut sse = fixture("stream_basic.sse");
    // A corrupted event in the middle of the stream, and an unknown named event before it.
    let mid = b"event: keepalive\ndata: whatever\n\ndata: {\"id\":\"chatcmpl-123\",\"choices\":[{\"delta\":{\"content\":\"lost te\n\n";
    let pos = sse.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    sse.splice(pos..pos, mid.iter().copied());
    let t = run_transcript(&OpenAi, &sse);
    assert_eq!(t.ended_at_event, Some(2), "cut exactly at the bad event");
    match t.end {
        StreamEnd::Cut { reason } => assert!(reason.contains("not valid JSON"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.text, "", "nothing after the cut is presented");
}

#[test]
fn done_before_any_finish_reason_is_cut() {
    let t = run_transcript(&OpenAi, b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n");
    assert!(matches!(t.end, StreamEnd::Cut { .. }));
}

#[test]
fn compatible_servers_streams() {
    let t = run_transcript(&OpenAi, &fixture("ollama_stream.sse"));
    assert_eq!(t.text, "Hi there");
    assert_eq!(t.end, StreamEnd::Clean);
    assert_eq!(t.usage.as_ref().map(|u| u.total_tokens), Some(15));
    assert_eq!(
        t.chunks[0]["choices"][0]["delta"]["reasoning"], "Greet",
        "extensions pass through"
    );

    let t = run_transcript(&OpenAi, &fixture("vllm_stream_continuous_usage.sse"));
    assert_eq!(t.text, "Paris.");
    assert_eq!(
        t.usage.as_ref().map(|u| u.completion_tokens),
        Some(2),
        "continuous usage: last wins"
    );
    assert_eq!(t.end, StreamEnd::Clean);
}

fn arb_text() -> impl Strategy<Value = String> {
    "[ -~éü\n\"\\\\]{0,40}"
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![
            Just(Role::System),
            Just(Role::User),
            Just(Role::Assistant),
            Just(Role::Developer)
        ],
        arb_text(),
    )
        .prop_map(|(r, t)| Message::text(r, t))
}

proptest! {
    #[test]
    fn request_round_trips(msgs in prop::collection::vec(arb_message(), 1..6), max in prop::option::of(1u32..100_000),
                           temp in prop::option::of(0.0f64..2.0), stream in any::<bool>(), seed in prop::option::of(any::<i32>())) {
        let mut req = ChatRequest { model: "route".into(), messages: msgs, max_tokens: max, temperature: temp,
                                    stream: Some(stream), ..Default::default() };
        if let Some(s) = seed { req.extra.insert("seed".into(), json!(s)); }
        let http = OpenAi.build_request(&req, &cfg("")).unwrap();
        let back: ChatRequest = serde_json::from_slice(&http.body).unwrap();
        let mut expected = req.clone();
        expected.model = "gpt-4o-mini".into();
        if stream { expected.stream_options = back.stream_options.clone(); }
        prop_assert_eq!(back, expected);
    }

    #[test]
    fn stream_parser_never_panics(events in prop::collection::vec((prop::option::of("[a-z_]{1,12}"), prop::collection::vec(any::<u8>(), 0..200)), 0..20)) {
        let mut d = stilts_plugin::sdk::StreamDriver::new(&OpenAi);
        for (name, data) in &events { let _ = d.event(name.as_deref(), data); }
        let _ = d.close();
    }

    #[test]
    fn classify_never_panics(status in 0u16..1000, body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = OpenAi.classify_error(status, &[], &body);
        let _ = OpenAi.parse_response(status, &[], &body);
    }
}

#[test]
fn text_content_helper() {
    let m = Message::text(Role::User, "x");
    assert!(matches!(m.content, Some(Content::Text(_))));
}
