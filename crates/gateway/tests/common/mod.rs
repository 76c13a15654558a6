//! Test harness: builds the real openai plugin with cargo, starts gateways on loopback over a
//! config file, captures every log line, and offers small HTTP helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test harness

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use stilts_gateway::{Gateway, GatewayConfig, server};

pub mod redis_server;

/// Builds `stilts-plugin-openai` as a cdylib with cargo (once per test binary) and returns the
/// library's path, read from cargo's JSON artifact messages. Never linked statically.
pub fn openai_plugin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_plugin("stilts-plugin-openai"))
        .clone()
}

/// Builds the anthropic plugin (see [`openai_plugin`]).
pub fn anthropic_plugin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_plugin("stilts-plugin-anthropic"))
        .clone()
}

/// Builds the gemini plugin (see [`openai_plugin`]).
pub fn gemini_plugin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_plugin("stilts-plugin-gemini"))
        .clone()
}

/// An Anthropic Messages stream, as the API sends it, answering `pieces` of text (one
/// `content_block_delta` each) and ending normally with usage.
pub fn anthropic_text_stream(pieces: &[&str]) -> String {
    let mut events = vec![
        (
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-b","stop_reason":null,"usage":{"input_tokens":9,"output_tokens":1}}}"#.to_owned(),
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_owned(),
        ),
    ];
    for piece in pieces {
        let delta = serde_json::json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        });
        events.push(("content_block_delta", delta.to_string()));
    }
    events.extend([
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#.to_owned(),
        ),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}"#.to_owned(),
        ),
        ("message_stop", r#"{"type":"message_stop"}"#.to_owned()),
    ]);
    events
        .iter()
        .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
        .collect()
}

fn build_plugin(package: &str) -> PathBuf {
    {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .to_path_buf();
        let out = Command::new(cargo)
            .args([
                "build",
                "-p",
                package,
                "--lib",
                "--message-format=json-render-diagnostics",
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build for a plugin");
        assert!(
            out.status.success(),
            "building {package} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            let kinds = msg["target"]["kind"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !kinds.iter().any(|k| k == "cdylib") {
                continue;
            }
            for f in msg["filenames"].as_array().cloned().unwrap_or_default() {
                let f = f.as_str().unwrap_or_default();
                if f.ends_with(std::env::consts::DLL_SUFFIX) {
                    return PathBuf::from(f);
                }
            }
        }
        panic!("cargo built no cdylib for {package}");
    }
}

/// Every log line of this test binary.
pub static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (debug level for stilts).
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "stilts_gateway=debug,info",
            ))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// The captured log text so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// A gateway served on loopback from a config file in a temp dir.
pub struct Harness {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    pub http: reqwest::Client,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// `[server]` preamble for test configs.
pub const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\nreload_poll_ms = 0\n";

/// Replaces `PLUGIN`, `ANTHROPIC` and `GEMINI` with the built openai, anthropic and gemini
/// plugins' paths (the anthropic and gemini plugins are built only when their placeholder appears).
pub fn with_plugin(toml: &str) -> String {
    let toml = if toml.contains("ANTHROPIC") {
        toml.replace("ANTHROPIC", &anthropic_plugin().display().to_string())
    } else {
        toml.to_owned()
    };
    let toml = if toml.contains("GEMINI") {
        toml.replace("GEMINI", &gemini_plugin().display().to_string())
    } else {
        toml
    };
    toml.replace("PLUGIN", &openai_plugin().display().to_string())
}

impl Harness {
    /// Writes `toml` (with `PLUGIN` replaced), loads it and serves it.
    pub async fn start(toml: &str) -> Harness {
        Harness::start_with_clock(toml, stilts_gateway::engine::Clock::default()).await
    }

    /// [`Harness::start`] with the routers on `clock` (e.g. compressed, so a test of minutes of
    /// routing time runs in seconds).
    pub async fn start_with_clock(toml: &str, clock: stilts_gateway::engine::Clock) -> Harness {
        capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("stilts.toml");
        std::fs::write(&config_path, with_plugin(toml)).unwrap();
        let valid = GatewayConfig::load(&config_path).expect("valid config");
        let gateway = Gateway::with_clock(&valid, clock, None).expect("gateway builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server::serve(gateway.clone(), listener, async move {
            let _ = rx.await;
        }));
        Harness {
            addr,
            gateway,
            http: reqwest::Client::new(),
            config_path,
            _dir: dir,
            stop: Some(tx),
            served,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// POSTs a plain chat request.
    pub async fn chat(&self, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(self.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, json)
    }

    /// POSTs a stream request and reads the whole body.
    pub async fn stream(&self, body: Value) -> (u16, reqwest::header::HeaderMap, String) {
        let r = self
            .http
            .post(self.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    }

    /// GETs `path`. A connection the server closed while it sat idle in the client's pool (short
    /// `idle_timeout_ms` in some tests) is retried once, as a real client would.
    pub async fn get(&self, path: &str) -> String {
        let response = match self.http.get(self.url(path)).send().await {
            Ok(r) => r,
            Err(_) => self.http.get(self.url(path)).send().await.unwrap(),
        };
        response.text().await.unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A chat request for `route`.
pub fn request(route: &str) -> Value {
    serde_json::json!({"model": route, "messages": [{"role": "user", "content": "Say hi."}]})
}

/// A stream request for `route`.
pub fn stream_request(route: &str) -> Value {
    serde_json::json!({"model": route, "stream": true, "messages": [{"role": "user", "content": "Say hi."}]})
}

/// The text of an SSE body, the number of `[DONE]` markers, and the error event if any.
pub fn sse_text(body: &str) -> (String, usize, Option<Value>) {
    let mut text = String::new();
    let mut done = 0;
    let mut error = None;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done += 1;
            continue;
        }
        let v: Value = serde_json::from_str(data).expect("every forwarded event is JSON");
        if v.get("error").is_some() {
            error = Some(v);
            continue;
        }
        if let Some(t) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(t);
        }
    }
    (text, done, error)
}

/// Polls `check` every 20 ms for up to `limit`; returns whether it became true.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Sets a process environment variable. Each name is used by one test only.
pub fn set_env(name: &str, value: &str) {
    #[allow(unsafe_code)]
    // reason: edition 2024 marks set_var unsafe; the name is unique to one test
    // SAFETY: no other thread reads or writes this variable while it is set.
    unsafe {
        std::env::set_var(name, value)
    }
}

/// A `priority` route over the given upstreams, in order.
pub fn priority_route(
    route: &str,
    ups: &[(&str, &stilts_gateway::mock::MockUpstream)],
    extra: &str,
) -> String {
    let mut s = format!("[routes.{route}.router]\npolicy = \"priority\"\n{extra}\n");
    for (i, (name, up)) in ups.iter().enumerate() {
        s.push_str(&format!(
            "[[routes.{route}.deployments]]\nname = \"{name}\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"{name}-model\"\npriority = {i}\n",
            up.base_url()
        ));
    }
    s
}

/// A response header's value as text (empty when absent or not text).
pub fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A fake upstream on loopback named `name`, with standing `faults`.
pub async fn mock(
    name: &str,
    faults: stilts_gateway::mock::Faults,
) -> stilts_gateway::mock::MockUpstream {
    let mut cfg = stilts_gateway::mock::MockConfig::named(name);
    cfg.faults = faults;
    stilts_gateway::mock::MockUpstream::start_local(cfg)
        .await
        .unwrap()
}

/// `(event name, data)` of each event of a stream of named events (Anthropic Messages, OpenAI
/// Responses), checking that every event has both lines.
pub fn named_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').expect("an event: line and a data: line");
            let name = name.strip_prefix("event: ").expect("an event: line first");
            let data = data.strip_prefix("data: ").expect("a data: line");
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}
