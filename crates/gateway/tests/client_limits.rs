//! Client connections under limits, with real sockets: a slowloris client, a half-sent body, idle
//! keep-alive sockets, more connections than allowed, a scrape storm. None of them may wedge the
//! gateway for other clients, and a slow upstream answer is never cut by a client-side limit.
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

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_scrape_storm_shares_renders_and_bounds_memory() {
    let up = MockUpstream::start_local(MockConfig::named("a"))
        .await
        .unwrap();
    let mut toml = SERVER.to_owned();
    for r in 0..1_500 {
        toml.push_str(&format!(
            "[[routes.route-{r}.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
            up.base_url()
        ));
    }
    let h = Harness::start(&toml).await;
    let one = h.get("/metrics").await;
    assert!(one.len() > 1_000_000, "{} bytes", one.len());
    // The documented cardinality bound (docs/configuration.md): at most 12 + 49 per route + 21
    // per deployment.
    let series = one
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert!(series <= 12 + 49 * 1_500 + 21 * 1_500, "{series} series");
    assert_eq!(
        stilts_gateway::metrics::series_bound(1_500, 1_500),
        12 + 49 * 1_500 + 21 * 1_500
    );
    let before = rss_kib();
    let scrapes = (0..40).map(|_| {
        let http = h.http.clone();
        let url = h.url("/metrics");
        tokio::spawn(async move {
            use futures_util::StreamExt;
            use std::hash::Hasher;
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            // Hashed as it streams: the test holds no copy of its own.
            let mut hash = std::collections::hash_map::DefaultHasher::new();
            let mut chunks = r.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                hash.write(&chunk.unwrap());
            }
            (status, hash.finish())
        })
    });
    let results = futures_util::future::join_all(scrapes).await;
    let mut bodies = std::collections::HashSet::new();
    let mut served = 0;
    for r in results {
        let (status, body) = r.unwrap();
        match status {
            200 => {
                served += 1;
                bodies.insert(body);
            }
            503 => {}
            other => panic!("scrape answered {other}"),
        }
    }
    assert!(served >= 8, "only {served} scrapes served");
    assert!(
        bodies.len() <= 3,
        "{} distinct renders for one storm",
        bodies.len()
    );
    let grown_kib = rss_kib().saturating_sub(before);
    let render_kib = (one.len() / 1024) as u64;
    assert!(
        grown_kib < 12 * render_kib,
        "RSS grew {grown_kib} KiB for renders of {render_kib} KiB"
    );
}
