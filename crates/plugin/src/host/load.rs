//! [`Plugin::load`]: a plugin file opened and checked (file type, entry symbol, table header,
//! description) before anything else is called, and the helpers that say why a file was refused.

use super::*;

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
        // Never dlclose: see the `host` module docs. Forget first, so every early return below
        // leaks it too.
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
            let covers = size as usize >= abi::TABLE_V1_1_SIZE;
            let covers_1_2 = size as usize >= std::mem::size_of::<PluginTableV1>();
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
                meta_format: covers_1_2.then(|| std::ptr::addr_of!((*table).meta_format).read()),
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
        let binary_meta = match vt.meta_format {
            // SAFETY: a 1.2 field of a table whose size covers it (checked above); it takes and
            // returns plain integers.
            Some(meta_format) => match unsafe { meta_format(abi::META_BINARY) } {
                abi::META_JSON => false,
                abi::META_BINARY => true,
                other => {
                    let reason = format!(
                        "meta_format answered format {other}, newer than the {} it was offered",
                        abi::META_BINARY
                    );
                    return Err(LoadError::InvalidDescription { path, reason });
                }
            },
            None => false,
        };
        Ok(Plugin {
            inner: Arc::new(Inner {
                path,
                vt,
                info,
                binary_meta,
                abi_minor: minor,
                faults: FaultCounters::default(),
            }),
        })
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
