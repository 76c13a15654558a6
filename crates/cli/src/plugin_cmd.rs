//! `stilts plugin check PLUGIN`: load a provider plugin exactly as the gateway does, print what it
//! declares (name, version, ABI version, capabilities) and run its self-test (round trips, error
//! classes, stream cuts and the stream usage rule). The loading and the checks live in
//! `stilts_plugin::host`; this file finds the file and prints. Every refusal names the file.
//!
//! PLUGIN is a path (`target/release/libacme_plugin.so`; a bare file name is a file in the
//! current directory) or a short name (`acme`), looked up as the gateway looks up
//! `plugin = "acme"`: in `--plugin-dir`, `STILTS_PLUGIN_DIR`, and beside this binary.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use stilts_gateway::config::PluginRef;
use stilts_gateway::plugins;
use stilts_plugin::host::Plugin;

/// `stilts plugin check` arguments.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The plugin: a path to its library (.so, .dylib or .dll), or its short name (`acme`).
    pub plugin: PathBuf,
    /// A directory to look for a short name in first (as `server.plugin_dir` in a gateway config).
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
}

/// Finds, loads and checks the plugin; an error (naming the file) means the gateway would refuse it.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let path = find(&args.plugin, args.plugin_dir.as_deref())?;
    let plugin = Plugin::load(&path)?;
    let path = plugin.path().to_path_buf();
    let info = plugin.describe();
    println!("plugin:       {}", path.display());
    println!("name:         {}", info.name);
    println!("version:      {}", info.version);
    println!(
        "abi:          {}.{} (sdk {})",
        info.abi_major,
        plugin.abi_minor(),
        info.sdk_version
    );
    let metadata = if plugin.meta_format() == stilts_plugin::abi::META_BINARY {
        "binary (ABI 1.2)"
    } else {
        "JSON (a plugin built before ABI 1.2)"
    };
    println!("metadata:     {metadata}");
    let caps = &info.capabilities;
    println!("streaming:    {}", yes_no(caps.streaming));
    println!("prefill:      {}", yes_no(caps.prefill_continuation));
    if caps.context_windows.is_empty() {
        println!("context:      (no model windows declared)");
    } else {
        for (model, tokens) in &caps.context_windows {
            println!("context:      {model}: {tokens} tokens");
        }
    }
    let report = plugin
        .self_test()
        .with_context(|| format!("{} failed its self-test", path.display()))?;
    for check in &report.checks {
        println!("self-test ok: {check}");
    }
    println!("{}: OK", path.display());
    Ok(())
}

/// The file of `plugin`: a path as given when it names a file (a separator, a library extension,
/// or an existing file), else the short name's file in the plugin directories.
fn find(plugin: &Path, plugin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let text = plugin.to_string_lossy();
    if plugins::names_a_file(&text) || plugin.is_file() {
        return Ok(plugin.to_path_buf());
    }
    let found = plugins::resolve(
        &PluginRef::Name(text.into_owned()),
        plugin_dir,
        Path::new("."),
    )?;
    Ok(found)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn a_path_is_taken_as_given_and_a_short_name_is_looked_up() {
        for path in ["libacme_plugin.so", "target/release/x", "./acme"] {
            assert_eq!(find(Path::new(path), None).unwrap(), Path::new(path));
        }
        let dir = std::env::temp_dir().join(format!("stilts-plugin-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = format!(
            "{}acme_plugin{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        );
        std::fs::write(dir.join(&lib), b"").unwrap();
        assert_eq!(
            find(Path::new("acme"), Some(&dir)).unwrap(),
            Path::new(".").join(&dir).join(&lib)
        );
        let err = find(Path::new("nosuch"), Some(&dir))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no plugin named \"nosuch\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
