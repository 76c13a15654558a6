//! The data that crosses the boundary besides the canonical chat format: deployment config, the upstream
//! HTTP request, error classification, plugin description, stream steps. All are serde types sent as JSON.
//!
//! API keys are secrets: [`ApiKey`] and [`HttpRequest`] never print a key in `Debug` output, and no
//! error message built by this crate contains one. Plugins must not put keys in messages either.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{FinishReason, Usage};

/// A secret credential. `Debug` prints `ApiKey(***)`; there is no `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, to put in a header. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// One provider deployment as the plugin needs it: where to send, which model, which key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentConfig {
    /// Base URL including the API version path, e.g. `https://api.openai.com/v1`,
    /// `http://localhost:11434/v1`, `https://api.anthropic.com/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta`. Empty means the plugin's default.
    #[serde(default)]
    pub base_url: String,
    /// The upstream model name; replaces the request's `model`.
    pub model: String,
    /// The credential; the plugin decides where it goes (a Bearer token, `x-api-key`, `x-goog-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKey>,
    /// Headers added to every request (after the plugin's own, so they can override them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_headers: Vec<(String, String)>,
    /// Plugin-specific options (documented by each plugin), e.g. `default_max_tokens`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub options: Map<String, Value>,
}

impl DeploymentConfig {
    /// The base URL without a trailing slash, or `default` when none is configured.
    pub fn base_url_or<'a>(&'a self, default: &'a str) -> &'a str {
        let b = if self.base_url.is_empty() {
            default
        } else {
            self.base_url.as_str()
        };
        b.trim_end_matches('/')
    }
}

/// Header names whose values are secrets (compared case-insensitively); redacted in `Debug`.
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "proxy-authorization",
];

/// The upstream HTTP request a plugin built. The host sends it as is.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `POST` for every built-in plugin.
    pub method: String,
    /// An absolute URL (built-in plugins join the deployment's `base_url`), or a path starting with `/`
    /// that the host resolves against the deployment's base URL.
    pub url: String,
    /// Headers in order, including the credential.
    pub headers: Vec<(String, String)>,
    /// The body (JSON for every built-in plugin).
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let secret = SECRET_HEADERS.iter().any(|s| n.eq_ignore_ascii_case(s));
                (n.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field("headers", &headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

/// Hides a `key=` query parameter (Gemini accepts keys in the URL; built-in plugins never put them there).
fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) if query.split('&').any(|p| p.starts_with("key=")) => {
            let q: Vec<&str> = query
                .split('&')
                .map(|p| if p.starts_with("key=") { "key=***" } else { p })
                .collect();
            format!("{base}?{}", q.join("&"))
        }
        _ => url.to_owned(),
    }
}

/// The request fields sent as the first frame of a `build_request` answer (the body is the second frame).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestHead {
    /// HTTP method.
    pub method: String,
    /// URL or path.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
}

/// What kind of failure an upstream answer is: the one class of stilts (the `stilts-class` leaf
/// crate, shared with the routing engine). Its numbers and names are part of the ABI.
pub use stilts_class::ErrorClass;

/// A classified upstream error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// What kind of failure it is.
    pub class: ErrorClass,
    /// How long the upstream asked us to wait, from `retry-after-ms`, `retry-after` or the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The vendor's own code (`rate_limit_exceeded`, `overloaded_error`, `RESOURCE_EXHAUSTED`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// The vendor's message, for the client and the log (never contains the key).
    #[serde(default)]
    pub message: String,
}

impl ErrorInfo {
    /// An error with a class and a message only.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        ErrorInfo {
            class,
            retry_after_ms: None,
            provider_code: None,
            message: message.into(),
        }
    }
}

/// What a plugin can do, declared in [`PluginInfo`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `stream_open`/`stream_event` are implemented.
    pub streaming: bool,
    /// The vendor continues a partial assistant message placed last in the request (exact continuation of
    /// a cut stream).
    pub prefill_continuation: bool,
    /// Known context windows in tokens, by upstream model name (may be empty).
    #[serde(default)]
    pub context_windows: BTreeMap<String, u32>,
    /// `build_embeddings_request` / `parse_embeddings_response` are implemented (ABI 1.1).
    #[serde(default)]
    pub embeddings: bool,
}

/// A plugin's self-description, returned by `describe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Short name, e.g. `openai`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// Version of stilts-plugin the plugin was built with.
    pub sdk_version: String,
    /// ABI major the plugin was built for (also in the table header).
    pub abi_major: u16,
    /// ABI minor the plugin was built for.
    pub abi_minor: u16,
    /// Whether the plugin was built with `panic = "unwind"`; with `abort` a plugin panic would kill the
    /// host, so the host refuses such plugins.
    pub panic_unwind: bool,
    /// What it can do.
    pub capabilities: Capabilities,
}

/// A parsed successful response.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedResponse {
    /// Canonical `chat.completion` JSON.
    pub body: Vec<u8>,
    /// Token usage, when the upstream reported it.
    pub usage: Option<Usage>,
    /// The upstream model that answered.
    pub model: Option<String>,
    /// The first choice's finish reason.
    pub finish_reason: Option<FinishReason>,
}

/// The first frame of a `parse_response` answer (the canonical body is the second).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ResponseMeta {
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Upstream model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Finish reason of the first choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
}

/// How a stream ended (or is known to have ended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum StreamEnd {
    /// The finish reason arrived (a terminal marker such as `[DONE]` is optional).
    Clean,
    /// The stream stopped before its finish reason, or an event was not valid data. The text so far may be
    /// incomplete: the host must not present it as a complete answer.
    Cut {
        /// What went wrong, for the log.
        reason: String,
    },
    /// The upstream sent an error event mid-stream.
    Error {
        /// The classified error.
        error: ErrorInfo,
    },
}

/// The result of feeding one event to a stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamStep {
    /// Canonical `chat.completion.chunk` JSON objects to forward, in order (often zero or one).
    pub chunks: Vec<Vec<u8>>,
    /// Usage as known so far (cumulative), if this event reported it. A step that emits the
    /// usage-only chunk (`choices: []`) must set this too: the host bills and meters from this
    /// field, not from the chunk (which it passes on only to clients that asked for usage).
    pub usage: Option<Usage>,
    /// Set when this event ended the stream; further events are ignored.
    pub done: Option<StreamEnd>,
}

/// The first frame of a `stream_event` answer (the chunks follow, one frame each).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepMeta {
    /// Usage so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Set when the stream ended at this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<StreamEnd>,
}

/// Helpers for reading HTTP headers and retry hints, shared by plugins.
pub mod http {
    /// The longest retry hint the helpers return: 10^9 s (about 31 years) in milliseconds. A longer
    /// hint is no hint at all (the core caps every cool-down far below it).
    pub const MAX_RETRY_AFTER_MS: u64 = 1_000_000_000_000;

    /// The first value of header `name` (case-insensitive).
    pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// The wait the server asked for: `retry-after-ms` (milliseconds), else `retry-after` in seconds
    /// (integer or decimal). HTTP-date values are ignored (a translator has no clock to compare with).
    pub fn retry_after_ms(headers: &[(String, String)]) -> Option<u64> {
        if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
            // NaN and infinities fail the range check too.
            if (0.0..=MAX_RETRY_AFTER_MS as f64).contains(&ms) {
                return Some(ms.round() as u64);
            }
        }
        header(headers, "retry-after").and_then(parse_seconds_ms)
    }

    /// Parses `"27"`, `"1.5"`, `"27s"`, `"3.700s"` into milliseconds (at most
    /// [`MAX_RETRY_AFTER_MS`]).
    pub fn parse_seconds_ms(v: &str) -> Option<u64> {
        let v = v.trim();
        let v = v.strip_suffix('s').unwrap_or(v);
        let secs: f64 = v.parse().ok()?;
        if (0.0..=(MAX_RETRY_AFTER_MS / 1000) as f64).contains(&secs) {
            Some((secs * 1000.0).round() as u64)
        } else {
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn secrets_never_in_debug() {
        let cfg = DeploymentConfig {
            model: "m".into(),
            api_key: Some(ApiKey::new("sk-SECRET")),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("SECRET"));
        let req = HttpRequest {
            method: "POST".into(),
            url: "https://x/v1?alt=sse&key=SECRET".into(),
            headers: vec![
                ("Authorization".into(), "Bearer SECRET".into()),
                ("x-goog-api-key".into(), "SECRET".into()),
            ],
            body: b"{}".to_vec(),
        };
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
        assert!(dbg.contains("alt=sse"));
    }

    #[test]
    fn class_names_and_numbers() {
        let names: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "rate_limited",
                "server",
                "timeout",
                "context_length",
                "content_filter",
                "auth",
                "quota",
                "bad_request"
            ]
        );
        for c in ErrorClass::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert_eq!(ErrorClass::Quota as u32, 7);
    }

    #[test]
    fn retry_after_parsing() {
        let h = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert_eq!(http::retry_after_ms(&h("Retry-After", "2")), Some(2000));
        assert_eq!(http::retry_after_ms(&h("retry-after-ms", "150")), Some(150));
        assert_eq!(
            http::retry_after_ms(&h("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(http::parse_seconds_ms("3.700s"), Some(3700));
        assert_eq!(http::parse_seconds_ms("-1"), None);
    }

    /// Found by fuzzing (crates/plugin/tests/fuzz.rs): `retry-after-ms` had no upper bound, so
    /// `9223372036854775807` or `1e300` came back as a hint of up to u64::MAX ms, while
    /// `retry-after` in seconds was bounded.
    #[test]
    fn regression_retry_after_ms_is_bounded_like_retry_after() {
        let h = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        for v in [
            "9223372036854775807",
            "1e300",
            "1000000000001",
            "inf",
            "NaN",
            "-1",
        ] {
            assert_eq!(http::retry_after_ms(&h("retry-after-ms", v)), None, "{v}");
        }
        assert_eq!(
            http::retry_after_ms(&h("retry-after-ms", "1000000000000")),
            Some(http::MAX_RETRY_AFTER_MS)
        );
        assert_eq!(
            http::parse_seconds_ms("1000000000"),
            Some(http::MAX_RETRY_AFTER_MS)
        );
        assert_eq!(http::parse_seconds_ms("1000000000.001"), None);
        // An unusable `retry-after-ms` falls back to `retry-after`.
        let both = vec![
            ("retry-after-ms".to_owned(), "1e300".to_owned()),
            ("retry-after".to_owned(), "7".to_owned()),
        ];
        assert_eq!(http::retry_after_ms(&both), Some(7000));
    }
}
