//! Fuzzing the scenario file: arbitrary bytes and mutations of the seed corpus
//! (`tests/fuzz-corpus/scenario`, the shipped scenarios), byte by byte and value by value,
//! through `Scenario::parse`, and a short, repeated run of what it accepts (`fuzz_scenario`; the
//! checks are in `tests/fuzz/scenario.rs`). A short run in `cargo test`; `scripts/fuzz.sh` runs it
//! long (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "../../tests/fuzz/mutate.rs"]
mod mutate;
#[path = "../../tests/fuzz/scenario.rs"]
mod scenario;
#[path = "../../tests/fuzz/toml_codec.rs"]
mod toml_codec;

use mutate::{Structure, corpus, inputs};
use proptest::prelude::*;

/// Tokens of the format, for mutations to insert.
const DICT: &[&str] = &[
    "[traffic]",
    "[[providers]]",
    "[[events]]",
    "[[configs]]",
    "[configs.router]",
    "[baselines]",
    "[[expectations]]",
    "[report]",
    "\n",
    " = ",
    "\"",
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
    "0",
    "-1",
    "1e308",
    "name",
    "duration_s",
    "seed",
    "rate_rps",
    "providers",
    "events",
    "kind",
    "outage",
    "error_burst",
    "brownout",
    "hang",
    "rate_limit",
    "flapping",
    "start_s",
    "end_s",
    "fraction",
    "factor",
    "policy",
    "priority",
    "weighted",
    "least_latency",
    "file",
    "table",
    "routes.chat.router",
    "max_attempts",
    "latency_ms",
    "p50",
    "p99",
    "capacity",
    "steps",
    "diurnal",
    "spikes",
];

proptest! {
    #[test]
    fn fuzz_scenario(text in inputs(corpus("scenario"), DICT, Structure::Whole(toml_codec::TOML))) {
        if let Ok(text) = std::str::from_utf8(&text) {
            let dir = std::env::temp_dir().join("stilts-fuzz-scenario");
            scenario::check_scenario(text, &dir.join("fuzz.toml"));
        }
    }
}
