//! The response side of the canonical format: a whole `chat.completion`, a `chat.completion.chunk`
//! stream event with its deltas, why generation stopped, and token usage.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Message, Role};

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural stop or a stop sequence.
    Stop,
    /// The output token limit.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The output was withheld by a content filter.
    ContentFilter,
    /// Legacy function calling.
    FunctionCall,
}

impl FinishReason {
    /// Parses the canonical string form.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            "function_call" => FinishReason::FunctionCall,
            _ => return None,
        })
    }
}

/// Token usage of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens (including cached ones).
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
    /// `{"cached_tokens":…}` and friends, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<Value>,
    /// `{"reasoning_tokens":…}` and friends, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<Value>,
}

impl Usage {
    /// Usage with the total filled in.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }
}

/// A `chat.completion` response body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Response id.
    pub id: String,
    /// Always `"chat.completion"`.
    #[serde(default = "completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The upstream model that actually answered.
    pub model: String,
    /// The choices (one unless `n` > 1).
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Other fields, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

/// One choice of a response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position in `choices`.
    #[serde(default)]
    pub index: u32,
    /// The assistant message.
    pub message: Message,
    /// Why generation stopped (null only for unfinished output).
    pub finish_reason: Option<FinishReason>,
}

/// A `chat.completion.chunk` stream event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Same for every chunk of one stream.
    pub id: String,
    /// Always `"chat.completion.chunk"`.
    #[serde(default = "chunk_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The upstream model that is answering.
    pub model: String,
    /// Deltas; empty on the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the final chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

/// One choice's delta in a chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Position in `choices`.
    #[serde(default)]
    pub index: u32,
    /// The new output.
    pub delta: Delta,
    /// Set on the last chunk of this choice.
    pub finish_reason: Option<FinishReason>,
}

/// New output in a chunk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A text fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A fragment of a tool call; fragments with the same `index` concatenate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call of the message this fragment extends.
    pub index: u32,
    /// The call id, on the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `"function"`, on the first fragment.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name (first fragment) and argument text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

/// The function part of a tool call fragment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// Function name, on the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the JSON-encoded arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

impl ChatChunk {
    /// A chunk with one choice (index 0).
    pub fn delta(
        id: &str,
        model: &str,
        created: u64,
        delta: Delta,
        finish_reason: Option<FinishReason>,
    ) -> Self {
        ChatChunk {
            id: id.to_owned(),
            object: chunk_object(),
            created,
            model: model.to_owned(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            usage: None,
        }
    }

    /// The final usage chunk (`choices: []`), as OpenAI sends with `include_usage`.
    pub fn usage(id: &str, model: &str, created: u64, usage: Usage) -> Self {
        ChatChunk {
            id: id.to_owned(),
            object: chunk_object(),
            created,
            model: model.to_owned(),
            choices: Vec::new(),
            usage: Some(usage),
        }
    }
}
