//! The call wrappers: a request built, a response parsed, an error classified (chat and
//! embeddings), and a stream fed event by event, each answer checked against the contract.

use super::*;

impl Plugin {
    /// Translates a canonical request (OpenAI Chat Completions JSON bytes) for deployment `cfg`.
    pub fn build_request(
        &self,
        canonical_request: &[u8],
        cfg: &DeploymentConfig,
    ) -> Result<HttpRequest, CallError> {
        let cfg = serde_json::to_vec(cfg)
            .map_err(|e| CallError::BadInput(format!("cannot encode config: {e}")))?;
        self.build_request_with_config_json(canonical_request, &cfg)
    }

    /// [`Plugin::build_request`] from a JSON value.
    pub fn build_request_value(
        &self,
        canonical_request: &serde_json::Value,
        cfg: &DeploymentConfig,
    ) -> Result<HttpRequest, CallError> {
        let req = serde_json::to_vec(canonical_request)
            .map_err(|e| CallError::BadInput(e.to_string()))?;
        self.build_request(&req, cfg)
    }

    /// [`Plugin::build_request`] with the config already encoded as JSON (encode it once per deployment with
    /// [`encode_config`] to save a few hundred nanoseconds per call).
    pub fn build_request_with_config_json(
        &self,
        canonical_request: &[u8],
        cfg_json: &[u8],
    ) -> Result<HttpRequest, CallError> {
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: both slices outlive the call; `out` is writable; the fn pointer is from a checked table of a
        // library that is never unloaded.
        let status = unsafe {
            (self.inner.vt.build_request)(
                ByteSlice::new(canonical_request),
                ByteSlice::new(cfg_json),
                &mut out,
            )
        };
        self.built(status, out, "build_request", began)
    }

    /// The request a build function returned: frames `[request meta JSON, body]`.
    fn built(
        &self,
        status: Status,
        out: OwnedBytes,
        what: &'static str,
        began: std::time::Instant,
    ) -> Result<HttpRequest, CallError> {
        let out = self.finish(status, out, what, began)?;
        let Some(parts) = frames::split(out.bytes()).filter(|p| p.len() == 2) else {
            return Err(self.contract(format!("{what} must return 2 frames")));
        };
        let meta: RequestHead =
            self.meta(parts[0], crate::meta::decode_request_head, "request meta")?;
        Ok(HttpRequest {
            method: meta.method,
            url: meta.url,
            headers: meta.headers,
            body: parts[1].to_vec(),
        })
    }

    /// A metadata frame in the form agreed at load: `binary` decodes the binary form, JSON is
    /// read by serde. An unreadable frame is a contract fault.
    fn meta<M: serde::de::DeserializeOwned>(
        &self,
        frame: &[u8],
        binary: fn(&[u8]) -> Result<M, String>,
        what: &str,
    ) -> Result<M, CallError> {
        if self.inner.binary_meta {
            binary(frame)
        } else {
            serde_json::from_slice(frame).map_err(|e| e.to_string())
        }
        .map_err(|e| self.contract(format!("invalid {what}: {e}")))
    }

    /// The response a parse function returned: frames `[response meta JSON, body]`.
    fn parsed(
        &self,
        status: Status,
        out: OwnedBytes,
        what: &'static str,
        began: std::time::Instant,
    ) -> Result<ParsedResponse, CallError> {
        let out = self.finish(status, out, what, began)?;
        let Some(parts) = frames::split(out.bytes()).filter(|p| p.len() == 2) else {
            return Err(self.contract(format!("{what} must return 2 frames")));
        };
        let meta: ResponseMeta =
            self.meta(parts[0], crate::meta::decode_response_meta, "response meta")?;
        if std::str::from_utf8(parts[1]).is_err() {
            return Err(self.contract(format!("{what} returned a body that is not UTF-8")));
        }
        Ok(ParsedResponse {
            body: parts[1].to_vec(),
            usage: meta.usage,
            model: meta.model,
            finish_reason: meta.finish_reason,
        })
    }

    /// Whether the plugin serves embeddings: built for ABI 1.1 or later and declaring
    /// `Capabilities::embeddings`.
    pub fn serves_embeddings(&self) -> bool {
        self.inner.vt.build_embeddings_request.is_some()
            && self.inner.vt.parse_embeddings_response.is_some()
            && self.inner.info.capabilities.embeddings
    }

    fn no_embeddings(&self) -> CallError {
        CallError::BadInput(format!(
            "the {} plugin serves no embeddings (it declares none, or was built for ABI 1.{} before they came in 1.1)",
            self.inner.info.name, self.inner.abi_minor
        ))
    }

    /// Translates a canonical embeddings request (OpenAI's `POST /v1/embeddings` JSON) for the
    /// deployment whose config is `cfg_json` (see [`encode_config`]).
    pub fn build_embeddings_request_with_config_json(
        &self,
        canonical_request: &[u8],
        cfg_json: &[u8],
    ) -> Result<HttpRequest, CallError> {
        let Some(build) = self
            .inner
            .vt
            .build_embeddings_request
            .filter(|_| self.serves_embeddings())
        else {
            return Err(self.no_embeddings());
        };
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: as in build_request_with_config_json; the pointer came from a table whose size
        // covers it.
        let status = unsafe {
            build(
                ByteSlice::new(canonical_request),
                ByteSlice::new(cfg_json),
                &mut out,
            )
        };
        self.built(status, out, "build_embeddings_request", began)
    }

    /// Parses a whole successful embeddings response into canonical JSON plus its usage.
    pub fn parse_embeddings_response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ParsedResponse, CallError> {
        self.parse_embeddings_response_framed(status, &encode_headers(headers)?, body)
    }

    /// [`Plugin::parse_embeddings_response`] with the headers already encoded as frames (see
    /// [`Plugin::parse_response_framed`]).
    pub fn parse_embeddings_response_framed(
        &self,
        status: u16,
        headers: &[u8],
        body: &[u8],
    ) -> Result<ParsedResponse, CallError> {
        let Some(parse) = self
            .inner
            .vt
            .parse_embeddings_response
            .filter(|_| self.serves_embeddings())
        else {
            return Err(self.no_embeddings());
        };
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: as in parse_response; the pointer came from a table whose size covers it.
        let st = unsafe {
            parse(
                status,
                ByteSlice::new(headers),
                ByteSlice::new(body),
                &mut out,
            )
        };
        let parsed = self.parsed(st, out, "parse_embeddings_response", began)?;
        Ok(ParsedResponse {
            finish_reason: None,
            ..parsed
        })
    }

    /// Parses a whole successful response into canonical `chat.completion` JSON plus its usage.
    pub fn parse_response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ParsedResponse, CallError> {
        self.parse_response_framed(status, &encode_headers(headers)?, body)
    }

    /// [`Plugin::parse_response`] with the headers already encoded as frames `[name, value…]`
    /// ([`frames::push`] each, straight from the HTTP client's own header map: no list of
    /// owned strings in between).
    pub fn parse_response_framed(
        &self,
        status: u16,
        headers: &[u8],
        body: &[u8],
    ) -> Result<ParsedResponse, CallError> {
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: as in build_request_with_config_json.
        let st = unsafe {
            (self.inner.vt.parse_response)(
                status,
                ByteSlice::new(headers),
                ByteSlice::new(body),
                &mut out,
            )
        };
        self.parsed(st, out, "parse_response", began)
    }

    /// Classifies an error response (any status and body).
    pub fn classify_error(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ErrorInfo, CallError> {
        self.classify_error_framed(status, &encode_headers(headers)?, body)
    }

    /// [`Plugin::classify_error`] with the headers already encoded as frames (see
    /// [`Plugin::parse_response_framed`]).
    pub fn classify_error_framed(
        &self,
        status: u16,
        headers: &[u8],
        body: &[u8],
    ) -> Result<ErrorInfo, CallError> {
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: as in build_request_with_config_json.
        let st = unsafe {
            (self.inner.vt.classify_error)(
                status,
                ByteSlice::new(headers),
                ByteSlice::new(body),
                &mut out,
            )
        };
        let out = self.finish(st, out, "classify_error", began)?;
        serde_json::from_slice(out.bytes())
            .map_err(|e| self.contract(format!("invalid error info: {e}")))
    }

    /// Starts parsing a stream.
    pub fn stream_open(&self) -> Result<StreamState, CallError> {
        let mut state: *mut c_void = std::ptr::null_mut();
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: both out-pointers are writable for the call.
        let st = unsafe { (self.inner.vt.stream_open)(&mut state, &mut out) };
        // A state the plugin made is owned (and freed by its Drop) whatever the call's verdict.
        let state = (!state.is_null()).then(|| StreamState {
            ptr: state,
            owner: Arc::clone(&self.inner),
        });
        self.finish(st, out, "stream_open", began)?;
        state.ok_or_else(|| self.contract("stream_open returned no state".to_owned()))
    }

    fn check_owner(&self, state: &StreamState) -> Result<(), CallError> {
        if Arc::ptr_eq(&self.inner, &state.owner) {
            Ok(())
        } else {
            Err(self.contract("stream state belongs to another plugin".to_owned()))
        }
    }

    /// Feeds one SSE event (`event`: its `event:` name if any; `data`: its data lines joined with `\n`).
    pub fn stream_event(
        &self,
        state: &mut StreamState,
        event: Option<&str>,
        data: &[u8],
    ) -> Result<StreamStep, CallError> {
        self.check_owner(state)?;
        let mut out = OwnedBytes::EMPTY;
        let event = event.unwrap_or("").as_bytes();
        let began = std::time::Instant::now();
        // SAFETY: the state is live and owned by this plugin (checked above), used by one thread at a time
        // (`&mut`); the slices outlive the call.
        let st = unsafe {
            (self.inner.vt.stream_event)(
                state.ptr,
                ByteSlice::new(event),
                ByteSlice::new(data),
                &mut out,
            )
        };
        let out = self.finish(st, out, "stream_event", began)?;
        let Some(parts) = frames::split(out.bytes()).filter(|p| !p.is_empty()) else {
            return Err(self.contract("stream_event must return at least 1 frame".to_owned()));
        };
        let meta: StepMeta = self.meta(parts[0], crate::meta::decode_step_meta, "step meta")?;
        if parts[1..].iter().any(|c| std::str::from_utf8(c).is_err()) {
            return Err(self.contract("stream_event returned a chunk that is not UTF-8".to_owned()));
        }
        Ok(StreamStep {
            chunks: parts[1..].iter().map(|c| c.to_vec()).collect(),
            usage: meta.usage,
            done: meta.done,
        })
    }

    /// The connection closed: reports whether the stream had ended cleanly, and frees the state.
    pub fn stream_close(&self, state: StreamState) -> Result<StreamEnd, CallError> {
        self.check_owner(&state)?;
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: as in stream_event; `state` is consumed, and freed by its Drop after this call.
        let st = unsafe { (self.inner.vt.stream_close)(state.ptr, &mut out) };
        let out = self.finish(st, out, "stream_close", began)?;
        serde_json::from_slice(out.bytes())
            .map_err(|e| self.contract(format!("invalid stream end: {e}")))
    }
}
