//! The fuzz targets every provider plugin shares, through its rlib: each feeds one entry point of a
//! [`Translator`] and checks the answer with `stilts_plugin::testing`'s contract checks, plus the
//! plugin's own promise about its output (`Output`). Included with `#[path]` by each plugin's
//! `tests/fuzz.rs`, beside `mutate.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test support

use proptest::prelude::*;
use stilts_plugin::canonical::{ChatChunk, ChatRequest, ChatResponse};
use stilts_plugin::sse::frame_all;
use stilts_plugin::testing::{
    check_build_request, check_classify_error, check_parse_response, check_stream,
};
use stilts_plugin::{ApiKey, DeploymentConfig, StreamEnd, Translator};

use crate::mutate::NUMBERS;

/// What a plugin promises about the bodies and chunks it outputs.
#[derive(Clone, Copy, Debug)]
pub enum Output {
    /// Passed through byte for byte from the upstream (the OpenAI dialect is the canonical one).
    PassThrough,
    /// Built by the plugin: canonical `chat.completion` and `chat.completion.chunk` JSON.
    Canonical,
}

/// Response headers: the retry hints in every spelling, with boundary and arbitrary values.
pub fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop::sample::select(vec![
        "retry-after",
        "Retry-After",
        "retry-after-ms",
        "RETRY-AFTER-MS",
        "x-should-retry",
        "content-type",
        "x-ratelimit-reset-requests",
    ]);
    let value = prop_oneof![
        prop::sample::select(NUMBERS.to_vec()).prop_map(str::to_owned),
        prop::sample::select(NUMBERS.to_vec()).prop_map(|n| format!("{n}s")),
        Just("true".to_owned()),
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
        "\\PC{0,24}",
    ];
    prop::collection::vec((name.prop_map(str::to_owned), value), 0..4)
}

/// Statuses: mostly the ones providers send, sometimes any `u16`.
pub fn statuses() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => prop::sample::select(vec![0u16, 200, 400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529]),
        1 => any::<u16>(),
    ]
}

/// A success status, as `parse_response` is called with.
pub fn success() -> impl Strategy<Value = u16> {
    prop_oneof![4 => Just(200u16), 1 => 200u16..300]
}

/// `parse_response` on `body`: the contract, then the output promise.
pub fn parse_response<T: Translator>(
    t: &T,
    output: Output,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) {
    if let Ok(p) = check_parse_response(t, status, headers, body) {
        match output {
            Output::PassThrough => assert_eq!(p.body, body, "not passed through"),
            Output::Canonical => {
                if let Err(e) = serde_json::from_slice::<ChatResponse>(&p.body) {
                    panic!(
                        "not a canonical response ({e}): {}",
                        String::from_utf8_lossy(&p.body)
                    );
                }
            }
        }
    }
}

/// `classify_error` on `body`.
pub fn classify_error<T: Translator>(
    t: &T,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) {
    check_classify_error(t, status, headers, body);
}

/// An SSE transcript framed as the host frames it, through a stream: the contract, then the
/// output promise for every chunk.
pub fn stream<T: Translator>(t: &T, output: Output, sse: &[u8]) -> Option<StreamEnd> {
    let (events, _pending) = frame_all(sse).ok()?;
    let end = check_stream(t, &events);
    // The chunks again, event by event, for the output promise.
    let mut driver = stilts_plugin::sdk::StreamDriver::new(t);
    for ev in &events {
        let step = driver.event(ev.event.as_deref(), &ev.data);
        for chunk in &step.chunks {
            match output {
                Output::PassThrough => assert_eq!(chunk, &ev.data, "not passed through"),
                Output::Canonical => {
                    if let Err(e) = serde_json::from_slice::<ChatChunk>(chunk) {
                        panic!(
                            "not a canonical chunk ({e}): {}",
                            String::from_utf8_lossy(chunk)
                        );
                    }
                }
            }
        }
        if step.done.is_some() {
            break;
        }
    }
    Some(end)
}

/// A deployment with `model` (the config's, which the gateway requires to be non-empty) and
/// `options`.
pub fn deployment(
    model: &str,
    options: serde_json::Map<String, serde_json::Value>,
) -> DeploymentConfig {
    DeploymentConfig {
        base_url: String::new(),
        model: model.to_owned(),
        api_key: Some(ApiKey::new("sk-fuzz")),
        extra_headers: vec![("x-team".to_owned(), "fuzz".to_owned())],
        options,
    }
}

/// Upstream model names: the usual shapes, and arbitrary text.
pub fn models() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash", "models/gemini-2.5-pro", "qwen3:0.6b"]).prop_map(str::to_owned),
        1 => "\\PC{1,24}",
        1 => "[ -~]{1,24}",
    ]
}

/// Deployment options: the ones the plugins read, with values of every JSON type.
pub fn options() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    let key = prop::sample::select(vec![
        "include_usage",
        "organization",
        "project",
        "anthropic_version",
        "default_max_tokens",
        "api_version",
    ]);
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        "\\PC{0,16}".prop_map(serde_json::Value::from),
        "[ -~]{0,16}".prop_map(serde_json::Value::from),
    ];
    prop::collection::btree_map(key.prop_map(str::to_owned), value, 0..3)
        .prop_map(|m| m.into_iter().collect())
}

/// `build_request` for the request in `body` (when it is a canonical request at all).
pub fn build_request<T: Translator>(t: &T, body: &[u8], cfg: &DeploymentConfig) {
    if let Ok(req) = ChatRequest::from_json(body) {
        let _ = check_build_request(t, &req, cfg);
    }
}

/// The four fuzz targets of a plugin: `fuzz_parse_response`, `fuzz_classify_error`, `fuzz_stream`
/// (over the seed corpus `tests/fuzz-corpus/<prefix>-{response,error,stream}` mutated with the
/// dialect's tokens `$dict`) and `fuzz_build_request` (over the shared canonical requests), each
/// answer checked as the functions above check it. `$output` is the plugin's promise about its
/// output. Needs `mutate` and `plugin` (this module) in scope, and proptest's prelude.
#[macro_export]
macro_rules! plugin_fuzz_targets {
    ($translator:expr, $prefix:literal, $dict:expr, $output:expr) => {
        proptest! {
            #[test]
            fn fuzz_parse_response(body in mutate::inputs(mutate::corpus(concat!($prefix, "-response")), $dict, mutate::Structure::Whole(mutate::JSON)), status in plugin::success(), headers in plugin::headers()) {
                plugin::parse_response(&$translator, $output, status, &headers, &body);
            }

            #[test]
            fn fuzz_classify_error(body in mutate::inputs(mutate::corpus(concat!($prefix, "-error")), $dict, mutate::Structure::Whole(mutate::JSON)), status in plugin::statuses(), headers in plugin::headers()) {
                plugin::classify_error(&$translator, status, &headers, &body);
            }

            #[test]
            fn fuzz_stream(sse in mutate::inputs(mutate::corpus(concat!($prefix, "-stream")), $dict, mutate::Structure::SseJson)) {
                plugin::stream(&$translator, $output, &sse);
            }

            #[test]
            fn fuzz_build_request(body in mutate::inputs(mutate::corpus("request"), mutate::REQUEST_DICT, mutate::Structure::Whole(mutate::JSON)), model in plugin::models(), options in plugin::options()) {
                plugin::build_request(&$translator, &body, &plugin::deployment(&model, options));
            }
        }
    };
}
