//! The two storage contracts the registry logic is written against. Backends: Spin key-value and
//! Berth's blob store WIT interface in the component (`spin/`), in-memory ones for native tests
//! (`testing`).

use crate::wire::digest::{Algorithm, Digest, RunningHash};
use crate::wire::errcode::{ErrorCode, RegistryError};
use std::cell::{Cell, RefCell};

/// Why a storage call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    AlreadyExists,
    /// The request body broke off before its end (client went away, framing error).
    BodyInterrupted(String),
    /// The backend cannot be reached or refuses for now (it may work again later): the registry
    /// answers 503 and logs this, which names the backend.
    Unavailable(String),
    /// Backend failure: the registry answers 500 and logs this.
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("not found"),
            StoreError::AlreadyExists => f.write_str("already exists"),
            StoreError::BodyInterrupted(why) => write!(f, "request body interrupted: {why}"),
            StoreError::Unavailable(why) => write!(f, "unavailable: {why}"),
            StoreError::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StoreError {}

/// Metadata: small values under string keys (Spin key-value, with the atomics of
/// `wasi:keyvalue`).
///
/// Contract: `set` overwrites; `delete` of a missing key succeeds; values are small (well under
/// 400 KB) and keys under 250 bytes. `compare_and_swap` is the one atomic step the registry's
/// claims are built on (docs/consistency.md).
#[allow(async_fn_in_trait)]
pub trait MetaStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Replace the value of `key` with `new` if, and only if, it is still `expected`: `false`
    /// when it is not (changed or deleted meanwhile). The key must exist: swapping an absent
    /// key is an unconditional upsert on Spin 4.1's SQLite backend, so Berth never relies on it.
    async fn compare_and_swap(&self, key: &str, expected: &[u8], new: &[u8]) -> Result<bool, StoreError>;
    /// Add `delta` to the counter under `key` (an 8-byte little-endian `i64`, 0 when absent) in
    /// one atomic step, across instances; the new value. Only ever used on keys that hold
    /// counters (Spin's SQLite backend panics on another value).
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
    /// What this request read, when the host asked for it (`read_set.rs`).
    fn read_set(&self) -> Option<&ReadSet> {
        None
    }
}

/// What one request read (each key once, with the hash of the value it first saw) and whether
/// it did anything else. `read_set.rs` says why that is all a kept answer depends on.
#[derive(Debug, Default)]
pub struct ReadSet {
    /// The key-value store's label, for the host to read the same keys in.
    label: String,
    reads: RefCell<std::collections::BTreeMap<String, Option<Digest>>>,
    /// Set by anything but a read (a write, a swap, an increment), and by a key read twice
    /// with two values.
    unkeepable: Cell<bool>,
    /// Set by the route when its answer depends on nothing but the reads (`crate::api`).
    keepable: Cell<bool>,
    /// When the answer stops being right whatever the reads: a token's expiry (Unix seconds).
    until: Cell<Option<u64>>,
}

impl ReadSet {
    /// Say that this request's answer depends only on its key-value reads.
    pub fn mark_keepable(&self) {
        self.keepable.set(true);
    }

    /// The answer is right only before `time` (Unix seconds) as well.
    pub fn keep_until(&self, time: u64) {
        self.until.set(Some(self.until.get().map_or(time, |until| until.min(time))));
    }

    /// The validators of a keepable answer: `<label> [@<until>] <key>=<sha256 hex>|- ...`, one
    /// entry per key read (`-`: it was absent), `@` the time it is right until when bounded;
    /// `None` when the answer must not be kept.
    pub fn validators(&self) -> Option<String> {
        if !self.keepable.get() || self.unkeepable.get() {
            return None;
        }
        let mut line = self.label.clone();
        if let Some(until) = self.until.get() {
            line.push_str(&format!(" @{until}"));
        }
        for (key, value) in self.reads.borrow().iter() {
            line.push(' ');
            line.push_str(key);
            line.push('=');
            line.push_str(value.as_ref().map_or("-", Digest::hex));
        }
        Some(line)
    }

    /// The host asked for the reads; `label` is the store's.
    pub fn new(label: &str) -> ReadSet {
        ReadSet { label: label.to_owned(), ..ReadSet::default() }
    }

    /// Anything but a read happened: the answer must not be kept.
    pub fn note_write(&self) {
        self.unkeepable.set(true);
    }

    pub fn note_read(&self, key: &str, value: Option<&[u8]>) {
        let hash = value.map(|v| Digest::of(Algorithm::Sha256, v));
        let mut reads = self.reads.borrow_mut();
        match reads.get(key) {
            None => {
                reads.insert(key.to_owned(), hash);
            }
            // Read twice, seen changed: the answer was made from two states, and a check of
            // either value could pass for the other.
            Some(first) if *first != hash => self.unkeepable.set(true),
            Some(_) => {}
        }
    }
}

/// A counter's value as [`MetaStore::increment`] stores it: 8 bytes little-endian (Spin's SQLite
/// backend, berth-runner) or decimal text (Redis `INCRBY`); 0 when unreadable.
pub fn counter_value(value: &[u8]) -> i64 {
    if !value.is_empty() && value.len() <= 20 && value.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(value).ok().and_then(|text| text.parse().ok()).unwrap_or(0);
    }
    value.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

/// A byte range of one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub name: String,
    pub offset: u64,
    pub length: u64,
}

/// What a write stored: its size and the running hashes continued over its bytes.
pub struct Written {
    pub size: u64,
    pub hashes: Vec<RunningHash>,
}

/// Content: immutable named objects (Berth's `berth:blob-store/store` interface).
///
/// `Incoming` is a request body as the host hands it over, `Outgoing` a byte stream that can
/// become a response body: the registry passes both through without touching the bytes.
#[allow(async_fn_in_trait)]
pub trait BlobStore {
    type Incoming;
    type Outgoing;

    /// Store `data` as the new object `name`, continuing `hashes` over its bytes. Nothing is
    /// visible under `name` unless this returns `Ok`.
    async fn write(&self, name: &str, data: Self::Incoming, hashes: Vec<RunningHash>) -> Result<Written, StoreError>;
    /// The extents, one after another, as one stream.
    async fn read_extents(&self, extents: Vec<Extent>) -> Result<Self::Outgoing, StoreError>;
    /// A token by which the host sends the extents itself as the body of the response being
    /// built (header [`crate::wire::message::HOST_BODY`]), so the bytes never pass through the
    /// registry; `None` when the store cannot, and the caller streams `read_extents`.
    async fn host_body(&self, extents: &[Extent]) -> Result<Option<String>, StoreError> {
        let _ = extents;
        Ok(None)
    }
    async fn size(&self, name: &str) -> Result<u64, StoreError>;
    async fn delete(&self, name: &str) -> Result<(), StoreError>;
    /// Create `name` from the extents, one after another (as `write` would from their bytes);
    /// `None` when the store does not join objects.
    async fn compose(&self, name: &str, extents: Vec<Extent>) -> Result<Option<u64>, StoreError>;
    /// A URL from which a client can GET the object's bytes itself, valid for about
    /// `expires_secs`; `None` when the store serves bytes only through `read_extents`.
    async fn presign(&self, name: &str, expires_secs: u32) -> Result<Option<String>, StoreError>;
    /// Up to `limit` names starting with `prefix`, in lexical order, after `cursor`; and the
    /// cursor of the next page when there is one.
    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>), StoreError>;
    /// Store a small object held in memory (a manifest, an index entry).
    async fn write_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// Read a small object into memory (an index entry).
    async fn read_bytes(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// Read a request body into memory, up to `limit` bytes; `None` if it is longer. For bodies
    /// that must be parsed (manifests), never for blobs.
    async fn collect(&self, body: Self::Incoming, limit: usize) -> Result<Option<Vec<u8>>, StoreError>;
    /// Continue `hash` over the bytes of the extents, one after another. For the rare upload
    /// that finishes under an algorithm that was not running along it (SHA-512).
    async fn hash_extents(&self, extents: Vec<Extent>, hash: RunningHash) -> Result<RunningHash, StoreError>;
}

/// A request to an upstream registry (the mirror's outbound HTTP).
#[derive(Debug, Clone)]
pub struct OutRequest {
    pub method: http::Method,
    /// Absolute: `http[s]://host[:port]/path?query`.
    pub url: String,
    pub headers: Vec<(http::HeaderName, String)>,
    /// A body (event deliveries), else none.
    pub body: Option<Vec<u8>>,
    /// Seconds to wait for a first byte, or between two, when shorter than the host's default.
    pub timeout_secs: Option<u64>,
}

/// An upstream's answer, its body not yet read.
pub struct OutResponse<Body> {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Body,
}

impl<Body> OutResponse<Body> {
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Outbound HTTP, for the mirror's upstreams (`crate::mirror`).
#[allow(async_fn_in_trait)]
pub trait Outbound<B: BlobStore> {
    /// A response body as it arrives.
    type Body;
    /// What [`Outbound::settle`] takes: the relay's hold on the client's last bytes.
    type Verdict;

    /// Send a request. `Unavailable` when the upstream cannot be reached (or the host refuses
    /// the destination: the message says which).
    async fn send(&self, request: OutRequest) -> Result<OutResponse<Self::Body>, StoreError>;
    /// Read a body into memory, up to `limit` bytes; `None` if it is longer.
    async fn read(&self, body: Self::Body, limit: usize) -> Result<Option<Vec<u8>>, StoreError>;
    /// The bytes of `body` twice, as they arrive: as a request body the blob store can write
    /// (whole only if the upstream's body arrived whole), and as a response body for the client,
    /// whose last bytes are held back until [`Outbound::settle`] says whether the stored copy
    /// verified. A client that goes away does not stop the copy into the store.
    fn relay(&self, body: Self::Body) -> (B::Incoming, B::Outgoing, Self::Verdict);
    /// Release the client's last bytes (`whole`), or end its body short, so that the client's
    /// transfer fails.
    fn settle(&self, verdict: Self::Verdict, whole: bool);
    /// Wait this long (a request waiting for another's fetch of the same blob).
    async fn pause(&self, millis: u64);
}

/// No outbound HTTP (native tests, and a registry that mirrors nothing).
pub struct NoOutbound;

impl<B: BlobStore> Outbound<B> for NoOutbound {
    type Body = std::convert::Infallible;
    type Verdict = std::convert::Infallible;

    async fn send(&self, request: OutRequest) -> Result<OutResponse<Self::Body>, StoreError> {
        Err(StoreError::Unavailable(format!("no outbound HTTP here (to {})", request.url)))
    }

    async fn read(&self, body: Self::Body, _: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match body {}
    }

    fn relay(&self, body: Self::Body) -> (B::Incoming, B::Outgoing, Self::Verdict) {
        match body {}
    }

    fn settle(&self, verdict: Self::Verdict, _: bool) {
        match verdict {}
    }

    async fn pause(&self, _: u64) {}
}

/// Both stores, plus what the registry needs from its environment, for one request.
pub struct Stores<M, B> {
    pub meta: M,
    pub blobs: B,
    /// 128 random bits, for upload ids and object names.
    pub random: fn() -> [u8; 16],
    /// Wall-clock time, in seconds since the Unix epoch.
    pub now: fn() -> u64,
    pub config: crate::config::Config,
    /// The request's id (its `X-Request-Id`, taken or made): in every log line it causes, in its
    /// answer's headers, and in the detail of an internal error, so that a report finds the lines.
    pub request_id: RequestId,
    /// What this request did that operators count (`Stores::count`): the host reads it from
    /// the answer (see `crate::api::EVENTS`) and adds it to its metrics.
    pub events: Events,
}

/// Counts of registry events during one request, by name (`uploads_finished`, ...).
#[derive(Debug, Default)]
pub struct Events(std::cell::RefCell<std::collections::BTreeMap<&'static str, u64>>);

impl Events {
    /// How many of event `name` this request counted.
    pub fn get(&self, name: &str) -> u64 {
        self.0.borrow().get(name).copied().unwrap_or(0)
    }

    /// `name=count` pairs, comma-separated (empty when nothing happened).
    pub fn summary(&self) -> String {
        self.0.borrow().iter().map(|(name, n)| format!("{name}={n}")).collect::<Vec<_>>().join(",")
    }
}

impl<M, B> Stores<M, B> {
    /// Count `n` of the registry event `name` (a metrics name: lowercase words and `_`).
    pub fn count(&self, name: &'static str, n: u64) {
        if n > 0 {
            *self.events.0.borrow_mut().entry(name).or_default() += n;
        }
    }

    /// Write a line to the log (the component's stderr), ending with the request's id.
    pub fn log(&self, line: std::fmt::Arguments<'_>) {
        eprintln!("berth: {line} (request {})", self.request_id.as_str());
    }
}

/// A request id: 1 to 64 characters from `A-Z a-z 0-9 . _ -`, so that it cannot forge a log
/// line or a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The client's (or a proxy's) `X-Request-Id`, when it is one.
    pub fn parse(text: &str) -> Option<RequestId> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        valid.then(|| RequestId(text.to_owned()))
    }

    /// A new id, from 64 random bits.
    pub fn made(random: [u8; 16]) -> RequestId {
        RequestId(hex::encode(&random[..8]))
    }

    /// The request's `X-Request-Id` if valid, else a new one.
    pub fn of(headers: &http::HeaderMap, random: fn() -> [u8; 16]) -> RequestId {
        headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::parse)
            .unwrap_or_else(|| RequestId::made(random()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn hashes_for(algorithms: &[Algorithm]) -> Vec<RunningHash> {
    algorithms.iter().map(|&a| RunningHash::new(a)).collect()
}

/// A storage failure as the client sees it: 503 when the backend is down (it may come back),
/// 500 otherwise. Both are logged with the backend's message (`crate::api::handle`).
pub fn internal(err: StoreError) -> RegistryError {
    match err {
        StoreError::Unavailable(why) => RegistryError::new(ErrorCode::Unavailable, why),
        other => RegistryError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// The blob store's objects under a prefix, a page at a time, in lexical order: the one loop
/// over `list` that tags, catalog, referrers and untagging share.
pub struct ObjectPages<'a, B> {
    blobs: &'a B,
    prefix: &'a str,
    cursor: Option<String>,
    done: bool,
}

impl<'a, B: BlobStore> ObjectPages<'a, B> {
    /// Objects named `prefix...`, starting after the object `after` when given.
    pub fn new(blobs: &'a B, prefix: &'a str, after: Option<String>) -> Self {
        ObjectPages { blobs, prefix, cursor: after, done: false }
    }

    /// The next page of object names; `None` once the listing is complete.
    pub async fn next(&mut self) -> Result<Option<Vec<String>>, RegistryError> {
        if self.done {
            return Ok(None);
        }
        let (names, next) = self.blobs.list(self.prefix, self.cursor.as_deref(), 1000).await.map_err(internal)?;
        self.done = next.is_none();
        self.cursor = next;
        Ok(Some(names))
    }
}

#[cfg(test)]
mod tests {
    use super::counter_value;

    #[test]
    fn a_request_id_is_taken_only_when_it_cannot_forge_a_line_or_a_header() {
        use super::RequestId;
        assert_eq!(RequestId::parse("abc-123_X.y").unwrap().as_str(), "abc-123_X.y");
        for bad in ["", "a b", "a\nberth: forged", "ü", &"x".repeat(65), "a;b"] {
            assert_eq!(RequestId::parse(bad), None, "{bad:?}");
        }
        let mut headers = http::HeaderMap::new();
        assert_eq!(RequestId::of(&headers, || [7; 16]).as_str(), "0707070707070707", "made when absent");
        headers.insert("x-request-id", http::HeaderValue::from_static("from-the-proxy"));
        assert_eq!(RequestId::of(&headers, || [7; 16]).as_str(), "from-the-proxy");
    }

    #[test]
    fn counters_read_as_either_backend_writes_them() {
        assert_eq!(counter_value(&7i64.to_le_bytes()), 7);
        assert_eq!(counter_value(b"12"), 12, "Redis writes counters as text");
        assert_eq!(counter_value(b"junk"), 0);
    }
}
