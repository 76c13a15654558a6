//! Client dialects: what every ingress shares, and one module per dialect that is not the
//! canonical one.
//!
//! The gateway routes canonical requests (OpenAI Chat Completions, `stilts_plugin::canonical`).
//! An ingress for another dialect translates the client's request into a canonical one, calls
//! [`Gateway::chat`] (so routing, failover, breakers and budgets are the same for every
//! dialect), and translates the answer back: a whole response, a live stream event by event, or
//! an error in the dialect's own shape. The failover contract follows from the engine: nothing
//! reaches the client before the first informative upstream chunk, so every failure before it is
//! failed over or becomes the dialect's HTTP error; after it, a break is continued exactly or ends
//! with the dialect's own terminal error event, never with a truncated answer that looks whole.
//!
//! * [`messages`]: Anthropic Messages, `POST /v1/messages`.
//! * [`responses`]: OpenAI Responses, `POST /v1/responses`.
//! * [`embeddings`]: `POST /v1/embeddings` on routes with `kind = "embeddings"`.

pub mod embeddings;
pub mod messages;
pub mod responses;
mod sse;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use std::convert::Infallible;
use std::time::Duration;

use crate::engine::Gateway;
use crate::error::ApiError;
use crate::stream::ChunkStream;

/// Header names made once (a `&str` name is parsed and validated on every insert).
pub(crate) const X_PROVIDER: HeaderName = HeaderName::from_static("x-provider");
pub(crate) const X_STILTS_ATTEMPTS: HeaderName = HeaderName::from_static("x-stilts-attempts");
pub(crate) const X_STILTS_DEADLINE_MS: HeaderName = HeaderName::from_static("x-stilts-deadline-ms");

/// `X-Provider` and `X-Stilts-Attempts` of a successful answer.
pub(crate) fn tag(headers: &mut HeaderMap, provider: &str, attempts: u32) {
    if let Ok(v) = HeaderValue::from_str(provider) {
        headers.insert(X_PROVIDER, v);
    }
    headers.insert(X_STILTS_ATTEMPTS, HeaderValue::from(attempts));
}

/// A streamed answer: `text/event-stream` with the tags.
pub(crate) fn event_stream(stream: ChunkStream, provider: &str, attempts: u32) -> Response {
    let mut response = Response::new(Body::from_stream(stream.map(Ok::<_, Infallible>)));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    tag(h, provider, attempts);
    response
}

/// The 401 error when `presented` is not a client key of the gateway.
pub(crate) fn check_client(gateway: &Gateway, presented: Option<&str>) -> Option<ApiError> {
    (!gateway.client_allowed(presented)).then(|| {
        ApiError::plain(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "missing or unknown client key: send Authorization: Bearer <key>",
        )
    })
}

/// Why a request or an answer could not be translated between a dialect and the canonical format.
#[derive(Debug)]
pub(crate) enum Untranslatable {
    /// The client's request: a 400 whose message starts with the field's path.
    Request(String),
    /// The provider's answer cannot be said in the client's dialect: a 502.
    Answer(String),
}

impl std::fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untranslatable::Request(m) | Untranslatable::Answer(m) => f.write_str(m),
        }
    }
}

impl From<Untranslatable> for ApiError {
    fn from(e: Untranslatable) -> Self {
        match e {
            Untranslatable::Request(message) => ApiError::invalid_request(message),
            Untranslatable::Answer(message) => ApiError::plain(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_failed",
                message,
            ),
        }
    }
}

/// The first key of `object` outside `allowed`: the dialects refuse such a key by name, since a key
/// stilts does not know could change the answer and must never be silently dropped.
pub(crate) fn unknown_key<'a>(object: &'a serde_json::Value, allowed: &[&str]) -> Option<&'a str> {
    object
        .as_object()?
        .keys()
        .find(|k| !allowed.contains(&k.as_str()))
        .map(String::as_str)
}

/// Canonical message content from canonical parts: one string when every part is text (what
/// every provider takes), else the parts.
pub(crate) fn content_of(parts: Vec<serde_json::Value>) -> serde_json::Value {
    if parts.iter().all(|p| p["type"] == "text") {
        let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        return serde_json::Value::String(text);
    }
    serde_json::Value::Array(parts)
}

/// [`read_request`], or the dialect's answer (`render`) to a request refused before it named a
/// route, logged as such.
pub(crate) async fn read_or_refuse(
    gateway: &Gateway,
    headers: &HeaderMap,
    presented: Option<&str>,
    body: Body,
    started: std::time::Instant,
    render: impl FnOnce(ApiError) -> Response,
) -> Result<ClientRequest, Response> {
    read_request(gateway, headers, presented, body)
        .await
        .map_err(|refused| {
            crate::driver::access_refused("-", refused.error.status.as_u16(), started);
            refused.into_response_with(render)
        })
}

/// A request read off the wire: its body and the client's deadline.
pub(crate) struct ClientRequest {
    pub body: Bytes,
    pub deadline: Option<Duration>,
}

/// A request refused before it named a route, and whether the connection must close after the
/// answer (the body was not read to its end).
pub(crate) struct Refused {
    pub error: ApiError,
    pub close: bool,
}

impl Refused {
    /// The answer, rendered by the dialect.
    pub(crate) fn into_response_with(self, render: impl FnOnce(ApiError) -> Response) -> Response {
        let close = self.close;
        let mut response = render(self.error);
        if close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Refused {
            error,
            close: false,
        }
    }
}

/// Checks the client key (`presented`), reads `X-Stilts-Deadline-Ms` and the body within the
/// server's size and time limits.
pub(crate) async fn read_request(
    gateway: &Gateway,
    headers: &HeaderMap,
    presented: Option<&str>,
    body: Body,
) -> Result<ClientRequest, Refused> {
    if let Some(denied) = check_client(gateway, presented) {
        return Err(denied.into());
    }
    let deadline = deadline_header(headers).map_err(|e| Refused::from(*e))?;
    let (limit, body_timeout) = gateway.body_limits();
    // A declared length over the limit is refused before a byte of the body is read, and the
    // connection closed (the unread body would otherwise be taken as the next request).
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(Refused {
            error: too_large(limit),
            close: true,
        });
    }
    let read = tokio::time::timeout(body_timeout, axum::body::to_bytes(body, limit)).await;
    let Ok(read) = read else {
        gateway.metrics().client_timeout("body_read");
        return Err(Refused {
            error: ApiError::plain(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms (server.body_read_timeout_ms)",
                    body_timeout.as_millis()
                ),
            ),
            close: true,
        });
    };
    match read {
        Ok(body) => Ok(ClientRequest { body, deadline }),
        Err(e) => {
            let error = e.into_inner();
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large(limit).into());
            }
            // The client stopped mid-upload or sent a broken body: its fault, not a size problem.
            Err(ApiError::plain(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "unreadable_body",
                format!("the request body could not be read: {error}"),
            )
            .into())
        }
    }
}

/// The 413 of a body over `limit` bytes.
fn too_large(limit: usize) -> ApiError {
    ApiError::plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "request_too_large",
        format!("the request body is larger than {limit} bytes (server.body_limit_bytes)"),
    )
}

/// The client's `X-Stilts-Deadline-Ms`: a whole number of milliseconds from 1. A value above the
/// route's own deadline changes nothing (the route's applies). A malformed value is the client's
/// error, named, never silently ignored.
fn deadline_header(headers: &HeaderMap) -> Result<Option<Duration>, Box<ApiError>> {
    let Some(value) = headers.get(X_STILTS_DEADLINE_MS) else {
        return Ok(None);
    };
    let ms = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms >= 1);
    match ms {
        Some(ms) => Ok(Some(Duration::from_millis(ms))),
        None => Err(Box::new(ApiError::plain(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_deadline",
            format!(
                "the X-Stilts-Deadline-Ms header must be a whole number of milliseconds, at least 1; got {:?}",
                crate::log_safe::escape(&String::from_utf8_lossy(value.as_bytes()))
            ),
        ))),
    }
}
