//! A plain HTTP(S) client honouring [`NetOptions`]: hyper-util's legacy
//! client over [`NetConnector`], which connects directly or through the
//! proxy the environment names for the URL (CONNECT for `https://`,
//! absolute-form requests for `http://`) and speaks TLS with the
//! platform's roots plus the CA bundle.

use super::NetOptions;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a request through [`HttpClient`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// The TLS configuration could not be built.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects to a URL's host directly or through the environment's proxy;
/// `https://` URLs get TLS (through the CONNECT tunnel when proxied).
#[derive(Clone)]
pub struct NetConnector {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    proxy: Arc<Matcher>,
}

/// A connection made by [`NetConnector`].
pub enum NetStream {
    /// Plain TCP; `proxied` when it goes to an HTTP proxy that takes
    /// absolute-form requests.
    Plain {
        /// The socket.
        tcp: TcpStream,
        /// Whether the other end is a proxy.
        proxied: bool,
    },
    /// TLS to the destination (possibly inside a CONNECT tunnel).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for NetStream {
    fn connected(&self) -> Connected {
        match self {
            NetStream::Plain { proxied, .. } => Connected::new().proxy(*proxied),
            NetStream::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for NetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain { tcp, .. } => Pin::new(tcp).poll_read(cx, buf),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain { tcp, .. } => Pin::new(tcp).poll_write(cx, buf),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain { tcp, .. } => Pin::new(tcp).poll_flush(cx),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain { tcp, .. } => Pin::new(tcp).poll_shutdown(cx),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tower_service::Service<http::Uri> for NetConnector {
    type Response = TokioIo<NetStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(dst).await })
    }
}

impl NetConnector {
    async fn connect(mut self, dst: http::Uri) -> Result<TokioIo<NetStream>, BoxError> {
        use tower_service::Service;
        let https = dst.scheme_str() == Some("https");
        let intercept = self.proxy.intercept(&dst);
        let tcp = match &intercept {
            Some(proxy) if https => {
                // CONNECT host:port, then TLS with the destination inside
                // the tunnel: the proxy sees only the host name.
                let mut tunnel = hyper_util::client::legacy::connect::proxy::Tunnel::new(
                    proxy.uri().clone(),
                    self.tcp.clone(),
                );
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                tunnel
                    .call(dst.clone())
                    .await
                    .map_err(|e| {
                        format!("proxy {} (from https_proxy/HTTPS_PROXY): {e}", proxy.uri())
                    })?
                    .into_inner()
            }
            Some(proxy) => {
                let tcp = self
                    .tcp
                    .call(proxy.uri().clone())
                    .await
                    .map_err(|e| {
                        format!("proxy {} (from http_proxy/HTTP_PROXY): {e}", proxy.uri())
                    })?
                    .into_inner();
                return Ok(TokioIo::new(NetStream::Plain { tcp, proxied: true }));
            }
            None => self.tcp.call(dst.clone()).await?.into_inner(),
        };
        if !https {
            return Ok(TokioIo::new(NetStream::Plain {
                tcp,
                proxied: false,
            }));
        }
        let host = dst.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host}: not a valid TLS server name: {e}"))?;
        let tls = self.tls.connect(name, tcp).await?;
        Ok(TokioIo::new(NetStream::Tls(Box::new(tls))))
    }
}

/// An HTTP/1.1 client that honours [`NetOptions`]. Cheap to clone (the
/// connection pool is shared). Use it like hyper's client:
///
/// ```no_run
/// # async fn f(net: &telemetry_sink::net::NetOptions) -> Result<(), Box<dyn std::error::Error>> {
/// let client = telemetry_sink::net::http_client(net)?;
/// let req = http::Request::post("https://broker.example.com/v1/upload")
///     .header("content-type", "application/json")
///     .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))?;
/// let response = client.request(req).await?;
/// # Ok(()) }
/// ```
pub type HttpClient = hyper_util::client::legacy::Client<NetConnector, Full<Bytes>>;

/// Build an [`HttpClient`] for `net`: the environment's proxy (with its
/// NO_PROXY rules) and the platform's roots plus the CA bundle.
///
/// Requests for `http://` URLs through a proxy that needs credentials in
/// its URL are not supported (only the CONNECT path sends them); brokers
/// are `https://`.
pub fn http_client(net: &NetOptions) -> Result<HttpClient, HttpClientError> {
    let mut tcp = HttpConnector::new();
    // The connector is handed https:// URLs too; TLS is done here.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
    let connector = NetConnector {
        tcp,
        tls: tokio_rustls::TlsConnector::from(Arc::new(net.rustls_config()?)),
        proxy: Arc::new(net.proxy.matcher()),
    };
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}
