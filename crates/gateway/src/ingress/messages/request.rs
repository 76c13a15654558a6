//! A Messages request as a canonical one: every field carried, accepted without effect, or
//! refused by name.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::ingress::Untranslatable;

fn invalid(message: impl Into<String>) -> Untranslatable {
    Untranslatable::Request(message.into())
}

/// Refuses a key of `object` (at `at`) outside `allowed`, by name: a key stilts does not know
/// could change the answer, so it is never silently dropped.
fn only_keys(at: &str, object: &Value, allowed: &[&str]) -> Result<(), Untranslatable> {
    if !object.is_object() {
        return Err(invalid(format!("{at}: must be an object")));
    }
    match crate::ingress::unknown_key(object, allowed) {
        None => Ok(()),
        Some(key) => Err(invalid(format!(
            "{at}.{key}: not supported by stilts' Messages ingress (it cannot be carried to every provider); here it takes {}",
            allowed.join(", ")
        ))),
    }
}

/// The canonical request of a Messages request, and whether it streams.
pub(super) fn to_canonical(body: &[u8]) -> Result<(Bytes, bool), Untranslatable> {
    let text = std::str::from_utf8(body)
        .map_err(|e| invalid(format!("the body is not UTF-8 text: {e}")))?;
    let request: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        invalid(format!(
            "the body is not a Messages request (a JSON object): {e}"
        ))
    })?;
    let mut out = Map::new();
    let mut messages = Vec::new();
    let mut stream = false;
    for (field, value) in &request {
        match field.as_str() {
            "model" => {
                let model = value
                    .as_str()
                    .ok_or_else(|| invalid("model: must be a string (the route name)"))?;
                out.insert("model".into(), json!(model));
            }
            "max_tokens" => {
                let max = value
                    .as_u64()
                    .filter(|m| *m >= 1 && *m <= u64::from(u32::MAX))
                    .ok_or_else(|| invalid("max_tokens: must be a whole number ≥ 1"))?;
                out.insert("max_tokens".into(), json!(max));
            }
            "messages" | "system" => {}
            "stream" => {
                stream = value
                    .as_bool()
                    .ok_or_else(|| invalid("stream: must be true or false"))?;
            }
            "temperature" | "top_p" => {
                let v = value
                    .as_f64()
                    .ok_or_else(|| invalid(format!("{field}: must be a number")))?;
                out.insert(field.clone(), json!(v));
            }
            "stop_sequences" => {
                let stops = value
                    .as_array()
                    .filter(|a| a.iter().all(Value::is_string))
                    .ok_or_else(|| invalid("stop_sequences: must be a list of strings"))?;
                if !stops.is_empty() {
                    out.insert("stop".into(), Value::Array(stops.clone()));
                }
            }
            "metadata" => {
                let metadata = value
                    .as_object()
                    .ok_or_else(|| invalid("metadata: must be an object"))?;
                for (key, v) in metadata {
                    match (key.as_str(), v) {
                        ("user_id", Value::String(user)) => {
                            out.insert("user".into(), json!(user));
                        }
                        ("user_id", Value::Null) => {}
                        _ => {
                            return Err(invalid(format!(
                                "metadata.{key}: not supported (only metadata.user_id, as a string)"
                            )));
                        }
                    }
                }
            }
            "tools" => {
                out.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => {
                let (choice, parallel) = tool_choice(value)?;
                out.insert("tool_choice".into(), choice);
                if let Some(parallel) = parallel {
                    out.insert("parallel_tool_calls".into(), json!(parallel));
                }
            }
            "thinking" if value.get("type").and_then(Value::as_str) == Some("disabled") => {}
            other => {
                return Err(invalid(format!(
                    "{other}: not supported by stilts' Messages ingress (it cannot be carried to every provider); remove it (docs/dialect-messages.md lists what is served)"
                )));
            }
        }
    }
    if !out.contains_key("model") {
        return Err(invalid("model: required (the route name)"));
    }
    if !out.contains_key("max_tokens") {
        return Err(invalid("max_tokens: required"));
    }
    if let Some(system) = request.get("system") {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let Some(turns) = request.get("messages").and_then(Value::as_array) else {
        return Err(invalid("messages: required, a list of messages"));
    };
    if turns.is_empty() {
        return Err(invalid("messages: must hold at least one message"));
    }
    for (i, turn) in turns.iter().enumerate() {
        convert_turn(i, turn, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    if stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let bytes = serde_json::to_vec(&Value::Object(out))
        .map_err(|e| invalid(format!("the request could not be re-encoded: {e}")))?;
    Ok((Bytes::from(bytes), stream))
}

fn system_text(system: &Value) -> Result<String, Untranslatable> {
    match system {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        only_keys(
                            &format!("system[{i}]"),
                            block,
                            &["type", "text", "cache_control", "citations"],
                        )?;
                        text.push(block.get("text").and_then(Value::as_str).ok_or_else(|| {
                            invalid(format!("system[{i}].text: must be a string"))
                        })?)
                    }
                    other => {
                        return Err(invalid(format!(
                            "system[{i}]: a {} block; the system prompt takes text blocks",
                            other.unwrap_or("typeless")
                        )));
                    }
                }
            }
            Ok(text.join("\n\n"))
        }
        _ => Err(invalid("system: must be a string or a list of text blocks")),
    }
}

fn tools(value: &Value) -> Result<Value, Untranslatable> {
    let list = value
        .as_array()
        .ok_or_else(|| invalid("tools: must be a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        if let Some(kind) = tool.get("type").and_then(Value::as_str) {
            if kind != "custom" {
                return Err(invalid(format!(
                    "tools[{i}].type: \"{kind}\" is a server tool that only Anthropic runs; give a custom tool (name, description, input_schema)"
                )));
            }
        }
        only_keys(
            &format!("tools[{i}]"),
            tool,
            &[
                "type",
                "name",
                "description",
                "input_schema",
                "strict",
                "cache_control",
            ],
        )?;
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("tools[{i}].name: required, a string")))?;
        let schema = tool
            .get("input_schema")
            .filter(|s| s.is_object())
            .ok_or_else(|| {
                invalid(format!(
                    "tools[{i}].input_schema: required, a JSON Schema object"
                ))
            })?;
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        if let Some(d) = tool.get("description").and_then(Value::as_str) {
            function.insert("description".into(), json!(d));
        }
        function.insert("parameters".into(), schema.clone());
        if let Some(strict) = tool.get("strict").and_then(Value::as_bool) {
            function.insert("strict".into(), json!(strict));
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// The canonical `tool_choice`, and `parallel_tool_calls` when the client set
/// `disable_parallel_tool_use`.
fn tool_choice(value: &Value) -> Result<(Value, Option<bool>), Untranslatable> {
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("tool_choice.type: required (auto, any, tool or none)"))?;
    let choice = match kind {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = value
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.name: required with type \"tool\""))?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => {
            return Err(invalid(format!(
                "tool_choice.type: \"{other}\" is not auto, any, tool or none"
            )));
        }
    };
    let parallel = value
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|disable| !disable);
    Ok((choice, parallel))
}

/// Appends the canonical messages of `turn` (tool results become `tool` messages, placed before
/// the rest of their user turn).
fn convert_turn(i: usize, turn: &Value, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let role = turn
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("messages[{i}].role: required (user or assistant)")))?;
    if role != "user" && role != "assistant" {
        return Err(invalid(format!(
            "messages[{i}].role: \"{role}\" is not user or assistant (the system prompt goes in `system`)"
        )));
    }
    only_keys(&format!("messages[{i}]"), turn, &["role", "content"])?;
    let content = turn
        .get("content")
        .ok_or_else(|| invalid(format!("messages[{i}].content: required")))?;
    let blocks = match content {
        Value::String(text) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(invalid(format!(
                "messages[{i}].content: must be a string or a list of blocks"
            )));
        }
    };
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        let keys: &[&str] = match kind {
            "text" => &["type", "text", "cache_control", "citations"],
            "image" => &["type", "source", "cache_control"],
            "tool_result" => &[
                "type",
                "tool_use_id",
                "content",
                "is_error",
                "cache_control",
            ],
            "tool_use" => &["type", "id", "name", "input", "cache_control"],
            _ => &[],
        };
        if !keys.is_empty() {
            only_keys(&at, block, keys)?;
        }
        match (role, kind) {
            (_, "text") => {
                let t = block
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.text: must be a string")))?;
                if role == "user" {
                    parts.push(json!({"type": "text", "text": t}));
                } else {
                    text.push_str(t);
                }
            }
            ("user", "image") => parts.push(image_part(&at, block)?),
            ("user", "tool_result") => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.tool_use_id: required, a string")))?;
                let result = tool_result_text(&at, block.get("content"))?;
                out.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
            }
            ("assistant", "tool_use") => {
                let id = block
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.id: required, a string")))?;
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.name: required, a string")))?;
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            (_, other) => {
                return Err(invalid(format!(
                    "{at}: a {} block in a {role} turn is not supported by stilts' Messages ingress (it cannot be carried to every provider)",
                    if other.is_empty() { "typeless" } else { other }
                )));
            }
        }
    }
    if role == "user" {
        if !parts.is_empty() {
            out.push(json!({"role": "user", "content": crate::ingress::content_of(parts)}));
        }
    } else {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert(
            "content".into(),
            if text.is_empty() && !calls.is_empty() {
                Value::Null
            } else {
                json!(text)
            },
        );
        if !calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        out.push(Value::Object(message));
    }
    Ok(())
}

fn image_part(at: &str, block: &Value) -> Result<Value, Untranslatable> {
    let source = block
        .get("source")
        .ok_or_else(|| invalid(format!("{at}.source: required")))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            only_keys(
                &format!("{at}.source"),
                source,
                &["type", "media_type", "data"],
            )?;
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{at}.source.media_type: required")))?;
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{at}.source.data: required")))?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => {
            only_keys(&format!("{at}.source"), source, &["type", "url"])?;
            source
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{at}.source.url: required")))?
                .to_owned()
        }
        other => {
            return Err(invalid(format!(
                "{at}.source.type: {:?} is not base64 or url",
                other.unwrap_or("")
            )));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A tool result's text: a string, or text blocks.
fn tool_result_text(at: &str, content: Option<&Value>) -> Result<String, Untranslatable> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let mut text = Vec::new();
            for (k, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push(t.as_str()),
                    _ => {
                        return Err(invalid(format!(
                            "{at}.content[{k}]: tool results carry text blocks only"
                        )));
                    }
                }
            }
            Ok(text.join("\n"))
        }
        Some(_) => Err(invalid(format!(
            "{at}.content: must be a string or a list of text blocks"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    fn canonical(request: Value) -> Value {
        let (bytes, _) = to_canonical(request.to_string().as_bytes()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn refused(request: Value) -> String {
        to_canonical(request.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_conversation_with_tools_becomes_canonical() {
        let c = canonical(json!({
            "model": "chat", "max_tokens": 100,
            "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21 C"},
                    {"type": "text", "text": "And tomorrow?"}]}
            ],
            "tools": [{"name": "weather", "description": "Weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"], "temperature": 0.5, "metadata": {"user_id": "u1"},
            "stream": true
        }));
        assert_eq!(
            c,
            json!({
                "model": "chat", "max_tokens": 100,
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "21 C"},
                    {"role": "user", "content": "And tomorrow?"}
                ],
                "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {"type": "object"}}}],
                "tool_choice": "required", "parallel_tool_calls": false,
                "stop": ["END"], "temperature": 0.5, "user": "u1",
                "stream": true, "stream_options": {"include_usage": true}
            })
        );
    }

    #[test]
    fn what_cannot_be_carried_is_refused_by_name() {
        let base = |extra: Value| {
            let mut r = json!({"model": "chat", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            r
        };
        for (extra, says) in [
            (json!({"top_k": 5}), "top_k"),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}),
                "thinking",
            ),
            (
                json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
                "messages[0].content[0]",
            ),
            (json!({"messages": []}), "messages"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"metadata": {"tenant": "x"}}), "metadata.tenant"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "weight": 2}]}]}),
                "messages[0].content[0].weight",
            ),
            (
                json!({"messages": [{"role": "user", "content": "hi", "name": "ann"}]}),
                "messages[0].name",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/i.png", "detail": "high"}}]}]}),
                "messages[0].content[0].source.detail",
            ),
            (
                json!({"tools": [{"name": "f", "input_schema": {"type": "object"}, "input_examples": []}]}),
                "tools[0].input_examples",
            ),
            (
                json!({"system": [{"type": "text", "text": "Be brief.", "ttl": 5}]}),
                "system[0].ttl",
            ),
        ] {
            let message = refused(base(extra.clone()));
            assert!(message.contains(says), "{extra}: {message}");
        }
        assert!(
            refused(json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
                .contains("max_tokens: required")
        );
    }
}
