//! Fuzzing the Gemini plugin through its rlib: arbitrary bytes and mutations of the seed corpus
//! (`tests/fuzz-corpus/gemini-*`, `tests/fuzz-corpus/request`) through every entry point, each
//! answer checked against the plugin contract (`stilts_plugin::testing`'s `check_*`). A short run
//! in `cargo test`; `scripts/fuzz.sh` runs it long (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;
#[path = "../../../tests/fuzz/plugin.rs"]
mod plugin;

use plugin::Output;
use proptest::prelude::*;
use stilts_plugin_gemini::Gemini;

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
    "candidates",
    "content",
    "parts",
    "text",
    "thought",
    "functionCall",
    "name",
    "args",
    "id",
    "finishReason",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "totalTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "modelVersion",
    "responseId",
    "promptFeedback",
    "blockReason",
    "error",
    "code",
    "status",
    "message",
    "details",
    "@type",
    "type.googleapis.com/google.rpc.RetryInfo",
    "retryDelay",
    "type.googleapis.com/google.rpc.QuotaFailure",
    "violations",
    "quotaId",
    "PerDay",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "INVALID_ARGUMENT",
    "API_KEY_INVALID",
    "reason",
    "google.rpc.ErrorInfo",
];

plugin_fuzz_targets!(Gemini, "gemini", DICT, Output::Canonical);

/// Found by fuzzing (`fuzz_build_request`): a model name with a space (or a control character,
/// or `%`) went into the URL's path as it was, making a URL no client sends. Only letters,
/// digits, `-`, `.` and `_` are taken now.
#[test]
fn regression_a_model_name_that_is_not_a_plain_path_segment_is_refused() {
    use stilts_plugin::canonical::{ChatRequest, Message, Role};
    use stilts_plugin::{PluginError, Translator};
    let req = ChatRequest {
        messages: vec![Message::text(Role::User, "hi")],
        ..Default::default()
    };
    for model in [
        " ",
        "gemini pro",
        "gemini\r\n",
        "a%2Fb",
        "models/x/y",
        "x?key=1",
        "é",
    ] {
        let cfg = plugin::deployment(model, Default::default());
        assert!(
            matches!(
                Gemini.build_request(&req, &cfg),
                Err(PluginError::BadInput(_))
            ),
            "{model:?}"
        );
    }
    for model in [
        "gemini-2.5-flash",
        "models/gemini-2.0-flash-001",
        "gemma-3-27b-it",
    ] {
        let cfg = plugin::deployment(model, Default::default());
        assert!(Gemini.build_request(&req, &cfg).is_ok(), "{model:?}");
    }
}
