//! One upstream attempt: build the request with the plugin, send it with the deployment's
//! [`HttpClient`] under the attempt's timer, and turn what came back into a canonical answer or a
//! classified failure.
//!
//! Stage limits are the core's: each attempt runs under its [`AttemptTimer`], told when the
//! headers and each chunk arrive; the one tokio timer of a wait ([`until_expiry`]) is armed at the
//! timer's `poll_timeout` and an expiry is the timer's decision (response headers, a stream's first
//! token, a gap between data, the attempt's deadline). Only connect is enforced here, by the
//! deployment's client (`connect_timeout`, from the core's `timeouts.connect`): the pooled client
//! does not say when it opens a connection. Transport failures are classified here
//! (refused/reset: `server`; a limit: `timeout`); HTTP errors are classified by the plugin. Every
//! message that leaves this module is scrubbed of the deployment's key.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stilts_core::{AttemptTimer, ErrorClass, Expiry, Usage};
use stilts_plugin::abi::frames;
use stilts_plugin::host::{CallError, Plugin, StreamState};
use stilts_plugin::sse::SseFramer;
use stilts_plugin::types::{ErrorInfo, StreamEnd};

use crate::engine::Clock;
use crate::http_client::{
    HttpClient, TransportError, TransportKind, UpstreamBody, next_chunk, parse_upstream_url,
};
use crate::metrics::DeploymentMetrics;

/// Largest upstream body read for a plain answer or an error.
const MAX_UPSTREAM_BODY: usize = 64 << 20;

/// A deployment ready to call: its plugin, encoded config (with the key) and HTTP client.
pub(crate) struct Deployment {
    pub name: String,
    pub plugin: Plugin,
    /// The plugin's `DeploymentConfig` as JSON. Contains the key: never log it.
    cfg_json: Vec<u8>,
    /// Finds the key (in every encoding) in upstream messages.
    scrubber: crate::log_safe::KeyScrubber,
    base_url: String,
    pub model: String,
    pub client: HttpClient,
    pub metrics: DeploymentMetrics,
    /// The last URL the plugin built, parsed once (plugins build the same URL every time).
    url: std::sync::OnceLock<(String, http::Uri)>,
    /// The rate limits the provider last reported on an answer, and when, for the router
    /// (`crate::quota`): taken when an attempt is recorded.
    reported_quota: std::sync::Mutex<Option<(stilts_core::Quota, stilts_core::Instant)>>,
}

impl fmt::Debug for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deployment")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("plugin", &self.plugin.path())
            .finish()
    }
}

/// Runs `f` and adds its duration to `local` (time spent in stilts, for the overhead metric).
pub(crate) fn timed<R>(local: &AtomicU64, f: impl FnOnce() -> R) -> R {
    let t0 = std::time::Instant::now();
    let r = f();
    local.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// A failed attempt.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub class: ErrorClass,
    pub retry_after: Option<Duration>,
    pub status: Option<u16>,
    pub message: String,
    /// The plugin refused to translate the client's request: nothing was sent, and the fault is
    /// the client's, not the provider's.
    pub refused_by_plugin: bool,
    /// The client's own deadline ended a stream that was still flowing: not the provider's fault.
    pub client_cut: bool,
}

impl Failure {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Failure {
            class,
            retry_after: None,
            status: None,
            message: message.into(),
            refused_by_plugin: false,
            client_cut: false,
        }
    }

    /// An attempt whose timer expired: a timeout, with the timer's account of which limit.
    pub(crate) fn expired(expiry: &Expiry) -> Self {
        Failure::new(ErrorClass::Timeout, expiry.to_string())
    }

    pub(crate) fn from_info(info: ErrorInfo, status: Option<u16>) -> Self {
        Failure {
            class: info.class,
            retry_after: info.retry_after_ms.map(Duration::from_millis),
            status,
            message: info.message,
            refused_by_plugin: false,
            client_cut: false,
        }
    }
}

/// A successful plain answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub body: Bytes,
    pub usage: Usage,
}

pub(crate) fn usage_of(u: Option<&stilts_plugin::canonical::Usage>) -> Usage {
    u.map(|u| Usage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
    })
    .unwrap_or_default()
}

impl Deployment {
    pub fn new(
        name: String,
        plugin: Plugin,
        cfg: &stilts_plugin::DeploymentConfig,
        connect_timeout: Duration,
        metrics: DeploymentMetrics,
    ) -> Result<Self, String> {
        let cfg_json = stilts_plugin::host::encode_config(cfg).map_err(|e| e.to_string())?;
        let client = HttpClient::new(connect_timeout)?;
        Ok(Deployment {
            name,
            plugin,
            cfg_json,
            scrubber: crate::log_safe::KeyScrubber::new(
                cfg.api_key.as_ref().map_or("", |k| k.expose()),
            ),
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
            model: cfg.model.clone(),
            client,
            metrics,
            url: std::sync::OnceLock::new(),
            reported_quota: std::sync::Mutex::new(None),
        })
    }

    /// The rate limits the provider reported since the last call, and when.
    pub(crate) fn take_reported_quota(&self) -> Option<(stilts_core::Quota, stilts_core::Instant)> {
        self.reported_quota.lock().ok()?.take()
    }

    /// Removes the key, in every encoding, from a message that may echo it.
    pub fn scrub(&self, message: String) -> String {
        self.scrubber.scrub(message)
    }

    /// A failure made safe to log and to send to the client: the key removed, control characters
    /// escaped (upstream text cannot forge log lines), and the length bounded.
    pub(crate) fn failure(&self, mut f: Failure) -> Failure {
        f.message = self.scrub(f.message);
        if let std::borrow::Cow::Owned(escaped) = crate::log_safe::escape(&f.message) {
            f.message = escaped;
        }
        if f.message.len() > 512 {
            let mut cut = 512;
            while !f.message.is_char_boundary(cut) {
                cut -= 1;
            }
            f.message.truncate(cut);
            f.message.push('…');
        }
        f
    }

    /// Sends the request for `body` and waits for the response headers, under `timer` (told when
    /// they arrive). Error statuses are read and classified here.
    pub async fn send(
        &self,
        body: &[u8],
        timer: &mut AttemptTimer,
        clock: Clock,
        local: &AtomicU64,
    ) -> Result<http::Response<UpstreamBody>, Failure> {
        self.send_op(Operation::Chat, body, timer, clock, local)
            .await
    }

    /// [`Deployment::send`] for `op`.
    pub async fn send_op(
        &self,
        op: Operation,
        body: &[u8],
        timer: &mut AttemptTimer,
        clock: Clock,
        local: &AtomicU64,
    ) -> Result<http::Response<UpstreamBody>, Failure> {
        let t0 = std::time::Instant::now();
        let built = match op {
            Operation::Chat => self
                .plugin
                .build_request_with_config_json(body, &self.cfg_json),
            Operation::Embeddings => self
                .plugin
                .build_embeddings_request_with_config_json(body, &self.cfg_json),
        };
        let http = built
            .map_err(|e| match e {
                CallError::BadInput(m) => Failure {
                    refused_by_plugin: true,
                    ..Failure::new(ErrorClass::BadRequest, m)
                },
                other => Failure::new(ErrorClass::Server, format!("plugin failure: {other}")),
            })
            .map_err(|f| self.failure(f))?;
        // Counted once the plugin accepted the request: a refusal never reached the provider.
        self.metrics.attempts.inc();
        let url_text = if http.url.starts_with('/') {
            format!("{}{}", self.base_url, http.url)
        } else {
            http.url
        };
        let uri = match self.url.get() {
            Some((text, uri)) if *text == url_text => uri.clone(),
            _ => {
                let parsed = parse_upstream_url(&url_text).map_err(|e| {
                    self.failure(Failure::new(
                        ErrorClass::Server,
                        format!("the plugin built an unusable URL: {e}"),
                    ))
                })?;
                let _ = self.url.set((url_text, parsed.clone()));
                parsed
            }
        };
        let method = http::Method::from_bytes(http.method.as_bytes()).map_err(|_| {
            self.failure(Failure::new(
                ErrorClass::Server,
                "the plugin built an invalid method",
            ))
        })?;
        let mut request = http::Request::new(Bytes::from(http.body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.reserve(http.headers.len());
        for (name, value) in &http.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                self.failure(Failure::new(
                    ErrorClass::Server,
                    format!("the plugin built an invalid header name {name:?}"),
                ))
            })?;
            let value = http::HeaderValue::from_str(value).map_err(|_| {
                // The value may be a key: name the header only.
                self.failure(Failure::new(
                    ErrorClass::Server,
                    format!("the plugin built an invalid value for header {name}"),
                ))
            })?;
            headers.append(name, value);
        }
        local.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let response = match until_expiry(timer, clock, self.client.send(request)).await {
            Err(expiry) => return Err(Failure::expired(&expiry)),
            Ok(Err(e)) => return Err(self.failure(transport_failure(&e))),
            Ok(Ok(r)) => r,
        };
        let arrived = clock.now();
        timer.on_headers(arrived);
        let status = response.status();
        if status.is_success() {
            if let Some(quota) =
                crate::quota::from_headers(response.headers(), std::time::SystemTime::now())
            {
                if let Ok(mut slot) = self.reported_quota.lock() {
                    *slot = Some((quota, arrived));
                }
            }
            return Ok(response);
        }
        let headers = header_frames(&response);
        let body = read_body(response, timer, clock)
            .await
            .map_err(|f| self.failure(f))?;
        timer.on_end(clock.now());
        let info = timed(local, || {
            self.plugin
                .classify_error_framed(status.as_u16(), &headers, &body)
        })
        .unwrap_or_else(|e| {
            ErrorInfo::new(
                ErrorClass::from_status(status.as_u16()),
                format!("HTTP {status} (plugin could not classify it: {e})"),
            )
        });
        Err(self.failure(Failure::from_info(info, Some(status.as_u16()))))
    }

    /// A plain (non-stream) attempt of `op`, under `timer`.
    pub async fn complete(
        &self,
        op: Operation,
        body: &[u8],
        timer: &mut AttemptTimer,
        clock: Clock,
        local: &AtomicU64,
    ) -> Result<Answer, Failure> {
        let response = self.send_op(op, body, timer, clock, local).await?;
        let status = response.status().as_u16();
        let headers = timed(local, || header_frames(&response));
        let bytes = read_body(response, timer, clock)
            .await
            .map_err(|f| self.failure(f))?;
        timer.on_end(clock.now());
        match timed(local, || match op {
            Operation::Chat => self.plugin.parse_response_framed(status, &headers, &bytes),
            Operation::Embeddings => self
                .plugin
                .parse_embeddings_response_framed(status, &headers, &bytes),
        }) {
            Ok(parsed) => Ok(Answer {
                usage: usage_of(parsed.usage.as_ref()),
                body: Bytes::from(parsed.body),
            }),
            Err(CallError::Upstream(info)) => Err(self.failure(Failure::from_info(info, None))),
            Err(e) => Err(self.failure(Failure::new(
                ErrorClass::Server,
                format!("unreadable answer: {e}"),
            ))),
        }
    }
}

/// What an attempt asks the provider for: its plugin functions and endpoint follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    /// A chat completion (`build_request` / `parse_response`).
    Chat,
    /// Embeddings (`build_embeddings_request` / `parse_embeddings_response`, ABI 1.1).
    Embeddings,
}

/// Runs `work` until it completes or the attempt's timer expires: the one tokio timer of an
/// attempt's wait, armed where the core says ([`AttemptTimer::poll_timeout`]). Whether a wake-up
/// means an expiry is the core's decision ([`AttemptTimer::handle_timeout`]); a wake-up a little
/// early (clock rounding) arms the timer again. When both are ready, the work wins: what arrived
/// in time counts.
pub(crate) async fn until_expiry<F: Future>(
    timer: &mut AttemptTimer,
    clock: Clock,
    work: F,
) -> Result<F::Output, Expiry> {
    tokio::pin!(work);
    loop {
        let wake = clock.tokio(timer.poll_timeout());
        tokio::select! {
            biased;
            out = &mut work => return Ok(out),
            () = tokio::time::sleep_until(wake) => {
                if let Some(expiry) = timer.handle_timeout(clock.now()) {
                    return Err(expiry);
                }
            }
        }
    }
}

/// The response's headers as the plugin receives them, frames `[name, value…]`, written straight
/// from hyper's map. A value that is not visible ASCII (`to_str` refuses it) is left out, as no
/// plugin could read it as text.
fn header_frames<B>(response: &http::Response<B>) -> Vec<u8> {
    let headers = response.headers();
    let mut out = Vec::with_capacity(headers.len() * 48);
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            let at = out.len();
            // Only a part over 4 GiB is refused, which hyper's parser never lets through; the
            // pair is then left out whole.
            if frames::push(&mut out, name.as_str().as_bytes())
                .and_then(|()| frames::push(&mut out, value.as_bytes()))
                .is_none()
            {
                out.truncate(at);
            }
        }
    }
    out
}

/// Reads a whole body, telling `timer` of each chunk (a body may not stall either).
async fn read_body(
    response: http::Response<UpstreamBody>,
    timer: &mut AttemptTimer,
    clock: Clock,
) -> Result<Bytes, Failure> {
    let mut body = response.into_body();
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        match until_expiry(timer, clock, next_chunk(&mut body)).await {
            Err(expiry) => return Err(Failure::expired(&expiry)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(transport_failure(&e)),
            Ok(Some(Ok(chunk))) => {
                timer.on_data(clock.now());
                if first.is_none() && buf.is_empty() {
                    first = Some(chunk);
                    continue;
                }
                if let Some(f) = first.take() {
                    buf.extend_from_slice(&f);
                }
                if buf.len() + chunk.len() > MAX_UPSTREAM_BODY {
                    return Err(Failure::new(
                        ErrorClass::Server,
                        format!("the upstream body is larger than {MAX_UPSTREAM_BODY} bytes"),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

fn transport_failure(e: &TransportError) -> Failure {
    let class = match e.kind {
        TransportKind::Timeout => ErrorClass::Timeout,
        TransportKind::Connect | TransportKind::Broken => ErrorClass::Server,
    };
    Failure::new(class, e.to_string())
}

/// How a stream's chunks are read and passed on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadOptions {
    /// Keep the assistant text (a continuation may need to send it back).
    pub track_text: bool,
    /// This attempt continues another provider's answer: drop its leading role-only chunk.
    pub continuation: bool,
    /// Pass usage-only chunks (`choices: []`) on to the client; when false they are only read
    /// for accounting.
    pub usage_chunks: bool,
}

/// Reads a stream: frames SSE, runs each event through the plugin, and queues the canonical
/// chunks as SSE bytes for the client.
pub(crate) struct StreamReader {
    body: UpstreamBody,
    framer: SseFramer,
    state: Option<StreamState>,
    plugin: Plugin,
    /// SSE-encoded chunks ready for the client.
    pub out: VecDeque<Bytes>,
    /// Usage as reported so far.
    pub usage: Option<stilts_plugin::canonical::Usage>,
    /// Set once the stream ended (cleanly or not).
    pub end: Option<StreamEnd>,
    /// Whether a chunk carrying content, a tool call or a finish reason was seen.
    pub informative: bool,
    /// The assistant text so far, when continuation may be needed.
    pub text: Option<String>,
    /// Whether a chunk carried a finish reason: the answer is complete, whatever follows.
    pub finished: bool,
    /// Whether the answer so far is plain text of one choice, so that sending it back as a
    /// prefill continues it exactly (no tool calls, refusals or other choices).
    pub continuable: bool,
    /// Drop a leading role-only chunk (used when continuing another provider's answer).
    skip_role_chunk: bool,
    /// Pass usage-only chunks on to the client.
    usage_chunks: bool,
    /// Time spent processing what was read (framing, plugin), for the overhead metric.
    local: Arc<AtomicU64>,
}

impl StreamReader {
    pub fn new(
        response: http::Response<UpstreamBody>,
        plugin: Plugin,
        options: ReadOptions,
        local: Arc<AtomicU64>,
    ) -> Result<Self, Failure> {
        let state = plugin
            .stream_open()
            .map_err(|e| Failure::new(ErrorClass::Server, format!("plugin failure: {e}")))?;
        Ok(StreamReader {
            body: response.into_body(),
            framer: SseFramer::default(),
            state: Some(state),
            plugin,
            out: VecDeque::new(),
            usage: None,
            end: None,
            informative: false,
            text: options.track_text.then(String::new),
            finished: false,
            continuable: true,
            skip_role_chunk: options.continuation,
            usage_chunks: options.usage_chunks,
            local,
        })
    }

    /// Reads once from the network and processes what came. Cancel-safe: the caller runs it
    /// under the attempt's timer ([`until_expiry`]) and tells the timer what it read.
    pub async fn pump(&mut self) {
        if self.end.is_some() {
            return;
        }
        let read = next_chunk(&mut self.body).await;
        let t0 = std::time::Instant::now();
        self.process(read);
        self.local
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn process(&mut self, read: Option<Result<Bytes, TransportError>>) {
        match read {
            None => {
                self.framer.finish();
                self.close();
            }
            Some(Err(e)) => {
                let f = transport_failure(&e);
                self.end = Some(StreamEnd::Cut { reason: f.message });
                self.state = None;
            }
            Some(Ok(bytes)) => match self.framer.push(&bytes) {
                Err(e) => {
                    self.end = Some(StreamEnd::Cut {
                        reason: e.to_string(),
                    });
                    self.state = None;
                }
                Ok(events) => {
                    for ev in events {
                        self.event(ev.event.as_deref(), &ev.data);
                        if self.end.is_some() {
                            break;
                        }
                    }
                }
            },
        }
    }

    fn close(&mut self) {
        let end = match self.state.take() {
            Some(state) => self
                .plugin
                .stream_close(state)
                .unwrap_or_else(|e| StreamEnd::Cut {
                    reason: format!("plugin failure at close: {e}"),
                }),
            None => StreamEnd::Cut {
                reason: "stream state lost".to_owned(),
            },
        };
        self.end = Some(end);
    }

    fn event(&mut self, name: Option<&str>, data: &[u8]) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let step = match self.plugin.stream_event(state, name, data) {
            Ok(step) => step,
            Err(e) => {
                self.end = Some(StreamEnd::Cut {
                    reason: format!("plugin failure: {e}"),
                });
                self.state = None;
                return;
            }
        };
        for chunk in step.chunks {
            if !self.usage_chunks && is_usage_only(&chunk) {
                continue;
            }
            let need_look = !self.informative || self.text.is_some() || self.skip_role_chunk;
            if need_look {
                let look = Look::of(&chunk);
                if self.skip_role_chunk && !look.informative {
                    continue;
                }
                self.skip_role_chunk = false;
                self.informative |= look.informative;
                self.finished |= look.finished;
                self.continuable &= look.exact;
                if let (Some(text), Some(delta)) = (self.text.as_mut(), look.text) {
                    text.push_str(&delta);
                }
            }
            if !need_look && !self.finished {
                self.finished = has_finish_reason(&chunk);
            }
            let mut sse = BytesMut::with_capacity(chunk.len() + 8);
            sse.extend_from_slice(b"data: ");
            sse.extend_from_slice(&chunk);
            sse.extend_from_slice(b"\n\n");
            self.out.push_back(sse.freeze());
        }
        if step.usage.is_some() {
            self.usage = step.usage;
        }
        if let Some(end) = step.done {
            self.end = Some(end);
            self.state = None;
        }
    }
}

/// Whether a canonical chunk is the usage-only chunk that ends a stream: `choices` is empty. A
/// byte scan for `"choices"`, `:` and `[]` (blanks allowed) rules out ordinary chunks without
/// parsing them (inside a JSON string the quotes would be escaped); a match is confirmed by a
/// parse, so a chunk that only looks like one is kept.
fn is_usage_only(chunk: &[u8]) -> bool {
    has_empty_choices(chunk) && parses_with_empty_choices(chunk)
}

/// Whether `chunk` contains `"choices"` followed by blanks, `:`, blanks, `[`, blanks and `]`.
fn has_empty_choices(chunk: &[u8]) -> bool {
    const KEY: &[u8] = b"\"choices\"";
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut rest = chunk;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        rest = &rest[at + KEY.len()..];
        let mut it = rest.iter().skip_while(|b| blank(b));
        if it.next() != Some(&b':') {
            continue;
        }
        let mut it = it.skip_while(|b| blank(b));
        if it.next() != Some(&b'[') {
            continue;
        }
        if it.find(|b| !blank(b)) == Some(&b']') {
            return true;
        }
    }
    false
}

fn parses_with_empty_choices(chunk: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Choices {
        #[serde(default)]
        choices: Option<Vec<serde::de::IgnoredAny>>,
    }
    serde_json::from_slice::<Choices>(chunk)
        .is_ok_and(|c| c.choices.is_some_and(|choices| choices.is_empty()))
}

/// Whether a canonical chunk carries a non-null `finish_reason`, without parsing it: the key,
/// optional blanks, a colon, optional blanks, then a string.
fn has_finish_reason(chunk: &[u8]) -> bool {
    const KEY: &[u8] = b"\"finish_reason\"";
    let mut rest = chunk;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        rest = &rest[at + KEY.len()..];
        let value = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b':'))
            .map(|i| &rest[i..]);
        if value.is_some_and(|v| v.first() == Some(&b'"')) {
            return true;
        }
    }
    false
}

/// What the gateway needs to know about a canonical chunk.
struct Look {
    informative: bool,
    text: Option<String>,
    /// A choice finished.
    finished: bool,
    /// Only text of choice 0: a prefill can continue it exactly.
    exact: bool,
}

impl Look {
    fn of(chunk: &[u8]) -> Look {
        let v: serde_json::Value = match serde_json::from_slice(chunk) {
            Ok(v) => v,
            Err(_) => {
                return Look {
                    informative: true,
                    text: None,
                    finished: false,
                    exact: false,
                };
            }
        };
        let mut informative = false;
        let mut text = None;
        let mut finished = false;
        let mut exact = true;
        if let Some(choices) = v.get("choices").and_then(|c| c.as_array()) {
            for c in choices {
                if c.get("index")
                    .and_then(|i| i.as_u64())
                    .is_some_and(|i| i != 0)
                {
                    exact = false;
                }
                if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                    informative = true;
                    finished = true;
                }
                if let Some(delta) = c.get("delta") {
                    if let Some(t) = delta.get("content").and_then(|t| t.as_str()) {
                        if !t.is_empty() {
                            informative = true;
                            text.get_or_insert_with(String::new).push_str(t);
                        }
                    }
                    for key in ["tool_calls", "function_call", "refusal"] {
                        if delta.get(key).is_some_and(|x| !x.is_null()) {
                            informative = true;
                            exact = false;
                        }
                    }
                }
            }
        }
        Look {
            informative,
            text,
            finished,
            exact,
        }
    }
}

#[cfg(test)]
mod finish_tests {
    use super::*;

    #[test]
    fn only_a_chunk_with_empty_choices_is_usage_only() {
        assert!(is_usage_only(
            br#"{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
        ));
        assert!(is_usage_only(br#"{"choices" : [ ], "usage": null}"#));
        assert!(!is_usage_only(
            br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
        ));
        assert!(!is_usage_only(br#"{"usage":{"prompt_tokens":1}}"#));
        assert!(!is_usage_only(b"not json"));
        // Usage the plugin could not read still makes the chunk usage-only.
        assert!(is_usage_only(
            br#"{"choices":[],"usage":{"prompt_tokens":1,"total_tokens":null}}"#
        ));
        // Text that mentions it is not it.
        assert!(!is_usage_only(
            br#"{"choices":[{"index":0,"delta":{"content":"\"choices\": []"}}]}"#
        ));
    }

    #[test]
    fn finds_a_finish_reason_without_parsing() {
        assert!(has_finish_reason(
            br#"{"choices":[{"delta":{},"finish_reason":"stop","index":0}]}"#
        ));
        assert!(has_finish_reason(
            br#"{"choices":[{"finish_reason" : "length"}]}"#
        ));
        assert!(!has_finish_reason(
            br#"{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}"#
        ));
        assert!(!has_finish_reason(br#"{"choices":[]}"#));
    }

    #[test]
    fn tool_calls_and_other_choices_are_not_exactly_continuable() {
        let tool = br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]},"finish_reason":null}]}"#;
        assert!(!Look::of(tool).exact);
        let second = br#"{"choices":[{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#;
        assert!(!Look::of(second).exact);
        let text = br#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#;
        let look = Look::of(text);
        assert!(look.exact && !look.finished);
    }
}
