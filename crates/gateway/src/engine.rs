//! The gateway: its live routes, reloads, client auth and status; the entry of every request.
//!
//! [`Gateway`] is the library API: build it from a validated config, then call
//! [`Gateway::chat`] with a canonical request body; it answers with a whole completion or a live
//! stream, and never needs HTTP on the client side. The axum server in [`crate::server`] is a thin
//! layer over it.
//!
//! One route holds one [`Router`] behind a `std::sync::Mutex`, together with the deployments the
//! router's provider indexes refer to; both are swapped together on reload, so a provider id is
//! always resolved against the config that produced it. The lock is held only around a decision or
//! a record (about 100 ns), never across an await. Each request then runs in `crate::driver`.
//!
//! Time: the core's [`CoreInstant`] is nanoseconds since the Unix epoch, read once at start and
//! then advanced by a monotonic `std::time::Instant` (a wall-clock step never moves it), so
//! replicas on different hosts share one time line (for shared state, see `crate::cluster`) and
//! spend periods turn at UTC multiples of their length. The same origin converts the router's
//! deadlines back into tokio timers. Replay runs the clock faster than wall time from zero
//! ([`Clock::compressed`]).

mod reload;
mod status;

pub use reload::ReloadTicket;

use bytes::Bytes;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use stilts_core::{Instant as CoreInstant, RequestMeta, Router};
use tokio::time::Instant as TokioInstant;

use crate::config::{ServerSettings, ValidGateway};
use crate::driver::{CallGuard, Driver};
use crate::error::ApiError;
use crate::metrics::{Metrics, RouteMetrics};
use crate::plugins::PluginCache;
use crate::stream::ChunkStream;
use crate::upstream::Deployment;

/// Nanosecond time for the core, from one process-wide origin.
///
/// Normally core time is wall time. [`Clock::compressed`] makes it run `speed` times faster, for
/// `stilts replay`: every limit the router decides (stage timeouts, breaker open times,
/// cool-downs, backoffs, hedge delays, deadlines) then passes `speed` times sooner in wall time,
/// so a scenario's hour is replayed in minutes with the same decisions due. Only the core's time is
/// compressed: the server's own limits (header read, idle, connect) and the metrics stay in wall
/// time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
    /// Core time at `origin`: nanoseconds since the Unix epoch (0 for a compressed clock).
    epoch: u64,
    /// Core nanoseconds per wall nanosecond (1 outside replay).
    speed: f64,
}

impl Default for Clock {
    fn default() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            origin: std::time::Instant::now(),
            epoch: u64::try_from(since_epoch.as_nanos()).unwrap_or(0),
            speed: 1.0,
        }
    }
}

impl Clock {
    /// A clock on which core time runs `speed` times faster than wall time (from now). A speed
    /// that is not a finite number ≥ 1 is taken as 1.
    pub fn compressed(speed: f64) -> Self {
        Clock {
            origin: std::time::Instant::now(),
            epoch: 0,
            speed: if speed.is_finite() && speed >= 1.0 {
                speed
            } else {
                1.0
            },
        }
    }

    /// Core nanoseconds per wall nanosecond.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Now, for the core.
    pub fn now(&self) -> CoreInstant {
        let wall = self.origin.elapsed();
        let nanos = if self.speed == 1.0 {
            u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX)
        } else {
            // f64 holds 2^53 ns (104 days) exactly; a replay lasts minutes.
            (wall.as_nanos() as f64 * self.speed) as u64
        };
        CoreInstant::from_nanos(self.epoch.saturating_add(nanos))
    }

    /// A core instant as a tokio timer deadline.
    pub fn tokio(&self, at: CoreInstant) -> TokioInstant {
        let core = Duration::from_nanos(at.as_nanos().saturating_sub(self.epoch))
            .min(Duration::from_secs(86_400 * 365));
        let wall = if self.speed == 1.0 {
            core
        } else {
            // Round up: a timer must never fire before the core instant it stands for.
            Duration::from_nanos((core.as_nanos() as f64 / self.speed).ceil() as u64)
        };
        TokioInstant::from_std(self.origin) + wall
    }
}

/// Why a config could not be applied (beyond validation): a plugin, a key, a client.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct BuildError {
    /// Dotted path of the deployment.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

pub(crate) struct RouteState {
    pub router: Router,
    pub deployments: Vec<Arc<Deployment>>,
    /// Some deployment may continue a cut stream exactly.
    pub continuation: bool,
}

/// One route: its router and deployments, kept across reloads by name.
pub(crate) struct Route {
    pub name: String,
    pub state: Mutex<RouteState>,
    pub metrics: RouteMetrics,
    /// When retry-budget exhaustion was last logged (ms on the gateway clock; 0: never).
    pub budget_logged_ms: AtomicU64,
    /// Whether the route serves embeddings (`kind`), set on reload: read on every request without
    /// taking the router's lock.
    pub embeddings: std::sync::atomic::AtomicBool,
}

impl Route {
    /// What the route serves.
    pub fn kind(&self) -> stilts_config::RouteKind {
        if self.embeddings.load(Ordering::Relaxed) {
            stilts_config::RouteKind::Embeddings
        } else {
            stilts_config::RouteKind::Chat
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, RouteState> {
        // A panic while holding the lock cannot leave the router half-updated in a way that
        // matters more than refusing all traffic would, so keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One applied config.
pub(crate) struct Generation {
    pub routes: HashMap<String, Arc<Route>>,
    pub route_names: Vec<String>,
    pub server: ServerSettings,
    pub client_keys: Vec<String>,
    pub metrics_keys: Vec<String>,
}

struct Shared {
    current: RwLock<Arc<Generation>>,
    plugins: PluginCache,
    clock: Clock,
    /// Seeds every route's router, when set ([`Gateway::with_clock`]).
    router_seed: Option<u64>,
    metrics: Metrics,
    /// Serialises reloads.
    reload: Mutex<()>,
    /// The server settings the gateway was built with: the ones a restart-only change (listen
    /// address, workers) is compared with.
    started: ServerSettings,
    /// `[cluster]` as the gateway was built with (read at start).
    cluster: Option<stilts_config::ClusterSettings>,
    /// Whether the shared-state exchange runs (it is started once).
    cluster_running: std::sync::atomic::AtomicBool,
    /// The last `/metrics` rendering (both text forms) and when it began: scrapes that arrived
    /// before it began wait for it and share it, so a storm of scrapes costs one or two renders.
    scrape: tokio::sync::Mutex<Option<(std::time::Instant, crate::metrics::Exposition)>>,
    /// Scrapes waiting or rendering, at most [`MAX_WAITING_SCRAPES`].
    scrape_turns: tokio::sync::Semaphore,
    /// Held while the gauges are refreshed and everything is encoded.
    render: Mutex<()>,
}

/// Scrapes of `/metrics` that may wait at once; more are answered 503.
const MAX_WAITING_SCRAPES: usize = 8;

/// Whether `presented` is one of `keys` (compared in constant time); `true` when `keys` is empty.
fn key_allowed(keys: &[String], presented: Option<&str>) -> bool {
    if keys.is_empty() {
        return true;
    }
    let Some(presented) = presented else {
        return false;
    };
    keys.iter().fold(false, |ok, key| {
        ok | constant_time_eq(key.as_bytes(), presented.as_bytes())
    })
}

/// The gateway: live routes, plugins, metrics and the request driver. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.generation().route_names)
            .finish_non_exhaustive()
    }
}

/// What a chat call produced.
pub enum ChatReply {
    /// A whole `chat.completion` body.
    Complete {
        /// The deployment that served.
        provider: String,
        /// Attempts made.
        attempts: u32,
        /// Canonical JSON.
        body: Bytes,
    },
    /// A live stream of SSE bytes (`data: {chunk}\n\n` … `data: [DONE]\n\n`), already past its
    /// first token.
    Stream {
        /// The deployment that produced the first token.
        provider: String,
        /// Attempts made before the first token.
        attempts: u32,
        /// The SSE bytes.
        stream: ChunkStream,
    },
}

impl std::fmt::Debug for ChatReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatReply::Complete {
                provider, attempts, ..
            } => write!(f, "Complete({provider}, {attempts} attempts)"),
            ChatReply::Stream {
                provider, attempts, ..
            } => write!(f, "Stream({provider}, {attempts} attempts)"),
        }
    }
}

/// The few request fields the gateway reads; the rest goes to the plugin untouched.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: std::borrow::Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream_options: Option<StreamOptionsPeek>,
    #[allow(dead_code)] // reason: only its presence is checked
    messages: Vec<serde::de::IgnoredAny>,
}

/// The client's `stream_options`: whether it asked for the final usage chunk.
#[derive(serde::Deserialize)]
struct StreamOptionsPeek {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Output tokens assumed when the request sets no limit.
const DEFAULT_OUTPUT_TOKENS: u32 = 512;

impl Gateway {
    /// Builds a gateway from a validated config: loads plugins, reads keys, makes clients.
    pub fn new(config: &ValidGateway) -> Result<Self, BuildError> {
        Self::with_clock(config, Clock::default(), None)
    }

    /// Like [`Gateway::new`], with the routers on `clock` (a [`Clock::compressed`] one for
    /// replay) and, with `router_seed`, every route's router seeded with it: `stilts replay`
    /// passes the simulator's seed, so the gateway's routers make the same random draws (open-time
    /// jitter, weighted picks, backoffs) as the simulator's. `None`: a seed per route and process,
    /// so replicas do not march in step.
    pub fn with_clock(
        config: &ValidGateway,
        clock: Clock,
        router_seed: Option<u64>,
    ) -> Result<Self, BuildError> {
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(Generation {
                routes: HashMap::new(),
                route_names: Vec::new(),
                server: config.server.clone(),
                client_keys: Vec::new(),
                metrics_keys: Vec::new(),
            })),
            scrape: tokio::sync::Mutex::new(None),
            scrape_turns: tokio::sync::Semaphore::new(MAX_WAITING_SCRAPES),
            render: Mutex::new(()),
            plugins: PluginCache::default(),
            clock,
            router_seed,
            metrics: Metrics::with_cluster(config.cluster.is_some()),
            reload: Mutex::new(()),
            started: config.server.clone(),
            cluster: config.cluster.clone(),
            cluster_running: std::sync::atomic::AtomicBool::new(false),
        });
        let gateway = Gateway { shared };
        gateway.apply(config, &ReloadTicket::default())?;
        Ok(gateway)
    }

    pub(crate) fn generation(&self) -> Arc<Generation> {
        self.shared
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `[cluster]` as the gateway was built with.
    pub fn cluster_settings(&self) -> Option<&stilts_config::ClusterSettings> {
        self.shared.cluster.as_ref()
    }

    /// Claims the one shared-state exchange of this gateway: `true` unless one runs.
    pub(crate) fn claim_cluster(&self) -> bool {
        !self.shared.cluster_running.swap(true, Ordering::SeqCst)
    }

    /// The exchange stopped: a later [`crate::cluster::spawn`] may start another.
    pub(crate) fn release_cluster(&self) {
        self.shared.cluster_running.store(false, Ordering::SeqCst);
    }

    /// Every route's [`stilts_core::ReplicaReport`] at `now`, for the sibling replicas.
    pub(crate) fn shared_reports(
        &self,
        now: CoreInstant,
    ) -> Vec<(String, stilts_core::ReplicaReport)> {
        let generation = self.generation();
        generation
            .route_names
            .iter()
            .filter_map(|name| {
                let route = generation.routes.get(name)?;
                let report = route.lock().router.shared_report(now);
                Some((name.clone(), report))
            })
            .collect()
    }

    /// Hands each route the view its siblings' reports make (`view_of` is asked per route).
    pub(crate) fn apply_shared(
        &self,
        now: CoreInstant,
        mut view_of: impl FnMut(&str) -> stilts_core::SharedView,
    ) {
        let generation = self.generation();
        for name in &generation.route_names {
            if let Some(route) = generation.routes.get(name) {
                let view = view_of(name);
                route.lock().router.apply_shared(&view, now);
            }
        }
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The clock the router runs on.
    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    /// Server settings in force.
    pub fn server_settings(&self) -> ServerSettings {
        self.generation().server.clone()
    }

    /// The server settings the gateway was built with (before any reload).
    pub fn started_settings(&self) -> &ServerSettings {
        &self.shared.started
    }

    /// The request body's size and time limits in force (without cloning the server settings:
    /// read per request).
    pub fn body_limits(&self) -> (usize, Duration) {
        let generation = self.generation();
        (
            generation.server.body_limit_bytes,
            generation.server.body_read_timeout,
        )
    }

    /// Route names, sorted.
    pub fn route_names(&self) -> Vec<String> {
        self.generation().route_names.clone()
    }

    /// Whether `presented` (a bearer token) is allowed; `true` when no client keys are set.
    pub fn client_allowed(&self, presented: Option<&str>) -> bool {
        key_allowed(&self.generation().client_keys, presented)
    }

    /// Whether `presented` may scrape `/metrics`; `true` when no metrics keys are set.
    pub fn metrics_allowed(&self, presented: Option<&str>) -> bool {
        key_allowed(&self.generation().metrics_keys, presented)
    }

    /// Routes a chat completion request (canonical JSON bytes).
    ///
    /// `deadline` shortens the route's deadline for this request.
    pub async fn chat(
        &self,
        body: Bytes,
        deadline: Option<Duration>,
    ) -> Result<ChatReply, ApiError> {
        let started = std::time::Instant::now();
        // UTF-8 first: serde_json skips the strings of the fields the peek ignores (the
        // messages) without checking it.
        let peek: Peek<'_> = std::str::from_utf8(&body)
            .map_err(<serde_json::Error as serde::de::Error>::custom)
            .and_then(serde_json::from_str)
            .map_err(|e| {
                crate::driver::access_refused("-", 400, started);
                ApiError::invalid_request(format!("the body is not a chat completion request: {e}"))
            })?;
        let route = self
            .route_of(&peek.model, stilts_config::RouteKind::Chat, started)
            .map_err(|e| *e)?;
        let meta = RequestMeta {
            input_tokens: u32::try_from(body.len() / 4).unwrap_or(u32::MAX),
            output_tokens: peek
                .max_completion_tokens
                .or(peek.max_tokens)
                .unwrap_or(DEFAULT_OUTPUT_TOKENS),
            stream: peek.stream == Some(true),
            deadline,
        };
        let usage_chunks = peek
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let driver = self.driver(route, meta, started, deadline, usage_chunks);
        if meta.stream {
            driver.stream(body).await
        } else {
            driver
                .complete(body, crate::upstream::Operation::Chat)
                .await
        }
    }

    /// The live route named `name`, serving `kind`: else the client's error (404 naming the
    /// routes, or 400 naming the route's kind), counted and logged.
    pub(crate) fn route_of(
        &self,
        name: &str,
        kind: stilts_config::RouteKind,
        started: std::time::Instant,
    ) -> Result<Arc<Route>, Box<ApiError>> {
        let generation = self.generation();
        let Some(route) = generation.routes.get(name).cloned() else {
            self.shared
                .metrics
                .request_failed("unknown", "unknown_route");
            let mut e = ApiError::plain(
                axum::http::StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!(
                    "no route named \"{}\"; routes: {}",
                    crate::log_safe::escape(name),
                    generation.route_names.join(", ")
                ),
            );
            crate::driver::access_refused(name, 404, started);
            e.route = Some(name.to_owned());
            return Err(Box::new(e));
        };
        let serves = route.kind();
        if serves != kind {
            crate::driver::access_refused(name, 400, started);
            let mut e = ApiError::plain(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "wrong_route_kind",
                format!(
                    "route \"{name}\" serves {}, not {}: {}",
                    serves.as_str(),
                    kind.as_str(),
                    match serves {
                        stilts_config::RouteKind::Embeddings => "send it to POST /v1/embeddings",
                        stilts_config::RouteKind::Chat => {
                            "send chat requests to it, or embeddings to a route with kind = \"embeddings\""
                        }
                    }
                ),
            );
            e.route = Some(name.to_owned());
            return Err(Box::new(e));
        }
        Ok(route)
    }

    /// The driver of one request on `route`.
    pub(crate) fn driver(
        &self,
        route: Arc<Route>,
        meta: RequestMeta,
        started: std::time::Instant,
        deadline: Option<Duration>,
        usage_chunks: bool,
    ) -> Driver {
        Driver {
            gateway: self.clone(),
            guard: CallGuard::begin(route, self.shared.clock, meta),
            started,
            waited: Duration::ZERO,
            local: Arc::new(AtomicU64::new(0)),
            tried: Vec::new(),
            refused: 0,
            client_deadline: deadline,
            usage_chunks,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
