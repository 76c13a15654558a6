//! The Anthropic plugin on recorded Messages API fixtures, through its rlib, plus round-trip properties.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};
use stilts_plugin::canonical::{
    ChatRequest, ChatResponse, FinishReason, FunctionCall, Message, Role, ToolCall,
};
use stilts_plugin::testing::{ErrorCase, run_transcript};
use stilts_plugin::{ApiKey, DeploymentConfig, ErrorClass, PluginError, StreamEnd, Translator};
use stilts_plugin_anthropic::Anthropic;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn cfg() -> DeploymentConfig {
    let mut c = DeploymentConfig {
        base_url: String::new(),
        model: "claude-sonnet-4-5".to_owned(),
        api_key: Some(ApiKey::new("sk-ant-test")),
        extra_headers: vec![],
        options: Default::default(),
    };
    c.options.insert("default_max_tokens".into(), json!(1024));
    c
}

fn header<'a>(h: &'a [(String, String)], n: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(n))
        .map(|(_, v)| v.as_str())
}

#[test]
fn request_translation_matches_the_recorded_body() {
    let req: ChatRequest = serde_json::from_slice(&fixture("request_tools.json")).unwrap();
    let http = Anthropic.build_request(&req, &cfg()).unwrap();
    assert_eq!(http.url, "https://api.anthropic.com/v1/messages");
    assert_eq!(header(&http.headers, "x-api-key"), Some("sk-ant-test"));
    assert_eq!(
        header(&http.headers, "anthropic-version"),
        Some("2023-06-01")
    );
    assert!(header(&http.headers, "authorization").is_none());
    let body: Value = serde_json::from_slice(&http.body).unwrap();
    let expected: Value = serde_json::from_slice(&fixture("request_tools.expected.json")).unwrap();
    assert_eq!(body, expected);
}

#[test]
fn max_tokens_is_always_sent() {
    let req: ChatRequest =
        serde_json::from_value(json!({"model":"x","messages":[{"role":"user","content":"hi"}]}))
            .unwrap();
    let mut c = cfg();
    c.options.clear();
    let body: Value =
        serde_json::from_slice(&Anthropic.build_request(&req, &c).unwrap().body).unwrap();
    assert_eq!(body["max_tokens"], 4096);
    let req: ChatRequest = serde_json::from_value(
        json!({"model":"x","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":7}),
    )
    .unwrap();
    let body: Value =
        serde_json::from_slice(&Anthropic.build_request(&req, &c).unwrap().body).unwrap();
    assert_eq!(body["max_tokens"], 7);
    assert!(body.get("system").is_none());
}

#[test]
fn unsupported_input_is_refused_not_dropped() {
    let req: ChatRequest =
        serde_json::from_value(json!({"model":"x","messages":[{"role":"user","content":[
        {"type":"input_audio","input_audio":{"data":"AAA","format":"wav"}}]}]}))
        .unwrap();
    assert!(matches!(
        Anthropic.build_request(&req, &cfg()),
        Err(PluginError::BadInput(_))
    ));
    let req: ChatRequest = serde_json::from_value(
        json!({"model":"x","messages":[{"role":"system","content":"only system"}]}),
    )
    .unwrap();
    assert!(matches!(
        Anthropic.build_request(&req, &cfg()),
        Err(PluginError::BadInput(_))
    ));
}

#[test]
fn fields_the_messages_api_cannot_honour_are_refused_by_name() {
    for (field, value) in [
        ("response_format", json!({"type": "json_object"})),
        ("reasoning_effort", json!("low")),
        ("verbosity", json!("low")),
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("frequency_penalty", json!(0.5)),
    ] {
        let mut req = json!({"model":"x","messages":[{"role":"user","content":"hi"}]});
        req[field] = value;
        let req: ChatRequest = serde_json::from_value(req).unwrap();
        match Anthropic.build_request(&req, &cfg()) {
            Err(PluginError::BadInput(m)) => assert!(m.starts_with(field), "{field}: {m}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Harmless ones pass, and parallel_tool_calls: false is carried.
    let req: ChatRequest = serde_json::from_value(json!({"model":"x","messages":[{"role":"user","content":"hi"}],
        "n": 1, "store": false, "seed": 3, "response_format": {"type": "text"}, "parallel_tool_calls": false,
        "tools": [{"type":"function","function":{"name":"f"}}]}))
    .unwrap();
    let http = Anthropic.build_request(&req, &cfg()).unwrap();
    let body: Value = serde_json::from_slice(&http.body).unwrap();
    assert_eq!(
        body["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert!(body.get("n").is_none() && body.get("seed").is_none());
}

#[test]
fn responses_become_canonical() {
    let p = Anthropic
        .parse_response(200, &[], &fixture("response_basic.json"))
        .unwrap();
    let r: ChatResponse = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(r.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        r.choices[0].message.text_content(),
        "Hi! My name is Claude."
    );
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    let u = p.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (2195, 503, 2698),
        "cache reads count as input"
    );
    assert_eq!(u.prompt_tokens_details, Some(json!({"cached_tokens": 100})));

    let p = Anthropic
        .parse_response(200, &[], &fixture("response_tool_use.json"))
        .unwrap();
    assert_eq!(p.finish_reason, Some(FinishReason::ToolCalls));
    let r: ChatResponse = serde_json::from_slice(&p.body).unwrap();
    let calls = r.choices[0].message.tool_calls.clone().unwrap();
    assert_eq!(calls[0].id, "toolu_01A09q90qw90lq917835lq9");
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
}

#[test]
fn stop_reasons_map() {
    use stilts_plugin_anthropic::finish_reason as f;
    assert_eq!(f("end_turn"), FinishReason::Stop);
    assert_eq!(f("stop_sequence"), FinishReason::Stop);
    assert_eq!(f("max_tokens"), FinishReason::Length);
    assert_eq!(f("model_context_window_exceeded"), FinishReason::Length);
    assert_eq!(f("tool_use"), FinishReason::ToolCalls);
    assert_eq!(f("refusal"), FinishReason::ContentFilter);
    assert_eq!(f("pause_turn"), FinishReason::Stop);
}

#[test]
fn every_recorded_error_shape_is_classified() {
    let cases: Vec<ErrorCase> = serde_json::from_slice(&fixture("errors.json")).unwrap();
    for c in cases {
        let info = Anthropic.classify_error(c.status, &c.headers, c.body.as_bytes());
        assert_eq!(info.class.as_str(), c.class, "{}: {info:?}", c.name);
        assert_eq!(info.retry_after_ms, c.retry_after_ms, "{}", c.name);
        assert_eq!(info.provider_code, c.provider_code, "{}", c.name);
        assert!(!info.message.is_empty());
    }
    let err = fixture("errors.json");
    let cases: Vec<ErrorCase> = serde_json::from_slice(&err).unwrap();
    let overloaded = cases.iter().find(|c| c.status == 529).unwrap();
    match Anthropic.parse_response(200, &[], overloaded.body.as_bytes()) {
        Err(PluginError::Upstream(e)) => assert_eq!(e.class, ErrorClass::RateLimited),
        other => panic!("{other:?}"),
    }
}

#[test]
fn basic_stream() {
    let t = run_transcript(&Anthropic, &fixture("stream_basic.sse"));
    assert_eq!(t.text, "Hello!");
    assert_eq!(t.finish_reason.as_deref(), Some("stop"));
    assert_eq!(t.end, StreamEnd::Clean);
    assert_eq!(t.ended_at_event, Some(7), "message_stop ends it");
    let u = t.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (25, 15));
    assert_eq!(t.chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(t.chunks[0]["id"], "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
    assert_eq!(
        t.chunks.last().unwrap()["choices"],
        json!([]),
        "final usage chunk like OpenAI's"
    );
}

#[test]
fn tool_use_stream() {
    let t = run_transcript(&Anthropic, &fixture("stream_tool_use.sse"));
    assert_eq!(
        t.text,
        "Okay, let's check the weather for San Francisco, CA:"
    );
    assert_eq!(t.tool_calls.len(), 1);
    assert_eq!(t.tool_calls[0].id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(t.tool_calls[0].function.name, "get_weather");
    let args: Value = serde_json::from_str(&t.tool_calls[0].function.arguments).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    assert_eq!(t.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(t.end, StreamEnd::Clean);
    assert_eq!(t.usage.unwrap().completion_tokens, 89);
}

#[test]
fn stop_reason_then_close_is_clean_and_a_cut_is_cut() {
    let t = run_transcript(&Anthropic, &fixture("stream_no_stop.sse"));
    assert_eq!(t.end, StreamEnd::Clean);
    assert_eq!(t.ended_at_event, None);
    let t = run_transcript(&Anthropic, &fixture("stream_cut.sse"));
    assert_eq!(t.text, "Hello");
    assert!(matches!(t.end, StreamEnd::Cut { .. }), "{:?}", t.end);
}

#[test]
fn overloaded_error_event_ends_the_stream_as_rate_limited() {
    let t = run_transcript(&Anthropic, &fixture("stream_overloaded.sse"));
    assert_eq!(t.text, "Once upon");
    match t.end {
        StreamEnd::Error { error } => {
            assert_eq!(error.class, ErrorClass::RateLimited);
            assert_eq!(error.provider_code.as_deref(), Some("overloaded_error"));
            assert_eq!(error.message, "Overloaded");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_events_are_ignored_and_bad_data_cuts() {
    let mut sse = b"event: future_event\ndata: {\"type\":\"future_event\",\"x\":1}\n\n".to_vec();
    sse.extend(fixture("stream_basic.sse"));
    assert_eq!(run_transcript(&Anthropic, &sse).end, StreamEnd::Clean);
    let mut sse = fixture("stream_cut.sse");
    sse.extend(b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_de\n\n");
    let t = run_transcript(&Anthropic, &sse);
    assert_eq!(t.ended_at_event, Some(4));
    assert!(matches!(t.end, StreamEnd::Cut { ref reason } if reason.contains("not valid JSON")));
}

// ---- round trips -----------------------------------------------------------------------------------

/// The inverse translation (Anthropic request → canonical), written independently for the property.
fn decode_request(body: &Value) -> Vec<Message> {
    let mut out = Vec::new();
    if let Some(s) = body.get("system").and_then(Value::as_str) {
        out.push(Message::text(Role::System, s));
    }
    for m in body["messages"].as_array().unwrap() {
        let role = m["role"].as_str().unwrap();
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(s) => vec![json!({"type":"text","text":s})],
            Value::Array(a) => a.clone(),
            _ => panic!(),
        };
        if role == "user" && blocks.iter().all(|b| b["type"] == "tool_result") {
            for b in blocks {
                let mut msg = Message::text(Role::Tool, b["content"].as_str().unwrap());
                msg.tool_call_id = Some(b["tool_use_id"].as_str().unwrap().to_owned());
                out.push(msg);
            }
            continue;
        }
        let text: String = blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .map(|b| b["text"].as_str().unwrap())
            .collect();
        let calls: Vec<ToolCall> = blocks
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .map(|b| ToolCall {
                id: b["id"].as_str().unwrap().to_owned(),
                kind: "function".into(),
                function: FunctionCall {
                    name: b["name"].as_str().unwrap().to_owned(),
                    arguments: b["input"].to_string(),
                },
            })
            .collect();
        let mut msg = Message::text(
            if role == "user" {
                Role::User
            } else {
                Role::Assistant
            },
            text,
        );
        if !calls.is_empty() {
            msg.tool_calls = Some(calls);
        }
        out.push(msg);
    }
    out
}

fn arb_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.!?éü\"\\\\]{1,30}"
}

fn arb_args() -> impl Strategy<Value = String> {
    prop::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            any::<i32>().prop_map(|i| json!(i)),
            arb_text().prop_map(|s| json!(s))
        ],
        0..4,
    )
    .prop_map(|m| serde_json::to_string(&m).unwrap())
}

/// A conversation Anthropic can express: optional system, then user/assistant turns, where an assistant
/// turn may call tools and is then followed by one tool result per call.
fn arb_conversation() -> impl Strategy<Value = Vec<Message>> {
    let turn = (
        arb_text(),
        arb_text(),
        prop::collection::vec(("[a-z_]{1,10}", arb_args(), arb_text()), 0..3),
    );
    (
        prop::option::of(arb_text()),
        prop::collection::vec(turn, 1..4),
    )
        .prop_map(|(system, turns)| {
            let mut msgs = Vec::new();
            if let Some(s) = system {
                msgs.push(Message::text(Role::System, s));
            }
            for (ti, (user, answer, calls)) in turns.into_iter().enumerate() {
                msgs.push(Message::text(Role::User, user));
                let mut a = Message::text(Role::Assistant, answer);
                if !calls.is_empty() {
                    a.tool_calls = Some(
                        calls
                            .iter()
                            .enumerate()
                            .map(|(i, (name, args, _))| ToolCall {
                                id: format!("toolu_{ti}_{i}"),
                                kind: "function".into(),
                                function: FunctionCall {
                                    name: name.clone(),
                                    arguments: args.clone(),
                                },
                            })
                            .collect(),
                    );
                }
                msgs.push(a);
                for (i, (_, _, result)) in calls.iter().enumerate() {
                    let mut r = Message::text(Role::Tool, result.clone());
                    r.tool_call_id = Some(format!("toolu_{ti}_{i}"));
                    msgs.push(r);
                }
            }
            msgs
        })
}

fn normalise_args(msgs: &mut [Message]) {
    for m in msgs {
        for c in m.tool_calls.iter_mut().flatten() {
            let v: Value = serde_json::from_str(&c.function.arguments).unwrap();
            c.function.arguments = v.to_string();
        }
    }
}

fn encode_response(text: &str, calls: &[ToolCall], stop: &str, input: u64, output: u64) -> Value {
    let mut content = vec![json!({"type":"text","text":text})];
    for c in calls {
        let input: Value = serde_json::from_str(&c.function.arguments).unwrap();
        content.push(json!({"type":"tool_use","id":c.id,"name":c.function.name,"input":input}));
    }
    json!({"id":"msg_x","type":"message","role":"assistant","model":"claude-x","content":content,
           "stop_reason":stop,"stop_sequence":null,"usage":{"input_tokens":input,"output_tokens":output}})
}

fn encode_stream(text_parts: &[String], calls: &[ToolCall], stop: &str) -> Vec<u8> {
    let ev = |name: &str, data: Value, out: &mut Vec<u8>| {
        out.extend(format!("event: {name}\ndata: {data}\n\n").into_bytes());
    };
    let mut out = Vec::new();
    ev(
        "message_start",
        json!({"type":"message_start","message":{"id":"msg_s","type":"message","role":"assistant","content":[],"model":"claude-x","usage":{"input_tokens":3,"output_tokens":1}}}),
        &mut out,
    );
    ev(
        "content_block_start",
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        &mut out,
    );
    for t in text_parts {
        ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":t}}),
            &mut out,
        );
        ev("ping", json!({"type":"ping"}), &mut out);
    }
    ev(
        "content_block_stop",
        json!({"type":"content_block_stop","index":0}),
        &mut out,
    );
    for (i, c) in calls.iter().enumerate() {
        let idx = i + 1;
        ev(
            "content_block_start",
            json!({"type":"content_block_start","index":idx,"content_block":{"type":"tool_use","id":c.id,"name":c.function.name,"input":{}}}),
            &mut out,
        );
        let args = &c.function.arguments;
        let mid = args
            .char_indices()
            .nth(args.chars().count() / 2)
            .map(|(i, _)| i)
            .unwrap_or(0);
        for part in [&args[..mid], &args[mid..]] {
            ev(
                "content_block_delta",
                json!({"type":"content_block_delta","index":idx,"delta":{"type":"input_json_delta","partial_json":part}}),
                &mut out,
            );
        }
        ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":idx}),
            &mut out,
        );
    }
    ev(
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":stop,"stop_sequence":null},"usage":{"output_tokens":9}}),
        &mut out,
    );
    ev("message_stop", json!({"type":"message_stop"}), &mut out);
    out
}

fn arb_calls() -> impl Strategy<Value = Vec<ToolCall>> {
    prop::collection::vec(("[a-z_]{1,10}", arb_args()), 0..3).prop_map(|cs| {
        cs.into_iter()
            .enumerate()
            .map(|(i, (name, arguments))| ToolCall {
                id: format!("toolu_{i}"),
                kind: "function".into(),
                function: FunctionCall { name, arguments },
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn request_round_trips(msgs in arb_conversation()) {
        let req = ChatRequest { model: "r".into(), messages: msgs.clone(), ..Default::default() };
        let http = Anthropic.build_request(&req, &cfg()).unwrap();
        let body: Value = serde_json::from_slice(&http.body).unwrap();
        let mut back = decode_request(&body);
        let mut expected = msgs;
        normalise_args(&mut back);
        normalise_args(&mut expected);
        prop_assert_eq!(back, expected);
    }

    #[test]
    fn response_round_trips(text in arb_text(), calls in arb_calls(), stop in prop_oneof![Just("end_turn"), Just("max_tokens"), Just("refusal")],
                            input in 0u64..100_000, output in 0u64..10_000) {
        let stop = if calls.is_empty() { stop } else { "tool_use" };
        let body = serde_json::to_vec(&encode_response(&text, &calls, stop, input, output)).unwrap();
        let p = Anthropic.parse_response(200, &[], &body).unwrap();
        let r: ChatResponse = serde_json::from_slice(&p.body).unwrap();
        let m = &r.choices[0].message;
        prop_assert_eq!(m.text_content(), text);
        let mut got = m.tool_calls.clone().unwrap_or_default();
        let mut want = calls;
        for c in got.iter_mut().chain(want.iter_mut()) {
            c.function.arguments = serde_json::from_str::<Value>(&c.function.arguments).unwrap().to_string();
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(r.choices[0].finish_reason, Some(stilts_plugin_anthropic::finish_reason(stop)));
        let u = p.usage.unwrap();
        prop_assert_eq!((u.prompt_tokens, u.completion_tokens), (input, output));
    }

    #[test]
    fn stream_round_trips(parts in prop::collection::vec(arb_text(), 1..5), calls in arb_calls()) {
        let stop = if calls.is_empty() { "end_turn" } else { "tool_use" };
        let t = run_transcript(&Anthropic, &encode_stream(&parts, &calls, stop));
        prop_assert_eq!(&t.end, &StreamEnd::Clean);
        prop_assert_eq!(t.text, parts.concat());
        prop_assert_eq!(t.tool_calls, calls);
        prop_assert_eq!(t.finish_reason.as_deref(), Some(if stop == "tool_use" { "tool_calls" } else { "stop" }));
    }

    #[test]
    fn stream_parser_never_panics(events in prop::collection::vec((prop::option::of("[a-z_]{1,20}"), prop::collection::vec(any::<u8>(), 0..200)), 0..20)) {
        let mut d = stilts_plugin::sdk::StreamDriver::new(&Anthropic);
        for (name, data) in &events { let _ = d.event(name.as_deref(), data); }
        let _ = d.close();
    }

    #[test]
    fn stream_parser_never_panics_on_plausible_json(events in prop::collection::vec(
        (prop_oneof![Just("message_start"), Just("content_block_start"), Just("content_block_delta"), Just("message_delta"), Just("message_stop"), Just("error")],
         any::<Option<u8>>(), prop_oneof![Just(json!(null)), Just(json!({})), Just(json!({"type":"tool_use"})), Just(json!({"type":"input_json_delta","partial_json":"{"})), Just(json!({"type":"text_delta"}))]), 0..12)) {
        let mut d = stilts_plugin::sdk::StreamDriver::new(&Anthropic);
        for (kind, index, inner) in &events {
            let data = json!({"type": kind, "index": index, "delta": inner, "content_block": inner, "message": inner, "usage": inner});
            let _ = d.event(Some(kind), data.to_string().as_bytes());
        }
        let _ = d.close();
    }

    #[test]
    fn classify_never_panics(status in 0u16..1000, body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Anthropic.classify_error(status, &[], &body);
        let _ = Anthropic.parse_response(status, &[], &body);
    }
}
