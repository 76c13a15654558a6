//! A canonical answer as a Responses one: the whole `response` object, or the stream's typed
//! events.

use serde_json::{Map, Value, json};
use stilts_plugin::canonical::{ChatResponse, FinishReason, Usage};

use super::request::{ECHOED, Echo};
use crate::ingress::Untranslatable;
use crate::ingress::sse::{CanonicalEvent, Encoder, named_event};

/// `status` and `incomplete_details` of a finish reason.
fn status_of(finish: Option<FinishReason>) -> (&'static str, Value) {
    match finish {
        Some(FinishReason::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(FinishReason::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn usage_json(usage: Option<&Usage>) -> Value {
    let Some(u) = usage else {
        return Value::Null;
    };
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let reasoning = u
        .completion_tokens_details
        .as_ref()
        .and_then(|d| d.get("reasoning_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// The whole response object.
fn response_object(
    echo: &Echo,
    status: &str,
    incomplete: Value,
    error: Value,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), json!(echo.id));
    object.insert("object".into(), json!("response"));
    object.insert("created_at".into(), json!(echo.created_at));
    object.insert("status".into(), json!(status));
    object.insert("error".into(), error);
    object.insert("incomplete_details".into(), incomplete);
    object.insert("model".into(), json!(echo.model));
    for (name, default) in ECHOED {
        object.insert(
            name.into(),
            echo.fields.get(name).cloned().unwrap_or_else(default),
        );
    }
    object.insert("truncation".into(), json!("disabled"));
    object.insert("store".into(), json!(false));
    object.insert("previous_response_id".into(), Value::Null);
    object.insert("output".into(), Value::Array(output));
    object.insert("usage".into(), usage);
    Value::Object(object)
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status,
           "call_id": call_id, "name": name, "arguments": arguments})
}

/// The Responses object of a canonical completion.
pub(super) fn from_canonical(body: &[u8], echo: &Echo) -> Result<Value, Untranslatable> {
    let response: ChatResponse = serde_json::from_slice(body)
        .map_err(|e| Untranslatable::Answer(format!("the answer could not be read back: {e}")))?;
    let choice = response.choices.first();
    let finish = choice.and_then(|c| c.finish_reason);
    let (status, incomplete) = status_of(finish);
    let item_status = if status == "completed" {
        "completed"
    } else {
        "incomplete"
    };
    let mut output = Vec::new();
    if let Some(choice) = choice {
        let text = choice.message.text_content();
        if !text.is_empty() {
            output.push(message_item(
                &format!("msg_{}", &echo.id[5..]),
                item_status,
                &text,
            ));
        }
        for (n, call) in choice.message.tool_calls.iter().flatten().enumerate() {
            output.push(call_item(
                &format!("fc_{}_{n}", &echo.id[5..]),
                item_status,
                &call.id,
                &call.function.name,
                &call.function.arguments,
            ));
        }
    }
    Ok(response_object(
        echo,
        status,
        incomplete,
        Value::Null,
        output,
        usage_json(response.usage.as_ref()),
    ))
}

/// An output item being streamed.
enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        index: u32,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Re-encodes the canonical stream as Responses events.
pub(super) struct Translator {
    echo: Echo,
    sequence: u64,
    started: bool,
    /// Items done, in output order, as they are in `response.output`.
    done: Vec<Value>,
    open: Option<Item>,
    /// The canonical indexes of the function calls whose items are done.
    closed_calls: Vec<u32>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    ended: bool,
}

impl Translator {
    pub(super) fn new(echo: Echo) -> Self {
        Translator {
            echo,
            sequence: 0,
            started: false,
            done: Vec::new(),
            open: None,
            closed_calls: Vec::new(),
            finish: None,
            usage: None,
            ended: false,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.extend(named_event(kind, &data));
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        for kind in ["response.created", "response.in_progress"] {
            let response = response_object(
                &self.echo,
                "in_progress",
                Value::Null,
                Value::Null,
                Vec::new(),
                Value::Null,
            );
            self.emit(out, kind, json!({"response": response}));
        }
    }

    fn output_index(&self) -> usize {
        self.done.len()
    }

    fn close(&mut self, out: &mut Vec<u8>, status: &str) {
        let Some(item) = self.open.take() else {
            return;
        };
        let index = self.output_index();
        let done = match item {
            Item::Message { id, text } => {
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "part": part}),
                );
                message_item(&id, status, &text)
            }
            Item::Call {
                id,
                index: call,
                call_id,
                name,
                arguments,
            } => {
                self.closed_calls.push(call);
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id,
                    "output_index": index, "name": name, "arguments": arguments}),
                );
                call_item(&id, status, &call_id, &name, &arguments)
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done.clone()}),
        );
        self.done.push(done);
    }

    fn text(&mut self, out: &mut Vec<u8>, delta: &str) {
        if !matches!(self.open, Some(Item::Message { .. })) {
            self.close(out, "completed");
            let id = format!("msg_{}_{}", &self.echo.id[5..], self.output_index());
            let index = self.output_index();
            self.emit(out, "response.output_item.added", json!({"output_index": index, "item":
                {"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}));
            self.emit(out, "response.content_part.added", json!({"item_id": id, "output_index": index,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}));
            self.open = Some(Item::Message {
                id,
                text: String::new(),
            });
        }
        let index = self.output_index();
        let id = match &mut self.open {
            Some(Item::Message { id, text }) => {
                text.push_str(delta);
                id.clone()
            }
            _ => return,
        };
        self.emit(
            out,
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index,
            "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }

    fn call(
        &mut self,
        out: &mut Vec<u8>,
        index: u32,
        call_id: Option<String>,
        name: Option<String>,
        arguments: Option<String>,
    ) {
        let same = matches!(&self.open, Some(Item::Call { index: i, .. }) if *i == index);
        if !same && self.closed_calls.contains(&index) {
            // A done item takes no more arguments. No provider stilts ships sends this; say so
            // rather than answer a broken call.
            self.fail(
                out,
                &json!({"message": format!(
                    "the provider interleaved its function calls (call {index} went on after the next began); stilts cannot carry that"
                )}),
            );
            return;
        }
        if !same {
            self.close(out, "completed");
            let id = format!("fc_{}_{}", &self.echo.id[5..], self.output_index());
            let call_id = call_id.unwrap_or_else(|| format!("call_{}", self.output_index()));
            let name = name.clone().unwrap_or_default();
            let output_index = self.output_index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index,
                "item": call_item(&id, "in_progress", &call_id, &name, "")}),
            );
            self.open = Some(Item::Call {
                id,
                index,
                call_id,
                name,
                arguments: String::new(),
            });
        } else if let (Some(Item::Call { name: n, .. }), Some(name)) = (&mut self.open, name) {
            if n.is_empty() {
                *n = name;
            }
        }
        let Some(fragment) = arguments.filter(|a| !a.is_empty()) else {
            return;
        };
        let output_index = self.output_index();
        let id = match &mut self.open {
            Some(Item::Call { id, arguments, .. }) => {
                arguments.push_str(&fragment);
                id.clone()
            }
            _ => return,
        };
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": id,
            "output_index": output_index, "delta": fragment}),
        );
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: &Value) {
        self.start(out);
        self.close(out, "incomplete");
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the answer broke after it started")
            .to_owned();
        let response = response_object(
            &self.echo,
            "failed",
            Value::Null,
            json!({"code": "server_error", "message": message}),
            std::mem::take(&mut self.done),
            usage_json(self.usage.as_ref()),
        );
        self.emit(out, "response.failed", json!({"response": response}));
        // Flat fields as documented, and the nested error the SDKs raise on.
        self.emit(out, "error", json!({"code": "stream_interrupted", "message": message, "param": null,
            "error": {"type": "server_error", "code": "stream_interrupted", "message": message, "param": null}}));
        self.ended = true;
    }
}

impl Encoder for Translator {
    fn ended(&self) -> bool {
        self.ended
    }

    fn on_bare_end(&mut self, out: &mut Vec<u8>) {
        self.fail(
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
                self.start(out);
                if let Some(usage) = chunk.usage {
                    self.usage = Some(usage);
                }
                let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
                    return;
                };
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    self.text(out, &text);
                }
                for call in choice.delta.tool_calls.into_iter().flatten() {
                    let function = call.function.unwrap_or_default();
                    self.call(out, call.index, call.id, function.name, function.arguments);
                    if self.ended {
                        return;
                    }
                }
                if choice.finish_reason.is_some() {
                    self.finish = choice.finish_reason;
                }
            }
            CanonicalEvent::Done => {
                self.start(out);
                let (status, incomplete) = status_of(self.finish);
                let item_status = if status == "completed" {
                    "completed"
                } else {
                    "incomplete"
                };
                self.close(out, item_status);
                let response = response_object(
                    &self.echo,
                    status,
                    incomplete,
                    Value::Null,
                    std::mem::take(&mut self.done),
                    usage_json(self.usage.as_ref()),
                );
                let kind = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                self.emit(out, kind, json!({"response": response}));
                self.ended = true;
            }
            CanonicalEvent::Error(error) => self.fail(out, &error),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    use crate::ingress::sse::test_support::TEXT_THEN_TOOL;

    fn transcript(canonical: &str) -> Vec<(String, Value)> {
        let echo = Echo {
            id: "resp_1".into(),
            model: "chat".into(),
            ..Echo::default()
        };
        crate::ingress::sse::test_support::transcript(Translator::new(echo), canonical)
    }

    #[test]
    fn a_stream_becomes_the_responses_event_sequence() {
        let events = transcript(TEXT_THEN_TOOL);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (n, (name, data)) in events.iter().enumerate() {
            assert_eq!(&data["type"], name.as_str());
            assert_eq!(data["sequence_number"], n as u64, "dense sequence numbers");
        }
        assert_eq!(events[0].1["response"]["output"], json!([]));
        assert_eq!(events[2].1["item"]["content"], json!([]));
        assert_eq!(events[9].1["output_index"], 1);
        assert_eq!(events[9].1["item"]["arguments"], "");
        let done = &events[14].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Let me check.");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["output"][1]["call_id"], "call_9");
        assert_eq!(done["usage"]["input_tokens"], 9);
        assert_eq!(done["usage"]["total_tokens"], 13);
    }

    #[test]
    fn calls_in_turn_are_items_in_turn_and_interleaved_ones_fail() {
        use crate::ingress::sse::test_support::two_calls;
        let events = transcript(&two_calls(false));
        let (_, completed) = events.last().unwrap();
        assert_eq!(completed["type"], "response.completed");
        let output = completed["response"]["output"].as_array().unwrap();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["call_id"], "call_a");
        assert_eq!(output[0]["arguments"], "{\"x\":1}");
        assert_eq!(output[1]["call_id"], "call_b");
        assert_eq!(output[1]["arguments"], "{\"y\":2}");

        let events = transcript(&two_calls(true));
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[names.len() - 2..], ["response.failed", "error"]);
        assert!(
            events.last().unwrap().1["message"]
                .as_str()
                .unwrap()
                .contains("interleaved"),
            "{events:?}"
        );
        assert!(!names.contains(&"response.completed"));
    }

    #[test]
    fn a_break_ends_with_response_failed_and_an_error_the_sdks_raise_on() {
        let cut = concat!(
            "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hal\"},\"finish_reason\":null}]}\n\n",
            "data: {\"error\":{\"message\":\"cut\",\"type\":\"stream_interrupted\"}}\n\n",
        );
        let events = transcript(cut);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[names.len() - 2..], ["response.failed", "error"]);
        let failed = &events[events.len() - 2].1["response"];
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["output"][0]["status"], "incomplete");
        let error = &events[events.len() - 1].1;
        assert_eq!(error["error"]["code"], "stream_interrupted");
        assert_eq!(error["code"], "stream_interrupted");
    }

    #[test]
    fn a_length_stop_is_incomplete() {
        let body = json!({"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "Once upon"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        let echo = Echo {
            id: "resp_2".into(),
            model: "chat".into(),
            ..Echo::default()
        };
        let r = from_canonical(body.to_string().as_bytes(), &echo).unwrap();
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(r["output"][0]["content"][0]["text"], "Once upon");
        assert_eq!(r["object"], "response");
        assert_eq!(r["tools"], json!([]));
    }
}
