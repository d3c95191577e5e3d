//! Prometheus metrics of the runner, counted by the host, which sees every request: requests by
//! endpoint family, method and status, their latency, bytes in and out, connections open and shed
//! by the limits, requests in flight. `--metrics-listen ADDR` serves them at `/metrics` on a
//! listener of their own (never the registry's port: a scrape needs no credentials, and a
//! registry's clients have no business reading them). Encoded by `prometheus-client` (the
//! Prometheus project's Rust client), in the OpenMetrics text format that Prometheus scrapes.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabel, Histogram>,
    received: Counter,
    sent: Counter,
    in_flight: Gauge,
    connections: Gauge,
    shed: Family<ReasonLabel, Counter>,
    events: Family<EventLabel, Counter>,
    instances: Gauge,
    instances_busy: Gauge,
    gc_last_pass: Gauge,
    backend_errors: Family<BackendLabel, Counter>,
    answer_cache: Family<OutcomeLabel, Counter>,
}

/// Latency buckets, in seconds: a manifest GET takes well under a millisecond, a layer minutes.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0];

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by endpoint family, method and status",
            requests.clone(),
        );
        let duration =
            Family::<RouteLabel, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied()));
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to the last byte of its answer, by endpoint family",
            duration.clone(),
        );
        let received = Counter::default();
        registry.register("http_request_body_bytes", "Request body bytes received", received.clone());
        let sent = Counter::default();
        registry.register("http_response_body_bytes", "Response body bytes sent", sent.clone());
        let in_flight = Gauge::default();
        registry.register("http_requests_in_flight", "Requests being answered now", in_flight.clone());
        let connections = Gauge::default();
        registry.register("connections_open", "Client connections open now", connections.clone());
        let shed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_shed",
            "Connections closed by the limits against slow or idle clients, by reason",
            shed.clone(),
        );
        let events = Family::<EventLabel, Counter>::default();
        registry.register(
            "registry_events",
            "What the registry did, as the component counts it per request: uploads opened, finished and \
             cancelled; garbage collection's blobs examined and removed and bytes reclaimed; retention's \
             removals and completed passes; mirror cache hits, upstream asks and bytes, stale answers; \
             throttled logins; quota refusals and recounts; storage unavailable",
            events.clone(),
        );
        let instances = Gauge::default();
        registry.register("instances", "Component instances alive now", instances.clone());
        let instances_busy = Gauge::default();
        registry.register(
            "instances_busy",
            "Component instances running a request's handler now (a body still streaming after its handler \
             answered counts in http_requests_in_flight only)",
            instances_busy.clone(),
        );
        let gc_last_pass = Gauge::default();
        registry.register(
            "gc_last_pass_completed_timestamp_seconds",
            "When a garbage collection pass through this runner last completed (Unix time; 0: none yet)",
            gc_last_pass.clone(),
        );
        let backend_errors = Family::<BackendLabel, Counter>::default();
        registry.register(
            "backend_errors",
            "Failures of the runner's storage backends (SQLite, Redis key-value; the filesystem blob store), by \
             backend; a provider component's failures count as the registry's storage_unavailable",
            backend_errors.clone(),
        );
        let answer_cache = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "answer_cache",
            "Requests whose answer may have been kept (anonymous or bearer-token reads of manifests, blob HEADs, /v2/), by outcome: hit (given from the \
             cache, every value it was made from unchanged), changed (a value changed: asked again), busy \
             (not checked now: too many checks waiting on a remote store), miss (nothing kept); and \
             answers kept",
            answer_cache.clone(),
        );
        Metrics {
            registry,
            answer_cache,
            requests,
            duration,
            received,
            sent,
            in_flight,
            connections,
            shed,
            events,
            instances,
            instances_busy,
            gc_last_pass,
            backend_errors,
        }
    })
}

/// A request was answered (its body sent to the end, cut, or dropped).
pub fn request_done(route: &'static str, method: &str, status: u16, bytes: u64, seconds: f64) {
    let m = metrics();
    m.requests.get_or_create(&RequestLabels { route, method: method.to_owned(), status }).inc();
    m.duration.get_or_create(&RouteLabel { route }).observe(seconds);
    m.sent.inc_by(bytes);
}

/// The component's counts for one request, `name=count,...`. Names are checked (lowercase words
/// and `_`, at most 64 bytes), so an answer cannot invent label values of any shape.
pub fn registry_events(summary: &str) {
    for (name, count) in summary.split(',').filter_map(|pair| pair.split_once('=')) {
        let valid = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if let (true, Ok(count)) = (valid, count.parse::<u64>()) {
            metrics().events.get_or_create(&EventLabel { event: name.to_owned() }).inc_by(count);
            if name == "gc_passes_completed" {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                metrics().gc_last_pass.set(now.as_secs() as i64);
            }
        }
    }
}

/// A lookup in the answer cache (`hit`, `changed`, `busy`, `miss`), or an answer kept (`kept`).
pub fn answer_cache(outcome: &'static str) {
    metrics().answer_cache.get_or_create(&OutcomeLabel { outcome }).inc();
}

pub fn body_received(bytes: u64) {
    metrics().received.inc_by(bytes);
}

/// Held while a request is being answered.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        metrics().in_flight.inc();
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().in_flight.dec();
    }
}

/// Held while a connection is open.
pub struct Open(());

impl Open {
    pub fn start() -> Open {
        metrics().connections.inc();
        Open(())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics().connections.dec();
    }
}

/// The limits closed a connection (`reason`: a short label, one of a few).
pub fn shed(reason: &'static str) {
    metrics().shed.get_or_create(&ReasonLabel { reason }).inc();
}

/// The metrics in the OpenMetrics text format.
pub fn encode() -> String {
    // The instance gauges are read from the host when scraped.
    metrics().instances.set(crate::host::INSTANCES_ALIVE.load(std::sync::atomic::Ordering::Relaxed));
    metrics().instances_busy.set(crate::host::INSTANCES_BUSY.load(std::sync::atomic::Ordering::Relaxed));
    // One scrape at a time brings the counters up to the stores' counts (two at once would
    // both add the same difference).
    static SYNC: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SYNC.lock().unwrap_or_else(|p| p.into_inner());
    let errors = &crate::store::BACKEND_ERRORS;
    for (backend, count) in [("sqlite", &errors.sqlite), ("redis", &errors.redis), ("filesystem", &errors.filesystem)] {
        let counter = metrics().backend_errors.get_or_create(&BackendLabel { backend });
        let now = count.load(std::sync::atomic::Ordering::Relaxed);
        counter.inc_by(now.saturating_sub(counter.get()));
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics().registry).expect("writing to a String");
    text
}

/// The same in Prometheus' own text format (0.0.4), for scrapers and tools that do not ask for
/// OpenMetrics (`promtool check metrics`, curl): a counter's metadata names its `_total`
/// samples, and there is no `# EOF` or `# UNIT`.
pub fn encode_prometheus_text() -> String {
    let open = encode();
    let counters: std::collections::HashSet<&str> =
        open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut text = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(meta.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serve `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for metrics"))?;
    println!("berth-runner: metrics on http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let response = if req.uri().path() == "/metrics" {
                        // OpenMetrics for whoever asks for it (Prometheus does), else Prometheus text.
                        let accept = req.headers().get("accept").and_then(|v| v.to_str().ok()).unwrap_or_default();
                        let (kind, body) = if accept.contains("application/openmetrics-text") {
                            (OPENMETRICS, encode())
                        } else {
                            (PROMETHEUS_TEXT, encode_prometheus_text())
                        };
                        hyper::Response::builder().header("content-type", kind).body(Full::new(Bytes::from(body)))
                    } else {
                        hyper::Response::builder().status(404).body(Full::new(Bytes::from_static(b"not found\n")))
                    };
                    Ok::<_, std::convert::Infallible>(response.expect("static response"))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_family_method_and_status_and_timed() {
        request_done("manifests", "GET", 200, 512, 0.0004);
        request_done("manifests", "GET", 200, 512, 0.002);
        let _busy = InFlight::start();
        let text = encode();
        assert!(text.contains(r#"berth_http_requests_total{route="manifests",method="GET",status="200"} 2"#), "{text}");
        assert!(
            text.contains(r#"berth_http_request_duration_seconds_bucket{le="0.0005",route="manifests"} 1"#),
            "{text}"
        );
        assert!(text.contains("berth_http_requests_in_flight 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        registry_events("uploads_finished=1,gc_blobs_removed=3,Bad-Name=9,junk");
        let text = encode();
        assert!(text.contains(r#"berth_registry_events_total{event="gc_blobs_removed"} 3"#), "{text}");
        assert!(!text.contains("Bad-Name"), "{text}");
        let plain = encode_prometheus_text();
        assert!(plain.contains("# TYPE berth_http_requests_total counter"), "{plain}");
        assert!(plain.contains("# HELP berth_http_requests_total Requests answered"), "{plain}");
        assert!(plain.contains("# TYPE berth_http_request_duration_seconds histogram"), "{plain}");
        assert!(!plain.contains("# EOF"), "{plain}");
    }
}
