//! The direct client's connection pool: HTTP/1.1 connections made with hyper's
//! `client::conn::http1`, kept per origin (scheme and authority) and reused.
//!
//! hyper-util's general-purpose pool, used before, hashed the origin twice per request (to check a
//! connection out and back in), raced every checkout against a new connect, and spawned one task
//! per request to wait for the connection to become idle. A deployment talks to one origin, so
//! this pool is a short list under a lock: a request takes the most recently returned connection
//! that is ready, and its response body puts the connection back when it has been read to the end.
//!
//! * A connection is reused only once hyper has read its response to the end. A body read to its
//!   end returns it at once. A body dropped before its end (a stream ends at its last event, before
//!   the chunk that closes the body has been read; a client gone) leaves hyper to read the rest if
//!   it has arrived, or close the connection: a task waits for the one or the other (at most
//!   [`IDLE_WAIT`]) and returns the connection if it went idle, as hyper-util did for every request.
//! * A request that a reused connection could not send (the server closed it while it was idle) is
//!   sent again on another, as hyper-util did; a request sent on a fresh connection is never
//!   repeated.
//! * A connection idle for [`POOL_IDLE`] is closed at the next checkout or return, or by the
//!   pool's reaper (a task started with the first connection returned, ending with the pool),
//!   which looks every [`REAP_EVERY`]: none is kept idle much longer than two minutes.
//! * Requests go out in origin form (`POST /v1/chat/completions`) with a `Host` header, as a
//!   server expects from a client talking to it directly.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tower_service::Service;

use super::{DirectConnector, TransportError, TransportKind, UpstreamResponse};

/// How long an idle pooled connection is kept.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(90);
/// How often the reaper closes the connections idle for [`POOL_IDLE`].
const REAP_EVERY: Duration = Duration::from_secs(30);
/// How long a connection whose response body was dropped early may take to go idle.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// Where a connection goes: requests to the same origin share connections.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
}

/// A connection waiting for its next request.
struct Idle {
    origin: Origin,
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// The pooled HTTP/1.1 connections of one client.
pub(crate) struct Pool {
    connector: DirectConnector,
    /// Oldest first: connections are returned at the end and taken from the end.
    idle: Mutex<Vec<Idle>>,
    /// Whether the reaper runs.
    reaping: AtomicBool,
}

impl Pool {
    pub(crate) fn new(connector: DirectConnector) -> Self {
        Pool {
            connector,
            idle: Mutex::new(Vec::new()),
            reaping: AtomicBool::new(false),
        }
    }

    /// The idle list (its contents stay consistent: nothing panics while holding it).
    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` (an absolute URL) on a pooled connection or a new one, and waits for the
    /// response headers.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: http::Request<Bytes>,
    ) -> Result<UpstreamResponse, TransportError> {
        let (mut parts, body) = request.into_parts();
        let uri = parts.uri.clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(TransportError {
                kind: TransportKind::Connect,
                cause: "the upstream URL has no scheme or host".to_owned(),
            });
        };
        let origin = Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
        };
        if !parts.headers.contains_key(http::header::HOST) {
            let host = http::HeaderValue::from_str(host_header(&uri, authority)).map_err(|_| {
                TransportError {
                    kind: TransportKind::Connect,
                    cause: "the upstream host is not a valid Host header".to_owned(),
                }
            })?;
            parts.headers.insert(http::header::HOST, host);
        }
        parts.uri = origin_form(&uri);
        let mut request = http::Request::from_parts(parts, Full::new(body));
        loop {
            let (mut sender, reused) = match self.checkout(&origin) {
                Some(sender) => (sender, true),
                // Boxed: the connect path's state is large and rare, and the caller's future,
                // which every request moves onto the heap, should not carry it inline.
                None => (Box::pin(self.connect(&uri)).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let give_back = Some(GiveBack {
                        pool: Arc::clone(self),
                        origin,
                        sender,
                    });
                    return Ok(response.map(|inner| PooledBody { inner, give_back }.boxed_unsync()));
                }
                Err(mut failed) => match failed.take_message() {
                    // Not sent: the pooled connection had closed. Another one (or a new one).
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(TransportError::from_hyper(&failed.into_error())),
                },
            }
        }
    }

    /// The most recently returned connection to `origin` that is ready for a request. Drops the
    /// closed ones met on the way, and those idle too long.
    fn checkout(&self, origin: &Origin) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle();
        prune(&mut idle, |c| c.since, Instant::now());
        let mut at = idle.len();
        while at > 0 {
            at -= 1;
            let candidate = &idle[at];
            if candidate.sender.is_closed() {
                idle.remove(at);
            } else if candidate.origin == *origin && candidate.sender.is_ready() {
                return Some(idle.remove(at).sender);
            }
        }
        None
    }

    /// Puts a connection whose last response was read to its end back in the pool, and starts
    /// the reaper with the first one.
    fn give_back(self: &Arc<Self>, origin: Origin, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        {
            let mut idle = self.idle();
            prune(&mut idle, |c| c.since, now);
            idle.push(Idle {
                origin,
                sender,
                since: now,
            });
        }
        if !self.reaping.swap(true, Ordering::Relaxed) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(reap(Arc::downgrade(self)));
            }
        }
    }

    /// Closes the connections idle too long and forgets the closed ones.
    fn reap_now(&self) {
        let closed: Vec<Idle> = {
            let mut idle = self.idle();
            prune(&mut idle, |c| c.since, Instant::now());
            let (closed, open) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|c| c.sender.is_closed());
            *idle = open;
            closed
        };
        // Outside the lock: dropping a sender wakes its connection's task.
        drop(closed);
    }

    /// A new connection to `uri`'s origin (DNS, TCP, TLS within the connector's limit), driven by
    /// a task of its own until it closes.
    async fn connect(&self, uri: &http::Uri) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        let connect_failure = |error: &(dyn std::error::Error + 'static)| {
            TransportError::from_chain(true, false, error)
        };
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| connect_failure(&*e))?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(|e| connect_failure(&*e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| connect_failure(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// The reaper of a pool: every [`REAP_EVERY`], until the pool is gone.
async fn reap(pool: Weak<Pool>) {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + REAP_EVERY, REAP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.reap_now();
    }
}

/// Drops the connections idle for [`POOL_IDLE`] or longer (they are at the front: returned
/// oldest first).
fn prune<T>(idle: &mut Vec<T>, since: impl Fn(&T) -> Instant, now: Instant) {
    let stale = idle
        .iter()
        .take_while(|c| now.duration_since(since(c)) >= POOL_IDLE)
        .count();
    if stale > 0 {
        idle.drain(..stale);
    }
}

/// The `Host` header of a request to `uri`: the host, with the port unless it is the scheme's
/// default.
fn host_header<'a>(uri: &http::Uri, authority: &'a Authority) -> &'a str {
    let default_port = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    match authority.port_u16() {
        // host:port, without any user info (upstream URLs with credentials are refused at load).
        Some(port) if Some(port) != default_port => {
            let text = authority.as_str();
            text.rsplit_once('@')
                .map_or(text, |(_, host_port)| host_port)
        }
        _ => authority.host(),
    }
}

/// `uri` as an HTTP/1.1 origin-form request target: its path and query.
fn origin_form(uri: &http::Uri) -> http::Uri {
    match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            http::Uri::from_parts(parts).unwrap_or_default()
        }
        _ => http::Uri::default(),
    }
}

/// What a response body needs to put its connection back.
struct GiveBack {
    pool: Arc<Pool>,
    origin: Origin,
    sender: SendRequest<Full<Bytes>>,
}

/// A response body that returns its connection to the pool once read to its end.
struct PooledBody {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    fn read_to_end(&mut self) {
        if let Some(GiveBack {
            pool,
            origin,
            sender,
        }) = self.give_back.take()
        {
            pool.give_back(origin, sender);
        }
    }
}

impl Drop for PooledBody {
    /// A body dropped before its end: the connection is returned once hyper has read the rest
    /// (when it had arrived, as the chunk closing a stream after its last event usually has) and
    /// gone idle; otherwise hyper closes it.
    fn drop(&mut self) {
        let Some(GiveBack {
            pool,
            origin,
            mut sender,
        }) = self.give_back.take()
        else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            pool.give_back(origin, sender);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let idle = std::future::poll_fn(|cx| sender.poll_ready(cx));
            if let Ok(Ok(())) = tokio::time::timeout(IDLE_WAIT, idle).await {
                pool.give_back(origin, sender);
            }
        });
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = TransportError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransportError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.read_to_end(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.read_to_end(),
            // A broken body: the connection goes with it.
            Poll::Ready(Some(Err(_))) => this.give_back = None,
            _ => {}
        }
        polled.map(|frame| frame.map(|f| f.map_err(|e| TransportError::from_hyper(&e))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// How the test upstream answers.
    #[derive(Clone, Copy, PartialEq)]
    enum Answers {
        /// `{}` with a content length, connections kept alive.
        KeepAlive,
        /// The same, but each connection is closed after its first answer (while advertising
        /// keep-alive).
        CloseAfterOne,
        /// An SSE stream in chunked encoding: one event, `[DONE]`, then the closing chunk.
        Stream,
        /// The head and 2 of the 10 bytes its content length announces; the rest never comes.
        Partial,
    }

    /// An upstream on loopback that answers every request on a connection and records the
    /// connections it accepted and the head of each request.
    struct Upstream {
        port: u16,
        connections: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Upstream {
        async fn start(answers: Answers) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let connections = Arc::new(AtomicUsize::new(0));
            let heads = Arc::new(Mutex::new(Vec::new()));
            let (count, seen) = (Arc::clone(&connections), Arc::clone(&heads));
            let task = tokio::spawn(async move {
                loop {
                    let (mut tcp, _) = listener.accept().await.unwrap();
                    count.fetch_add(1, Ordering::SeqCst);
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        loop {
                            // One request: its head, then `content-length` bytes of body.
                            let head_end = loop {
                                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                    break at + 4;
                                }
                                let mut chunk = [0u8; 4096];
                                match tcp.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            };
                            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                            let length: usize = head
                                .lines()
                                .find_map(|l| {
                                    let (name, value) = l.split_once(':')?;
                                    name.eq_ignore_ascii_case("content-length")
                                        .then(|| value.trim().parse().ok())?
                                })
                                .unwrap_or(0);
                            while buf.len() < head_end + length {
                                let mut chunk = [0u8; 4096];
                                match tcp.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            buf.drain(..head_end + length);
                            seen.lock().unwrap().push(head);
                            let answer: &[u8] = match answers {
                                Answers::KeepAlive | Answers::CloseAfterOne => {
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
                                }
                                Answers::Partial => {
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"
                                }
                                Answers::Stream => {
                                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                                      transfer-encoding: chunked\r\n\r\n\
                                      f\r\ndata: {\"a\":1}\n\n\r\n\
                                      e\r\ndata: [DONE]\n\n\r\n\
                                      0\r\n\r\n"
                                }
                            };
                            if tcp.write_all(answer).await.is_err()
                                || answers == Answers::CloseAfterOne
                            {
                                return;
                            }
                            if answers == Answers::Partial {
                                // Hold the connection, never finishing the answer.
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                return;
                            }
                        }
                    });
                }
            });
            Upstream {
                port,
                connections,
                heads,
                task,
            }
        }

        fn request(&self) -> http::Request<Bytes> {
            http::Request::post(format!(
                "http://127.0.0.1:{}/v1/chat/completions?x=1",
                self.port
            ))
            .body(Bytes::from_static(b"{\"model\":\"m\"}"))
            .unwrap()
        }
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn pool() -> Arc<Pool> {
        match super::super::HttpClient::direct(Duration::from_secs(2)).unwrap() {
            super::super::HttpClient::Direct(pool) => pool,
            super::super::HttpClient::Proxied(_) => unreachable!("direct() is never proxied"),
        }
    }

    /// Waits (at most 5 s) until a connection is idle in `pool`.
    async fn connection_comes_back(pool: &Pool) {
        let back = async {
            while pool.idle().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), back)
            .await
            .expect("the connection never came back");
    }

    async fn read_all(response: UpstreamResponse) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_whose_answer_was_read_is_reused() {
        let upstream = Upstream::start(Answers::KeepAlive).await;
        let pool = pool();
        for _ in 0..5 {
            let response = pool.send(upstream.request()).await.unwrap();
            assert_eq!(read_all(response).await, Bytes::from_static(b"{}"));
        }
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
        // Origin form and a Host header with the port, as a server expects.
        let heads = upstream.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 5);
        for head in heads {
            assert!(
                head.starts_with("POST /v1/chat/completions?x=1 HTTP/1.1\r\n"),
                "{head}"
            );
            let host = format!("host: 127.0.0.1:{}\r\n", upstream.port);
            assert!(head.to_ascii_lowercase().contains(&host), "{head}");
        }
    }

    #[tokio::test]
    async fn a_connection_whose_answer_had_not_all_arrived_when_dropped_is_not_reused() {
        let upstream = Upstream::start(Answers::Partial).await;
        let pool = pool();
        let unread = pool.send(upstream.request()).await.unwrap();
        drop(unread);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.idle().is_empty(), "a connection mid-answer came back");
        drop(pool.send(upstream.request()).await.unwrap());
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
    }

    /// hyper reads the rest of an answer that has arrived in full; the connection then serves the
    /// next request, as with hyper-util.
    #[tokio::test]
    async fn a_connection_whose_dropped_answer_had_arrived_is_reused() {
        let upstream = Upstream::start(Answers::KeepAlive).await;
        let pool = pool();
        drop(pool.send(upstream.request()).await.unwrap());
        connection_comes_back(&pool).await;
        let response = pool.send(upstream.request()).await.unwrap();
        assert_eq!(read_all(response).await, Bytes::from_static(b"{}"));
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced() {
        let upstream = Upstream::start(Answers::CloseAfterOne).await;
        let pool = pool();
        for _ in 0..3 {
            let response = pool.send(upstream.request()).await.unwrap();
            assert_eq!(read_all(response).await, Bytes::from_static(b"{}"));
            // Let the connection's task see the close, or not: either way the next request
            // must be answered.
            tokio::task::yield_now().await;
        }
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn concurrent_requests_each_get_a_connection_and_all_come_back() {
        let upstream = Upstream::start(Answers::KeepAlive).await;
        let pool = pool();
        let sends = (0..4).map(|_| {
            let pool = Arc::clone(&pool);
            let request = upstream.request();
            async move { read_all(pool.send(request).await.unwrap()).await }
        });
        for body in futures_util::future::join_all(sends).await {
            assert_eq!(body, Bytes::from_static(b"{}"));
        }
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 4);
        assert_eq!(pool.idle().len(), 4);
        // Then one at a time: no new connection.
        for _ in 0..4 {
            read_all(pool.send(upstream.request()).await.unwrap()).await;
        }
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 4);
    }

    /// A stream's reader stops at its last event and drops the body before hyper has read the
    /// chunk that closes it: the connection must still come back (streams would otherwise open a
    /// connection each).
    #[tokio::test]
    async fn a_stream_dropped_at_its_last_event_gives_its_connection_back() {
        let upstream = Upstream::start(Answers::Stream).await;
        let pool = pool();
        for _ in 0..3 {
            let mut body = pool.send(upstream.request()).await.unwrap().into_body();
            let mut read = Vec::new();
            while !read.ends_with(b"data: [DONE]\n\n") {
                let frame = body.frame().await.unwrap().unwrap();
                read.extend_from_slice(&frame.into_data().unwrap());
            }
            drop(body);
            // The connection comes back once hyper has read the closing chunk.
            connection_comes_back(&pool).await;
        }
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_reaper_closes_connections_idle_too_long() {
        let upstream = Upstream::start(Answers::KeepAlive).await;
        let pool = pool();
        read_all(pool.send(upstream.request()).await.unwrap()).await;
        assert_eq!(pool.idle().len(), 1);
        let since = pool.idle()[0].since;
        pool.idle()[0].since = since.checked_sub(POOL_IDLE).unwrap();
        pool.reap_now();
        assert!(pool.idle().is_empty());
        read_all(pool.send(upstream.request()).await.unwrap()).await;
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn connections_idle_too_long_are_pruned_from_the_front() {
        let start = Instant::now();
        let now = start + POOL_IDLE * 2;
        // Oldest first, as returned: idle 2x, exactly 1x and half the limit.
        let mut idle = vec![start, start + POOL_IDLE, start + POOL_IDLE * 3 / 2];
        prune(&mut idle, |since| *since, now);
        assert_eq!(idle, vec![start + POOL_IDLE * 3 / 2]);
        prune(&mut idle, |since| *since, now);
        assert_eq!(idle.len(), 1, "nothing more is stale");
    }

    #[test]
    fn the_host_header_names_the_port_only_when_it_is_not_the_default() {
        for (url, host) in [
            ("http://127.0.0.1:8000/v1", "127.0.0.1:8000"),
            ("http://example.com:80/v1", "example.com"),
            ("https://example.com:443/v1", "example.com"),
            ("https://example.com:8443/v1", "example.com:8443"),
            (
                "https://api.openai.com/v1/chat/completions",
                "api.openai.com",
            ),
            ("http://[::1]:11434/v1", "[::1]:11434"),
            ("http://user@example.com:8080/v1", "example.com:8080"),
        ] {
            let uri: http::Uri = url.parse().unwrap();
            assert_eq!(host_header(&uri, uri.authority().unwrap()), host, "{url}");
        }
    }

    #[test]
    fn the_request_target_is_the_path_and_query() {
        for (url, target) in [
            ("https://h/v1/chat/completions", "/v1/chat/completions"),
            ("https://h/v1/models?limit=2", "/v1/models?limit=2"),
            ("https://h", "/"),
            ("https://h/", "/"),
        ] {
            let uri: http::Uri = url.parse().unwrap();
            assert_eq!(origin_form(&uri).to_string(), target, "{url}");
        }
    }
}
