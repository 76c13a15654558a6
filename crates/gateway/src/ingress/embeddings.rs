//! Embeddings (`POST /v1/embeddings`), routed with the same breakers, budgets and failover as
//! chat, on routes with `kind = "embeddings"`.
//!
//! The request is OpenAI's, which is the canonical form: `model` (the route), `input` (a string,
//! a list of strings, a list of token ids or a list of such lists), `dimensions`,
//! `encoding_format` (`float` or `base64`) and `user`; any other field is a 400 naming it. The
//! provider is always asked for floats; when the client asks for `base64` (what the official SDKs
//! do by default), the gateway encodes each vector as little-endian 32-bit floats in standard
//! base64, as OpenAI does.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};
use stilts_config::RouteKind;
use stilts_core::RequestMeta;

use super::Untranslatable;
use crate::engine::{ChatReply, Gateway};
use crate::error::ApiError;
use crate::upstream::Operation;

/// `POST /v1/embeddings`.
pub async fn handle(State(gateway): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    let presented = crate::server::bearer(&headers);
    let render = IntoResponse::into_response;
    let request =
        match super::read_or_refuse(&gateway, &headers, presented, body, started, render).await {
            Ok(r) => r,
            Err(refused) => return refused,
        };
    let checked = match check(&request.body) {
        Ok(c) => c,
        Err(e) => {
            crate::driver::access_refused("-", 400, started);
            return ApiError::from(e).into_response();
        }
    };
    let route = match gateway.route_of(&checked.route, RouteKind::Embeddings, started) {
        Ok(r) => r,
        Err(e) => return (*e).into_response(),
    };
    let meta = RequestMeta {
        input_tokens: u32::try_from(request.body.len() / 4).unwrap_or(u32::MAX),
        output_tokens: 0,
        stream: false,
        deadline: request.deadline,
    };
    let driver = gateway.driver(route, meta, started, request.deadline, false);
    match driver
        .complete(checked.canonical, Operation::Embeddings)
        .await
    {
        Err(e) => e.into_response(),
        Ok(ChatReply::Complete {
            provider,
            attempts,
            body,
        }) => match encode_answer(&body, checked.base64) {
            Ok(answer) => {
                let mut response = axum::Json(answer).into_response();
                super::tag(response.headers_mut(), &provider, attempts);
                response
            }
            Err(e) => ApiError::from(e).into_response(),
        },
        Ok(ChatReply::Stream { .. }) => ApiError::from(Untranslatable::Answer(
            "an embeddings call cannot stream".into(),
        ))
        .into_response(),
    }
}

/// A checked embeddings request.
struct Checked {
    route: String,
    /// The request as sent to the plugin (the client's encoding_format removed).
    canonical: Bytes,
    /// The client asked for base64.
    base64: bool,
}

fn invalid(field: &str, message: impl std::fmt::Display) -> Untranslatable {
    Untranslatable::Request(format!("{field}: {message}"))
}

fn check(body: &[u8]) -> Result<Checked, Untranslatable> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Untranslatable::Request(format!("the body is not UTF-8 text: {e}")))?;
    let mut request: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        Untranslatable::Request(format!(
            "the body is not an embeddings request (a JSON object): {e}"
        ))
    })?;
    let mut base64 = false;
    for (field, value) in &request {
        match field.as_str() {
            "model" => {
                value
                    .as_str()
                    .ok_or_else(|| invalid("model", "must be a string (the route name)"))?;
            }
            "input" => check_input(value)?,
            "dimensions" => {
                value
                    .as_u64()
                    .filter(|d| (1..=65_536).contains(d))
                    .ok_or_else(|| invalid("dimensions", "must be a whole number from 1"))?;
            }
            "encoding_format" => match value.as_str() {
                Some("float") => {}
                Some("base64") => base64 = true,
                _ => {
                    return Err(invalid(
                        "encoding_format",
                        "must be \"float\" or \"base64\"",
                    ));
                }
            },
            "user" => {
                value
                    .as_str()
                    .ok_or_else(|| invalid("user", "must be a string"))?;
            }
            other => {
                return Err(invalid(
                    other,
                    "not supported by stilts' embeddings endpoint; remove it (model, input, dimensions, encoding_format and user are)",
                ));
            }
        }
    }
    let route = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("model", "required (the route name)"))?
        .to_owned();
    if !request.contains_key("input") {
        return Err(invalid("input", "required"));
    }
    request.remove("encoding_format");
    let canonical = serde_json::to_vec(&Value::Object(request)).map_err(|e| {
        Untranslatable::Request(format!("the request could not be re-encoded: {e}"))
    })?;
    Ok(Checked {
        route,
        canonical: Bytes::from(canonical),
        base64,
    })
}

/// `input`: a non-empty string, or a non-empty list of non-empty strings, of token ids, or of
/// non-empty lists of token ids.
fn check_input(input: &Value) -> Result<(), Untranslatable> {
    let token = |v: &Value| v.as_u64().is_some_and(|t| t <= u64::from(u32::MAX));
    let ok = match input {
        Value::String(s) => !s.is_empty(),
        Value::Array(items) if !items.is_empty() => {
            items
                .iter()
                .all(|i| i.as_str().is_some_and(|s| !s.is_empty()))
                || items.iter().all(token)
                || items.iter().all(|i| {
                    i.as_array()
                        .is_some_and(|ids| !ids.is_empty() && ids.iter().all(token))
                })
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "input",
            "must be a non-empty string, or a non-empty list of non-empty strings, of token ids, or of lists of token ids",
        ))
    }
}

/// The client's answer: the canonical one, with each vector as base64 when asked.
fn encode_answer(body: &[u8], base64: bool) -> Result<Value, Untranslatable> {
    let mut answer: Value = serde_json::from_slice(body)
        .map_err(|e| Untranslatable::Answer(format!("the answer could not be read back: {e}")))?;
    if !base64 {
        return Ok(answer);
    }
    let Some(data) = answer.get_mut("data").and_then(Value::as_array_mut) else {
        return Err(Untranslatable::Answer("the answer has no data list".into()));
    };
    for item in data {
        let Some(vector) = item.get("embedding").and_then(Value::as_array) else {
            return Err(Untranslatable::Answer(
                "an embedding of the answer is not a list of numbers".into(),
            ));
        };
        let mut bytes = Vec::with_capacity(vector.len() * 4);
        for x in vector {
            let x = x.as_f64().ok_or_else(|| {
                Untranslatable::Answer("an embedding of the answer is not a list of numbers".into())
            })?;
            bytes.extend_from_slice(&(x as f32).to_le_bytes());
        }
        item["embedding"] = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;
    use serde_json::json;

    #[test]
    fn base64_is_little_endian_f32_in_standard_base64() {
        // [0.125, -2.5, 3.75] is AAAAPgAAIMAAAHBA, as OpenAI encodes it.
        let body = json!({"object": "list", "data": [{"object": "embedding", "index": 0,
            "embedding": [0.125, -2.5, 3.75]}], "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}});
        let answer = encode_answer(body.to_string().as_bytes(), true).unwrap();
        assert_eq!(answer["data"][0]["embedding"], "AAAAPgAAIMAAAHBA");
        let floats = encode_answer(body.to_string().as_bytes(), false).unwrap();
        assert_eq!(floats["data"][0]["embedding"], json!([0.125, -2.5, 3.75]));
    }

    #[test]
    fn requests_are_checked_and_the_encoding_is_the_gateways() {
        let c = check(
            br#"{"model":"emb","input":["a","b"],"dimensions":8,"encoding_format":"base64"}"#,
        )
        .unwrap();
        assert!(c.base64);
        assert_eq!(c.route, "emb");
        let sent: Value = serde_json::from_slice(&c.canonical).unwrap();
        assert_eq!(
            sent,
            json!({"model": "emb", "input": ["a", "b"], "dimensions": 8})
        );
        for (body, says) in [
            (r#"{"model":"emb"}"#, "input: required"),
            (r#"{"model":"emb","input":""}"#, "input:"),
            (r#"{"model":"emb","input":[]}"#, "input:"),
            (r#"{"model":"emb","input":["a",1]}"#, "input:"),
            (
                r#"{"model":"emb","input":"a","encoding_format":"hex"}"#,
                "encoding_format",
            ),
            (
                r#"{"model":"emb","input":"a","dimensions":0}"#,
                "dimensions",
            ),
            (r#"{"model":"emb","input":"a","truncate":true}"#, "truncate"),
            (r#"{"input":"a"}"#, "model: required"),
        ] {
            let e = check(body.as_bytes()).err().unwrap().to_string();
            assert!(e.starts_with(says), "{body}: {e}");
        }
        assert!(check(br#"{"model":"e","input":[[1,2],[3]]}"#).is_ok());
        assert!(check(br#"{"model":"e","input":[1,2,3]}"#).is_ok());
    }
}
