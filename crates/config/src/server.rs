//! The `[server]` table: the listener, client limits, keys and reload settings, and their
//! validation into [`ServerSettings`] (every time limit from 100 ms to a day, every count capped).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use stilts_core::ConfigError;

/// The `[server]` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback only).
    pub listen: Option<String>,
    /// Largest request body accepted, in bytes. Default 4 MiB.
    pub body_limit_bytes: Option<usize>,
    /// Environment variables holding client keys. When any is set, requests to `/v1/*` and
    /// `/status` need `Authorization: Bearer <one of them>`. Default: none (no client auth).
    pub client_keys_env: Vec<String>,
    /// Directory searched for plugins named by short name (`plugin = "openai"`). Default: the
    /// `STILTS_PLUGIN_DIR` environment variable, then the directory of the `stilts` binary.
    pub plugin_dir: Option<PathBuf>,
    /// How long a shutdown waits for in-flight requests. Default 30 000.
    pub shutdown_grace_ms: Option<u64>,
    /// How often the config file is checked for changes. Default 1 000; 0 disables the watch
    /// (SIGHUP still reloads).
    pub reload_poll_ms: Option<u64>,
    /// Async worker threads. Default: one per core the process may run on; 1 runs the gateway on
    /// a single-threaded runtime. `stilts serve --worker-threads` overrides it. Read at start.
    pub worker_threads: Option<usize>,
    /// Time a client has to send a whole request head, from accept (or from the first byte of a
    /// later request on a kept-alive connection). Default 10 000. Read at start.
    pub header_read_timeout_ms: Option<u64>,
    /// Time a client has to send a whole request body once its head arrived. Default 30 000.
    pub body_read_timeout_ms: Option<u64>,
    /// Time a kept-alive connection may sit with no request and no bytes. Default 60 000. Read at
    /// start.
    pub idle_timeout_ms: Option<u64>,
    /// Open client connections at most; beyond it a new connection gets a 503 and is closed.
    /// Default 10 000, lowered at start to half the process's file descriptor limit. Read at start.
    pub max_connections: Option<usize>,
    /// Longest a config reload may take (reading plugins, building clients) before it is given up
    /// and counted as refused, the old config serving on. Default 10 000.
    pub reload_timeout_ms: Option<u64>,
    /// Environment variables holding keys for `GET /metrics`. When any is set, scrapes need
    /// `Authorization: Bearer <one of them>`. Default: none (open, for scrapers on a private
    /// network).
    pub metrics_keys_env: Vec<String>,
}

/// Validated `[server]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Body size limit.
    pub body_limit_bytes: usize,
    /// Variables holding client keys.
    pub client_keys_env: Vec<String>,
    /// Plugin directory, if configured.
    pub plugin_dir: Option<PathBuf>,
    /// Drain time at shutdown.
    pub shutdown_grace: Duration,
    /// File-watch interval, `None` when disabled.
    pub reload_poll: Option<Duration>,
    /// Async worker threads, if set (≥ 1).
    pub worker_threads: Option<usize>,
    /// Time for a whole request head.
    pub header_read_timeout: Duration,
    /// Time for a whole request body.
    pub body_read_timeout: Duration,
    /// Idle keep-alive limit.
    pub idle_timeout: Duration,
    /// Client connection limit (before the file descriptor clamp).
    pub max_connections: usize,
    /// Reload time limit.
    pub reload_timeout: Duration,
    /// Variables holding metrics keys.
    pub metrics_keys_env: Vec<String>,
}

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Most async worker threads a config may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;
/// Default body limit: 4 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;

impl ServerConfig {
    pub(crate) fn validate(&self) -> Result<ServerSettings, ConfigError> {
        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!("\"{listen_text}\" is not an IP address and port"),
                "write it as \"127.0.0.1:8080\" (or \"0.0.0.0:8080\" to listen on every interface)",
            )
        })?;
        let body_limit_bytes = self.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT);
        if body_limit_bytes < 1024 {
            return Err(ConfigError::new(
                "server.body_limit_bytes",
                format!("{body_limit_bytes} is too small for any chat request"),
                "use at least 1024, e.g. 4194304 (4 MiB)",
            ));
        }
        for (field, vars) in [
            ("client_keys_env", &self.client_keys_env),
            ("metrics_keys_env", &self.metrics_keys_env),
        ] {
            for (i, var) in vars.iter().enumerate() {
                if var.trim().is_empty() {
                    return Err(ConfigError::new(
                        format!("server.{field}[{i}]"),
                        "is empty",
                        "name an environment variable such as STILTS_CLIENT_KEY",
                    ));
                }
            }
        }
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=MAX_CONNECTIONS_CAP).contains(&max_connections) {
            return Err(ConfigError::new(
                "server.max_connections",
                format!(
                    "{max_connections} is not a connection count from 1 to {MAX_CONNECTIONS_CAP}"
                ),
                "use e.g. 10000, or remove it for the default",
            ));
        }
        Ok(ServerSettings {
            listen,
            body_limit_bytes,
            client_keys_env: self.client_keys_env.clone(),
            plugin_dir: self.plugin_dir.clone(),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms.unwrap_or(30_000)),
            reload_poll: match self.reload_poll_ms.unwrap_or(1_000) {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            worker_threads: match self.worker_threads {
                Some(n) if n == 0 || n > MAX_WORKER_THREADS => {
                    return Err(ConfigError::new(
                        "server.worker_threads",
                        format!("{n} is not a worker count from 1 to {MAX_WORKER_THREADS}"),
                        "use 1 (a single-threaded runtime) up to the number of cores, or remove it for one per core",
                    ));
                }
                n => n,
            },
            header_read_timeout: client_limit(
                "header_read_timeout_ms",
                self.header_read_timeout_ms,
                10_000,
            )?,
            body_read_timeout: client_limit(
                "body_read_timeout_ms",
                self.body_read_timeout_ms,
                30_000,
            )?,
            idle_timeout: client_limit("idle_timeout_ms", self.idle_timeout_ms, 60_000)?,
            max_connections,
            reload_timeout: client_limit("reload_timeout_ms", self.reload_timeout_ms, 10_000)?,
            metrics_keys_env: self.metrics_keys_env.clone(),
        })
    }
}

/// Default `server.max_connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest `server.max_connections`.
const MAX_CONNECTIONS_CAP: usize = 1_000_000;

/// A `[server]` time limit in ms: from 100 ms to a day, or the default.
fn client_limit(field: &str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        ms @ 100..=86_400_000 => Ok(Duration::from_millis(ms)),
        ms => Err(ConfigError::new(
            format!("server.{field}"),
            format!("{ms} ms is outside 100 ms to one day"),
            format!("use a value from 100 to 86400000, or remove it for the default ({default})"),
        )),
    }
}
