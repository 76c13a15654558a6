//! Build-script helper: hands a crate's list of hot functions to the linker, which lays them out
//! together at the start of the code.
//!
//! A request through the gateway runs about 190 KiB of machine code in the `stilts` binary and 42
//! KiB in the openai plugin, spread over megabytes, so at a low request rate, when each request
//! finds the core's caches and TLB cold, much of its added latency is fetching those pages again
//! (docs/benchmarks-gateway.md, "Hot code together"). A crate keeps a `hot-code.txt` beside its
//! `Cargo.toml`: the functions a request runs, hottest first, as the linker names them, written by
//! `scripts/hot-code.sh` from a callgrind profile. Its build script calls [`lay_out`], and the
//! linker (LLD's `--symbol-ordering-file`) places them in that order.
//!
//! Only where the linker is LLD: rustc's default on `x86_64-unknown-linux-gnu` from Rust 1.90, for
//! release builds with no linker of the user's choice. A name the build does not have is skipped,
//! so a stale list costs locality, never a failed build; `scripts/hot-code.sh --check` says when
//! to regenerate it. `STILTS_HOT_CODE=0` turns it off.

use std::env;
use std::path::Path;
use std::process::Command;

/// What the list is for: the linker flags go to that artifact only.
#[derive(Clone, Copy, Debug)]
pub enum Artifact<'a> {
    /// The binary of this name.
    Bin(&'a str),
    /// The crate's `cdylib` (a plugin).
    Cdylib,
}

/// Prints the build-script directives that hand `hot-code.txt` (beside the crate's `Cargo.toml`)
/// to the linker of `artifact`, when the linker is LLD and the build is a release build; else
/// nothing. Call it from the crate's build script.
pub fn lay_out(artifact: Artifact<'_>) {
    println!("cargo:rerun-if-changed=hot-code.txt");
    println!("cargo:rerun-if-env-changed=STILTS_HOT_CODE");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    if !applies() {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let list = Path::new(&dir).join("hot-code.txt");
    if !list.is_file() {
        return;
    }
    let directive = match artifact {
        Artifact::Bin(name) => format!("cargo:rustc-link-arg-bin={name}="),
        Artifact::Cdylib => "cargo:rustc-link-arg-cdylib=".to_owned(),
    };
    println!("{directive}-Wl,--symbol-ordering-file={}", list.display());
    println!("{directive}-Wl,--no-warn-symbol-ordering");
}

/// Whether the list goes to the linker: a release build for `x86_64-unknown-linux-gnu`, linked by
/// rustc's default linker (LLD from Rust 1.90), and not turned off with `STILTS_HOT_CODE=0`.
fn applies() -> bool {
    let off = env::var("STILTS_HOT_CODE").as_deref() == Ok("0");
    let target = env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let own_linker = env::var("CARGO_ENCODED_RUSTFLAGS")
        .unwrap_or_default()
        .contains("linker")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some();
    !off && target
        && release
        && !own_linker
        && lld_by_default(&env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
}

/// Whether `rustc` links with LLD by default (1.90 and later on this target).
fn lld_by_default(rustc: &str) -> bool {
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    release_at_least(&String::from_utf8_lossy(&out.stdout), (1, 90))
}

/// Whether the `release:` line of `rustc -vV` output is at least `min` (major, minor).
fn release_at_least(version_output: &str, min: (u32, u32)) -> bool {
    let Some(release) = version_output
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
    else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_release_line() {
        let out = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\nrelease: 1.95.0\nLLVM version: 22.1.2\n";
        assert!(release_at_least(out, (1, 90)));
        assert!(!release_at_least("release: 1.89.1\n", (1, 90)));
        assert!(release_at_least("release: 1.90.0-nightly\n", (1, 90)));
        assert!(release_at_least("release: 2.0.0\n", (1, 90)));
        assert!(!release_at_least("no such line\n", (1, 90)));
    }
}
