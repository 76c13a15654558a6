//! `stilts sim`: replays scenario files in the simulator (being built, see issue 5).

use std::process::ExitCode;

/// Arguments of `stilts sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// Scenario files.
    pub scenarios: Vec<std::path::PathBuf>,
}

/// Runs the simulator.
pub fn run(_args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the simulator is not built yet")
}
