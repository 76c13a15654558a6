//! What a fake upstream writes, per dialect: error bodies, plain answers and stream events of the
//! OpenAI Chat Completions and the Anthropic Messages APIs, as those APIs send them.

use bytes::Bytes;
use serde_json::json;

use super::Faults;

/// The API a fake upstream speaks on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages` (the `anthropic` plugin's upstream).
    Anthropic,
}

impl Dialect {
    /// The request path of the dialect.
    pub const fn path(self) -> &'static str {
        match self {
            Dialect::OpenAi => "/v1/chat/completions",
            Dialect::Anthropic => "/v1/messages",
        }
    }
}

/// The error a fake upstream sends for `status` with `faults`' error code (OpenAI's `error.code`,
/// or Anthropic's `error.type`) and Retry-After: its headers and its JSON body. `Retry-After` is
/// sent in seconds and `retry-after-ms` in milliseconds, as OpenAI does.
pub fn error_parts(
    dialect: Dialect,
    status: u16,
    faults: &Faults,
    message: &str,
) -> (Vec<(String, String)>, Vec<u8>) {
    let body = match dialect {
        Dialect::OpenAi => {
            let kind = match status {
                429 => "rate_limit_error",
                400..=499 => "invalid_request_error",
                _ => "server_error",
            };
            json!({"error": {
                "message": message,
                "type": kind,
                "param": null,
                "code": faults.error_code,
            }})
        }
        Dialect::Anthropic => {
            let kind = faults.error_code.clone().unwrap_or_else(|| {
                match status {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    _ => "api_error",
                }
                .to_owned()
            });
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let Some(after) = faults.retry_after_s.filter(|s| s.is_finite() && *s >= 0.0) {
        headers.push(("retry-after".to_owned(), after.to_string()));
        headers.push((
            "retry-after-ms".to_owned(),
            ((after * 1000.0).round() as u64).to_string(),
        ));
    }
    (headers, body.to_string().into_bytes())
}

/// The identity of one answer.
pub(super) struct Answer {
    pub dialect: Dialect,
    pub id: String,
    pub model: String,
    pub created: u64,
    /// (input, output) tokens.
    pub usage: (u64, u64),
    /// When the answer is a tool call: its id and the tool's name (the text is then the
    /// arguments' JSON).
    pub tool: Option<(String, String)>,
    /// How many choices the answer has (OpenAI's `n`; always 1 in the Anthropic dialect). Every
    /// choice carries the same content; a stream sends each piece once per choice, one choice a
    /// chunk, as OpenAI does.
    pub choices: u32,
}

impl Answer {
    /// A whole plain answer.
    pub fn plain(&self, text: &str) -> serde_json::Value {
        let (input, output) = self.usage;
        if let Some((id, name)) = &self.tool {
            return match self.dialect {
                Dialect::OpenAi => json!({
                    "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                    "choices": self.each_choice(|index| json!({"index": index, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                        "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": text}}]}})),
                    "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
                }),
                Dialect::Anthropic => json!({
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [{"type": "tool_use", "id": id, "name": name,
                        "input": serde_json::from_str::<serde_json::Value>(text).unwrap_or_else(|_| json!({}))}],
                    "stop_reason": "tool_use", "stop_sequence": null,
                    "usage": {"input_tokens": input, "output_tokens": output},
                }),
            };
        }
        match self.dialect {
            Dialect::OpenAi => json!({
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": self.each_choice(|index| json!({"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})),
                "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
            }),
            Dialect::Anthropic => json!({
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output},
            }),
        }
    }

    /// A body that is not JSON (a malformed plain answer).
    pub fn malformed_plain(&self) -> &'static str {
        match self.dialect {
            Dialect::OpenAi => "{\"choices\": [{\"message\": {\"content\": \"brok",
            Dialect::Anthropic => {
                "{\"type\": \"message\", \"content\": [{\"type\": \"text\", \"text\": \"brok"
            }
        }
    }

    fn event(&self, name: &str, data: &serde_json::Value) -> String {
        match self.dialect {
            Dialect::OpenAi => format!("data: {data}\n\n"),
            Dialect::Anthropic => format!("event: {name}\ndata: {data}\n\n"),
        }
    }

    /// One value per choice, made from its index.
    fn each_choice(&self, choice: impl Fn(u32) -> serde_json::Value) -> serde_json::Value {
        serde_json::Value::Array((0..self.choices.max(1)).map(choice).collect())
    }

    /// One chunk per choice, each carrying `delta` for its choice.
    fn openai_chunks(&self, delta: &serde_json::Value, finish: Option<&str>) -> String {
        (0..self.choices.max(1))
            .map(|index| {
                let chunk = json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
                });
                self.event("", &chunk)
            })
            .collect()
    }

    /// The events before the first content: OpenAI's role chunk; Anthropic's `message_start` and
    /// `content_block_start`.
    pub fn stream_start(&self) -> Bytes {
        match self.dialect {
            Dialect::OpenAi => {
                let delta = match &self.tool {
                    Some((id, name)) => {
                        json!({"role": "assistant", "content": null, "tool_calls": [
                        {"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]})
                    }
                    None => json!({"role": "assistant", "content": ""}),
                };
                Bytes::from(self.openai_chunks(&delta, None))
            }
            Dialect::Anthropic => {
                let start = json!({"type": "message_start", "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": self.usage.0, "output_tokens": 1},
                }});
                let block = match &self.tool {
                    Some((id, name)) => json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                    None => json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
                };
                Bytes::from(
                    self.event("message_start", &start)
                        + &self.event("content_block_start", &block),
                )
            }
        }
    }

    /// One piece of content.
    pub fn stream_text(&self, text: &str) -> Bytes {
        let tool = self.tool.is_some();
        match self.dialect {
            Dialect::OpenAi => {
                let delta = if tool {
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})
                } else {
                    json!({"content": text})
                };
                Bytes::from(self.openai_chunks(&delta, None))
            }
            Dialect::Anthropic => {
                let delta = if tool {
                    json!({"type": "input_json_delta", "partial_json": text})
                } else {
                    json!({"type": "text_delta", "text": text})
                };
                Bytes::from(self.event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
                ))
            }
        }
    }

    /// The provider's in-band overload error, sent after a 200 (the stream ends after it).
    pub fn stream_overloaded(&self) -> Bytes {
        Bytes::from(match self.dialect {
            Dialect::OpenAi => self.event(
                "",
                &json!({"error": {"message": "The server is overloaded", "type": "server_error",
                    "code": "server_overloaded"}}),
            ),
            Dialect::Anthropic => self.event(
                "error",
                &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
        })
    }

    /// An event whose data is not JSON.
    pub fn stream_malformed(&self) -> &'static [u8] {
        match self.dialect {
            Dialect::OpenAi => b"data: {\"choices\": [{\"delta\": {\"content\": \"brok\n\n",
            Dialect::Anthropic => {
                b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"delta\": {\"te\n\n"
            }
        }
    }

    /// The events after the content: the finish, the usage (OpenAI only when the request asked
    /// for it), and the end marker (`[DONE]` or `message_stop`) unless `no_done`.
    pub fn stream_end(&self, include_usage: bool, no_done: bool) -> Bytes {
        let (input, output) = self.usage;
        let mut out = String::new();
        match self.dialect {
            Dialect::OpenAi => {
                let finish = if self.tool.is_some() {
                    "tool_calls"
                } else {
                    "stop"
                };
                out += &self.openai_chunks(&json!({}), Some(finish));
                if include_usage {
                    let usage = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [],
                        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
                    });
                    out += &self.event("", &usage);
                }
                if !no_done {
                    out += "data: [DONE]\n\n";
                }
            }
            Dialect::Anthropic => {
                out += &self.event(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": 0}),
                );
                out += &self.event(
                    "message_delta",
                    &json!({"type": "message_delta",
                        "delta": {"stop_reason": if self.tool.is_some() { "tool_use" } else { "end_turn" },
                                  "stop_sequence": null},
                        "usage": {"output_tokens": output}}),
                );
                if !no_done {
                    out += &self.event("message_stop", &json!({"type": "message_stop"}));
                }
            }
        }
        Bytes::from(out)
    }
}
