//! `POST /v1/messages/count_tokens`: the input tokens of a Messages request, counted by the
//! gateway.
//!
//! The request is checked exactly as `POST /v1/messages` checks it (the same fields carried or
//! refused by name, the route must exist and serve chat), so a request that counts is one that
//! can be sent. The count is made here, not by a provider: the route's deployments may speak
//! dialects without a counting endpoint, and a count must not fail over or cost an upstream
//! call. It uses OpenAI's `o200k_base` tokenizer (GPT-4o and later) over what the request sends
//! to a model: each message's role and text, each tool call's name and arguments, each tool's
//! definition, with the framing tokens of OpenAI's published counting recipe. For other model
//! families it is an estimate, as Anthropic documents its own count to be; the
//! `x-stilts-token-count` header says which tokenizer counted.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::ingress::Untranslatable;

/// The fields a count request takes (Anthropic's `count_tokens` parameters that stilts serves).
const COUNTED_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
];

/// Framing tokens per message in OpenAI's counting recipe (`<|start|>role<|message|>…<|end|>`).
const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens that prime the reply, once per request.
const REPLY_PRIMING: u64 = 3;
/// Tokens per image: the most Anthropic charges for one image it does not resize (about
/// 1.15 megapixels at 750 pixels a token). The gateway does not decode images to measure them.
const IMAGE_TOKENS: u64 = 1_600;

/// What `x-stilts-token-count` says: the tokenizer that counted.
pub(super) const TOKENIZER: &str = "o200k_base";

/// The canonical request to count and its route: the client's request checked as a Messages
/// request would be.
pub(super) fn to_countable(body: &[u8]) -> Result<(Value, String), Untranslatable> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Untranslatable::Request(format!("the body is not UTF-8 text: {e}")))?;
    let mut request: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        Untranslatable::Request(format!(
            "the body is not a count_tokens request (a JSON object): {e}"
        ))
    })?;
    if let Some(field) = request
        .keys()
        .find(|k| !COUNTED_FIELDS.contains(&k.as_str()))
    {
        return Err(Untranslatable::Request(format!(
            "{field}: not a count_tokens field; a count takes {}",
            COUNTED_FIELDS.join(", ")
        )));
    }
    // The answer's length does not change the input's count; the Messages check requires one.
    request.insert("max_tokens".into(), json!(1));
    let bytes = serde_json::to_vec(&request).map_err(|e| {
        Untranslatable::Request(format!("the request could not be re-encoded: {e}"))
    })?;
    let (canonical, _) = super::request::to_canonical(&bytes)?;
    let canonical: Value = serde_json::from_slice(&canonical)
        .map_err(|e| Untranslatable::Request(format!("the request could not be re-read: {e}")))?;
    let route = canonical["model"].as_str().unwrap_or_default().to_owned();
    Ok((canonical, route))
}

/// The input tokens of a canonical chat request.
pub(super) fn input_tokens(canonical: &Value) -> u64 {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let count = |text: &str| bpe.count_ordinary(text) as u64;
    let mut total = REPLY_PRIMING;
    for message in canonical["messages"].as_array().into_iter().flatten() {
        total += TOKENS_PER_MESSAGE;
        total += message["role"].as_str().map_or(0, count);
        match &message["content"] {
            Value::String(text) => total += count(text),
            Value::Array(parts) => {
                for part in parts {
                    total += match part["type"].as_str() {
                        Some("text") => part["text"].as_str().map_or(0, count),
                        Some("image_url") => IMAGE_TOKENS,
                        _ => 0,
                    };
                }
            }
            _ => {}
        }
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            let function = &call["function"];
            total += 1;
            total += function["name"].as_str().map_or(0, count);
            total += function["arguments"].as_str().map_or(0, count);
        }
    }
    for tool in canonical["tools"].as_array().into_iter().flatten() {
        total += count(&tool["function"].to_string());
    }
    total
}

/// The count's answer: `{"input_tokens": n}` and the tokenizer that counted.
pub(super) fn answer(input_tokens: u64) -> Response {
    let mut response = axum::Json(json!({ "input_tokens": input_tokens })).into_response();
    response
        .headers_mut()
        .insert("x-stilts-token-count", HeaderValue::from_static(TOKENIZER));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(request: Value) -> Result<u64, String> {
        let (canonical, _) =
            to_countable(request.to_string().as_bytes()).map_err(|e| e.to_string())?;
        Ok(input_tokens(&canonical))
    }

    #[test]
    fn a_single_message_counts_its_text_and_framing() {
        // "hello world" is two o200k tokens, "user" one: 3 framing + 1 + 2 + 3 priming.
        let n = count(
            json!({"model": "chat", "messages": [{"role": "user", "content": "hello world"}]}),
        );
        assert_eq!(n, Ok(9));
    }

    #[test]
    fn system_tools_and_tool_calls_add_to_the_count() {
        let ask = json!([{"role": "user", "content": "Weather in Paris?"}]);
        let base = count(json!({"model": "chat", "messages": ask})).unwrap_or(0);
        let with_system =
            count(json!({"model": "chat", "system": "Be brief.", "messages": ask})).unwrap_or(0);
        assert!(with_system > base, "{with_system} > {base}");
        let tool = json!({"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}});
        let with_tool =
            count(json!({"model": "chat", "messages": ask, "tools": [tool]})).unwrap_or(0);
        assert!(with_tool > base + 5, "{with_tool} > {base} + 5");
        let conversation = json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "21 C"}]},
        ]);
        let with_call =
            count(json!({"model": "chat", "messages": conversation, "tools": [tool]})).unwrap_or(0);
        assert!(with_call > with_tool + 6, "{with_call} > {with_tool} + 6");
    }

    #[test]
    fn an_image_counts_as_the_largest_unresized_one() {
        let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}});
        let n = count(json!({"model": "chat", "messages": [{"role": "user", "content": [image, {"type": "text", "text": "What is it?"}]}]}))
            .unwrap_or(0);
        assert!((IMAGE_TOKENS..IMAGE_TOKENS + 20).contains(&n), "{n}");
    }

    #[test]
    fn fields_a_count_does_not_take_and_uncarried_ones_are_refused_by_name() {
        for (request, named) in [
            (
                json!({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
                "stream",
            ),
            (
                json!({"model": "chat", "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "chat", "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [{"role": "user", "content": "hi"}]}),
                "thinking",
            ),
            (
                json!({"messages": [{"role": "user", "content": "hi"}]}),
                "model",
            ),
            (json!({"model": "chat"}), "messages"),
        ] {
            let Err(e) = count(request.clone()) else {
                panic!("{request} was counted");
            };
            assert!(e.starts_with(named), "{request}: {e}");
        }
        assert!(count(json!("not an object")).is_err());
    }
}
