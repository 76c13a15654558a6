//! A fault-injecting fake upstream that speaks the OpenAI Chat Completions and the Anthropic
//! Messages dialects.
//!
//! Used by the embedded demo, the integration tests, the bench, `stilts mock-upstream` and
//! `stilts replay`. It answers `POST /v1/chat/completions` and `POST /v1/messages` (plain and
//! `stream: true`, each in its API's own body, event and error shapes: see `wire`) with a short
//! canned answer (a tool call when tools are offered, JSON when JSON is asked for: see
//! `content`; `n` choices when OpenAI's `n` asks for several) and injects the faults an LLM provider shows in practice, each a knob of [`Faults`]: an error
//! status (with an OpenAI error `code` and `Retry-After`), latency before the headers, a hang, a
//! slow first token, a cut connection, a stall, a malformed chunk and a missing `[DONE]`. A
//! [`Schedule`] adds periodic outages and 429s (the demo's "primary").
//!
//! Faults can be changed while it runs: through the [`MockUpstream`] handle in tests, or over
//! HTTP with `POST /_mock/faults` (JSON [`Faults`]), `POST /_mock/script` (a JSON list of
//! [`Faults`], one per coming request, before the standing faults apply again) and read with
//! `GET /_mock/stats`. It counts requests and requests the client abandoned before the answer was
//! complete, so tests can see cancellation reach the upstream.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod content;
mod wire;
use wire::Answer;

/// The most choices (OpenAI's `n`) one answer has: OpenAI's own limit.
const MAX_CHOICES: u64 = 128;
pub use wire::{Dialect, error_parts};

/// The faults applied to a request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer with this HTTP error status.
    pub status: Option<u16>,
    /// `error.code` of an OpenAI error body (`rate_limit_exceeded`, `insufficient_quota`,
    /// `context_length_exceeded`, …), or `error.type` of an Anthropic one (`overloaded_error`,
    /// `billing_error`, …).
    pub error_code: Option<String>,
    /// The error's message (default: one that fits the code).
    pub error_message: Option<String>,
    /// `Retry-After` header, in seconds.
    pub retry_after_s: Option<f64>,
    /// Delay before the response headers.
    pub latency_ms: u64,
    /// Never answer (the connection stays open).
    pub hang: bool,
    /// Streams: delay between the headers and the first content chunk.
    pub first_token_ms: u64,
    /// Streams: delay between content chunks.
    pub chunk_interval_ms: u64,
    /// Streams: abort the connection after this many content chunks (no finish reason).
    pub cut_after: Option<u32>,
    /// Streams: stop sending after this many content chunks and keep the connection open.
    pub stall_after: Option<u32>,
    /// Streams: send an event that is not JSON after this many content chunks.
    pub malformed_after: Option<u32>,
    /// Streams: after this many content chunks, send the provider's in-band overload error
    /// (Anthropic's `event: error` with `overloaded_error`, OpenAI's `data: {"error": …}`) and
    /// end the stream, as providers do after a 200.
    pub overload_event_after: Option<u32>,
    /// Streams: send the finish reason and close without `data: [DONE]`.
    pub no_done: bool,
    /// A 401 message repeats the presented key (to test that stilts scrubs it).
    pub echo_key: bool,
    /// Successful answers report this many requests left in the rate limit (OpenAI's
    /// `x-ratelimit-remaining-requests`, Anthropic's `anthropic-ratelimit-requests-remaining`).
    pub ratelimit_remaining_requests: Option<u64>,
    /// When that limit resets, in milliseconds from the answer (default 1 000).
    pub ratelimit_reset_ms: Option<u64>,
}

/// Periodic trouble, for the demo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Cycle length; 0 disables outages.
    pub period_ms: u64,
    /// The last `outage_ms` of each cycle answer 503.
    pub outage_ms: u64,
    /// Every Nth request answers 429 with `Retry-After: 1`; 0 disables.
    pub rate_limit_every: u64,
}

/// What a fake upstream does with one request: the [`Faults`] with exact timings, plus what only a
/// [`Planner`] asks for. [`Plan::from_faults`] is the plan of the standing faults and the script.
#[derive(Default)]
pub struct Plan {
    /// Status, error code, Retry-After, hang, cut, stall, malformed chunk, missing `[DONE]` (their
    /// `*_ms` timings are replaced by the fields below).
    pub faults: Faults,
    /// Delay before the response headers.
    pub latency: Duration,
    /// Streams: delay between the headers and the first content chunk.
    pub first_token: Duration,
    /// Streams: delay between content chunks.
    pub chunk_interval: Duration,
    /// Answer the headers, then break the connection before any body: a connection that fails,
    /// as a client sees a refused or reset one.
    pub reset: bool,
    /// Plain answers: a body that is not JSON.
    pub malformed_body: bool,
    /// Content chunks of a stream (each a word of the reply, repeated as needed); default: one per
    /// word of the reply.
    pub content_chunks: Option<u32>,
    /// `usage` reported as (prompt, completion) tokens; default: estimated from the sizes.
    pub usage: Option<(u64, u64)>,
    /// Held until the answer ends or the client goes away (e.g. a provider's capacity slot).
    pub hold: Option<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("faults", &self.faults)
            .field("latency", &self.latency)
            .field("first_token", &self.first_token)
            .field("chunk_interval", &self.chunk_interval)
            .field("reset", &self.reset)
            .field("malformed_body", &self.malformed_body)
            .field("content_chunks", &self.content_chunks)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// The plan of `faults`, with their millisecond timings.
    pub fn from_faults(faults: Faults) -> Self {
        Plan {
            latency: Duration::from_millis(faults.latency_ms),
            first_token: Duration::from_millis(faults.first_token_ms),
            chunk_interval: Duration::from_millis(faults.chunk_interval_ms),
            faults,
            ..Plan::default()
        }
    }
}

/// Decides each request's [`Plan`] from its JSON body, instead of the standing faults: how
/// `stilts replay` makes a fake upstream play a scenario provider's fate for each attempt. It may
/// wait (a provider's queue) before answering.
pub trait Planner: Send + Sync + 'static {
    /// The plan for `request` (the parsed body), arrived at this upstream's `path`.
    fn plan(
        &self,
        path: &'static str,
        request: &serde_json::Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Plan> + Send + '_>>;
}

/// How to run a fake upstream.
#[derive(Clone)]
pub struct MockConfig {
    /// Name, used in the answer text and logs.
    pub name: String,
    /// The answer's text.
    pub reply: String,
    /// Standing faults.
    pub faults: Faults,
    /// Periodic outages and rate limits.
    pub schedule: Schedule,
    /// Require `Authorization: Bearer <key>`.
    pub require_key: Option<String>,
    /// Plans each request (replaces the faults, the script and the schedule).
    pub planner: Option<Arc<dyn Planner>>,
}

impl std::fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConfig")
            .field("name", &self.name)
            .field("faults", &self.faults)
            .field("schedule", &self.schedule)
            .field("planner", &self.planner.is_some())
            .finish_non_exhaustive()
    }
}

impl MockConfig {
    /// A healthy upstream named `name`.
    pub fn named(name: &str) -> Self {
        MockConfig {
            name: name.to_owned(),
            reply: format!("Hello from {name}! This answer came from a stilts mock upstream."),
            faults: Faults::default(),
            schedule: Schedule::default(),
            require_key: None,
            planner: None,
        }
    }
}

/// Counters of a fake upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MockStats {
    /// Chat requests received.
    pub requests: u64,
    /// Requests whose client went away before the answer was complete.
    pub abandoned: u64,
}

struct MockState {
    config: MockConfig,
    faults: Mutex<Faults>,
    script: Mutex<VecDeque<Faults>>,
    started: std::time::Instant,
    requests: AtomicU64,
    abandoned: AtomicU64,
    last_request: Mutex<Option<serde_json::Value>>,
    last_auth: Mutex<Option<String>>,
}

/// A running fake upstream.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("name", &self.state.config.name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Starts on `addr` (use port 0 for any free port).
    pub async fn start(config: MockConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState {
            faults: Mutex::new(config.faults.clone()),
            config,
            script: Mutex::new(VecDeque::new()),
            started: std::time::Instant::now(),
            requests: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            last_request: Mutex::new(None),
            last_auth: Mutex::new(None),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/messages", post(messages))
            .route("/v1/embeddings", post(embeddings))
            .route("/_mock/faults", post(set_faults))
            .route("/_mock/script", post(set_script))
            .route("/_mock/stats", get(stats))
            .with_state(Arc::clone(&state));
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "mock upstream stopped");
            }
        });
        Ok(MockUpstream { addr, state, task })
    }

    /// Starts on a free loopback port.
    pub async fn start_local(config: MockConfig) -> std::io::Result<Self> {
        Self::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure (`http://ADDR/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Replaces the standing faults.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.state.faults) = faults;
    }

    /// Queues faults for the next requests, one each.
    pub fn script(&self, faults: impl IntoIterator<Item = Faults>) {
        lock(&self.state.script).extend(faults);
    }

    /// Counters.
    pub fn stats(&self) -> MockStats {
        self.state.stats()
    }

    /// The last request body received.
    pub fn last_request(&self) -> Option<serde_json::Value> {
        lock(&self.state.last_request).clone()
    }

    /// The last `Authorization` header received.
    pub fn last_auth(&self) -> Option<String> {
        lock(&self.state.last_auth).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MockState {
    fn stats(&self) -> MockStats {
        MockStats {
            requests: self.requests.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
        }
    }

    /// The faults for request number `n` (1-based).
    fn faults_for(&self, n: u64) -> Faults {
        let mut f = lock(&self.script)
            .pop_front()
            .unwrap_or_else(|| lock(&self.faults).clone());
        let s = self.config.schedule;
        if s.period_ms > 0 && f.status.is_none() {
            let t = self.started.elapsed().as_millis() as u64 % s.period_ms;
            if t >= s.period_ms.saturating_sub(s.outage_ms) {
                f.status = Some(503);
            }
        }
        if s.rate_limit_every > 0 && f.status.is_none() && n % s.rate_limit_every == 0 {
            f.status = Some(429);
            f.error_code = Some("rate_limit_exceeded".to_owned());
            f.retry_after_s = Some(1.0);
        }
        f
    }
}

/// Counts the request as abandoned if dropped before `done()`.
struct Abandon {
    state: Arc<MockState>,
    done: AtomicBool,
    /// The plan's [`Plan::hold`], released with the request.
    hold: Option<Box<dyn std::any::Any + Send>>,
}

impl Abandon {
    fn done(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Relaxed) {
            self.state.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn set_faults(State(state): State<Arc<MockState>>, body: axum::Json<Faults>) -> StatusCode {
    *lock(&state.faults) = body.0;
    StatusCode::NO_CONTENT
}

async fn set_script(
    State(state): State<Arc<MockState>>,
    body: axum::Json<Vec<Faults>>,
) -> StatusCode {
    lock(&state.script).extend(body.0);
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<Arc<MockState>>) -> axum::Json<MockStats> {
    axum::Json(state.stats())
}

fn error_response(dialect: Dialect, status: u16, faults: &Faults, message: String) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (headers, body) = error_parts(dialect, code.as_u16(), faults, &message);
    let mut response = (code, body).into_response();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// `POST /v1/embeddings` (OpenAI's): deterministic vectors (`content::embedding_of`), under the
/// same standing faults as chat (error status, latency, hang).
async fn embeddings(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let guard = Abandon {
        state: Arc::clone(&state),
        done: AtomicBool::new(false),
        hold: None,
    };
    let faults = state.faults_for(n);
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            guard.done();
            return error_response(
                Dialect::OpenAi,
                400,
                &Faults::default(),
                format!("invalid JSON: {e}"),
            );
        }
    };
    *lock(&state.last_request) = Some(request.clone());
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.hang {
        std::future::pending::<()>().await;
    }
    guard.done();
    if let Some(status) = faults.status {
        let message = format!("{} injected fault: HTTP {status}", state.config.name);
        return error_response(Dialect::OpenAi, status, &faults, message);
    }
    match content::embeddings_answer(&request) {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(message) => error_response(Dialect::OpenAi, 400, &Faults::default(), message),
    }
}

async fn chat(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(Dialect::OpenAi, state, headers, body).await
}

async fn messages(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(Dialect::Anthropic, state, headers, body).await
}

async fn answer(
    dialect: Dialect,
    state: Arc<MockState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let mut guard = Abandon {
        state: Arc::clone(&state),
        done: AtomicBool::new(false),
        hold: None,
    };
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            guard.done();
            return error_response(
                dialect,
                400,
                &Faults::default(),
                format!("invalid JSON: {e}"),
            );
        }
    };
    let auth = match dialect {
        Dialect::OpenAi => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        Dialect::Anthropic => headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|k| format!("Bearer {k}")),
    };
    let mut plan = match &state.config.planner {
        Some(planner) => planner.plan(dialect.path(), &request).await,
        None => Plan::from_faults(state.faults_for(n)),
    };
    guard.hold = plan.hold.take();
    if let Some(key) = &state.config.require_key {
        if auth.as_deref() != Some(&format!("Bearer {key}")) {
            guard.done();
            let shown = if plan.faults.echo_key {
                auth.clone().unwrap_or_default()
            } else {
                "***".to_owned()
            };
            *lock(&state.last_auth) = auth;
            let code = match dialect {
                Dialect::OpenAi => "invalid_api_key",
                Dialect::Anthropic => "authentication_error",
            };
            return error_response(
                dialect,
                401,
                &Faults {
                    error_code: Some(code.to_owned()),
                    ..Faults::default()
                },
                format!("Incorrect API key provided: {shown}"),
            );
        }
    }
    *lock(&state.last_auth) = auth;
    let model = request
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or("mock")
        .to_owned();
    let stream = request.get("stream").and_then(|s| s.as_bool()) == Some(true);
    let include_usage = dialect == Dialect::Anthropic
        || request
            .pointer("/stream_options/include_usage")
            .and_then(|v| v.as_bool())
            == Some(true);
    *lock(&state.last_request) = Some(request.clone());
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    let faults = &plan.faults;
    if faults.hang {
        std::future::pending::<()>().await;
    }
    if plan.reset {
        guard.done();
        return reset_response();
    }
    if let Some(status) = faults.status {
        guard.done();
        let message = match faults.error_code.as_deref() {
            _ if faults.error_message.is_some() => faults.error_message.clone().unwrap_or_default(),
            Some("insufficient_quota") => {
                "You exceeded your current quota, please check your plan and billing details."
                    .to_owned()
            }
            Some("billing_error") => {
                "Your credit balance is too low to access the Anthropic API.".to_owned()
            }
            Some("context_length_exceeded") => {
                "This model's maximum context length is 4096 tokens.".to_owned()
            }
            Some("rate_limit_exceeded") => "Rate limit reached for requests".to_owned(),
            _ => format!("{} injected fault: HTTP {status}", state.config.name),
        };
        return error_response(dialect, status, faults, message);
    }
    // OpenAI's `n`: how many choices (the Anthropic dialect has one).
    let choices = match dialect {
        Dialect::OpenAi => request
            .get("n")
            .and_then(serde_json::Value::as_u64)
            .map_or(1, |n| n.clamp(1, MAX_CHOICES) as u32),
        Dialect::Anthropic => 1,
    };
    let (reply, tool) = match content::content_for(dialect, &request, &state.config.reply, n) {
        content::Content::Text(text) => (text, None),
        content::Content::ToolCall {
            id,
            name,
            arguments,
        } => (arguments, Some((id, name))),
    };
    let wire = Answer {
        dialect,
        id: match dialect {
            Dialect::OpenAi => format!("chatcmpl-{}-{n}", state.config.name),
            Dialect::Anthropic => format!("msg_{}_{n}", state.config.name),
        },
        model,
        created: 1_700_000_000,
        usage: plan.usage.unwrap_or((
            (body.len() / 4) as u64,
            reply.split_whitespace().count().max(1) as u64 * u64::from(choices),
        )),
        tool,
        choices,
    };
    if !stream {
        guard.done();
        if plan.malformed_body {
            return (
                [(header::CONTENT_TYPE, "application/json")],
                wire.malformed_plain(),
            )
                .into_response();
        }
        let mut response = axum::Json(wire.plain(&reply)).into_response();
        quota_headers(dialect, &plan.faults, response.headers_mut());
        return response;
    }
    let mut words: Vec<String> = if wire.tool.is_some() {
        // Arguments arrive in fragments, as from a real model.
        reply
            .chars()
            .collect::<Vec<_>>()
            .chunks(8)
            .map(|c| c.iter().collect())
            .collect()
    } else {
        reply.split_inclusive(' ').map(str::to_owned).collect()
    };
    if let Some(n) = plan.content_chunks {
        let n = n.max(1) as usize;
        words = words.iter().cycle().take(n).cloned().collect();
    }
    let mut quota = HeaderMap::new();
    quota_headers(dialect, &plan.faults, &mut quota);
    let plan = StreamPlan {
        guard,
        faults: plan.faults,
        first_token: plan.first_token,
        chunk_interval: plan.chunk_interval,
        headers_sent: tokio::time::Instant::now(),
        wire,
        include_usage,
        words,
        step: 0,
    };
    let body = futures_util::stream::unfold(plan, |mut plan| async move {
        plan.next().await.map(|item| (item, plan))
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response.headers_mut().extend(quota);
    response
}

/// The rate-limit headers of a successful answer, in the dialect's names, when the faults set
/// them.
fn quota_headers(dialect: Dialect, faults: &Faults, headers: &mut HeaderMap) {
    let Some(left) = faults.ratelimit_remaining_requests else {
        return;
    };
    let reset = Duration::from_millis(faults.ratelimit_reset_ms.unwrap_or(1_000));
    let (count, when) = match dialect {
        Dialect::OpenAi => (
            ("x-ratelimit-remaining-requests", left.to_string()),
            (
                "x-ratelimit-reset-requests",
                format!("{}ms", reset.as_millis()),
            ),
        ),
        Dialect::Anthropic => (
            ("anthropic-ratelimit-requests-remaining", left.to_string()),
            (
                "anthropic-ratelimit-requests-reset",
                humantime::format_rfc3339_millis(std::time::SystemTime::now() + reset).to_string(),
            ),
        ),
    };
    for (name, value) in [count, when] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// Headers, then a broken connection.
fn reset_response() -> Response {
    let body = futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other("injected connection failure"))
    });
    Response::new(Body::from_stream(body))
}

struct StreamPlan {
    guard: Abandon,
    faults: Faults,
    first_token: Duration,
    chunk_interval: Duration,
    /// When the headers were sent: the origin of the chunk schedule.
    headers_sent: tokio::time::Instant,
    wire: Answer,
    include_usage: bool,
    words: Vec<String>,
    /// 0: the start events; 1..=words: content; then the end events; then the end.
    step: usize,
}

impl StreamPlan {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let step = self.step;
        self.step += 1;
        let n_words = self.words.len();
        if step == 0 {
            return Some(Ok(self.wire.stream_start()));
        }
        if (1..=n_words).contains(&step) {
            let sent = (step - 1) as u32;
            if self.faults.cut_after == Some(sent) {
                // Let the server flush what was sent (it flushes while the body is pending), so
                // the client sees the chunks and then the abort, as on a real cut.
                tokio::time::sleep(Duration::from_millis(10)).await;
                self.guard.done();
                return Some(Err(std::io::Error::other("injected stream cut")));
            }
            if self.faults.stall_after == Some(sent) {
                std::future::pending::<()>().await;
            }
            // Each chunk is due at an absolute time (headers + first token + k intervals), so
            // timer rounding does not add up over a long stream.
            let due =
                self.headers_sent + self.first_token + self.chunk_interval.saturating_mul(sent);
            if due > tokio::time::Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if self.faults.overload_event_after == Some(sent) {
                self.guard.done();
                self.step = usize::MAX - 1;
                return Some(Ok(self.wire.stream_overloaded()));
            }
            let mut out = Vec::new();
            if self.faults.malformed_after == Some(sent) {
                out.extend_from_slice(self.wire.stream_malformed());
            }
            out.extend_from_slice(&self.wire.stream_text(&self.words[step - 1]));
            return Some(Ok(Bytes::from(out)));
        }
        if step >= usize::MAX - 1 {
            return None;
        }
        if step == n_words + 1 {
            return Some(Ok(self
                .wire
                .stream_end(self.include_usage, self.faults.no_done)));
        }
        self.guard.done();
        None
    }
}
