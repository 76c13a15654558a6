//! Fuzzing the parsers of stilts-plugin and the plugin ABI: arbitrary bytes and mutations of the
//! seed corpus (`tests/fuzz-corpus/`, shared with the plugins' own fuzz tests; see
//! `tests/fuzz/mutate.rs`) through
//!
//! * the SSE framer (`fuzz_sse_framer`): any split of the bytes gives the same events, the events
//!   are well formed and bounded, and writing them out again frames to the same events;
//! * the canonical request deserializer (`fuzz_canonical_request`): what it accepts round-trips,
//!   and reads the same from bytes and from a JSON tree;
//! * the retry hints of response headers (`fuzz_retry_after`): bounded, and taken from one header;
//! * the binary metadata decoders of ABI 1.2 (`fuzz_binary_meta`): what they accept, encoded
//!   again, reads back the same;
//! * the three workspace plugins loaded from their shared libraries (`fuzz_loaded_plugins`):
//!   arbitrary buffers through the real C ABI into every entry point, where every answer is a
//!   result or a clear refusal, never a panic or a broken contract, and an error about the
//!   deployment config never shows its key.
//!
//! A short run in `cargo test`; `scripts/fuzz.sh` runs it long (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;
#[path = "../../../tests/fuzz/host.rs"]
mod host;
#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use std::sync::OnceLock;

use mutate::{Input, JSON, REQUEST_DICT, Structure, corpus, inputs};
use proptest::prelude::*;
use proptest::sample::Index;
use stilts_plugin::host::{CallError, Plugin, encode_config};
use stilts_plugin::sse::{SseFramer, frame_all};
use stilts_plugin::testing::check_error_info;
use stilts_plugin::{ApiKey, DeploymentConfig, StreamEnd};

const SSE_DICT: &[&str] = &[
    "data:",
    "data: ",
    "event:",
    "event: ",
    "id: 1",
    "retry: 10",
    ":",
    ": ping",
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    "\r\r",
    "\r\n\r\n",
    "[DONE]",
    " ",
    "\u{feff}",
];

fn headers_with(value: String) -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop::sample::select(vec![
        "retry-after",
        "Retry-After",
        "retry-after-ms",
        "Retry-After-Ms",
        "x-other",
    ]);
    let values = prop_oneof![
        Just(value),
        prop::sample::select(mutate::NUMBERS.to_vec()).prop_map(str::to_owned),
        "\\PC{0,12}",
    ];
    prop::collection::vec((name.prop_map(str::to_owned), values), 0..4)
}

/// The three workspace plugins, built by cargo and loaded once per test binary.
fn plugins() -> &'static [Plugin] {
    static PLUGINS: OnceLock<Vec<Plugin>> = OnceLock::new();
    PLUGINS.get_or_init(|| {
        [
            "stilts-plugin-openai",
            "stilts-plugin-anthropic",
            "stilts-plugin-gemini",
        ]
        .iter()
        .map(|pkg| Plugin::load(common::workspace_plugin(pkg, false)).unwrap())
        .collect()
    })
}

/// Every seed of every plugin and of the requests, for the ABI target.
fn abi_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for p in ["openai", "anthropic", "gemini"] {
        for kind in ["response", "error", "stream"] {
            seeds.extend(corpus(&format!("{p}-{kind}")));
        }
    }
    seeds.extend(corpus("request"));
    seeds
}

const SECRET: &str = "sk-fuzz-SECRET-7f3a";

fn deployment_json() -> Vec<u8> {
    encode_config(&DeploymentConfig {
        base_url: "http://127.0.0.1:9/v1".to_owned(),
        model: "gpt-4o-mini".to_owned(),
        api_key: Some(ApiKey::new(SECRET)),
        extra_headers: vec![("x-team".to_owned(), "fuzz".to_owned())],
        options: Default::default(),
    })
    .unwrap()
}

/// A refusal is fine; a panic or a broken contract is not.
fn clear<T: std::fmt::Debug>(what: &str, r: &Result<T, CallError>) {
    match r {
        Ok(_) | Err(CallError::BadInput(_)) => {}
        Err(CallError::Upstream(info)) => check_error_info(info),
        Err(e) => panic!("{what}: {e}"),
    }
}

proptest! {
    #[test]
    fn fuzz_sse_framer(
        bytes in inputs(corpus("sse"), SSE_DICT, Structure::Bytes),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
        limit in prop_oneof![Just(SseFramer::DEFAULT_MAX_LINE_BYTES), 1usize..300],
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        host::check_framer(&bytes, &cuts, limit);
    }

    #[test]
    fn fuzz_canonical_request(body in inputs(corpus("request"), REQUEST_DICT, Structure::Whole(JSON))) {
        host::check_canonical_request(&body);
    }

    #[test]
    fn fuzz_retry_after(
        headers in inputs(corpus("retry-after"), &["s", ".", "-", "+", "e", "E", " ", "0", "9"], Structure::Bytes)
            .prop_flat_map(|v: Input| headers_with(String::from_utf8_lossy(&v).into_owned())),
    ) {
        host::check_retry_after(&headers);
    }

    #[test]
    fn fuzz_binary_meta(bytes in inputs(corpus("meta"), &["\x01", "\x06", "\x00\x00\x00\x00", "\x18\x00\x00\x00\x01"], Structure::Bytes)) {
        host::check_meta(&bytes);
    }

    #[test]
    fn fuzz_loaded_plugins(
        which in 0usize..3,
        status in prop_oneof![Just(200u16), Just(0u16), Just(429u16), any::<u16>()],
        bytes in inputs(abi_seeds(), REQUEST_DICT, Structure::SseJson),
        other in inputs(abi_seeds(), REQUEST_DICT, Structure::Whole(JSON)),
        cfg in inputs(vec![deployment_json()], &["base_url", "model", "api_key", "extra_headers", "options", "null", "\""], Structure::Whole(JSON)),
        names in prop::collection::vec(prop::option::of("\\PC{0,16}"), 0..4),
    ) {
        let plugin = &plugins()[which];
        let headers = vec![("retry-after".to_owned(), "3".to_owned())];
        clear("parse_response", &plugin.parse_response(status, &headers, &other));
        match plugin.classify_error(status, &headers, &other) {
            Ok(info) => check_error_info(&info),
            Err(e) => panic!("classify_error: {e}"),
        }
        let built = plugin.build_request_with_config_json(&other, &cfg);
        clear("build_request", &built);
        if let Err(e) = &built {
            prop_assert!(!e.to_string().contains(SECRET), "the key in an error: {e}");
        }
        // The bytes as a stream: framed as the host frames them, with event names of the
        // transcript or arbitrary ones.
        let (events, _) = frame_all(&bytes).unwrap();
        let mut state = plugin.stream_open().unwrap();
        let mut end = None;
        for (i, ev) in events.iter().enumerate() {
            let name = match names.get(i) {
                Some(n) => n.as_deref(),
                None => ev.event.as_deref(),
            };
            let step = match plugin.stream_event(&mut state, name, &ev.data) {
                Ok(step) => step,
                Err(e) => panic!("stream_event: {e}"),
            };
            if let Some(StreamEnd::Error { error }) = &step.done {
                check_error_info(error);
            }
            if end.is_some() {
                prop_assert!(step.chunks.is_empty(), "chunks after the end");
            }
            end = end.or(step.done);
        }
        match plugin.stream_close(state) {
            Ok(closed) => {
                if let Some(end) = end {
                    prop_assert_eq!(closed, end);
                }
            }
            Err(e) => panic!("stream_close: {e}"),
        }
        prop_assert_eq!(plugin.panic_count(), 0);
    }
}

/// Found by `scripts/fuzz.sh` in CI: a tool call with an unknown field nested 200 deep. The request
/// reader skips the field without recursing and accepts the body, which is JSON, but deeper than a
/// JSON tree can be read (serde_json's recursion limit of 128); the check had called it "not JSON".
#[test]
fn regression_a_request_nested_past_the_tree_limit_in_an_ignored_field_is_still_json() {
    let deep = format!("{}\"x\"{}", "[".repeat(200), "]".repeat(200));
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"assistant","content":null,"tool_calls":[{{"id":"c1","type":"function","function":{{"name":"f","arguments":"{{}}"}},"extra":{deep}}}]}}]}}"#
    );
    assert!(
        stilts_plugin::canonical::ChatRequest::from_json(body.as_bytes()).is_ok(),
        "the reader skips the ignored field"
    );
    assert!(serde_json::from_slice::<serde_json::Value>(body.as_bytes()).is_err());
    host::check_canonical_request(body.as_bytes());
}
