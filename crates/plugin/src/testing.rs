//! Helpers for testing a plugin through its rlib on recorded wire transcripts: frame an SSE transcript,
//! feed it through a [`StreamDriver`] exactly as the host would, and reassemble the canonical chunks into
//! text, tool calls, finish reason and usage.
//!
//! The `check_*` functions call one entry point of a [`Translator`] and panic when its answer breaks
//! the plugin contract, whatever the input: the fuzz tests of the workspace's plugins feed them
//! arbitrary and mutated upstream bytes and client requests, and a plugin author can do the same.

use serde_json::Value;

use crate::canonical::{ChatRequest, FinishReason, FunctionCall, ToolCall, Usage};
use crate::sdk::{PluginError, StreamDriver, Translator};
use crate::sse::{SseEvent, frame_all};
use crate::types::{
    DeploymentConfig, ErrorInfo, HttpRequest, ParsedResponse, StreamEnd, http::MAX_RETRY_AFTER_MS,
};

/// What a whole stream produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Transcript {
    /// Every canonical chunk, parsed.
    pub chunks: Vec<Value>,
    /// The text deltas joined.
    pub text: String,
    /// Tool calls reassembled from their fragments, by index.
    pub tool_calls: Vec<ToolCall>,
    /// The last finish reason seen in a chunk.
    pub finish_reason: Option<String>,
    /// The last usage reported by a step.
    pub usage: Option<Usage>,
    /// How the stream ended (from the event that ended it, or from `close`).
    pub end: StreamEnd,
    /// Index of the event that ended the stream, if an event did.
    pub ended_at_event: Option<usize>,
    /// Number of events framed.
    pub events: usize,
}

/// Runs an SSE transcript (raw bytes, as received) through `translator`.
///
/// Chunks that are not JSON are a bug in the plugin and show up as `Value::Null` entries.
///
/// # Panics
///
/// When a step emits a usage-only chunk (`choices: []`) without reporting usage in the same step:
/// the host counts tokens and cost from the reported usage only (see [`StreamStep::usage`]), so
/// the plugin breaks the contract.
///
/// [`StreamStep::usage`]: crate::types::StreamStep::usage
pub fn run_transcript<T: Translator>(translator: &T, sse: &[u8]) -> Transcript {
    let (events, _partial) = match frame_all(sse) {
        Ok(x) => x,
        Err(e) => {
            return Transcript {
                chunks: Vec::new(),
                text: String::new(),
                tool_calls: Vec::new(),
                finish_reason: None,
                usage: None,
                end: StreamEnd::Cut {
                    reason: e.to_string(),
                },
                ended_at_event: None,
                events: 0,
            };
        }
    };
    let mut driver = StreamDriver::new(translator);
    let mut chunks = Vec::new();
    let mut usage = None;
    let mut end = None;
    let mut ended_at_event = None;
    for (i, ev) in events.iter().enumerate() {
        let step = driver.event(ev.event.as_deref(), &ev.data);
        let parsed: Vec<Value> = step
            .chunks
            .iter()
            .map(|c| serde_json::from_slice(c).unwrap_or(Value::Null))
            .collect();
        let usage_only = parsed
            .iter()
            .any(|c| c["choices"].as_array().is_some_and(Vec::is_empty));
        assert!(
            !usage_only || step.usage.is_some(),
            "event {i} emitted a usage-only chunk (`choices: []`) without reporting usage in its \
             step; set StreamStep::usage in the step that emits it"
        );
        chunks.extend(parsed);
        if step.usage.is_some() {
            usage = step.usage;
        }
        if let Some(done) = step.done {
            end = Some(done);
            ended_at_event = Some(i);
            break;
        }
    }
    let end = match end {
        Some(e) => e,
        None => driver.close(),
    };
    let (text, tool_calls, finish_reason) = assemble(&chunks);
    Transcript {
        chunks,
        text,
        tool_calls,
        finish_reason,
        usage,
        end,
        ended_at_event,
        events: events.len(),
    }
}

/// Joins canonical chunks into (text, tool calls, last finish reason).
pub fn assemble(chunks: &[Value]) -> (String, Vec<ToolCall>, Option<String>) {
    let mut text = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut finish = None;
    for c in chunks {
        let Some(choice) = c.get("choices").and_then(|cs| cs.get(0)) else {
            continue;
        };
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            finish = Some(f.to_owned());
        }
        let Some(delta) = choice.get("delta") else {
            continue;
        };
        if let Some(t) = delta.get("content").and_then(Value::as_str) {
            text.push_str(t);
        }
        for tc in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            while calls.len() <= index {
                calls.push(ToolCall {
                    id: String::new(),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: String::new(),
                        arguments: String::new(),
                    },
                });
            }
            let call = &mut calls[index];
            if let Some(id) = tc.get("id").and_then(Value::as_str) {
                call.id = id.to_owned();
            }
            if let Some(f) = tc.get("function") {
                if let Some(n) = f.get("name").and_then(Value::as_str) {
                    call.function.name.push_str(n);
                }
                if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                    call.function.arguments.push_str(a);
                }
            }
        }
    }
    (text, calls, finish)
}

/// One recorded error case of a fixture table (`errors.json`).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ErrorCase {
    /// Case name.
    pub name: String,
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Raw body text.
    pub body: String,
    /// Expected class name.
    pub class: String,
    /// Expected retry hint.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// Expected provider code.
    #[serde(default)]
    pub provider_code: Option<String>,
}

/// How serde_json reads some bytes.
enum Json {
    /// A JSON value.
    Valid(Value),
    /// Not JSON.
    Invalid(serde_json::Error),
    /// JSON by RFC 8259's grammar that serde_json reads no further: nested more than 128 deep, or
    /// a number beyond `f64`. A pass-through plugin may forward such bytes (clients with other
    /// parsers read them); the checks cannot look inside.
    BeyondLimits,
}

fn read_json(bytes: &[u8]) -> Json {
    match serde_json::from_slice(bytes) {
        Ok(v) => Json::Valid(v),
        Err(e) => {
            let text = e.to_string();
            if text.starts_with("recursion limit exceeded")
                || text.starts_with("number out of range")
            {
                Json::BeyondLimits
            } else {
                Json::Invalid(e)
            }
        }
    }
}

/// Checks a classified error: it has a message, and a retry hint no longer than
/// [`MAX_RETRY_AFTER_MS`].
///
/// # Panics
///
/// When either rule is broken.
pub fn check_error_info(info: &ErrorInfo) {
    assert!(
        !info.message.trim().is_empty(),
        "an error without a message: {info:?}"
    );
    if let Some(ms) = info.retry_after_ms {
        assert!(
            ms <= MAX_RETRY_AFTER_MS,
            "retry hint of {ms} ms is over the {MAX_RETRY_AFTER_MS} ms bound: {info:?}"
        );
    }
}

/// Classifies an error response and checks the answer with [`check_error_info`].
///
/// # Panics
///
/// When the answer breaks the contract (or the translator panics).
pub fn check_classify_error<T: Translator>(
    translator: &T,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> ErrorInfo {
    let info = translator.classify_error(status, headers, body);
    check_error_info(&info);
    info
}

/// Parses a successful response and checks the answer: a body is a JSON object with a `choices`
/// array, and the usage, model and finish reason reported beside it are the body's own; a refusal
/// says why; an upstream error passes [`check_error_info`].
///
/// # Panics
///
/// When the answer breaks the contract (or the translator panics).
pub fn check_parse_response<T: Translator>(
    translator: &T,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<ParsedResponse, PluginError> {
    let result = translator.parse_response(status, headers, body);
    match &result {
        Ok(p) => {
            let v = match read_json(&p.body) {
                Json::Valid(v) => v,
                Json::BeyondLimits => return result,
                Json::Invalid(e) => panic!(
                    "a parsed body that is not JSON ({e}): {}",
                    p.body.escape_ascii()
                ),
            };
            assert!(v.is_object(), "a parsed body that is not an object: {v}");
            let Some(choices) = v.get("choices").and_then(Value::as_array) else {
                panic!("a parsed body without a `choices` array: {v}");
            };
            if let Some(model) = v.get("model").and_then(Value::as_str) {
                assert_eq!(
                    p.model.as_deref(),
                    Some(model),
                    "model beside the body: {v}"
                );
            }
            let finish = choices
                .first()
                .and_then(|c| c.get("finish_reason"))
                .and_then(Value::as_str)
                .and_then(FinishReason::from_name);
            assert_eq!(
                p.finish_reason, finish,
                "finish reason beside the body: {v}"
            );
            let body_usage = v
                .get("usage")
                .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok());
            assert_eq!(p.usage, body_usage, "usage beside the body: {v}");
        }
        Err(PluginError::BadInput(m)) => assert!(!m.is_empty(), "a refusal without a reason"),
        Err(PluginError::Upstream(info)) => check_error_info(info),
    }
    result
}

/// Builds an upstream request and checks it can be sent as it is: a method and URL without
/// spaces or control characters, header names that are HTTP tokens, header values without line
/// breaks or NUL, and a JSON body. A refusal says why.
///
/// # Panics
///
/// When the answer breaks the contract (or the translator panics).
pub fn check_build_request<T: Translator>(
    translator: &T,
    req: &ChatRequest,
    cfg: &DeploymentConfig,
) -> Result<HttpRequest, PluginError> {
    let result = translator.build_request(req, cfg);
    match &result {
        Ok(http) => {
            let is_token = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            };
            assert!(is_token(&http.method), "method {:?}", http.method);
            assert!(
                !http.url.is_empty()
                    && !http
                        .url
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control()),
                "a URL with spaces or control characters: {:?}",
                http.url
            );
            for (name, value) in &http.headers {
                assert!(is_token(name), "header name {name:?}");
                assert!(
                    !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                    "header {name} has a line break or NUL: {value:?}"
                );
            }
            if let Err(e) = serde_json::from_slice::<Value>(&http.body) {
                panic!("a request body that is not JSON ({e})");
            }
        }
        Err(PluginError::BadInput(m)) => assert!(!m.is_empty(), "a refusal without a reason"),
        Err(PluginError::Upstream(info)) => {
            panic!("build_request answered an upstream error: {info:?}")
        }
    }
    result
}

/// Feeds `events` to a new stream of `translator` (through a [`StreamDriver`], as the host does),
/// closes it, and checks every step against the stream contract:
///
/// * every chunk is a JSON object with a `choices` array;
/// * a chunk's `usage`, when it is canonical usage, is reported in its step (the host bills from
///   the step, never from the chunk);
/// * data that is not JSON (nor `[DONE]`) yields no chunk and no usage; on an unnamed or `message`
///   event it ends the stream as cut (never dropped in silence: it may have carried text);
/// * after the event that ended the stream, events yield nothing and the end stays the same, and
///   closing reports it;
/// * a stream ends clean only if a chunk carried a finish reason (never a truncated answer that
///   looks complete); an end by error passes [`check_error_info`].
///
/// Returns how the stream ended.
///
/// # Panics
///
/// When a rule is broken (or the translator panics).
pub fn check_stream<T: Translator>(translator: &T, events: &[SseEvent]) -> StreamEnd {
    let mut driver = StreamDriver::new(translator);
    // A finish reason was seen, or may have been in a chunk the checks cannot read.
    let mut finish_seen = false;
    let mut end: Option<StreamEnd> = None;
    for (i, ev) in events.iter().enumerate() {
        let step = driver.event(ev.event.as_deref(), &ev.data);
        if let Some(done) = &end {
            assert!(
                step.chunks.is_empty() && step.done.as_ref() == Some(done),
                "event {i} after the end produced {step:?}"
            );
            continue;
        }
        let not_json = matches!(read_json(&ev.data), Json::Invalid(_));
        if not_json && ev.data.trim_ascii() != b"[DONE]" {
            assert!(
                step.chunks.is_empty() && step.usage.is_none(),
                "event {i}: data that is not JSON produced {step:?}"
            );
            if matches!(ev.event.as_deref(), None | Some("message")) {
                assert!(
                    matches!(step.done, Some(StreamEnd::Cut { .. })),
                    "event {i}: data that is not JSON did not cut the stream: {step:?}"
                );
            }
        }
        for chunk in &step.chunks {
            let v = match read_json(chunk) {
                Json::Valid(v) => v,
                Json::BeyondLimits => {
                    finish_seen = true;
                    continue;
                }
                Json::Invalid(e) => {
                    panic!(
                        "event {i}: a chunk that is not JSON ({e}): {}",
                        chunk.escape_ascii()
                    )
                }
            };
            let Some(choices) = v.get("choices").and_then(Value::as_array) else {
                panic!("event {i}: a chunk without a `choices` array: {v}");
            };
            finish_seen |= choices
                .iter()
                .any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()));
            if let Some(u) = v
                .get("usage")
                .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
            {
                assert_eq!(
                    step.usage.as_ref(),
                    Some(&u),
                    "event {i}: a chunk's usage is not reported in its step: {v}"
                );
            }
        }
        if let Some(StreamEnd::Error { error }) = &step.done {
            check_error_info(error);
        }
        end = step.done;
    }
    let closed = driver.close();
    if let Some(done) = &end {
        assert_eq!(&closed, done, "close changed the end");
    }
    if closed == StreamEnd::Clean {
        assert!(finish_seen, "a clean end without any finish reason");
    }
    closed
}
