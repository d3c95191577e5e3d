//! Limits that keep slow or idle clients from holding the server's connections (slowloris):
//! how long a TLS handshake, request headers, an idle keep-alive connection and a silent request
//! body may take, the slowest a client may send a body or take a response ([`RateFloor`]), how
//! many connections are served at once, and the HTTP/2 stream and header limits. [`Connection`]
//! follows one connection's requests and decides when it must close; [`Watched`] tells it about
//! bytes read and fails writes a client takes too slowly; [`StallGuard`] fails a request body that
//! goes silent or trickles.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The `berth-runner up` options of this module, with their defaults.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Connection limits")]
pub struct Limits {
    /// Close a connection whose TLS handshake, or whose request headers, take longer than this:
    /// the first request's counted from the connection's start (after TLS), later ones' from
    /// their first byte.
    #[arg(long, default_value = "30", value_parser = parse_seconds, value_name = "SECONDS")]
    pub header_read_timeout: Duration,
    /// Close a keep-alive connection that has had no request in flight for this long.
    #[arg(long, default_value = "120", value_parser = parse_seconds, value_name = "SECONDS")]
    pub idle_timeout: Duration,
    /// Fail a request whose body sends no byte for this long while the registry waits for it
    /// (HTTP/1.1: and close the connection). Uploads that keep sending are never cut.
    #[arg(long, default_value = "120", value_parser = parse_seconds, value_name = "SECONDS")]
    pub body_idle_timeout: Duration,
    /// The slowest a client may send a request body or take a response, in bytes per second,
    /// averaged over --rate-window of waiting for it (time the registry is busy does not count):
    /// a client that trickles a byte now and then is cut off. 0: no floor.
    #[arg(long, default_value_t = 500, value_name = "BYTES")]
    pub min_transfer_rate: u64,
    /// The stretch of waiting on a client over which --min-transfer-rate is averaged.
    #[arg(long, default_value = "30", value_parser = parse_seconds, value_name = "SECONDS")]
    pub rate_window: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one closes.
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// HTTP/2 streams (requests) one connection may have open at once.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,
    /// Largest HTTP/2 request header list (decoded, RFC 9113 size) accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..))]
    pub http2_max_header_list_size: u32,
    /// Behave like an edge host that caps bodies (Akamai Functions: 10485760): a request whose
    /// declared body is larger is refused with 413, and a response whose body is larger is
    /// replaced by a 502, before any byte of it is sent. For trying an edge deployment (blob
    /// redirects, docs/deploying.md) on one machine; unset: no cap.
    #[arg(long, value_name = "BYTES")]
    pub edge_body_cap: Option<u64>,
}

/// Seconds, as `30`, `30s` or `0.5`; more than zero.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let number = text.trim().strip_suffix('s').unwrap_or(text.trim());
    let seconds: f64 = number.parse().map_err(|_| format!("{text:?} is not a number of seconds (like 30 or 30s)"))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(format!("{text:?}: must be more than 0 seconds"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?}: too many seconds"))
}

/// File descriptors kept free beside the connections: key-value databases, blob files being
/// written and read, the compile cache.
const DESCRIPTORS_BESIDE_CONNECTIONS: u64 = 256;

/// Raise the soft open-files limit so that `max_connections` can be reached: it is often 1024
/// (systemd's default), which the default cap plus the blob files would exceed, and accept
/// would fail with EMFILE. The hard limit is the ceiling; below it, say so once.
pub fn make_room_for_connections(max_connections: u32) {
    let wanted = u64::from(max_connections) + DESCRIPTORS_BESIDE_CONNECTIONS;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the one struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= wanted {
        return;
    }
    let raised = libc::rlimit { rlim_cur: wanted.min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: setrlimit only reads the struct; raising the soft limit up to the hard one is allowed.
    if raised.rlim_cur > limit.rlim_cur && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        limit = raised;
    }
    if limit.rlim_cur < wanted {
        eprintln!(
            "berth-runner: the open files limit ({}) is below --max-connections {max_connections} + \
             {DESCRIPTORS_BESIDE_CONNECTIONS}: raise it (ulimit -n) or lower --max-connections",
            limit.rlim_cur
        );
    }
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No complete request (headers) since the connection started.
    NoRequest,
    /// An HTTP/1.1 request's headers started but did not end in time.
    SlowHeaders,
    /// No request in flight for the idle timeout: an ordinary keep-alive close.
    Idle,
    /// An HTTP/1.1 request body went silent; the connection cannot be reused.
    StalledBody,
    /// An HTTP/1.1 request body came slower than the rate floor; the connection cannot be reused.
    SlowBody,
}

impl Reason {
    /// The reason's metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NoRequest => "no_request",
            Reason::SlowHeaders => "slow_headers",
            Reason::Idle => "idle",
            Reason::StalledBody => "stalled_body",
            Reason::SlowBody => "slow_body",
        }
    }

    /// What the log says, with the limit that was crossed.
    pub fn describe(self, limits: &Limits) -> String {
        match self {
            Reason::NoRequest => {
                format!("no complete request headers within {:?} (--header-read-timeout)", limits.header_read_timeout)
            }
            Reason::SlowHeaders => {
                format!("request headers not finished within {:?} (--header-read-timeout)", limits.header_read_timeout)
            }
            Reason::Idle => format!("idle for {:?} (--idle-timeout)", limits.idle_timeout),
            Reason::StalledBody => {
                format!("request body sent nothing for {:?} (--body-idle-timeout)", limits.body_idle_timeout)
            }
            Reason::SlowBody => format!(
                "request body sent slower than {} bytes/s over {:?} of waiting (--min-transfer-rate)",
                limits.min_transfer_rate, limits.rate_window
            ),
        }
    }
}

/// One connection as the limits see it: its requests in flight and the reads between them.
pub struct Connection {
    pub peer: SocketAddr,
    state: Mutex<State>,
    /// Wakes [`Connection::expired`] when the state changes (its deadline may have moved).
    changed: Notify,
}

#[derive(Debug)]
struct State {
    opened: Instant,
    /// Requests started so far.
    requests: u64,
    /// Requests whose response has not been sent (or dropped) yet.
    in_flight: usize,
    /// When `in_flight` last fell to zero.
    idle_since: Instant,
    /// HTTP/1.1: when the first byte after the last response arrived (the next request's head).
    head_started: Option<Instant>,
    http1: bool,
    /// HTTP/1.1: a request body went silent or trickled (which of the two).
    body_stalled: Option<(Instant, Reason)>,
}

impl State {
    fn new(now: Instant) -> State {
        State {
            opened: now,
            requests: 0,
            in_flight: 0,
            idle_since: now,
            head_started: None,
            http1: false,
            body_stalled: None,
        }
    }

    /// When the connection must close, and why; `None` while requests are in flight (their
    /// bodies have their own timeout).
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Reason)> {
        if let Some(stalled) = self.body_stalled {
            return Some(stalled);
        }
        if self.in_flight > 0 {
            return None;
        }
        if self.requests == 0 {
            // Covers a client that sends nothing, an HTTP/2 preface or HEADERS frame dribbled in,
            // and a first HTTP/1.1 head that is too slow.
            return Some((self.opened + limits.header_read_timeout, Reason::NoRequest));
        }
        match self.head_started {
            Some(at) if self.http1 => Some((at + limits.header_read_timeout, Reason::SlowHeaders)),
            // HTTP/2 frames between requests (PING, SETTINGS) are not a request: still idle.
            _ => Some((self.idle_since + limits.idle_timeout, Reason::Idle)),
        }
    }
}

impl Connection {
    pub fn new(peer: SocketAddr) -> Connection {
        Connection { peer, state: Mutex::new(State::new(Instant::now())), changed: Notify::new() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under any panic (plain field writes): use it anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state());
        self.changed.notify_one();
    }

    /// A request's headers are in; it is in flight until the returned guard is dropped.
    pub fn request_started(self: &Arc<Self>, version: http::Version) -> InFlight {
        self.update(|state| {
            state.requests += 1;
            state.in_flight += 1;
            state.http1 = version < http::Version::HTTP_2;
            state.head_started = None;
        });
        InFlight { connection: self.clone() }
    }

    /// Bytes arrived: between HTTP/1.1 requests, that starts the next request's header timeout.
    fn bytes_read(&self) {
        let mut state = self.state();
        if state.http1 && state.in_flight == 0 && state.requests > 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A request body went silent. HTTP/1.1 cannot skip the rest of a body, so the connection
    /// closes; an HTTP/2 stream fails alone (the other streams are not at fault).
    fn body_stalled(&self, http1: bool, reason: Reason, limits_text: &str) {
        if http1 {
            self.update(|state| state.body_stalled = Some((Instant::now(), reason)));
        } else {
            log_line(format_args!("berth-runner: request from {} failed: {limits_text}", self.peer));
        }
    }

    /// Resolves when the connection must close, with the reason.
    pub async fn expired(&self, limits: &Limits) -> Reason {
        loop {
            let deadline = self.state().deadline(limits);
            match deadline {
                Some((at, reason)) if at <= Instant::now() => return reason,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// A request in flight on its [`Connection`]; dropping it ends the request.
pub struct InFlight {
    connection: Arc<Connection>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.connection.update(|state| {
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.idle_since = Instant::now();
                state.head_started = None;
            }
        });
    }
}

/// A connection's byte stream, reporting reads to its [`Connection`], and failing its writes
/// when the client takes them slower than the rate floor (a response nobody reads).
pub struct Watched<S> {
    inner: S,
    connection: Arc<Connection>,
    taken: RateFloor,
    /// Wakes a write that waits on the client when the floor would be missed.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The log text, prepared once.
    reason: String,
}

impl<S> Watched<S> {
    pub fn new(inner: S, connection: Arc<Connection>, limits: &Limits) -> Watched<S> {
        let reason = format!(
            "response taken slower than {} bytes/s over {:?} of waiting (--min-transfer-rate)",
            limits.min_transfer_rate, limits.rate_window
        );
        Watched { inner, connection, taken: RateFloor::new(limits), timer: None, reason }
    }

    /// What a write came to: bytes taken move the floor on; a write that waits on the client
    /// fails once the floor is missed.
    fn written(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                self.taken.moved(Instant::now(), n as u64);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.waiting(cx).map(Err),
            other => other,
        }
    }

    /// What a flush came to (a TLS stream flushes the records it holds): a flush that waits on
    /// the client counts as waiting too.
    fn flushed(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<()>>) -> Poll<std::io::Result<()>> {
        match polled {
            Poll::Pending => self.waiting(cx).map(Err),
            other => other,
        }
    }

    /// The stream waits on the client: pending, or the error once the floor is missed.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let Some(deadline) = self.taken.wait(Instant::now()) else { return Poll::Pending };
        loop {
            if self.taken.too_slow(Instant::now()) {
                log_closed(self.connection.peer, "slow_response", &self.reason);
                return Poll::Ready(std::io::Error::new(std::io::ErrorKind::TimedOut, self.reason.clone()));
            }
            let deadline = self.taken.wait(Instant::now()).unwrap_or(deadline);
            let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            timer.as_mut().reset(deadline.into());
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// A minimum transfer rate, averaged over the time a transfer waits on the client (for a body's
/// next bytes, for room to write a response): time in which the server itself is busy does not
/// count against the client, and a fast client hardly ever waits. A window is
/// `--rate-window` of waiting; a window that moved fewer than `--min-transfer-rate` bytes per
/// second of it fails the transfer.
#[derive(Debug)]
pub struct RateFloor {
    bytes_per_sec: u64,
    window: Duration,
    /// Waiting counted in the current window, besides the wait going on.
    waited: Duration,
    /// Bytes moved in the current window.
    bytes: u64,
    /// Since when the transfer waits, if it does.
    waiting_since: Option<Instant>,
}

impl RateFloor {
    pub fn new(limits: &Limits) -> RateFloor {
        RateFloor {
            bytes_per_sec: limits.min_transfer_rate,
            window: limits.rate_window,
            waited: Duration::ZERO,
            bytes: 0,
            waiting_since: None,
        }
    }

    /// `bytes` moved at `now` (which ends a wait).
    pub fn moved(&mut self, now: Instant, bytes: u64) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += now.saturating_duration_since(since);
        }
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// The transfer waits on the client from `now` (or from earlier, if it already did): when
    /// the window will have been waited through, to look then; `None` with no floor.
    pub fn wait(&mut self, now: Instant) -> Option<Instant> {
        if self.bytes_per_sec == 0 {
            return None;
        }
        let since = *self.waiting_since.get_or_insert(now);
        Some(since + self.window.saturating_sub(self.waited))
    }

    /// Whether a window has been waited through with fewer bytes than the floor asks; a window
    /// that met it gives way to the next.
    pub fn too_slow(&mut self, now: Instant) -> bool {
        let waiting = self.waiting_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        if self.bytes_per_sec == 0 || self.waited + waiting < self.window {
            return false;
        }
        let needed = (self.bytes_per_sec as f64 * self.window.as_secs_f64()) as u64;
        if self.bytes < needed {
            return true;
        }
        self.waited = Duration::ZERO;
        self.bytes = 0;
        if self.waiting_since.is_some() {
            self.waiting_since = Some(now);
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.connection.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.flushed(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails when the client sends nothing for `timeout` while it is being
/// read. Time in which nobody reads the body (the component is busy writing the last chunk)
/// does not count: the clock starts when a read finds no data, and stops at the next frame.
pub struct StallGuard<B> {
    inner: B,
    timeout: Duration,
    /// Made once and reset for each silence, rather than allocated per frame of a large upload.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The timer runs: the last read found no data and no frame has come since.
    silent: bool,
    /// When the silence that the timer measures started.
    silent_since: Instant,
    sent: RateFloor,
    stalled: bool,
    http1: bool,
    connection: Arc<Connection>,
    /// The log texts, prepared once (the limits are not at hand when the body is polled).
    reason: String,
    slow_reason: String,
}

impl<B> StallGuard<B> {
    pub fn new(inner: B, limits: &Limits, version: http::Version, connection: Arc<Connection>) -> StallGuard<B> {
        StallGuard {
            inner,
            timeout: limits.body_idle_timeout,
            timer: None,
            silent: false,
            silent_since: Instant::now(),
            sent: RateFloor::new(limits),
            stalled: false,
            http1: version < http::Version::HTTP_2,
            connection,
            reason: Reason::StalledBody.describe(limits),
            slow_reason: Reason::SlowBody.describe(limits),
        }
    }
}

impl<B> Body for StallGuard<B>
where
    B: Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Unpin,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.stalled {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
        }
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.silent = false;
            let bytes = match &frame {
                Some(Ok(frame)) => frame.data_ref().map_or(0, |data| data.len() as u64),
                _ => 0,
            };
            this.sent.moved(Instant::now(), bytes);
            crate::http::metrics::body_received(bytes);
            return Poll::Ready(frame);
        }
        if !this.silent {
            this.silent = true;
            this.silent_since = Instant::now();
        }
        loop {
            let now = Instant::now();
            let (reason, text) = if this.sent.too_slow(now) {
                (Reason::SlowBody, &this.slow_reason)
            } else if now >= this.silent_since + this.timeout {
                (Reason::StalledBody, &this.reason)
            } else {
                // Look again at the nearer of the two limits.
                let silence_ends = this.silent_since + this.timeout;
                let deadline = this.sent.wait(now).map_or(silence_ends, |window_ends| window_ends.min(silence_ends));
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                timer.as_mut().reset(deadline.into());
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            };
            this.stalled = true;
            this.connection.body_stalled(this.http1, reason, text);
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.stalled && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// At most this much of a request body that the registry answered without reading is read and
/// thrown away, for at most [`LINGER_TIME`], before its HTTP/1.1 connection closes: a server that
/// closes with unread bytes in its socket makes the kernel reset the connection, and the client
/// then sees the reset (a broken pipe while it still sends) instead of the answer, e.g. the 413
/// for a manifest over 4 MiB. nginx's lingering close does the same.
pub const LINGER_BYTES: u64 = 16 * 1024 * 1024;
pub const LINGER_TIME: Duration = Duration::from_secs(10);

/// A request body that, when dropped before its end on HTTP/1.1 (the registry answered without
/// reading it all), reads the rest in the background within [`LINGER_BYTES`] and
/// [`LINGER_TIME`], so that hyper writes the answer and the client reads it before the
/// connection closes. The body's own [`StallGuard`] still cuts a sender that stalls or trickles.
pub struct Lingering<B: Body<Data = Bytes> + Unpin + Send + 'static> {
    inner: Option<B>,
    http1: bool,
}

impl<B: Body<Data = Bytes> + Unpin + Send + 'static> Lingering<B> {
    pub fn new(inner: B, version: http::Version) -> Lingering<B> {
        Lingering { inner: Some(inner), http1: version < http::Version::HTTP_2 }
    }
}

impl<B: Body<Data = Bytes> + Unpin + Send + 'static> Body for Lingering<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B: Body<Data = Bytes> + Unpin + Send + 'static> Drop for Lingering<B> {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else { return };
        if !self.http1 || inner.is_end_stream() {
            return;
        }
        // Outside a runtime (never while serving) there is nothing to linger on.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let discard = async {
                let mut read = 0u64;
                while read < LINGER_BYTES {
                    match std::future::poll_fn(|cx| Pin::new(&mut inner).poll_frame(cx)).await {
                        Some(Ok(frame)) => read += frame.data_ref().map_or(0, |data| data.len() as u64),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, discard).await;
        });
    }
}

/// Lines about closed connections printed per second at most; an attack opening thousands of
/// slow connections must not turn into thousands of log lines a second.
const LOG_LINES_PER_SECOND: u32 = 10;

struct LogBudget {
    window_start: Option<Instant>,
    printed: u32,
    suppressed: u64,
}

static LOG_BUDGET: Mutex<LogBudget> = Mutex::new(LogBudget { window_start: None, printed: 0, suppressed: 0 });

impl LogBudget {
    /// Whether a line may be printed now, and how many were suppressed before it.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.window_start.is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1)) {
            self.window_start = Some(now);
            self.printed = 0;
        }
        if self.printed >= LOG_LINES_PER_SECOND {
            self.suppressed += 1;
            return None;
        }
        self.printed += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Print one line about a connection on stdout (with the request log), within the budget.
pub fn log_line(line: std::fmt::Arguments<'_>) {
    let admitted = LOG_BUDGET.lock().unwrap_or_else(PoisonError::into_inner).admit(Instant::now());
    match admitted {
        Some(0) => println!("{line}"),
        Some(suppressed) => println!("{line} ({suppressed} similar lines suppressed before this one)"),
        None => {}
    }
}

/// A connection the limits closed: its line, and its count by `reason` (a metrics label).
pub fn log_closed(peer: SocketAddr, reason: &'static str, why: &str) {
    crate::http::metrics::shed(reason);
    log_line(format_args!("berth-runner: closed connection from {peer}: {why}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            body_idle_timeout: Duration::from_secs(120),
            min_transfer_rate: 500,
            rate_window: Duration::from_secs(30),
            max_connections: 1024,
            http2_max_concurrent_streams: 100,
            http2_max_header_list_size: 65536,
            edge_body_cap: None,
        }
    }

    #[test]
    fn a_trickle_misses_the_rate_floor_once_a_window_was_waited_through() {
        let start = Instant::now();
        let mut floor = RateFloor::new(&limits());
        // A byte, then 29 s of waiting: not yet a window.
        floor.moved(start, 1);
        assert_eq!(floor.wait(start), Some(start + Duration::from_secs(30)));
        assert!(!floor.too_slow(start + Duration::from_secs(29)));
        floor.moved(start + Duration::from_secs(29), 1);
        // The next wait finishes the window after one more second, with 2 of 15,000 bytes.
        let next = start + Duration::from_secs(29);
        assert_eq!(floor.wait(next), Some(next + Duration::from_secs(1)));
        assert!(floor.too_slow(next + Duration::from_secs(1)));
    }

    #[test]
    fn a_transfer_that_keeps_the_rate_is_never_too_slow_and_time_not_waiting_does_not_count() {
        let start = Instant::now();
        let mut floor = RateFloor::new(&limits());
        let mut now = start;
        for _ in 0..100 {
            // 1,000 bytes per second of waiting, with long stretches in which nobody waited.
            floor.wait(now);
            now += Duration::from_secs(1);
            assert!(!floor.too_slow(now));
            floor.moved(now, 1000);
            now += Duration::from_secs(60);
        }
        let off = Limits { min_transfer_rate: 0, ..limits() };
        let mut none = RateFloor::new(&off);
        assert_eq!(none.wait(start), None);
        assert!(!none.too_slow(start + Duration::from_secs(3600)), "0: no floor");
    }

    #[test]
    fn seconds_are_read_with_or_without_a_unit() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["", "s", "0", "-1", "ten", "NaN", "inf", "1e400"] {
            assert!(parse_seconds(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_new_connection_must_complete_a_request_within_the_header_timeout() {
        let start = Instant::now();
        let state = State::new(start);
        assert_eq!(state.deadline(&limits()), Some((start + Duration::from_secs(30), Reason::NoRequest)));
    }

    #[test]
    fn a_connection_with_a_request_in_flight_has_no_deadline() {
        let mut state = State::new(Instant::now());
        state.requests = 1;
        state.in_flight = 1;
        state.head_started = Some(Instant::now());
        assert_eq!(state.deadline(&limits()), None);
    }

    #[test]
    fn between_requests_the_idle_timeout_runs_until_a_new_head_starts_on_http1() {
        let start = Instant::now();
        let mut state = State::new(start);
        state.requests = 1;
        state.idle_since = start + Duration::from_secs(5);
        assert_eq!(state.deadline(&limits()), Some((start + Duration::from_secs(125), Reason::Idle)));
        state.head_started = Some(start + Duration::from_secs(7));
        state.http1 = false;
        assert_eq!(state.deadline(&limits()).map(|(_, reason)| reason), Some(Reason::Idle), "HTTP/2 PINGs");
        state.http1 = true;
        assert_eq!(state.deadline(&limits()), Some((start + Duration::from_secs(37), Reason::SlowHeaders)));
    }

    #[test]
    fn a_stalled_http1_body_closes_the_connection_at_once() {
        let start = Instant::now();
        let mut state = State::new(start);
        state.requests = 1;
        state.in_flight = 1;
        state.body_stalled = Some((start, Reason::StalledBody));
        assert_eq!(state.deadline(&limits()), Some((start, Reason::StalledBody)));
    }

    #[test]
    fn the_log_budget_suppresses_a_flood_and_counts_it() {
        let mut budget = LogBudget { window_start: None, printed: 0, suppressed: 0 };
        let start = Instant::now();
        for _ in 0..LOG_LINES_PER_SECOND {
            assert_eq!(budget.admit(start), Some(0));
        }
        assert_eq!(budget.admit(start), None);
        assert_eq!(budget.admit(start + Duration::from_millis(999)), None);
        assert_eq!(budget.admit(start + Duration::from_secs(1)), Some(2));
    }
}
