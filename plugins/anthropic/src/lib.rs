//! The Anthropic plugin for stilts: the Messages API (`POST /v1/messages`).
//!
//! Translation, canonical → Anthropic:
//! * `system`/`developer` messages → the top-level `system` string (joined with blank lines);
//! * `max_tokens` is required: the request's limit, else the `default_max_tokens` option, else 4096;
//! * text and image parts → `text` / `image` blocks (`data:` URLs become base64 sources, others URL
//!   sources); assistant `tool_calls` → `tool_use` blocks; `tool` messages → `tool_result` blocks in a user
//!   turn (consecutive results share one turn);
//! * `tools` → `{name, description, input_schema}`; `tool_choice` auto/required/none/function →
//!   auto/any/none/tool (`parallel_tool_calls: false` → `disable_parallel_tool_use`); `stop` →
//!   `stop_sequences`; `user` → `metadata.user_id`; temperature is capped at 1.
//! * Fields that do not change the answer (`store`, `metadata`, `seed`, `n: 1`, `logprobs: false`, zero
//!   penalties, `response_format: text`) are not sent; any other field the Messages API cannot honour
//!   (`response_format` JSON modes, `reasoning_effort`, `verbosity`, `logprobs`, penalties, `n` > 1, …)
//!   is refused with `BadInput` naming it, never silently dropped.
//!
//! Anthropic → canonical: text blocks join into `content`, `tool_use` blocks become `tool_calls` (input
//! re-encoded as an arguments string), `stop_reason` maps end_turn/stop_sequence/pause_turn → stop,
//! max_tokens/model_context_window_exceeded → length, tool_use → tool_calls, refusal → content_filter;
//! usage input = input + cache creation + cache read tokens. Streams follow the named events
//! (`message_start`, `content_block_*`, `message_delta`, `message_stop`, `ping`, `error`); unknown events are
//! ignored. The key goes in `x-api-key`, with `anthropic-version` (option `anthropic_version`, default
//! `2023-06-01`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use stilts_plugin::canonical::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart, Delta, FinishReason,
    FunctionCall, FunctionCallDelta, Message, Role, ToolCall, ToolCallDelta, Usage,
};
use stilts_plugin::types::http;
use stilts_plugin::{
    Capabilities, DeploymentConfig, ErrorClass, ErrorInfo, HttpRequest, ParsedResponse,
    PluginError, StreamEnd, StreamStep, Translator,
};

/// The default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";
/// The `anthropic-version` header value used unless the `anthropic_version` option says otherwise.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// `max_tokens` when neither the request nor the `default_max_tokens` option gives one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The Anthropic Messages dialect translator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anthropic;

stilts_plugin::export_plugin!(Anthropic);

/// Per-stream state.
#[derive(Debug, Default)]
pub struct AnthropicStream {
    id: String,
    model: String,
    created: u64,
    finish: Option<FinishReason>,
    usage: UsageParts,
    /// Content block index → canonical tool call index.
    tool_blocks: Vec<(u64, u32)>,
    next_tool: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct UsageParts {
    input: u64,
    output: u64,
    cache_creation: u64,
    cache_read: u64,
}

impl UsageParts {
    fn update(&mut self, u: &Value) {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(v) = get("input_tokens") {
            self.input = v;
        }
        if let Some(v) = get("output_tokens") {
            self.output = v;
        }
        if let Some(v) = get("cache_creation_input_tokens") {
            self.cache_creation = v;
        }
        if let Some(v) = get("cache_read_input_tokens") {
            self.cache_read = v;
        }
    }

    fn canonical(self) -> Usage {
        let prompt = self
            .input
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read);
        let mut u = Usage::new(prompt, self.output);
        if self.cache_read > 0 {
            u.prompt_tokens_details = Some(json!({"cached_tokens": self.cache_read}));
        }
        u
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Maps Anthropic's `stop_reason` to the canonical finish reason.
pub fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn bad(msg: impl Into<String>) -> PluginError {
    PluginError::BadInput(msg.into())
}

fn part_block(part: &ContentPart) -> Result<Value, PluginError> {
    match part {
        ContentPart::Text { text } => Ok(json!({"type": "text", "text": text})),
        ContentPart::ImageUrl { image_url } => Ok(match image_url.as_base64_data() {
            Some((mime, data)) => {
                json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}})
            }
            None => json!({"type": "image", "source": {"type": "url", "url": image_url.url}}),
        }),
        ContentPart::Other(v) => Err(bad(format!(
            "content part type {} is not supported by Anthropic",
            v.get("type").unwrap_or(&Value::Null)
        ))),
    }
}

fn content_blocks(content: &Option<Content>) -> Result<Vec<Value>, PluginError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![json!({"type": "text", "text": t})]),
        Some(Content::Parts(parts)) => parts.iter().map(part_block).collect(),
    }
}

/// Simplifies `[{"type":"text","text":t}]` to the string `t`.
fn compact(blocks: Vec<Value>) -> Value {
    if let [b] = blocks.as_slice() {
        if b.get("type").and_then(Value::as_str) == Some("text") {
            if let Some(t) = b.get("text") {
                return t.clone();
            }
        }
    }
    Value::Array(blocks)
}

fn translate_messages(messages: &[Message]) -> Result<(Option<String>, Vec<Value>), PluginError> {
    let mut system: Vec<String> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    let mut pending_results: Vec<Value> = Vec::new();
    let flush = |out: &mut Vec<Value>, pending: &mut Vec<Value>| {
        if !pending.is_empty() {
            out.push(json!({"role": "user", "content": std::mem::take(pending)}));
        }
    };
    for m in messages {
        match m.role {
            Role::System | Role::Developer => system.push(m.text_content()),
            Role::Tool => {
                let id = m
                    .tool_call_id
                    .clone()
                    .ok_or_else(|| bad("a tool message needs tool_call_id"))?;
                let content = match &m.content {
                    None => Value::String(String::new()),
                    Some(Content::Text(t)) => Value::String(t.clone()),
                    Some(Content::Parts(_)) => Value::Array(content_blocks(&m.content)?),
                };
                pending_results
                    .push(json!({"type": "tool_result", "tool_use_id": id, "content": content}));
            }
            Role::User => {
                flush(&mut out, &mut pending_results);
                out.push(json!({"role": "user", "content": compact(content_blocks(&m.content)?)}));
            }
            Role::Assistant => {
                flush(&mut out, &mut pending_results);
                let mut blocks = content_blocks(&m.content)?;
                for call in m.tool_calls.iter().flatten() {
                    let input: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            bad(format!(
                                "tool call {} has arguments that are not JSON: {e}",
                                call.id
                            ))
                        })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
                }
                out.push(json!({"role": "assistant", "content": compact(blocks)}));
            }
        }
    }
    flush(&mut out, &mut pending_results);
    let system = if system.is_empty() {
        None
    } else {
        Some(system.join("\n\n"))
    };
    Ok((system, out))
}

fn tool_choice(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            _ => None,
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)?;
            Some(json!({"type": "tool", "name": name}))
        }
        _ => None,
    }
}

/// The first field of `extra` (the canonical request's fields beyond the typed ones) that the
/// Messages API cannot honour and that would change the answer, with why.
fn unsupported_extra(extra: &Map<String, Value>) -> Option<String> {
    for (field, value) in extra {
        let harmless = match field.as_str() {
            // Carried (see build_request), or without effect on the answer.
            "user" | "parallel_tool_calls" | "store" | "metadata" | "seed" | "service_tier" => true,
            "n" => value.as_u64() == Some(1),
            "logprobs" => value == &Value::Bool(false),
            "presence_penalty" | "frequency_penalty" => value.as_f64() == Some(0.0),
            "response_format" => value.get("type").and_then(Value::as_str) == Some("text"),
            _ => value.is_null(),
        };
        if !harmless {
            return Some(format!(
                "{field}: the Anthropic Messages API cannot honour it ({}); remove it or route to a deployment that can",
                match field.as_str() {
                    "response_format" => "no JSON mode or JSON schema",
                    "reasoning_effort" | "verbosity" => "no such setting",
                    "n" => "one answer per request",
                    _ => "no such field",
                }
            ));
        }
    }
    None
}

impl Translator for Anthropic {
    type Stream = AnthropicStream;

    fn name(&self) -> &str {
        "anthropic"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn capabilities(&self) -> Capabilities {
        let context_windows = [
            ("claude-opus-4-1", 200_000),
            ("claude-opus-4-0", 200_000),
            ("claude-sonnet-4-5", 200_000),
            ("claude-sonnet-4-0", 200_000),
            ("claude-3-7-sonnet-latest", 200_000),
            ("claude-3-5-haiku-latest", 200_000),
        ]
        .into_iter()
        .map(|(m, n)| (m.to_owned(), n))
        .collect();
        // A final assistant message is continued exactly (prefill), so a cut stream can be resumed.
        Capabilities {
            streaming: true,
            prefill_continuation: true,
            context_windows,
            embeddings: false,
        }
    }

    fn build_request(
        &self,
        req: &ChatRequest,
        cfg: &DeploymentConfig,
    ) -> Result<HttpRequest, PluginError> {
        let model = if cfg.model.is_empty() {
            req.model.clone()
        } else {
            cfg.model.clone()
        };
        if model.is_empty() {
            return Err(bad("no model: set the deployment's model"));
        }
        if let Some(why) = unsupported_extra(&req.extra) {
            return Err(bad(why));
        }
        let (system, messages) = translate_messages(&req.messages)?;
        if messages.is_empty() {
            return Err(bad(
                "Anthropic needs at least one user or assistant message",
            ));
        }
        let default_max = cfg
            .options
            .get("default_max_tokens")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(DEFAULT_MAX_TOKENS);
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert(
            "max_tokens".into(),
            json!(req.max_output_tokens().unwrap_or(default_max)),
        );
        if let Some(s) = system {
            body.insert("system".into(), json!(s));
        }
        body.insert("messages".into(), Value::Array(messages));
        if let Some(t) = req.temperature {
            body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        if let Some(p) = req.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if let Some(stop) = &req.stop {
            body.insert("stop_sequences".into(), json!(stop.to_vec()));
        }
        if let Some(tools) = &req.tools {
            let tools: Vec<Value> = tools
                .iter()
                .map(|t| {
                    let mut o = Map::new();
                    o.insert("name".into(), json!(t.function.name));
                    if let Some(d) = &t.function.description {
                        o.insert("description".into(), json!(d));
                    }
                    let schema = t
                        .function
                        .parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object"}));
                    o.insert("input_schema".into(), schema);
                    Value::Object(o)
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        let mut choice = req.tool_choice.as_ref().and_then(tool_choice);
        if req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false)) && req.tools.is_some()
        {
            let tc = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if tc.get("type").and_then(Value::as_str) != Some("none") {
                tc["disable_parallel_tool_use"] = json!(true);
            }
        }
        if let Some(tc) = choice {
            body.insert("tool_choice".into(), tc);
        }
        if let Some(user) = req.extra.get("user").and_then(Value::as_str) {
            body.insert("metadata".into(), json!({"user_id": user}));
        }
        if req.is_stream() {
            body.insert("stream".into(), json!(true));
        }
        let body = serde_json::to_vec(&Value::Object(body)).map_err(|e| bad(e.to_string()))?;
        let version = cfg
            .options
            .get("anthropic_version")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_VERSION);
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("anthropic-version".to_owned(), version.to_owned()),
        ];
        if req.is_stream() {
            headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
        }
        if let Some(key) = &cfg.api_key {
            headers.push(("x-api-key".to_owned(), key.expose().to_owned()));
        }
        headers.extend(cfg.extra_headers.iter().cloned());
        Ok(HttpRequest {
            method: "POST".to_owned(),
            url: format!("{}/messages", cfg.base_url_or(DEFAULT_BASE_URL)),
            headers,
            body,
        })
    }

    fn parse_response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ParsedResponse, PluginError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("response is not JSON: {e}")))?;
        if v.get("type").and_then(Value::as_str) == Some("error") {
            return Err(PluginError::Upstream(
                self.classify_error(status, headers, body),
            ));
        }
        let Some(blocks) = v.get("content").and_then(Value::as_array) else {
            return Err(bad("response has no `content` array"));
        };
        let mut text = String::new();
        let mut calls = Vec::new();
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                Some("tool_use") => calls.push(ToolCall {
                    id: b.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: b
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        arguments: b
                            .get("input")
                            .map(Value::to_string)
                            .unwrap_or_else(|| "{}".to_owned()),
                    },
                }),
                _ => {} // thinking, redacted_thinking, server tools: not part of the canonical answer
            }
        }
        let mut usage = UsageParts::default();
        if let Some(u) = v.get("usage") {
            usage.update(u);
        }
        let finish = v
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(finish_reason);
        let mut message = Message::text(Role::Assistant, text);
        if !calls.is_empty() {
            if message.text_content().is_empty() {
                message.content = None;
            }
            message.tool_calls = Some(calls);
        }
        let resp = ChatResponse {
            id: v.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
            object: "chat.completion".to_owned(),
            created: now_secs(),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason: finish,
            }],
            usage: v.get("usage").map(|_| usage.canonical()),
            extra: Map::new(),
        };
        ParsedResponse::from_canonical(&resp)
    }

    fn classify_error(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> ErrorInfo {
        let v: Option<Value> = serde_json::from_slice(body).ok();
        let err = v.as_ref().and_then(|v| v.get("error"));
        let kind = err
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let message = err
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .map(str::to_owned);
        let mut info = classify_kind(status, kind.as_deref(), message.as_deref().unwrap_or(""));
        info.message = message.unwrap_or_else(|| {
            // Cloudflare (413) and proxies answer with non-JSON bodies.
            let t = String::from_utf8_lossy(body);
            let t = t.trim();
            if t.is_empty() {
                format!("HTTP {status}")
            } else {
                t.chars().take(300).collect()
            }
        });
        info.retry_after_ms = http::retry_after_ms(headers);
        info
    }

    fn stream_open(&self) -> AnthropicStream {
        AnthropicStream {
            created: now_secs(),
            ..Default::default()
        }
    }

    fn stream_event(
        &self,
        s: &mut AnthropicStream,
        event: Option<&str>,
        data: &[u8],
    ) -> StreamStep {
        let v: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => return StreamStep::cut(format!("stream event is not valid JSON: {e}")),
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or("");
        let mut step = StreamStep::default();
        match kind {
            "message_start" => {
                let Some(m) = v.get("message") else {
                    return StreamStep::cut("message_start without message");
                };
                s.id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                s.model = m
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if let Some(u) = m.get("usage") {
                    s.usage.update(u);
                }
                let delta = Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    tool_calls: None,
                };
                step.push(&ChatChunk::delta(&s.id, &s.model, s.created, delta, None));
            }
            "content_block_start" => {
                let (Some(index), Some(block)) = (
                    v.get("index").and_then(Value::as_u64),
                    v.get("content_block"),
                ) else {
                    return StreamStep::cut("malformed content_block_start");
                };
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let k = s.next_tool;
                        s.next_tool += 1;
                        s.tool_blocks.push((index, k));
                        let call = ToolCallDelta {
                            index: k,
                            id: block.get("id").and_then(Value::as_str).map(str::to_owned),
                            kind: Some("function".to_owned()),
                            function: Some(FunctionCallDelta {
                                name: block.get("name").and_then(Value::as_str).map(str::to_owned),
                                arguments: Some(String::new()),
                            }),
                        };
                        let delta = Delta {
                            tool_calls: Some(vec![call]),
                            ..Default::default()
                        };
                        step.push(&ChatChunk::delta(&s.id, &s.model, s.created, delta, None));
                    }
                    Some("text") => {
                        let t = block.get("text").and_then(Value::as_str).unwrap_or("");
                        if !t.is_empty() {
                            let delta = Delta {
                                content: Some(t.to_owned()),
                                ..Default::default()
                            };
                            step.push(&ChatChunk::delta(&s.id, &s.model, s.created, delta, None));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let (Some(index), Some(delta)) =
                    (v.get("index").and_then(Value::as_u64), v.get("delta"))
                else {
                    return StreamStep::cut("malformed content_block_delta");
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let Some(t) = delta.get("text").and_then(Value::as_str) else {
                            return StreamStep::cut("text_delta without text");
                        };
                        let d = Delta {
                            content: Some(t.to_owned()),
                            ..Default::default()
                        };
                        step.push(&ChatChunk::delta(&s.id, &s.model, s.created, d, None));
                    }
                    Some("input_json_delta") => {
                        let Some(k) = s
                            .tool_blocks
                            .iter()
                            .find(|(i, _)| *i == index)
                            .map(|(_, k)| *k)
                        else {
                            return StreamStep::cut(
                                "input_json_delta for a block that is not a tool_use",
                            );
                        };
                        let Some(part) = delta.get("partial_json").and_then(Value::as_str) else {
                            return StreamStep::cut("input_json_delta without partial_json");
                        };
                        let call = ToolCallDelta {
                            index: k,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(part.to_owned()),
                            }),
                            ..Default::default()
                        };
                        let d = Delta {
                            tool_calls: Some(vec![call]),
                            ..Default::default()
                        };
                        step.push(&ChatChunk::delta(&s.id, &s.model, s.created, d, None));
                    }
                    _ => {} // thinking_delta, signature_delta, citations_delta: not canonical output
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    s.usage.update(u);
                    step.usage = Some(s.usage.canonical());
                }
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    let f = finish_reason(r);
                    s.finish = Some(f);
                    step.push(&ChatChunk::delta(
                        &s.id,
                        &s.model,
                        s.created,
                        Delta::default(),
                        Some(f),
                    ));
                }
            }
            "message_stop" => {
                let usage = s.usage.canonical();
                step.push(&ChatChunk::usage(&s.id, &s.model, s.created, usage.clone()));
                step.usage = Some(usage);
                step.done = Some(if s.finish.is_some() {
                    StreamEnd::Clean
                } else {
                    StreamEnd::Cut {
                        reason: "message_stop without a stop_reason".to_owned(),
                    }
                });
            }
            "error" => {
                let err = v.get("error");
                let kind = err.and_then(|e| e.get("type")).and_then(Value::as_str);
                let msg = err
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .filter(|m| !m.trim().is_empty())
                    .unwrap_or("stream error");
                let mut info = classify_kind(0, kind, msg);
                info.message = msg.to_owned();
                step.done = Some(StreamEnd::Error { error: info });
            }
            _ => {} // ping, content_block_stop, and event types added later: ignored
        }
        step
    }

    fn stream_close(&self, s: &mut AnthropicStream) -> StreamEnd {
        if s.finish.is_some() {
            StreamEnd::Clean
        } else {
            StreamEnd::Cut {
                reason: "the stream closed before a stop_reason".to_owned(),
            }
        }
    }
}

/// Classifies by Anthropic's `error.type` (status 0 = a mid-stream error event), falling back to the status.
fn classify_kind(status: u16, kind: Option<&str>, message: &str) -> ErrorInfo {
    let lower = message.to_ascii_lowercase();
    let class = match kind {
        _ if lower.contains("prompt is too long") || lower.contains("context window") => {
            ErrorClass::ContextLength
        }
        _ if lower.contains("credit balance") => ErrorClass::Quota,
        Some("rate_limit_error") | Some("overloaded_error") => ErrorClass::RateLimited,
        Some("authentication_error") | Some("permission_error") => ErrorClass::Auth,
        Some("billing_error") => ErrorClass::Quota,
        Some("api_error") => ErrorClass::Server,
        Some("timeout_error") => ErrorClass::Timeout,
        Some("invalid_request_error") | Some("not_found_error") | Some("request_too_large") => {
            ErrorClass::BadRequest
        }
        _ if status == 0 => ErrorClass::Server,
        _ => ErrorClass::from_status(status),
    };
    ErrorInfo {
        class,
        retry_after_ms: None,
        provider_code: kind.map(str::to_owned),
        message: String::new(),
    }
}
