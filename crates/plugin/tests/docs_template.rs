//! Follows docs/plugins.md for real: extracts the files the walk-through tells an author to write (the
//! fenced blocks tagged `file=…`), builds them out of tree with cargo against this checkout, and loads the
//! resulting shared library through the host.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use serde_json::json;
use stilts_plugin::host::Plugin;
use stilts_plugin::{ApiKey, DeploymentConfig, ErrorClass, StreamEnd};

/// Fenced blocks whose info string has `file=PATH`, as (PATH, contents).
fn doc_files(markdown: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match &mut current {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    if let Some(f) = info
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("file="))
                    {
                        current = Some((f.to_owned(), String::new()));
                    }
                }
            }
            Some((_, text)) => {
                if line.starts_with("```") {
                    files.push(current.take().unwrap());
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    files
}

#[test]
fn the_walkthrough_in_docs_plugins_md_builds_a_loadable_plugin() {
    let root = common::workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/plugins.md")).unwrap();
    let files = doc_files(&doc);
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        ["Cargo.toml", "src/lib.rs"],
        "the walk-through's files"
    );
    assert!(doc.contains("cargo new --lib acme-plugin"));

    // The author's checkout sits next to their crate ("../stilts"); here it is this workspace.
    let files: Vec<(&str, String)> = files
        .iter()
        .map(|(f, text)| {
            let text = text.replace(
                "../stilts/crates/plugin",
                root.join("crates/plugin").to_str().unwrap(),
            );
            (f.as_str(), text)
        })
        .collect();
    assert!(
        files[0].1.contains(root.to_str().unwrap()),
        "the path dependency was rewritten"
    );
    let dir = common::target_dir()
        .join("plugin-fixtures")
        .join("acme-plugin");
    let lib = common::build_out_of_tree(&dir, &files, &[], "plugin-fixtures/docs-target");
    assert!(
        lib.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .contains("acme_plugin"),
        "{}",
        lib.display()
    );

    let plugin = Plugin::load(&lib).unwrap_or_else(|e| panic!("{e}"));
    let info = plugin.describe();
    assert_eq!(info.name, "acme");
    assert_eq!(info.version, "0.1.0");
    assert_eq!(
        info.capabilities.context_windows.get("acme-large"),
        Some(&32_768)
    );
    plugin.self_test().unwrap_or_else(|e| panic!("{e}"));

    let cfg = DeploymentConfig {
        base_url: "http://localhost:9999/v1".into(),
        model: "acme-large".into(),
        api_key: Some(ApiKey::new("k-123")),
        extra_headers: vec![],
        options: Default::default(),
    };
    let http = plugin
        .build_request_value(
            &json!({"model":"x","messages":[{"role":"user","content":"hi"}]}),
            &cfg,
        )
        .unwrap();
    assert_eq!(http.url, "http://localhost:9999/v1/chat");
    assert!(
        http.headers
            .contains(&("x-acme-key".into(), "k-123".into()))
    );
    assert_eq!(
        plugin.classify_error(429, &[], b"").unwrap().class,
        ErrorClass::RateLimited
    );
    let mut st = plugin.stream_open().unwrap();
    let step = plugin
        .stream_event(&mut st, None, br#"{"id":"1","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}"#)
        .unwrap();
    assert_eq!(step.chunks.len(), 1);
    assert_eq!(plugin.stream_close(st).unwrap(), StreamEnd::Clean);
}
