//! End-to-end tests of the `stilts` binary: exit codes and the messages users see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stilts(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stilts"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("run stilts")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Builds the openai plugin with cargo (a real cdylib) and returns its path.
fn openai_plugin() -> PathBuf {
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
    assert!(out.status.success(), "{}", stderr(&out));
    let lib = format!(
        "{}stilts_plugin_openai{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    target.join("debug").join(lib)
}

#[test]
fn sim_check_runs_a_scenario_twice_and_passes_its_expectations() {
    let out = stilts(&["sim", "scenarios/hang-blackhole.toml", "--check", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sim_exits_non_zero_naming_the_failed_expectation() {
    let scenario = std::fs::read_to_string(workspace_root().join("scenarios/hang-blackhole.toml"))
        .unwrap()
        + "\n[[expect]]\nconfig = \"stilts\"\ncost_per_1k_max = 0.0\n";
    let path = scratch("impossible.toml", &scenario);
    let out = stilts(&["sim", path.to_str().unwrap(), "--quiet"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cost_per_1k_max"), "{err}");
    assert!(err.contains("stilts"), "{err}");
}

#[test]
fn sim_names_file_line_and_field_of_a_bad_scenario() {
    let path = scratch(
        "typo.toml",
        "name = \"typo\"\nseed = 1\nduration_s = 10\n[traffic]\nrate_rsp = 5\n",
    );
    let out = stilts(&["sim", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("typo.toml:5:1"), "{err}");
    assert!(err.contains("rate_rsp"), "{err}");
}

#[test]
fn config_check_names_the_problem() {
    let path = scratch("empty.toml", "[server]\nlisten = \"127.0.0.1:0\"\n");
    let out = stilts(&["config", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("empty.toml") && err.contains("routes"),
        "{err}"
    );
}

#[test]
fn plugin_check_refuses_a_file_that_is_not_a_library() {
    let path = scratch("not-a-plugin.so", "just text\n");
    let out = stilts(&["plugin", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not-a-plugin.so"), "{}", stderr(&out));
}

#[test]
fn plugin_check_loads_the_openai_plugin_and_passes_its_self_test() {
    let plugin = openai_plugin();
    let out = stilts(&["plugin", "check", plugin.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("openai"), "{stdout}");
}
