//! Fuzzing the gateway's config file: arbitrary bytes and mutations of the seed corpus
//! (`tests/fuzz-corpus/gateway-config`), byte by byte and value by value, through
//! `GatewayConfig::parse` then `validate` (`fuzz_gateway_config`; the checks are in
//! `tests/fuzz/config.rs`). A short run in `cargo test`; `scripts/fuzz.sh` runs it long
//! (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "../../../tests/fuzz/config.rs"]
mod config;
#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;
#[path = "../../../tests/fuzz/toml_codec.rs"]
mod toml_codec;

use mutate::{Structure, corpus, inputs};
use proptest::prelude::*;

/// Tokens of the format, for mutations to insert.
const DICT: &[&str] = &[
    "[server]",
    "[routes.chat]",
    "[[routes.chat.deployments]]",
    "[routes.chat.router]",
    "[routes.chat.router.breaker]",
    "[routes.chat.router.retry]",
    "\n",
    " = ",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "=",
    "#",
    "true",
    "false",
    "inf",
    "nan",
    "-inf",
    "1e400",
    "\"\"\"",
    "listen",
    "body_limit_bytes",
    "client_keys_env",
    "plugin_dir",
    "routes",
    "deployments",
    "name",
    "plugin",
    "base_url",
    "api_key_env",
    "model",
    "weight",
    "priority",
    "extra_headers",
    "options",
    "router",
    "policy",
    "weighted",
    "priority",
    "round_robin",
    "least_latency",
    "cost",
    "breaker",
    "retry",
    "timeouts",
    "deadline_ms",
    "http://127.0.0.1:1/v1",
    "https://user:pw@x/v1",
    "openai",
    "anthropic",
    "gemini",
    "./libx.so",
    "\r\n",
    "\u{0}",
    "\u{7f}",
    "é",
];

proptest! {
    #[test]
    fn fuzz_gateway_config(text in inputs(corpus("gateway-config"), DICT, Structure::Whole(toml_codec::TOML))) {
        if let Ok(text) = std::str::from_utf8(&text) {
            config::check_gateway_config(text);
        }
    }
}

/// Found by fuzzing (`fuzz_gateway_config`): an `extra_headers` value with a line break or another
/// control character passed validation, so every request of that deployment failed to be sent
/// instead of the config being refused (and a reload keeping the old one). The error names the
/// header without echoing its value, which may be a secret.
#[test]
fn regression_an_extra_header_value_with_a_control_character_is_refused() {
    for value in ["\\r\\n", "a\\nx-injected: 1", "\\u0000", "\\u007f"] {
        let text = format!(
            "[[routes.chat.deployments]]\nname = \"a\"\nplugin = \"openai\"\nmodel = \"m\"\nextra_headers = {{ \"x-team\" = \"{value}\" }}\n"
        );
        let cfg = stilts_config::GatewayConfig::parse(&text).unwrap();
        let e = cfg.validate(std::path::Path::new(".")).unwrap_err();
        assert_eq!(
            e.path, "routes.chat.deployments[0].extra_headers.x-team",
            "{value}"
        );
        assert!(!e.problem.contains("injected"), "{e:?}");
    }
    let ok = "[[routes.chat.deployments]]\nname = \"a\"\nplugin = \"openai\"\nmodel = \"m\"\nextra_headers = { \"x-team\" = \"search team\\t1\" }\n";
    let cfg = stilts_config::GatewayConfig::parse(ok).unwrap();
    assert!(cfg.validate(std::path::Path::new(".")).is_ok());
}
