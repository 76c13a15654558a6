//! The per-call cost of the plugin boundary: one request translation and one stream event through a
//! REAL loaded plugin (release build of the workspace plugins, built by this bench with cargo), i.e. the
//! C ABI crossing plus the JSON work on both sides.
//!
//! Run: `cargo bench -p stilts-plugin --bench plugin_calls`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // reason: bench harness

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use stilts_plugin::host::{Plugin, encode_config};
use stilts_plugin::{ApiKey, DeploymentConfig};

const REQUEST: &[u8] = br#"{"model":"chat","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about fallbacks."}],"max_tokens":128,"temperature":0.7,"stream":true}"#;
const OPENAI_CHUNK: &[u8] = br#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":" Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
const ANTHROPIC_DELTA: &[u8] =
    br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" Hello"}}"#;
const GEMINI_CHUNK: &[u8] = br#"{"candidates":[{"content":{"parts":[{"text":" Hello"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":5,"totalTokenCount":5},"modelVersion":"gemini-2.0-flash","responseId":"Ol2yaN7NGeC3mNAPzIiK2Qw"}"#;

fn load(pkg: &str) -> Plugin {
    Plugin::load(common::workspace_plugin(pkg, true)).unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let cfg = DeploymentConfig {
        base_url: String::new(),
        model: "upstream-model".into(),
        api_key: Some(ApiKey::new("sk-bench")),
        extra_headers: vec![],
        options: Default::default(),
    };
    let cfg_json = encode_config(&cfg).unwrap();
    for (name, pkg, event, data) in [
        ("openai", "stilts-plugin-openai", None, OPENAI_CHUNK),
        (
            "anthropic",
            "stilts-plugin-anthropic",
            Some("content_block_delta"),
            ANTHROPIC_DELTA,
        ),
        ("gemini", "stilts-plugin-gemini", None, GEMINI_CHUNK),
    ] {
        let plugin = load(pkg);
        c.bench_function(&format!("{name}/build_request"), |b| {
            b.iter(|| {
                plugin
                    .build_request_with_config_json(black_box(REQUEST), &cfg_json)
                    .unwrap()
            })
        });
        let mut state = plugin.stream_open().unwrap();
        c.bench_function(&format!("{name}/stream_event"), |b| {
            b.iter(|| {
                plugin
                    .stream_event(&mut state, event, black_box(data))
                    .unwrap()
            })
        });
    }
    let openai = load("stilts-plugin-openai");
    let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    let headers = vec![("retry-after-ms".to_owned(), "1200".to_owned())];
    c.bench_function("openai/classify_error", |b| {
        b.iter(|| {
            openai
                .classify_error(429, &headers, black_box(body))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
