//! stilts-gateway: the tokio + axum + hyper driver of stilts-core; the OpenAI-compatible HTTP
//! gateway, and the fault-injecting fake upstream used by the demo, the tests and the bench.
//!
//! The core decides; this crate performs. For each request the [`Gateway`] asks the route's
//! router what to do, sends attempts through the deployment's plugin (loaded at run time from a
//! shared library) over HTTP (`http_client`: hyper's pooled client with rustls, or reqwest
//! when a proxy is configured), enforces every stage's timeout, and records each outcome. It can
//! be embedded as a library ([`Gateway::chat`]) or served over HTTP ([`server::serve`]).
//!
//! * [`config`]: the TOML config and its validation.
//! * [`engine`]: the [`Gateway`], its routes and the request loop.
//! * `upstream` / `stream`: one attempt over HTTP; streams with failover before the first token and
//!   exact continuation or an error event after it.
//! * [`server`]: the axum endpoints, graceful shutdown, file-watch and SIGHUP reloads.
//! * [`listener`]: accepting client connections under time and count limits, and draining.
//! * [`metrics`]: Prometheus metrics.
//! * [`log_safe`]: escaping outside text for logs, and scrubbing keys in every encoding.
//! * [`plugins`]: finding and loading plugin libraries.
//! * [`mock`]: the fake upstream; [`demo`]: the embedded demo.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod engine;
pub mod error;
mod http_client;
pub mod listener;
pub mod log_safe;
pub mod metrics;
pub mod mock;
pub mod plugins;
pub mod server;
mod stream;
mod upstream;

pub use config::{ConfigError, ConfigFileError, GatewayConfig, ValidGateway};
pub use engine::{BuildError, ChatReply, Clock, Gateway};
pub use error::ApiError;
pub use stream::ChunkStream;

/// mimalloc serves the gateway's many small per-request allocations faster than the system
/// allocator (see docs/benchmarks-gateway.md). Plugins keep their own allocator: buffers cross the
/// plugin boundary only by copy, and each side frees what it allocated.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Installs a tracing subscriber writing to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
