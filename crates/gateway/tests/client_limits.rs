//! Client connections under limits, with real sockets: a slowloris client, a half-sent body, idle
//! keep-alive sockets (one and thousands), more connections than allowed, a client that stops
//! reading, and malformed framing (conflicting `Content-Length` and `Transfer-Encoding`, oversized
//! heads and bodies, JSON nested beyond any parser's depth). None of them may wedge the gateway for
//! other clients, smuggle a second request, or get anything but a clear error; and a slow upstream
//! answer is never cut by a client-side limit.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use std::time::Duration;
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// A gateway over one healthy upstream (answering after `latency_ms`), with `limits` added to
/// `[server]`.
async fn gateway(limits: &str, latency_ms: u64) -> (Harness, MockUpstream) {
    let mut cfg = MockConfig::named("a");
    cfg.faults = Faults {
        latency_ms,
        ..Faults::default()
    };
    let up = MockUpstream::start_local(cfg).await.unwrap();
    let toml = format!(
        "{SERVER}{limits}\n[[routes.chat.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"a-model\"\n",
        up.base_url()
    );
    (Harness::start(&toml).await, up)
}

/// Reads until the server closes the connection (or `limit` passes); returns what was read and
/// how long it took.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(limit.saturating_sub(start.elapsed()), tcp.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), None),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    Some(start.elapsed()),
                );
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` on a new connection and reads until the gateway closes it (or 5 s pass).
async fn raw_exchange(h: &Harness, bytes: &[u8]) -> (String, Option<Duration>) {
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    read_until_closed(&mut tcp, Duration::from_secs(5)).await
}

/// A request head for `path` with `headers` (each line without its CRLF) and the blank line.
fn head(path: &str, headers: &[String]) -> Vec<u8> {
    let mut out = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn a_slowloris_client_is_closed_at_the_header_read_limit() {
    let (h, _up) = gateway("header_read_timeout_ms = 400\nidle_timeout_ms = 60000", 0).await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Dribble a header byte every 100 ms: activity, but never a whole head.
    let dribble = async {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tcp.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = timeout(Duration::from_secs(3), dribble).await;
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "the slowloris connection was not closed");
    // A client that connects and sends nothing is closed too.
    let mut silent = TcpStream::connect(h.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a silent connection stayed open");
    let metrics = h.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "stilts_client_timeouts_total{stage=\"header_read\"}"
        ) >= 2.0,
        "{metrics}"
    );
    // Others are served.
    let (status, _, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_slow_answer_is_not_cut() {
    // The upstream takes 1.2 s: longer than both client limits, which must not apply while a
    // request is in progress.
    let (h, _up) = gateway("header_read_timeout_ms = 400\nidle_timeout_ms = 500", 1_200).await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    let body = serde_json::to_vec(&request("chat")).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let complete = timeout(Duration::from_secs(10), async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before the answer: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                break;
            }
        }
    })
    .await;
    assert!(complete.is_ok(), "no whole answer");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    // Kept alive, then idle: closed at the idle limit.
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the idle connection stayed open");
    let metrics = h.get("/metrics").await;
    assert_eq!(
        metric(&metrics, "stilts_client_timeouts_total{stage=\"idle\"}"),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_half_sent_body_gets_a_408_at_the_body_read_limit() {
    let (h, up) = gateway("body_read_timeout_ms = 400", 0).await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the connection stayed open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_read_timeout_ms"), "{answer}");
    assert_eq!(up.stats().requests, 0);
    let metrics = h.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "stilts_client_timeouts_total{stage=\"body_read\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_get_a_503_and_the_gateway_recovers() {
    let (h, _up) = gateway("max_connections = 8\nheader_read_timeout_ms = 600", 0).await;
    // Far more idle sockets than allowed, as a careless or hostile client would open.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(h.addr).await.unwrap());
    }
    // The ones over the limit were answered at once with a clear error and closed.
    let mut refused = 0;
    for tcp in idle.iter_mut().skip(8) {
        let (answer, closed) = read_until_closed(tcp, Duration::from_secs(2)).await;
        if closed.is_some() && answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains("too_many_connections"), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("retry-after: 1"));
            refused += 1;
        }
    }
    assert!(refused >= 150, "only {refused} of 192 were turned away");
    // Once the idle ones hit their header limit, requests are served again.
    tokio::time::sleep(Duration::from_millis(900)).await;
    for _ in 0..5 {
        let (status, _, body) = h.chat(request("chat")).await;
        assert_eq!(status, 200, "{body}");
    }
    let metrics = h.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "stilts_client_connections_refused_total{reason=\"max_connections\"}"
        ) >= 150.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_need_their_key_when_one_is_configured() {
    set_env("STILTS_TEST_METRICS_KEY", "mk-1");
    let (h, _up) = gateway("metrics_keys_env = [\"STILTS_TEST_METRICS_KEY\"]", 0).await;
    let status = |r: reqwest::Response| r.status().as_u16();
    let url = h.url("/metrics");
    assert_eq!(status(h.http.get(&url).send().await.unwrap()), 401);
    assert_eq!(
        status(h.http.get(&url).bearer_auth("mk-2").send().await.unwrap()),
        401
    );
    let ok = h.http.get(&url).bearer_auth("mk-1").send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert!(
        ok.text()
            .await
            .unwrap()
            .contains("stilts_client_connections")
    );
    // Client routes are unaffected (no client keys configured).
    let (code, _, _) = h.chat(request("chat")).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_its_stream_is_disconnected_and_the_attempt_cancelled() {
    // A long answer, as fast as the upstream can send it.
    let mut cfg = MockConfig::named("long");
    cfg.reply = "word ".repeat(150_000);
    let up = MockUpstream::start_local(cfg).await.unwrap();
    let toml = format!(
        "{SERVER}idle_timeout_ms = 500\n[[routes.chat.deployments]]\nname = \"long\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
        up.base_url()
    );
    let h = Harness::start(&toml).await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    let body = serde_json::to_vec(&stream_request("chat")).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    // Read the first bytes (the answer started), then stop reading.
    let mut first = [0u8; 64];
    let n = tcp.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let gone = {
        let h = &h;
        async move {
            loop {
                let metrics = h.get("/metrics").await;
                // The send limit closes the connection; the stream it dropped is counted as the
                // client gone a moment later (the drop cancels the upstream attempt).
                if metric(&metrics, "stilts_client_timeouts_total{stage=\"send\"}") >= 1.0
                    && metrics.contains("action=\"client_gone\"} 1")
                {
                    return metrics;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let metrics = timeout(Duration::from_secs(60), gone)
        .await
        .expect("the silent reader was not disconnected, or its upstream attempt not cancelled");
    assert!(
        metrics.contains("action=\"client_gone\"} 1"),
        "the upstream attempt was cancelled:\n{metrics}"
    );
    drop(tcp);
}

#[tokio::test]
async fn conflicting_content_length_and_transfer_encoding_never_smuggle_a_request() {
    let (h, up) = gateway("", 0).await;
    let body = serde_json::to_vec(&request("chat")).unwrap();
    let chunked = [
        format!("{:x}\r\n", body.len()).into_bytes(),
        body.clone(),
        b"\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    // A second request hidden after the body, for a server that framed by Content-Length.
    let smuggled = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
    let both = [
        head(
            "/v1/chat/completions",
            &[
                "content-length: 5".into(),
                "transfer-encoding: chunked".into(),
            ],
        ),
        chunked,
        smuggled.to_vec(),
    ]
    .concat();
    let (answer, closed) = raw_exchange(&h, &both).await;
    // Framed by Transfer-Encoding (RFC 9112 §6.3), answered once, and the connection closed: what
    // followed the body is never read as a request.
    assert!(closed.is_some(), "the connection stayed open: {answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(up.stats().requests, 1);
    // Two different lengths, or a transfer coding that is not chunked: refused, closed.
    for framing in [
        vec![
            format!("content-length: {}", body.len()),
            "content-length: 7".into(),
        ],
        vec![
            "transfer-encoding: identity".into(),
            format!("content-length: {}", body.len()),
        ],
    ] {
        let (answer, closed) = raw_exchange(
            &h,
            &[head("/v1/chat/completions", &framing), body.clone()].concat(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{framing:?}: {answer}");
        assert!(closed.is_some(), "{framing:?}: the connection stayed open");
    }
    assert_eq!(
        up.stats().requests,
        1,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused_at_once_and_closed() {
    let (h, up) = gateway("body_limit_bytes = 65536", 0).await;
    // A header of 1 MiB, and 500 small headers: 431, closed.
    let long = head(
        "/v1/chat/completions",
        &[format!("x-big: {}", "a".repeat(1 << 20))],
    );
    let many: Vec<String> = (0..500).map(|i| format!("x-h{i}: v")).collect();
    for (what, bytes) in [
        ("a 1 MiB header", long),
        ("500 headers", head("/v1/chat/completions", &many)),
    ] {
        let (answer, closed) = raw_exchange(&h, &bytes).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{what}: {answer}");
        assert!(closed.is_some(), "{what}: the connection stayed open");
    }
    // A declared body of a gigabyte: 413 before any of it is sent, and the connection closed (the
    // client is still "sending" it: no body byte follows the head).
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(&head(
        "/v1/chat/completions",
        &["content-length: 1000000000".into()],
    ))
    .await
    .unwrap();
    let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("server.body_limit_bytes"), "{answer}");
    assert!(
        closed.is_some(),
        "the connection stayed open for the rest of the body"
    );
    // A chunked body that grows past the limit: 413 too.
    let piece = vec![b'a'; 70_000];
    let chunked = [
        head(
            "/v1/chat/completions",
            &["transfer-encoding: chunked".into()],
        ),
        format!("{:x}\r\n", piece.len()).into_bytes(),
        piece,
        b"\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    let (answer, _) = raw_exchange(&h, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(up.stats().requests, 0);
    let (status, _, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn json_nested_past_any_parsers_depth_is_a_400_where_read_and_dropped_where_ignored() {
    let (h, up) = gateway("", 0).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies = [
        // In a field the request reads, and in one it ignores.
        (
            "/v1/chat/completions",
            format!(r#"{{"model":"chat","messages":[{{"role":"user","content":{deep}}}]}}"#),
        ),
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"chat","messages":[{{"role":"user","content":"hi"}}],"x":{deep}}}"#
            ),
        ),
        (
            "/v1/messages",
            format!(
                r#"{{"model":"chat","max_tokens":5,"messages":[{{"role":"user","content":{deep}}}]}}"#
            ),
        ),
        (
            "/v1/responses",
            format!(r#"{{"model":"chat","input":{deep}}}"#),
        ),
        (
            "/v1/embeddings",
            format!(r#"{{"model":"chat","input":{deep}}}"#),
        ),
    ];
    for (path, body) in bodies {
        let response = h
            .http
            .post(h.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("recursion limit"), "{path}: {text}");
    }
    assert_eq!(up.stats().requests, 0);
    let (status, _, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{body}");
    // A field no reader keeps (an unknown field of a tool call) is skipped without recursing, at
    // any depth: the request is answered, without the field, and nothing overflows.
    let dropped = format!(
        r#"{{"model":"chat","messages":[{{"role":"assistant","content":null,"tool_calls":[{{"id":"c1","type":"function","function":{{"name":"f","arguments":"{{}}"}},"extra":{deep}}}]}},{{"role":"user","content":"hi"}}]}}"#
    );
    let response = h
        .http
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(dropped)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn thousands_of_idle_keep_alive_connections_starve_no_one_and_are_closed() {
    const IDLE: usize = 2_000;
    let (h, _up) = gateway("idle_timeout_ms = 8000", 0).await;
    // Each connection makes one request, reads its answer and then sits idle, kept alive.
    let body = serde_json::to_vec(&request("chat")).unwrap();
    let request_bytes = [
        head(
            "/v1/chat/completions",
            &[format!("content-length: {}", body.len())],
        ),
        body,
    ]
    .concat();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut tcp = TcpStream::connect(h.addr).await.unwrap();
        tcp.write_all(&request_bytes).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        idle.push(tcp);
    }
    let metrics = h.get("/metrics").await;
    assert!(
        metric(&metrics, "stilts_client_connections") >= IDLE as f64,
        "{metrics}"
    );
    // A new client is served while they sit there.
    let (status, _, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{body}");
    // At the idle limit every one of them is closed by the gateway.
    let mut still_open = 0;
    for tcp in &mut idle {
        let (_, closed) = read_until_closed(tcp, Duration::from_secs(20)).await;
        if closed.is_none() {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "idle keep-alive connections the gateway never closed"
    );
    let metrics = h.get("/metrics").await;
    assert!(
        metric(&metrics, "stilts_client_timeouts_total{stage=\"idle\"}") >= IDLE as f64,
        "{metrics}"
    );
}
