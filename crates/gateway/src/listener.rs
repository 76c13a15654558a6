//! The client side of the socket: accepting connections, bounding what one client can hold, and
//! draining at shutdown.
//!
//! A client must not be able to take what others need. Each connection is bounded in time and the
//! listener in count:
//!
//! * **header read** (`server.header_read_timeout_ms`): from accept, or from the first byte of a
//!   later request on a kept-alive connection, the whole request head must arrive in time (a
//!   slowloris client dribbling headers is closed);
//! * **idle** (`server.idle_timeout_ms`): a kept-alive connection with no request in progress
//!   and no bytes either way is closed;
//! * **send** (the same `idle_timeout_ms`): a client that stops reading its answer (a stream it
//!   never drains, a zero TCP window) is disconnected once a write has waited that long, which
//!   drops the response and cancels its upstream attempt;
//! * **body read** (`server.body_read_timeout_ms`): enforced by the handler that reads the body
//!   (a 408 answer), since only it knows a body is expected;
//! * **connections** (`server.max_connections`): beyond it, a new connection gets an immediate
//!   `503` with `Retry-After` and is closed, instead of waiting in the kernel's backlog or taking
//!   the file descriptors the upstream calls need.
//!
//! The time limits live in `ClientIo`, a wrapper of the TCP stream that knows (through
//! `ConnState`) whether a request is in progress: while one is, reads never time out (the
//! handler may be waiting on an upstream); while none is, a read that would wait past the current
//! limit fails with `TimedOut` and hyper closes the connection. The timer is armed only when a read
//! would block, so an active connection costs no timer wake-ups.

use axum::body::Body;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};

use crate::engine::Gateway;

/// The limits on one client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time for a whole request head.
    pub header_read: Duration,
    /// Time a kept-alive connection may sit with nothing to do.
    pub idle: Duration,
    /// Open client connections at most.
    pub max_connections: usize,
}

/// What the connection's I/O and its requests share: how many requests are in progress.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    active: AtomicU32,
    /// The connection's read side, waiting without a limit while a request was in progress.
    request_done: futures_util::task::AtomicWaker,
}

/// Marks a request in progress on its connection from its head until its response body is done
/// (or dropped).
pub(crate) struct ActiveRequest(Arc<ConnState>);

impl ActiveRequest {
    fn begin(state: &Arc<ConnState>) -> Self {
        state.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(Arc::clone(state))
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.request_done.wake();
        }
    }
}

/// Why a client connection was closed by a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientTimeout {
    /// The request head did not arrive in time.
    HeaderRead,
    /// Nothing happened on a kept-alive connection.
    Idle,
    /// The client stopped reading its answer.
    Send,
}

impl ClientTimeout {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTimeout::HeaderRead => "header_read",
            ClientTimeout::Idle => "idle",
            ClientTimeout::Send => "send",
        }
    }
}

/// A client's TCP stream under the header-read and idle limits.
pub(crate) struct ClientIo {
    tcp: TcpStream,
    state: Arc<ConnState>,
    limits: ClientLimits,
    /// Last byte read or written.
    last_activity: Instant,
    /// When the head of the request being received started (accept for the first one).
    head_started: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    /// Since when a write has been waiting for the client to read (its timer fires
    /// `limits.idle` later).
    write_blocked: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    /// Set when a limit closed the connection, for the metric.
    expired: Option<ClientTimeout>,
}

impl ClientIo {
    fn new(tcp: TcpStream, state: Arc<ConnState>, limits: ClientLimits) -> Self {
        let now = Instant::now();
        ClientIo {
            tcp,
            state,
            limits,
            last_activity: now,
            head_started: Some(now),
            timer: Box::pin(tokio::time::sleep_until(now + limits.header_read)),
            armed_for: None,
            write_blocked: None,
            write_timer: Box::pin(tokio::time::sleep_until(now + limits.idle)),
            expired: None,
        }
    }

    /// The limit that applies while a read waits, if any.
    fn limit(&mut self) -> Option<(Instant, ClientTimeout)> {
        if self.state.active.load(Ordering::Relaxed) > 0 {
            // The head was parsed and a request is in progress: the handler owns the time.
            self.head_started = None;
            return None;
        }
        Some(match self.head_started {
            Some(t) => (t + self.limits.header_read, ClientTimeout::HeaderRead),
            None => (self.last_activity + self.limits.idle, ClientTimeout::Idle),
        })
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let now = Instant::now();
                    this.last_activity = now;
                    if this.head_started.is_none() && this.state.active.load(Ordering::Relaxed) == 0
                    {
                        this.head_started = Some(now);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Registered before the request count is read, so a request that ends right
                // after still wakes this read to arm the idle limit.
                this.state.request_done.register(cx.waker());
                let Some((at, kind)) = this.limit() else {
                    // No limit while a request is in progress.
                    return Poll::Pending;
                };
                if this.armed_for != Some(at) {
                    this.timer.as_mut().reset(at);
                    this.armed_for = Some(at);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.expired = Some(kind);
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            match kind {
                                ClientTimeout::HeaderRead => "request head not received in time",
                                ClientTimeout::Idle | ClientTimeout::Send => "idle connection",
                            },
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl ClientIo {
    /// Bookkeeping after a write: activity on progress, the send limit while it waits.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last_activity = Instant::now();
                }
                self.write_blocked = None;
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                // The client is not reading: its socket buffer is full.
                if self.write_blocked.is_none() {
                    let now = Instant::now();
                    self.write_blocked = Some(now);
                    self.write_timer.as_mut().reset(now + self.limits.idle);
                }
                match self.write_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.expired = Some(ClientTimeout::Send);
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client stopped reading its answer",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.tcp).poll_write(cx, data);
        this.after_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.after_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A response body that keeps its request marked in progress until it is done or dropped.
struct TrackedBody {
    inner: Body,
    _active: ActiveRequest,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a connection over the limit: short, closed, with a hint to come back.
fn over_capacity() -> Vec<u8> {
    let body = crate::error::ApiError::plain(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "too_many_connections",
        "the gateway has reached server.max_connections open client connections; retry shortly",
    )
    .body();
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Turned-away connections lingering at once, at most (each holds a file descriptor for up to
/// [`SHED_LINGER`]); beyond it they are closed right after their answer is written.
const MAX_SHEDDING: usize = 64;

/// How long a turned-away connection is given to receive its 503.
const SHED_LINGER: Duration = Duration::from_millis(200);

/// Serves `app` on `listener` under `limits` until `shutdown` turns true; then stops accepting,
/// lets each connection finish its request in progress, and returns when all are closed or
/// `grace` has passed (the rest are dropped).
pub(crate) async fn run(
    listener: TcpListener,
    app: axum::Router,
    limits: ClientLimits,
    gateway: Gateway,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> io::Result<()> {
    let metrics = gateway.metrics();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shedding = Arc::new(Semaphore::new(MAX_SHEDDING));
    let over_capacity = over_capacity();
    let mut connections = tokio::task::JoinSet::new();
    let mut accept_errors_logged = 0u32;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (tcp, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE/ENFILE and friends: back off a little instead of spinning; the
                // connection stays in the backlog until a descriptor is free.
                if accept_errors_logged < 10 {
                    accept_errors_logged += 1;
                    tracing::warn!(error = %e, "accept failed; retrying in 50 ms");
                }
                metrics.client_connection_refused("accept_error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.client_connection_refused("max_connections");
            // A new socket's send buffer is empty: the answer fits at once.
            let _ = tcp.try_write(&over_capacity);
            if let Ok(turn) = Arc::clone(&shedding).try_acquire_owned() {
                tokio::spawn(async move {
                    linger(tcp).await;
                    drop(turn);
                });
            }
            continue;
        };
        let app = app.clone();
        let gateway = gateway.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let metrics = gateway.metrics();
            metrics.client_connections.inc();
            serve_connection(tcp, app, limits, metrics, shutdown).await;
            metrics.client_connections.dec();
            drop(slot);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown grace time passed with requests still in flight; closing them");
        connections.abort_all();
    }
    Ok(())
}

/// Closes a turned-away connection after its answer: the write side first, then what the client
/// sent is read and dropped, so the close is not a reset that could discard the answer.
async fn linger(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(SHED_LINGER, async {
        tcp.shutdown().await?;
        // Read what the client sent so the close is not a reset that loses the answer.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

async fn serve_connection(
    tcp: TcpStream,
    app: axum::Router,
    limits: ClientLimits,
    metrics: &crate::metrics::Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState::default());
    let io = ClientIo::new(tcp, Arc::clone(&state), limits);
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let active = ActiveRequest::begin(&state);
            let mut app = app.clone();
            async move {
                let response =
                    tower_service::Service::call(&mut app, request.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(response.map(|inner| TrackedBody {
                    inner,
                    _active: active,
                }))
            }
        });
    let mut io = hyper_util::rt::TokioIo::new(io);
    let expired = {
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(&mut io, service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                    break;
                }
                _ = shutdown.wait_for(|stop| *stop), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        io.inner().expired
    };
    if let Some(kind) = expired {
        metrics.client_timeout(kind.as_str());
    }
}

/// The process's open-file limit: `(soft, hard)`, `None` where unknown or unlimited.
pub fn fd_limit() -> (Option<u64>, Option<u64>) {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        (limit.current, limit.maximum)
    }
    #[cfg(not(unix))]
    {
        (None, None)
    }
}

/// Raises the soft open-file limit to the hard one (the default soft limit of 1,024 is far below
/// what a gateway with thousands of clients and upstream connections needs). Returns the soft
/// limit before and after; logs the change.
pub fn raise_fd_limit() -> (Option<u64>, Option<u64>) {
    let (soft, hard) = fd_limit();
    #[cfg(unix)]
    if soft.is_some() && soft != hard {
        // An unlimited hard limit (common on macOS) cannot be the soft one: aim for a finite
        // number that every system accepts for open files.
        let target = hard.unwrap_or(UNLIMITED_FD_TARGET).max(soft.unwrap_or(0));
        let wanted = rustix::process::Rlimit {
            current: Some(target),
            maximum: hard,
        };
        match rustix::process::setrlimit(rustix::process::Resource::Nofile, wanted) {
            Ok(()) => {
                tracing::info!(from = ?soft, to = target, "raised the open-file limit");
                return (soft, Some(target));
            }
            Err(e) => {
                tracing::warn!(error = %e, soft = ?soft, "could not raise the open-file limit");
            }
        }
    }
    (soft, soft)
}

/// The soft open-file limit aimed for when the hard limit is unlimited (macOS's kernel refuses
/// more than `kern.maxfilesperproc`, often 10 240 or more; Linux's default `nr_open` is 1 048 576).
#[cfg(unix)]
const UNLIMITED_FD_TARGET: u64 = 10_240;

/// `max_connections` clamped to half the open-file limit: the other half is for upstream
/// connections, plugins and files, so accepting clients can never starve them.
pub fn effective_max_connections(configured: usize) -> usize {
    match fd_limit().0 {
        Some(soft) => {
            let half = usize::try_from(soft / 2).unwrap_or(usize::MAX).max(1);
            if configured > half {
                tracing::warn!(
                    configured,
                    allowed = half,
                    open_file_limit = soft,
                    "server.max_connections is above half the open-file limit; using the lower value (raise the limit with ulimit -n)"
                );
            }
            configured.min(half)
        }
        None => configured,
    }
}
