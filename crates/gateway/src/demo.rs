//! The embedded demo: three fake upstreams on loopback and a config that routes over them.
//!
//! `stilts serve` without `--config` starts, inside the process, an OpenAI-dialect "primary" with
//! periodic outages (the last 6 s of every 30 s answer 503) and a 429 on every 7th request, a
//! slower "backup", and a free "local" model; then it serves route `demo` (primary, then backup,
//! then local, by priority) and route `local`, through the real openai plugin over real HTTP.

use crate::config::GatewayConfig;
use crate::mock::{MockConfig, MockUpstream, Schedule};

/// The running fake upstreams of the demo (they stop when dropped).
#[derive(Debug)]
pub struct Demo {
    /// The flaky primary.
    pub primary: MockUpstream,
    /// The backup.
    pub backup: MockUpstream,
    /// The local model.
    pub local: MockUpstream,
}

impl Demo {
    /// Starts the three fake upstreams on free loopback ports.
    pub async fn start() -> std::io::Result<Demo> {
        let mut primary = MockConfig::named("primary");
        primary.faults.latency_ms = 40;
        primary.faults.chunk_interval_ms = 30;
        primary.schedule = Schedule {
            period_ms: 30_000,
            outage_ms: 6_000,
            rate_limit_every: 7,
        };
        let mut backup = MockConfig::named("backup");
        backup.faults.latency_ms = 120;
        backup.faults.chunk_interval_ms = 40;
        let mut local = MockConfig::named("local");
        local.faults.latency_ms = 15;
        local.faults.chunk_interval_ms = 20;
        Ok(Demo {
            primary: MockUpstream::start_local(primary).await?,
            backup: MockUpstream::start_local(backup).await?,
            local: MockUpstream::start_local(local).await?,
        })
    }

    /// The demo's config text (TOML), listening on `listen`.
    pub fn config_toml(&self, listen: &str) -> String {
        format!(
            r#"
[server]
listen = "{listen}"
reload_poll_ms = 0

[routes.demo.router]
policy = "priority"
deadline_ms = 20000
[routes.demo.router.breaker]
consecutive_failures = 3
open_base_ms = 2000
open_max_ms = 10000
[routes.demo.router.timeouts]
headers_ms = 3000
first_token_ms = 3000
stall_ms = 3000

[[routes.demo.deployments]]
name = "primary"
plugin = "openai"
base_url = "{primary}"
model = "mock-large"
input_usd_per_mtok = 2.5
output_usd_per_mtok = 10.0

[[routes.demo.deployments]]
name = "backup"
plugin = "openai"
base_url = "{backup}"
model = "mock-medium"
priority = 1
input_usd_per_mtok = 3.0
output_usd_per_mtok = 15.0

[[routes.demo.deployments]]
name = "local"
plugin = "openai"
base_url = "{local}"
model = "mock-local"
priority = 2

[[routes.local.deployments]]
name = "local"
plugin = "openai"
base_url = "{local}"
model = "mock-local"
"#,
            primary = self.primary.base_url(),
            backup = self.backup.base_url(),
            local = self.local.base_url(),
        )
    }

    /// The demo's validated config.
    pub fn config(&self, listen: &str) -> Result<crate::config::ValidGateway, String> {
        GatewayConfig::parse(&self.config_toml(listen))?
            .validate(std::path::Path::new("."))
            .map_err(|e| e.to_string())
    }
}
