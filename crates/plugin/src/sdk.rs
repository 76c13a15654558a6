//! The plugin author's side: implement [`Translator`] (safe Rust), then export it with
//! [`export_plugin!`](crate::export_plugin). The macro builds the C table, catches every panic, encodes
//! and decodes the JSON payloads and owns the stream handles, so a plugin crate contains no `unsafe`.
//!
//! A plugin is a translator, not a client: it never opens sockets, spawns threads, sleeps or keeps global
//! state. The host does all I/O, including SSE framing (it hands each event's name and data to
//! [`Translator::stream_event`]).
//!
//! Test a plugin through its rlib: call the trait methods directly, and drive streams with
//! [`StreamDriver`], which applies exactly the rules the exported table applies (events after the end are
//! ignored, a closed stream reports how it ended).

use crate::canonical::{ChatChunk, ChatRequest, ChatResponse};
use crate::types::{
    Capabilities, DeploymentConfig, ErrorInfo, HttpRequest, ParsedResponse, StreamEnd, StreamStep,
};

/// Why a plugin call produced no result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginError {
    /// The input cannot be translated (invalid JSON, a request the vendor cannot express).
    BadInput(String),
    /// The upstream body is an error even though the status said success (e.g. a blocked prompt).
    Upstream(ErrorInfo),
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginError::BadInput(m) => write!(f, "bad input: {m}"),
            PluginError::Upstream(e) => write!(f, "upstream error ({}): {}", e.class, e.message),
        }
    }
}

impl std::error::Error for PluginError {}

/// A vendor dialect. Implement this, then `stilts_plugin::export_plugin!(MyPlugin);`.
///
/// All methods take `&self` and may be called concurrently; keep per-stream data in [`Self::Stream`].
/// Methods must not panic on any input (a panic is caught and reported as a failed call, but the stream
/// is then cut).
pub trait Translator: Send + Sync + 'static {
    /// Per-stream parser state (use `()` when streaming is not supported).
    type Stream: Send + 'static;

    /// Short plugin name, e.g. `"openai"`.
    fn name(&self) -> &str;
    /// The plugin's version, usually `env!("CARGO_PKG_VERSION")`.
    fn version(&self) -> &str;
    /// What the plugin supports.
    fn capabilities(&self) -> Capabilities;

    /// Builds the upstream request for `req` (canonical) on deployment `cfg`. Puts the API key where the
    /// vendor expects it and appends `cfg.extra_headers`.
    fn build_request(
        &self,
        req: &ChatRequest,
        cfg: &DeploymentConfig,
    ) -> Result<HttpRequest, PluginError>;

    /// Parses a whole successful (2xx) response body into a canonical `chat.completion`.
    fn parse_response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ParsedResponse, PluginError>;

    /// Classifies an error response (any status, any body, possibly not JSON). Never fails.
    fn classify_error(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> ErrorInfo;

    /// Creates the state of a new stream.
    fn stream_open(&self) -> Self::Stream;

    /// Parses one SSE event (`event` is its `event:` name, if any; `data` its joined `data:` lines).
    /// Ignore unknown event types; report data that cannot be parsed as `done: Some(StreamEnd::Cut{..})`,
    /// never drop it silently.
    fn stream_event(
        &self,
        state: &mut Self::Stream,
        event: Option<&str>,
        data: &[u8],
    ) -> StreamStep;

    /// The connection closed (no more events): say whether the stream had ended cleanly.
    fn stream_close(&self, state: &mut Self::Stream) -> StreamEnd;

    /// Builds the upstream request for an embeddings request (canonical: OpenAI's
    /// `POST /v1/embeddings` body, parsed as JSON) on deployment `cfg`. The default: this provider
    /// serves no embeddings (declare `Capabilities::embeddings` when overriding it).
    fn build_embeddings_request(
        &self,
        req: &serde_json::Value,
        cfg: &DeploymentConfig,
    ) -> Result<HttpRequest, PluginError> {
        let _ = (req, cfg);
        Err(PluginError::BadInput(format!(
            "the {} plugin serves no embeddings",
            self.name()
        )))
    }

    /// Parses a whole successful embeddings response into canonical JSON (OpenAI's
    /// `{"object":"list","data":[{"object":"embedding","index","embedding":[floats]}],"model","usage"}`),
    /// with the usage. The default: no embeddings.
    fn parse_embeddings_response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ParsedResponse, PluginError> {
        let _ = (status, headers, body);
        Err(PluginError::BadInput(format!(
            "the {} plugin serves no embeddings",
            self.name()
        )))
    }
}

impl ParsedResponse {
    /// Serialises a canonical response and lifts out its usage, model and first finish reason.
    pub fn from_canonical(resp: &ChatResponse) -> Result<Self, PluginError> {
        let body = serde_json::to_vec(resp).map_err(|e| PluginError::BadInput(e.to_string()))?;
        Ok(ParsedResponse {
            body,
            usage: resp.usage.clone(),
            model: Some(resp.model.clone()),
            finish_reason: resp.choices.first().and_then(|c| c.finish_reason),
        })
    }
}

impl StreamStep {
    /// A step that only ends the stream.
    pub fn end(end: StreamEnd) -> Self {
        StreamStep {
            chunks: Vec::new(),
            usage: None,
            done: Some(end),
        }
    }

    /// A step that ends the stream as cut, with a reason for the log.
    pub fn cut(reason: impl Into<String>) -> Self {
        Self::end(StreamEnd::Cut {
            reason: reason.into(),
        })
    }

    /// Appends a canonical chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        match serde_json::to_vec(chunk) {
            Ok(bytes) => self.chunks.push(bytes),
            // Serialising these plain types cannot fail; if it ever did, the text must not vanish silently.
            Err(e) => {
                self.done = Some(StreamEnd::Cut {
                    reason: format!("cannot encode chunk: {e}"),
                })
            }
        }
    }
}

/// Drives one stream of a [`Translator`] with the same rules as the exported C table: once an event
/// ended the stream, later events produce nothing and report the same end; `close` reports the recorded
/// end, or asks the translator.
pub struct StreamDriver<'t, T: Translator> {
    translator: &'t T,
    state: StreamSlot<T::Stream>,
}

impl<'t, T: Translator> StreamDriver<'t, T> {
    /// Opens a stream.
    pub fn new(translator: &'t T) -> Self {
        StreamDriver {
            translator,
            state: StreamSlot::new(translator.stream_open()),
        }
    }

    /// Feeds one event.
    pub fn event(&mut self, event: Option<&str>, data: &[u8]) -> StreamStep {
        self.state.event(self.translator, event, data)
    }

    /// Reports how the stream ended.
    pub fn close(&mut self) -> StreamEnd {
        self.state.close(self.translator)
    }
}

/// A stream's state plus the end already reported, shared by [`StreamDriver`] and the C glue.
pub(crate) struct StreamSlot<S> {
    inner: S,
    done: Option<StreamEnd>,
}

impl<S> StreamSlot<S> {
    pub(crate) fn new(inner: S) -> Self {
        StreamSlot { inner, done: None }
    }

    pub(crate) fn event<T: Translator<Stream = S>>(
        &mut self,
        t: &T,
        event: Option<&str>,
        data: &[u8],
    ) -> StreamStep {
        if let Some(done) = &self.done {
            return StreamStep::end(done.clone());
        }
        let step = t.stream_event(&mut self.inner, event, data);
        if let Some(done) = &step.done {
            self.done = Some(done.clone());
        }
        step
    }

    pub(crate) fn close<T: Translator<Stream = S>>(&mut self, t: &T) -> StreamEnd {
        if let Some(done) = &self.done {
            return done.clone();
        }
        let end = t.stream_close(&mut self.inner);
        self.done = Some(end.clone());
        end
    }

    pub(crate) fn mark(&mut self, end: StreamEnd) {
        self.done = Some(end);
    }
}

/// Exports a [`Translator`] as a stilts plugin: defines the `stilts_plugin_entry_v1` symbol and its table.
///
/// `export_plugin!(MyPlugin)` builds the instance with `Default`; `export_plugin!(MyPlugin, MyPlugin::new())`
/// with an expression (evaluated once, on first use). Use it once per cdylib crate.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        $crate::export_plugin!($ty, <$ty as ::core::default::Default>::default());
    };
    ($ty:ty, $init:expr) => {
        const _: () = {
            impl $crate::sdk::__ffi::Exported for $ty {
                const PANIC_UNWIND: bool = cfg!(panic = "unwind");
                fn instance() -> &'static Self {
                    static INSTANCE: ::std::sync::OnceLock<$ty> = ::std::sync::OnceLock::new();
                    INSTANCE.get_or_init(|| $init)
                }
            }

            static TABLE: $crate::abi::PluginTableV1 = $crate::sdk::__ffi::table::<$ty>();

            /// The stilts plugin entry point (ABI major 1): returns the plugin's static table.
            #[allow(unsafe_code)] // reason: `no_mangle` is what makes the symbol visible to dlsym.
            #[unsafe(no_mangle)]
            pub extern "C" fn stilts_plugin_entry_v1() -> *const $crate::abi::PluginTableV1 {
                &TABLE
            }
        };
    };
}

/// The C glue instantiated by [`export_plugin!`](crate::export_plugin). Not a stable API.
#[doc(hidden)]
#[allow(unsafe_code)] // reason: the FFI side of the SDK; every unsafe block carries a SAFETY comment.
pub mod __ffi {
    use std::ffi::c_void;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{HttpRequest, ParsedResponse, PluginError, StreamSlot, Translator};
    use crate::abi::{self, ByteSlice, OwnedBytes, PluginTableV1, Status, frames};
    use crate::canonical::ChatRequest;
    use crate::meta;
    use crate::types::{
        DeploymentConfig, PluginInfo, RequestHead, ResponseMeta, StepMeta, StreamEnd, StreamStep,
    };

    /// Implemented by `export_plugin!` for the exported type.
    pub trait Exported: Translator + Sized {
        /// `cfg!(panic = "unwind")` in the plugin crate.
        const PANIC_UNWIND: bool;
        /// The plugin's single instance.
        fn instance() -> &'static Self;
    }

    /// The table for `T`.
    pub const fn table<T: Exported>() -> PluginTableV1 {
        PluginTableV1 {
            magic: abi::MAGIC,
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
            size: std::mem::size_of::<PluginTableV1>() as u32,
            free_bytes,
            describe: describe::<T>,
            build_request: build_request::<T>,
            parse_response: parse_response::<T>,
            classify_error: classify_error::<T>,
            stream_open: stream_open::<T>,
            stream_event: stream_event::<T>,
            stream_close: stream_close::<T>,
            stream_free: stream_free::<T>,
            build_embeddings_request: build_embeddings_request::<T>,
            parse_embeddings_response: parse_embeddings_response::<T>,
            meta_format,
        }
    }

    /// Whether the host asked for binary metadata (ABI 1.2, [`meta_format`]). One per plugin
    /// library: every host in a process is the same build.
    static BINARY_META: AtomicBool = AtomicBool::new(false);

    fn binary_meta() -> bool {
        BINARY_META.load(Ordering::Relaxed)
    }

    /// See [`PluginTableV1::meta_format`].
    pub unsafe extern "C" fn meta_format(offered: u32) -> u32 {
        let binary = offered >= abi::META_BINARY;
        BINARY_META.store(binary, Ordering::Relaxed);
        if binary {
            abi::META_BINARY
        } else {
            abi::META_JSON
        }
    }

    type Outcome = (Status, Vec<u8>);

    fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&str>() {
            format!("plugin panicked: {s}")
        } else if let Some(s) = payload.downcast_ref::<String>() {
            format!("plugin panicked: {s}")
        } else {
            "plugin panicked".to_owned()
        }
    }

    /// Runs `f` with panics caught and writes its bytes to `out`.
    fn guard(out: *mut OwnedBytes, f: impl FnOnce() -> Outcome) -> Status {
        if out.is_null() {
            return Status::INTERNAL;
        }
        let (status, bytes) = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(payload) => {
                let msg = panic_message(&*payload);
                // A payload whose Drop panics must not unwind out of an extern "C" fn.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                (Status::PANICKED, msg.into_bytes())
            }
        };
        // SAFETY: `out` is non-null and, by the ABI contract, points to a writable OwnedBytes owned by the
        // caller for the duration of this call. `write` does not drop the previous (empty) value.
        unsafe { out.write(OwnedBytes::from_vec(bytes)) };
        status
    }

    fn json<T: serde::Serialize>(v: &T) -> Outcome {
        match serde_json::to_vec(v) {
            Ok(b) => (Status::OK, b),
            Err(e) => (
                Status::INTERNAL,
                format!("cannot encode output: {e}").into_bytes(),
            ),
        }
    }

    fn plugin_error(e: PluginError) -> Outcome {
        match e {
            PluginError::BadInput(m) => (Status::BAD_INPUT, m.into_bytes()),
            PluginError::Upstream(info) => match serde_json::to_vec(&info) {
                Ok(b) => (Status::UPSTREAM_ERROR, b),
                Err(e) => (Status::INTERNAL, e.to_string().into_bytes()),
            },
        }
    }

    fn frames_of(parts: &[&[u8]]) -> Outcome {
        let out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
        pushed(out, parts)
    }

    /// `out` with each of `parts` appended as a frame.
    fn pushed<P: AsRef<[u8]>>(mut out: Vec<u8>, parts: &[P]) -> Outcome {
        for p in parts {
            if frames::push(&mut out, p.as_ref()).is_none() {
                return (Status::INTERNAL, b"output part larger than 4 GiB".to_vec());
            }
        }
        (Status::OK, out)
    }

    /// Frames `[meta, body…]`, the meta in binary and written in place by `meta`.
    fn binary_frames(
        meta: impl FnOnce(&mut Vec<u8>) -> Option<()>,
        meta_len: usize,
        parts: &[Vec<u8>],
    ) -> Outcome {
        let mut out =
            Vec::with_capacity(meta_len + parts.iter().map(|p| p.len() + 4).sum::<usize>());
        if meta(&mut out).is_none() {
            return (Status::INTERNAL, b"cannot encode the meta".to_vec());
        }
        pushed(out, parts)
    }

    fn encode_step(step: &StreamStep) -> Outcome {
        if binary_meta() {
            return binary_frames(
                |out| meta::push_step_meta(out, step.usage.as_ref(), step.done.as_ref()),
                64,
                &step.chunks,
            );
        }
        let meta = StepMeta {
            usage: step.usage.clone(),
            done: step.done.clone(),
        };
        let meta = match serde_json::to_vec(&meta) {
            Ok(m) => m,
            Err(e) => return (Status::INTERNAL, e.to_string().into_bytes()),
        };
        let mut parts: Vec<&[u8]> = Vec::with_capacity(step.chunks.len() + 1);
        parts.push(&meta);
        parts.extend(step.chunks.iter().map(Vec::as_slice));
        frames_of(&parts)
    }

    /// Frees a buffer this library returned.
    pub unsafe extern "C" fn free_bytes(buf: OwnedBytes) {
        let _ = catch_unwind(AssertUnwindSafe(move || {
            // SAFETY: by the ABI contract the host passes back, once and unchanged, a buffer that this
            // library produced with OwnedBytes::from_vec.
            unsafe { buf.free() }
        }));
    }

    /// See [`PluginTableV1::describe`].
    pub unsafe extern "C" fn describe<T: Exported>(out: *mut OwnedBytes) -> Status {
        guard(out, || {
            let t = T::instance();
            let info = PluginInfo {
                name: t.name().to_owned(),
                version: t.version().to_owned(),
                sdk_version: env!("CARGO_PKG_VERSION").to_owned(),
                abi_major: abi::ABI_MAJOR,
                abi_minor: abi::ABI_MINOR,
                panic_unwind: T::PANIC_UNWIND,
                capabilities: t.capabilities(),
            };
            json(&info)
        })
    }

    /// See [`PluginTableV1::build_request`].
    pub unsafe extern "C" fn build_request<T: Exported>(
        req: ByteSlice,
        cfg: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status {
        guard(out, || {
            // SAFETY: the host lends both slices for the duration of this call (ABI contract).
            let (req, cfg) = unsafe { (req.as_slice(), cfg.as_slice()) };
            let req = match ChatRequest::from_json(req) {
                Ok(r) => r,
                Err(e) => {
                    return (
                        Status::BAD_INPUT,
                        format!("invalid canonical request: {e}").into_bytes(),
                    );
                }
            };
            match config_of(cfg) {
                Ok(cfg) => request_outcome(T::instance().build_request(&req, &cfg)),
                Err(refused) => refused,
            }
        })
    }

    /// The deployment config, or the BAD_INPUT answer. The message names the position only: the
    /// config holds the API key.
    fn config_of(cfg: &[u8]) -> Result<std::rc::Rc<DeploymentConfig>, Outcome> {
        decoded_config(cfg).map_err(|e| {
            let msg = format!(
                "invalid deployment config at line {} column {}",
                e.line(),
                e.column()
            );
            (Status::BAD_INPUT, msg.into_bytes())
        })
    }

    /// Frames `[meta JSON, body]`.
    fn with_meta<M: serde::Serialize>(meta: &M, body: &[u8]) -> Outcome {
        match serde_json::to_vec(meta) {
            Ok(m) => frames_of(&[&m, body]),
            Err(e) => (Status::INTERNAL, e.to_string().into_bytes()),
        }
    }

    /// A built request as frames `[request meta, body]`, or the plugin's error.
    fn request_outcome(built: Result<HttpRequest, PluginError>) -> Outcome {
        match built {
            Ok(http) if binary_meta() => binary_frames(
                |out| meta::push_request_head(out, &http.method, &http.url, &http.headers),
                http.url.len()
                    + http
                        .headers
                        .iter()
                        .map(|(n, v)| n.len() + v.len() + 8)
                        .sum::<usize>()
                    + 16,
                std::slice::from_ref(&http.body),
            ),
            Ok(http) => with_meta(
                &RequestHead {
                    method: http.method,
                    url: http.url,
                    headers: http.headers,
                },
                &http.body,
            ),
            Err(e) => plugin_error(e),
        }
    }

    /// A parsed response as frames `[response meta, body]`, or the plugin's error.
    fn parsed_outcome(parsed: Result<ParsedResponse, PluginError>) -> Outcome {
        match parsed {
            Ok(p) if binary_meta() => binary_frames(
                |out| {
                    meta::push_response_meta(
                        out,
                        p.usage.as_ref(),
                        p.model.as_deref(),
                        p.finish_reason,
                    )
                },
                64 + p.model.as_ref().map_or(0, String::len),
                std::slice::from_ref(&p.body),
            ),
            Ok(p) => with_meta(
                &ResponseMeta {
                    usage: p.usage,
                    model: p.model,
                    finish_reason: p.finish_reason,
                },
                &p.body,
            ),
            Err(e) => plugin_error(e),
        }
    }

    thread_local! {
        /// The last deployment config this thread decoded, with its JSON: the host passes the same
        /// bytes for every request of a deployment, so decoding them once per thread and
        /// deployment switch is enough. Compared byte for byte, so a changed config is decoded
        /// afresh.
        static LAST_CONFIG: std::cell::RefCell<Option<(Vec<u8>, std::rc::Rc<DeploymentConfig>)>> =
            const { std::cell::RefCell::new(None) };
    }

    /// `cfg` decoded, from this thread's one-entry cache when the bytes are the same as last time.
    fn decoded_config(cfg: &[u8]) -> Result<std::rc::Rc<DeploymentConfig>, serde_json::Error> {
        let cached = LAST_CONFIG.with(|last| match &*last.borrow() {
            Some((bytes, decoded)) if bytes.as_slice() == cfg => Some(std::rc::Rc::clone(decoded)),
            _ => None,
        });
        if let Some(decoded) = cached {
            return Ok(decoded);
        }
        let decoded = std::rc::Rc::new(serde_json::from_slice::<DeploymentConfig>(cfg)?);
        LAST_CONFIG.with(|last| {
            *last.borrow_mut() = Some((cfg.to_vec(), std::rc::Rc::clone(&decoded)));
        });
        Ok(decoded)
    }

    /// See [`PluginTableV1::build_embeddings_request`].
    pub unsafe extern "C" fn build_embeddings_request<T: Exported>(
        req: ByteSlice,
        cfg: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status {
        guard(out, || {
            // SAFETY: the host lends both slices for the duration of this call (ABI contract).
            let (req, cfg) = unsafe { (req.as_slice(), cfg.as_slice()) };
            let req: serde_json::Value = match std::str::from_utf8(req)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(t).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    return (
                        Status::BAD_INPUT,
                        format!("invalid embeddings request: {e}").into_bytes(),
                    );
                }
            };
            match config_of(cfg) {
                Ok(cfg) => request_outcome(T::instance().build_embeddings_request(&req, &cfg)),
                Err(refused) => refused,
            }
        })
    }

    /// See [`PluginTableV1::parse_embeddings_response`].
    pub unsafe extern "C" fn parse_embeddings_response<T: Exported>(
        status: u16,
        headers: ByteSlice,
        body: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status {
        guard(out, || {
            // SAFETY: the host lends both slices for the duration of this call (ABI contract).
            let (headers, body) = unsafe { (headers.as_slice(), body.as_slice()) };
            let Some(headers) = frames::decode_headers(headers) else {
                return (Status::BAD_INPUT, b"malformed header frames".to_vec());
            };
            parsed_outcome(
                T::instance()
                    .parse_embeddings_response(status, &headers, body)
                    .map(|p| ParsedResponse {
                        finish_reason: None,
                        ..p
                    }),
            )
        })
    }

    /// See [`PluginTableV1::parse_response`].
    pub unsafe extern "C" fn parse_response<T: Exported>(
        status: u16,
        headers: ByteSlice,
        body: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status {
        guard(out, || {
            // SAFETY: the host lends both slices for the duration of this call (ABI contract).
            let (headers, body) = unsafe { (headers.as_slice(), body.as_slice()) };
            let Some(headers) = frames::decode_headers(headers) else {
                return (Status::BAD_INPUT, b"malformed header frames".to_vec());
            };
            parsed_outcome(T::instance().parse_response(status, &headers, body))
        })
    }

    /// See [`PluginTableV1::classify_error`].
    pub unsafe extern "C" fn classify_error<T: Exported>(
        status: u16,
        headers: ByteSlice,
        body: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status {
        guard(out, || {
            // SAFETY: the host lends both slices for the duration of this call (ABI contract).
            let (headers, body) = unsafe { (headers.as_slice(), body.as_slice()) };
            let Some(headers) = frames::decode_headers(headers) else {
                return (Status::BAD_INPUT, b"malformed header frames".to_vec());
            };
            json(&T::instance().classify_error(status, &headers, body))
        })
    }

    /// See [`PluginTableV1::stream_open`].
    pub unsafe extern "C" fn stream_open<T: Exported>(
        state: *mut *mut c_void,
        out: *mut OwnedBytes,
    ) -> Status {
        if state.is_null() {
            return Status::INTERNAL;
        }
        guard(out, || {
            let slot = Box::new(StreamSlot::new(T::instance().stream_open()));
            // SAFETY: `state` is non-null and points to a writable pointer slot (ABI contract).
            unsafe { state.write(Box::into_raw(slot).cast::<c_void>()) };
            (Status::OK, Vec::new())
        })
    }

    /// See [`PluginTableV1::stream_event`].
    pub unsafe extern "C" fn stream_event<T: Exported>(
        state: *mut c_void,
        event: ByteSlice,
        data: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status {
        if state.is_null() {
            return Status::INTERNAL;
        }
        let slot = state.cast::<StreamSlot<T::Stream>>();
        let status = guard(out, || {
            // SAFETY: the host lends both slices for this call; `state` came from stream_open::<T> of this
            // library, is not freed yet, and is used by one thread at a time (ABI contract).
            let (event, data, slot) = unsafe { (event.as_slice(), data.as_slice(), &mut *slot) };
            let name = if event.is_empty() {
                None
            } else {
                Some(String::from_utf8_lossy(event))
            };
            let step = slot.event(T::instance(), name.as_deref(), data);
            encode_step(&step)
        });
        if status == Status::PANICKED {
            // SAFETY: as above; the closure's borrow has ended.
            let slot = unsafe { &mut *slot };
            slot.mark(StreamEnd::Cut {
                reason: "the plugin panicked while parsing an event".to_owned(),
            });
        }
        status
    }

    /// See [`PluginTableV1::stream_close`].
    pub unsafe extern "C" fn stream_close<T: Exported>(
        state: *mut c_void,
        out: *mut OwnedBytes,
    ) -> Status {
        if state.is_null() {
            return Status::INTERNAL;
        }
        guard(out, || {
            // SAFETY: `state` came from stream_open::<T> of this library and is not freed (ABI contract).
            let slot = unsafe { &mut *state.cast::<StreamSlot<T::Stream>>() };
            json(&slot.close(T::instance()))
        })
    }

    /// See [`PluginTableV1::stream_free`].
    pub unsafe extern "C" fn stream_free<T: Exported>(state: *mut c_void) {
        if state.is_null() {
            return;
        }
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `state` came from Box::into_raw in stream_open::<T> and is freed exactly once.
            drop(unsafe { Box::from_raw(state.cast::<StreamSlot<T::Stream>>()) });
        }));
    }
}
