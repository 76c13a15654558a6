//! The Gemini plugin on recorded generateContent / streamGenerateContent fixtures, through its rlib, plus
//! round-trip properties.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};
use stilts_plugin::canonical::{
    ChatRequest, ChatResponse, FinishReason, FunctionCall, Message, Role, ToolCall,
};
use stilts_plugin::testing::{ErrorCase, run_transcript};
use stilts_plugin::{ApiKey, DeploymentConfig, ErrorClass, PluginError, StreamEnd, Translator};
use stilts_plugin_gemini::Gemini;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn cfg() -> DeploymentConfig {
    DeploymentConfig {
        base_url: String::new(),
        model: "models/gemini-2.0-flash".to_owned(),
        api_key: Some(ApiKey::new("AIza-test")),
        extra_headers: vec![],
        options: Default::default(),
    }
}

fn header<'a>(h: &'a [(String, String)], n: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(n))
        .map(|(_, v)| v.as_str())
}

#[test]
fn request_translation_matches_the_recorded_body() {
    let req: ChatRequest = serde_json::from_slice(&fixture("request_tools.json")).unwrap();
    let http = Gemini.build_request(&req, &cfg()).unwrap();
    assert_eq!(
        http.url,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(header(&http.headers, "x-goog-api-key"), Some("AIza-test"));
    assert!(!http.url.contains("AIza"), "the key never goes in the URL");
    let body: Value = serde_json::from_slice(&http.body).unwrap();
    let expected: Value = serde_json::from_slice(&fixture("request_tools.expected.json")).unwrap();
    assert_eq!(body, expected);

    let mut req = req;
    req.stream = None;
    let http = Gemini.build_request(&req, &cfg()).unwrap();
    assert!(
        http.url
            .ends_with("/models/gemini-2.0-flash:generateContent")
    );
}

#[test]
fn fields_gemini_cannot_honour_are_refused_by_name_and_the_others_carried() {
    for (field, value) in [
        ("reasoning_effort", json!("low")),
        ("verbosity", json!("low")),
        ("logprobs", json!(true)),
        ("logit_bias", json!({"50256": -100})),
        ("parallel_tool_calls", json!(false)),
    ] {
        let mut req = json!({"model":"x","messages":[{"role":"user","content":"hi"}]});
        req[field] = value;
        let req: ChatRequest = serde_json::from_value(req).unwrap();
        match Gemini.build_request(&req, &cfg()) {
            Err(PluginError::BadInput(m)) => assert!(m.starts_with(field), "{field}: {m}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    let req: ChatRequest = serde_json::from_value(json!({"model":"x","messages":[{"role":"user","content":"hi"}],
        "presence_penalty": 0.5, "store": false, "response_format": {"type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}))
    .unwrap();
    let http = Gemini.build_request(&req, &cfg()).unwrap();
    let body: Value = serde_json::from_slice(&http.body).unwrap();
    let generation = &body["generationConfig"];
    assert_eq!(generation["presencePenalty"], 0.5);
    assert_eq!(generation["responseMimeType"], "application/json");
    assert_eq!(
        generation["responseJsonSchema"]["properties"]["a"]["type"],
        "string"
    );
}

#[test]
fn bad_requests_are_refused() {
    let orphan: ChatRequest = serde_json::from_value(json!({"model":"m","messages":[
        {"role":"user","content":"x"},{"role":"tool","tool_call_id":"nope","content":"r"}]}))
    .unwrap();
    assert!(matches!(
        Gemini.build_request(&orphan, &cfg()),
        Err(PluginError::BadInput(_))
    ));
    let mut c = cfg();
    c.model = "gemini:evil?key=x".into();
    let ok: ChatRequest =
        serde_json::from_value(json!({"model":"m","messages":[{"role":"user","content":"x"}]}))
            .unwrap();
    assert!(matches!(
        Gemini.build_request(&ok, &c),
        Err(PluginError::BadInput(_))
    ));
}

#[test]
fn responses_become_canonical() {
    let p = Gemini
        .parse_response(200, &[], &fixture("response_basic.json"))
        .unwrap();
    let r: ChatResponse = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(r.id, "IzPraKqpKdHSjMcPt_S46Ac");
    assert_eq!(r.model, "gemini-2.5-flash");
    assert!(
        r.choices[0]
            .message
            .text_content()
            .starts_with("In a quiet corner")
    );
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    let u = p.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (8, 54, 62),
        "thoughts count as completion"
    );
    assert_eq!(
        u.completion_tokens_details,
        Some(json!({"reasoning_tokens": 30}))
    );

    let p = Gemini
        .parse_response(200, &[], &fixture("response_function_call.json"))
        .unwrap();
    assert_eq!(p.finish_reason, Some(FinishReason::ToolCalls));
    let r: ChatResponse = serde_json::from_slice(&p.body).unwrap();
    let calls = r.choices[0].message.tool_calls.clone().unwrap();
    assert_eq!(calls[0].id, "call_0");
    assert_eq!(calls[0].function.name, "find_theaters");
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(
        args,
        json!({"location":"Mountain View, CA","movie":"Barbie"})
    );
    assert!(r.choices[0].message.content.is_none());

    match Gemini.parse_response(200, &[], &fixture("response_blocked.json")) {
        Err(PluginError::Upstream(e)) => {
            assert_eq!(e.class, ErrorClass::ContentFilter);
            assert_eq!(e.provider_code.as_deref(), Some("SAFETY"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn finish_reasons_map() {
    use stilts_plugin_gemini::finish_reason as f;
    assert_eq!(f("STOP", false), FinishReason::Stop);
    assert_eq!(f("STOP", true), FinishReason::ToolCalls);
    assert_eq!(f("MAX_TOKENS", false), FinishReason::Length);
    for r in [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
    ] {
        assert_eq!(f(r, false), FinishReason::ContentFilter, "{r}");
    }
    assert_eq!(f("OTHER", false), FinishReason::Stop);
    assert_eq!(f("MALFORMED_FUNCTION_CALL", false), FinishReason::Stop);
}

#[test]
fn every_recorded_error_shape_is_classified() {
    let cases: Vec<ErrorCase> = serde_json::from_slice(&fixture("errors.json")).unwrap();
    for c in cases {
        let info = Gemini.classify_error(c.status, &c.headers, c.body.as_bytes());
        assert_eq!(info.class.as_str(), c.class, "{}: {info:?}", c.name);
        assert_eq!(info.retry_after_ms, c.retry_after_ms, "{}", c.name);
        assert_eq!(info.provider_code, c.provider_code, "{}", c.name);
        assert!(!info.message.is_empty());
    }
}

#[test]
fn text_stream_with_crlf_framing_ends_clean_at_close() {
    let t = run_transcript(&Gemini, &fixture("stream_basic.sse"));
    assert_eq!(t.events, 3);
    assert_eq!(
        t.text,
        "The old lighthouse keeper, Silas, had seen many storms."
    );
    assert_eq!(t.finish_reason.as_deref(), Some("stop"));
    assert_eq!(t.end, StreamEnd::Clean);
    assert_eq!(t.ended_at_event, None, "no terminal marker: close decides");
    let u = t.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (5, 11, 16),
        "the last usage wins"
    );
    assert_eq!(t.chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(t.chunks[0]["id"], "Ol2yaN7NGeC3mNAPzIiK2Qw");
    assert_eq!(t.chunks.last().unwrap()["usage"]["total_tokens"], 16);
}

#[test]
fn function_call_stream() {
    let t = run_transcript(&Gemini, &fixture("stream_function_call.sse"));
    assert_eq!(t.text, "Let me look that up.");
    assert_eq!(t.tool_calls.len(), 1);
    assert_eq!(t.tool_calls[0].function.name, "find_theaters");
    assert_eq!(t.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(t.end, StreamEnd::Clean);
}

#[test]
fn cut_and_error_streams() {
    let t = run_transcript(&Gemini, &fixture("stream_cut.sse"));
    assert_eq!(t.text, "The old lighthouse keeper, Silas, had");
    assert!(matches!(t.end, StreamEnd::Cut { .. }), "{:?}", t.end);

    let t = run_transcript(&Gemini, &fixture("stream_error.sse"));
    assert_eq!(t.text, "Once");
    match t.end {
        StreamEnd::Error { error } => {
            assert_eq!(error.class, ErrorClass::Server);
            assert_eq!(error.provider_code.as_deref(), Some("UNAVAILABLE"));
        }
        other => panic!("{other:?}"),
    }

    let mut sse = fixture("stream_cut.sse");
    sse.extend(b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" seen ma\r\n\r\n");
    let t = run_transcript(&Gemini, &sse);
    assert_eq!(t.ended_at_event, Some(2));
    assert!(matches!(t.end, StreamEnd::Cut { ref reason } if reason.contains("not valid JSON")));
}

// ---- round trips -----------------------------------------------------------------------------------

/// The inverse translation (Gemini body → canonical messages), written independently for the property.
fn decode_request(body: &Value) -> Vec<Message> {
    let mut out = Vec::new();
    if let Some(s) = body
        .pointer("/systemInstruction/parts/0/text")
        .and_then(Value::as_str)
    {
        out.push(Message::text(Role::System, s));
    }
    let mut ids: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    for c in body["contents"].as_array().unwrap() {
        let parts = c["parts"].as_array().unwrap();
        if parts.iter().all(|p| p.get("functionResponse").is_some()) && !parts.is_empty() {
            for p in parts {
                let fr = &p["functionResponse"];
                let name = fr["name"].as_str().unwrap();
                let pos = ids.iter().position(|(_, nm)| nm == name).unwrap();
                let (id, _) = ids.remove(pos);
                let mut m = Message::text(Role::Tool, fr["response"]["content"].as_str().unwrap());
                m.tool_call_id = Some(id);
                out.push(m);
            }
            continue;
        }
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let calls: Vec<ToolCall> = parts
            .iter()
            .filter_map(|p| p.get("functionCall"))
            .map(|fc| {
                let id = format!("call_{n}");
                n += 1;
                ids.push((id.clone(), fc["name"].as_str().unwrap().to_owned()));
                ToolCall {
                    id,
                    kind: "function".into(),
                    function: FunctionCall {
                        name: fc["name"].as_str().unwrap().to_owned(),
                        arguments: fc["args"].to_string(),
                    },
                }
            })
            .collect();
        let role = if c["role"] == "model" {
            Role::Assistant
        } else {
            Role::User
        };
        let mut m = Message::text(role, text);
        if !calls.is_empty() {
            m.tool_calls = Some(calls);
        }
        out.push(m);
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

/// Conversations Gemini can express: tool calls named uniquely within a turn (responses are matched by
/// function name), ids numbered in order.
fn arb_conversation() -> impl Strategy<Value = Vec<Message>> {
    let turn = (
        arb_text(),
        arb_text(),
        prop::collection::btree_map("[a-z_]{1,10}", (arb_args(), arb_text()), 0..3),
    );
    (
        prop::option::of(arb_text()),
        prop::collection::vec(turn, 1..4),
    )
        .prop_map(|(system, turns)| {
            let mut msgs = Vec::new();
            let mut n = 0;
            if let Some(s) = system {
                msgs.push(Message::text(Role::System, s));
            }
            for (user, answer, calls) in turns {
                msgs.push(Message::text(Role::User, user));
                let mut a = Message::text(Role::Assistant, answer);
                let mut results = Vec::new();
                let mut tcs = Vec::new();
                for (name, (args, result)) in calls {
                    let id = format!("call_{n}");
                    n += 1;
                    tcs.push(ToolCall {
                        id: id.clone(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name,
                            arguments: args,
                        },
                    });
                    let mut r = Message::text(Role::Tool, result);
                    r.tool_call_id = Some(id);
                    results.push(r);
                }
                if !tcs.is_empty() {
                    a.tool_calls = Some(tcs);
                }
                msgs.push(a);
                msgs.extend(results);
            }
            msgs
        })
}

fn normalise(msgs: &mut [Message]) {
    for m in msgs {
        for c in m.tool_calls.iter_mut().flatten() {
            c.function.arguments = serde_json::from_str::<Value>(&c.function.arguments)
                .unwrap()
                .to_string();
        }
    }
}

proptest! {
    #[test]
    fn request_round_trips(msgs in arb_conversation(), max in prop::option::of(1u32..10_000), temp in prop::option::of(0.0f64..2.0)) {
        let req = ChatRequest { model: "r".into(), messages: msgs.clone(), max_tokens: max, temperature: temp, ..Default::default() };
        let body: Value = serde_json::from_slice(&Gemini.build_request(&req, &cfg()).unwrap().body).unwrap();
        let mut back = decode_request(&body);
        let mut expected = msgs;
        normalise(&mut back);
        normalise(&mut expected);
        prop_assert_eq!(back, expected);
        prop_assert_eq!(body.pointer("/generationConfig/maxOutputTokens").and_then(Value::as_u64), max.map(u64::from));
        prop_assert_eq!(body.pointer("/generationConfig/temperature").and_then(Value::as_f64), temp);
    }

    #[test]
    fn stream_round_trips(parts in prop::collection::vec(arb_text(), 1..5), reason in prop_oneof![Just("STOP"), Just("MAX_TOKENS"), Just("SAFETY")],
                          prompt in 0u64..10_000, out in 0u64..10_000) {
        let mut sse = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let mut chunk = json!({"candidates":[{"content":{"role":"model","parts":[{"text":p}]},"index":0}],"modelVersion":"gemini-x","responseId":"r"});
            if i + 1 == parts.len() {
                chunk["candidates"][0]["finishReason"] = json!(reason);
                chunk["usageMetadata"] = json!({"promptTokenCount":prompt,"candidatesTokenCount":out,"totalTokenCount":prompt+out});
            }
            sse.extend(format!("data: {chunk}\r\n\r\n").into_bytes());
        }
        let t = run_transcript(&Gemini, &sse);
        prop_assert_eq!(&t.end, &StreamEnd::Clean);
        prop_assert_eq!(t.text, parts.concat());
        let want = serde_json::to_value(stilts_plugin_gemini::finish_reason(reason, false)).unwrap();
        prop_assert_eq!(t.finish_reason.as_deref(), want.as_str());
        let u = t.usage.unwrap();
        prop_assert_eq!((u.prompt_tokens, u.completion_tokens), (prompt, out));
    }

    #[test]
    fn stream_parser_never_panics(events in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let mut d = stilts_plugin::sdk::StreamDriver::new(&Gemini);
        for data in &events { let _ = d.event(None, data); }
        let _ = d.close();
    }

    #[test]
    fn stream_parser_never_panics_on_plausible_json(events in prop::collection::vec(
        prop_oneof![Just(json!(null)), Just(json!([])), Just(json!({"candidates":null})), Just(json!({"candidates":[{"content":{"parts":[{"functionCall":{}}]}}]})),
                    Just(json!({"candidates":[{"finishReason":7}]})), Just(json!({"usageMetadata":"x"})), Just(json!({"error":"str"})), Just(json!({"promptFeedback":{"blockReason":"OTHER"}}))], 0..10)) {
        let mut d = stilts_plugin::sdk::StreamDriver::new(&Gemini);
        for e in &events { let _ = d.event(None, e.to_string().as_bytes()); }
        let _ = d.close();
    }

    #[test]
    fn classify_never_panics(status in 0u16..1000, body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Gemini.classify_error(status, &[], &body);
        let _ = Gemini.parse_response(status, &[], &body);
    }
}
