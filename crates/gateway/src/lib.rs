//! stilts-gateway: the tokio + axum + hyper driver of stilts-core; the OpenAI-compatible HTTP
//! gateway, and the fault-injecting fake upstream used by the demo, the tests and the bench.
//!
//! The core decides; this crate performs. For each request the [`Gateway`] asks the route's
//! router what to do, sends attempts through the deployment's plugin (loaded at run time from a
//! shared library) over HTTP (`http_client`: hyper's HTTP/1.1 connections with rustls in a pool of
//! its own, or reqwest when a proxy is configured), enforces every stage's timeout, and records each outcome. It can
//! be embedded as a library ([`Gateway::chat`]) or served over HTTP ([`server::serve`]).
//!
//! * [`config`]: the TOML config and its validation.
//! * [`engine`]: the [`Gateway`]: its routes, reloads, client auth and status.
//! * `driver`: the request loop (one request's routing state, its attempts, its end).
//! * `upstream` / `stream`: one attempt over HTTP; streams with failover before the first token and
//!   exact continuation or an error event after it.
//! * [`ingress`]: the client dialects other than the canonical one (Anthropic Messages), each
//!   translated to the canonical format and back.
//! * [`server`]: the axum endpoints, graceful shutdown, file-watch and SIGHUP reloads.
//! * [`cluster`]: shared state between replicas through Redis (`[cluster]`), off the request path.
//! * [`listener`]: accepting client connections under time and count limits, and draining.
//! * [`metrics`]: Prometheus metrics.
//! * [`log_safe`]: escaping outside text for logs, and scrubbing keys in every encoding.
//! * [`plugins`]: finding and loading plugin libraries.
//! * [`mock`]: the fake upstream; [`demo`]: the embedded demo.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod demo;
mod driver;
pub mod engine;
pub mod error;
mod http_client;
pub mod ingress;
pub mod listener;
pub mod log_safe;
pub mod metrics;
pub mod mock;
pub mod plugins;
mod quota;
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

/// How log records are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per record; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`), for log pipelines.
    Json,
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format [`init_logging`] installed (text when it was not called): a program that also
/// prints to stderr itself (a banner) keeps every line parseable in JSON mode.
pub fn log_format() -> LogFormat {
    LOG_FORMAT.get().copied().unwrap_or_default()
}

/// Installs a tracing subscriber writing to stderr in `format`, filtered by `RUST_LOG` (default
/// `info`; e.g. `RUST_LOG=stilts_gateway=debug` or `RUST_LOG=warn,stilts::access=info`).
///
/// Every record is one line: text that came from outside is escaped before it is logged (see
/// [`log_safe`]), and ANSI colours are used only when stderr is a terminal.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let _ = LOG_FORMAT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
