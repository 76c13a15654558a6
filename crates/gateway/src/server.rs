//! The HTTP face of the gateway (axum), its lifecycle, and config reloads.
//!
//! Endpoints: `POST /v1/chat/completions` (plain and `stream: true`), `GET /v1/models` (the
//! routes), `GET /status` (JSON health of every provider), `GET /metrics` (Prometheus text or
//! OpenMetrics, as the scraper asks) and
//! `GET /healthz`. When client keys are configured, `/v1/*` and `/status` need
//! `Authorization: Bearer <key>`; `/metrics` needs a metrics key when those are configured
//! (`server.metrics_keys_env`), and `/healthz` stays open for probes. A scrape is rendered off the
//! async threads and shared by every scrape waiting for it; too many waiting ones get a 503.
//!
//! Lifecycle: [`serve`] runs until its shutdown future resolves, then stops accepting, lets
//! in-flight requests (streams included) finish for up to `shutdown_grace_ms`, and returns.
//! Reloads: [`watch_config`] polls the file's content and [`reload_on_sighup`] listens for SIGHUP;
//! both call [`reload_from_file`], which applies a good config and refuses a bad one with a logged
//! reason and the `stilts_config_reloads_total{result="error"}` metric, the old one serving on.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::GatewayConfig;
use crate::engine::{ChatReply, Gateway, ReloadTicket};
use crate::error::ApiError;
use crate::ingress;

/// The axum app over `gateway`.
pub fn app(gateway: Gateway) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/messages", post(ingress::messages::handle))
        .route(
            "/v1/messages/count_tokens",
            post(ingress::messages::count_tokens),
        )
        .route("/v1/responses", post(ingress::responses::handle))
        .route("/v1/embeddings", post(ingress::embeddings::handle))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(not_found)
        .with_state(gateway)
}

/// The token of an `Authorization: Bearer <token>` header. The scheme name is case-insensitive
/// (RFC 9110 section 11.1), and any run of spaces may separate it from the token.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The 401 answer when the client is not allowed.
fn check_client(gateway: &Gateway, headers: &HeaderMap) -> Option<Response> {
    ingress::check_client(gateway, bearer(headers)).map(IntoResponse::into_response)
}

async fn chat(State(gateway): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    let presented = bearer(&headers);
    let render = IntoResponse::into_response;
    let request =
        match ingress::read_or_refuse(&gateway, &headers, presented, body, started, render).await {
            Ok(r) => r,
            Err(refused) => return refused,
        };
    match gateway.chat(request.body, request.deadline).await {
        Err(e) => e.into_response(),
        Ok(ChatReply::Complete {
            provider,
            attempts,
            body,
        }) => {
            let mut response = Response::new(Body::from(body));
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            ingress::tag(h, &provider, attempts);
            response
        }
        Ok(ChatReply::Stream {
            provider,
            attempts,
            stream,
        }) => ingress::event_stream(stream, &provider, attempts),
    }
}

async fn models(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    if let Some(denied) = check_client(&gateway, &headers) {
        return denied;
    }
    let data: Vec<serde_json::Value> = gateway
        .route_names()
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "stilts"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: one route, in OpenAI's model shape (the id may hold a `/`, sent raw or
/// as `%2F`).
async fn model(
    State(gateway): State<Gateway>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = check_client(&gateway, &headers) {
        return denied;
    }
    if gateway.route_names().contains(&id) {
        return axum::Json(
            serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "stilts"}),
        )
        .into_response();
    }
    ApiError::plain(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "model_not_found",
        format!(
            "no route named \"{}\"; routes: {}",
            crate::log_safe::escape(&id),
            gateway.route_names().join(", ")
        ),
    )
    .into_response()
}

async fn status(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    if let Some(denied) = check_client(&gateway, &headers) {
        return denied;
    }
    axum::Json(gateway.status_json()).into_response()
}

async fn metrics(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    if !gateway.metrics_allowed(bearer(&headers)) {
        return ApiError::plain(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "missing or unknown metrics key: send Authorization: Bearer <key> (server.metrics_keys_env)",
        )
        .into_response();
    }
    // Negotiated before waiting: the render carries both forms.
    let format = crate::metrics::Format::negotiate(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let Some(exposition) = gateway.metrics_snapshot().await else {
        gateway.metrics().scrape_refused();
        let mut busy = ApiError::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "too_many_scrapes",
            "too many /metrics scrapes are already waiting; retry shortly",
        );
        busy.retry_after = Some(Duration::from_secs(1));
        return busy.into_response();
    };
    let mut response = Response::new(Body::from(exposition.body(format)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    response
}

async fn not_found() -> Response {
    ApiError::plain(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        "no such endpoint: stilts serves POST /v1/chat/completions, POST /v1/messages and /v1/messages/count_tokens (Anthropic Messages; an Anthropic SDK's base URL has no /v1), POST /v1/responses, POST /v1/embeddings, GET /v1/models, GET /v1/models/{id}, /status, /metrics and /healthz",
    )
    .into_response()
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then drains in-flight requests for
/// up to the configured grace time. Client connections are bounded as `crate::listener` says
/// (header-read and idle timeouts, `max_connections` clamped to half the open-file limit).
pub async fn serve(
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = gateway.server_settings();
    let grace = settings.shutdown_grace;
    let limits = crate::listener::ClientLimits {
        header_read: settings.header_read_timeout,
        idle: settings.idle_timeout,
        max_connections: crate::listener::effective_max_connections(settings.max_connections),
    };
    // Shared state with sibling replicas, when configured; it stops with the server.
    let _cluster = crate::cluster::spawn(&gateway);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = app(gateway.clone());
    let mut server = tokio::spawn(crate::listener::run(
        listener, app, limits, gateway, stop_rx, grace,
    ));
    tokio::select! {
        result = &mut server => return result.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        () = shutdown => {}
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    let _ = stop_tx.send(true);
    server
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Loads `path` and applies it; a bad file is refused (logged, counted) and the old config stays.
pub fn reload_from_file(gateway: &Gateway, path: &Path) -> bool {
    reload_unless_abandoned(gateway, path, &ReloadTicket::default())
}

/// [`reload_from_file`] under `ticket`: nothing is applied once the caller abandoned it.
fn reload_unless_abandoned(gateway: &Gateway, path: &Path, ticket: &ReloadTicket) -> bool {
    match GatewayConfig::load(path) {
        Err(_) if ticket.is_abandoned() => false,
        Err(e) => {
            gateway.metrics().reload(false);
            tracing::error!(
                error = %crate::log_safe::escape(&e.to_string()),
                "config refused; the previous config keeps serving"
            );
            false
        }
        Ok(valid) => {
            let started = gateway.started_settings();
            if valid.server.listen != started.listen {
                tracing::warn!(
                    listen = %valid.server.listen,
                    "server.listen differs from the address in use: it applies at the next restart"
                );
            }
            if valid.server.worker_threads != started.worker_threads {
                tracing::warn!(
                    "server.worker_threads differs from the value at start: it applies at the next \
                     restart (where a --worker-threads flag still overrides it)"
                );
            }
            if valid.cluster.as_ref() != gateway.cluster_settings() {
                tracing::warn!(
                    "[cluster] differs from the table at start: it applies at the next restart"
                );
            }
            gateway.reload_unless(&valid, ticket).is_ok()
        }
    }
}

/// Reloads `path` off the async threads, within `server.reload_timeout_ms`.
///
/// Reading the file, loading plugins and building clients run on tokio's blocking pool, so they
/// never pause requests on the runtime's threads (with one worker, the only one). A reload that
/// takes longer than the limit (a file that blocks on read, a plugin whose loading hangs) is
/// abandoned: counted as refused and logged, the old config serving on, and if it ever finishes it
/// applies nothing. Reloads run one at a time (a file change and a SIGHUP at once would otherwise
/// race, and an older read could be applied last); one that panics is counted as refused.
pub async fn reload_bounded(gateway: &Gateway, path: &Path) -> bool {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let limit = gateway.server_settings().reload_timeout;
    let ticket = Arc::new(ReloadTicket::default());
    let (worker, file, claim) = (gateway.clone(), path.to_path_buf(), Arc::clone(&ticket));
    let mut reload =
        tokio::task::spawn_blocking(move || reload_unless_abandoned(&worker, &file, &claim));
    let finished = match tokio::time::timeout(limit, &mut reload).await {
        Ok(finished) => Some(finished),
        // Past the limit, but already swapping the new config in: let it finish.
        Err(_) if !ticket.abandon() => Some(reload.await),
        Err(_) => None,
    };
    match finished {
        Some(Ok(applied)) => applied,
        Some(Err(e)) => {
            gateway.metrics().reload(false);
            tracing::error!(error = %e, "config reload failed; the previous config keeps serving");
            false
        }
        None => {
            gateway.metrics().reload(false);
            tracing::error!(
                path = %path.display(),
                limit_ms = limit.as_millis() as u64,
                "config reload took longer than server.reload_timeout_ms and was abandoned (is the \
                 file or a plugin path something that blocks on read?); the previous config keeps serving"
            );
            false
        }
    }
}

/// Polls `path` every `every` and reloads when its content differs from what it was when this
/// function was called (read here, before the returned future first runs, so a change made right
/// after is never missed). Runs until dropped.
///
/// Only a regular file is read: a path that is something else (a FIFO would block the read, and
/// the watch with it) is skipped with one warning, and SIGHUP still reloads it (bounded by
/// `server.reload_timeout_ms`).
pub fn watch_config(
    gateway: Gateway,
    path: PathBuf,
    every: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    let regular = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file());
    let mut last = if regular(&path) {
        std::fs::read(&path).ok()
    } else {
        None
    };
    async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut warned = false;
        loop {
            tick.tick().await;
            let is_file = tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file());
            if !is_file {
                if !warned && tokio::fs::metadata(&path).await.is_ok() {
                    tracing::warn!(path = %path.display(), "the config path is not a regular file: the file watch skips it (SIGHUP still reloads)");
                    warned = true;
                }
                continue;
            }
            warned = false;
            let now = tokio::fs::read(&path).await.ok();
            if now.is_some() && now != last {
                tracing::info!(path = %path.display(), "config file changed; reloading");
                reload_bounded(&gateway, &path).await;
                last = now;
            }
        }
    }
}

/// Reloads `path` on every SIGHUP. The signal handler is installed when this is called (inside a
/// tokio runtime), before the returned future first runs. Runs until dropped.
pub fn reload_on_sighup(
    gateway: Gateway,
    path: PathBuf,
) -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let Ok(mut hup) = hup else {
                tracing::warn!("cannot listen for SIGHUP; reload by editing the file");
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!(path = %path.display(), "SIGHUP: reloading config");
                reload_bounded(&gateway, &path).await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (gateway, path);
            std::future::pending::<()>().await;
        }
    }
}
