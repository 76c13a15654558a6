//! stilts-config: the gateway's configuration file, its TOML form and the validated form the
//! gateway runs; the one place a route's TOML (router + deployments) becomes stilts-core's router
//! config and the deployments' settings, read alike by the gateway and by the simulator (a
//! scenario whose config is a gateway route).
//!
//! Parse, don't validate: [`GatewayConfig`] is what the file says (unknown fields are refused, so a
//! typo never silently falls back to a default); [`GatewayConfig::validate`] checks every value and
//! resolves defaults into a [`ValidGateway`], or returns a [`ConfigError`] naming the dotted path of
//! the field and the fix. Router settings are stilts-core's own [`RouterConfig`] (the `router` table
//! of a route); deployments add what the gateway needs to reach a provider (plugin, base URL, key
//! variable, upstream model) to the core's per-provider settings. `docs/configuration.md` documents
//! every field; `examples/stilts.toml` is a complete commented example.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use stilts_core::config::TimeoutsConfig;
use stilts_core::{ProviderConfig, RouterConfig, ValidConfig};

mod cluster;
mod server;
mod url;
pub use cluster::{ClusterConfig, ClusterSettings, DEFAULT_SYNC_MS, MAX_SYNC_MS, MIN_SYNC_MS};
pub use server::{
    DEFAULT_BODY_LIMIT, DEFAULT_LISTEN, MAX_WORKER_THREADS, ServerConfig, ServerSettings,
};
pub use url::parse_upstream_url;

/// A whole config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Listener, limits and security.
    pub server: ServerConfig,
    /// Routes by name: the `model` a client asks for.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Shared state between replicas, through Redis. Default: none (one process, in memory).
    pub cluster: Option<ClusterConfig>,
}

/// What a route serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// Chat: `/v1/chat/completions`, `/v1/messages`, `/v1/responses`.
    #[default]
    Chat,
    /// Embeddings: `/v1/embeddings`.
    Embeddings,
}

impl RouteKind {
    /// `chat` or `embeddings`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Chat => "chat",
            RouteKind::Embeddings => "embeddings",
        }
    }
}

/// One route: the deployments that can serve it and how to choose among them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// What the route serves: `chat` (the default: chat completions, Messages, Responses) or
    /// `embeddings` (`POST /v1/embeddings`).
    pub kind: RouteKind,
    /// Router settings (policy, deadline, breaker, retries, budget, hedging, timeouts, spend).
    /// Its `providers` list must stay empty: list deployments instead.
    pub router: RouterConfig,
    /// The provider deployments, in preference order.
    pub deployments: Vec<DeploymentTable>,
}

/// One provider deployment: where and how to call it, and its routing settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploymentTable {
    /// Unique name in the route; sent back as `X-Provider` and used in metrics.
    pub name: String,
    /// The plugin: a short name (`openai` finds `libstilts_plugin_openai.so` in the plugin
    /// directory) or a path to a shared library (relative to the config file).
    pub plugin: String,
    /// Base URL including the API version path, e.g. `https://api.openai.com/v1`. Empty: the
    /// plugin's default.
    pub base_url: String,
    /// Environment variable holding the API key. Unset: no key is sent (local servers).
    pub api_key_env: Option<String>,
    /// The upstream model name.
    pub model: String,
    /// Headers added to every upstream request.
    pub extra_headers: BTreeMap<String, String>,
    /// Plugin-specific options, passed to the plugin as is.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Relative share for `weighted` and `round_robin`. Default 1.
    pub weight: Option<u32>,
    /// Preference tier, lower preferred. Default 0.
    pub priority: Option<u32>,
    /// USD per million input tokens. Default 0.
    pub input_usd_per_mtok: Option<f64>,
    /// USD per million output tokens. Default 0.
    pub output_usd_per_mtok: Option<f64>,
    /// Context window in tokens, if known.
    pub context_window: Option<u32>,
    /// Local request limit per minute.
    pub requests_per_minute: Option<u32>,
    /// Local token limit per minute.
    pub tokens_per_minute: Option<u64>,
    /// Opt in to exact continuation of a cut stream on this deployment (the plugin must declare
    /// the capability). Default false.
    pub prefill_continuation: Option<bool>,
    /// Per-stage timeouts overriding the route's.
    pub timeouts: TimeoutsConfig,
}

impl DeploymentTable {
    /// The deployment as the router sees it: its routing fields. The one place they are read,
    /// by the gateway (`RouteConfig::validate`) and by the simulator (a scenario config that is a
    /// gateway route), so a routing field cannot mean one thing in one and another in the other.
    pub fn provider_config(&self) -> ProviderConfig {
        ProviderConfig {
            name: self.name.clone(),
            weight: self.weight,
            priority: self.priority,
            input_usd_per_mtok: self.input_usd_per_mtok,
            output_usd_per_mtok: self.output_usd_per_mtok,
            context_window: self.context_window,
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            prefill_continuation: self.prefill_continuation,
            timeouts: self.timeouts,
        }
    }
}

/// A value that is wrong, where it is (the dotted path in the file's terms) and how to fix it:
/// stilts-core's error, shared by every config of stilts.
pub use stilts_core::ConfigError;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path} is not a valid stilts config: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: {error}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: ConfigError,
    },
}

/// How a deployment names its plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginRef {
    /// A short name, found in the plugin directories.
    Name(String),
    /// An explicit file.
    Path(PathBuf),
}

/// A validated deployment (the routing half lives in the route's [`ValidConfig`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentSettings {
    /// Name (same as the router's provider name at the same index).
    pub name: String,
    /// Plugin.
    pub plugin: PluginRef,
    /// Base URL, possibly empty.
    pub base_url: String,
    /// Key variable.
    pub api_key_env: Option<String>,
    /// Upstream model.
    pub model: String,
    /// Extra headers.
    pub extra_headers: Vec<(String, String)>,
    /// Plugin options.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Opted in to continuation.
    pub prefill_continuation: bool,
}

/// A validated route.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidRoute {
    /// The name clients use as `model`.
    pub name: String,
    /// What it serves.
    pub kind: RouteKind,
    /// The router's validated config; provider `i` is deployment `i`.
    pub router: ValidConfig,
    /// Deployments in config order.
    pub deployments: Vec<DeploymentSettings>,
}

/// A whole validated config.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidGateway {
    /// Server settings.
    pub server: ServerSettings,
    /// Routes in name order.
    pub routes: Vec<ValidRoute>,
    /// Shared state between replicas, when configured.
    pub cluster: Option<ClusterSettings>,
    /// The directory of the config file, for relative plugin paths.
    pub base_dir: PathBuf,
}

impl ValidGateway {
    /// Every environment variable the config names that is unset or empty, with the dotted path
    /// naming it: all of them at once, so a user sets them in one go.
    pub fn missing_env_vars(&self) -> Vec<(String, String)> {
        let unset = |var: &str| std::env::var(var).map_or(true, |v| v.trim().is_empty());
        let mut missing = Vec::new();
        for (field, vars) in [
            ("client_keys_env", &self.server.client_keys_env),
            ("metrics_keys_env", &self.server.metrics_keys_env),
        ] {
            for (i, var) in vars.iter().enumerate() {
                if unset(var) {
                    missing.push((format!("server.{field}[{i}]"), var.clone()));
                }
            }
        }
        if let Some(var) = self
            .cluster
            .as_ref()
            .and_then(|c| c.password_env.as_deref())
            .filter(|v| unset(v))
        {
            missing.push(("cluster.password_env".to_owned(), var.to_owned()));
        }
        for route in &self.routes {
            for (i, d) in route.deployments.iter().enumerate() {
                if let Some(var) = d.api_key_env.as_deref().filter(|v| unset(v)) {
                    missing.push((
                        format!("routes.{}.deployments[{i}].api_key_env", route.name),
                        var.to_owned(),
                    ));
                }
            }
        }
        missing
    }
}

impl GatewayConfig {
    /// Parses TOML text. A field the schema does not know or a value of the wrong type is named
    /// by its line, column and dotted path (`routes.chat.deployments[0].weigth`), with a fix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
        serde_path_to_error::deserialize(de).map_err(|e| schema_error(text, &e))
    }

    /// Reads, parses and validates a file. Relative plugin paths resolve against its directory.
    pub fn load(path: &Path) -> Result<ValidGateway, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw = Self::parse(&text).map_err(|message| ConfigFileError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        raw.validate(&base)
            .map_err(|error| ConfigFileError::Invalid {
                path: path.to_path_buf(),
                error,
            })
    }

    /// Checks every value; `base_dir` anchors relative plugin paths.
    pub fn validate(&self, base_dir: &Path) -> Result<ValidGateway, ConfigError> {
        let server = self.server.validate()?;
        if self.routes.is_empty() {
            return Err(ConfigError::new(
                "routes",
                "is empty",
                "add at least one [routes.NAME] table with deployments",
            ));
        }
        let mut routes = Vec::with_capacity(self.routes.len());
        for (name, route) in &self.routes {
            routes.push(route.validate(name)?);
        }
        let cluster = self
            .cluster
            .as_ref()
            .map(ClusterConfig::validate)
            .transpose()?;
        Ok(ValidGateway {
            server,
            routes,
            cluster,
            base_dir: base_dir.to_path_buf(),
        })
    }
}

/// A schema error as `line L, column C: dotted.path: problem; fix: …`.
fn schema_error(text: &str, e: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let inner = e.inner();
    let problem = inner.message().trim().to_owned();
    let mut path = e.path().to_string();
    // Name an unknown field itself, wherever the deserializer stopped.
    if let Some(field) = problem
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        if path == "." || path.is_empty() {
            path = field.to_owned();
        } else if path.rsplit('.').next() != Some(field) {
            path = format!("{path}.{field}");
        }
    }
    let fix = if problem.starts_with("unknown field") {
        "remove it or correct its spelling (the fields this table takes are listed above; docs/configuration.md describes each)"
    } else if problem.starts_with("invalid type") {
        "write the value as the type named above (a number without quotes, a string in quotes, a list in [ ])"
    } else if problem.starts_with("missing field") {
        "add the field (docs/configuration.md describes it)"
    } else {
        "see docs/configuration.md for the values this field takes"
    };
    let at = inner.span().map(|span| {
        let before = text.get(..span.start).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: ")
    });
    format!("{}{path}: {problem}; fix: {fix}", at.unwrap_or_default())
}

/// Rewrites a core error path (`providers[1].weight`, `breaker.x`) into the file's terms.
fn core_error(route: &str, e: stilts_core::ConfigError) -> ConfigError {
    let path = match e.path.strip_prefix("providers") {
        Some(rest) if rest.starts_with('[') => format!("routes.{route}.deployments{rest}"),
        _ => format!("routes.{route}.router.{}", e.path),
    };
    ConfigError {
        path,
        problem: e.problem,
        fix: e.fix,
    }
}

impl RouteConfig {
    fn validate(&self, name: &str) -> Result<ValidRoute, ConfigError> {
        let at = |field: &str| format!("routes.{name}.{field}");
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
            return Err(ConfigError::new(
                format!("routes.\"{name}\""),
                "is not a usable route name",
                "use 1 to 128 printable characters, e.g. \"chat\" or \"gpt-4o-mini\"",
            ));
        }
        if !self.router.providers.is_empty() {
            return Err(ConfigError::new(
                at("router.providers"),
                "is set",
                format!("list providers as [[routes.{name}.deployments]] instead"),
            ));
        }
        if self.deployments.is_empty() {
            return Err(ConfigError::new(
                at("deployments"),
                "is empty",
                format!("add at least one [[routes.{name}.deployments]] table"),
            ));
        }
        let mut router = self.router.clone();
        let mut deployments = Vec::with_capacity(self.deployments.len());
        for (i, d) in self.deployments.iter().enumerate() {
            let path = |field: &str| format!("routes.{name}.deployments[{i}].{field}");
            if d.plugin.trim().is_empty() {
                return Err(ConfigError::new(
                    path("plugin"),
                    "is empty",
                    "name a plugin such as \"openai\", or give the path of a plugin library",
                ));
            }
            if d.model.trim().is_empty() {
                return Err(ConfigError::new(
                    path("model"),
                    "is empty",
                    "set the upstream model name, e.g. \"gpt-4o-mini\"",
                ));
            }
            if !d.base_url.is_empty() {
                if let Err(problem) = crate::url::parse_upstream_url(&d.base_url) {
                    // A URL with credentials is not echoed: they are secrets.
                    let shown = if d.base_url.contains('@') {
                        "the URL".to_owned()
                    } else {
                        format!("\"{}\"", d.base_url)
                    };
                    return Err(ConfigError::new(
                        path("base_url"),
                        format!("{shown} cannot be used: {problem}"),
                        "write it as \"https://api.openai.com/v1\"",
                    ));
                }
            }
            if let Some(var) = &d.api_key_env {
                if var.trim().is_empty() || var.contains('=') {
                    return Err(ConfigError::new(
                        path("api_key_env"),
                        format!("\"{var}\" is not an environment variable name"),
                        "name the variable that holds the key, e.g. \"OPENAI_API_KEY\" (never the key itself)",
                    ));
                }
            }
            for (header, value) in &d.extra_headers {
                if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(ConfigError::new(
                        path(&format!("extra_headers.{header}")),
                        "is not a valid HTTP header name",
                        "use letters, digits and dashes",
                    ));
                }
                // Refused here, not by every request: an upstream request with this header could
                // never be sent. The value is not echoed (a header may hold a secret).
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(ConfigError::new(
                        path(&format!("extra_headers.{header}")),
                        "is not a valid HTTP header value (it holds a line break or another control character)",
                        "write the value on one line, of visible characters, spaces and tabs",
                    ));
                }
            }
            let plugin = if d.plugin.contains('/')
                || d.plugin.contains('\\')
                || [".so", ".dylib", ".dll"]
                    .iter()
                    .any(|ext| d.plugin.ends_with(ext))
            {
                PluginRef::Path(PathBuf::from(&d.plugin))
            } else {
                PluginRef::Name(d.plugin.clone())
            };
            router.providers.push(d.provider_config());
            deployments.push(DeploymentSettings {
                name: d.name.clone(),
                plugin,
                base_url: d.base_url.clone(),
                api_key_env: d.api_key_env.clone(),
                model: d.model.clone(),
                extra_headers: d
                    .extra_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                options: d.options.clone(),
                prefill_continuation: d.prefill_continuation.unwrap_or(false),
            });
        }
        let valid = router.validate().map_err(|e| core_error(name, e))?;
        Ok(ValidRoute {
            name: name.to_owned(),
            kind: self.kind,
            router: valid,
            deployments,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [routes.chat]
        router = { policy = "priority" }
        [[routes.chat.deployments]]
        name = "a"
        plugin = "openai"
        model = "m"
        [[routes.chat.deployments]]
        name = "b"
        plugin = "./libx.so"
        model = "m2"
        weight = 0
    "#;

    #[test]
    fn core_errors_are_reported_in_file_terms() {
        let raw = GatewayConfig::parse(MINIMAL).unwrap();
        let e = raw.validate(Path::new(".")).unwrap_err();
        assert_eq!(e.path, "routes.chat.deployments[1].weight");
        let mut raw = raw;
        if let Some(r) = raw.routes.get_mut("chat") {
            r.deployments[1].weight = None;
            r.router.breaker.failure_rate = Some(3.0);
        }
        let e = raw.validate(Path::new(".")).unwrap_err();
        assert_eq!(e.path, "routes.chat.router.breaker.failure_rate");
    }

    #[test]
    fn defaults_bind_loopback_and_plugin_refs_resolve() {
        let raw = GatewayConfig::parse(&MINIMAL.replace("weight = 0", "")).unwrap();
        let v = raw.validate(Path::new(".")).unwrap();
        assert_eq!(v.server.listen.to_string(), DEFAULT_LISTEN);
        assert!(v.server.listen.ip().is_loopback());
        let r = &v.routes[0];
        assert_eq!(r.deployments[0].plugin, PluginRef::Name("openai".into()));
        assert_eq!(
            r.deployments[1].plugin,
            PluginRef::Path(PathBuf::from("./libx.so"))
        );
        assert_eq!(r.router.providers[1].name, "b");
    }

    /// Every routing field of a provider is a deployment field, read by `provider_config` (which
    /// the gateway and the simulator both use). A field added to `ProviderConfig` breaks this
    /// struct literal; once added here, the deployment table must accept it (unknown fields are
    /// refused) and `provider_config` must carry it, or the test fails.
    #[test]
    fn every_routing_field_of_a_deployment_reaches_the_router() {
        let full = ProviderConfig {
            name: "a".into(),
            weight: Some(3),
            priority: Some(2),
            input_usd_per_mtok: Some(1.5),
            output_usd_per_mtok: Some(6.0),
            context_window: Some(128_000),
            requests_per_minute: Some(500),
            tokens_per_minute: Some(90_000),
            prefill_continuation: Some(true),
            timeouts: TimeoutsConfig {
                connect_ms: Some(1_500),
                headers_ms: Some(7_000),
                first_token_ms: Some(6_000),
                stall_ms: Some(4_000),
                attempt_ms: Some(90_000),
                plain_headers_ms_per_output_token: Some(40),
            },
        };
        let mut table = serde_json::to_value(&full).unwrap();
        table["plugin"] = "openai".into();
        table["model"] = "m".into();
        let deployment: DeploymentTable = serde_json::from_value(table)
            .expect("a ProviderConfig field the deployment table does not have");
        assert_eq!(deployment.provider_config(), full);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = GatewayConfig::parse("[server]\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(
            e.starts_with("line 2, column 1: server.listen_addr: unknown field"),
            "{e}"
        );
        assert!(e.contains("fix: remove it or correct its spelling"), "{e}");
        let e =
            GatewayConfig::parse(&MINIMAL.replace("model = \"m\"", "modle = \"m\"")).unwrap_err();
        assert!(
            e.contains("routes.chat.deployments[0].modle: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_are_named_by_dotted_path_with_a_fix() {
        let e =
            GatewayConfig::parse(&MINIMAL.replace("weight = 0", "weight = \"heavy\"")).unwrap_err();
        assert!(
            e.contains("routes.chat.deployments[1].weight: invalid type"),
            "{e}"
        );
        assert!(e.contains("fix: write the value as the type"), "{e}");
        assert!(e.starts_with("line "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = GatewayConfig::parse("[server]\nmax_connections = -3\n").unwrap_err();
        assert!(e.contains("server.max_connections"), "{e}");
    }

    #[test]
    fn worker_threads_must_be_from_1_to_the_cap() {
        let with = |n: usize| {
            let text = format!(
                "[server]\nworker_threads = {n}\n{}",
                MINIMAL.replace("weight = 0", "")
            );
            GatewayConfig::parse(&text)
                .unwrap()
                .validate(Path::new("."))
        };
        assert_eq!(with(1).unwrap().server.worker_threads, Some(1));
        assert_eq!(
            with(MAX_WORKER_THREADS).unwrap().server.worker_threads,
            Some(MAX_WORKER_THREADS)
        );
        for bad in [0, MAX_WORKER_THREADS + 1, 100_000] {
            assert_eq!(
                with(bad).unwrap_err().path,
                "server.worker_threads",
                "{bad}"
            );
        }
    }

    #[test]
    fn base_urls_are_checked_and_credentials_never_echoed() {
        let with = |url: &str| {
            let text = MINIMAL.replace("weight = 0", "").replace(
                "model = \"m\"\n",
                &format!("model = \"m\"\nbase_url = \"{url}\"\n"),
            );
            GatewayConfig::parse(&text)
                .unwrap()
                .validate(Path::new("."))
        };
        assert!(with("http://127.0.0.1:11434/v1").is_ok());
        let e = with("https://api.example.com:99999/v1").unwrap_err();
        assert_eq!(e.path, "routes.chat.deployments[0].base_url");
        assert!(e.to_string().contains("port"), "{e}");
        let e = with("ftp://files.example.com/v1").unwrap_err();
        assert!(e.to_string().contains("\"ftp\""), "{e}");
        let e = with("https://user:s3cret@api.example.com/v1").unwrap_err();
        assert!(e.to_string().contains("credentials"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn providers_in_router_table_are_refused() {
        let text = "[routes.r.router]\n[[routes.r.router.providers]]\nname = \"x\"\n";
        let e = GatewayConfig::parse(text)
            .unwrap()
            .validate(Path::new("."))
            .unwrap_err();
        assert_eq!(e.path, "routes.r.router.providers");
    }
}
