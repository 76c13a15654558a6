//! What a fake upstream answers, from what the request asks for: a tool call when tools are
//! offered (and the conversation does not end with a tool's result), JSON when JSON is asked for
//! (shaped by the schema when one is given), else its reply text. So a user trying the demo sees
//! tool calling and structured output work through stilts, in either dialect.

use serde_json::{Map, Value, json};

use super::wire::Dialect;

/// The content of one answer.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Content {
    /// Text (JSON text in JSON mode).
    Text(String),
    /// One tool call: its id, the tool's name and the arguments as JSON text.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
}

/// Deepest schema level a sample is made for (deeper levels are `null`).
const SAMPLE_DEPTH: usize = 8;

/// What request `n` of a fake upstream whose reply is `reply` gets.
pub(super) fn content_for(dialect: Dialect, request: &Value, reply: &str, n: u64) -> Content {
    if let Some((name, schema)) = tool_to_call(dialect, request) {
        let arguments = sample(schema.unwrap_or(&Value::Null), reply, 0);
        let arguments = if arguments.is_object() {
            arguments
        } else {
            json!({})
        };
        return Content::ToolCall {
            id: match dialect {
                Dialect::OpenAi => format!("call_mock_{n}"),
                Dialect::Anthropic => format!("toolu_mock_{n}"),
            },
            name,
            arguments: arguments.to_string(),
        };
    }
    if dialect == Dialect::OpenAi {
        match request
            .pointer("/response_format/type")
            .and_then(Value::as_str)
        {
            Some("json_object") => return Content::Text(json!({"answer": reply}).to_string()),
            Some("json_schema") => {
                let schema = request
                    .pointer("/response_format/json_schema/schema")
                    .unwrap_or(&Value::Null);
                return Content::Text(sample(schema, reply, 0).to_string());
            }
            _ => {}
        }
    }
    Content::Text(reply.to_owned())
}

/// The tool to call and its parameter schema, when the request offers tools, does not forbid
/// them, and does not end with a tool's result (then the model answers in text).
fn tool_to_call(dialect: Dialect, request: &Value) -> Option<(String, Option<&Value>)> {
    let tools = request.get("tools")?.as_array().filter(|t| !t.is_empty())?;
    let messages = request.get("messages")?.as_array()?;
    let last = messages.last()?;
    let (forced, answered) = match dialect {
        Dialect::OpenAi => {
            let choice = request.get("tool_choice");
            if choice.and_then(Value::as_str) == Some("none") {
                return None;
            }
            let forced = choice
                .and_then(|c| c.pointer("/function/name"))
                .and_then(Value::as_str);
            (
                forced,
                last.get("role").and_then(Value::as_str) == Some("tool"),
            )
        }
        Dialect::Anthropic => {
            let choice = request.get("tool_choice");
            if choice.and_then(|c| c.get("type")).and_then(Value::as_str) == Some("none") {
                return None;
            }
            let forced = choice
                .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool"))
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str);
            let answered = last
                .get("content")
                .and_then(Value::as_array)
                .is_some_and(|blocks| {
                    blocks
                        .iter()
                        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                });
            (forced, answered)
        }
    };
    if answered {
        return None;
    }
    let name_of = |t: &Value| -> Option<String> {
        match dialect {
            Dialect::OpenAi => t.pointer("/function/name"),
            Dialect::Anthropic => t.get("name"),
        }
        .and_then(Value::as_str)
        .map(str::to_owned)
    };
    let tool = match forced {
        Some(name) => tools.iter().find(|t| name_of(t).as_deref() == Some(name))?,
        None => tools.first()?,
    };
    let schema = match dialect {
        Dialect::OpenAi => tool.pointer("/function/parameters"),
        Dialect::Anthropic => tool.get("input_schema"),
    };
    Some((name_of(tool)?, schema))
}

/// A value of JSON Schema `schema`: every property of an object, the first of an `enum`, the
/// reply for a string, 1 for numbers, `true`, one item for arrays.
fn sample(schema: &Value, reply: &str, depth: usize) -> Value {
    if depth > SAMPLE_DEPTH {
        return Value::Null;
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // A list of types: the first that is not null.
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "",
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    object.insert(name.clone(), sample(property, reply, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            json!([sample(items, reply, depth + 1)])
        }
        "string" => json!(reply),
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "null" => Value::Null,
        // No type: a string, the most common free-form value.
        _ => json!(reply),
    }
}

/// Default length of a fake embedding (when the request sets no `dimensions`).
const EMBEDDING_DIMENSIONS: usize = 8;

/// A deterministic unit vector of `dimensions` floats for `text`: the same text always gets the
/// same vector, different texts different ones.
pub(super) fn embedding_of(text: &str, dimensions: usize) -> Vec<f64> {
    // FNV-1a seeds a xorshift stream: no dependency, stable across runs and platforms.
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut vector: Vec<f64> = (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = vector
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for x in &mut vector {
        // Rounded to what an f32 holds, as real providers send.
        *x = f64::from((*x / norm) as f32);
    }
    vector
}

/// OpenAI's embeddings answer to `request`: one vector per input, in order.
pub(super) fn embeddings_answer(request: &Value) -> Result<Value, String> {
    let dimensions = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(EMBEDDING_DIMENSIONS, |d| d.clamp(1, 4096) as usize);
    let texts: Vec<String> = match request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
            vec![Value::Array(items.clone()).to_string()]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        _ => return Err("input: required".to_owned()),
    };
    let tokens: u64 = texts
        .iter()
        .map(|t| t.split_whitespace().count().max(1) as u64)
        .sum();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": embedding_of(text, dimensions)})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": request.get("model").cloned().unwrap_or(Value::Null),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    const REPLY: &str = "hi";

    #[test]
    fn offered_tools_get_a_call_shaped_by_their_schema() {
        let request = json!({"messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                "unit": {"enum": ["c", "f"]}}}}}]});
        let Content::ToolCall {
            id,
            name,
            arguments,
        } = content_for(Dialect::OpenAi, &request, REPLY, 3)
        else {
            panic!("no tool call")
        };
        assert_eq!((id.as_str(), name.as_str()), ("call_mock_3", "weather"));
        let args: Value = serde_json::from_str(&arguments).unwrap();
        assert_eq!(args, json!({"city": "hi", "days": 1, "unit": "c"}));
    }

    #[test]
    fn a_tool_result_last_or_tool_choice_none_gets_text() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let answered = json!({"tools": tools, "messages": [
            {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c", "content": "42"}]});
        assert_eq!(
            content_for(Dialect::OpenAi, &answered, REPLY, 1),
            Content::Text(REPLY.into())
        );
        let none = json!({"tools": tools, "tool_choice": "none", "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(
            content_for(Dialect::OpenAi, &none, REPLY, 1),
            Content::Text(REPLY.into())
        );
        let anthropic = json!({"tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]}]});
        assert_eq!(
            content_for(Dialect::Anthropic, &anthropic, REPLY, 1),
            Content::Text(REPLY.into())
        );
    }

    #[test]
    fn a_named_tool_choice_is_followed() {
        let request = json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "a", "input_schema": {"type": "object"}}, {"name": "b", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "b"}});
        let Content::ToolCall { name, .. } = content_for(Dialect::Anthropic, &request, REPLY, 1)
        else {
            panic!("no tool call")
        };
        assert_eq!(name, "b");
    }

    #[test]
    fn json_mode_answers_json_shaped_by_the_schema() {
        let object = json!({"messages": [], "response_format": {"type": "json_object"}});
        let Content::Text(text) = content_for(Dialect::OpenAi, &object, REPLY, 1) else {
            panic!()
        };
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"answer": "hi"})
        );
        let schema = json!({"messages": [], "response_format": {"type": "json_schema", "json_schema": {
            "name": "w", "schema": {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}},
            "ok": {"type": ["boolean", "null"]}}}}}});
        let Content::Text(text) = content_for(Dialect::OpenAi, &schema, REPLY, 1) else {
            panic!()
        };
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"tags": ["hi"], "ok": true})
        );
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding_of("hello", 16);
        assert_eq!(a, embedding_of("hello", 16));
        assert_ne!(a, embedding_of("hellp", 16));
        let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "{norm}");
        let answer =
            embeddings_answer(&json!({"model": "m", "input": ["a", "b c"], "dimensions": 4}))
                .unwrap();
        assert_eq!(answer["data"].as_array().unwrap().len(), 2);
        assert_eq!(answer["data"][1]["index"], 1);
        assert_eq!(answer["data"][0]["embedding"].as_array().unwrap().len(), 4);
        assert_eq!(answer["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn a_self_referencing_schema_stops_at_the_depth_limit() {
        let mut schema = json!({"type": "string"});
        for _ in 0..50 {
            schema = json!({"type": "object", "properties": {"x": schema}});
        }
        let v = sample(&schema, REPLY, 0);
        assert!(v.to_string().contains("null"));
    }
}
