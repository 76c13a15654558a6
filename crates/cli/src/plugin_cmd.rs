//! `stilts plugin check FILE`: load a provider plugin exactly as the gateway does, print what it declares
//! (name, version, ABI version, capabilities) and run its round-trip self-test. The loading and the
//! checks live in `stilts_plugin::host`; this file only prints. Every refusal names the file.

use std::path::Path;

use anyhow::Context as _;
use stilts_plugin::host::Plugin;

/// Loads and checks the plugin at `path`; an error (naming the file) means the gateway would refuse it.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let plugin = Plugin::load(path)?;
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

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
