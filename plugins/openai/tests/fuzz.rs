//! Fuzzing the OpenAi plugin through its rlib: arbitrary bytes and mutations of the seed corpus
//! (`tests/fuzz-corpus/openai-*`, `tests/fuzz-corpus/request`) through every entry point, each
//! answer checked against the plugin contract (`stilts_plugin::testing`'s `check_*`). A short run
//! in `cargo test`; `scripts/fuzz.sh` runs it long (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;
#[path = "../../../tests/fuzz/plugin.rs"]
mod plugin;

use plugin::Output;
use proptest::prelude::*;
use stilts_plugin_openai::OpenAi;

/// Tokens of the dialect, for mutations to insert.
const DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\\\u0000",
    "null",
    "true",
    "data: ",
    "\n\n",
    "\r\n",
    "data: [DONE]\n\n",
    "event: error\n",
    "event: message\n",
    "event: ping\n",
    "id",
    "object",
    "chat.completion",
    "chat.completion.chunk",
    "error",
    "choices",
    "delta",
    "message",
    "content",
    "role",
    "assistant",
    "finish_reason",
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "model",
    "index",
    "function",
    "arguments",
    "type",
    "code",
    "insufficient_quota",
    "rate_limit_exceeded",
    "context_length_exceeded",
    "invalid_request_error",
    "server_error",
];

plugin_fuzz_targets!(OpenAi, "openai", DICT, Output::PassThrough);
