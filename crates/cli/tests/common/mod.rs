//! Helpers shared by the CLI's end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test helpers

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Builds the openai plugin with cargo (a real cdylib) and returns its path.
pub fn openai_plugin() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            "stilts-plugin-openai",
            "--lib",
            "--manifest-path",
        ])
        .arg(workspace_root().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = format!(
        "{}stilts_plugin_openai{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    target.join("debug").join(lib)
}
