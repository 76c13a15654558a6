//! The OpenAI plugin for stilts: OpenAI Chat Completions and every OpenAI-compatible server (Ollama's
//! `/v1`, vLLM, llama.cpp `llama-server`, Groq, Together…).
//!
//! The canonical format *is* this dialect, so the plugin is close to a pass-through: it swaps in the
//! deployment's model, asks streams for a final usage chunk, places the key as a Bearer token, and passes
//! response bodies and stream chunks through byte for byte (extensions such as Ollama's `reasoning` or
//! llama.cpp's `timings` survive). Its real work is classification: the two meanings of 429
//! (`rate_limit_exceeded` versus `insufficient_quota`), context-length errors in each server's wording,
//! the flat and nested vLLM error bodies, and mid-stream `{"error":…}` payloads.
//!
//! Deployment options (`DeploymentConfig::options`):
//! * `include_usage` (bool, default true): add `stream_options.include_usage` to streaming requests. Set
//!   false for a server that rejects `stream_options`.
//! * `organization`, `project` (strings): sent as `OpenAI-Organization` / `OpenAI-Project`.
//! * `continuation` (string): how the deployment's server continues a final assistant message, for
//!   exact continuation of a cut stream (with `prefill_continuation = true` on the deployment):
//!   `"partial"` (the server continues a trailing partial assistant turn as it is: llama.cpp,
//!   Ollama), `"continue_final_message"` (vLLM: adds `continue_final_message: true` and
//!   `add_generation_prompt: false`) or `"prefix"` (DeepSeek, Mistral: marks the final assistant
//!   message `prefix: true`). Applied to any request whose last message is the assistant's. Unset,
//!   requests are sent as they are; OpenAI's own API does not continue a final assistant message, so
//!   an OpenAI deployment must not declare continuation.

use serde_json::{Map, Value};
use stilts_plugin::canonical::{ChatRequest, FinishReason, StreamOptions, Usage};
use stilts_plugin::types::http;
use stilts_plugin::{
    Capabilities, DeploymentConfig, ErrorClass, ErrorInfo, HttpRequest, ParsedResponse,
    PluginError, StreamEnd, StreamStep, Translator,
};

/// The default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The OpenAI dialect translator.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAi;

/// Per-stream state.
#[derive(Debug, Default)]
pub struct OpenAiStream {
    finish_seen: bool,
}

stilts_plugin::export_plugin!(OpenAi);

impl Translator for OpenAi {
    type Stream = OpenAiStream;

    fn name(&self) -> &str {
        "openai"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn capabilities(&self) -> Capabilities {
        let context_windows = [
            ("gpt-4o", 128_000),
            ("gpt-4o-mini", 128_000),
            ("gpt-4.1", 1_047_576),
            ("gpt-4.1-mini", 1_047_576),
            ("gpt-4.1-nano", 1_047_576),
            ("o3", 200_000),
            ("o4-mini", 200_000),
        ]
        .into_iter()
        .map(|(m, n)| (m.to_owned(), n))
        .collect();
        Capabilities {
            streaming: true,
            // Only where the deployment's server continues a final assistant message: the
            // deployment declares it, and names the form in `options.continuation`.
            prefill_continuation: true,
            context_windows,
            embeddings: true,
        }
    }

    /// `POST {base}/embeddings` with the deployment's model, asking for floats: the gateway
    /// encodes base64 itself when its client asks for it.
    fn build_embeddings_request(
        &self,
        req: &Value,
        cfg: &DeploymentConfig,
    ) -> Result<HttpRequest, PluginError> {
        let Some(obj) = req.as_object() else {
            return Err(PluginError::BadInput(
                "the embeddings request is not a JSON object".to_owned(),
            ));
        };
        let mut obj = obj.clone();
        if !cfg.model.is_empty() {
            obj.insert("model".to_owned(), Value::String(cfg.model.clone()));
        }
        if obj
            .get("model")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(PluginError::BadInput(
                "no model: set the deployment's model".to_owned(),
            ));
        }
        obj.insert(
            "encoding_format".to_owned(),
            Value::String("float".to_owned()),
        );
        let body = serde_json::to_vec(&obj).map_err(|e| PluginError::BadInput(e.to_string()))?;
        Ok(HttpRequest {
            method: "POST".to_owned(),
            url: format!("{}/embeddings", cfg.base_url_or(DEFAULT_BASE_URL)),
            headers: request_headers(cfg, false),
            body,
        })
    }

    fn parse_embeddings_response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ParsedResponse, PluginError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| PluginError::BadInput(format!("response is not JSON: {e}")))?;
        let Some(obj) = v.as_object() else {
            return Err(PluginError::BadInput(
                "response is not a JSON object".to_owned(),
            ));
        };
        if is_error_body(obj) {
            return Err(PluginError::Upstream(
                self.classify_error(status, headers, body),
            ));
        }
        let Some(data) = obj.get("data").and_then(Value::as_array) else {
            return Err(PluginError::BadInput(
                "embeddings response has no `data` array".to_owned(),
            ));
        };
        for (i, item) in data.iter().enumerate() {
            let vector = item.get("embedding").and_then(Value::as_array);
            if !vector.is_some_and(|v| v.iter().all(Value::is_number)) {
                return Err(PluginError::BadInput(format!(
                    "embeddings response data[{i}].embedding is not a list of numbers"
                )));
            }
        }
        let tokens = |name: &str| {
            obj.get("usage")
                .and_then(|u| u.get(name))
                .and_then(Value::as_u64)
        };
        let usage = tokens("prompt_tokens")
            .or_else(|| tokens("total_tokens"))
            .map(|input| Usage::new(input, 0));
        Ok(ParsedResponse {
            body: body.to_vec(),
            usage,
            model: obj.get("model").and_then(Value::as_str).map(str::to_owned),
            finish_reason: None,
        })
    }

    fn build_request(
        &self,
        req: &ChatRequest,
        cfg: &DeploymentConfig,
    ) -> Result<HttpRequest, PluginError> {
        let mut req = req.clone();
        if !cfg.model.is_empty() {
            req.model.clone_from(&cfg.model);
        }
        if req.model.is_empty() {
            return Err(PluginError::BadInput(
                "no model: set the deployment's model".to_owned(),
            ));
        }
        let include_usage = cfg
            .options
            .get("include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        if req.is_stream() && include_usage {
            let opts = req
                .stream_options
                .get_or_insert_with(StreamOptions::default);
            opts.include_usage = Some(true);
        }
        let form = continuation_form(cfg)?;
        let continues = req
            .messages
            .last()
            .is_some_and(|m| m.role == stilts_plugin::canonical::Role::Assistant);
        let body = match form {
            Some(form) if continues => {
                let mut value =
                    serde_json::to_value(&req).map_err(|e| PluginError::BadInput(e.to_string()))?;
                form.apply(&mut value);
                serde_json::to_vec(&value)
            }
            _ => serde_json::to_vec(&req),
        }
        .map_err(|e| PluginError::BadInput(e.to_string()))?;
        Ok(HttpRequest {
            method: "POST".to_owned(),
            url: format!("{}/chat/completions", cfg.base_url_or(DEFAULT_BASE_URL)),
            headers: request_headers(cfg, req.is_stream()),
            body,
        })
    }

    fn parse_response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ParsedResponse, PluginError> {
        // The body is forwarded byte for byte: read only the few fields needed, without building a
        // JSON tree of the whole answer (serde still validates all of it). Anything unusual (not an
        // object, an error body, no `choices`, a repeated key) takes the full path below, which gives
        // the same answers and the same error messages as before.
        if let Some(parsed) = peek_response(body) {
            return Ok(parsed);
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| PluginError::BadInput(format!("response is not JSON: {e}")))?;
        let Some(obj) = v.as_object() else {
            return Err(PluginError::BadInput(
                "response is not a JSON object".to_owned(),
            ));
        };
        if is_error_body(obj) {
            return Err(PluginError::Upstream(
                self.classify_error(status, headers, body),
            ));
        }
        let Some(choices) = obj.get("choices").and_then(Value::as_array) else {
            return Err(PluginError::BadInput(
                "response has no `choices` array".to_owned(),
            ));
        };
        let finish_reason = choices
            .first()
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .and_then(FinishReason::from_name);
        Ok(ParsedResponse {
            body: body.to_vec(),
            usage: usage_of(obj),
            model: obj.get("model").and_then(Value::as_str).map(str::to_owned),
            finish_reason,
        })
    }

    fn classify_error(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> ErrorInfo {
        classify(status, headers, body)
    }

    fn stream_open(&self) -> OpenAiStream {
        OpenAiStream::default()
    }

    fn stream_event(
        &self,
        state: &mut OpenAiStream,
        event: Option<&str>,
        data: &[u8],
    ) -> StreamStep {
        match event {
            None | Some("message") | Some("error") => {}
            // Not an event this dialect defines: ignored, as the SSE contract says.
            Some(_) => return StreamStep::default(),
        }
        if data.trim_ascii() == b"[DONE]" {
            return StreamStep::end(if state.finish_seen {
                StreamEnd::Clean
            } else {
                StreamEnd::Cut {
                    reason: "[DONE] arrived before any finish_reason".to_owned(),
                }
            });
        }
        // Peek at the few fields that matter without building a full JSON tree (the chunk itself is
        // forwarded byte for byte); serde still validates the whole event, except the UTF-8 of the
        // strings it skips, checked first.
        if !starts_an_object(data) {
            return StreamStep::cut("stream event is not valid JSON: not an object");
        }
        let Ok(data_str) = std::str::from_utf8(data) else {
            return StreamStep::cut("stream event is not valid JSON: not UTF-8");
        };
        let peek: Peek = match serde_json::from_str(data_str) {
            Ok(p) => p,
            Err(e) => return StreamStep::cut(format!("stream event is not valid JSON: {e}")),
        };
        if peek.error.is_some() || peek.object.as_deref() == Some("error") || event == Some("error")
        {
            let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
            return StreamStep::end(StreamEnd::Error {
                error: classify_value(0, &[], &v),
            });
        }
        let Some(choices) = peek.choices else {
            return StreamStep::cut("stream event has no `choices`");
        };
        state.finish_seen |= choices.iter().any(|c| c.0.finish_reason.is_some());
        let usage = peek.usage.and_then(|u| serde_json::from_value(u).ok());
        StreamStep {
            chunks: vec![data.to_vec()],
            usage,
            done: None,
        }
    }

    fn stream_close(&self, state: &mut OpenAiStream) -> StreamEnd {
        if state.finish_seen {
            StreamEnd::Clean
        } else {
            StreamEnd::Cut {
                reason: "the stream closed before a finish_reason".to_owned(),
            }
        }
    }
}

/// The fields of a stream chunk the plugin reads. Unknown fields are skipped (but still validated).
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Object<PeekChoice>>>,
    #[serde(default)]
    usage: Option<Value>,
}

/// Whether `json` starts (after blanks) with `{`: derived structs would also accept an array.
fn starts_an_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// `T` read from a JSON object only (a derived struct also accepts an array of its fields).
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Object<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// The fields of a whole answer the plugin reads (see `parse_response`), typed as an ordinary
/// answer has them, strings borrowed from the body. Anything else (a number where a string
/// belongs, a string with escapes, a malformed `usage`, an array where an object belongs) fails
/// the peek and takes the full path, which decides the same way the peek would have.
#[derive(serde::Deserialize)]
struct ResponsePeek<'a> {
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    object: Option<&'a str>,
    #[serde(default, borrow)]
    choices: Option<Vec<Object<ResponsePeekChoice<'a>>>>,
    #[serde(default, borrow)]
    model: Option<&'a str>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// One choice of a whole answer: only its finish reason is read.
#[derive(serde::Deserialize)]
struct ResponsePeekChoice<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct PeekChoice {
    #[serde(default)]
    finish_reason: Option<serde::de::IgnoredAny>,
}

/// The answer to an ordinary successful body, read with [`ResponsePeek`]; `None` when the full path
/// must decide (not JSON, not an object, an error body, no `choices` array, a repeated key).
fn peek_response(body: &[u8]) -> Option<ParsedResponse> {
    if !starts_an_object(body) {
        return None;
    }
    // serde_json does not check the UTF-8 of the strings it skips (`IgnoredAny`, unknown fields):
    // a body that is not UTF-8 is left to the full path, which refuses it.
    let body_str = std::str::from_utf8(body).ok()?;
    let peek: ResponsePeek<'_> = serde_json::from_str(body_str).ok()?;
    if peek.error.is_some() || peek.object == Some("error") {
        return None;
    }
    let choices = peek.choices?;
    let finish_reason = choices
        .first()
        .and_then(|c| c.0.finish_reason)
        .and_then(FinishReason::from_name);
    Some(ParsedResponse {
        body: body.to_vec(),
        usage: peek.usage,
        model: peek.model.map(str::to_owned),
        finish_reason,
    })
}

/// The headers of a request to deployment `cfg`: JSON, the key as a bearer token, the
/// How a server continues a final assistant message (`options.continuation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContinuationForm {
    /// The trailing assistant message is continued as it is.
    Partial,
    /// vLLM's `continue_final_message: true` with `add_generation_prompt: false`.
    ContinueFinalMessage,
    /// DeepSeek's and Mistral's `prefix: true` on the final assistant message.
    Prefix,
}

impl ContinuationForm {
    /// Writes the form into a request body whose last message is the assistant's.
    fn apply(self, body: &mut Value) {
        let Some(obj) = body.as_object_mut() else {
            return;
        };
        match self {
            ContinuationForm::Partial => {}
            ContinuationForm::ContinueFinalMessage => {
                obj.insert("continue_final_message".to_owned(), Value::Bool(true));
                obj.insert("add_generation_prompt".to_owned(), Value::Bool(false));
            }
            ContinuationForm::Prefix => {
                if let Some(last) = obj
                    .get_mut("messages")
                    .and_then(Value::as_array_mut)
                    .and_then(|m| m.last_mut())
                    .and_then(Value::as_object_mut)
                {
                    last.insert("prefix".to_owned(), Value::Bool(true));
                }
            }
        }
    }
}

/// The deployment's `options.continuation`, if set; a value that names no form is refused.
fn continuation_form(cfg: &DeploymentConfig) -> Result<Option<ContinuationForm>, PluginError> {
    let Some(value) = cfg.options.get("continuation") else {
        return Ok(None);
    };
    match value.as_str() {
        Some("partial") => Ok(Some(ContinuationForm::Partial)),
        Some("continue_final_message") => Ok(Some(ContinuationForm::ContinueFinalMessage)),
        Some("prefix") => Ok(Some(ContinuationForm::Prefix)),
        _ => Err(PluginError::BadInput(format!(
            "options.continuation is {value}; use \"partial\" (llama.cpp, Ollama), \"continue_final_message\" (vLLM) or \"prefix\" (DeepSeek, Mistral)"
        ))),
    }
}

/// organization and project options, then the deployment's extra headers.
fn request_headers(cfg: &DeploymentConfig, stream: bool) -> Vec<(String, String)> {
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if stream {
        headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
    }
    if let Some(key) = &cfg.api_key {
        headers.push((
            "authorization".to_owned(),
            format!("Bearer {}", key.expose()),
        ));
    }
    for (opt, header) in [
        ("organization", "openai-organization"),
        ("project", "openai-project"),
    ] {
        if let Some(v) = cfg.options.get(opt).and_then(Value::as_str) {
            headers.push((header.to_owned(), v.to_owned()));
        }
    }
    headers.extend(cfg.extra_headers.iter().cloned());
    headers
}

fn is_error_body(obj: &Map<String, Value>) -> bool {
    obj.get("error").is_some_and(|e| !e.is_null())
        || obj.get("object").and_then(Value::as_str) == Some("error")
}

fn usage_of(obj: &Map<String, Value>) -> Option<Usage> {
    obj.get("usage")
        .filter(|u| !u.is_null())
        .and_then(|u| serde_json::from_value(u.clone()).ok())
}

/// Classifies an OpenAI-style error answer. Public for the other plugins' tests and for reuse.
pub fn classify(status: u16, headers: &[(String, String)], body: &[u8]) -> ErrorInfo {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => classify_value(status, headers, &v),
        Err(_) => {
            let mut info =
                ErrorInfo::new(ErrorClass::from_status(status), text_message(status, body));
            info.retry_after_ms = http::retry_after_ms(headers);
            info
        }
    }
}

fn text_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        text.chars().take(300).collect()
    }
}

fn classify_value(status: u16, headers: &[(String, String)], v: &Value) -> ErrorInfo {
    // Shapes: {"error":{message,type,param,code}} (OpenAI, Ollama, new vLLM, llama.cpp with int code),
    // {"error":"text"} (Ollama native), {"object":"error",message,type,code:int} (old vLLM).
    let err = match v.get("error") {
        Some(e @ Value::Object(_)) => e,
        _ => v,
    };
    let field = |k: &str| match err.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = match v.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => field("message"),
    };
    // A blank message says nothing: the status stands in for it.
    let message = message
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let code = field("code").filter(|c| c.parse::<u16>().is_err());
    let kind = field("type");
    let has = |s: &str| code.as_deref() == Some(s) || kind.as_deref() == Some(s);
    let lower = message.to_ascii_lowercase();
    let class = if has("context_length_exceeded")
        || has("exceed_context_size_error")
        || lower.contains("maximum context length")
        || lower.contains("context length")
        || lower.contains("context window")
        || lower.contains("exceeds the available context size")
    {
        ErrorClass::ContextLength
    } else if has("content_policy_violation") || has("content_filter") {
        ErrorClass::ContentFilter
    } else if has("insufficient_quota") || has("billing_hard_limit_reached") {
        ErrorClass::Quota
    } else if status == 0 || (200..300).contains(&status) {
        // A mid-stream error payload (or an error inside a 200) has no status of its own.
        if has("rate_limit_exceeded") || has("rate_limit_error") {
            ErrorClass::RateLimited
        } else if has("invalid_request_error") {
            ErrorClass::BadRequest
        } else {
            ErrorClass::Server
        }
    } else {
        let by_status = ErrorClass::from_status(status);
        let should_retry = http::header(headers, "x-should-retry") == Some("true");
        if by_status == ErrorClass::BadRequest && should_retry {
            ErrorClass::Server
        } else {
            by_status
        }
    };
    ErrorInfo {
        class,
        retry_after_ms: http::retry_after_ms(headers),
        provider_code: code.or(kind),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full path alone (what `parse_response` did before the peek).
    fn full(body: &[u8]) -> Result<ParsedResponse, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let obj = v.as_object().ok_or("not an object")?;
        if is_error_body(obj) {
            return Err("error body".to_owned());
        }
        let choices = obj
            .get("choices")
            .and_then(Value::as_array)
            .ok_or("no choices")?;
        Ok(ParsedResponse {
            body: body.to_vec(),
            usage: usage_of(obj),
            model: obj.get("model").and_then(Value::as_str).map(str::to_owned),
            finish_reason: choices
                .first()
                .and_then(|c| c.get("finish_reason"))
                .and_then(Value::as_str)
                .and_then(FinishReason::from_name),
        })
    }

    #[test]
    fn a_stream_event_that_is_not_an_object_is_a_cut() {
        for data in [
            &br#"[null,null,[{"finish_reason":"stop"}]]"#[..],
            br#"{"choices":[["stop"]]}"#,
        ] {
            let mut state = OpenAi.stream_open();
            let step = OpenAi.stream_event(&mut state, None, data);
            assert!(step.chunks.is_empty(), "{}", String::from_utf8_lossy(data));
            assert!(
                matches!(step.done, Some(StreamEnd::Cut { .. })),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    /// Found by fuzzing (plugins/openai/tests/fuzz.rs): serde_json skips the strings of unknown
    /// fields without checking their UTF-8, so a body or an event with a byte like 0x80 inside
    /// such a string passed the peeks and was forwarded to the client as if it were JSON.
    #[test]
    fn regression_invalid_utf8_in_a_skipped_string_is_not_json() {
        let body = b"{\"id\":\"\x80x\",\"model\":\"m\",\"choices\":[{\"finish_reason\":\"stop\"}]}";
        assert!(serde_json::from_slice::<Value>(body).is_err());
        assert!(peek_response(body).is_none());
        assert!(matches!(
            OpenAi.parse_response(200, &[], body),
            Err(PluginError::BadInput(_))
        ));
        let event = b"{\"model\":\"\x80m\",\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}";
        let mut state = OpenAi.stream_open();
        let step = OpenAi.stream_event(&mut state, None, event);
        assert!(step.chunks.is_empty());
        assert!(matches!(step.done, Some(StreamEnd::Cut { .. })), "{step:?}");
    }

    /// Found by fuzzing (plugins/openai/tests/fuzz.rs): an error body whose `message` was empty
    /// or blank gave an error without a message.
    #[test]
    fn regression_a_blank_error_message_is_replaced_by_the_status() {
        for body in [
            &br#"{"error":{"code":"rate_limit_exceeded","message":"","type":"tokens"}}"#[..],
            br#"{"error":" "}"#,
            br#"{"object":"error","message":"\n"}"#,
        ] {
            let info = classify(429, &[], body);
            assert_eq!(
                info.message,
                "HTTP 429",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_peek_agrees_with_the_full_parse_or_defers_to_it() {
        let bodies: &[&str] = &[
            r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            r#"{"choices":[],"usage":null,"model":null}"#,
            r#"{"choices":[{"finish_reason":null}],"usage":{"prompt_tokens":"x"}}"#,
            r#"{"choices":[{"finish_reason":"length"},{"finish_reason":"stop"}],"model":7}"#,
            r#"{"choices":[{"finish_reason":"weird"}],"object":"chat.completion"}"#,
            r#"{"choices":[{"finish_reason":5}],"object":5,"error":null}"#,
            r#"{"choices":[{"finish_reason":"stop","finish_reason":"length"}]}"#,
            r#"{"choices":[1,2]}"#,
            r#"{"choices":[{"finish_reason":"stop"}],"choices":[]}"#,
            r#"{"choices":null}"#,
            r#"{"choices":{}}"#,
            r#"{"error":{"message":"no"},"choices":[]}"#,
            r#"{"object":"error","message":"no","choices":[]}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            r#"[]"#,
            r#"nope"#,
            r#"{"choices":[]} trailing"#,
            r#"{"model":"caf\u00e9","object":"chat.compl\u0065tion","choices":[{"finish_reason":"st\u006fp"}]}"#,
            r#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":null}}"#,
            r#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"extra":1}}"#,
            r#"[null,null,[{"finish_reason":"stop"}],"m"]"#,
            r#"{"choices":[["stop"]]}"#,
            r#" {"choices":[{"finish_reason":"stop"}]}"#,
        ];
        for body in bodies {
            let body = body.as_bytes();
            // `None`: the full path decides, as before.
            if let Some(p) = peek_response(body) {
                assert_eq!(Ok(p), full(body), "{}", String::from_utf8_lossy(body));
            }
            assert_eq!(
                OpenAi.parse_response(200, &[], body).ok(),
                full(body).ok(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(peek_response(bodies[0].as_bytes()).is_some());
    }

    fn continuation_cfg(form: Option<&str>) -> DeploymentConfig {
        let mut options = Map::new();
        if let Some(f) = form {
            options.insert("continuation".to_owned(), Value::from(f));
        }
        DeploymentConfig {
            model: "m".to_owned(),
            options,
            ..DeploymentConfig::default()
        }
    }

    fn continuation_body(form: Option<&str>, last_role: &str) -> Value {
        let req = ChatRequest::from_json(
            format!(
                r#"{{"model":"x","stream":true,"messages":[{{"role":"user","content":"Say hello."}},{{"role":"{last_role}","content":"Hel"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let built = OpenAi.build_request(&req, &continuation_cfg(form)).unwrap();
        serde_json::from_slice(&built.body).unwrap()
    }

    #[test]
    fn each_continuation_form_is_written_only_after_a_final_assistant_message() {
        let vllm = continuation_body(Some("continue_final_message"), "assistant");
        assert_eq!(vllm["continue_final_message"], true);
        assert_eq!(vllm["add_generation_prompt"], false);
        let prefix = continuation_body(Some("prefix"), "assistant");
        assert_eq!(prefix["messages"][1]["prefix"], true);
        assert!(prefix.get("continue_final_message").is_none());
        let partial = continuation_body(Some("partial"), "assistant");
        assert_eq!(partial, continuation_body(None, "assistant"));
        assert!(partial["messages"][1].get("prefix").is_none());
        // A request that ends with the user's message is sent as it is.
        for form in ["continue_final_message", "prefix"] {
            let body = continuation_body(Some(form), "user");
            assert!(
                body.get("continue_final_message").is_none(),
                "{form}: {body}"
            );
            assert!(
                body["messages"][1].get("prefix").is_none(),
                "{form}: {body}"
            );
        }
        // The text is kept exactly.
        assert_eq!(vllm["messages"][1]["content"], "Hel");
    }

    #[test]
    fn an_unknown_continuation_form_is_refused_with_the_choices() {
        let req =
            ChatRequest::from_json(br#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        for bad in [Value::from("vllm"), Value::from(true)] {
            let mut cfg = continuation_cfg(None);
            cfg.options.insert("continuation".to_owned(), bad.clone());
            let Err(PluginError::BadInput(m)) = OpenAi.build_request(&req, &cfg) else {
                panic!("{bad} was accepted");
            };
            assert!(
                m.contains("continue_final_message") && m.contains("prefix"),
                "{m}"
            );
        }
    }
}
