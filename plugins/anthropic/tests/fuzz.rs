//! Fuzzing the Anthropic plugin through its rlib: arbitrary bytes and mutations of the seed corpus
//! (`tests/fuzz-corpus/anthropic-*`, `tests/fuzz-corpus/request`) through every entry point, each
//! answer checked against the plugin contract (`stilts_plugin::testing`'s `check_*`). A short run
//! in `cargo test`; `scripts/fuzz.sh` runs it long (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;
#[path = "../../../tests/fuzz/plugin.rs"]
mod plugin;

use plugin::Output;
use proptest::prelude::*;
use stilts_plugin_anthropic::Anthropic;

/// Tokens of the dialect, for mutations to insert.
const DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "data: ",
    "\n\n",
    "\r\n",
    "event: message_start\n",
    "event: content_block_start\n",
    "event: content_block_delta\n",
    "event: message_delta\n",
    "event: message_stop\n",
    "event: error\n",
    "event: ping\n",
    "type",
    "message",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
    "ping",
    "index",
    "content_block",
    "delta",
    "text",
    "text_delta",
    "input_json_delta",
    "partial_json",
    "tool_use",
    "id",
    "name",
    "input",
    "stop_reason",
    "end_turn",
    "max_tokens",
    "refusal",
    "usage",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "content",
    "model",
    "overloaded_error",
    "rate_limit_error",
    "invalid_request_error",
    "prompt is too long",
    "credit balance",
];

plugin_fuzz_targets!(Anthropic, "anthropic", DICT, Output::Canonical);

/// Found by fuzzing (`fuzz_classify_error`): an error whose `message` was empty gave an error
/// without a message; the body stands in for it now, as for a body that is not JSON. The same
/// holds for a mid-stream error event.
#[test]
fn regression_a_blank_error_message_is_replaced() {
    use stilts_plugin::{StreamEnd, Translator};
    let body = br#"{"type":"error","error":{"type":"not_found_error","message":""}}"#;
    let info = Anthropic.classify_error(404, &[], body);
    assert_eq!(info.message, String::from_utf8_lossy(body));
    let mut s = Anthropic.stream_open();
    let step = Anthropic.stream_event(
        &mut s,
        Some("error"),
        br#"{"type":"error","error":{"type":"overloaded_error","message":" "}}"#,
    );
    match step.done {
        Some(StreamEnd::Error { error }) => assert_eq!(error.message, "stream error"),
        other => panic!("{other:?}"),
    }
}
