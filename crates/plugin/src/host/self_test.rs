//! [`Plugin::self_test`]: every entry point of a freshly loaded plugin exercised on canned input,
//! so a broken plugin is refused at load (and by `stilts plugin check`) rather than failing requests.

use super::*;

impl Plugin {
    /// Exercises every entry point on canned input and checks the answers are well formed: a request is
    /// built (valid JSON body, the test key placed somewhere), 429 and 500 classify as rate_limited and
    /// server, garbage is refused without a crash, a stream closed before any event is cut, and a
    /// canonical stream's final usage is reported (the stream usage rule, see `stream_usage_check`).
    pub fn self_test(&self) -> Result<SelfTestReport, SelfTestError> {
        let fail = |check: &'static str, detail: String| SelfTestError {
            path: self.inner.path.clone(),
            check,
            detail,
        };
        let mut checks = Vec::new();

        let cfg = DeploymentConfig {
            base_url: String::new(),
            model: "stilts-self-test-model".to_owned(),
            api_key: Some(ApiKey::new(SELF_TEST_KEY)),
            extra_headers: vec![("x-stilts-self-test".to_owned(), "1".to_owned())],
            options: Default::default(),
        };
        for (label, req) in [
            ("build_request", SELF_TEST_REQUEST),
            ("build_request (stream)", SELF_TEST_STREAM_REQUEST),
        ] {
            let http = self
                .build_request(req.as_bytes(), &cfg)
                .map_err(|e| fail("build_request", e.to_string()))?;
            if http.method.is_empty() || http.url.is_empty() {
                return Err(fail("build_request", "empty method or url".to_owned()));
            }
            if serde_json::from_slice::<serde_json::Value>(&http.body).is_err() {
                return Err(fail("build_request", "the body is not JSON".to_owned()));
            }
            let key_placed = http.headers.iter().any(|(_, v)| v.contains(SELF_TEST_KEY))
                || http.url.contains(SELF_TEST_KEY);
            if !key_placed {
                return Err(fail(
                    "build_request",
                    "the API key was not placed in a header".to_owned(),
                ));
            }
            if !http
                .headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("x-stilts-self-test") && v == "1")
            {
                return Err(fail(
                    "build_request",
                    "extra_headers were not added".to_owned(),
                ));
            }
            checks.push(format!("{label}: {} {}", http.method, http.url));
        }

        let limited = self
            .classify_error(429, &[("retry-after".to_owned(), "2".to_owned())], b"{}")
            .map_err(|e| fail("classify_error", e.to_string()))?;
        if limited.class != ErrorClass::RateLimited {
            return Err(fail(
                "classify_error",
                format!("429 classified as {}", limited.class),
            ));
        }
        let server = self
            .classify_error(500, &[], b"<html>oops</html>")
            .map_err(|e| fail("classify_error", e.to_string()))?;
        if server.class != ErrorClass::Server {
            return Err(fail(
                "classify_error",
                format!("500 classified as {}", server.class),
            ));
        }
        checks.push(format!(
            "classify_error: 429 -> {}, 500 -> {}",
            limited.class, server.class
        ));

        match self.parse_response(200, &[], b"\xff not json") {
            Err(CallError::BadInput(_) | CallError::Upstream(_)) => {
                checks.push("parse_response: garbage refused".to_owned())
            }
            other => {
                return Err(fail(
                    "parse_response",
                    format!("garbage body gave {other:?}"),
                ));
            }
        }

        if self.inner.info.capabilities.streaming {
            let st = self
                .stream_open()
                .map_err(|e| fail("stream_open", e.to_string()))?;
            match self.stream_close(st) {
                Ok(StreamEnd::Cut { .. }) => {}
                other => {
                    return Err(fail(
                        "stream_close",
                        format!("an empty stream must be cut, got {other:?}"),
                    ));
                }
            }
            let mut st = self
                .stream_open()
                .map_err(|e| fail("stream_open", e.to_string()))?;
            match self.stream_event(&mut st, None, b"\xff{not json") {
                Ok(StreamStep {
                    done: Some(StreamEnd::Cut { .. } | StreamEnd::Error { .. }),
                    ..
                }) => {}
                other => {
                    return Err(fail(
                        "stream_event",
                        format!("invalid data must cut the stream, got {other:?}"),
                    ));
                }
            }
            checks.push("stream: empty stream is cut, invalid data cuts".to_owned());
            checks.push(
                self.stream_usage_check()
                    .map_err(|detail| fail("stream usage", detail))?,
            );
        }
        Ok(SelfTestReport { checks })
    }

    /// The stream usage rule (docs/plugins.md, "Streams"): feeds a canonical (OpenAI-dialect)
    /// stream that ends with a usage-only chunk and checks that a step emitting a usage-only chunk
    /// (`choices: []`) reports usage, the chunk's own, and that a plugin that passed the stream's
    /// text through reported its usage at all. The gateway counts streamed tokens and cost from
    /// the reported usage only. A plugin for another dialect emits nothing for this stream, and
    /// the check says it could not tell. Returns the report line, or what broke the rule.
    fn stream_usage_check(&self) -> Result<String, String> {
        let expected: crate::canonical::Usage = serde_json::from_str(SELF_TEST_USAGE)
            .map_err(|e| format!("the self-test's own usage is invalid: {e}"))?;
        let mut st = self.stream_open().map_err(|e| e.to_string())?;
        let mut text = String::new();
        let mut reported = None;
        for (i, data) in self_test_usage_stream().iter().enumerate() {
            let step = self
                .stream_event(&mut st, None, data.as_bytes())
                .map_err(|e| format!("event {i}: {e}"))?;
            for chunk in &step.chunks {
                let Ok(chunk) = serde_json::from_slice::<serde_json::Value>(chunk) else {
                    return Err(format!("event {i}: a chunk is not JSON"));
                };
                if let Some(t) = chunk
                    .pointer("/choices/0/delta/content")
                    .and_then(|t| t.as_str())
                {
                    text.push_str(t);
                }
                let usage_only = chunk
                    .get("choices")
                    .and_then(|c| c.as_array())
                    .is_some_and(Vec::is_empty);
                if !usage_only {
                    continue;
                }
                let Some(usage) = &step.usage else {
                    return Err(format!(
                        "event {i} emitted the usage-only chunk (`choices: []`) without reporting \
                         usage in its step, so the gateway never counts this plugin's streamed \
                         tokens or cost; set `StreamStep::usage` in the step that emits the chunk \
                         (the usage rule in docs/plugins.md, Streams)"
                    ));
                };
                let in_chunk = chunk.get("usage").and_then(|u| {
                    serde_json::from_value::<crate::canonical::Usage>(u.clone()).ok()
                });
                if in_chunk.as_ref().is_some_and(|c| c != usage) {
                    return Err(format!(
                        "event {i} emitted a usage-only chunk whose usage differs from the usage \
                         its step reported ({usage:?}); report the chunk's usage"
                    ));
                }
            }
            if step.usage.is_some() {
                reported = step.usage;
            }
            if step.done.is_some() {
                break;
            }
        }
        drop(st);
        if text != SELF_TEST_STREAM_TEXT {
            return Ok(
                "stream usage: not checked (the plugin did not pass a canonical stream's text \
                 through: another dialect)"
                    .to_owned(),
            );
        }
        match reported {
            Some(u) if u == expected => Ok(format!(
                "stream usage: reported ({} in, {} out)",
                u.prompt_tokens, u.completion_tokens
            )),
            Some(u) => Err(format!(
                "the stream's usage was {expected:?} but the plugin reported {u:?}; report the \
                 usage the upstream sent"
            )),
            None => Err(
                "the plugin passed a canonical stream's text through but never reported the \
                 usage of its final usage-only chunk, so the gateway never counts this plugin's \
                 streamed tokens or cost; set `StreamStep::usage` when an event carries usage \
                 (the usage rule in docs/plugins.md, Streams)"
                    .to_owned(),
            ),
        }
    }
}

/// The key used by [`Plugin::self_test`] (not a real credential).
pub const SELF_TEST_KEY: &str = "stilts-self-test-key";
const SELF_TEST_REQUEST: &str = r#"{"model":"route","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hi."}],"max_tokens":16,"temperature":0}"#;
const SELF_TEST_STREAM_REQUEST: &str = r#"{"model":"route","messages":[{"role":"user","content":"Say hi."}],"max_tokens":16,"stream":true}"#;

const SELF_TEST_STREAM_TEXT: &str = "Hi there.";
const SELF_TEST_USAGE: &str = r#"{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}"#;

/// A canonical stream as an OpenAI-dialect upstream sends it when asked for usage: text, the
/// finish reason, the usage-only chunk, `[DONE]`.
fn self_test_usage_stream() -> [String; 5] {
    let head = r#""id":"chatcmpl-stilts-self-test","object":"chat.completion.chunk","created":0,"model":"stilts-self-test-model""#;
    [
        format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"Hi "}},"finish_reason":null}}]}}"#
        ),
        format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"there."}},"finish_reason":null}}]}}"#
        ),
        format!(r#"{{{head},"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}"#),
        format!(r#"{{{head},"choices":[],"usage":{SELF_TEST_USAGE}}}"#),
        "[DONE]".to_owned(),
    ]
}

/// What [`Plugin::self_test`] checked.
#[derive(Debug, Clone)]
pub struct SelfTestReport {
    /// One line per check passed.
    pub checks: Vec<String>,
}

/// A failed self-test check.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: self-test `{check}` failed: {detail}")]
pub struct SelfTestError {
    /// The plugin file.
    pub path: PathBuf,
    /// Which check.
    pub check: &'static str,
    /// What went wrong.
    pub detail: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn the_self_test_stream_is_canonical_and_ends_with_the_usage_only_chunk() {
        let events = self_test_usage_stream();
        let mut text = String::new();
        for data in &events[..4] {
            let chunk: crate::canonical::ChatChunk = serde_json::from_str(data).unwrap();
            if let Some(c) = chunk.choices.first() {
                text.push_str(c.delta.content.as_deref().unwrap_or(""));
            }
        }
        assert_eq!(text, SELF_TEST_STREAM_TEXT);
        let last: serde_json::Value = serde_json::from_str(&events[3]).unwrap();
        assert_eq!(last["choices"], serde_json::json!([]));
        assert_eq!(last["usage"]["total_tokens"], 12);
    }
}
