//! OpenAI Responses (`POST /v1/responses`), served by any deployment through the canonical format.
//!
//! Request: `model` (the route), `input` (text, or items: messages with `input_text` /
//! `input_image` / `output_text` parts, `function_call` and `function_call_output`),
//! `instructions`, function `tools`, `tool_choice`, `parallel_tool_calls`, `text.format` (text,
//! JSON object or JSON schema), `text.verbosity`, `reasoning.effort`, `max_output_tokens`,
//! `temperature`, `top_p`, `user`, `metadata` (echoed), `store` (accepted; stilts stores nothing)
//! and `stream`. Stored state (`previous_response_id`, `conversation`), other tool types, other
//! item types and every other field are a 400 naming them, never silently dropped.
//!
//! Answer: a `response` object with `message` and `function_call` output items and `usage`;
//! streamed as the typed events the SDKs accumulate (`response.created`, `response.in_progress`,
//! per item `output_item.added`, `content_part.added`, `output_text.delta` / `.done`,
//! `function_call_arguments.delta` / `.done`, `output_item.done`, then `response.completed`, or
//! `response.incomplete` for a length or content-filter stop), each with its `event:` line and a
//! `sequence_number`. An answer that breaks after it started and cannot be continued exactly ends
//! with `response.failed` and an `error` event the SDKs raise on. Errors before any byte keep the
//! OpenAI error shape, with `x-should-retry` and `X-Stilts-Attempts`.

use crate::engine::{ChatReply, Gateway};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

mod answer;
mod request;

use answer::{Translator, from_canonical};
use request::to_canonical;

/// `POST /v1/responses`.
pub async fn handle(State(gateway): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    let presented = crate::server::bearer(&headers);
    let render = IntoResponse::into_response;
    let request =
        match super::read_or_refuse(&gateway, &headers, presented, body, started, render).await {
            Ok(r) => r,
            Err(refused) => return refused,
        };
    let (canonical, echo) = match to_canonical(&request.body) {
        Ok(c) => c,
        Err(e) => {
            crate::driver::access_refused("-", 400, started);
            return ApiError::from(e).into_response();
        }
    };
    match gateway.chat(canonical, request.deadline).await {
        Err(e) => e.into_response(),
        Ok(ChatReply::Complete {
            provider,
            attempts,
            body,
        }) => match from_canonical(&body, &echo) {
            Ok(response) => {
                let mut response = axum::Json(response).into_response();
                super::tag(response.headers_mut(), &provider, attempts);
                response
            }
            Err(e) => ApiError::from(e).into_response(),
        },
        Ok(ChatReply::Stream {
            provider,
            attempts,
            stream,
        }) => super::event_stream(
            super::sse::encode(stream, Translator::new(echo)),
            &provider,
            attempts,
        ),
    }
}
