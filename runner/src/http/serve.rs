//! The HTTP(S) front: accept connections (HTTP/1.1, and HTTP/2 over TLS by ALPN), hand each
//! request to the component through the [`ProxyHandler`], stream the answer back, and log one
//! line per request when its body has been sent. Every connection runs under the [`Limits`]:
//! at most `--max-connections` at once, and closed when its client is too slow or idles.

use crate::app::manifest::App;
use crate::host::Handler;
use crate::http::answer_cache::{self, AnswerCache, Outcome, RequestKey};
use crate::http::headers::{COUNT_EVENTS, EVENTS, HOST_BODY, READ_SET, RECORD_READS};
use crate::http::host_body::{self, Delivery};
use crate::http::limits::{self, Connection, InFlight, Limits, Lingering, Reason, StallGuard, Watched};
use crate::http::request_log::{self, RequestLine};
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use wasmtime_wasi_http::handler::ProxyHandler;

/// A request body as the component reads it: failing when the client goes silent.
type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;
type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub async fn serve(
    listener: TcpListener,
    handler: ProxyHandler<Handler>,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    limits: Limits,
    answers: Option<Arc<AnswerCache>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    limits::make_room_for_connections(limits.max_connections);
    let limits = Arc::new(limits);
    // At the cap the loop stops accepting: new connections wait in the kernel's listen backlog
    // (and are served, in order, as soon as a slot frees) instead of being refused. Slow
    // connections are shed by the timeouts, so the wait is bounded, and a client that retries
    // on a refusal would only add load.
    let slots = Arc::new(Semaphore::new((limits.max_connections as usize).min(Semaphore::MAX_PERMITS)));
    let mut reported_full = false;
    crate::memory::release_free_memory();
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 && !reported_full {
            limits::log_line(format_args!(
                "berth-runner: all {} connections (--max-connections) are busy; new ones wait",
                limits.max_connections
            ));
        }
        reported_full = slots.available_permits() == 0;
        let (slot, accepted) = tokio::select! {
            next = next_connection(&listener, &slots) => next,
            () = &mut shutdown => {
                crate::host::state::SHUTTING_DOWN.store(true, std::sync::atomic::Ordering::Relaxed);
                println!("berth-runner: shutting down");
                return Ok(());
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("berth-runner: accept failed: {err}");
                back_off_when_out_of_resources(&err).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = Server {
            handler: handler.clone(),
            app: app.clone(),
            scheme,
            limits: limits.clone(),
            answers: answers.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            server.connection(stream, peer, tls).await;
            drop(slot);
        });
    }
}

/// A free connection slot, then the next connection.
async fn next_connection(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (Option<OwnedSemaphorePermit>, std::io::Result<(TcpStream, SocketAddr)>) {
    // The semaphore is never closed, so `acquire_owned` cannot fail; serve on without a slot
    // rather than panic if it ever did.
    let slot = slots.clone().acquire_owned().await.ok();
    (slot, listener.accept().await)
}

/// Out of file descriptors or memory, accept fails at once again: pause instead of spinning
/// (and flooding the log) until connections close.
async fn back_off_when_out_of_resources(err: &std::io::Error) {
    if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What every connection shares.
struct Server {
    handler: ProxyHandler<Handler>,
    app: Arc<App>,
    scheme: &'static str,
    limits: Arc<Limits>,
    answers: Option<Arc<AnswerCache>>,
}

impl Server {
    /// Serve one connection until it ends, the client goes too slow, or it idles too long.
    async fn connection(self, stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
        let _open = crate::http::metrics::Open::start();
        let Some(acceptor) = tls else { return self.http(stream, peer).await };
        match tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.http(stream, peer).await,
            Ok(Err(err)) => eprintln!("berth-runner: TLS handshake with {peer} failed: {err}"),
            Err(_) => limits::log_closed(
                peer,
                "tls_handshake",
                &format!(
                    "TLS handshake not finished within {:?} (--header-read-timeout)",
                    self.limits.header_read_timeout
                ),
            ),
        }
    }

    async fn http<S>(self, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connection = Arc::new(Connection::new(peer));
        let read_budget = host_body::connection_budget();
        let io = TokioIo::new(Watched::new(stream, connection.clone(), &self.limits));
        let limits = self.limits.clone();
        let requests = connection.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let version = req.version();
            let in_flight = requests.request_started(version);
            set_client_address(req.headers_mut(), peer);
            let req = req.map(|body| {
                let body = body.map_err(wasmtime_wasi_http::Error::from);
                Lingering::new(StallGuard::new(body, &self.limits, version, requests.clone()), version).boxed_unsync()
            });
            let front = Front {
                handler: self.handler.clone(),
                app: self.app.clone(),
                delivery: delivery(self.scheme, version),
                read_budget: read_budget.clone(),
                scheme: self.scheme,
                edge_body_cap: self.limits.edge_body_cap,
                answers: self.answers.clone(),
            };
            handle(front, in_flight, req)
        });
        let builder = connection_builder(&limits);
        let served = builder.serve_connection(io, service);
        tokio::pin!(served);
        let mut closing_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                // The watchdog first: a stalled body is reported before hyper, which closes a
                // connection whose request body was not read to the end, ends it on its own.
                biased;
                reason = connection.expired(&limits), if closing_since.is_none() => {
                    match reason {
                        // Nothing to answer: hang up.
                        Reason::NoRequest | Reason::SlowHeaders => {
                            limits::log_closed(peer, reason.label(), &reason.describe(&limits));
                            return;
                        }
                        // The component's error answer still goes out, then hyper closes.
                        Reason::StalledBody | Reason::SlowBody => {
                            limits::log_closed(peer, reason.label(), &reason.describe(&limits))
                        }
                        // An ordinary keep-alive close, not worth a log line. HTTP/2 gets a
                        // GOAWAY, and a request that crossed it on the wire is still answered.
                        Reason::Idle => {}
                    }
                    served.as_mut().graceful_shutdown();
                    closing_since = Some(tokio::time::Instant::now());
                }
                result = served.as_mut() => {
                    if let Err(err) = result {
                        eprintln!("berth-runner: connection from {peer}: {err}");
                    }
                    return;
                }
                () = sleep_until_some(closing_since.map(|since| since + CLOSE_GRACE)) => return,
            }
        }
    }
}

/// How long a connection being closed may take to send the answer in flight (a client that
/// does not read it must not keep the connection).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

fn connection_builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // The connection's watchdog times request heads: hyper's own header timer would also close
    // idle HTTP/1.1 keep-alive connections after the (shorter) header timeout.
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.http2_max_header_list_size);
    builder
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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

/// Tell the component who is calling, as Spin does (`spin-client-addr`), replacing any value the
/// client sent: the registry throttles failed logins per client address.
fn set_client_address(headers: &mut http::HeaderMap, peer: SocketAddr) {
    headers.remove("spin-client-addr");
    if let Ok(value) = http::HeaderValue::from_str(&peer.to_string()) {
        headers.insert("spin-client-addr", value);
    }
}

/// How a host body reaches the socket on this connection (`http::host_body`).
fn delivery(scheme: &str, version: http::Version) -> Delivery {
    if scheme == "http" && version < http::Version::HTTP_2 { Delivery::Kernel } else { Delivery::UserSpace }
}

/// What one request needs of its connection.
struct Front {
    handler: ProxyHandler<Handler>,
    app: Arc<App>,
    delivery: Delivery,
    /// The connection's share of the budget for bodies read from files.
    read_budget: Arc<tokio::sync::Semaphore>,
    scheme: &'static str,
    edge_body_cap: Option<u64>,
    answers: Option<Arc<AnswerCache>>,
}

async fn handle(
    front: Front,
    in_flight: InFlight,
    req: hyper::Request<RequestBody>,
) -> Result<hyper::Response<ResponseBody>, std::convert::Infallible> {
    let Front { handler, app, delivery, read_budget, scheme, edge_body_cap, answers } = front;
    let (mut parts, body) = req.into_parts();
    // The request's id, the client's or a new one: the component logs and answers the same.
    let request_id = request_log::request_id(&parts.headers);
    // Made of `A-Z a-z 0-9 . _ -` only (request_log::request_id), so always a valid header value.
    let id_header = http::HeaderValue::from_str(&request_id).expect("a request id is a valid header value");
    parts.headers.insert(request_log::REQUEST_ID, id_header.clone());
    // The component counts what the request did (uploads finished, blobs collected, ...) in its
    // answer when asked; a client cannot ask, nor see the answer (below).
    parts.headers.insert(COUNT_EVENTS, http::HeaderValue::from_static("1"));
    let client = parts.headers.get("spin-client-addr").and_then(|v| v.to_str().ok()?.parse().ok());
    let line = RequestLine::new(&parts, client, request_id);
    if !app.serves(parts.uri.path()) {
        let response = error_response(404, "NOT_FOUND", "no such endpoint", "no component is routed at this path");
        return refused(response, line, in_flight, &id_header);
    }
    if let Some(over) = over_edge_cap(edge_body_cap, &parts.headers, None) {
        return refused(edge_cap_refusal(413, "SIZE_INVALID", "request", over), line, in_flight, &id_header);
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
    // An answer kept from an earlier request, given again if what it was made from is unchanged
    // (`answer_cache`); otherwise the component records what this one's answer is made from.
    let kept_under = answers.as_ref().and_then(|_| RequestKey::of(&parts));
    if let (Some(answers), Some(key)) = (&answers, &kept_under) {
        match answers.answer(key).await {
            Some((kept, Outcome::Hit)) => {
                crate::http::metrics::answer_cache("hit");
                let body = if parts.method == http::Method::HEAD { Bytes::new() } else { kept.body.clone() };
                let mut response = hyper::Response::new(full_body(body));
                *response.status_mut() = kept.status;
                *response.headers_mut() = kept.headers.clone();
                return finish(response, line, in_flight, &id_header, edge_body_cap);
            }
            Some((_, Outcome::Changed)) => crate::http::metrics::answer_cache("changed"),
            Some((_, Outcome::Busy)) => crate::http::metrics::answer_cache("busy"),
            None => crate::http::metrics::answer_cache("miss"),
        }
        parts.headers.insert(RECORD_READS, http::HeaderValue::from_static("1"));
    } else {
        parts.headers.remove(RECORD_READS);
    }
    let head = parts.method == http::Method::HEAD;
    let admission = handler.state().admit().await;
    let response = match handler.handle(admission, http::Request::from_parts(parts, body)).await {
        Ok(response) => {
            response.map(|b| b.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed_unsync())
        }
        Err(err) => {
            eprintln!(
                "berth-runner: {} {}: component failed: {err:?} (request {})",
                line.method, line.path, line.request_id
            );
            error_response(
                500,
                "INTERNAL_ERROR",
                "internal registry error",
                &format!("the registry component failed on this request (request {})", line.request_id),
            )
        }
    };
    let mut response = response;
    // A body the component left to the host: the bytes go from the files to the socket.
    if let Some(token) = response.headers_mut().remove(HOST_BODY) {
        let offered = token.to_str().ok().and_then(|token| handler.state().host_bodies().take(token));
        match offered {
            Some(offered) if content_length(response.headers()) == Some(offered.length()) => {
                response = response.map(|_| host_body::body(offered, delivery, read_budget));
            }
            // The component's bug, not the client's: never send a body unlike its length.
            _ => {
                eprintln!(
                    "berth-runner: {} {}: the component answered with a host body that is unknown, expired or \
                     not of its Content-Length (request {})",
                    line.method, line.path, line.request_id
                );
                return refused(body_not_sent(&line), line, in_flight, &id_header);
            }
        }
    }
    if let Some(events) = response.headers_mut().remove(EVENTS) {
        crate::http::metrics::registry_events(events.to_str().unwrap_or_default());
    }
    // An answer the component says may be kept: its body (a manifest: small) is read whole,
    // kept, and sent from memory.
    if let Some(read_set) = response.headers_mut().remove(READ_SET)
        && let (Some(answers), Some(key)) = (&answers, kept_under)
        && response.status() == http::StatusCode::OK
        && (head || content_length(response.headers()).is_some_and(|n| n <= answer_cache::MAX_KEPT_BODY))
    {
        let (parts, body) = response.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                eprintln!(
                    "berth-runner: {} {}: the answer's body failed: {err} (request {})",
                    line.method, line.path, line.request_id
                );
                return refused(body_not_sent(&line), line, in_flight, &id_header);
            }
        };
        let read_set = read_set.to_str().unwrap_or_default();
        let handlers = handler.state();
        // A body that ended short of its length is sent as it is (the client sees the failure),
        // never kept.
        let whole = head || content_length(&parts.headers) == Some(body.len() as u64);
        if whole && answers.keep(key, handlers.key_value(), read_set, parts.status, parts.headers.clone(), body.clone())
        {
            crate::http::metrics::answer_cache("kept");
        }
        response = hyper::Response::from_parts(parts, full_body(body));
    }
    finish(response, line, in_flight, &id_header, edge_body_cap)
}

/// The common end of every answer the component (or the cache) gave: its id, the edge cap, and
/// the log line once the body is out.
fn finish(
    mut response: hyper::Response<ResponseBody>,
    line: RequestLine,
    in_flight: InFlight,
    id_header: &http::HeaderValue,
    edge_body_cap: Option<u64>,
) -> Result<hyper::Response<ResponseBody>, std::convert::Infallible> {
    if !response.headers().contains_key(request_log::REQUEST_ID) {
        response.headers_mut().insert(request_log::REQUEST_ID, id_header.clone());
    }
    let status = response.status().as_u16();
    if let Some(over) = over_edge_cap(edge_body_cap, response.headers(), response.body().size_hint().exact()) {
        eprintln!(
            "berth-runner: {} {}: a {}-byte response is over --edge-body-cap {} (request {})",
            line.method, line.path, over.0, over.1, line.request_id
        );
        return refused(edge_cap_refusal(502, "INTERNAL_ERROR", "response", over), line, in_flight, id_header);
    }
    Ok(response.map(|body| {
        let expected = body.size_hint().exact();
        LoggedBody { inner: body, bytes: 0, expected, status, line: Some(line), _in_flight: in_flight }.boxed_unsync()
    }))
}

/// An answer the runner gives instead of the component's (an error of its own), with the
/// request's id and its log line.
fn refused(
    mut response: hyper::Response<ResponseBody>,
    line: RequestLine,
    in_flight: InFlight,
    id_header: &http::HeaderValue,
) -> Result<hyper::Response<ResponseBody>, std::convert::Infallible> {
    response.headers_mut().insert(request_log::REQUEST_ID, id_header.clone());
    let status = response.status().as_u16();
    Ok(response.map(|body| {
        LoggedBody { inner: body, bytes: 0, expected: None, status, line: Some(line), _in_flight: in_flight }
            .boxed_unsync()
    }))
}

/// The length of a message whose body is over `--edge-body-cap` (from `Content-Length`, else
/// `hint`), and the cap.
fn over_edge_cap(cap: Option<u64>, headers: &http::HeaderMap, hint: Option<u64>) -> Option<(u64, u64)> {
    let cap = cap?;
    let length = content_length(headers).or(hint)?;
    (length > cap).then_some((length, cap))
}

/// The message's `Content-Length`, when it has a valid one.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok())
}

/// What an edge host with a body cap answers instead (`which`: request or response).
fn edge_cap_refusal(status: u16, code: &str, which: &str, (length, cap): (u64, u64)) -> hyper::Response<ResponseBody> {
    let detail = format!("the {which} body of {length} bytes is over this host's cap of {cap} (--edge-body-cap)");
    error_response(status, code, &format!("{which} body too large for this host"), &detail)
}

/// The runner's answer when the component's body cannot be sent as it said (the component's
/// fault, logged by the caller).
fn body_not_sent(line: &RequestLine) -> hyper::Response<ResponseBody> {
    let detail = format!("the registry could not send this body (request {})", line.request_id);
    error_response(500, "INTERNAL_ERROR", "internal registry error", &detail)
}

fn full_body(bytes: Bytes) -> ResponseBody {
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
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

/// A response body that counts what it sends and logs the request when it is done (or dropped,
/// if the client went away).
struct LoggedBody<B> {
    inner: B,
    bytes: u64,
    /// The body's length when known (Content-Length), to tell a finished body from a cut one.
    expected: Option<u64>,
    status: u16,
    line: Option<RequestLine>,
    /// The request stays in flight on its connection (no idle timeout) until the response is out.
    _in_flight: InFlight,
}

impl<B> LoggedBody<B> {
    fn log(&mut self, outcome: &str) {
        if let Some(line) = self.line.take() {
            line.write(self.status, self.bytes, outcome);
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
