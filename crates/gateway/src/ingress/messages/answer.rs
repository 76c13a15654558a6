//! A canonical answer as a Messages one: the whole `message`, or the stream's events.

use serde_json::{Value, json};
use stilts_plugin::canonical::{ChatResponse, FinishReason, Usage};

use crate::ingress::Untranslatable;
use crate::ingress::sse::{CanonicalEvent, Encoder, named_event as event};
use crate::stream::ChunkStream;

fn stop_reason(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls | FinishReason::FunctionCall) => "tool_use",
        Some(FinishReason::ContentFilter) => "refusal",
        Some(FinishReason::Stop) | None => "end_turn",
    }
}

fn usage_json(usage: Option<&Usage>) -> Value {
    let (input, output) = usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

/// A tool call's arguments as the object Anthropic's `input` is.
fn tool_input(arguments: &str) -> Result<Value, Untranslatable> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(Untranslatable::Answer(
            "the provider's tool call arguments are not a JSON object".into(),
        )),
    }
}

/// The Messages answer of a canonical completion.
pub(super) fn from_canonical(body: &[u8]) -> Result<Value, Untranslatable> {
    let response: ChatResponse = serde_json::from_slice(body)
        .map_err(|e| Untranslatable::Answer(format!("the answer could not be read back: {e}")))?;
    let choice = response.choices.first();
    let mut content = Vec::new();
    if let Some(choice) = choice {
        let text = choice.message.text_content();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for call in choice.message.tool_calls.iter().flatten() {
            content.push(json!({
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": tool_input(&call.function.arguments)?,
            }));
        }
    }
    Ok(json!({
        "id": message_id(&response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason)),
        "stop_sequence": null,
        "usage": usage_json(response.usage.as_ref()),
    }))
}

fn message_id(canonical: &str) -> String {
    if canonical.starts_with("msg_") {
        canonical.to_owned()
    } else {
        format!(
            "msg_{}",
            canonical
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect::<String>()
        )
    }
}

/// The block being streamed.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    None,
    Text,
    /// A tool call: the canonical tool call index.
    Tool(u32),
}

/// Re-encodes the canonical stream as Messages events.
struct Translator {
    started: bool,
    open: Open,
    /// Blocks started so far (the next block's index).
    blocks: u32,
    /// The canonical indexes of the tool calls whose blocks are closed.
    closed_calls: Vec<u32>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    ended: bool,
}

impl Translator {
    fn new() -> Self {
        Translator {
            started: false,
            open: Open::None,
            blocks: 0,
            closed_calls: Vec::new(),
            finish: None,
            usage: None,
            ended: false,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>, id: &str, model: &str) {
        if self.started {
            return;
        }
        self.started = true;
        out.extend(event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": message_id(id), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage_json(None),
            }}),
        ));
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Open::Tool(index) = self.open {
            self.closed_calls.push(index);
        }
        if self.open != Open::None {
            out.extend(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.blocks - 1}),
            ));
            self.open = Open::None;
        }
    }

    fn open_block(&mut self, out: &mut Vec<u8>, open: Open, block: Value) {
        self.close_block(out);
        out.extend(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.blocks, "content_block": block}),
        ));
        self.blocks += 1;
        self.open = open;
    }
}

impl Encoder for Translator {
    fn ended(&self) -> bool {
        self.ended
    }

    fn on_bare_end(&mut self, out: &mut Vec<u8>) {
        self.error(
            out,
            &json!({"message": "the answer ended before it was complete"}),
        );
    }

    fn on_event(&mut self, e: CanonicalEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match e {
            CanonicalEvent::Chunk(chunk) => {
                self.start(out, &chunk.id, &chunk.model);
                if let Some(usage) = chunk.usage {
                    self.usage = Some(usage);
                }
                let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
                    return;
                };
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    if self.open != Open::Text {
                        self.open_block(out, Open::Text, json!({"type": "text", "text": ""}));
                    }
                    out.extend(event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": self.blocks - 1,
                                "delta": {"type": "text_delta", "text": text}}),
                    ));
                }
                for call in choice.delta.tool_calls.into_iter().flatten() {
                    let function = call.function.unwrap_or_default();
                    if self.open != Open::Tool(call.index)
                        && self.closed_calls.contains(&call.index)
                    {
                        // A Messages stream carries one block at a time: a closed block cannot
                        // take more arguments. No provider stilts ships sends this; say so
                        // rather than answer a broken call.
                        self.error(
                            out,
                            &json!({"message": format!(
                                "the provider interleaved its tool calls (call {} went on after the next began); a Messages stream cannot carry that",
                                call.index
                            )}),
                        );
                        return;
                    }
                    if self.open != Open::Tool(call.index) {
                        let id = call.id.unwrap_or_else(|| format!("toolu_{}", self.blocks));
                        let name = function.name.clone().unwrap_or_default();
                        self.open_block(
                            out,
                            Open::Tool(call.index),
                            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                        );
                    }
                    if let Some(args) = function.arguments.filter(|a| !a.is_empty()) {
                        out.extend(event(
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": self.blocks - 1,
                                    "delta": {"type": "input_json_delta", "partial_json": args}}),
                        ));
                    }
                }
                if choice.finish_reason.is_some() {
                    self.finish = choice.finish_reason;
                }
            }
            CanonicalEvent::Done => {
                self.start(out, "stilts", "");
                self.close_block(out);
                let usage = self.usage.as_ref();
                out.extend(event(
                    "message_delta",
                    &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(self.finish), "stop_sequence": null},
                    "usage": {
                        "output_tokens": usage.map_or(0, |u| u.completion_tokens),
                        "input_tokens": usage.map_or(0, |u| u.prompt_tokens),
                    }}),
                ));
                out.extend(event("message_stop", &json!({"type": "message_stop"})));
                self.ended = true;
            }
            CanonicalEvent::Error(error) => {
                self.error(out, &error);
            }
        }
    }
}

impl Translator {
    /// The terminal error event: the SDK raises on it.
    fn error(&mut self, out: &mut Vec<u8>, error: &Value) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the answer broke after it started");
        let kind = match error.pointer("/stilts/class").and_then(Value::as_str) {
            Some("rate_limited") => "overloaded_error",
            _ => "api_error",
        };
        out.extend(event(
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": message,
                    "stilts": error.get("stilts")}}),
        ));
        self.ended = true;
    }
}

/// The Messages events of a canonical stream.
pub(super) fn translate_stream(chunks: ChunkStream) -> ChunkStream {
    crate::ingress::sse::encode(chunks, Translator::new())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    #[test]
    fn a_completion_becomes_a_message() {
        let body = json!({
            "id": "chatcmpl-7", "object": "chat.completion", "created": 1, "model": "gpt",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Sure.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        });
        let m = from_canonical(body.to_string().as_bytes()).unwrap();
        assert_eq!(m["id"], "msg_chatcmpl-7");
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["content"][0], json!({"type": "text", "text": "Sure."}));
        assert_eq!(
            m["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}})
        );
        assert_eq!(m["usage"]["input_tokens"], 12);
        assert_eq!(m["usage"]["output_tokens"], 3);
    }

    use crate::ingress::sse::test_support::TEXT_THEN_TOOL;

    fn transcript(canonical: &str) -> Vec<(String, Value)> {
        crate::ingress::sse::test_support::transcript(Translator::new(), canonical)
    }

    #[test]
    fn a_stream_becomes_the_messages_event_sequence() {
        let events = transcript(TEXT_THEN_TOOL);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for (name, data) in &events {
            assert_eq!(
                &data["type"],
                name.as_str(),
                "the data's type names its event"
            );
        }
        assert_eq!(events[0].1["message"]["content"], json!([]));
        assert_eq!(
            events[1].1["content_block"],
            json!({"type": "text", "text": ""})
        );
        assert_eq!(events[5].1["index"], 1);
        assert_eq!(
            events[5].1["content_block"],
            json!({"type": "tool_use", "id": "call_9", "name": "f", "input": {}})
        );
        assert_eq!(events[7].1["delta"]["partial_json"], "1}");
        assert_eq!(events[9].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            events[9].1["usage"],
            json!({"output_tokens": 4, "input_tokens": 9})
        );
    }

    #[test]
    fn calls_in_turn_are_blocks_in_turn_and_interleaved_ones_end_with_an_error() {
        use crate::ingress::sse::test_support::two_calls;
        let events = transcript(&two_calls(false));
        let starts: Vec<&Value> = events
            .iter()
            .filter(|(n, _)| n == "content_block_start")
            .map(|(_, d)| &d["content_block"])
            .collect();
        assert_eq!(starts.len(), 2);
        assert_eq!(
            (&starts[0]["id"], &starts[0]["name"]),
            (&json!("call_a"), &json!("f"))
        );
        assert_eq!(
            (&starts[1]["id"], &starts[1]["name"]),
            (&json!("call_b"), &json!("g"))
        );
        assert_eq!(events.last().unwrap().0, "message_stop");

        let events = transcript(&two_calls(true));
        let last = events.last().unwrap();
        assert_eq!(last.0, "error");
        assert!(
            last.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("interleaved"),
            "{last:?}"
        );
        assert!(!events.iter().any(|(n, _)| n == "message_stop"));
        assert_eq!(
            events
                .iter()
                .filter(|(n, _)| n == "content_block_start")
                .count(),
            2
        );
    }

    #[test]
    fn a_break_after_the_first_byte_ends_with_an_error_event() {
        let cut = concat!(
            "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hal\"},\"finish_reason\":null}]}\n\n",
            "data: {\"error\":{\"message\":\"cut\",\"type\":\"stream_interrupted\",\"code\":\"stream_interrupted\"}}\n\n",
        );
        let events = transcript(cut);
        let last = events.last().unwrap();
        assert_eq!(last.0, "error");
        assert_eq!(last.1["error"]["type"], "api_error");
        assert!(!events.iter().any(|(n, _)| n == "message_stop"));
    }
}
