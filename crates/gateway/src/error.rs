//! Errors as clients see them: OpenAI-shaped JSON bodies with a fitting HTTP status.
//!
//! The body is `{"error":{"message","type","param","code","stilts":{…}}}`: the official SDKs read
//! `error.message` and `error.code`; the `stilts` object names the route and every attempt made
//! (provider, class, upstream status, message), so a failure says what was tried. Upstream
//! messages are redacted of the deployment's key before they get here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;
use stilts_core::{ErrorClass, GiveUp, GiveUpReason};

/// One failed attempt, for the error body and the log.
#[derive(Clone, Debug, Serialize)]
pub struct TriedAttempt {
    /// Deployment name.
    pub provider: String,
    /// Error class.
    pub class: &'static str,
    /// Upstream HTTP status, if one arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What happened (redacted).
    pub message: String,
}

/// Which deadline bounded a call: the client's own (`X-Stilts-Deadline-Ms`, shorter than the
/// route's) or the route's `deadline_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadlineSource {
    /// The client's header.
    Client(Duration),
    /// The route's config.
    Route(Duration),
}

/// An error answer.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI error `type`.
    pub kind: &'static str,
    /// OpenAI error `code`.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// Route, if known.
    pub route: Option<String>,
    /// The attempts that failed, each with its provider and reason.
    pub tried: Vec<TriedAttempt>,
    /// Attempts started (the `X-Stilts-Attempts` header), including any that were cancelled
    /// rather than failed: a hedge that lost, an attempt cut short by the request's deadline.
    pub attempts: u32,
    /// `Retry-After` to send, for 429/503.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// A client error (400).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::plain(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    /// An error without attempts.
    pub fn plain(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            route: None,
            tried: Vec::new(),
            attempts: 0,
            retry_after: None,
        }
    }

    /// The answer for a call the router gave up on. `deadline` says which deadline a
    /// [`GiveUpReason::Deadline`] refers to.
    pub fn from_give_up(
        route: &str,
        give_up: GiveUp,
        tried: Vec<TriedAttempt>,
        deadline: DeadlineSource,
    ) -> Self {
        use GiveUpReason as R;
        let last = tried.last().map(|t| t.message.clone());
        let summary = if tried.is_empty() {
            "no attempt was made".to_owned()
        } else {
            tried
                .iter()
                .map(|t| match t.status {
                    Some(s) => format!("{}: {} (HTTP {s}: {})", t.provider, t.class, t.message),
                    None => format!("{}: {} ({})", t.provider, t.class, t.message),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let (status, kind, code, lead) = match give_up.reason {
            R::Deadline => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "deadline_exceeded",
                match deadline {
                    DeadlineSource::Client(d) => format!(
                        "the request's deadline of {} ms (X-Stilts-Deadline-Ms) passed",
                        d.as_millis()
                    ),
                    DeadlineSource::Route(d) => format!(
                        "the route's deadline of {} ms (router.deadline_ms) passed",
                        d.as_millis()
                    ),
                },
            ),
            R::NotRetryable(ErrorClass::ContextLength) | R::ContextTooLong => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded",
                "the request does not fit the context window of any provider".to_owned(),
            ),
            R::NotRetryable(ErrorClass::ContentFilter) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "content_filter",
                format!(
                    "the provider refused the content: {}",
                    last.unwrap_or_default()
                ),
            ),
            R::NotRetryable(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                format!(
                    "the provider rejected the request: {}",
                    last.unwrap_or_default()
                ),
            ),
            R::AllRateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                "every provider of the route is rate limited".to_owned(),
            ),
            R::BudgetExhausted => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "retry_budget_exhausted",
                "the route's retry budget is spent (many requests are failing)".to_owned(),
            ),
            R::SpendLimit => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "spend_limit",
                "the route's spend limit is reached and no free provider is usable".to_owned(),
            ),
            R::NoHealthyProvider if tried.is_empty() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "no_healthy_provider",
                "no provider of the route is available (breakers open or cooling down)".to_owned(),
            ),
            R::NoHealthyProvider | R::AttemptsExhausted => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_failed",
                "every attempt failed".to_owned(),
            ),
        };
        ApiError {
            status,
            kind,
            code,
            message: format!("{lead}; tried: {summary}"),
            route: Some(route.to_owned()),
            attempts: u32::try_from(tried.len()).unwrap_or(u32::MAX),
            tried,
            retry_after: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Stilts<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            route: Option<&'a str>,
            attempts: &'a [TriedAttempt],
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<()>,
            code: &'a str,
            stilts: Stilts<'a>,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        serde_json::to_vec(&Outer {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: None,
                code: self.code,
                stilts: Stilts {
                    route: self.route.as_deref(),
                    attempts: &self.tried,
                },
            },
        })
        .unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error"}}"#.to_vec()
        })
    }
}

impl ApiError {
    /// What the official SDKs should do with this error (`x-should-retry`, which both read
    /// before their own rules): `false` where the gateway already failed over and a client retry
    /// would only repeat it (and a deadline would be waited out again), `true` where waiting for
    /// `Retry-After` helps, `None` to leave it to the SDK (it never retries other 4xx).
    pub fn should_retry(&self) -> Option<bool> {
        match self.code {
            "upstream_failed"
            | "deadline_exceeded"
            | "retry_budget_exhausted"
            | "spend_limit"
            | "stream_interrupted" => Some(false),
            "rate_limit_exceeded" | "no_healthy_provider" => Some(true),
            _ => None,
        }
    }

    /// The headers every dialect's error answer carries: `Retry-After`, `x-should-retry` and
    /// `X-Stilts-Attempts`.
    pub(crate) fn tag_headers(&self, headers: &mut axum::http::HeaderMap) {
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        if let Some(retry) = self.should_retry() {
            headers.insert(
                "x-should-retry",
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        headers.insert("x-stilts-attempts", HeaderValue::from(self.attempts));
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.tag_headers(headers);
        response
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    fn tried(class: &'static str) -> Vec<TriedAttempt> {
        vec![TriedAttempt {
            provider: "p".into(),
            class,
            status: Some(503),
            message: "down".into(),
        }]
    }

    #[test]
    fn every_give_up_reason_has_a_fitting_status_and_code() {
        use GiveUpReason as R;
        let cases = [
            (R::Deadline, tried("timeout"), 504, "deadline_exceeded"),
            (
                R::AllRateLimited,
                tried("rate_limited"),
                429,
                "rate_limit_exceeded",
            ),
            (
                R::AttemptsExhausted,
                tried("server"),
                502,
                "upstream_failed",
            ),
            (
                R::NoHealthyProvider,
                tried("server"),
                502,
                "upstream_failed",
            ),
            (R::NoHealthyProvider, Vec::new(), 503, "no_healthy_provider"),
            (
                R::BudgetExhausted,
                tried("server"),
                503,
                "retry_budget_exhausted",
            ),
            (R::SpendLimit, Vec::new(), 503, "spend_limit"),
            (
                R::ContextTooLong,
                Vec::new(),
                400,
                "context_length_exceeded",
            ),
            (
                R::NotRetryable(ErrorClass::ContextLength),
                tried("context_length"),
                400,
                "context_length_exceeded",
            ),
            (
                R::NotRetryable(ErrorClass::ContentFilter),
                tried("content_filter"),
                400,
                "content_filter",
            ),
            (
                R::NotRetryable(ErrorClass::BadRequest),
                tried("bad_request"),
                400,
                "invalid_request",
            ),
        ];
        for (reason, tried, status, code) in cases {
            let give_up = GiveUp {
                reason,
                last_error: None,
            };
            let e = ApiError::from_give_up(
                "chat",
                give_up,
                tried,
                DeadlineSource::Route(Duration::from_secs(30)),
            );
            assert_eq!(e.status.as_u16(), status, "{reason:?}");
            assert_eq!(e.code, code, "{reason:?}");
            let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert_eq!(body["error"]["stilts"]["route"], "chat");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("tried:")
            );
        }
    }
}
