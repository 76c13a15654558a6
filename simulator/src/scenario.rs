//! Scenario files: the raw TOML form, its validation, and errors that point at file, line and field.
//!
//! Parse, don't validate: [`Scenario::parse`] deserializes the file into private `Raw*` structs (every
//! table denies unknown fields), then checks every value and builds the validated [`Scenario`] the
//! engine runs. Any error is a [`ScenarioError`] naming the file, the line and column, the dotted
//! field path (`events[2].fraction`, `configs[0].router.breaker.failure_rate`) and a fix. The line
//! comes from toml's spans: serde errors carry one, and for errors found after deserializing, the
//! field path is looked up in toml's spanned document tree. The format is documented in
//! `docs/scenarios.md`.
//!
//! This module holds the limits and the entry points ([`Scenario::load`], [`Scenario::parse`]); the
//! parts:
//! - `model`: the validated [`Scenario`] and everything in it, the engine's input;
//! - `raw`: the serde form of the file, one `Raw*` struct per table;
//! - `validate`: the raw form checked, value by value, into the model;
//! - `ranges`: the small range checkers (seconds, shares, milliseconds, factors, distributions);
//! - `config`: the router configs under test, inline or read from a file, such as a gateway
//!   config's route;
//! - `error`: [`ScenarioError`], and placing a problem's field path at a line and column.

mod config;
mod error;
mod model;
mod ranges;
mod raw;
mod validate;

pub use error::ScenarioError;
pub use model::{
    BASELINES, Baselines, Capacity, ConfigUnderTest, Event, EventKind, EventKindName, Expectation,
    OutageMode, ProviderModel, Rate, Replicas, ReportSettings, Scenario, Traffic,
};

use error::{line_column, locate};
use raw::RawScenario;
use std::path::Path;
use validate::validate;

/// Most providers a scenario's world can hold.
pub const MAX_WORLD_PROVIDERS: usize = 16;
/// Most attempts per request a config under test may make (`max_attempts`). The oracle tries this
/// many attempts per provider and timeline piece, so it stays an upper bound for every run.
pub const MAX_ATTEMPTS: u32 = 64;
/// Most timeline events in one scenario.
pub const MAX_EVENTS: usize = 256;
/// Longest scenario: 31 days of virtual time.
pub const MAX_DURATION_S: f64 = 31.0 * 86_400.0;

const NANOS_PER_SEC: f64 = 1e9;
/// Longest span any millisecond value may give (31 days, like the longest scenario).
pub const MAX_MS: u64 = 31 * 86_400_000;
/// Largest multiplier any factor (brownout, slow first token, capacity, spike) may give.
pub const MAX_FACTOR: f64 = 1e6;
/// Slowest and fastest generation speeds, tokens per second.
const TOKENS_PER_S_RANGE: (f64, f64) = (1e-3, 1e9);
/// Shortest flapping period: 1 ms.
const MIN_FLAP_PERIOD_NS: u64 = NANOS_PER_MS;
/// Highest request rate a scenario may reach, spikes included.
const MAX_RATE_RPS: f64 = 1e7;
const NANOS_PER_MS: u64 = 1_000_000;

impl Scenario {
    /// Reads and validates the scenario file at `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            position: None,
            path: String::new(),
            problem: format!("cannot read the file: {e}"),
            fix: String::new(),
        })?;
        Scenario::parse(&text, path)
    }

    /// Validates scenario `text`; `origin` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, origin: &Path) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError {
            file: origin.to_path_buf(),
            position: e.span().map(|s| line_column(text, s.start)),
            path: String::new(),
            problem: e.message().trim().to_string(),
            fix: "see docs/scenarios.md for the format".into(),
        })?;
        let base = origin.parent().unwrap_or(Path::new("."));
        validate(raw, base).map_err(|inv| {
            let (file, text) = match &inv.file {
                Some((file, text)) => (file.clone(), text.as_str()),
                None => (origin.to_path_buf(), text),
            };
            ScenarioError {
                position: locate(text, &inv.error.path).map(|offset| line_column(text, offset)),
                file,
                path: inv.error.path,
                problem: inv.error.problem,
                fix: inv.error.fix,
            }
        })
    }
}

/// The fixture and helper the unit tests of every part share.
#[cfg(test)]
mod test_support {
    use super::{Scenario, ScenarioError};
    use std::path::Path;

    pub(super) const MINIMAL: &str = r#"
name = "t"
duration_s = 10
[traffic]
rate_rps = 5
[[providers]]
name = "a"
[[providers]]
name = "b"
[[configs]]
name = "stilts"
[configs.router]
policy = "priority"
providers = [{ name = "a" }, { name = "b" }]
"#;

    pub(super) fn err(text: &str) -> ScenarioError {
        match Scenario::parse(text, Path::new("x.toml")) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }
}
