//! `stilts serve`, `stilts mock-upstream` and `stilts config check`: thin wrappers over
//! stilts-gateway (argument parsing, runtime, signals, exit codes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use stilts_gateway::config::{GatewayConfig, ValidGateway};
use stilts_gateway::demo::Demo;
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream, Schedule};
use stilts_gateway::{Gateway, server};

/// Arguments of `stilts serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Gateway config (TOML). Without it, an embedded demo runs on loopback.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address for the embedded demo (a config file sets its own in [server]).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Async worker threads (default: the config's `server.worker_threads`, else one per core this
    /// process may run on, as `taskset`, a container's CPU set or its CPU quota allow). With 1, the gateway runs
    /// on a single-threaded runtime: no cross-core wake-ups, the cheapest shape per request
    /// (docs/benchmarks-gateway.md).
    #[arg(long)]
    pub worker_threads: Option<usize>,
}

/// Arguments of `stilts mock-upstream`.
#[derive(clap::Args)]
pub struct MockUpstreamArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Name shown in answers.
    #[arg(long, default_value = "mock")]
    pub name: String,
    /// Answer every request with this HTTP error status.
    #[arg(long)]
    pub status: Option<u16>,
    /// OpenAI error code in error bodies (rate_limit_exceeded, insufficient_quota, context_length_exceeded…).
    #[arg(long)]
    pub error_code: Option<String>,
    /// Retry-After header on error answers, in seconds.
    #[arg(long)]
    pub retry_after: Option<f64>,
    /// Delay before the response headers, in ms.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Never answer.
    #[arg(long)]
    pub hang: bool,
    /// Streams: delay before the first content chunk, in ms.
    #[arg(long, default_value_t = 0)]
    pub first_token_ms: u64,
    /// Streams: delay between content chunks, in ms.
    #[arg(long, default_value_t = 0)]
    pub chunk_interval_ms: u64,
    /// Streams: abort the connection after N content chunks.
    #[arg(long)]
    pub cut_after: Option<u32>,
    /// Streams: stop sending after N content chunks, connection kept open.
    #[arg(long)]
    pub stall_after: Option<u32>,
    /// Streams: send a malformed (non-JSON) event after N content chunks.
    #[arg(long)]
    pub malformed_after: Option<u32>,
    /// Streams: finish without `data: [DONE]`.
    #[arg(long)]
    pub no_done: bool,
    /// Streams: send the provider's in-band overload error after N content chunks and end.
    #[arg(long)]
    pub overload_event_after: Option<u32>,
    /// Successful answers report this many requests left in the rate limit
    /// (`x-ratelimit-remaining-requests`, or Anthropic's header on /v1/messages).
    #[arg(long)]
    pub ratelimit_remaining_requests: Option<u64>,
    /// When that rate limit resets, in ms from each answer (default 1000).
    #[arg(long)]
    pub ratelimit_reset_ms: Option<u64>,
    /// Periodic outage: cycle length in ms (with --outage-ms).
    #[arg(long, default_value_t = 0)]
    pub outage_period_ms: u64,
    /// Periodic outage: the last N ms of each cycle answer 503.
    #[arg(long, default_value_t = 0)]
    pub outage_ms: u64,
    /// Every Nth request answers 429 with Retry-After: 1.
    #[arg(long, default_value_t = 0)]
    pub rate_limit_every: u64,
    /// Require `Authorization: Bearer <value of this env var>`.
    #[arg(long)]
    pub require_key_env: Option<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

/// The runtime for `worker_threads` workers (default: the cores this process may run on). One
/// worker means tokio's single-threaded runtime: a one-worker multi-thread runtime would only add
/// wake-ups of its worker thread from the driver.
fn runtime_with(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = match worker_threads {
        Some(0) => anyhow::bail!("--worker-threads must be at least 1"),
        Some(n) if n > stilts_gateway::config::MAX_WORKER_THREADS => anyhow::bail!(
            "--worker-threads must be at most {}",
            stilts_gateway::config::MAX_WORKER_THREADS
        ),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs the gateway.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Before any socket: thousands of clients and their upstream calls need more than the
    // default soft limit of 1,024 descriptors.
    stilts_gateway::listener::raise_fd_limit();
    match args.config {
        Some(path) => {
            // Read before the runtime exists: the config may choose its worker count.
            let valid = GatewayConfig::load(&path)?;
            let workers = args.worker_threads.or(valid.server.worker_threads);
            runtime_with(workers)?.block_on(serve_config(&path, valid))
        }
        None => runtime_with(args.worker_threads)?.block_on(serve_demo(args.listen)),
    }
}

async fn serve_config(path: &Path, valid: ValidGateway) -> anyhow::Result<ExitCode> {
    let gateway = Gateway::new(&valid).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let listener = tokio::net::TcpListener::bind(valid.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", valid.server.listen))?;
    let addr = listener.local_addr()?;
    let routes = gateway.route_names().join(", ");
    match stilts_gateway::log_format() {
        stilts_gateway::LogFormat::Text => eprintln!(
            "stilts serving on http://{addr} (config {}, routes: {routes})",
            path.display()
        ),
        stilts_gateway::LogFormat::Json => tracing::info!(
            address = %format!("http://{addr}"),
            config = %path.display(),
            routes = %routes,
            "stilts serving on http://{addr}"
        ),
    }
    let mut background = Vec::new();
    if let Some(every) = valid.server.reload_poll {
        background.push(tokio::spawn(server::watch_config(
            gateway.clone(),
            path.to_path_buf(),
            every,
        )));
    }
    background.push(tokio::spawn(server::reload_on_sighup(
        gateway.clone(),
        path.to_path_buf(),
    )));
    server::serve(gateway, listener, server::shutdown_signal()).await?;
    for task in background {
        task.abort();
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve_demo(listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let demo = Demo::start()
        .await
        .context("cannot start the demo upstreams")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (use --listen 127.0.0.1:0 for any free port)")
        })?;
    let addr = listener.local_addr()?;
    let valid = demo
        .config(&addr.to_string())
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let gateway = Gateway::new(&valid).map_err(|e| anyhow::anyhow!("demo: {e}"))?;
    println!("stilts demo listening on http://{addr}");
    println!(
        "  upstreams (OpenAI dialect, through the openai plugin): primary {} (503s for the last 6 s of every 30 s, 429 every 7th request), backup {}, local {}",
        demo.primary.base_url(),
        demo.backup.base_url(),
        demo.local.base_url()
    );
    println!("  routes: demo (primary > backup > local), local");
    println!(
        "  try: curl -si http://{addr}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"demo\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
    );
    println!("  status: curl -s http://{addr}/status   metrics: curl -s http://{addr}/metrics");
    server::serve(gateway, listener, server::shutdown_signal()).await?;
    drop(demo);
    Ok(ExitCode::SUCCESS)
}

/// Runs the fake upstream.
pub fn mock_upstream(args: MockUpstreamArgs) -> anyhow::Result<ExitCode> {
    let require_key = match &args.require_key_env {
        None => None,
        Some(var) => Some(std::env::var(var).with_context(|| format!("{var} is not set"))?),
    };
    let config = MockConfig {
        faults: Faults {
            status: args.status,
            error_code: args.error_code.clone(),
            error_message: None,
            retry_after_s: args.retry_after,
            latency_ms: args.latency_ms,
            hang: args.hang,
            first_token_ms: args.first_token_ms,
            chunk_interval_ms: args.chunk_interval_ms,
            cut_after: args.cut_after,
            stall_after: args.stall_after,
            malformed_after: args.malformed_after,
            no_done: args.no_done,
            echo_key: false,
            overload_event_after: args.overload_event_after,
            ratelimit_remaining_requests: args.ratelimit_remaining_requests,
            ratelimit_reset_ms: args.ratelimit_reset_ms,
        },
        schedule: Schedule {
            period_ms: args.outage_period_ms,
            outage_ms: args.outage_ms,
            rate_limit_every: args.rate_limit_every,
        },
        require_key,
        ..MockConfig::named(&args.name)
    };
    runtime()?.block_on(async move {
        let mock = MockUpstream::start(config, args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        println!(
            "mock upstream {} listening on {}",
            args.name,
            mock.base_url()
        );
        server::shutdown_signal().await;
        drop(mock);
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Validates a config file: syntax, values, plugins and key variables.
pub fn config_check(file: &Path) -> anyhow::Result<ExitCode> {
    let valid = match GatewayConfig::load(file) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let built = runtime()?.block_on(async { Gateway::new(&valid).map(|g| g.route_names()) });
    match built {
        Ok(routes) => {
            println!(
                "{}: ok ({} route{}: {})",
                file.display(),
                routes.len(),
                if routes.len() == 1 { "" } else { "s" },
                routes.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_is_a_single_threaded_runtime() {
        let one = runtime_with(Some(1)).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let two = runtime_with(Some(2)).unwrap();
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        let err = runtime_with(Some(0)).unwrap_err();
        assert!(err.to_string().contains("at least 1"), "{err}");
    }
}
