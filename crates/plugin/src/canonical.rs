//! The canonical format: OpenAI Chat Completions JSON (request, response, stream chunk) as serde types.
//!
//! Every plugin translates between these types and its vendor's dialect, so the host and the client only
//! ever see one format. The types are lenient: unknown fields are kept in `extra` maps (and written back
//! out), unknown content parts are kept verbatim, so an OpenAI-compatible server's extensions pass through.
//! Optional fields that are absent stay absent when serialised.

use serde::de;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

mod deserialize;
mod response;

pub use response::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Delta, FinishReason, FunctionCallDelta,
    ToolCallDelta, Usage,
};

/// A `POST /v1/chat/completions` request body. (Deserialized in one pass by a hand-written impl,
/// in `deserialize.rs`: the derived one would buffer every field because of `extra`.)
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The route or model name the client asked for. Plugins replace it with the deployment's model.
    #[serde(default)]
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Deprecated upper bound on generated tokens (still what most OpenAI-compatible servers read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Upper bound on generated tokens (current OpenAI name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop sequences: a string or a list of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Stream the answer as `chat.completion.chunk` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stream options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Tools (functions) the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `"none" | "auto" | "required" | {"type":"function","function":{"name":…}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Every other field, passed through untouched where the vendor understands it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// Reads a request body: JSON text in UTF-8. Use it rather than `serde_json::from_slice`,
    /// which skips the strings of fields it ignores (an unknown field of a tool, say) without
    /// checking their UTF-8, and so accepts bytes that are not JSON.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        let text = std::str::from_utf8(body).map_err(<serde_json::Error as de::Error>::custom)?;
        serde_json::from_str(text)
    }

    /// The output token limit the client asked for, under either name.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }
}

/// `stop`: one sequence or several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

impl Stop {
    /// The sequences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// `stream_options`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `choices: []` and the usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other stream options, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the application.
    System,
    /// The newer name OpenAI uses for system instructions.
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

/// One message of the conversation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Text or content parts; may be null on an assistant message that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// On a `tool` message: the call this result answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Other fields (`refusal`, vendor extensions), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// A message with plain text content.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }
    }

    /// All text of the message joined (image and unknown parts skipped).
    pub fn text_content(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// Message content: a string, or a list of typed parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (text, images, …).
    Parts(Vec<ContentPart>),
}

/// One content part. Unknown part types are kept verbatim in [`ContentPart::Other`].
#[derive(Clone, Debug, PartialEq)]
pub enum ContentPart {
    /// `{"type":"text","text":…}`
    Text {
        /// The text.
        text: String,
    },
    /// `{"type":"image_url","image_url":{"url":…,"detail":…}}`; the URL may be a `data:` URL.
    ImageUrl {
        /// The image reference.
        image_url: ImageUrl,
    },
    /// Any other part (`input_audio`, `file`, …), kept as JSON.
    Other(Value),
}

/// The image of an `image_url` part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// An `https:` URL or a `data:<mime>;base64,<data>` URL.
    pub url: String,
    /// `auto | low | high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ImageUrl {
    /// Splits a `data:<mime>;base64,<data>` URL into `(mime, base64 data)`.
    pub fn as_base64_data(&self) -> Option<(&str, &str)> {
        let rest = self.url.strip_prefix("data:")?;
        let (meta, data) = rest.split_once(',')?;
        let mime = meta.strip_suffix(";base64")?;
        Some((mime, data))
    }
}

impl Serialize for ContentPart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ContentPart::Text { text } => {
                serde_json::json!({"type": "text", "text": text}).serialize(s)
            }
            ContentPart::ImageUrl { image_url } => {
                serde_json::json!({"type": "image_url", "image_url": image_url}).serialize(s)
            }
            ContentPart::Other(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let kind = v.get("type").and_then(Value::as_str);
        match kind {
            Some("text") => match v.get("text").and_then(Value::as_str) {
                Some(t) => Ok(ContentPart::Text { text: t.to_owned() }),
                None => Err(serde::de::Error::custom(
                    "text part without a string `text`",
                )),
            },
            Some("image_url") => {
                let image_url = v.get("image_url").cloned().ok_or_else(|| {
                    serde::de::Error::custom("image_url part without `image_url`")
                })?;
                let image_url =
                    ImageUrl::deserialize(image_url).map_err(serde::de::Error::custom)?;
                Ok(ContentPart::ImageUrl { image_url })
            }
            _ => Ok(ContentPart::Other(v)),
        }
    }
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `"function"` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function's declaration.
    pub function: FunctionDef,
}

fn function_type() -> String {
    "function".to_owned()
}

/// A function declaration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// The function name.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Other fields (`strict`), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool call made by the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call id, echoed by the tool result's `tool_call_id`.
    pub id: String,
    /// Always `"function"` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The called function.
    pub function: FunctionCall,
}

/// The function part of a tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON-encoded string (as OpenAI sends them).
    pub arguments: String,
}
