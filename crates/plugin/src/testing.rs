//! Helpers for testing a plugin through its rlib on recorded wire transcripts: frame an SSE transcript,
//! feed it through a [`StreamDriver`] exactly as the host would, and reassemble the canonical chunks into
//! text, tool calls, finish reason and usage.

use serde_json::Value;

use crate::canonical::{FunctionCall, ToolCall, Usage};
use crate::sdk::{StreamDriver, Translator};
use crate::sse::frame_all;
use crate::types::StreamEnd;

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
