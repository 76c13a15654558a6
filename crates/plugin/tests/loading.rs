//! Loading tests: dlopen REAL shared libraries built by cargo from this test (the three workspace plugins
//! and a deliberately broken fixture plugin), check every refusal names the file, and call the loaded
//! plugins through the C ABI.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};
use stilts_plugin::abi;
use stilts_plugin::host::{CallError, LoadError, Plugin};
use stilts_plugin::sse::SseFramer;
use stilts_plugin::{ApiKey, DeploymentConfig, ErrorClass, StreamEnd};

fn fixture(plugin: &str, name: &str) -> Vec<u8> {
    std::fs::read(
        common::workspace_root()
            .join("plugins")
            .join(plugin)
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// Copies a library to a fresh file name (dlopen returns an already loaded object for a known name),
/// loads it, then removes the copy (the mapping stays valid).
fn load_copy(lib: &Path, label: &str) -> (PathBuf, Result<Plugin, LoadError>) {
    let dir = common::target_dir().join("plugin-fixtures").join("loaded");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(format!(
        "lib{label}-{}{}",
        std::process::id(),
        std::env::consts::DLL_SUFFIX
    ));
    std::fs::copy(lib, &copy).unwrap();
    let result = Plugin::load(&copy);
    let _ = std::fs::remove_file(&copy);
    (copy, result)
}

/// Builds the broken fixture plugin with `features` (serialised: one source dir per test binary).
fn bad_plugin(features: &str, extra: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-plugin");
    let mut args = Vec::new();
    if !features.is_empty() {
        args.extend(["--features", features]);
    }
    args.extend_from_slice(extra);
    let built = common::build_fixture_plugin(&src, "bad-plugin", &args);
    // Keep a per-variant copy: the next variant's build overwrites the same output file.
    let keep = common::target_dir().join("plugin-fixtures").join(format!(
        "bad-{}{}",
        if features.is_empty() {
            "valid"
        } else {
            features
        },
        if extra.is_empty() { "" } else { "-abort" }
    ));
    std::fs::copy(&built, &keep).unwrap();
    keep
}

fn refused(features: &str, extra: &[&str]) -> (PathBuf, LoadError) {
    let lib = bad_plugin(features, extra);
    let (path, res) = load_copy(&lib, &format!("bad-{features}"));
    match res {
        Ok(p) => panic!("{features}: loaded {p:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(path.to_str().unwrap()),
                "{features}: the error must name the file: {msg}"
            );
            (path, e)
        }
    }
}

fn cfg() -> DeploymentConfig {
    DeploymentConfig {
        base_url: String::new(),
        model: "upstream-model".into(),
        api_key: Some(ApiKey::new("sk-real-secret")),
        extra_headers: vec![],
        options: Default::default(),
    }
}

#[test]
fn the_three_plugins_load_describe_and_pass_their_self_test() {
    for (pkg, name) in [
        ("stilts-plugin-openai", "openai"),
        ("stilts-plugin-anthropic", "anthropic"),
        ("stilts-plugin-gemini", "gemini"),
    ] {
        let lib = common::workspace_plugin(pkg, false);
        let plugin = Plugin::load(&lib).unwrap_or_else(|e| panic!("{e}"));
        let info = plugin.describe();
        assert_eq!(info.name, name);
        assert_eq!(info.abi_major, 1);
        assert!(info.panic_unwind);
        assert!(info.capabilities.streaming);
        assert_eq!(plugin.path(), lib.as_path());
        let report = plugin.self_test().unwrap_or_else(|e| panic!("{e}"));
        assert!(report.checks.len() >= 4, "{report:?}");
        if name == "openai" {
            // The canonical dialect: the self-test's stream usage rule applies in full.
            assert!(
                report
                    .checks
                    .iter()
                    .any(|c| c == "stream usage: reported (9 in, 3 out)"),
                "{report:?}"
            );
        }
        // Loading the same file again works (and maps the same library).
        let again = Plugin::load(&lib).unwrap();
        assert_eq!(again.describe(), info);
    }
}

#[test]
fn alternating_deployment_configs_each_get_their_own_model_and_key() {
    // The SDK keeps the last decoded config per thread: a different config must never reuse it.
    let plugin = Plugin::load(common::workspace_plugin("stilts-plugin-openai", false)).unwrap();
    let req = json!({"model":"r","messages":[{"role":"user","content":"Hi"}]});
    let other = DeploymentConfig {
        base_url: "http://127.0.0.1:9/v1".into(),
        model: "other-model".into(),
        api_key: Some(ApiKey::new("sk-other")),
        ..cfg()
    };
    for round in 0..3 {
        for (c, model, auth, url) in [
            (
                cfg(),
                "upstream-model",
                "Bearer sk-real-secret",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                other.clone(),
                "other-model",
                "Bearer sk-other",
                "http://127.0.0.1:9/v1/chat/completions",
            ),
        ] {
            let http = plugin.build_request_value(&req, &c).unwrap();
            let body: Value = serde_json::from_slice(&http.body).unwrap();
            assert_eq!(body["model"], model, "round {round}");
            assert_eq!(http.url, url, "round {round}");
            assert!(
                http.headers
                    .contains(&("authorization".into(), auth.into())),
                "round {round}"
            );
        }
    }
}

#[test]
fn calls_cross_the_abi_intact() {
    let plugin = Plugin::load(common::workspace_plugin("stilts-plugin-anthropic", false)).unwrap();
    let req = json!({"model":"r","messages":[{"role":"system","content":"Be brief. ünïcode ✓"},{"role":"user","content":"Hi"}],"max_tokens":5});
    let http = plugin.build_request_value(&req, &cfg()).unwrap();
    assert_eq!(http.url, "https://api.anthropic.com/v1/messages");
    assert!(
        http.headers
            .contains(&("x-api-key".into(), "sk-real-secret".into()))
    );
    assert!(
        !format!("{http:?}").contains("sk-real-secret"),
        "Debug redacts the key"
    );
    let body: Value = serde_json::from_slice(&http.body).unwrap();
    assert_eq!(body["system"], "Be brief. ünïcode ✓");
    assert_eq!(body["model"], "upstream-model");

    let parsed = plugin
        .parse_response(200, &[], &fixture("anthropic", "response_basic.json"))
        .unwrap();
    assert_eq!(parsed.usage.unwrap().completion_tokens, 503);
    let canonical: Value = serde_json::from_slice(&parsed.body).unwrap();
    assert_eq!(
        canonical["choices"][0]["message"]["content"],
        "Hi! My name is Claude."
    );

    let info = plugin
        .classify_error(
            429,
            &[("retry-after".into(), "30".into())],
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        )
        .unwrap();
    assert_eq!(
        (info.class, info.retry_after_ms),
        (ErrorClass::RateLimited, Some(30_000))
    );

    // An error inside a 200 crosses as CallError::Upstream; garbage as BadInput.
    let overloaded =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    assert!(
        matches!(plugin.parse_response(200, &[], overloaded), Err(CallError::Upstream(e)) if e.class == ErrorClass::RateLimited)
    );
    assert!(matches!(
        plugin.build_request(b"{not json", &cfg()),
        Err(CallError::BadInput(_))
    ));
}

#[test]
fn streams_cross_the_abi_with_the_host_framing() {
    for (plugin_name, pkg, file, text) in [
        (
            "openai",
            "stilts-plugin-openai",
            "stream_basic.sse",
            "Hello! How can I help?",
        ),
        (
            "anthropic",
            "stilts-plugin-anthropic",
            "stream_tool_use.sse",
            "Okay, let's check the weather for San Francisco, CA:",
        ),
        (
            "gemini",
            "stilts-plugin-gemini",
            "stream_basic.sse",
            "The old lighthouse keeper, Silas, had seen many storms.",
        ),
    ] {
        let plugin = Plugin::load(common::workspace_plugin(pkg, false)).unwrap();
        let bytes = fixture(plugin_name, file);
        let mut state = plugin.stream_open().unwrap();
        let mut framer = SseFramer::default();
        let mut chunks = Vec::new();
        let mut end = None;
        // Feed in awkward 7-byte reads, as a socket would.
        'outer: for piece in bytes.chunks(7) {
            for ev in framer.push(piece).unwrap() {
                let step = plugin
                    .stream_event(&mut state, ev.event.as_deref(), &ev.data)
                    .unwrap();
                chunks.extend(step.chunks);
                if step.done.is_some() {
                    end = step.done;
                    break 'outer;
                }
            }
        }
        let end = match end {
            Some(e) => e,
            None => plugin.stream_close(state).unwrap(),
        };
        assert_eq!(end, StreamEnd::Clean, "{plugin_name}");
        let values: Vec<Value> = chunks
            .iter()
            .map(|c| serde_json::from_slice(c).unwrap())
            .collect();
        let (got, _, _) = stilts_plugin::testing::assemble(&values);
        assert_eq!(got, text, "{plugin_name}");
    }
}

#[test]
fn a_stream_state_moves_across_threads_and_plugins_are_shared() {
    let plugin = Plugin::load(common::workspace_plugin("stilts-plugin-openai", false)).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let p = plugin.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let req = json!({"model":"m","messages":[{"role":"user","content":format!("thread {i}")}]});
                    let http = p.build_request_value(&req, &cfg()).unwrap();
                    let body: Value = serde_json::from_slice(&http.body).unwrap();
                    assert_eq!(body["messages"][0]["content"], format!("thread {i}"));
                }
                let mut st = p.stream_open().unwrap();
                let step = p.stream_event(&mut st, None, br#"{"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#).unwrap();
                assert_eq!(step.chunks.len(), 1);
                st
            })
        })
        .collect();
    for h in handles {
        let st = h.join().unwrap();
        assert_eq!(plugin.stream_close(st).unwrap(), StreamEnd::Clean);
    }
    // A state from another plugin is refused, not misused.
    let other = Plugin::load(common::workspace_plugin("stilts-plugin-gemini", false)).unwrap();
    let mut foreign = other.stream_open().unwrap();
    assert!(matches!(
        plugin.stream_event(&mut foreign, None, b"{}"),
        Err(CallError::Contract(_))
    ));
}

#[test]
fn a_missing_file_is_refused() {
    let path = common::target_dir().join("no-such-plugin.so");
    let err = Plugin::load(&path).unwrap_err();
    assert!(matches!(err, LoadError::NotFound { .. }));
    assert!(err.to_string().contains(path.to_str().unwrap()));
}

#[test]
fn a_text_file_named_so_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join(format!("libfake{}", std::env::consts::DLL_SUFFIX));
    std::fs::write(&path, "this is not a shared library\n").unwrap();
    let err = Plugin::load(&path).unwrap_err();
    assert!(matches!(err, LoadError::NotALibrary { .. }), "{err}");
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
}

fn system_library() -> PathBuf {
    let names = ["libm.so.6", "libc.so.6", "libz.so.1", "libSystem.B.dylib"];
    let mut dirs: Vec<PathBuf> = [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for base in ["/lib", "/usr/lib"] {
        if let Ok(rd) = std::fs::read_dir(base) {
            dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    for d in &dirs {
        for n in names {
            let p = d.join(n);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("no system library (libm/libc) found in {dirs:?}: this test needs one");
}

#[test]
fn a_system_library_that_is_not_a_plugin_is_refused() {
    let path = system_library();
    let err = Plugin::load(&path).unwrap_err();
    assert!(matches!(err, LoadError::MissingEntrySymbol { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(path.to_str().unwrap()) && msg.contains("stilts_plugin_entry_v1"),
        "{msg}"
    );
}

#[test]
fn the_fixture_plugin_without_faults_loads() {
    let lib = bad_plugin("", &[]);
    let (_, res) = load_copy(&lib, "valid");
    let plugin = res.unwrap();
    assert_eq!(plugin.describe().name, "bad");
    plugin.self_test().unwrap();
}

/// The plugin template docs/plugins.md used to show passed the final usage chunk through without
/// reporting its usage, and `stilts plugin check` said OK while the gateway never counted the
/// plugin's streamed tokens.
#[test]
fn a_plugin_passing_the_usage_chunk_through_without_reporting_it_fails_its_self_test() {
    let lib = bad_plugin("usage-unreported", &[]);
    let (_, res) = load_copy(&lib, "usage-unreported");
    let err = res.unwrap().self_test().unwrap_err();
    assert_eq!(err.check, "stream usage", "{err}");
    let msg = err.to_string();
    for part in [
        "without reporting usage",
        "StreamStep::usage",
        "docs/plugins.md",
    ] {
        assert!(msg.contains(part), "{msg}");
    }
}

#[test]
fn a_plugin_dropping_the_usage_chunk_fails_its_self_test() {
    let lib = bad_plugin("usage-dropped", &[]);
    let (_, res) = load_copy(&lib, "usage-dropped");
    let err = res.unwrap().self_test().unwrap_err();
    assert_eq!(err.check, "stream usage", "{err}");
    assert!(
        err.to_string().contains("never reported the usage"),
        "{err}"
    );
}

#[test]
fn a_wrong_abi_major_is_refused() {
    let (_, e) = refused("wrong-major", &[]);
    assert!(
        matches!(
            e,
            LoadError::WrongAbiMajor {
                found: 2,
                expected: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("rebuild"));
}

#[test]
fn a_plugin_exporting_only_another_major_symbol_is_refused_with_a_hint() {
    let (_, e) = refused("v2-only", &[]);
    assert!(matches!(e, LoadError::MissingEntrySymbol { .. }), "{e}");
    assert!(e.to_string().contains("built for ABI major 2"), "{e}");
}

#[test]
fn a_wrong_magic_is_refused() {
    let (_, e) = refused("wrong-magic", &[]);
    assert!(matches!(e, LoadError::WrongMagic { .. }), "{e}");
}

#[test]
fn a_too_small_table_is_refused() {
    let (_, e) = refused("small-table", &[]);
    assert!(
        matches!(e, LoadError::TableTooSmall { size: 24, .. }),
        "{e}"
    );
}

#[test]
fn a_plugin_built_for_abi_1_0_loads_without_embeddings() {
    let lib = bad_plugin("abi-1-0", &[]);
    let (_, loaded) = load_copy(&lib, "abi-1-0");
    let plugin = loaded.expect("an ABI 1.0 table is accepted by a 1.1 host");
    assert!(!plugin.serves_embeddings());
    let e = plugin
        .build_embeddings_request_with_config_json(b"{}", b"{}")
        .unwrap_err();
    assert!(
        e.to_string().contains("ABI 1.0"),
        "the refusal says why: {e}"
    );
    // Its chat functions work as before.
    assert!(plugin.classify_error(500, &[], b"").is_ok());
}

#[test]
fn a_plugin_built_for_abi_1_1_keeps_json_metadata_and_answers_as_a_binary_one() {
    let (_, old) = load_copy(&bad_plugin("abi-1-1", &[]), "abi-1-1");
    let old = old.expect("an ABI 1.1 table is accepted by a 1.2 host");
    let (_, new) = load_copy(&bad_plugin("", &[]), "abi-1-2");
    let new = new.unwrap();
    assert_eq!((old.abi_minor(), new.abi_minor()), (1, 2));
    assert_eq!(old.meta_format(), abi::META_JSON, "never asked: JSON");
    assert_eq!(new.meta_format(), abi::META_BINARY, "agreed at load");
    // The same answers through either form: the request head (method, url, headers with the
    // key and extra headers in order), and each kind of stream end.
    let mut c = cfg();
    c.extra_headers = vec![
        ("x-one".into(), "1".into()),
        ("x-empty".into(), String::new()),
    ];
    let [from_old, from_new] = [&old, &new].map(|p| {
        p.build_request(br#"{"messages":[{"role":"user","content":"hi"}]}"#, &c)
            .unwrap()
    });
    assert_eq!(from_old, from_new);
    assert_eq!(from_new.headers.len(), 3);
    for data in [&b"end"[..], b"other"] {
        let [a, b] = [&old, &new].map(|p| {
            let mut st = p.stream_open().unwrap();
            p.stream_event(&mut st, None, data).unwrap()
        });
        assert_eq!(a, b);
        assert!(b.done.is_some());
    }
}

#[test]
fn a_null_table_is_refused() {
    let (_, e) = refused("null-table", &[]);
    assert!(matches!(e, LoadError::NoTable { .. }), "{e}");
}

#[test]
fn an_invalid_description_is_refused() {
    let (_, e) = refused("bad-describe", &[]);
    assert!(matches!(e, LoadError::InvalidDescription { .. }), "{e}");
}

#[test]
fn a_plugin_panicking_in_every_entry_is_refused_and_the_host_lives() {
    let (_, e) = refused("panic-all", &[]);
    match &e {
        LoadError::DescribeFailed { reason, .. } => {
            assert!(reason.contains("describe panics"), "{reason}")
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_plugin_built_with_panic_abort_is_refused() {
    let (_, e) = refused("", &["--config", "profile.dev.panic=\"abort\""]);
    assert!(matches!(e, LoadError::PanicAbort { .. }), "{e}");
}

#[test]
fn panics_in_calls_become_errors_never_crashes() {
    let lib = bad_plugin("panic-calls", &[]);
    let (_, res) = load_copy(&lib, "panic-calls");
    let plugin = res.unwrap();
    assert!(
        matches!(plugin.build_request(b"{\"messages\":[]}", &cfg()), Err(CallError::Panicked(m)) if m.contains("build_request panics"))
    );
    assert!(matches!(
        plugin.parse_response(200, &[], b"{}"),
        Err(CallError::Panicked(_))
    ));
    assert!(matches!(
        plugin.classify_error(500, &[], b""),
        Err(CallError::Panicked(_))
    ));
    let mut st = plugin.stream_open().unwrap();
    assert!(matches!(
        plugin.stream_event(&mut st, None, b"end"),
        Err(CallError::Panicked(_))
    ));
    // After a panic the stream is cut: later events are not parsed.
    let step = plugin.stream_event(&mut st, None, b"end").unwrap();
    assert!(matches!(step.done, Some(StreamEnd::Cut { .. })));
    assert!(matches!(plugin.stream_close(st), Ok(StreamEnd::Cut { .. })));
    assert_eq!(plugin.panic_count(), 4);
    let err = plugin.self_test().unwrap_err();
    assert!(err.to_string().contains("build_request"), "{err}");
}
