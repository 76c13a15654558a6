//! Anthropic Messages (`POST /v1/messages`), served by any deployment through the canonical format.
//!
//! Request: `model` (the route), `max_tokens`, `messages` (text, images, `tool_use` and
//! `tool_result` blocks), `system`, `tools`, `tool_choice`, `stop_sequences`, `temperature`,
//! `top_p`, `metadata.user_id` and `stream` become their canonical equivalents. `cache_control`
//! (a caching hint: the answer is the same without it) and `tool_result.is_error` (the result's
//! text still reaches the model) are accepted and not carried. Every other field, and every
//! block type the canonical format cannot carry (`thinking`, `document`, server tools), is a 400
//! naming it: never silently dropped.
//!
//! Answer: a `message` with `text` and `tool_use` blocks, `stop_reason` and `usage`; streamed as
//! `message_start`, `content_block_start` / `_delta` / `_stop` per block, `message_delta` (the stop
//! reason and the final usage) and `message_stop`, every event with its `event:` line. An answer
//! that breaks after it started and cannot be continued exactly ends with `event: error` (the SDK
//! raises), never with a silent close. Errors before any byte use Anthropic's shape
//! (`{"type":"error","error":{"type","message"}}`) and statuses (529 `overloaded_error` when no
//! provider is available), with `request-id`, `x-should-retry` and
//! `X-Stilts-Attempts`.
//!
//! Clients send their key as `x-api-key` (the Anthropic SDKs) or `Authorization: Bearer`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::hash::BuildHasher;

use crate::engine::{ChatReply, Gateway};
use crate::error::ApiError;

mod answer;
mod count;
mod request;

use answer::{from_canonical, translate_stream};
use request::to_canonical;

/// `POST /v1/messages`.
pub async fn handle(State(gateway): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    let request_id = request_id();
    let request = match read(&gateway, &headers, body, started, &request_id).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let (canonical, stream) = match to_canonical(&request.body) {
        Ok(c) => c,
        Err(e) => {
            crate::driver::access_refused("-", 400, started);
            return error_response(&e.into(), &request_id);
        }
    };
    let mut response = match gateway.chat(canonical, request.deadline).await {
        Err(e) => return error_response(&e, &request_id),
        Ok(ChatReply::Complete {
            provider,
            attempts,
            body,
        }) => match from_canonical(&body) {
            Ok(message) => {
                let mut response = axum::Json(message).into_response();
                super::tag(response.headers_mut(), &provider, attempts);
                response
            }
            Err(e) => return error_response(&e.into(), &request_id),
        },
        Ok(ChatReply::Stream {
            provider,
            attempts,
            stream: chunks,
        }) => {
            debug_assert!(stream, "the engine streams only what was asked for");
            super::event_stream(translate_stream(chunks), &provider, attempts)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", v);
    }
    response
}

/// `POST /v1/messages/count_tokens`: the request checked as `POST /v1/messages` checks it, and
/// its input tokens counted by the gateway (see [`count`]).
pub async fn count_tokens(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let request_id = request_id();
    let request = match read(&gateway, &headers, body, started, &request_id).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let (canonical, route) = match count::to_countable(&request.body) {
        Ok(c) => c,
        Err(e) => {
            crate::driver::access_refused("-", 400, started);
            return error_response(&e.into(), &request_id);
        }
    };
    if let Err(e) = gateway.route_of(&route, stilts_config::RouteKind::Chat, started) {
        return error_response(&e, &request_id);
    }
    // Counting a long conversation is CPU work: off the reactor.
    let counted = tokio::task::spawn_blocking(move || count::input_tokens(&canonical)).await;
    let mut response = match counted {
        Ok(tokens) => count::answer(tokens),
        Err(e) => {
            let e = ApiError::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                format!("the token count did not finish: {e}"),
            );
            return error_response(&e, &request_id);
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", v);
    }
    response
}

/// The request off the wire (the client key checked, the body read within the limits), or the
/// refusal in Anthropic's shape.
async fn read(
    gateway: &Gateway,
    headers: &HeaderMap,
    body: Body,
    started: std::time::Instant,
    request_id: &str,
) -> Result<super::ClientRequest, Response> {
    let presented = client_key(headers);
    let render = |e: ApiError| error_response(&e, request_id);
    super::read_or_refuse(gateway, headers, presented, body, started, render).await
}

/// The client key: `x-api-key` (what the Anthropic SDKs send), else `Authorization: Bearer`.
fn client_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .or_else(|| crate::server::bearer(headers))
}

/// `req_` and 24 hex digits.
fn request_id() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let a = state.hash_one(std::time::SystemTime::now());
    let b = state.hash_one(a);
    format!("req_{a:016x}{:08x}", b as u32)
}

/// An error in Anthropic's shape and with its status for the kind of failure.
fn error_response(e: &ApiError, request_id: &str) -> Response {
    let (status, kind) = match (e.status.as_u16(), e.code) {
        (_, "no_healthy_provider" | "retry_budget_exhausted") => (529, "overloaded_error"),
        (400, _) => (400, "invalid_request_error"),
        (401, _) => (401, "authentication_error"),
        (403, _) => (403, "permission_error"),
        (404, _) => (404, "not_found_error"),
        (408, _) => (408, "timeout_error"),
        (413, _) => (413, "request_too_large"),
        (429, _) => (429, "rate_limit_error"),
        (504, _) => (504, "timeout_error"),
        (s, _) => (s.max(500), "api_error"),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = json!({
        "type": "error",
        "error": {
            "type": kind,
            "message": e.message,
            "stilts": { "code": e.code, "route": e.route, "attempts": e.tried },
        },
        "request_id": request_id,
    });
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    e.tag_headers(headers);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("request-id", v);
    }
    response
}
