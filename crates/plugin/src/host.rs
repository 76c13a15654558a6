//! The host's side: load a plugin file once, check it, and call it through safe methods.
//!
//! [`Plugin::load`] opens the shared library (`RTLD_NOW | RTLD_LOCAL` on Unix), resolves the one
//! versioned entry symbol, checks the table header (magic, ABI major, size) before reading anything else,
//! then calls `describe` and validates the answer. Every refusal is a [`LoadError`] that names the file
//! and says how to fix it. A loaded library is never unloaded: plugins contain Rust std and its
//! thread-local destructors, so `dlclose` is unsound in practice; the library stays mapped for the life of
//! the process, and so does any file that was opened and refused.
//!
//! Calls: [`Plugin::build_request`], [`Plugin::parse_response`], [`Plugin::classify_error`], and the
//! stream trio [`Plugin::stream_open`], [`Plugin::stream_event`], [`Plugin::stream_close`]. Each returns a
//! [`CallError`] instead of crashing when the plugin fails or panics. A [`Plugin`] is cheap to clone and
//! may be used from many threads; a [`StreamState`] is used by one task at a time.
//!
//! A broken plugin is contained, not trusted: a panic is caught inside the plugin and comes back as
//! [`CallError::Panicked`]; output that breaks the contract (unknown status, malformed frames, a
//! body or chunk that is not UTF-8, more than [`MAX_OUTPUT_BYTES`]) is [`CallError::Contract`]; a
//! call that took longer than [`SLOW_CALL`] is [`CallError::TooSlow`] and its result is discarded,
//! so the caller fails the attempt over instead of serving a plugin that stalls its threads. Each is
//! counted per plugin ([`Plugin::faults`]) for the gateway's `stilts_plugin_faults_total`.
//!
//! Keys are secrets: [`DeploymentConfig`] and [`HttpRequest`] redact them in `Debug`, and no error here
//! contains the config.
#![allow(unsafe_code)] // reason: this module calls into the loaded library; each unsafe block has a SAFETY comment.

mod self_test;

pub use self_test::{SELF_TEST_KEY, SelfTestError, SelfTestReport};

use std::ffi::c_void;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::abi::{self, ByteSlice, EntryFn, OwnedBytes, PluginTableV1, Status, frames};
use crate::canonical::FinishReason;
use crate::types::{
    ApiKey, DeploymentConfig, ErrorClass, ErrorInfo, HttpRequest, ParsedResponse, PluginInfo,
    RequestHead, ResponseMeta, StepMeta, StreamEnd, StreamStep,
};

/// Why a plugin file was refused. Every message names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The path does not exist.
    #[error("plugin file {path} does not exist: check the plugin path in the configuration")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The path is not a regular file (a FIFO, a device, a directory): opening it could block
    /// the loader, and every thread that needs the loader's lock, indefinitely.
    #[error(
        "plugin path {path} is a {kind}, not a regular file: point it at the plugin's .so/.dylib/.dll file"
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The dynamic loader refused the file.
    #[error(
        "{path} is not a loadable shared library ({reason}): a plugin is the .so/.dylib/.dll that cargo builds \
         from a crate with crate-type = [\"cdylib\"], for this platform"
    )]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// A shared library without the entry symbol.
    #[error(
        "{path} is a shared library but not a stilts plugin for ABI major {}: it has no `{}` symbol{hint} \
         (export one with stilts_plugin::export_plugin!)",
        abi::ABI_MAJOR,
        abi::ENTRY_SYMBOL_NAME
    )]
    MissingEntrySymbol {
        /// The file.
        path: PathBuf,
        /// Extra detail, e.g. the ABI major the file was built for.
        hint: String,
    },
    /// The entry function returned null or a misaligned pointer.
    #[error(
        "{path}: the plugin's entry function returned no usable table; the plugin is broken, rebuild it"
    )]
    NoTable {
        /// The file.
        path: PathBuf,
    },
    /// The table does not start with the magic value.
    #[error(
        "{path}: the plugin table has the wrong magic {found:#018x} (expected {expected:#018x}); it was not built with stilts-plugin"
    )]
    WrongMagic {
        /// The file.
        path: PathBuf,
        /// What the file has.
        found: u64,
        /// What the host expects.
        expected: u64,
    },
    /// Built for another incompatible ABI version.
    #[error(
        "{path}: the plugin was built for ABI major {found}, this host speaks ABI major {expected}; rebuild the plugin against a stilts-plugin release with ABI major {expected}"
    )]
    WrongAbiMajor {
        /// The file.
        path: PathBuf,
        /// The plugin's ABI major.
        found: u16,
        /// The host's ABI major.
        expected: u16,
    },
    /// The table is smaller than the fields this host needs.
    #[error(
        "{path}: the plugin table is {size} bytes, smaller than the {needed} bytes of ABI {}.{}; the plugin is corrupt or built against a broken stilts-plugin, rebuild it",
        abi::ABI_MAJOR,
        abi::ABI_MINOR
    )]
    TableTooSmall {
        /// The file.
        path: PathBuf,
        /// The table's declared size.
        size: u32,
        /// The size this host needs.
        needed: usize,
    },
    /// `describe` failed or panicked.
    #[error("{path}: the plugin's describe call failed ({reason}); fix the plugin")]
    DescribeFailed {
        /// The file.
        path: PathBuf,
        /// The failure.
        reason: String,
    },
    /// `describe` answered something unusable.
    #[error("{path}: the plugin's description is invalid ({reason}); fix the plugin")]
    InvalidDescription {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Built with `panic = "abort"`, so a plugin panic would kill the host.
    #[error(
        "{path}: the plugin was built with panic = \"abort\", so any panic in it would kill the host; build it with the default panic = \"unwind\""
    )]
    PanicAbort {
        /// The file.
        path: PathBuf,
    },
}

/// Why a call into a loaded plugin produced no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The plugin could not use the input (the message is the plugin's).
    #[error("the plugin refused the input: {0}")]
    BadInput(String),
    /// The upstream body was an error in disguise (e.g. HTTP 200 with an error object).
    #[error("upstream error ({}): {}", .0.class, .0.message)]
    Upstream(ErrorInfo),
    /// The plugin panicked; the panic was caught inside the plugin.
    #[error("the plugin panicked: {0}")]
    Panicked(String),
    /// The plugin broke the contract (unknown status, malformed output).
    #[error("the plugin broke the ABI contract: {0}")]
    Contract(String),
    /// The call took longer than [`SLOW_CALL`]; its result was discarded.
    #[error("the plugin's {call} took {took_ms} ms, over the {} ms a call may take; its result was discarded", SLOW_CALL.as_millis())]
    TooSlow {
        /// The entry point.
        call: &'static str,
        /// How long it took.
        took_ms: u64,
    },
}

/// A plugin call slower than this is a fault: translations take microseconds, so a call this
/// slow is a plugin stuck on a lock, a sleep or a runaway loop, holding one of the gateway's
/// threads. Its result is discarded ([`CallError::TooSlow`]).
pub const SLOW_CALL: std::time::Duration = std::time::Duration::from_millis(250);

/// The most bytes one call may return: far above any answer (a 1M-token answer is a few MiB), far
/// below what would exhaust memory if every request got it.
pub const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// Calls into one plugin that failed, by kind, since it was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PluginFaults {
    /// Calls that panicked (caught inside the plugin).
    pub panics: u64,
    /// Calls whose output broke the contract.
    pub contract_violations: u64,
    /// Calls slower than [`SLOW_CALL`].
    pub slow_calls: u64,
}

#[derive(Debug, Default)]
struct FaultCounters {
    panics: AtomicU64,
    contract_violations: AtomicU64,
    slow_calls: AtomicU64,
}

/// The function pointers of a checked table, copied out once.
struct Vtable {
    free_bytes: unsafe extern "C" fn(OwnedBytes),
    build_request: unsafe extern "C" fn(ByteSlice, ByteSlice, *mut OwnedBytes) -> Status,
    parse_response: unsafe extern "C" fn(u16, ByteSlice, ByteSlice, *mut OwnedBytes) -> Status,
    classify_error: unsafe extern "C" fn(u16, ByteSlice, ByteSlice, *mut OwnedBytes) -> Status,
    stream_open: unsafe extern "C" fn(*mut *mut c_void, *mut OwnedBytes) -> Status,
    stream_event:
        unsafe extern "C" fn(*mut c_void, ByteSlice, ByteSlice, *mut OwnedBytes) -> Status,
    stream_close: unsafe extern "C" fn(*mut c_void, *mut OwnedBytes) -> Status,
    stream_free: unsafe extern "C" fn(*mut c_void),
    /// ABI 1.1; `None` for a plugin built for 1.0 (its table ends before these fields).
    build_embeddings_request:
        Option<unsafe extern "C" fn(ByteSlice, ByteSlice, *mut OwnedBytes) -> Status>,
    parse_embeddings_response:
        Option<unsafe extern "C" fn(u16, ByteSlice, ByteSlice, *mut OwnedBytes) -> Status>,
}

struct Inner {
    path: PathBuf,
    vt: Vtable,
    info: PluginInfo,
    abi_minor: u16,
    faults: FaultCounters,
}

/// A loaded, checked plugin. Cheap to clone; `Send + Sync`; the library stays loaded for the process
/// lifetime.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.inner.path)
            .field("name", &self.inner.info.name)
            .field("version", &self.inner.info.version)
            .finish()
    }
}

/// A plugin output buffer, returned to the plugin's allocator on drop.
struct OutBuf {
    buf: OwnedBytes,
    free: unsafe extern "C" fn(OwnedBytes),
}

impl OutBuf {
    fn bytes(&self) -> &[u8] {
        // SAFETY: the plugin wrote ptr/len of a live allocation it owns until we call free (ABI contract).
        unsafe {
            ByteSlice {
                ptr: self.buf.ptr,
                len: self.buf.len,
            }
            .as_slice()
        }
    }
}

impl Drop for OutBuf {
    fn drop(&mut self) {
        let buf = std::mem::replace(&mut self.buf, OwnedBytes::EMPTY);
        if !buf.ptr.is_null() {
            // SAFETY: the buffer came from this plugin and goes back to its free_bytes exactly once.
            unsafe { (self.free)(buf) }
        }
    }
}

#[cfg(unix)]
fn open_library(path: &Path) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers. Plugins are trusted code (same as the host binary),
    // loaded once at startup; a refused file is never called into beyond its entry symbol.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(libloading::Library::from)
}

#[cfg(not(unix))]
fn open_library(path: &Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: as on Unix: plugins are trusted code loaded once at startup.
    unsafe { libloading::Library::new(path) }
}

/// What a file type is, in words.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO (named pipe)";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "device";
        }
    }
    if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

impl Plugin {
    /// Loads and checks the plugin at `path`. The library stays loaded for the process lifetime.
    ///
    /// Load plugins from one thread at startup (`dlerror` is not thread-safe on every platform).
    ///
    /// A bare file name (`libacme_plugin.so`) means that file in the current directory, as it
    /// does to every other command: the dynamic loader would otherwise search the system's
    /// library path for it and never look in the current directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin, LoadError> {
        let path = loader_path(path.as_ref());
        // `metadata` follows symlinks and never opens the file, so a FIFO cannot block it.
        let kind = match std::fs::metadata(&path) {
            Err(_) => return Err(LoadError::NotFound { path }),
            Ok(m) => file_kind(&m.file_type()),
        };
        if kind != "regular file" {
            return Err(LoadError::NotAFile { path, kind });
        }
        let lib = match open_library(&path) {
            Ok(lib) => lib,
            Err(e) => {
                return Err(LoadError::NotALibrary {
                    path,
                    reason: error_chain(&e),
                });
            }
        };
        // Never dlclose: see the module docs. Forget first, so every early return below leaks it too.
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));

        // SAFETY: ENTRY_SYMBOL's type is EntryFn by the ABI contract; the fn pointer is copied out and the
        // library is never unloaded, so it stays valid.
        let entry: Option<EntryFn> = unsafe { lib.get::<EntryFn>(abi::ENTRY_SYMBOL) }
            .ok()
            .map(|s| *s);
        let Some(entry) = entry else {
            let hint = other_major_hint(lib);
            return Err(LoadError::MissingEntrySymbol { path, hint });
        };
        // SAFETY: calling the plugin's entry function, which by contract takes no arguments and returns a
        // pointer to a 'static table (or null). It cannot unwind (extern "C").
        let table = unsafe { entry() };
        if table.is_null() || !table.cast::<u64>().is_aligned() {
            return Err(LoadError::NoTable { path });
        }
        // SAFETY: every table version starts with this 16-byte header (magic u64, major u16, minor u16,
        // size u32); the pointer is non-null, aligned, and points into the library's static data.
        let (magic, major, minor, size) = unsafe {
            let t = table.cast::<u8>();
            (
                t.cast::<u64>().read(),
                t.add(8).cast::<u16>().read(),
                t.add(10).cast::<u16>().read(),
                t.add(12).cast::<u32>().read(),
            )
        };
        if magic != abi::MAGIC {
            return Err(LoadError::WrongMagic {
                path,
                found: magic,
                expected: abi::MAGIC,
            });
        }
        if major != abi::ABI_MAJOR {
            return Err(LoadError::WrongAbiMajor {
                path,
                found: major,
                expected: abi::ABI_MAJOR,
            });
        }
        let needed = abi::TABLE_V1_0_SIZE;
        if (size as usize) < needed {
            return Err(LoadError::TableTooSmall { path, size, needed });
        }
        // SAFETY: the header says the table is ABI 1 and at least as large as the ABI 1.0 table, so
        // every 1.0 field exists. Fields are read one by one through raw pointers (never a reference
        // to the whole struct, which may be larger than the plugin's table): a field appended by a
        // later minor is read only when the declared size covers it.
        let vt = unsafe {
            let covers = size as usize >= std::mem::size_of::<PluginTableV1>();
            Vtable {
                free_bytes: std::ptr::addr_of!((*table).free_bytes).read(),
                build_request: std::ptr::addr_of!((*table).build_request).read(),
                parse_response: std::ptr::addr_of!((*table).parse_response).read(),
                classify_error: std::ptr::addr_of!((*table).classify_error).read(),
                stream_open: std::ptr::addr_of!((*table).stream_open).read(),
                stream_event: std::ptr::addr_of!((*table).stream_event).read(),
                stream_close: std::ptr::addr_of!((*table).stream_close).read(),
                stream_free: std::ptr::addr_of!((*table).stream_free).read(),
                build_embeddings_request: covers
                    .then(|| std::ptr::addr_of!((*table).build_embeddings_request).read()),
                parse_embeddings_response: covers
                    .then(|| std::ptr::addr_of!((*table).parse_embeddings_response).read()),
            }
        };
        // SAFETY: a 1.0 field of a table whose size covers it (checked above).
        let describe = unsafe { std::ptr::addr_of!((*table).describe).read() };

        let mut out = OwnedBytes::EMPTY;
        // SAFETY: `describe` takes a writable out-pointer, valid for the call.
        let status = unsafe { describe(&mut out) };
        let out = OutBuf {
            buf: out,
            free: vt.free_bytes,
        };
        if status != Status::OK {
            let reason = format!(
                "{}: {}",
                status_name(status),
                String::from_utf8_lossy(out.bytes())
            );
            return Err(LoadError::DescribeFailed { path, reason });
        }
        let info: PluginInfo = match serde_json::from_slice(out.bytes()) {
            Ok(i) => i,
            Err(e) => {
                return Err(LoadError::InvalidDescription {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        drop(out);
        if let Err(reason) = validate_info(&info, major) {
            return Err(LoadError::InvalidDescription { path, reason });
        }
        if !info.panic_unwind {
            return Err(LoadError::PanicAbort { path });
        }
        Ok(Plugin {
            inner: Arc::new(Inner {
                path,
                vt,
                info,
                abi_minor: minor,
                faults: FaultCounters::default(),
            }),
        })
    }

    /// The file this plugin was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Name, version, ABI version and capabilities, as checked at load.
    pub fn describe(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// The ABI minor version of the plugin's table (from the header).
    pub fn abi_minor(&self) -> u16 {
        self.inner.abi_minor
    }

    /// How many calls into this plugin panicked so far (caught). A non-zero count means a broken plugin.
    pub fn panic_count(&self) -> u64 {
        self.faults().panics
    }

    /// The calls into this plugin that failed so far, by kind.
    pub fn faults(&self) -> PluginFaults {
        let f = &self.inner.faults;
        PluginFaults {
            panics: f.panics.load(Ordering::Relaxed),
            contract_violations: f.contract_violations.load(Ordering::Relaxed),
            slow_calls: f.slow_calls.load(Ordering::Relaxed),
        }
    }

    /// A contract violation, counted.
    fn contract(&self, message: String) -> CallError {
        self.inner
            .faults
            .contract_violations
            .fetch_add(1, Ordering::Relaxed);
        CallError::Contract(message)
    }

    /// The output of call `call`, begun at `began`, that returned `status`: owned (freed by the
    /// plugin when dropped), or the error it means.
    fn finish(
        &self,
        status: Status,
        out: OwnedBytes,
        call: &'static str,
        began: std::time::Instant,
    ) -> Result<OutBuf, CallError> {
        let took = began.elapsed();
        let out = OutBuf {
            buf: out,
            free: self.inner.vt.free_bytes,
        };
        if out.bytes().len() > MAX_OUTPUT_BYTES {
            return Err(self.contract(format!(
                "{call} returned {} bytes, over the {MAX_OUTPUT_BYTES} one call may return",
                out.bytes().len()
            )));
        }
        if took > SLOW_CALL {
            self.inner.faults.slow_calls.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::TooSlow {
                call,
                took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            });
        }
        let text = || String::from_utf8_lossy(out.bytes()).into_owned();
        match status {
            Status::OK => Ok(out),
            Status::BAD_INPUT => Err(CallError::BadInput(text())),
            Status::UPSTREAM_ERROR => match serde_json::from_slice::<ErrorInfo>(out.bytes()) {
                Ok(info) => Err(CallError::Upstream(info)),
                Err(e) => Err(self.contract(format!("invalid upstream error info: {e}"))),
            },
            Status::PANICKED => {
                self.inner.faults.panics.fetch_add(1, Ordering::Relaxed);
                Err(CallError::Panicked(text()))
            }
            Status::INTERNAL => Err(self.contract(format!("internal error: {}", text()))),
            Status(other) => Err(self.contract(format!("unknown status {other}: {}", text()))),
        }
    }

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
        let meta: RequestHead = serde_json::from_slice(parts[0])
            .map_err(|e| self.contract(format!("invalid request meta: {e}")))?;
        Ok(HttpRequest {
            method: meta.method,
            url: meta.url,
            headers: meta.headers,
            body: parts[1].to_vec(),
        })
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
        let meta: ResponseMeta = serde_json::from_slice(parts[0])
            .map_err(|e| self.contract(format!("invalid response meta: {e}")))?;
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
        let Some(parse) = self
            .inner
            .vt
            .parse_embeddings_response
            .filter(|_| self.serves_embeddings())
        else {
            return Err(self.no_embeddings());
        };
        let headers = encode_headers(headers)?;
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: as in parse_response; the pointer came from a table whose size covers it.
        let st = unsafe {
            parse(
                status,
                ByteSlice::new(&headers),
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
        let headers = encode_headers(headers)?;
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: as in build_request_with_config_json.
        let st = unsafe {
            (self.inner.vt.parse_response)(
                status,
                ByteSlice::new(&headers),
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
        let headers = encode_headers(headers)?;
        let mut out = OwnedBytes::EMPTY;
        let began = std::time::Instant::now();
        // SAFETY: as in build_request_with_config_json.
        let st = unsafe {
            (self.inner.vt.classify_error)(
                status,
                ByteSlice::new(&headers),
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
        let meta: StepMeta = serde_json::from_slice(parts[0])
            .map_err(|e| self.contract(format!("invalid step meta: {e}")))?;
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

/// The path handed to the dynamic loader for `path`: a bare file name becomes `./name`, since
/// `dlopen` (and `LoadLibrary`) search the system's library path for a name without a separator.
fn loader_path(path: &Path) -> PathBuf {
    let mut components = path.components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(name)), None) => Path::new(".").join(name),
        _ => path.to_path_buf(),
    }
}

/// Encodes a deployment config once, for [`Plugin::build_request_with_config_json`]. The bytes contain the
/// API key: keep them out of logs.
pub fn encode_config(cfg: &DeploymentConfig) -> Result<Vec<u8>, CallError> {
    serde_json::to_vec(cfg).map_err(|e| CallError::BadInput(format!("cannot encode config: {e}")))
}

fn encode_headers(headers: &[(String, String)]) -> Result<Vec<u8>, CallError> {
    frames::encode_headers(headers)
        .ok_or_else(|| CallError::BadInput("a header is larger than 4 GiB".to_owned()))
}

/// An error and its sources on one line (libloading puts the loader's own message in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn status_name(s: Status) -> String {
    match s {
        Status::OK => "ok".to_owned(),
        Status::BAD_INPUT => "bad input".to_owned(),
        Status::UPSTREAM_ERROR => "upstream error".to_owned(),
        Status::PANICKED => "panicked".to_owned(),
        Status::INTERNAL => "internal error".to_owned(),
        Status(n) => format!("unknown status {n}"),
    }
}

fn validate_info(info: &PluginInfo, header_major: u16) -> Result<(), String> {
    if info.name.is_empty()
        || info.name.len() > 64
        || !info
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "name {:?} must be 1-64 characters of [A-Za-z0-9._-]",
            info.name
        ));
    }
    if info.version.is_empty() {
        return Err("empty version".to_owned());
    }
    if info.abi_major != header_major {
        return Err(format!(
            "describe says ABI major {} but the table header says {header_major}",
            info.abi_major
        ));
    }
    Ok(())
}

/// When the v1 symbol is missing, look for other majors to say what the file was built for.
fn other_major_hint(lib: &libloading::Library) -> String {
    for major in (2..=9u16).chain(std::iter::once(0)) {
        let name = format!("stilts_plugin_entry_v{major}\0");
        // SAFETY: only checks that the symbol exists; it is never called and its type is irrelevant.
        if unsafe { lib.get::<*const c_void>(name.as_bytes()) }.is_ok() {
            return format!(
                " (it exports `stilts_plugin_entry_v{major}`: built for ABI major {major})"
            );
        }
    }
    String::new()
}

/// Per-stream parser state inside a plugin. Free it by [`Plugin::stream_close`], or just drop it.
/// `Send`, not `Sync`: one stream, one task at a time.
pub struct StreamState {
    ptr: *mut c_void,
    owner: Arc<Inner>,
}

// SAFETY: the ABI contract makes stream handles usable from any thread, one thread at a time; `&mut`
// access in every call enforces the "one at a time" part. The type stays !Sync (raw pointer).
unsafe impl Send for StreamState {}

impl Drop for StreamState {
    fn drop(&mut self) {
        // SAFETY: the handle came from this plugin's stream_open and is freed exactly once, here.
        unsafe { (self.owner.vt.stream_free)(self.ptr) }
    }
}

impl std::fmt::Debug for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamState")
            .field("plugin", &self.owner.info.name)
            .finish()
    }
}

impl StreamStep {
    /// The finish reason in this step's chunks, if any (a convenience for the host).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.chunks.iter().find_map(|c| {
            let v: serde_json::Value = serde_json::from_slice(c).ok()?;
            let r = v.get("choices")?.get(0)?.get("finish_reason")?.as_str()?;
            FinishReason::from_name(r)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_is_loaded_from_the_current_directory() {
        assert_eq!(
            loader_path(Path::new("libacme_plugin.so")),
            Path::new("./libacme_plugin.so")
        );
        for kept in [
            "./libacme_plugin.so",
            "target/release/libacme_plugin.so",
            "/usr/lib/libacme_plugin.so",
            "../libacme_plugin.so",
        ] {
            assert_eq!(loader_path(Path::new(kept)), Path::new(kept));
        }
    }

    /// A bare name that is not in the current directory is "not found", never a system library
    /// that the loader would have found on its search path.
    #[test]
    fn a_bare_name_is_never_looked_up_on_the_system_library_path() {
        let err = Plugin::load("libc.so.6").unwrap_err();
        assert!(matches!(err, LoadError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("./libc.so.6"), "{err}");
    }
}
