//! The upstream HTTP client of one deployment.
//!
//! Without a proxy it is hyper's HTTP/1.1 connections over rustls with the platform's certificate
//! verifier, pooled by [`pool`]: the stack reqwest is built on, without reqwest's per-request
//! layers (URL re-parsing, redirect and proxy matching), which were a fifth of the gateway's work
//! per request, nor hyper-util's general-purpose pool (docs/benchmarks-gateway.md). When the
//! environment names a proxy (`http_proxy`, `https_proxy`, `all_proxy`, either case) it is
//! reqwest, which applies it (and `no_proxy`). Both give the same response type and the same transport errors, so the rest of the
//! gateway does not know which one ran.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

mod pool;
use pool::{POOL_IDLE, Pool};

/// The body of an upstream response, whichever client read it.
pub(crate) type UpstreamBody = UnsyncBoxBody<Bytes, TransportError>;

/// An upstream response: status, headers and a body still to be read.
pub(crate) type UpstreamResponse = http::Response<UpstreamBody>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TCP keep-alive probes on upstream connections (finds dead pooled connections).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// What went wrong below HTTP: the connection could not be made, a limit passed, or it broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// No connection could be made (refused, unreachable, DNS, TLS handshake).
    Connect,
    /// The connect limit or a socket timeout passed.
    Timeout,
    /// The connection failed after it was made (reset, closed early, bad HTTP).
    Broken,
}

/// A transport failure, with its deepest cause (never the URL, which may carry a key).
#[derive(Clone, Debug)]
pub(crate) struct TransportError {
    pub kind: TransportKind,
    pub cause: String,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            TransportKind::Connect => "cannot connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Broken => "connection failed",
        };
        write!(f, "{what}: {}", self.cause)
    }
}

impl std::error::Error for TransportError {}

impl TransportError {
    /// Classifies an error by its source chain: a timed-out I/O error anywhere (or `timed_out`,
    /// the client's own verdict) is a timeout.
    fn from_chain(
        connect: bool,
        timed_out: bool,
        error: &(dyn std::error::Error + 'static),
    ) -> Self {
        let mut cause = error.to_string();
        let mut timed_out = timed_out;
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(s) = source {
            cause = s.to_string();
            if s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                timed_out = true;
            }
            source = s.source();
        }
        let kind = if timed_out {
            TransportKind::Timeout
        } else if connect {
            TransportKind::Connect
        } else {
            TransportKind::Broken
        };
        TransportError { kind, cause }
    }

    fn from_hyper(error: &hyper::Error) -> Self {
        Self::from_chain(false, error.is_timeout(), error)
    }

    fn from_reqwest(error: &reqwest::Error) -> Self {
        Self::from_chain(error.is_connect(), error.is_timeout(), error)
    }
}

/// A connector whose whole connection setup (DNS, TCP and the TLS handshake) must finish within
/// `limit`: an upstream that accepts TCP connections but never answers the TLS hello (a hung
/// process whose kernel still accepts) fails over after `connect_ms`, not after `headers_ms`.
#[derive(Clone)]
pub(crate) struct TimedConnector<C> {
    inner: C,
    limit: Duration,
}

impl<C> tower_service::Service<http::Uri> for TimedConnector<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection within {} ms (DNS, TCP and TLS handshake)",
                        limit.as_millis()
                    ),
                )) as BoxError),
            }
        })
    }
}

/// The TLS settings every deployment shares: the platform's verifier, safe protocol versions.
/// Built once per process on first success (loading the system's certificate store is slow, and a
/// reload must not pause the runtime for it; a failure is not kept, so the next build tries again);
/// a changed certificate store applies at the next start.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    static SHARED: OnceLock<rustls::ClientConfig> = OnceLock::new();
    if let Some(config) = SHARED.get() {
        return Ok(config.clone());
    }
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("cannot load the system's certificate verifier: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(SHARED.get_or_init(|| config).clone())
}

/// The connector of the direct client.
pub(crate) type DirectConnector = TimedConnector<HttpsConnector<HttpConnector>>;

/// One deployment's HTTP client (cheap to clone: the pool is shared).
#[derive(Clone)]
pub(crate) enum HttpClient {
    /// hyper's HTTP/1.1 connections over rustls, pooled.
    Direct(Arc<Pool>),
    /// reqwest, which applies the proxy settings.
    Proxied(reqwest::Client),
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpClient::Direct(_) => "HttpClient::Direct",
            HttpClient::Proxied(_) => "HttpClient::Proxied",
        })
    }
}

/// Whether the environment names a proxy (reqwest is built without system proxy settings, so the
/// environment is the only place it looks, on every platform).
pub(crate) fn proxy_configured() -> bool {
    [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ]
    .iter()
    .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

impl HttpClient {
    /// The client for this environment: reqwest if a proxy is configured, hyper's otherwise.
    pub fn new(connect_timeout: Duration) -> Result<Self, String> {
        if proxy_configured() {
            Self::proxied(connect_timeout)
        } else {
            Self::direct(connect_timeout)
        }
    }

    /// hyper's pooled HTTP/1.1 client over rustls, verifying certificates as the platform does;
    /// `connect_timeout` bounds the whole connection setup (DNS, TCP, TLS).
    /// Redirects are not followed: an API that redirects is misconfigured, and following one could
    /// carry the request (and its key) somewhere unexpected.
    pub fn direct(connect_timeout: Duration) -> Result<Self, String> {
        let tls = tls_config()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(TCP_KEEPALIVE));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let connector = TimedConnector {
            inner: https,
            limit: connect_timeout,
        };
        Ok(HttpClient::Direct(Arc::new(Pool::new(connector))))
    }

    /// reqwest with the environment's proxy settings (and the same limits as [`Self::direct`]).
    pub fn proxied(connect_timeout: Duration) -> Result<Self, String> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(TCP_KEEPALIVE)
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .map(HttpClient::Proxied)
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    /// Sends a request and waits for the response headers. Limits on the wait are the caller's.
    pub async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<UpstreamResponse, TransportError> {
        match self {
            HttpClient::Direct(pool) => pool.send(request).await,
            HttpClient::Proxied(client) => {
                let request = reqwest::Request::try_from(request)
                    .map_err(|e| TransportError::from_reqwest(&e))?;
                let response = client
                    .execute(request)
                    .await
                    .map_err(|e| TransportError::from_reqwest(&e))?;
                let response: http::Response<reqwest::Body> = response.into();
                Ok(response.map(|body| {
                    body.map_err(|e| TransportError::from_reqwest(&e))
                        .boxed_unsync()
                }))
            }
        }
    }
}

pub(crate) use stilts_config::parse_upstream_url;

/// The next chunk of data of a body (trailers are skipped), or `None` at its end.
pub(crate) async fn next_chunk(body: &mut UpstreamBody) -> Option<Result<Bytes, TransportError>> {
    loop {
        match body.frame().await? {
            Err(e) => return Some(Err(e)),
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure_for_both_clients() {
        // A port that was just free: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut clients = vec![HttpClient::direct(Duration::from_secs(2)).unwrap()];
        // With a proxy in the environment the proxied client would ask the proxy instead.
        if !proxy_configured() {
            clients.push(HttpClient::proxied(Duration::from_secs(2)).unwrap());
        }
        for client in clients {
            let request = http::Request::post(format!("http://{addr}/v1/chat/completions"))
                .body(Bytes::from_static(b"{}"))
                .unwrap();
            let err = client.send(request).await.unwrap_err();
            assert_eq!(err.kind, TransportKind::Connect, "{client:?}: {err}");
            assert!(err.to_string().starts_with("cannot connect: "), "{err}");
            assert!(!err.to_string().contains("127.0.0.1"), "no URL in {err}");
        }
    }

    /// An upstream that accepts the TCP connection but never answers the TLS hello: the connect
    /// limit covers the handshake, so the attempt fails as a timeout after it.
    #[tokio::test]
    async fn the_connect_limit_covers_a_stalled_tls_handshake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                held.push(tcp); // never read or answer
            }
        });
        let client = HttpClient::direct(Duration::from_millis(300)).unwrap();
        let request = http::Request::post(format!("https://localhost:{port}/v1/chat/completions"))
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), client.send(request))
            .await
            .expect("the connect limit did not end the handshake")
            .unwrap_err();
        assert_eq!(err.kind, TransportKind::Timeout, "{err}");
        assert!(
            err.to_string().contains("no connection within 300 ms"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        holder.abort();
    }

    #[test]
    fn upstream_urls_are_checked_before_use() {
        for good in [
            "https://api.openai.com/v1/chat/completions",
            "http://127.0.0.1:11434/v1/chat/completions",
            "http://[::1]:8000/v1",
            "https://h/",
            "http://h:/v1",
            "HTTPS://API.EXAMPLE.COM./v1",
        ] {
            assert!(parse_upstream_url(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("/v1/chat/completions", "no scheme"),
            ("ftp://h/x", "\"ftp\""),
            ("https://h:99999/v1", "port"),
            ("https://h:44x/v1", "port"),
            ("https://h:+443/v1", "port"),
            ("https://h:0/v1", "port"),
            ("http://[fe80::1%25eth0]:8000/v1", "zone id"),
            ("https://user:pw@h/v1", "credentials"),
            ("https://", "not a valid URL"),
            ("https://h /v1", "not a valid URL"),
        ] {
            let err = parse_upstream_url(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_timed_out_io_error_anywhere_in_the_chain_is_a_timeout() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connection timed out",
        ));
        let t = TransportError::from_chain(true, false, &e);
        assert_eq!(t.kind, TransportKind::Timeout);
        assert_eq!(t.to_string(), "timed out: connection timed out");
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// An HTTPS upstream whose certificate no trusted authority signed: the handshake must fail,
    /// as a connect failure that says why, and no request may be sent.
    #[tokio::test]
    async fn an_untrusted_certificate_is_refused() {
        use rustls::pki_types::pem::PemObject;
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let cert = rustls::pki_types::CertificateDer::from_pem_file(format!(
            "{fixtures}/untrusted-localhost.crt"
        ))
        .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(format!(
            "{fixtures}/untrusted-localhost.key"
        ))
        .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            // The client aborts the handshake; if it did not, answer so the test sees it.
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
                return true;
            }
            false
        });
        let client = HttpClient::direct(Duration::from_secs(5)).unwrap();
        let request = http::Request::post(format!("https://localhost:{port}/v1/chat/completions"))
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let err = client.send(request).await.unwrap_err();
        assert_eq!(err.kind, TransportKind::Connect, "{err}");
        assert!(err.to_string().contains("certificate"), "{err}");
        assert!(!server.await.unwrap(), "the handshake must not complete");
    }
}
