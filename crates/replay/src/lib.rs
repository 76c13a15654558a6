//! stilts-replay: proves the simulator against the real gateway.
//!
//! `stilts sim` predicts how each router config of a scenario behaves. [`replay`] runs the same
//! scenario's traffic through the real gateway (`stilts_gateway`, in-process, over loopback HTTP)
//! against fake upstreams that play each scenario provider's fate for every attempt
//! (`world_upstream`), and compares what the gateway did with the prediction
//! (`compare`). A number the simulator prints is thereby a promise about the gateway.
//!
//! Time is compressed by a speed factor K: the gateway's router runs on a
//! [`Clock::compressed`] clock, so every limit it decides (stage timeouts, breaker open times,
//! cool-downs, Retry-After, backoffs, deadlines) passes K times sooner in wall time, and the fake
//! upstreams divide every latency by K. The same decisions are due at the same virtual times; the
//! measured latencies are multiplied back by K. Timer resolution (about a millisecond of wall
//! time, K milliseconds of virtual time) bounds how faithful latencies are, which is why they are
//! shown but not gated.
//!
//! The parts:
//! - `world_upstream`: the fake upstreams' planner (fate → HTTP answer, provider capacity);
//! - `client`: the load client (arrivals on the compressed clock, deadlines, what came back);
//! - `compare`: the measured run, the prediction beside it, the tolerances and the table.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod compare;
mod world_upstream;

pub use compare::{Check, ConfigReplay, Measured, ProviderMeasured, ReplayReport, Tolerances};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use stilts_config::{DeploymentSettings, GatewayConfig, PluginRef, ValidRoute};
use stilts_core::ErrorClass;
use stilts_gateway::mock::{Dialect, Faults, MockConfig, MockUpstream, error_parts};
use stilts_gateway::{Clock, Gateway};
use stilts_sim::{Arrivals, ConfigUnderTest, EventKind, Scenario};

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Time compression: virtual seconds per wall second (≥ 1).
    pub speed: f64,
    /// Replay only the first this many seconds of the scenario (the prediction covers the same).
    pub until_s: Option<f64>,
    /// The seed of the world (the scenario's own by default).
    pub seed: Option<u64>,
    /// Only these configs (all by default).
    pub configs: Vec<String>,
    /// Where the provider plugins are (the gateway's default search otherwise).
    pub plugin_dir: Option<PathBuf>,
    /// Serve this scenario config in the gateway while comparing with the others' predictions: a
    /// check that the comparison can fail (tests and `--serve-config`).
    pub serve_config: Option<String>,
    /// How far apart prediction and measurement may be.
    pub tolerances: Tolerances,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            speed: 20.0,
            until_s: None,
            seed: None,
            configs: Vec::new(),
            plugin_dir: None,
            serve_config: None,
            tolerances: Tolerances::default(),
        }
    }
}

/// Why a scenario cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Something in the scenario that the fake upstreams cannot play.
    #[error("{place}: {problem}; {fix}")]
    Unsupported {
        /// Where in the scenario.
        place: String,
        /// What cannot be played.
        problem: String,
        /// What to do instead.
        fix: String,
    },
    /// A bad option.
    #[error("{0}")]
    Option(String),
    /// The gateway could not be built (a plugin is missing, most often).
    #[error("the gateway could not be built: {0}")]
    Gateway(String),
    /// A socket could not be opened.
    #[error("loopback I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Progress of a replay, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// The config being replayed (0-based) and how many there are.
    pub config: usize,
    /// Configs in this replay.
    pub configs: usize,
    /// Requests sent so far in this config.
    pub sent: u64,
    /// Requests in this config.
    pub requests: u64,
}

/// Replays `scenario` through the real gateway and compares it with the simulator's prediction,
/// config by config.
pub async fn replay(
    scenario: &Scenario,
    options: &ReplayOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ReplayReport, ReplayError> {
    if !(options.speed.is_finite() && options.speed >= 1.0) {
        return Err(ReplayError::Option(format!(
            "--speed {} is not a number ≥ 1; use e.g. --speed 20",
            options.speed
        )));
    }
    let mut scenario = scenario.clone();
    if let Some(until) = options.until_s {
        if !(until.is_finite() && until > 0.0) {
            return Err(ReplayError::Option(format!(
                "--until {until} is not a positive number of seconds"
            )));
        }
        scenario.duration_ns = scenario.duration_ns.min((until * 1e9) as u64);
    }
    let seed = options.seed.unwrap_or(scenario.seed);
    check_playable(&scenario)?;
    let selected: Vec<ConfigUnderTest> = if options.configs.is_empty() {
        scenario.configs.clone()
    } else {
        let mut out = Vec::new();
        for name in &options.configs {
            match scenario.configs.iter().find(|c| &c.name == name) {
                Some(c) => out.push(c.clone()),
                None => {
                    return Err(ReplayError::Option(format!(
                        "no config named \"{name}\" in the scenario; configs: {}",
                        names(&scenario)
                    )));
                }
            }
        }
        out
    };
    let served_override = match &options.serve_config {
        Some(name) => Some(
            scenario
                .configs
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| {
                    ReplayError::Option(format!(
                        "no config named \"{name}\" to serve; configs: {}",
                        names(&scenario)
                    ))
                })?
                .clone(),
        ),
        None => None,
    };
    let scenario = Arc::new(scenario);
    let requests: Arc<Vec<stilts_sim::Request>> =
        Arc::new(Arrivals::new(&scenario, seed).collect());
    let mut configs = Vec::with_capacity(selected.len());
    for (i, config) in selected.iter().enumerate() {
        // The prediction with the gateway's own router seed, and the same world met by other
        // router draws: real time orders events a little differently from the simulator's
        // queue, so the gateway's router draws fall on other requests, and where one draw
        // decides a lot (a breaker probe that meets a rare error keeps a provider out for
        // another open period) only the spread over router seeds says what the simulator promises.
        let mut predictions = Vec::with_capacity(ROUTER_SEEDS as usize);
        for k in 0..ROUTER_SEEDS {
            let router_seed = if k == 0 {
                seed
            } else {
                seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            };
            predictions.push(
                stilts_sim::simulate_config(&scenario, seed, router_seed, &config.name)
                    .ok_or_else(|| {
                        ReplayError::Option(format!(
                            "the simulator has no config named {}",
                            config.name
                        ))
                    })?,
            );
        }
        let served = served_override.as_ref().unwrap_or(config);
        let measured = run_config(&scenario, seed, served, &requests, options, &|sent| {
            progress(Progress {
                config: i,
                configs: selected.len(),
                sent,
                requests: requests.len() as u64,
            })
        })
        .await?;
        let others = predictions.split_off(1);
        let Some(predicted) = predictions.pop() else {
            continue;
        };
        configs.push(compare::compare(
            &config.name,
            served.name.as_str(),
            predicted,
            &others,
            measured,
            &options.tolerances,
        ));
    }
    Ok(ReplayReport {
        scenario: scenario.name.clone(),
        seed,
        speed: options.speed,
        duration_s: scenario.duration_ns as f64 / 1e9,
        requests: requests.len() as u64,
        passed: configs.iter().all(|c| c.passed),
        comparable: configs.iter().all(|c| c.comparable),
        configs,
    })
}

fn names(scenario: &Scenario) -> String {
    scenario
        .configs
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses, by name, what the fake upstreams cannot play.
fn check_playable(scenario: &Scenario) -> Result<(), ReplayError> {
    let expected = scenario.expected_requests();
    if expected > MAX_REPLAY_REQUESTS as f64 {
        return Err(ReplayError::Option(format!(
            "about {expected:.0} requests arrive in the {:.0} s replayed, more than the {MAX_REPLAY_REQUESTS} a replay holds; replay a window with --until",
            scenario.duration_ns as f64 / 1e9
        )));
    }
    Ok(())
}

/// The error classes the scenario's providers can answer with.
fn classes_played(scenario: &Scenario) -> BTreeSet<ErrorClass> {
    let mut classes = BTreeSet::new();
    for p in &scenario.providers {
        for class in ErrorClass::ALL {
            if p.errors[class.index()] > 0.0 && class != ErrorClass::Timeout {
                classes.insert(class);
            }
        }
        if p.context_window.is_some() {
            classes.insert(ErrorClass::ContextLength);
        }
        if let Some(cap) = p.capacity {
            classes.insert(cap.overload);
        }
    }
    for e in &scenario.events {
        match e.kind {
            EventKind::Outage(_)
            | EventKind::Flapping { .. }
            | EventKind::PartialOutage { .. }
            | EventKind::Malformed { .. }
            | EventKind::StreamCut { .. }
            | EventKind::StreamStall { .. } => {
                classes.insert(ErrorClass::Server);
            }
            EventKind::ErrorBurst { class, .. } if class != ErrorClass::Timeout => {
                classes.insert(class);
            }
            EventKind::RateLimit { .. } => {
                classes.insert(ErrorClass::RateLimited);
            }
            EventKind::QuotaExhausted => {
                classes.insert(ErrorClass::Quota);
            }
            _ => {}
        }
    }
    classes
}

/// The plugin and dialect a deployment is replayed with: the Anthropic dialect where the config
/// asks for exact continuation (its plugin continues a prefilled answer; the openai plugin does
/// not), the OpenAI dialect elsewhere.
fn dialect_of(prefill_continuation: bool) -> (Dialect, &'static str) {
    if prefill_continuation {
        (Dialect::Anthropic, "anthropic")
    } else {
        (Dialect::OpenAi, "openai")
    }
}

/// Checks that `plugin` classifies each error a fake upstream sends in `dialect` as the class the
/// world meant, so an error is replayed as itself or refused by name.
fn check_error_mapping(
    scenario: &Scenario,
    dialect: Dialect,
    plugin_name: &str,
    plugin: &stilts_plugin::host::Plugin,
) -> Result<(), ReplayError> {
    for class in classes_played(scenario) {
        let (status, code, message) = world_upstream::upstream_error(dialect, class);
        let faults = Faults {
            error_code: Some(code.to_owned()),
            ..Faults::default()
        };
        let (headers, body) = error_parts(
            dialect,
            status,
            &faults,
            message.unwrap_or("replayed fault"),
        );
        let got = plugin
            .classify_error(status, &headers, &body)
            .map(|info| info.class)
            .unwrap_or(ErrorClass::Server);
        if got != class {
            return Err(ReplayError::Unsupported {
                place: format!("scenario \"{}\"", scenario.name),
                problem: format!(
                    "the error class {class} is played as HTTP {status} ({code}), which the {plugin_name} plugin classifies as {got}"
                ),
                fix: "simulate this scenario only, or change the class".to_owned(),
            });
        }
    }
    Ok(())
}

/// Replays one config; returns what the gateway and the client saw.
async fn run_config(
    scenario: &Arc<Scenario>,
    seed: u64,
    config: &ConfigUnderTest,
    requests: &Arc<Vec<stilts_sim::Request>>,
    options: &ReplayOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Measured, ReplayError> {
    if config.replicas.count > 1 {
        return Err(ReplayError::Unsupported {
            place: format!("config \"{}\"", config.name),
            problem: format!(
                "it runs {} replicas; replay drives one gateway",
                config.replicas.count
            ),
            fix: "replay another config (--config NAME), or simulate this one only".to_owned(),
        });
    }
    let clock = Clock::compressed(options.speed);
    let mut upstreams = Vec::with_capacity(config.world_index.len());
    for &world in &config.world_index {
        let planner = world_upstream::WorldPlanner::new(
            Arc::clone(scenario),
            world,
            Arc::clone(requests),
            clock,
        );
        let planner = Arc::new(planner);
        planner.watch_capacity();
        let mut mock = MockConfig::named(&scenario.providers[world].name);
        mock.planner = Some(planner);
        upstreams.push(MockUpstream::start_local(mock).await?);
    }
    let valid = gateway_config(scenario, config, &upstreams, options)?;
    let dialects: BTreeSet<bool> = config
        .config
        .providers
        .iter()
        .map(|p| p.prefill_continuation)
        .collect();
    for prefill in dialects {
        let (dialect, name) = dialect_of(prefill);
        let plugin_path = stilts_gateway::plugins::resolve(
            &PluginRef::Name(name.to_owned()),
            valid.server.plugin_dir.as_deref(),
            &valid.base_dir,
        )
        .map_err(|e| ReplayError::Gateway(e.to_string()))?;
        let plugin = stilts_plugin::host::Plugin::load(&plugin_path)
            .map_err(|e| ReplayError::Gateway(format!("{}: {e}", plugin_path.display())))?;
        check_error_mapping(scenario, dialect, name, &plugin)?;
    }
    let gateway = Gateway::with_clock(&valid, clock, Some(seed))
        .map_err(|e| ReplayError::Gateway(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(stilts_gateway::server::serve(
        gateway.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let sent = client::run(addr, ROUTE, scenario, requests, clock, progress).await;
    let status = gateway.status_json();
    let _ = stop.send(());
    let _ = server.await;
    drop(upstreams);
    Ok(compare::measure(
        scenario,
        config,
        &sent,
        &status["routes"][ROUTE],
    ))
}

/// Router seeds the simulator runs each config with (the world's own first): the spread of its
/// prediction under the router's own randomness.
const ROUTER_SEEDS: u64 = 8;

/// Most requests one replay sends per config (each is kept until the comparison).
const MAX_REPLAY_REQUESTS: u64 = 1_000_000;

/// The route every replayed request asks for.
const ROUTE: &str = "replay";

/// A gateway config serving `config` as route [`ROUTE`]: the config's own validated router (the
/// very value the simulator runs), one deployment per provider, on the fake upstreams.
fn gateway_config(
    scenario: &Scenario,
    config: &ConfigUnderTest,
    upstreams: &[MockUpstream],
    options: &ReplayOptions,
) -> Result<stilts_config::ValidGateway, ReplayError> {
    let mut template = GatewayConfig::default();
    template.server.plugin_dir.clone_from(&options.plugin_dir);
    template.server.reload_poll_ms = Some(0);
    template.server.listen = Some("127.0.0.1:0".to_owned());
    // The load client keeps a connection per request in flight; hangs hold theirs.
    template.server.max_connections = Some(100_000);
    template.routes.insert(
        ROUTE.to_owned(),
        stilts_config::RouteConfig {
            kind: stilts_config::RouteKind::Chat,
            router: stilts_core::RouterConfig::default(),
            deployments: vec![stilts_config::DeploymentTable {
                name: "template".to_owned(),
                plugin: "openai".to_owned(),
                model: "template".to_owned(),
                ..Default::default()
            }],
        },
    );
    let mut valid = template
        .validate(std::path::Path::new("."))
        .map_err(|e| ReplayError::Gateway(e.to_string()))?;
    let deployments = config
        .config
        .providers
        .iter()
        .zip(&config.world_index)
        .zip(upstreams)
        .map(|((p, &world), upstream)| DeploymentSettings {
            name: p.name.clone(),
            plugin: PluginRef::Name(dialect_of(p.prefill_continuation).1.to_owned()),
            base_url: upstream.base_url(),
            api_key_env: None,
            model: scenario.providers[world].model.clone(),
            extra_headers: Vec::new(),
            options: serde_json::Map::new(),
            prefill_continuation: p.prefill_continuation,
        })
        .collect();
    valid.routes = vec![ValidRoute {
        name: ROUTE.to_owned(),
        kind: stilts_config::RouteKind::Chat,
        router: config.config.clone(),
        deployments,
    }];
    Ok(valid)
}
