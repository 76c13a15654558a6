//! Build script of the `stilts` binary: lays out the code every gateway request runs together.
//!
//! A request through the gateway runs about 190 KiB of machine code spread over a 10 MiB binary,
//! so at a low request rate, when each request finds the core's caches and TLB cold, most of its
//! added latency is fetching those pages again (docs/benchmarks-gateway.md, "Hot code together").
//! `hot-code.txt` lists the functions a request runs, hottest first, as the linker names them
//! (written by `scripts/hot-code.sh` from a callgrind profile), and the linker places them in that
//! order at the start of the code: 268 pages touched per request become 107.
//!
//! Only where the linker is LLD: rustc's default on `x86_64-unknown-linux-gnu` from Rust 1.90, and
//! only for release builds with no linker of the user's choice. A name the build no longer has is
//! skipped, so a stale list costs locality, never a failed build; `scripts/hot-code.sh --check`
//! says when to regenerate it. `STILTS_HOT_CODE=0` turns it off.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-code.txt");
    println!("cargo:rerun-if-env-changed=STILTS_HOT_CODE");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    if skipped().is_some() {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let list = Path::new(&dir).join("hot-code.txt");
    println!(
        "cargo:rustc-link-arg-bin=stilts=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bin=stilts=-Wl,--no-warn-symbol-ordering");
}

/// Why the list is not given to the linker, if it is not.
fn skipped() -> Option<&'static str> {
    if env::var("STILTS_HOT_CODE").as_deref() == Ok("0") {
        return Some("STILTS_HOT_CODE=0");
    }
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return Some("not x86_64-unknown-linux-gnu");
    }
    if env::var("PROFILE").as_deref() != Ok("release") {
        return Some("not a release build");
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return Some("a linker of the user's choice");
    }
    if !lld_by_default() {
        return Some("rustc older than 1.90 links with the system linker");
    }
    None
}

/// Whether this rustc links with LLD by default (1.90 and later on this target).
fn lld_by_default() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(release) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
