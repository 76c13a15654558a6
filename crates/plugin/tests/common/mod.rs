//! Builds real plugin shared libraries with cargo from inside the tests (cargo does not build or uplift
//! cdylibs for `cargo test`; see docs/plugins.md, "Testing"). Each build runs `$CARGO build` with the
//! same target directory as the running test and reads the artifact path from cargo's JSON messages.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: shared by several test binaries

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The target directory of the running test (`CARGO_TARGET_TMPDIR` is `<target>/tmp`).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a cargo build and returns the cdylib it produced.
pub fn cargo_build_cdylib(args: &[&str], target_dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .arg("build")
        .args(args)
        .args(["--lib", "--message-format=json-render-diagnostics"])
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo build {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !kinds.iter().any(|k| k == "cdylib") {
            continue;
        }
        for f in msg["filenames"].as_array().into_iter().flatten() {
            let f = f.as_str().unwrap();
            if f.ends_with(std::env::consts::DLL_SUFFIX) {
                return PathBuf::from(f);
            }
        }
    }
    panic!("cargo build {args:?} produced no cdylib:\n{stdout}");
}

/// Builds a workspace plugin package (once per test binary and profile) and returns its library.
pub fn workspace_plugin(package: &str, release: bool) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<(String, bool), PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(&(package.to_owned(), release)) {
        return p.clone();
    }
    let root = workspace_root();
    let manifest = root.join("Cargo.toml");
    let mut args = vec!["-p", package, "--manifest-path", manifest.to_str().unwrap()];
    if release {
        args.push("--release");
    }
    let path = cargo_build_cdylib(&args, &target_dir());
    built.insert((package.to_owned(), release), path.clone());
    path
}

/// Builds a fixture plugin crate kept in the repository at `src` (a `Cargo.toml` in which
/// `STILTS_PLUGIN_PATH` stands for the stilts-plugin crate, and `src/lib.rs`) out of the tree, in
/// `target/plugin-fixtures/<name>-src`, with the cargo `args`; returns the built library. The
/// fixtures are their own workspaces, which cargo refuses inside this one, hence the copy.
pub fn build_fixture_plugin(src: &Path, name: &str, args: &[&str]) -> PathBuf {
    let plugin_crate = workspace_root().join("crates/plugin");
    let manifest = std::fs::read_to_string(src.join("Cargo.toml"))
        .unwrap()
        .replace("STILTS_PLUGIN_PATH", plugin_crate.to_str().unwrap());
    let lib = std::fs::read_to_string(src.join("src/lib.rs")).unwrap();
    build_out_of_tree(
        &target_dir()
            .join("plugin-fixtures")
            .join(format!("{name}-src")),
        &[("Cargo.toml", manifest), ("src/lib.rs", lib)],
        args,
        &format!("plugin-fixtures/{name}-target"),
    )
}

/// Writes an out-of-tree crate into `dir` (files: relative path → contents), with the workspace's
/// Cargo.lock so it resolves from the local cache, builds it and returns its library. Builds share one
/// target directory per test binary, so stilts-plugin compiles once.
pub fn build_out_of_tree(
    dir: &Path,
    files: &[(&str, String)],
    extra_args: &[&str],
    target_name: &str,
) -> PathBuf {
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    let lock = workspace_root().join("Cargo.lock");
    if lock.exists() && !dir.join("Cargo.lock").exists() {
        std::fs::copy(&lock, dir.join("Cargo.lock")).unwrap();
    }
    let manifest = dir.join("Cargo.toml");
    let mut args = vec!["--manifest-path", manifest.to_str().unwrap()];
    args.extend_from_slice(extra_args);
    cargo_build_cdylib(&args, &target_dir().join(target_name))
}
