//! The Gemini plugin for stilts: Google's Gemini API `generateContent` and
//! `streamGenerateContent?alt=sse` (`generativelanguage.googleapis.com/v1beta`).
//!
//! Translation, canonical → Gemini:
//! * `system`/`developer` messages → `systemInstruction` (joined with blank lines);
//! * roles user/assistant → `user`/`model`; text → `text` parts; `data:` image URLs → `inlineData`, other
//!   URLs → `fileData`; assistant `tool_calls` → `functionCall` parts; `tool` messages → `functionResponse`
//!   parts (named after the call they answer; the text is sent as `{"content": …}`) in a user turn;
//! * `max_tokens`/`max_completion_tokens`, `temperature`, `top_p`, `stop`, `n`, `seed`, penalties, JSON
//!   `response_format` (a `json_schema`'s schema as `responseJsonSchema`) → `generationConfig`; `tools` →
//!   one `functionDeclarations` tool; `tool_choice` → `toolConfig`;
//! * fields without effect on the answer (`user`, `store`, `metadata`, `logprobs: false`,
//!   `parallel_tool_calls: true`) are not sent; any other field Gemini cannot honour
//!   (`reasoning_effort`, `verbosity`, `logprobs`, `logit_bias`, `parallel_tool_calls: false`, …) is
//!   refused with `BadInput` naming it, never silently dropped.
//!
//! Gemini → canonical: text parts join into `content` (thought parts are skipped), `functionCall` parts
//! become `tool_calls` (id from the part, else `call_<n>`); `finishReason` STOP → stop (tool_calls when
//! the turn called functions), MAX_TOKENS → length, SAFETY/RECITATION/BLOCKLIST/PROHIBITED_CONTENT/SPII/
//! IMAGE_SAFETY → content_filter, others → stop; a prompt blocked by `promptFeedback.blockReason` (HTTP
//! 200, no candidates) is a content_filter error; `usageMetadata` → usage (thought tokens count as
//! completion tokens, as OpenAI counts reasoning tokens). Streams carry one whole response chunk per
//! `data:` event and no terminal marker: a stream that sent a `finishReason` then closed ended cleanly.
//! The key goes in `x-goog-api-key`, never in the URL.

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
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// The Gemini dialect translator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gemini;

stilts_plugin::export_plugin!(Gemini);

/// Per-stream state.
#[derive(Debug, Default)]
pub struct GeminiStream {
    id: String,
    model: String,
    created: u64,
    started: bool,
    finish: Option<FinishReason>,
    next_tool: u32,
    usage: Option<Usage>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bad(msg: impl Into<String>) -> PluginError {
    PluginError::BadInput(msg.into())
}

/// Maps Gemini's `finishReason` (and whether the turn called functions) to the canonical finish reason.
pub fn finish_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ if called_tools => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn guess_mime(url: &str) -> Option<&'static str> {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    let ext = path.rsplit('.').next()?;
    Some(match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

fn parts_of(content: &Option<Content>) -> Result<Vec<Value>, PluginError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![json!({"text": t})]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => Ok(json!({"text": text})),
                ContentPart::ImageUrl { image_url } => Ok(match image_url.as_base64_data() {
                    Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                    None => match guess_mime(&image_url.url) {
                        Some(mime) => {
                            json!({"fileData": {"mimeType": mime, "fileUri": image_url.url}})
                        }
                        None => json!({"fileData": {"fileUri": image_url.url}}),
                    },
                }),
                ContentPart::Other(v) => Err(bad(format!(
                    "content part type {} is not supported by Gemini",
                    v.get("type").unwrap_or(&Value::Null)
                ))),
            })
            .collect(),
    }
}

fn translate_messages(messages: &[Message]) -> Result<(Option<String>, Vec<Value>), PluginError> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    let mut pending: Vec<Value> = Vec::new();
    // tool_call_id → function name, from earlier assistant turns (Gemini names responses by function).
    let mut names: Vec<(String, String)> = Vec::new();
    let flush = |contents: &mut Vec<Value>, pending: &mut Vec<Value>| {
        if !pending.is_empty() {
            contents.push(json!({"role": "user", "parts": std::mem::take(pending)}));
        }
    };
    for m in messages {
        match m.role {
            Role::System | Role::Developer => system.push(m.text_content()),
            Role::Tool => {
                let id = m
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| bad("a tool message needs tool_call_id"))?;
                let Some((_, name)) = names.iter().find(|(i, _)| i == id) else {
                    return Err(bad(format!(
                        "tool result {id} answers no earlier tool call"
                    )));
                };
                pending.push(json!({"functionResponse": {"name": name, "response": {"content": m.text_content()}}}));
            }
            Role::User => {
                flush(&mut contents, &mut pending);
                contents.push(json!({"role": "user", "parts": parts_of(&m.content)?}));
            }
            Role::Assistant => {
                flush(&mut contents, &mut pending);
                let mut parts = parts_of(&m.content)?;
                for call in m.tool_calls.iter().flatten() {
                    let args: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            bad(format!(
                                "tool call {} has arguments that are not JSON: {e}",
                                call.id
                            ))
                        })?
                    };
                    names.push((call.id.clone(), call.function.name.clone()));
                    parts.push(json!({"functionCall": {"name": call.function.name, "args": args}}));
                }
                contents.push(json!({"role": "model", "parts": parts}));
            }
        }
    }
    flush(&mut contents, &mut pending);
    let system = if system.is_empty() {
        None
    } else {
        Some(system.join("\n\n"))
    };
    Ok((system, contents))
}

fn tool_config(choice: &Value) -> Option<Value> {
    let mode = |m: &str| json!({"functionCallingConfig": {"mode": m}});
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Some(mode("AUTO")),
            "required" => Some(mode("ANY")),
            "none" => Some(mode("NONE")),
            _ => None,
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)?;
            Some(json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}))
        }
        _ => None,
    }
}

fn usage_of(u: &Value) -> Usage {
    let get = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt = get("promptTokenCount").saturating_add(get("toolUsePromptTokenCount"));
    let thoughts = get("thoughtsTokenCount");
    let completion = get("candidatesTokenCount").saturating_add(thoughts);
    let mut usage = Usage::new(prompt, completion);
    if let Some(total) = u.get("totalTokenCount").and_then(Value::as_u64) {
        usage.total_tokens = total;
    }
    let cached = get("cachedContentTokenCount");
    if cached > 0 {
        usage.prompt_tokens_details = Some(json!({"cached_tokens": cached}));
    }
    if thoughts > 0 {
        usage.completion_tokens_details = Some(json!({"reasoning_tokens": thoughts}));
    }
    usage
}

/// Text (non-thought) and function calls of the first candidate.
fn candidate_output(v: &Value) -> (String, Vec<(Option<String>, String, String)>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let parts = v
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array);
    for p in parts.into_iter().flatten() {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(fc) = p.get("functionCall") {
            let id = fc.get("id").and_then(Value::as_str).map(str::to_owned);
            let name = fc
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let args = fc
                .get("args")
                .map(Value::to_string)
                .unwrap_or_else(|| "{}".to_owned());
            calls.push((id, name, args));
        }
    }
    (text, calls)
}

fn blocked(v: &Value) -> Option<ErrorInfo> {
    let has_candidates = v
        .get("candidates")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    let reason = v
        .pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)?;
    if has_candidates {
        return None;
    }
    Some(ErrorInfo {
        class: ErrorClass::ContentFilter,
        retry_after_ms: None,
        provider_code: Some(reason.to_owned()),
        message: format!("the prompt was blocked ({reason})"),
    })
}

/// The first field of `extra` (the canonical request's fields beyond the typed ones) that Gemini
/// cannot honour and that would change the answer.
fn unsupported_extra(extra: &Map<String, Value>) -> Option<String> {
    for (field, value) in extra {
        let honoured = match field.as_str() {
            // Carried (see build_request), or without effect on the answer.
            "n" | "seed" | "presence_penalty" | "frequency_penalty" | "user" | "store"
            | "metadata" | "service_tier" => true,
            "response_format" => matches!(
                value.get("type").and_then(Value::as_str),
                Some("text" | "json_object" | "json_schema")
            ),
            "logprobs" => value == &Value::Bool(false),
            "parallel_tool_calls" => value == &Value::Bool(true),
            _ => value.is_null(),
        };
        if !honoured {
            return Some(format!(
                "{field}: the Gemini API cannot honour it here; remove it or route to a deployment that can"
            ));
        }
    }
    None
}

impl Translator for Gemini {
    type Stream = GeminiStream;

    fn name(&self) -> &str {
        "gemini"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn capabilities(&self) -> Capabilities {
        let context_windows = [
            ("gemini-2.5-pro", 1_048_576),
            ("gemini-2.5-flash", 1_048_576),
            ("gemini-2.5-flash-lite", 1_048_576),
            ("gemini-2.0-flash", 1_048_576),
            ("gemini-2.0-flash-lite", 1_048_576),
        ]
        .into_iter()
        .map(|(m, n)| (m.to_owned(), n))
        .collect();
        Capabilities {
            streaming: true,
            prefill_continuation: false,
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
            req.model.as_str()
        } else {
            cfg.model.as_str()
        };
        let model = model.strip_prefix("models/").unwrap_or(model);
        // The name becomes a path segment of the URL: letters, digits, `-`, `.` and `_` only (no
        // `/`, `?`, `#`, `:` or `%` to reach another resource, no space or control character).
        let segment_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if model.is_empty() || !model.chars().all(segment_safe) {
            return Err(bad(format!("invalid Gemini model name {model:?}")));
        }
        let (system, contents) = translate_messages(&req.messages)?;
        if contents.is_empty() {
            return Err(bad("Gemini needs at least one user or assistant message"));
        }
        if let Some(why) = unsupported_extra(&req.extra) {
            return Err(bad(why));
        }
        let mut body = Map::new();
        body.insert("contents".into(), Value::Array(contents));
        if let Some(s) = system {
            body.insert("systemInstruction".into(), json!({"parts": [{"text": s}]}));
        }
        let mut generation = Map::new();
        if let Some(t) = req.temperature {
            generation.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            generation.insert("topP".into(), json!(p));
        }
        if let Some(m) = req.max_output_tokens() {
            generation.insert("maxOutputTokens".into(), json!(m));
        }
        if let Some(stop) = &req.stop {
            generation.insert("stopSequences".into(), json!(stop.to_vec()));
        }
        if let Some(n) = req.extra.get("n").and_then(Value::as_u64) {
            generation.insert("candidateCount".into(), json!(n));
        }
        if let Some(seed) = req.extra.get("seed").and_then(Value::as_i64) {
            generation.insert("seed".into(), json!(seed));
        }
        for (field, name) in [
            ("presence_penalty", "presencePenalty"),
            ("frequency_penalty", "frequencyPenalty"),
        ] {
            if let Some(p) = req.extra.get(field).and_then(Value::as_f64) {
                generation.insert(name.into(), json!(p));
            }
        }
        let format = req.extra.get("response_format");
        match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
            Some("json_object") => {
                generation.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                generation.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = format.and_then(|f| f.pointer("/json_schema/schema")) {
                    generation.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            _ => {}
        }
        if !generation.is_empty() {
            body.insert("generationConfig".into(), Value::Object(generation));
        }
        if let Some(tools) = &req.tools {
            let decls: Vec<Value> = tools
                .iter()
                .map(|t| {
                    let mut d = Map::new();
                    d.insert("name".into(), json!(t.function.name));
                    if let Some(desc) = &t.function.description {
                        d.insert("description".into(), json!(desc));
                    }
                    if let Some(p) = &t.function.parameters {
                        d.insert("parameters".into(), p.clone());
                    }
                    Value::Object(d)
                })
                .collect();
            body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        }
        if let Some(tc) = req.tool_choice.as_ref().and_then(tool_config) {
            body.insert("toolConfig".into(), tc);
        }
        let body = serde_json::to_vec(&Value::Object(body)).map_err(|e| bad(e.to_string()))?;
        let base = cfg.base_url_or(DEFAULT_BASE_URL);
        let url = if req.is_stream() {
            format!("{base}/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("{base}/models/{model}:generateContent")
        };
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if req.is_stream() {
            headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
        }
        if let Some(key) = &cfg.api_key {
            headers.push(("x-goog-api-key".to_owned(), key.expose().to_owned()));
        }
        headers.extend(cfg.extra_headers.iter().cloned());
        Ok(HttpRequest {
            method: "POST".to_owned(),
            url,
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
        if v.get("error").is_some() || v.is_array() {
            return Err(PluginError::Upstream(
                self.classify_error(status, headers, body),
            ));
        }
        if let Some(info) = blocked(&v) {
            return Err(PluginError::Upstream(info));
        }
        let Some(cand) = v.pointer("/candidates/0") else {
            return Err(bad("response has no candidates"));
        };
        let (text, calls) = candidate_output(&v);
        let called = !calls.is_empty();
        let finish = cand
            .get("finishReason")
            .and_then(Value::as_str)
            .map(|r| finish_reason(r, called));
        let mut message = Message::text(Role::Assistant, text);
        if called {
            if message.text_content().is_empty() {
                message.content = None;
            }
            message.tool_calls = Some(
                calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, (id, name, arguments))| ToolCall {
                        id: id.unwrap_or_else(|| format!("call_{i}")),
                        kind: "function".to_owned(),
                        function: FunctionCall { name, arguments },
                    })
                    .collect(),
            );
        }
        let resp = ChatResponse {
            id: v
                .get("responseId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            object: "chat.completion".to_owned(),
            created: now_secs(),
            model: v
                .get("modelVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason: finish,
            }],
            usage: v.get("usageMetadata").map(usage_of),
            extra: Map::new(),
        };
        ParsedResponse::from_canonical(&resp)
    }

    fn classify_error(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> ErrorInfo {
        let v: Option<Value> = serde_json::from_slice(body).ok();
        // The non-SSE stream endpoint wraps errors in an array.
        let v = match v {
            Some(Value::Array(mut a)) if !a.is_empty() => Some(a.swap_remove(0)),
            other => other,
        };
        let err = v.as_ref().and_then(|v| v.get("error"));
        let Some(err) = err else {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let mut info = ErrorInfo::new(
                ErrorClass::from_status(status),
                if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    text.chars().take(300).collect()
                },
            );
            info.retry_after_ms = http::retry_after_ms(headers);
            return info;
        };
        let mut info = classify_status_value(status, err);
        if info.retry_after_ms.is_none() {
            info.retry_after_ms = http::retry_after_ms(headers);
        }
        info
    }

    fn stream_open(&self) -> GeminiStream {
        GeminiStream {
            created: now_secs(),
            ..Default::default()
        }
    }

    fn stream_event(&self, s: &mut GeminiStream, _event: Option<&str>, data: &[u8]) -> StreamStep {
        let v: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => return StreamStep::cut(format!("stream event is not valid JSON: {e}")),
        };
        if let Some(err) = v.get("error") {
            return StreamStep::end(StreamEnd::Error {
                error: classify_status_value(0, err),
            });
        }
        if !v.is_object() {
            return StreamStep::cut("stream event is not a JSON object");
        }
        if let Some(info) = blocked(&v) {
            return StreamStep::end(StreamEnd::Error { error: info });
        }
        if let Some(id) = v.get("responseId").and_then(Value::as_str) {
            id.clone_into(&mut s.id);
        }
        if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
            m.clone_into(&mut s.model);
        }
        let mut step = StreamStep::default();
        let (text, calls) = candidate_output(&v);
        let role = if s.started {
            None
        } else {
            Some(Role::Assistant)
        };
        s.started = true;
        let mut tool_deltas = Vec::new();
        for (id, name, args) in calls {
            let index = s.next_tool;
            s.next_tool += 1;
            tool_deltas.push(ToolCallDelta {
                index,
                id: Some(id.unwrap_or_else(|| format!("call_{index}"))),
                kind: Some("function".to_owned()),
                function: Some(FunctionCallDelta {
                    name: Some(name),
                    arguments: Some(args),
                }),
            });
        }
        if role.is_some() || !text.is_empty() || !tool_deltas.is_empty() {
            let delta = Delta {
                role,
                content: if text.is_empty() && !tool_deltas.is_empty() {
                    None
                } else {
                    Some(text)
                },
                tool_calls: if tool_deltas.is_empty() {
                    None
                } else {
                    Some(tool_deltas)
                },
            };
            step.push(&ChatChunk::delta(&s.id, &s.model, s.created, delta, None));
        }
        if let Some(u) = v.get("usageMetadata") {
            let u = usage_of(u);
            s.usage = Some(u.clone());
            step.usage = Some(u);
        }
        if let Some(r) = v
            .pointer("/candidates/0/finishReason")
            .and_then(Value::as_str)
        {
            if s.finish.is_none() {
                let f = finish_reason(r, s.next_tool > 0);
                s.finish = Some(f);
                step.push(&ChatChunk::delta(
                    &s.id,
                    &s.model,
                    s.created,
                    Delta::default(),
                    Some(f),
                ));
                if let Some(u) = &s.usage {
                    step.push(&ChatChunk::usage(&s.id, &s.model, s.created, u.clone()));
                    step.usage = Some(u.clone());
                }
            }
        }
        step
    }

    fn stream_close(&self, s: &mut GeminiStream) -> StreamEnd {
        if s.finish.is_some() {
            StreamEnd::Clean
        } else {
            StreamEnd::Cut {
                reason: "the stream closed before a finishReason".to_owned(),
            }
        }
    }
}

/// Classifies a `google.rpc.Status` error object (`status` 0 = inside a stream).
fn classify_status_value(status: u16, err: &Value) -> ErrorInfo {
    let code = err.get("status").and_then(Value::as_str).map(str::to_owned);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let http_code = err
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    let details = err.get("details").and_then(Value::as_array);
    let detail = |ty: &str| {
        details.into_iter().flatten().find(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(ty))
        })
    };
    let retry_after_ms = detail("google.rpc.RetryInfo")
        .and_then(|d| d.get("retryDelay"))
        .and_then(Value::as_str)
        .and_then(http::parse_seconds_ms);
    let per_day = detail("google.rpc.QuotaFailure")
        .and_then(|d| d.get("violations"))
        .and_then(Value::as_array)
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                v.get("quotaId")
                    .and_then(Value::as_str)
                    .is_some_and(|q| q.contains("PerDay"))
            })
        });
    let reason = detail("google.rpc.ErrorInfo")
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    let lower = message.to_ascii_lowercase();
    let class = match code.as_deref() {
        _ if reason == Some("API_KEY_INVALID") => ErrorClass::Auth,
        Some("INVALID_ARGUMENT")
            if lower.contains("token count") || lower.contains("maximum number of tokens") =>
        {
            ErrorClass::ContextLength
        }
        Some("RESOURCE_EXHAUSTED") if per_day => ErrorClass::Quota,
        Some("RESOURCE_EXHAUSTED") => ErrorClass::RateLimited,
        Some("UNAVAILABLE") | Some("INTERNAL") | Some("UNKNOWN") | Some("ABORTED") => {
            ErrorClass::Server
        }
        Some("DEADLINE_EXCEEDED") => ErrorClass::Timeout,
        // Billing not enabled, region not supported: the deployment is misconfigured.
        Some("PERMISSION_DENIED") | Some("UNAUTHENTICATED") | Some("FAILED_PRECONDITION") => {
            ErrorClass::Auth
        }
        Some("INVALID_ARGUMENT")
        | Some("NOT_FOUND")
        | Some("OUT_OF_RANGE")
        | Some("ALREADY_EXISTS") => ErrorClass::BadRequest,
        _ => match (status, http_code) {
            (0 | 200..=299, Some(c)) => ErrorClass::from_status(c),
            (0 | 200..=299, None) => ErrorClass::Server,
            (s, _) => ErrorClass::from_status(s),
        },
    };
    ErrorInfo {
        class,
        retry_after_ms,
        provider_code: code,
        message: if message.trim().is_empty() {
            "Gemini error".to_owned()
        } else {
            message
        },
    }
}
