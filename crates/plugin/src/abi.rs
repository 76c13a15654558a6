//! The binary contract between the host and a plugin: the only types that cross the `dlopen` boundary.
//!
//! Everything here is `#[repr(C)]` or a plain integer. No Rust type (`String`, `Vec`, `Result`, trait
//! objects) ever crosses: each side has its own allocator, its own std and possibly its own rustc.
//!
//! # The contract (ABI major 1)
//!
//! * A plugin exports one symbol, [`ENTRY_SYMBOL`] (`stilts_plugin_entry_v1`, the major version is part of
//!   its name), of type [`EntryFn`]. It returns a pointer to a `'static` [`PluginTableV1`].
//! * The table starts with [`MAGIC`], the ABI major and minor version and the table's own size in bytes.
//!   The host checks these four fields before it reads anything else, and refuses the file if the magic
//!   differs, the major differs, or the size is smaller than the fields the host needs.
//! * Fields are only ever appended. A new field raises [`ABI_MINOR`]; a host reads an appended field only
//!   when the table's `size` covers it. Any other change (a removed, reordered or retyped field, a changed
//!   meaning) raises [`ABI_MAJOR`] and renames the entry symbol.
//! * Inputs are borrowed [`ByteSlice`]s, valid only for the duration of the call. Outputs are
//!   [`OwnedBytes`] allocated by the plugin and given back to the plugin's `free_bytes`: whoever allocates
//!   frees.
//! * Every function returns a [`Status`]. Every plugin function catches panics and returns
//!   [`Status::PANICKED`]; nothing unwinds across the boundary (the functions are `extern "C"`, so an
//!   escaped unwind aborts deterministically instead of corrupting the host).
//! * Every function may be called concurrently from several threads, except that one stream handle is used
//!   by one thread at a time (handles are `Send`, not `Sync`).
//! * Payloads are UTF-8 JSON (see [`crate::types`] and [`crate::canonical`]), packed into [`frames`] when a
//!   call returns more than one part. The first part of a multi-part answer, its metadata, is JSON
//!   unless host and plugin agreed on the binary form of [`crate::meta`] (ABI 1.2, `meta_format`).
#![allow(unsafe_code)] // reason: this module is the FFI boundary; each unsafe block carries a SAFETY comment.

use std::ffi::c_void;

/// First field of every plugin table: the bytes `STILTSPL` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"STILTSPL");
/// Incompatible-change counter. Part of the entry symbol's name.
pub const ABI_MAJOR: u16 = 1;
/// Compatible-change counter: bumped when fields are appended to [`PluginTableV1`]. 1: embeddings
/// (`build_embeddings_request`, `parse_embeddings_response`). 2: binary metadata (`meta_format`).
pub const ABI_MINOR: u16 = 2;

/// A metadata format (see [`PluginTableV1::meta_format`]): the first frame of a built request, a
/// parsed response or a stream step as JSON, the only form before ABI 1.2.
pub const META_JSON: u32 = 0;
/// A metadata format: the binary frames of [`crate::meta`] (ABI 1.2).
pub const META_BINARY: u32 = 1;
/// The exported entry symbol, NUL-terminated, as passed to `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"stilts_plugin_entry_v1\0";
/// The entry symbol's name without the trailing NUL, for messages.
pub const ENTRY_SYMBOL_NAME: &str = "stilts_plugin_entry_v1";

/// The type of [`ENTRY_SYMBOL`]: returns the plugin's `'static` table, or null if the plugin cannot start.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginTableV1;

/// Status code returned by every table function.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    /// Success: the output buffer holds the result.
    pub const OK: Status = Status(0);
    /// The plugin could not use its input (invalid JSON, a request it cannot express). Output: UTF-8 message.
    pub const BAD_INPUT: Status = Status(1);
    /// The upstream answered with an error inside a success status (for example a body of `{"error":…}`
    /// after HTTP 200). Output: an [`crate::types::ErrorInfo`] JSON.
    pub const UPSTREAM_ERROR: Status = Status(2);
    /// The plugin panicked; the panic was caught. Output: UTF-8 message (may be empty).
    pub const PANICKED: Status = Status(3);
    /// A broken contract: a null pointer, an unusable handle. Output: UTF-8 message (may be empty).
    pub const INTERNAL: Status = Status(4);
}

/// A borrowed byte range, valid only for the duration of one call. `ptr` may be dangling when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ByteSlice {
    /// Start of the bytes.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl ByteSlice {
    /// Borrows `bytes` for one call.
    pub fn new(bytes: &[u8]) -> Self {
        ByteSlice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Views the bytes again on the receiving side.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid and unmodified for `'a`, or `len` must be 0.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: the caller guarantees ptr..ptr+len is readable for 'a (see the function contract).
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// A buffer allocated by the plugin and handed to the host, which must give it back to the plugin's
/// [`PluginTableV1::free_bytes`]. A zeroed value (null pointer) means "no buffer".
#[repr(C)]
#[derive(Debug)]
pub struct OwnedBytes {
    /// Start of the allocation (null when empty).
    pub ptr: *mut u8,
    /// Initialised length.
    pub len: usize,
    /// Allocation capacity, needed by the allocating side to free it.
    pub cap: usize,
}

impl OwnedBytes {
    /// The empty value, written by the host into an out-pointer before a call.
    pub const EMPTY: OwnedBytes = OwnedBytes {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };

    /// Gives away a `Vec`'s allocation. Only the plugin side calls this; the buffer must come back to
    /// [`OwnedBytes::free`] in the same shared library.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        OwnedBytes {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// Takes the allocation back and drops it.
    ///
    /// # Safety
    /// Must be called in the same shared library that called [`OwnedBytes::from_vec`] for this value,
    /// exactly once, with the fields unchanged (or on a null value, which is a no-op).
    pub unsafe fn free(self) {
        if !self.ptr.is_null() {
            // SAFETY: the contract above: ptr/len/cap came from a Vec<u8> of this library's allocator.
            drop(unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) });
        }
    }
}

/// The table of a plugin, ABI major 1. Returned by [`ENTRY_SYMBOL`]; lives for the process lifetime.
///
/// Layout rules: the first four fields never move; fields are only appended (bumping [`ABI_MINOR`]);
/// the host reads a field only if `size` covers it.
#[repr(C)]
pub struct PluginTableV1 {
    /// Always [`MAGIC`].
    pub magic: u64,
    /// [`ABI_MAJOR`] the plugin was built with.
    pub abi_major: u16,
    /// [`ABI_MINOR`] the plugin was built with.
    pub abi_minor: u16,
    /// `size_of::<PluginTableV1>()` as the plugin knows it.
    pub size: u32,
    /// Releases a buffer this plugin returned. Never fails.
    pub free_bytes: unsafe extern "C" fn(buf: OwnedBytes),
    /// Writes a [`crate::types::PluginInfo`] JSON to `out`.
    pub describe: unsafe extern "C" fn(out: *mut OwnedBytes) -> Status,
    /// `req`: canonical request JSON; `cfg`: [`crate::types::DeploymentConfig`] JSON. On OK `out` holds
    /// frames `[request meta JSON, body]`.
    pub build_request:
        unsafe extern "C" fn(req: ByteSlice, cfg: ByteSlice, out: *mut OwnedBytes) -> Status,
    /// `headers`: frames `[name, value, name, value…]`. On OK `out` holds frames
    /// `[response meta JSON, canonical chat.completion JSON]`; on UPSTREAM_ERROR an ErrorInfo JSON.
    pub parse_response: unsafe extern "C" fn(
        status: u16,
        headers: ByteSlice,
        body: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status,
    /// On OK `out` holds an [`crate::types::ErrorInfo`] JSON.
    pub classify_error: unsafe extern "C" fn(
        status: u16,
        headers: ByteSlice,
        body: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status,
    /// Creates per-stream state; on OK writes a non-null handle to `state`.
    pub stream_open: unsafe extern "C" fn(state: *mut *mut c_void, out: *mut OwnedBytes) -> Status,
    /// Feeds one SSE event. `event` is the SSE event name (empty when absent), `data` its joined data.
    /// On OK `out` holds frames `[step meta JSON, chunk JSON…]`.
    pub stream_event: unsafe extern "C" fn(
        state: *mut c_void,
        event: ByteSlice,
        data: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status,
    /// Reports how the stream ended when the connection closed. On OK `out` holds a StreamEnd JSON.
    /// Does not free the state.
    pub stream_close: unsafe extern "C" fn(state: *mut c_void, out: *mut OwnedBytes) -> Status,
    /// Frees the per-stream state. Called exactly once per handle.
    pub stream_free: unsafe extern "C" fn(state: *mut c_void),
    /// ABI 1.1. `req`: canonical embeddings request JSON (OpenAI's `POST /v1/embeddings` body);
    /// `cfg`: [`crate::types::DeploymentConfig`] JSON. On OK `out` holds frames
    /// `[request meta JSON, body]`; BAD_INPUT when the provider serves no embeddings.
    pub build_embeddings_request:
        unsafe extern "C" fn(req: ByteSlice, cfg: ByteSlice, out: *mut OwnedBytes) -> Status,
    /// ABI 1.1. On OK `out` holds frames `[response meta JSON, canonical embeddings response
    /// JSON]`; on UPSTREAM_ERROR an ErrorInfo JSON.
    pub parse_embeddings_response: unsafe extern "C" fn(
        status: u16,
        headers: ByteSlice,
        body: ByteSlice,
        out: *mut OwnedBytes,
    ) -> Status,
    /// ABI 1.2. The host offers the newest metadata format it reads ([`META_BINARY`]) once, after
    /// `describe` and before any other call; the plugin answers the format it will write from then
    /// on, never newer than the one offered. Until then, and with a host that never calls it (one
    /// built before 1.2), metadata is [`META_JSON`].
    pub meta_format: unsafe extern "C" fn(offered: u32) -> u32,
}

/// The size of an ABI 1.1 table: a host reads `meta_format` only from a larger one.
pub const TABLE_V1_1_SIZE: usize = std::mem::offset_of!(PluginTableV1, meta_format);

/// The size of an ABI 1.0 table: the fields every ABI 1 plugin has. A host needs this much; it
/// reads the fields appended by a later minor only when the table's `size` covers them.
pub const TABLE_V1_0_SIZE: usize = std::mem::offset_of!(PluginTableV1, build_embeddings_request);

/// The size of the fixed header (magic, versions, size) every table version starts with.
pub const HEADER_SIZE: usize = 16;

/// Multi-part payloads: a sequence of frames, each a little-endian `u32` length followed by that many bytes.
///
/// Used for outputs with several parts (request meta + body, stream step meta + chunks) and for header
/// lists (`name, value, name, value…`). Decoding is total: malformed input gives `None`, never a panic.
pub mod frames {
    /// Appends one frame to `out`. Parts longer than `u32::MAX` bytes are refused with `None`.
    pub fn push(out: &mut Vec<u8>, part: &[u8]) -> Option<()> {
        let len = u32::try_from(part.len()).ok()?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(part);
        Some(())
    }

    /// Appends one frame whose bytes `write` appends to `out` (its length is filled in after):
    /// a frame built in place, without a buffer of its own. `None` when `write` fails or the
    /// frame is longer than `u32::MAX` bytes (`out` is then left as it was).
    pub fn push_with(
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>) -> Option<()>,
    ) -> Option<()> {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let written = write(out).and_then(|()| u32::try_from(out.len() - at - 4).ok());
        match written {
            Some(len) => {
                out[at..at + 4].copy_from_slice(&len.to_le_bytes());
                Some(())
            }
            None => {
                out.truncate(at);
                None
            }
        }
    }

    /// Splits `buf` into frames. `None` when a length runs past the end.
    pub fn split(buf: &[u8]) -> Option<Vec<&[u8]>> {
        Iter::new(buf).collect()
    }

    /// The frames of a buffer, one by one: `Some(part)`, or a last `None` when a length runs
    /// past the end.
    pub struct Iter<'a> {
        rest: &'a [u8],
    }

    impl<'a> Iter<'a> {
        /// The frames of `buf`.
        pub fn new(buf: &'a [u8]) -> Self {
            Iter { rest: buf }
        }
    }

    impl<'a> Iterator for Iter<'a> {
        type Item = Option<&'a [u8]>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.rest.is_empty() {
                return None;
            }
            let part = self.rest.split_at_checked(4).and_then(|(len, rest)| {
                let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
                rest.split_at_checked(len)
            });
            match part {
                Some((part, rest)) => {
                    self.rest = rest;
                    Some(Some(part))
                }
                None => {
                    self.rest = &[];
                    Some(None)
                }
            }
        }
    }

    /// Encodes a header list as frames.
    pub fn encode_headers(headers: &[(String, String)]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
        for (name, value) in headers {
            push(&mut out, name.as_bytes())?;
            push(&mut out, value.as_bytes())?;
        }
        Some(out)
    }

    /// Decodes a header list. `None` on malformed frames, an odd count or non-UTF-8 text.
    pub fn decode_headers(buf: &[u8]) -> Option<Vec<(String, String)>> {
        let parts = split(buf)?;
        if parts.len() % 2 != 0 {
            return None;
        }
        parts
            .chunks_exact(2)
            .map(|pair| {
                let name = std::str::from_utf8(pair[0]).ok()?;
                let value = std::str::from_utf8(pair[1]).ok()?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_stable() {
        assert_eq!(std::mem::offset_of!(PluginTableV1, magic), 0);
        assert_eq!(std::mem::offset_of!(PluginTableV1, abi_major), 8);
        assert_eq!(std::mem::offset_of!(PluginTableV1, abi_minor), 10);
        assert_eq!(std::mem::offset_of!(PluginTableV1, size), 12);
        assert_eq!(std::mem::offset_of!(PluginTableV1, free_bytes), HEADER_SIZE);
    }

    #[test]
    fn frames_round_trip_and_reject_truncation() {
        let mut buf = Vec::new();
        frames::push(&mut buf, b"meta").unwrap();
        frames::push(&mut buf, b"").unwrap();
        frames::push(&mut buf, b"body").unwrap();
        assert_eq!(
            frames::split(&buf).unwrap(),
            vec![&b"meta"[..], b"", b"body"]
        );
        assert!(frames::split(&buf[..buf.len() - 1]).is_none());
        assert!(frames::split(&[1, 0]).is_none());
        let headers = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "".to_owned()),
        ];
        let enc = frames::encode_headers(&headers).unwrap();
        assert_eq!(frames::decode_headers(&enc).unwrap(), headers);
        let mut odd = Vec::new();
        frames::push(&mut odd, b"x").unwrap();
        assert!(frames::decode_headers(&odd).is_none());
    }
}
