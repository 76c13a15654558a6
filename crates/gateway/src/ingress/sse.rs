//! Reading the gateway's own canonical stream back into events, for the dialects that re-encode it.
//!
//! The engine's [`crate::stream::ChunkStream`] carries `data: {chat.completion.chunk}\n\n` events,
//! then `data: [DONE]\n\n` after a whole answer, or `data: {"error":…}\n\n` when the answer broke
//! after it started and could not be continued. Byte boundaries need not follow event boundaries.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use stilts_plugin::canonical::ChatChunk;

use crate::stream::ChunkStream;

/// `event: NAME` and `data: JSON`: one event of the dialects that name their events.
pub(crate) fn named_event(name: &str, data: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// A dialect's stream encoder: canonical events in, the dialect's bytes out.
pub(crate) trait Encoder: Send + 'static {
    /// Encodes one canonical event into `out`.
    fn on_event(&mut self, event: CanonicalEvent, out: &mut Vec<u8>);
    /// The canonical stream ended without `[DONE]` or an error event: a break all the same, and
    /// it must not look like a whole answer.
    fn on_bare_end(&mut self, out: &mut Vec<u8>);
    /// Whether the dialect's stream is over (its terminal event was written).
    fn ended(&self) -> bool;
}

/// The dialect's stream of a canonical one.
pub(crate) fn encode<E: Encoder>(chunks: ChunkStream, encoder: E) -> ChunkStream {
    let state = (chunks, CanonicalReader::default(), encoder);
    Box::pin(futures_util::stream::unfold(
        Some(state),
        |state| async move {
            let (mut chunks, mut reader, mut encoder) = state?;
            loop {
                let mut out = Vec::new();
                match chunks.next().await {
                    Some(bytes) => {
                        for e in reader.push(&bytes) {
                            if !encoder.ended() {
                                encoder.on_event(e, &mut out);
                            }
                        }
                        if encoder.ended() {
                            return (!out.is_empty()).then(|| (Bytes::from(out), None));
                        }
                    }
                    None => {
                        encoder.on_bare_end(&mut out);
                        return Some((Bytes::from(out), None));
                    }
                }
                if !out.is_empty() {
                    return Some((Bytes::from(out), Some((chunks, reader, encoder))));
                }
            }
        },
    ))
}

/// One event of the canonical stream.
#[derive(Debug)]
pub(crate) enum CanonicalEvent {
    /// A chunk of the answer.
    Chunk(Box<ChatChunk>),
    /// The answer is whole.
    Done,
    /// The answer broke: the `error` object of the event.
    Error(Value),
}

/// Splits the canonical stream into events.
#[derive(Default)]
pub(crate) struct CanonicalReader {
    buffer: Vec<u8>,
}

impl CanonicalReader {
    /// Takes `bytes` in and returns the events they complete. An event that is not one of the
    /// three kinds is reported as an error event (the engine never writes one).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<CanonicalEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = find(&self.buffer, b"\n\n") {
            let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let Some(event) = parse(&raw[..end]) else {
                continue;
            };
            events.push(event);
        }
        events
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One event's lines; `None` for an event without data (a comment).
fn parse(event: &[u8]) -> Option<CanonicalEvent> {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    let data = data.join("\n");
    if data.trim() == "[DONE]" {
        return Some(CanonicalEvent::Done);
    }
    let value: Value = match serde_json::from_str(&data) {
        Ok(v) => v,
        Err(e) => return Some(broken(format!("an event that is not JSON ({e})"))),
    };
    if let Some(error) = value.get("error") {
        return Some(CanonicalEvent::Error(error.clone()));
    }
    match serde_json::from_value::<ChatChunk>(value) {
        Ok(chunk) => Some(CanonicalEvent::Chunk(Box::new(chunk))),
        Err(e) => Some(broken(format!("an event that is not a chunk ({e})"))),
    }
}

fn broken(what: String) -> CanonicalEvent {
    CanonicalEvent::Error(serde_json::json!({
        "message": format!("the gateway's stream carried {what}"),
        "type": "server_error",
        "code": "stream_interrupted",
    }))
}

/// What the dialects' stream tests share: a canonical stream with text then a tool call, and the
/// `(event name, data)` list an encoder makes of a canonical stream.
#[cfg(test)]
pub(crate) mod test_support {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::{CanonicalReader, Encoder};
    use serde_json::Value;

    /// Two text chunks, a tool call in two fragments (finish `tool_calls`), the usage, `[DONE]`.
    pub(crate) const TEXT_THEN_TOOL: &str = concat!(
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Let me\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" check.\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_9\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n",
    );

    /// Two tool calls, 0 then 1, each in two fragments; then, when `interleaved`, more of call
    /// 0's arguments after call 1 began. Ends with finish `tool_calls` and `[DONE]`.
    pub(crate) fn two_calls(interleaved: bool) -> String {
        let chunk = |call: Value, finish: Value| {
            let data = serde_json::json!({"id": "c1", "model": "m", "choices": [
                {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": finish}]});
            format!("data: {data}\n\n")
        };
        let start = |index: u32, id: &str, name: &str, args: &str| {
            serde_json::json!({"index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": args}})
        };
        let more = |index: u32, args: &str| serde_json::json!({"index": index, "function": {"arguments": args}});
        let mut stream = chunk(start(0, "call_a", "f", "{\"x\":"), Value::Null);
        stream += &chunk(more(0, "1}"), Value::Null);
        stream += &chunk(start(1, "call_b", "g", "{\"y\":"), Value::Null);
        if interleaved {
            stream += &chunk(more(0, " "), Value::Null);
        }
        stream += &chunk(more(1, "2}"), Value::from("tool_calls"));
        stream + "data: [DONE]\n\n"
    }

    /// The events `encoder` makes of `canonical`.
    pub(crate) fn transcript(mut encoder: impl Encoder, canonical: &str) -> Vec<(String, Value)> {
        let mut reader = CanonicalReader::default();
        let mut out = Vec::new();
        for e in reader.push(canonical.as_bytes()) {
            encoder.on_event(e, &mut out);
        }
        String::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                (
                    name.strip_prefix("event: ").unwrap().to_owned(),
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    #[test]
    fn events_are_read_across_any_byte_boundary() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
            ": a comment\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for split in 0..stream.len() {
            let mut r = CanonicalReader::default();
            let mut events = r.push(&stream[..split]);
            events.extend(r.push(&stream[split..]));
            assert_eq!(events.len(), 2, "split at {split}");
            assert!(
                matches!(&events[0], CanonicalEvent::Chunk(c) if c.choices[0].delta.content.as_deref() == Some("Hi"))
            );
            assert!(matches!(events[1], CanonicalEvent::Done));
        }
    }

    #[test]
    fn an_error_event_and_garbage_are_errors() {
        let mut r = CanonicalReader::default();
        let events = r.push(b"data: {\"error\":{\"message\":\"cut\"}}\n\ndata: {oops\n\n");
        assert!(matches!(&events[0], CanonicalEvent::Error(e) if e["message"] == "cut"));
        assert!(
            matches!(&events[1], CanonicalEvent::Error(e) if e["code"] == "stream_interrupted")
        );
    }
}
