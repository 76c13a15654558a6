//! A Responses request as a canonical one: every field carried, echoed, or refused by name.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::hash::BuildHasher;

use crate::ingress::Untranslatable;

fn invalid(field: &str, message: impl std::fmt::Display) -> Untranslatable {
    Untranslatable::Request(format!("{field}: {message}"))
}

/// The request fields a response object echoes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Echo {
    pub(super) id: String,
    pub(super) created_at: u64,
    pub(super) model: String,
    pub(super) fields: Map<String, Value>,
}

/// Fields the response object repeats from the request, with their defaults.
/// A field of the response object and its value when the request did not set it.
type Echoed = (&'static str, fn() -> Value);

pub(super) const ECHOED: [Echoed; 10] = [
    ("instructions", || Value::Null),
    ("metadata", || json!({})),
    ("max_output_tokens", || Value::Null),
    ("temperature", || Value::Null),
    ("top_p", || Value::Null),
    ("parallel_tool_calls", || json!(true)),
    ("tool_choice", || json!("auto")),
    ("tools", || json!([])),
    ("text", || json!({"format": {"type": "text"}})),
    ("reasoning", || json!({"effort": null, "summary": null})),
];

/// The canonical request of a Responses request, and what its answer echoes.
pub(super) fn to_canonical(body: &[u8]) -> Result<(Bytes, Echo), Untranslatable> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Untranslatable::Request(format!("the body is not UTF-8 text: {e}")))?;
    let request: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        Untranslatable::Request(format!(
            "the body is not a Responses request (a JSON object): {e}"
        ))
    })?;
    let mut out = Map::new();
    let mut echo = Echo {
        id: response_id(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ..Echo::default()
    };
    let mut stream = false;
    for (field, value) in &request {
        if value.is_null() {
            continue;
        }
        match field.as_str() {
            "model" => {
                let model = value
                    .as_str()
                    .ok_or_else(|| invalid("model", "must be a string (the route name)"))?;
                echo.model = model.to_owned();
                out.insert("model".into(), json!(model));
            }
            "input" | "instructions" => {}
            "stream" => {
                stream = value
                    .as_bool()
                    .ok_or_else(|| invalid("stream", "must be true or false"))?;
            }
            "store" => {
                value
                    .as_bool()
                    .ok_or_else(|| invalid("store", "must be true or false"))?;
            }
            "metadata" => {
                value
                    .as_object()
                    .ok_or_else(|| invalid("metadata", "must be an object"))?;
            }
            "max_output_tokens" => {
                let max = value
                    .as_u64()
                    .filter(|m| *m >= 1 && *m <= u64::from(u32::MAX))
                    .ok_or_else(|| invalid("max_output_tokens", "must be a whole number ≥ 1"))?;
                out.insert("max_completion_tokens".into(), json!(max));
            }
            "temperature" | "top_p" => {
                let v = value
                    .as_f64()
                    .ok_or_else(|| invalid(field, "must be a number"))?;
                out.insert(field.clone(), json!(v));
            }
            "parallel_tool_calls" => {
                let v = value
                    .as_bool()
                    .ok_or_else(|| invalid(field, "must be true or false"))?;
                out.insert(field.clone(), json!(v));
            }
            "user" => {
                let v = value
                    .as_str()
                    .ok_or_else(|| invalid(field, "must be a string"))?;
                out.insert("user".into(), json!(v));
            }
            "tools" => {
                out.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => {
                out.insert("tool_choice".into(), tool_choice(value)?);
            }
            "text" => text_options(value, &mut out)?,
            "reasoning" => reasoning(value, &mut out)?,
            "previous_response_id" | "conversation" => {
                return Err(Untranslatable::Request(format!(
                    "{field}: stilts does not store responses; send the whole conversation in input (and store nothing server-side)"
                )));
            }
            "background" if value == &json!(false) => {}
            "truncation" if value == "disabled" => {}
            "include" if value.as_array().is_some_and(Vec::is_empty) => {}
            other => {
                return Err(Untranslatable::Request(format!(
                    "{other}: not supported by stilts' Responses ingress (it cannot be carried to every provider); remove it (docs/dialect-responses.md lists what is served)"
                )));
            }
        }
        if ECHOED.iter().any(|(name, _)| name == field) {
            echo.fields.insert(field.clone(), value.clone());
        }
    }
    if echo.model.is_empty() {
        return Err(invalid("model", "required (the route name)"));
    }
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").filter(|v| !v.is_null()) {
        let text = instructions
            .as_str()
            .ok_or_else(|| invalid("instructions", "must be a string"))?;
        messages.push(json!({"role": "system", "content": text}));
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                convert_item(i, item, &mut messages)?;
            }
        }
        _ => {
            return Err(invalid(
                "input",
                "required: a string or a non-empty list of items",
            ));
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|e| {
        Untranslatable::Request(format!("the request could not be re-encoded: {e}"))
    })?;
    Ok((Bytes::from(bytes), echo))
}

fn response_id() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let a = state.hash_one(std::time::SystemTime::now());
    format!("resp_{a:016x}{:016x}", state.hash_one(a))
}

/// Refuses a key of `object` (at `at`) outside `allowed`, by name.
fn only_keys(at: &str, object: &Value, allowed: &[&str]) -> Result<(), Untranslatable> {
    match crate::ingress::unknown_key(object, allowed) {
        None => Ok(()),
        Some(key) => Err(invalid(
            &format!("{at}.{key}"),
            format!(
                "not supported by stilts' Responses ingress (it cannot be carried to every provider); here it takes {}",
                allowed.join(", ")
            ),
        )),
    }
}

fn tools(value: &Value) -> Result<Value, Untranslatable> {
    let list = value
        .as_array()
        .ok_or_else(|| invalid("tools", "must be a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "function" {
            return Err(invalid(
                &format!("tools[{i}].type"),
                format!("\"{kind}\" is a hosted tool; stilts serves function tools"),
            ));
        }
        only_keys(
            &format!("tools[{i}]"),
            tool,
            &["type", "name", "description", "parameters", "strict"],
        )?;
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&format!("tools[{i}].name"), "required, a string"))?;
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        for key in ["description", "parameters", "strict"] {
            if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                function.insert(key.into(), v.clone());
            }
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

fn tool_choice(value: &Value) -> Result<Value, Untranslatable> {
    match value {
        Value::String(s) if ["none", "auto", "required"].contains(&s.as_str()) => Ok(value.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.name", "required with type \"function\""))?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(invalid(
            "tool_choice",
            "must be none, auto, required or {\"type\":\"function\",\"name\":…}",
        )),
    }
}

fn text_options(value: &Value, out: &mut Map<String, Value>) -> Result<(), Untranslatable> {
    let text = value
        .as_object()
        .ok_or_else(|| invalid("text", "must be an object"))?;
    for (key, v) in text {
        match key.as_str() {
            "format" => {
                let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "text" => {}
                    "json_object" => {
                        out.insert("response_format".into(), json!({"type": "json_object"}));
                    }
                    "json_schema" => {
                        let name = v.get("name").and_then(Value::as_str).ok_or_else(|| {
                            invalid("text.format.name", "required with json_schema")
                        })?;
                        let schema =
                            v.get("schema").filter(|s| s.is_object()).ok_or_else(|| {
                                invalid("text.format.schema", "required, a JSON Schema object")
                            })?;
                        let mut spec = Map::new();
                        spec.insert("name".into(), json!(name));
                        spec.insert("schema".into(), schema.clone());
                        for key in ["strict", "description"] {
                            if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
                                spec.insert(key.into(), x.clone());
                            }
                        }
                        out.insert(
                            "response_format".into(),
                            json!({"type": "json_schema", "json_schema": spec}),
                        );
                    }
                    other => {
                        return Err(invalid(
                            "text.format.type",
                            format!("\"{other}\" is not text, json_object or json_schema"),
                        ));
                    }
                }
            }
            "verbosity" => {
                if !v.is_null() {
                    out.insert("verbosity".into(), v.clone());
                }
            }
            other => return Err(invalid(&format!("text.{other}"), "not supported")),
        }
    }
    Ok(())
}

fn reasoning(value: &Value, out: &mut Map<String, Value>) -> Result<(), Untranslatable> {
    let reasoning = value
        .as_object()
        .ok_or_else(|| invalid("reasoning", "must be an object"))?;
    for (key, v) in reasoning {
        match (key.as_str(), v) {
            (_, Value::Null) => {}
            ("effort", Value::String(effort)) => {
                out.insert("reasoning_effort".into(), json!(effort));
            }
            (other, _) => {
                return Err(invalid(
                    &format!("reasoning.{other}"),
                    "not supported (the canonical format carries no reasoning items); only reasoning.effort is",
                ));
            }
        }
    }
    Ok(())
}

/// Appends the canonical messages of input item `i`.
fn convert_item(i: usize, item: &Value, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let at = format!("input[{i}]");
    let kind = item.get("type").and_then(Value::as_str);
    // `id` and `status` come with items a client passes back from an earlier response's output.
    let keys: &[&str] = match kind {
        None | Some("message") => &["type", "role", "content", "id", "status"],
        Some("function_call") => &["type", "call_id", "name", "arguments", "id", "status"],
        Some("function_call_output") => &["type", "call_id", "output", "id", "status"],
        Some(_) => &[],
    };
    if !keys.is_empty() {
        only_keys(&at, item, keys)?;
    }
    match kind {
        None | Some("message") => {
            let role = item
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.role"), "required"))?;
            if !["user", "assistant", "system", "developer"].contains(&role) {
                return Err(invalid(
                    &format!("{at}.role"),
                    format!("\"{role}\" is not user, assistant, system or developer"),
                ));
            }
            let content = match item.get("content") {
                Some(Value::String(s)) => json!(s),
                Some(Value::Array(parts)) => message_parts(&at, role, parts)?,
                _ => {
                    return Err(invalid(
                        &format!("{at}.content"),
                        "must be a string or a list of parts",
                    ));
                }
            };
            out.push(json!({"role": role, "content": content}));
        }
        Some("function_call") => {
            let call_id = item
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.call_id"), "required"))?;
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.name"), "required"))?;
            let arguments = item
                .get("arguments")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.arguments"), "required, a JSON string"))?;
            let call = json!({"id": call_id, "type": "function",
                              "function": {"name": name, "arguments": arguments}});
            // Consecutive calls belong to one assistant turn.
            match out.last_mut() {
                Some(last) if last["role"] == "assistant" => {
                    if let Some(calls) = last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        calls.push(call);
                    } else {
                        last["tool_calls"] = json!([call]);
                    }
                }
                _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        Some("function_call_output") => {
            let call_id = item
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.call_id"), "required"))?;
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = Vec::new();
                    for (k, p) in parts.iter().enumerate() {
                        only_keys(&format!("{at}.output[{k}]"), p, &["type", "text"])?;
                        match (p.get("type").and_then(Value::as_str), p.get("text")) {
                            (Some("input_text"), Some(Value::String(t))) => text.push(t.as_str()),
                            _ => {
                                return Err(invalid(
                                    &format!("{at}.output[{k}]"),
                                    "function outputs carry input_text parts only",
                                ));
                            }
                        }
                    }
                    text.join("\n")
                }
                _ => {
                    return Err(invalid(
                        &format!("{at}.output"),
                        "required, a string or input_text parts",
                    ));
                }
            };
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        Some(other) => {
            return Err(invalid(
                &format!("{at}.type"),
                format!(
                    "\"{other}\" items are not supported by stilts' Responses ingress (messages, function_call and function_call_output are)"
                ),
            ));
        }
    }
    Ok(())
}

fn message_parts(at: &str, role: &str, parts: &[Value]) -> Result<Value, Untranslatable> {
    let mut out = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        let here = format!("{at}.content[{k}]");
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        // An earlier answer's text passed back carries its annotations and logprobs.
        let keys: &[&str] = match kind {
            "input_text" => &["type", "text"],
            "output_text" => &["type", "text", "annotations", "logprobs"],
            "input_image" => &["type", "image_url", "detail"],
            _ => &[],
        };
        if !keys.is_empty() {
            only_keys(&here, part, keys)?;
        }
        match kind {
            "input_text" | "output_text" => {
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&format!("{here}.text"), "must be a string"))?;
                out.push(json!({"type": "text", "text": text}));
            }
            "input_image" if role == "user" => {
                let url = part
                    .get("image_url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid(
                            &format!("{here}.image_url"),
                            "required (a URL or a data: URL; file_id is not supported)",
                        )
                    })?;
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").and_then(Value::as_str) {
                    image["detail"] = json!(detail);
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            other => {
                return Err(invalid(
                    &format!("{here}.type"),
                    format!("\"{other}\" parts are not supported in a {role} message"),
                ));
            }
        }
    }
    Ok(crate::ingress::content_of(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    fn canonical(request: Value) -> Value {
        let (bytes, _) = to_canonical(request.to_string().as_bytes()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn items_and_options_become_canonical() {
        let c = canonical(json!({
            "model": "chat", "instructions": "Be terse.",
            "input": [
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "21 C"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tomorrow?"}]}
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": "auto",
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "reasoning": {"effort": "low", "summary": null},
            "max_output_tokens": 200, "store": false, "metadata": {"k": "v"}, "stream": true
        }));
        assert_eq!(
            c,
            json!({
                "model": "chat",
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
                    {"role": "user", "content": "Tomorrow?"}
                ],
                "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "strict": true}}],
                "tool_choice": "auto",
                "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
                "reasoning_effort": "low",
                "max_completion_tokens": 200,
                "stream": true, "stream_options": {"include_usage": true}
            })
        );
    }

    #[test]
    fn stored_state_and_hosted_tools_are_refused_by_name() {
        for (extra, says) in [
            (
                json!({"previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
            (
                json!({"input": [{"type": "reasoning", "summary": []}]}),
                "input[0].type",
            ),
            (
                json!({"reasoning": {"summary": "auto"}}),
                "reasoning.summary",
            ),
            (
                json!({"include": ["reasoning.encrypted_content"]}),
                "include",
            ),
            (json!({"input": []}), "input"),
            (
                json!({"input": [{"role": "user", "content": "hi", "name": "ann"}]}),
                "input[0].name",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/i.png", "file_id": "f"}]}]}),
                "input[0].content[0].file_id",
            ),
            (
                json!({"tools": [{"type": "function", "name": "f", "parameters": {}, "defer_loading": true}]}),
                "tools[0].defer_loading",
            ),
            (
                json!({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "x", "cache": 1}]}]}),
                "input[0].output[0].cache",
            ),
        ] {
            let mut r = json!({"model": "chat", "input": "hi"});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            let e = to_canonical(r.to_string().as_bytes()).unwrap_err();
            assert!(e.to_string().starts_with(says), "{extra}: {e}");
        }
    }
}
