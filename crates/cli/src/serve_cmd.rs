//! `stilts serve`, `stilts mock-upstream` and `stilts config check` (being built, see issue 6).

use std::path::Path;
use std::process::ExitCode;

/// Arguments of `stilts serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Gateway config (TOML). Without it, an embedded demo runs on loopback.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Arguments of `stilts mock-upstream`.
#[derive(clap::Args)]
pub struct MockUpstreamArgs {}

/// Runs the gateway.
pub fn serve(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the gateway is not built yet")
}

/// Runs the fake upstream.
pub fn mock_upstream(_args: MockUpstreamArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the fake upstream is not built yet")
}

/// Validates a config file.
pub fn config_check(_file: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the gateway config is not built yet")
}
