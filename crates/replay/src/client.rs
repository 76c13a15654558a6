//! The load client of a replay: sends each of the world's requests at its arrival time on the
//! compressed clock, with its deadline in `X-Stilts-Deadline-Ms`, and records what came back.
//!
//! A request carries its world index in its first message (the fake upstreams read it), asks for
//! `max_tokens` when the scenario sets it (as the simulator tells the router), and is padded to
//! the byte size from which the gateway estimates the world's input tokens (4 bytes per token), so
//! the router sees the same request the simulator's router sees.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use stilts_core::Instant as CoreInstant;
use stilts_gateway::Clock;
use stilts_sim::{Request, Scenario};

use crate::world_upstream::MARKER;

/// Wall time a request may outlive its deadline before it counts as lost.
const LOST_MARGIN: Duration = Duration::from_secs(5);
/// Requests between two progress reports.
const PROGRESS_EVERY: usize = 64;

/// What one request got.
#[derive(Clone, Debug)]
pub(crate) struct RequestOutcome {
    /// A complete answer (a plain 200 with choices, or a stream that ended with `[DONE]` and no
    /// error event).
    pub answered: bool,
    /// From arrival to the end, virtual ns.
    pub latency_ns: u64,
    /// From arrival to the first stream bytes, virtual ns.
    pub ttft_ns: Option<u64>,
    /// Why it failed: the gateway's error code, `stream:CODE` for an in-band error event,
    /// `stream_error` for a stream that ended without `[DONE]`, `lost` (no answer in time) or
    /// `transport`.
    pub reason: Option<String>,
}

/// Everything the client saw.
pub(crate) struct ClientRun {
    /// Per request, in completion order.
    pub outcomes: Vec<RequestOutcome>,
    /// How late each request was sent after its arrival time, virtual ns: how far the machine
    /// kept up with the compressed clock.
    pub send_lateness_ns: Vec<u64>,
}

/// Sends every request; returns their outcomes.
pub(crate) async fn run(
    addr: SocketAddr,
    route: &str,
    scenario: &Scenario,
    requests: &Arc<Vec<Request>>,
    clock: Clock,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> ClientRun {
    let client = match reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "replay: no HTTP client");
            return ClientRun {
                outcomes: Vec::new(),
                send_lateness_ns: Vec::new(),
            };
        }
    };
    let url = Arc::new(format!("http://{addr}/v1/chat/completions"));
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = Vec::with_capacity(requests.len());
    let mut send_lateness_ns = Vec::with_capacity(requests.len());
    for (i, req) in requests.iter().enumerate() {
        tokio::time::sleep_until(clock.tokio(CoreInstant::from_nanos(req.arrival))).await;
        send_lateness_ns.push(clock.now().as_nanos().saturating_sub(req.arrival));
        let body = body_of(route, req, scenario.traffic.max_tokens);
        let (client, url, req) = (client.clone(), Arc::clone(&url), *req);
        tasks.spawn(async move { one(&client, &url, body, req, clock).await });
        while let Some(done) = tasks.try_join_next() {
            out.extend(done.ok());
        }
        if i % PROGRESS_EVERY == 0 {
            progress(i as u64);
        }
    }
    while let Some(done) = tasks.join_next().await {
        out.extend(done.ok());
    }
    progress(requests.len() as u64);
    ClientRun {
        outcomes: out,
        send_lateness_ns,
    }
}

/// The request body: the world index first, padded to the world's input size.
fn body_of(route: &str, req: &Request, max_tokens: Option<u32>) -> Vec<u8> {
    let mut body = serde_json::json!({
        "model": route,
        "messages": [{"role": "user", "content": format!("{MARKER}{} ", req.index)}],
        "stream": req.stream,
    });
    if let Some(max) = max_tokens {
        body["max_tokens"] = serde_json::json!(max);
    }
    let bare = body.to_string().len();
    let target = usize::try_from(req.input_tokens)
        .unwrap_or(usize::MAX)
        .saturating_mul(4);
    if target > bare {
        let text = format!("{MARKER}{} {}", req.index, "x".repeat(target - bare));
        body["messages"][0]["content"] = serde_json::json!(text);
    }
    body.to_string().into_bytes()
}

async fn one(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    req: Request,
    clock: Clock,
) -> RequestOutcome {
    let budget_ns = req.deadline.saturating_sub(req.arrival);
    let deadline_ms = budget_ns.div_ceil(1_000_000).max(1);
    let wall_limit = Duration::from_nanos((budget_ns as f64 / clock.speed()) as u64) + LOST_MARGIN;
    let since_arrival = |clock: &Clock| clock.now().as_nanos().saturating_sub(req.arrival);
    let mut ttft_ns = None;
    let exchange = async {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-stilts-deadline-ms", deadline_ms.to_string())
            .body(body)
            .send()
            .await
            .map_err(|_| "transport".to_owned())?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            let code = error_code(&bytes).unwrap_or_else(|| format!("http_{}", status.as_u16()));
            return Err(code);
        }
        if !req.stream {
            let bytes = response.bytes().await.map_err(|_| "transport".to_owned())?;
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|_| "invalid_answer".to_owned())?;
            return if v.get("choices").is_some() {
                Ok(())
            } else {
                Err("invalid_answer".to_owned())
            };
        }
        let mut response = response;
        let mut tail: Vec<u8> = Vec::new();
        let mut error_event: Option<String> = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if ttft_ns.is_none() {
                        ttft_ns = Some(since_arrival(&clock));
                    }
                    if let Some(at) = find(&chunk, b"data: {\"error\"") {
                        error_event = Some(stream_error_code(&chunk[at + 6..]));
                    }
                    tail.extend_from_slice(&chunk);
                    let keep = tail.len().saturating_sub(64);
                    tail.drain(..keep);
                }
                Ok(None) => break,
                Err(_) => return Err("stream_error".to_owned()),
            }
        }
        if let Some(code) = error_event {
            return Err(code);
        }
        if !tail.ends_with(b"data: [DONE]\n\n") {
            return Err("stream_error".to_owned());
        }
        Ok(())
    };
    let result = tokio::time::timeout(wall_limit, exchange)
        .await
        .unwrap_or_else(|_| Err("lost".to_owned()));
    RequestOutcome {
        answered: result.is_ok(),
        latency_ns: since_arrival(&clock),
        ttft_ns,
        reason: result.err(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `stream:CODE` from an in-band error event (`{"error": {"code": ...}}` up to the line's end).
fn stream_error_code(event: &[u8]) -> String {
    let line = event.split(|b| *b == b'\n').next().unwrap_or(event);
    let code = error_code(line).unwrap_or_else(|| "error_event".to_owned());
    format!("stream:{code}")
}

/// The `error.code` (else `error.type`) of a JSON error body or event.
fn error_code(json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let e = v.get("error")?;
    e.get("code")
        .and_then(|c| c.as_str())
        .or_else(|| e.get("type").and_then(|t| t.as_str()))
        .map(str::to_owned)
}
