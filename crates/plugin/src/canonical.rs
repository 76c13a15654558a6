//! The canonical format: OpenAI Chat Completions JSON (request, response, stream chunk) as serde types.
//!
//! Every plugin translates between these types and its vendor's dialect, so the host and the client only
//! ever see one format. The types are lenient: unknown fields are kept in `extra` maps (and written back
//! out), unknown content parts are kept verbatim, so an OpenAI-compatible server's extensions pass through.
//! Optional fields that are absent stay absent when serialised.

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;

/// A `POST /v1/chat/completions` request body. (Deserialized in one pass by a hand-written impl,
/// below: the derived one would buffer every field because of `extra`.)
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

// Deserialization of the request types in one pass. `#[serde(flatten)]` (for `extra`) and
// `#[serde(untagged)]` (for `Content`) make derived impls buffer every field of an object into an
// intermediate tree before typing it; these impls type each field as it is read and keep unknown
// fields in `extra`. They accept and refuse exactly what the derived forms did (a test compares
// them on a corpus and on generated objects); their error messages are more specific.

/// An object key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(k) => k,
            Key::Owned(k) => k,
        }
    }

    fn into_owned(self) -> String {
        match self {
            Key::Borrowed(k) => k.to_owned(),
            Key::Owned(k) => k,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Reads the value of a known field, refusing a second occurrence (as derived impls do).
fn field<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Deserialize<'de> for ChatRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RequestVisitor;
        impl<'de> Visitor<'de> for RequestVisitor {
            type Value = ChatRequest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chat completion request object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatRequest, A::Error> {
                let mut model: Option<String> = None;
                let mut messages: Option<Vec<Message>> = None;
                let mut max_tokens: Option<Option<u32>> = None;
                let mut max_completion_tokens: Option<Option<u32>> = None;
                let mut temperature: Option<Option<f64>> = None;
                let mut top_p: Option<Option<f64>> = None;
                let mut stop: Option<Option<Stop>> = None;
                let mut stream: Option<Option<bool>> = None;
                let mut stream_options: Option<Option<StreamOptions>> = None;
                let mut tools: Option<Option<Vec<Tool>>> = None;
                let mut tool_choice: Option<Option<Value>> = None;
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match key.as_str() {
                        "model" => field(&mut map, &mut model, "model")?,
                        "messages" => field(&mut map, &mut messages, "messages")?,
                        "max_tokens" => field(&mut map, &mut max_tokens, "max_tokens")?,
                        "max_completion_tokens" => field(
                            &mut map,
                            &mut max_completion_tokens,
                            "max_completion_tokens",
                        )?,
                        "temperature" => field(&mut map, &mut temperature, "temperature")?,
                        "top_p" => field(&mut map, &mut top_p, "top_p")?,
                        "stop" => field(&mut map, &mut stop, "stop")?,
                        "stream" => field(&mut map, &mut stream, "stream")?,
                        "stream_options" => field(&mut map, &mut stream_options, "stream_options")?,
                        "tools" => field(&mut map, &mut tools, "tools")?,
                        "tool_choice" => field(&mut map, &mut tool_choice, "tool_choice")?,
                        _ => {
                            let value: Value = map.next_value()?;
                            extra.insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(ChatRequest {
                    model: model.unwrap_or_default(),
                    messages: messages.ok_or_else(|| de::Error::missing_field("messages"))?,
                    max_tokens: max_tokens.flatten(),
                    max_completion_tokens: max_completion_tokens.flatten(),
                    temperature: temperature.flatten(),
                    top_p: top_p.flatten(),
                    stop: stop.flatten(),
                    stream: stream.flatten(),
                    stream_options: stream_options.flatten(),
                    tools: tools.flatten(),
                    tool_choice: tool_choice.flatten(),
                    extra,
                })
            }
        }
        d.deserialize_map(RequestVisitor)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MessageVisitor;
        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = Message;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
                let mut role: Option<Role> = None;
                let mut content: Option<Option<Content>> = None;
                let mut name: Option<Option<String>> = None;
                let mut tool_calls: Option<Option<Vec<ToolCall>>> = None;
                let mut tool_call_id: Option<Option<String>> = None;
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match key.as_str() {
                        "role" => field(&mut map, &mut role, "role")?,
                        "content" => field(&mut map, &mut content, "content")?,
                        "name" => field(&mut map, &mut name, "name")?,
                        "tool_calls" => field(&mut map, &mut tool_calls, "tool_calls")?,
                        "tool_call_id" => field(&mut map, &mut tool_call_id, "tool_call_id")?,
                        _ => {
                            let value: Value = map.next_value()?;
                            extra.insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(Message {
                    role: role.ok_or_else(|| de::Error::missing_field("role"))?,
                    content: content.flatten(),
                    name: name.flatten(),
                    tool_calls: tool_calls.flatten(),
                    tool_call_id: tool_call_id.flatten(),
                    extra,
                })
            }
        }
        d.deserialize_map(MessageVisitor)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(part) = seq.next_element::<ContentPart>()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(ContentVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The derived forms the hand-written deserializers replace, to compare with.
    mod derived {
        use super::super::*;

        #[derive(Deserialize)]
        pub struct Request {
            #[serde(default)]
            model: String,
            messages: Vec<Msg>,
            max_tokens: Option<u32>,
            max_completion_tokens: Option<u32>,
            temperature: Option<f64>,
            top_p: Option<f64>,
            stop: Option<Stop>,
            stream: Option<bool>,
            stream_options: Option<StreamOptions>,
            tools: Option<Vec<Tool>>,
            tool_choice: Option<Value>,
            #[serde(flatten)]
            extra: Map<String, Value>,
        }

        #[derive(Deserialize)]
        struct Msg {
            role: Role,
            #[serde(default)]
            content: Option<Parts>,
            name: Option<String>,
            tool_calls: Option<Vec<ToolCall>>,
            tool_call_id: Option<String>,
            #[serde(flatten)]
            extra: Map<String, Value>,
        }

        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Parts {
            Text(String),
            Parts(Vec<ContentPart>),
        }

        impl From<Request> for ChatRequest {
            fn from(r: Request) -> ChatRequest {
                ChatRequest {
                    model: r.model,
                    messages: r
                        .messages
                        .into_iter()
                        .map(|m| Message {
                            role: m.role,
                            content: m.content.map(|c| match c {
                                Parts::Text(t) => Content::Text(t),
                                Parts::Parts(p) => Content::Parts(p),
                            }),
                            name: m.name,
                            tool_calls: m.tool_calls,
                            tool_call_id: m.tool_call_id,
                            extra: m.extra,
                        })
                        .collect(),
                    max_tokens: r.max_tokens,
                    max_completion_tokens: r.max_completion_tokens,
                    temperature: r.temperature,
                    top_p: r.top_p,
                    stop: r.stop,
                    stream: r.stream,
                    stream_options: r.stream_options,
                    tools: r.tools,
                    tool_choice: r.tool_choice,
                    extra: r.extra,
                }
            }
        }
    }

    /// Both deserializers accept `json` with the same value, or both refuse it: from text, from
    /// a reader and from a `Value` (a different deserializer, which never lends strings).
    fn same_as_derived(json: &str) {
        fn agree<E: std::fmt::Debug>(
            json: &str,
            via: &str,
            new: Result<ChatRequest, E>,
            old: Result<ChatRequest, E>,
        ) {
            match (new, old) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{via}: {json}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{via}: {json}\n hand-written: {a:?}\n derived: {b:?}"),
            }
        }
        agree(
            json,
            "from_str",
            serde_json::from_str::<ChatRequest>(json),
            serde_json::from_str::<derived::Request>(json).map(ChatRequest::from),
        );
        agree(
            json,
            "from_reader",
            serde_json::from_reader::<_, ChatRequest>(json.as_bytes()),
            serde_json::from_reader::<_, derived::Request>(json.as_bytes()).map(ChatRequest::from),
        );
        if let Ok(value) = serde_json::from_str::<Value>(json) {
            agree(
                json,
                "from_value",
                serde_json::from_value::<ChatRequest>(value.clone()),
                serde_json::from_value::<derived::Request>(value).map(ChatRequest::from),
            );
        }
    }

    #[test]
    fn hand_written_request_deserializer_matches_the_derived_one() {
        for json in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"messages":[]}"#,
            r#"{"model":"m"}"#,
            r#"{"model":null,"messages":[]}"#,
            r#"{"model":5,"messages":[]}"#,
            r#"{"model":"a","model":"b","messages":[]}"#,
            r#"{"messages":[],"messages":[]}"#,
            r#"{"messages":[],"seed":1,"seed":2}"#,
            r#"{"mod\u0065l":"escaped key","messages":[]}"#,
            r#"{"messages":[],"max_tokens":null,"stream":true,"stream_options":{"include_usage":true,"x":1}}"#,
            r#"{"messages":[],"max_tokens":-1}"#,
            r#"{"messages":[],"max_tokens":"7"}"#,
            r#"{"messages":[],"stop":"END"}"#,
            r#"{"messages":[],"stop":["a","b"]}"#,
            r#"{"messages":[],"stop":3}"#,
            r#"{"messages":[],"tools":[{"type":"function","function":{"name":"f","strict":true}}],"tool_choice":"auto"}"#,
            r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}"#,
            r#"{"messages":[{"role":"tool","tool_call_id":"c","content":"42"}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"input_audio","input_audio":{}}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
            r#"{"messages":[{"role":"user","content":7}]}"#,
            r#"{"messages":[{"role":"user","content":{"text":"x"}}]}"#,
            r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
            r#"{"messages":[{"content":"x"}]}"#,
            r#"{"messages":[{"role":"user","role":"user"}]}"#,
            r#"{"messages":[{"role":"user","refusal":null,"x":[1,2]}]}"#,
            r#"{"messages":[{"role":"user","name":"n","name":"m"}]}"#,
            r#"{"messages":[{"role":"user","content":"a","content":"b"}]}"#,
            r#"{"messages":[{"role":"tool","tool_call_id":"a","tool_call_id":"b"}]}"#,
            r#"{"messages":[{"role":"assistant","tool_calls":[],"tool_calls":[]}]}"#,
            r#"{"messages":[{"r\u006fle":"user","c\u006fntent":"escaped keys"}]}"#,
            r#"{"messages":{}}"#,
            r#"[]"#,
            r#""text""#,
            r#"null"#,
        ] {
            same_as_derived(json);
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..300).prop_map(Value::from),
            (-1.0f64..3.0).prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
            prop::collection::vec("[a-z]{0,3}".prop_map(Value::from), 0..3).prop_map(Value::from),
            Just(serde_json::json!({"include_usage": true})),
            Just(serde_json::json!([{"type": "text", "text": "t"}])),
            Just(serde_json::json!({"type": "text"})),
        ]
    }

    fn message() -> impl Strategy<Value = Value> {
        let keys = prop::sample::select(vec![
            "role",
            "content",
            "name",
            "tool_calls",
            "tool_call_id",
            "refusal",
            "x",
        ]);
        let role = prop::sample::select(vec![
            "user",
            "system",
            "assistant",
            "tool",
            "developer",
            "bad",
        ]);
        (
            role,
            prop::collection::vec((keys, json_value()), 0..4),
            any::<bool>(),
        )
            .prop_map(|(role, fields, with_role)| {
                let mut m = Map::new();
                if with_role {
                    m.insert("role".into(), Value::from(role));
                }
                for (k, v) in fields {
                    if k != "role" || !with_role {
                        m.insert(k.to_owned(), v);
                    }
                }
                Value::Object(m)
            })
    }

    proptest::proptest! {
        #[test]
        fn generated_requests_deserialize_as_with_the_derived_form(
            fields in prop::collection::vec((prop::sample::select(vec![
                "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
                "stream", "stream_options", "tools", "tool_choice", "seed", "user",
            ]), json_value()), 0..6),
            messages in prop::option::weighted(0.9, prop::collection::vec(message(), 0..4)),
        ) {
            let mut request = Map::new();
            for (k, v) in fields {
                request.insert(k.to_owned(), v);
            }
            if let Some(messages) = messages {
                request.insert("messages".into(), Value::from(messages));
            }
            same_as_derived(&Value::Object(request).to_string());
        }
    }

    /// Found by fuzzing (AFL++ on `canonical-request`, see docs/testing.md): serde_json skips the
    /// value of an ignored field (an unknown field of a tool, of a tool call, of an image) without
    /// checking its UTF-8, so a body with a byte like 0x80 there was read as a request, and the
    /// field dropped. `from_json`, which the plugin SDK reads requests with, refuses it.
    #[test]
    fn regression_a_body_with_invalid_utf8_in_an_ignored_field_is_refused() {
        let body = b"{\"model\":\"m\",\"messages\":[],\"tools\":[{\"type\":\"function\",\"kype\":\"f\x86\",\"function\":{\"name\":\"f\"}}]}";
        assert!(serde_json::from_slice::<Value>(body).is_err());
        assert!(
            serde_json::from_slice::<ChatRequest>(body).is_ok(),
            "serde_json's laxness, which from_json guards against"
        );
        let e = ChatRequest::from_json(body).unwrap_err();
        assert!(e.to_string().contains("utf-8"), "{e}");
        let good = br#"{"model":"m","messages":[],"tools":[{"type":"function","kype":"f","function":{"name":"f"}}]}"#;
        assert_eq!(
            ChatRequest::from_json(good).unwrap(),
            serde_json::from_slice::<ChatRequest>(good).unwrap()
        );
    }

    #[test]
    fn request_keeps_unknown_fields_and_parts() {
        let raw = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"},
            {"type":"input_audio","input_audio":{"data":"AAA","format":"wav"}},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}}]}],
            "seed":7,"logit_bias":{"1":2}}"#;
        let req: ChatRequest = serde_json::from_str(raw).unwrap();
        assert_eq!(req.extra["seed"], 7);
        let Some(Content::Parts(parts)) = &req.messages[0].content else {
            panic!()
        };
        assert!(matches!(parts[1], ContentPart::Other(_)));
        let ContentPart::ImageUrl { image_url } = &parts[2] else {
            panic!()
        };
        assert_eq!(image_url.as_base64_data(), Some(("image/png", "iVBO")));
        let back: Value = serde_json::to_value(&req).unwrap();
        let orig: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(back, orig);
    }
}
