//! Applying a config to the live gateway, all or nothing: each route's deployments are built
//! first (plugins, keys, clients), then the new generation is swapped in under the reload lock,
//! unless its [`ReloadTicket`] was abandoned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stilts_core::Router;
use stilts_plugin::host::Plugin;

use super::{BuildError, Gateway, Generation, Route, RouteState};
use crate::config::{ValidGateway, ValidRoute};
use crate::plugins;
use crate::upstream::Deployment;

/// The fate of one reload, decided once: by its worker when it is about to swap the new config
/// in, or by the caller when its time limit passes. Whichever claims it first wins, so an
/// abandoned reload never lands and a landing one is never reported as abandoned.
#[derive(Debug, Default)]
pub struct ReloadTicket(std::sync::atomic::AtomicU8);

const RELOAD_PENDING: u8 = 0;
const RELOAD_APPLYING: u8 = 1;
const RELOAD_ABANDONED: u8 = 2;

impl ReloadTicket {
    /// The worker's claim, just before the swap: `false` if the reload was abandoned.
    pub fn claim_apply(&self) -> bool {
        self.0
            .compare_exchange(
                RELOAD_PENDING,
                RELOAD_APPLYING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// The caller's claim, when its time limit passed: `false` if the reload is being applied.
    pub fn abandon(&self) -> bool {
        self.0
            .compare_exchange(
                RELOAD_PENDING,
                RELOAD_ABANDONED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Whether the caller abandoned it.
    pub fn is_abandoned(&self) -> bool {
        self.0.load(Ordering::Acquire) == RELOAD_ABANDONED
    }
}

/// The keys listed in the environment variables `vars` (each may hold several, comma-separated).
/// A variable that is unset is refused before this runs (`ValidGateway::missing_env_vars`).
fn keys_from_env(vars: &[String]) -> Vec<String> {
    vars.iter()
        .filter_map(|var| std::env::var(var).ok())
        .flat_map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Gateway {
    /// Applies a new config, all or nothing. Routes and deployments that keep their names keep
    /// their breaker, latency, cool-down and counters. On error nothing changes.
    pub fn reload(&self, config: &ValidGateway) -> Result<(), BuildError> {
        self.reload_unless(config, &ReloadTicket::default())
    }

    /// [`Gateway::reload`] under `ticket`: nothing is applied once the caller abandoned it (see
    /// `server::reload_bounded`), so a reload it stopped waiting for never lands later.
    pub fn reload_unless(
        &self,
        config: &ValidGateway,
        ticket: &ReloadTicket,
    ) -> Result<(), BuildError> {
        let result = self.apply(config, ticket);
        if ticket.is_abandoned() {
            // Counted and logged when it was abandoned.
            return result;
        }
        self.shared.metrics.reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(routes = config.routes.len(), "config applied"),
            Err(e) => {
                tracing::error!(error = %e, "config refused; the previous config keeps serving")
            }
        }
        result
    }

    pub(super) fn apply(
        &self,
        config: &ValidGateway,
        ticket: &ReloadTicket,
    ) -> Result<(), BuildError> {
        let _serial = self.reload_turn(config.server.reload_timeout)?;
        let missing = config.missing_env_vars();
        if !missing.is_empty() {
            let mut vars: Vec<&str> = Vec::new();
            for (_, var) in &missing {
                if !vars.contains(&var.as_str()) {
                    vars.push(var);
                }
            }
            return Err(BuildError {
                path: missing
                    .iter()
                    .map(|(path, _)| path.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                problem: format!(
                    "{} not set; export {} (keys never go in the file)",
                    if vars.len() == 1 {
                        format!("environment variable {} is", vars[0])
                    } else {
                        format!("environment variables {} are", vars.join(", "))
                    },
                    vars.iter()
                        .map(|v| format!("{v}=..."))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            });
        }
        let deployments = config.routes.iter().map(|r| r.deployments.len()).sum();
        let series = crate::metrics::series_bound(config.routes.len(), deployments);
        if series > crate::metrics::SERIES_WARNING {
            tracing::warn!(
                routes = config.routes.len(),
                deployments,
                series,
                "this config can export many metric series; each scrape of /metrics grows with them (see docs/configuration.md, Metrics)"
            );
        }
        // Build everything first; only then touch live state.
        let mut built = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            built.push((route, self.build_deployments(config, route)?));
        }
        let client_keys = keys_from_env(&config.server.client_keys_env);
        let metrics_keys = keys_from_env(&config.server.metrics_keys_env);
        let old = self.generation();
        let mut routes = HashMap::with_capacity(built.len());
        let mut route_names = Vec::with_capacity(built.len());
        for (route, deployments) in built {
            let continuation = route.deployments.iter().any(|d| d.prefill_continuation);
            let live = match old.routes.get(&route.name) {
                Some(existing) => {
                    let mut state = existing.lock();
                    state.router.reconfigure(route.router.clone());
                    state.deployments = deployments;
                    state.continuation = continuation;
                    drop(state);
                    existing.embeddings.store(
                        route.kind == stilts_config::RouteKind::Embeddings,
                        Ordering::Relaxed,
                    );
                    Arc::clone(existing)
                }
                None => Arc::new(Route {
                    name: route.name.clone(),
                    state: Mutex::new(RouteState {
                        router: Router::new(
                            route.router.clone(),
                            self.shared
                                .router_seed
                                .unwrap_or_else(|| seed_for(&route.name)),
                        ),
                        deployments,
                        continuation,
                    }),
                    metrics: self.shared.metrics.route(&route.name),
                    budget_logged_ms: AtomicU64::new(0),
                    embeddings: std::sync::atomic::AtomicBool::new(
                        route.kind == stilts_config::RouteKind::Embeddings,
                    ),
                }),
            };
            route_names.push(route.name.clone());
            routes.insert(route.name.clone(), live);
        }
        route_names.sort();
        if !ticket.claim_apply() {
            return Err(BuildError {
                path: "server.reload_timeout_ms".to_owned(),
                problem: "the reload took longer than the limit and was abandoned; nothing applied"
                    .to_owned(),
            });
        }
        let generation = Arc::new(Generation {
            routes,
            route_names,
            server: config.server.clone(),
            client_keys,
            metrics_keys,
        });
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = generation;
        Ok(())
    }

    /// The reload lock, waited for at most `limit`: a reload stuck inside (a plugin whose
    /// loading hangs) makes the next ones fail fast instead of piling up blocked threads.
    fn reload_turn(&self, limit: Duration) -> Result<std::sync::MutexGuard<'_, ()>, BuildError> {
        let until = std::time::Instant::now() + limit;
        loop {
            match self.shared.reload.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(BuildError {
                        path: "server.reload_timeout_ms".to_owned(),
                        problem: "an earlier reload is still stuck (loading a plugin?); this one was not applied".to_owned(),
                    });
                }
            }
        }
    }

    fn build_deployments(
        &self,
        config: &ValidGateway,
        route: &ValidRoute,
    ) -> Result<Vec<Arc<Deployment>>, BuildError> {
        let mut out = Vec::with_capacity(route.deployments.len());
        for (i, d) in route.deployments.iter().enumerate() {
            let at = |field: &str| format!("routes.{}.deployments[{i}].{field}", route.name);
            let plugin = self
                .load_plugin(config, &d.plugin)
                .map_err(|e| BuildError {
                    path: at("plugin"),
                    problem: e.to_string(),
                })?;
            let info = plugin.describe();
            if route.kind == stilts_config::RouteKind::Embeddings && !plugin.serves_embeddings() {
                return Err(BuildError {
                    path: at("plugin"),
                    problem: format!(
                        "the {} plugin serves no embeddings, and route {} has kind = \"embeddings\"; use a plugin that does (openai) or another kind",
                        info.name, route.name
                    ),
                });
            }
            if d.prefill_continuation && !info.capabilities.prefill_continuation {
                return Err(BuildError {
                    path: at("prefill_continuation"),
                    problem: format!(
                        "the {} plugin does not declare prefill continuation, so a cut stream cannot be continued exactly here; remove the setting",
                        info.name
                    ),
                });
            }
            let api_key = match &d.api_key_env {
                None => None,
                Some(var) => match std::env::var(var) {
                    Ok(v) if !v.is_empty() => Some(stilts_plugin::ApiKey::new(v)),
                    _ => {
                        return Err(BuildError {
                            path: at("api_key_env"),
                            problem: format!(
                                "environment variable {var} is not set; export it (the key itself never goes in the file)"
                            ),
                        });
                    }
                },
            };
            let cfg = stilts_plugin::DeploymentConfig {
                base_url: d.base_url.clone(),
                model: d.model.clone(),
                api_key,
                extra_headers: d.extra_headers.clone(),
                options: d.options.clone(),
            };
            if d.prefill_continuation {
                // The continuation request is built now, once, so an option the plugin cannot
                // use for it is a config error here rather than a failed stream later.
                if let Err(stilts_plugin::host::CallError::BadInput(problem)) =
                    plugin.build_request(CONTINUATION_PROBE.as_bytes(), &cfg)
                {
                    return Err(BuildError {
                        path: at("options"),
                        problem: format!(
                            "the {} plugin cannot build a continuation request for this deployment: {problem}",
                            info.name
                        ),
                    });
                }
            }
            let connect = route.router.providers[i].timeouts.connect;
            let metrics = self.shared.metrics.deployment(&route.name, &d.name);
            let dep = Deployment::new(d.name.clone(), plugin, &cfg, connect, metrics).map_err(
                |problem| BuildError {
                    path: at("name"),
                    problem,
                },
            )?;
            out.push(Arc::new(dep));
        }
        Ok(out)
    }

    fn load_plugin(
        &self,
        config: &ValidGateway,
        plugin: &crate::config::PluginRef,
    ) -> Result<Plugin, plugins::PluginLookupError> {
        let path = plugins::resolve(
            plugin,
            config.server.plugin_dir.as_deref(),
            &config.base_dir,
        )?;
        self.shared.plugins.load(&path)
    }
}

/// A request ending with a partial assistant message: what a continuation sends.
const CONTINUATION_PROBE: &str = r#"{"model":"m","messages":[{"role":"user","content":"Say hello."},{"role":"assistant","content":"Hel"}],"stream":true}"#;

fn seed_for(route: &str) -> u64 {
    // FNV-1a of the name mixed with the process start: reproducible per route name within a
    // run, different across gateways so their random choices do not march in step.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in route.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    h ^ t
}
