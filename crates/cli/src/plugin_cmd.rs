//! `stilts plugin check` (being built, see issue 4).

/// Loads and checks a plugin.
pub fn run(_path: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!("plugin loading is not built yet")
}
