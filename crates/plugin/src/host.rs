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

mod calls;
mod load;
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
    /// ABI 1.2; `None` for a plugin built before (its metadata is JSON).
    meta_format: Option<unsafe extern "C" fn(u32) -> u32>,
}

struct Inner {
    path: PathBuf,
    vt: Vtable,
    info: PluginInfo,
    /// The plugin writes its metadata frames in binary ([`crate::meta`]), as agreed at load.
    binary_meta: bool,
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

impl Plugin {
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

    /// The form of the plugin's metadata frames, agreed at load: [`abi::META_BINARY`] for a plugin
    /// built for ABI 1.2 or later, [`abi::META_JSON`] before.
    pub fn meta_format(&self) -> u32 {
        if self.inner.binary_meta {
            abi::META_BINARY
        } else {
            abi::META_JSON
        }
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
