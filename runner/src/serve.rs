//! The HTTP(S) front: accept connections (HTTP/1.1, and HTTP/2 over TLS by ALPN), hand each
//! request to the component through the [`ProxyHandler`], stream the answer back, and log one
//! line per request when its body has been sent.

use crate::host::Handler;
use crate::manifest::App;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use wasmtime_wasi_http::handler::ProxyHandler;

type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub async fn serve(
    listener: TcpListener,
    handler: ProxyHandler<Handler>,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    release_free_memory();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    eprintln!("berth-runner: accept failed: {err}");
                    continue;
                }
            },
            () = &mut shutdown => {
                crate::host::SHUTTING_DOWN.store(true, std::sync::atomic::Ordering::Relaxed);
                println!("berth-runner: shutting down");
                return Ok(());
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(handler.clone(), app.clone(), scheme, req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let served = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
                    Err(err) => {
                        eprintln!("berth-runner: TLS handshake with {peer} failed: {err}");
                        return;
                    }
                },
                None => builder.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(err) = served {
                eprintln!("berth-runner: connection from {peer}: {err}");
            }
        });
    }
}

/// Hand memory that is free but held in the allocator's per-thread arenas back to the OS:
/// before serving (compiling a component that was not in the compile cache leaves about 20 MiB
/// free), and after each large blob transfer, whose buffers are allocated on one thread and
/// freed on another (about 20 MiB after 8 parallel pulls, which would otherwise stay as the
/// floor of the RSS).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the OS; it is safe to call any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed here, before the caller announces
/// that it serves, so a signal sent right after the announcement is a clean shutdown, not the
/// default action (death by signal).
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

async fn handle(
    handler: ProxyHandler<Handler>,
    app: Arc<App>,
    scheme: &'static str,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<ResponseBody>, std::convert::Infallible> {
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    let line = RequestLine { method: parts.method.to_string(), path: parts.uri.path().to_owned(), start };
    if !app.serves(parts.uri.path()) {
        let response = error_response(404, "NOT_FOUND", "no such endpoint", "no component is routed at this path");
        return Ok(response.map(|body| {
            LoggedBody { inner: body, bytes: 0, expected: None, status: 404, line: Some(line) }.boxed_unsync()
        }));
    }
    // Give the component the full URL (scheme and authority from the Host header or HTTP/2).
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned));
    if let Some(authority) = authority {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        if let Ok(uri) = http::Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build() {
            parts.uri = uri;
        }
    }
    let body = body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync();
    let response = match handler.handle((), http::Request::from_parts(parts, body)).await {
        Ok(response) => {
            response.map(|b| b.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed_unsync())
        }
        Err(err) => {
            eprintln!("berth-runner: {} {}: component failed: {err:?}", line.method, line.path);
            error_response(
                500,
                "INTERNAL_ERROR",
                "internal registry error",
                "the registry component failed on this request",
            )
        }
    };
    let status = response.status().as_u16();
    Ok(response.map(|body| {
        let expected = body.size_hint().exact();
        LoggedBody { inner: body, bytes: 0, expected, status, line: Some(line) }.boxed_unsync()
    }))
}

/// An OCI error answered by the runner itself (the component could not answer).
fn error_response(status: u16, code: &str, message: &str, detail: &str) -> hyper::Response<ResponseBody> {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{message}","detail":"{detail}"}}]}}"#);
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("docker-distribution-api-version", "registry/2.0")
        .body(http_body_util::Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync())
        .expect("static response")
}

struct RequestLine {
    method: String,
    path: String,
    start: Instant,
}

/// A response body that counts what it sends and logs the request when it is done (or dropped,
/// if the client went away).
struct LoggedBody<B> {
    inner: B,
    bytes: u64,
    /// The body's length when known (Content-Length), to tell a finished body from a cut one.
    expected: Option<u64>,
    status: u16,
    line: Option<RequestLine>,
}

impl<B> LoggedBody<B> {
    fn log(&mut self, outcome: &str) {
        if let Some(line) = self.line.take() {
            let ms = line.start.elapsed().as_secs_f64() * 1000.0;
            println!("{} {} {} {}B {ms:.1}ms{outcome}", line.method, line.path, self.status, self.bytes);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for LoggedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.log(" (body failed)"),
            Poll::Ready(None) => self.log(""),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        // hyper stops polling once Content-Length bytes are out, and never polls for HEAD.
        let head = self.line.as_ref().is_some_and(|l| l.method == "HEAD");
        let complete = head || self.expected.is_none_or(|n| self.bytes >= n);
        self.log(if complete { "" } else { " (incomplete)" });
    }
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}
