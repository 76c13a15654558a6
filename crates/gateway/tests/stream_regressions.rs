//! Regression tests, each named after the bug it pins (found in review): no continuation after a
//! finish reason, no key in a mid-stream error event, no 413 for a body cut mid-upload.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.
#![allow(unsafe_code)] // std::env::set_var is unsafe in edition 2024; see the SAFETY comment.

mod common;

use bytes::Bytes;
use common::{anthropic_plugin, anthropic_text_stream, openai_plugin};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stilts_gateway::{ChatReply, Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Parts = Vec<(u64, Vec<u8>)>;

/// A raw HTTP/1.1 upstream: answers every request with 200 text/event-stream and writes `parts`
/// (delay ms before each), then closes. Records request bodies.
async fn raw_upstream(parts: Parts) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let parts = parts.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 65536];
                loop {
                    let n = s.read(&mut tmp).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        while buf.len() < i + 4 + len {
                            let n = s.read(&mut tmp).await.unwrap();
                            buf.extend_from_slice(&tmp[..n]);
                        }
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[i + 4..]).into_owned());
                        break;
                    }
                }
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n").await.unwrap();
                for (delay, bytes) in parts {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                    let _ = s.flush().await;
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> Vec<u8> {
    let v = serde_json::json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"a-model",
        "choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
    format!("data: {v}\n\n").into_bytes()
}

async fn collect(gw: &Gateway, body: serde_json::Value) -> (String, String) {
    match gw
        .chat(Bytes::from(serde_json::to_vec(&body).unwrap()), None)
        .await
    {
        Ok(ChatReply::Stream {
            provider, stream, ..
        }) => {
            let parts: Vec<Bytes> = stream.collect().await;
            (
                provider,
                parts
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
            )
        }
        Ok(other) => panic!("not a stream: {other:?}"),
        Err(e) => panic!("error {} {}", e.status, e.message),
    }
}

fn gateway(toml: &str) -> Gateway {
    let raw = GatewayConfig::parse(toml).unwrap();
    let valid = raw.validate(std::path::Path::new("/tmp")).unwrap();
    Gateway::new(&valid).unwrap()
}

fn req() -> serde_json::Value {
    serde_json::json!({"model":"s","stream":true,"messages":[{"role":"user","content":"hi"}]})
}

/// A stream whose finish reason already reached the client and that then breaks is complete: it
/// is never "continued" elsewhere (which would append text after the finish).
#[tokio::test]
async fn a_stream_that_breaks_after_its_finish_reason_is_not_continued() {
    let a_parts: Parts = vec![
        (
            0,
            [
                chunk(
                    serde_json::json!({"role":"assistant","content":"The answer is 42."}),
                    None,
                ),
                chunk(serde_json::json!({}), Some("stop")),
            ]
            .concat(),
        ),
        (100, b"data: {not json\n\n".to_vec()),
    ];
    let (a_url, _) = raw_upstream(a_parts).await;
    let sse = anthropic_text_stream(&[" EXTRA TEXT AFTER FINISH"]);
    let (b_url, _) = raw_upstream(vec![(0, sse.into_bytes())]).await;
    let (openai, anthropic) = (openai_plugin(), anthropic_plugin());
    let (openai, anthropic) = (openai.display(), anthropic.display());
    let gw = gateway(&format!(
        "[routes.s.router]\npolicy = \"priority\"\n\
         [[routes.s.deployments]]\nname = \"a\"\nplugin = \"{openai}\"\nbase_url = \"{a_url}\"\nmodel = \"a-model\"\n\
         [[routes.s.deployments]]\nname = \"b\"\nplugin = \"{anthropic}\"\nbase_url = \"{b_url}/v1\"\nmodel = \"claude-b\"\npriority = 1\nprefill_continuation = true\n"
    ));
    let (provider, body) = collect(&gw, req()).await;
    assert_eq!(provider, "a");
    assert!(!body.contains("EXTRA TEXT AFTER FINISH"), "{body}");
    assert!(body.contains("\"finish_reason\":\"stop\""), "{body}");
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "a finished answer ends cleanly:\n{body}"
    );
}

/// A mid-stream cut reason is scrubbed like every other failure: an upstream event echoing the key
/// must not put it in the client's error event.
#[tokio::test]
async fn a_mid_stream_cut_reason_never_carries_the_key() {
    const KEY: &str = "sk-review-secret-123";
    // SAFETY: no other thread of this test binary reads or writes this variable.
    unsafe { std::env::set_var("STREAM_REGRESSION_KEY", KEY) };
    let a_parts: Parts = vec![
        (
            0,
            chunk(
                serde_json::json!({"role":"assistant","content":"Hello"}),
                None,
            ),
        ),
        (
            100,
            format!("data: {{\"choices\":\"invalid key {KEY}\"}}\n\n").into_bytes(),
        ),
    ];
    let (a_url, _) = raw_upstream(a_parts).await;
    let openai = openai_plugin();
    let openai = openai.display();
    let gw = gateway(&format!(
        "[[routes.s.deployments]]\nname = \"a\"\nplugin = \"{openai}\"\nbase_url = \"{a_url}\"\nmodel = \"a-model\"\napi_key_env = \"STREAM_REGRESSION_KEY\"\n"
    ));
    let (_, body) = collect(&gw, req()).await;
    assert!(body.contains("stream_interrupted"), "{body}");
    assert!(!body.contains(KEY), "key in the client's stream:\n{body}");
}

/// A client that stops mid-upload gets 400 (an unreadable body), not 413 (too large): the body was
/// small and nothing was routed.
#[tokio::test]
async fn a_body_cut_mid_upload_is_a_bad_request_not_too_large() {
    let openai = openai_plugin();
    let config = format!(
        "{}[[routes.s.deployments]]\nname = \"a\"\nplugin = \"{}\"\nbase_url = \"http://127.0.0.1:9\"\nmodel = \"m\"\n",
        common::SERVER,
        openai.display()
    );
    let h = common::Harness::start(&config).await;
    let mut socket = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    socket
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    socket.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway did not answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("unreadable_body"), "{answer}");
}

/// The anthropic plugin ends every stream with a usage-only chunk (`choices: []`): a client that
/// did not ask for usage must not get it, one that asked must, both through the real plugin.
#[tokio::test]
async fn an_anthropic_stream_has_a_usage_chunk_only_when_asked() {
    let sse = anthropic_text_stream(&["Hello."]);
    for asked in [false, true] {
        let (url, _) = raw_upstream(vec![(0, sse.clone().into_bytes())]).await;
        let anthropic = anthropic_plugin();
        let gw = gateway(&format!(
            "[routes.s.router]\npolicy = \"priority\"\n\
             [[routes.s.deployments]]\nname = \"b\"\nplugin = \"{}\"\nbase_url = \"{url}/v1\"\nmodel = \"claude-b\"\n",
            anthropic.display()
        ));
        let mut request = req();
        if asked {
            request["stream_options"] = serde_json::json!({"include_usage": true});
        }
        let (provider, body) = collect(&gw, request).await;
        assert_eq!(provider, "b");
        let usage_only = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
            .filter(|c| c["choices"].as_array().is_some_and(Vec::is_empty))
            .count();
        assert_eq!(usage_only, usize::from(asked), "asked: {asked}\n{body}");
        assert!(body.contains("Hello."), "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
}
