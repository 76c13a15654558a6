//! The `stilts` command line: one binary for the gateway, the simulator and the checks.
//!
//! Each subcommand lives in its own module and returns an exit code; this file only parses the
//! command line and maps errors to a message on stderr and exit code 2.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod plugin_cmd;
mod plugin_new;
mod replay_cmd;
mod serve_cmd;
mod sim_cmd;

/// stilts keeps an application's AI features alive when an LLM provider fails.
#[derive(Parser)]
#[command(name = "stilts", version, about, long_about = None)]
struct Cli {
    /// Log format of `serve` and `mock-upstream` on stderr: `text` (coloured only at a terminal)
    /// or `json` (one object per line). The level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "STILTS_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for stilts_gateway::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => stilts_gateway::LogFormat::Text,
            LogFormat::Json => stilts_gateway::LogFormat::Json,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the OpenAI-compatible gateway (with no --config: an embedded demo on loopback).
    Serve(serve_cmd::ServeArgs),
    /// Replay outage scenarios against the router in virtual time and report.
    Sim(sim_cmd::SimArgs),
    /// Replay a scenario through the real gateway against fault-injecting loopback upstreams and
    /// compare with the simulator's prediction.
    Replay(replay_cmd::ReplayArgs),
    /// Run a fault-injecting fake OpenAI-dialect upstream (for tests, benches and demos).
    MockUpstream(serve_cmd::MockUpstreamArgs),
    /// Provider plugin tools.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a plugin (a path or a short name), print what it declares and run its self-test.
    Check(plugin_cmd::CheckArgs),
    /// Write a new provider plugin crate that builds, passes `plugin check` and has wire tests.
    New(plugin_new::NewArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a gateway config file without serving.
    Check {
        /// Path to the TOML config.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_) | Command::MockUpstream(_)) {
        stilts_gateway::init_logging(cli.log_format.into());
    }
    let result = match cli.command {
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Replay(args) => replay_cmd::run(args),
        Command::MockUpstream(args) => serve_cmd::mock_upstream(args),
        Command::Plugin(PluginCommand::Check(args)) => {
            plugin_cmd::run(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Plugin(PluginCommand::New(args)) => {
            plugin_new::run(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => serve_cmd::config_check(&file),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
