//! Answers the HTTP front gives again without running the component: hot manifests, blob
//! HEADs and the base endpoint, asked anonymously or with a bearer token (kept for that token,
//! until it expires). The component says which answers may be kept, and what each was made
//! from: every key-value key it read, with the hash of the value (`x-berth-read-set`;
//! `src/registry/read_set.rs` says why that is all an answer depends on).
//! Before each answer it gives, the front reads those keys again, in the same store every front
//! end writes, and gives the kept answer only if every value is unchanged; otherwise the request
//! goes to the component as if nothing were kept.
//!
//! So a cached read is exactly as fresh as an uncached one: a tag moved, a manifest deleted,
//! through any front end, is seen by the next request to start after the change was
//! acknowledged, here as everywhere. What it saves is the component: an instance, the call into
//! it, its allocations; the key-value reads stay (three point reads for a manifest by tag).

use crate::http::headers::{COUNT_EVENTS, EVENTS, READ_SET, RECORD_READS};
use crate::store::kv::KvBackend;
use crate::store::kv_stores::KvStores;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// The largest body kept (a manifest is at most 4 MiB, and typically a few KiB).
pub const MAX_KEPT_BODY: u64 = 256 * 1024;
/// All bodies and keys kept, at most; the oldest answers go first.
const BUDGET_BYTES: usize = 64 << 20;

/// Request headers that the component does not read for the answers it keeps: hop-by-hop
/// ones, what the front itself sets, and what only logs and events (never kept) look at. Every
/// other header is part of the answer's key, so that an answer is given only to a request the
/// component would have answered the same.
const IGNORED: [&str; 9] = [
    "user-agent",
    "accept-encoding",
    "connection",
    "keep-alive",
    "te",
    "x-request-id",
    "spin-client-addr",
    COUNT_EVENTS,
    RECORD_READS,
];

/// What identifies a request for the answers kept: method, full URL, and its headers but the
/// ignored ones, in order.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestKey(Box<[u8]>);

impl RequestKey {
    /// `None` for a request whose answer is never kept: with a password or a cookie, or not
    /// one of the keepable reads (GET or HEAD of a manifest or `/v2/`, HEAD of a blob; the
    /// component decides, this only spares the others the recording). A bearer token is part of
    /// the key: its answers go to the same token only, and only until it expires.
    pub fn of(parts: &http::request::Parts) -> Option<RequestKey> {
        let head = parts.method == http::Method::HEAD;
        let keepable = match crate::http::request_log::route_of(parts.uri.path()).0 {
            "manifests" | "base" => head || parts.method == http::Method::GET,
            "blobs" => head,
            _ => false,
        };
        let bearer_or_none = parts.headers.get(http::header::AUTHORIZATION).is_none_or(|value| {
            value.as_bytes().get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        });
        if !keepable || !bearer_or_none || parts.headers.contains_key(http::header::COOKIE) {
            return None;
        }
        let mut headers: Vec<(&str, &[u8])> = parts
            .headers
            .iter()
            .filter(|(name, _)| !IGNORED.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        // By name only, and stably: the values of a repeated header keep their order, since
        // the component reads the first (two Authorization headers in either order are two
        // different requests).
        headers.sort_by(|a, b| a.0.cmp(b.0));
        let mut key = Vec::with_capacity(128);
        key.extend_from_slice(parts.method.as_str().as_bytes());
        key.push(b' ');
        key.extend_from_slice(parts.uri.to_string().as_bytes());
        for (name, value) in headers {
            key.push(b'\n');
            key.extend_from_slice(name.as_bytes());
            key.push(b':');
            key.extend_from_slice(value);
        }
        Some(RequestKey(key.into_boxed_slice()))
    }
}

/// Each key read, and the SHA-256 of the value read (`None`: absent).
type Reads = Vec<(String, Option<[u8; 32]>)>;

/// One kept answer and what it was made from.
pub struct Kept {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    store: Arc<dyn KvBackend>,
    reads: Reads,
    /// Given only before this time (Unix seconds): a bearer token's expiry.
    until: Option<u64>,
    /// Its place in the order of insertion (the eviction queue names it by this).
    serial: u64,
}

impl Kept {
    /// Whether every key still holds the value the answer was made from (`None`: not checked
    /// now, too many checks waiting on the network). Runs on a blocking thread, in one round
    /// trip, when the store's reads are not local (Redis).
    async fn still_holds(self: &Arc<Self>, remote_checks: &Arc<Semaphore>) -> Option<Result<bool, String>> {
        if self.store.reads_in_place() {
            return Some(self.check());
        }
        // A slow store must not fill the blocking pool with checks: past the cap, the request
        // goes to the component, which waits in line for an instance like any other.
        let place = remote_checks.clone().try_acquire_owned().ok()?;
        let kept = self.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let _place = place;
            kept.check()
        });
        Some(checked.await.map_err(|e| e.to_string()).and_then(|result| result))
    }

    fn check(&self) -> Result<bool, String> {
        let keys: Vec<&str> = self.reads.iter().map(|(key, _)| key.as_str()).collect();
        let values = self.store.get_many(&keys)?;
        let hash = |value: &Vec<u8>| <[u8; 32]>::from(Sha256::digest(value));
        Ok(values.len() == self.reads.len()
            && values.iter().zip(&self.reads).all(|(now, (_, read))| now.as_ref().map(hash) == *read))
    }

    fn cost(&self, key: &RequestKey) -> usize {
        key.0.len() + self.body.len() + self.reads.iter().map(|(k, _)| k.len() + 48).sum::<usize>() + 512
    }
}

/// How a lookup went, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Given from the cache.
    Hit,
    /// Kept, but a key's value changed (or could not be read): dropped, and asked again.
    Changed,
    /// Kept, but not checked now (too many checks in flight on a remote store): asked again.
    Busy,
}

#[derive(Default)]
struct Entries {
    map: HashMap<RequestKey, Arc<Kept>>,
    /// Keys in the order they were kept, with the serial of the answer kept then.
    order: VecDeque<(RequestKey, u64)>,
    bytes: usize,
    serial: u64,
}

/// The answers kept by one runner process.
pub struct AnswerCache {
    entries: Mutex<Entries>,
    budget: usize,
    /// Checks on blocking threads at once (a remote store's).
    remote_checks: Arc<Semaphore>,
}

/// Checks of kept answers against a remote store (Redis) in flight at once.
const REMOTE_CHECKS: usize = 32;

impl AnswerCache {
    pub fn new() -> AnswerCache {
        AnswerCache::with_budget(BUDGET_BYTES)
    }

    fn with_budget(budget: usize) -> AnswerCache {
        let remote_checks = Arc::new(Semaphore::new(REMOTE_CHECKS));
        AnswerCache { entries: Mutex::new(Entries::default()), budget, remote_checks }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The answer kept for `key`, if every value it was made from is unchanged.
    pub async fn answer(&self, key: &RequestKey) -> Option<(Arc<Kept>, Outcome)> {
        let kept = self.lock().map.get(key)?.clone();
        if kept.until.is_some_and(|until| unix_now() >= until) {
            self.forget(key, kept.serial);
            return Some((kept, Outcome::Changed));
        }
        match kept.still_holds(&self.remote_checks).await {
            None => Some((kept, Outcome::Busy)),
            Some(Ok(true)) => Some((kept, Outcome::Hit)),
            Some(Ok(false) | Err(_)) => {
                self.forget(key, kept.serial);
                Some((kept, Outcome::Changed))
            }
        }
    }

    fn forget(&self, key: &RequestKey, serial: u64) {
        let mut entries = self.lock();
        if entries.map.get(key).is_some_and(|kept| kept.serial == serial)
            && let Some(kept) = entries.map.remove(key)
        {
            entries.bytes -= kept.cost(key);
        }
    }

    /// Keep an answer the component made from `read_set` (its `x-berth-read-set`); `false`
    /// when it cannot be kept (a body too large, a store that cannot be opened, a malformed set).
    pub fn keep(
        &self,
        key: RequestKey,
        stores: &KvStores,
        read_set: &str,
        status: http::StatusCode,
        mut headers: http::HeaderMap,
        body: Bytes,
    ) -> bool {
        let Some((store, until, reads)) = parse_read_set(stores, read_set) else { return false };
        if body.len() as u64 > MAX_KEPT_BODY {
            return false;
        }
        // Each answer gets its own id; nothing internal is kept.
        for name in [crate::http::request_log::REQUEST_ID, READ_SET, EVENTS] {
            headers.remove(name);
        }
        let mut entries = self.lock();
        entries.serial += 1;
        let kept = Kept { status, headers, body, store, reads, until, serial: entries.serial };
        let cost = kept.cost(&key);
        if cost > self.budget / 4 {
            return false;
        }
        if let Some(old) = entries.map.insert(key.clone(), Arc::new(kept)) {
            entries.bytes -= old.cost(&key);
        }
        entries.bytes += cost;
        let serial = entries.serial;
        entries.order.push_back((key, serial));
        while entries.bytes > self.budget {
            let Some((oldest, serial)) = entries.order.pop_front() else { break };
            if entries.map.get(&oldest).is_some_and(|kept| kept.serial == serial)
                && let Some(kept) = entries.map.remove(&oldest)
            {
                entries.bytes -= kept.cost(&oldest);
            }
        }
        // Keys answered again and again leave stale places in the queue: drop them once they
        // outnumber the answers kept.
        if entries.order.len() > 2 * entries.map.len() + 64 {
            let Entries { map, order, .. } = &mut *entries;
            order.retain(|(key, serial)| map.get(key).is_some_and(|kept| kept.serial == *serial));
        }
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

/// `<label> [@<until>] <key>=<sha256 hex>|- ...` into the store, the time bound and the reads.
fn parse_read_set(stores: &KvStores, read_set: &str) -> Option<(Arc<dyn KvBackend>, Option<u64>, Reads)> {
    let mut words = read_set.split(' ').peekable();
    let store = stores.open(words.next()?).ok()?;
    let until = match words.next_if(|word| word.starts_with('@')) {
        Some(word) => Some(word[1..].parse().ok()?),
        None => None,
    };
    let mut reads = Vec::new();
    for word in words {
        let (key, hash) = word.rsplit_once('=')?;
        let hash = match hash {
            "-" => None,
            hex => Some(sha256_from_hex(hex)?),
        };
        reads.push((key.to_owned(), hash));
    }
    Some((store, until, reads))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn sha256_from_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn stores() -> (tempfile::TempDir, KvStores) {
        let dir = tempfile::tempdir().unwrap();
        let stores = KvStores::new(dir.path().to_owned(), vec!["default".into()], HashMap::new());
        (dir, stores)
    }

    #[test]
    fn requests_differ_by_what_the_component_reads_and_not_by_what_it_ignores() {
        let url = "http://r/v2/a/manifests/v1";
        let plain = RequestKey::of(&parts("GET", url, &[("accept", "x"), ("user-agent", "docker")])).unwrap();
        let other_agent = RequestKey::of(&parts("GET", url, &[("user-agent", "podman"), ("accept", "x")])).unwrap();
        assert!(plain == other_agent, "the user agent is ignored");
        assert!(plain != RequestKey::of(&parts("GET", url, &[("accept", "y")])).unwrap(), "Accept counts");
        assert!(plain != RequestKey::of(&parts("HEAD", url, &[("accept", "x")])).unwrap(), "the method counts");
        assert!(plain != RequestKey::of(&parts("GET", "https://r/v2/a/manifests/v1", &[("accept", "x")])).unwrap());
        let token = |t: &str| RequestKey::of(&parts("GET", url, &[("authorization", t)]));
        assert!(token("Bearer a").is_some() && token("bearer a").is_some(), "a bearer token's answers may be kept");
        assert!(token("Bearer a") != token("Bearer b"), "for that token only");
        let both = |first: &str, second: &str| {
            RequestKey::of(&parts("GET", url, &[("authorization", first), ("authorization", second)]))
        };
        assert!(both("Bearer a", "Bearer b") != both("Bearer b", "Bearer a"), "the first value is the one read");
        for never in [
            parts("GET", url, &[("authorization", "Basic YTpi")]),
            parts("GET", url, &[("authorization", "Bearer")]),
            parts("GET", url, &[("cookie", "s=1")]),
            parts("PUT", url, &[]),
            parts("GET", "http://r/v2/a/blobs/sha256:00", &[]),
            parts("GET", "http://r/v2/a/tags/list", &[]),
            parts("GET", "http://r/v2/_catalog", &[]),
        ] {
            assert!(RequestKey::of(&never).is_none(), "{} {:?}", never.method, never.headers);
        }
    }

    #[test]
    fn a_kept_answer_is_given_while_every_value_read_is_unchanged() {
        let (_dir, stores) = stores();
        let store = stores.open("default").unwrap();
        store.set("tag", b"one").unwrap();
        let cache = AnswerCache::new();
        let key = RequestKey::of(&parts("GET", "http://r/v2/a/manifests/v1", &[])).unwrap();
        let read_set = format!("default tag={} absent=-", hex(b"one"));
        let mut headers = http::HeaderMap::new();
        headers.insert(crate::http::request_log::REQUEST_ID, "first".parse().unwrap());
        assert!(cache.keep(key.clone(), &stores, &read_set, http::StatusCode::OK, headers, Bytes::from("m1")));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();

        let (kept, outcome) = rt.block_on(cache.answer(&key)).unwrap();
        assert_eq!((outcome, &kept.body[..]), (Outcome::Hit, &b"m1"[..]));
        assert!(!kept.headers.contains_key(crate::http::request_log::REQUEST_ID), "ids are per answer");

        store.set("absent", b"now here").unwrap();
        assert_eq!(rt.block_on(cache.answer(&key)).unwrap().1, Outcome::Changed, "a key that appeared");
        assert!(rt.block_on(cache.answer(&key)).is_none(), "dropped once changed");

        assert!(cache.keep(key.clone(), &stores, &read_set, http::StatusCode::OK, Default::default(), Bytes::new()));
        store.delete("absent").unwrap();
        assert_eq!(rt.block_on(cache.answer(&key)).unwrap().1, Outcome::Hit, "back as it was read");
        store.set("tag", b"two").unwrap();
        assert_eq!(rt.block_on(cache.answer(&key)).unwrap().1, Outcome::Changed, "a value that changed");
    }

    #[test]
    fn an_answer_bounded_in_time_is_not_given_from_its_bound_on() {
        let (_dir, stores) = stores();
        let cache = AnswerCache::new();
        let key = RequestKey::of(&parts("GET", "http://r/v2/", &[("authorization", "Bearer t")])).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let keep = |until: u64| {
            let read_set = format!("default @{until}");
            cache.keep(key.clone(), &stores, &read_set, http::StatusCode::OK, Default::default(), Bytes::new())
        };
        assert!(keep(unix_now() + 3600));
        assert_eq!(rt.block_on(cache.answer(&key)).unwrap().1, Outcome::Hit);
        assert!(keep(unix_now()));
        assert_eq!(rt.block_on(cache.answer(&key)).unwrap().1, Outcome::Changed, "expired");
        assert!(rt.block_on(cache.answer(&key)).is_none(), "and dropped");
        assert!(!cache.keep(
            key.clone(),
            &stores,
            "default @soon",
            http::StatusCode::OK,
            Default::default(),
            Bytes::new()
        ));
    }

    #[test]
    fn what_cannot_be_checked_is_not_kept() {
        let (_dir, stores) = stores();
        let cache = AnswerCache::new();
        let key = RequestKey::of(&parts("GET", "http://r/v2/", &[])).unwrap();
        let keep = |read_set: &str, body: Bytes| {
            cache.keep(key.clone(), &stores, read_set, http::StatusCode::OK, Default::default(), body)
        };
        assert!(!keep("other k=-", Bytes::new()), "a store the component may not open");
        assert!(!keep("default k=abc", Bytes::new()), "not a SHA-256");
        assert!(!keep("default k", Bytes::new()), "no value");
        assert!(!keep("default", Bytes::from(vec![0; MAX_KEPT_BODY as usize + 1])), "too large");
        assert!(keep("default", Bytes::new()), "an answer that read nothing holds forever");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_oldest_answers_go_when_the_budget_is_spent() {
        let (_dir, stores) = stores();
        let cache = AnswerCache::with_budget(64 * 1024);
        let body = Bytes::from(vec![b'm'; 4096]);
        for i in 0..100 {
            let key = RequestKey::of(&parts("GET", &format!("http://r/v2/a/manifests/t{i}"), &[])).unwrap();
            assert!(cache.keep(key, &stores, "default", http::StatusCode::OK, Default::default(), body.clone()));
            // One key kept again and again: its stale places in the queue are dropped.
            let hot = RequestKey::of(&parts("GET", "http://r/v2/a/manifests/hot", &[])).unwrap();
            assert!(cache.keep(hot, &stores, "default", http::StatusCode::OK, Default::default(), Bytes::new()));
        }
        let entries = cache.lock();
        assert!(entries.bytes <= 64 * 1024 && entries.map.len() < 20, "{} bytes, {}", entries.bytes, entries.map.len());
        assert!(entries.order.len() <= 2 * entries.map.len() + 64);
        let newest = RequestKey::of(&parts("GET", "http://r/v2/a/manifests/t99", &[])).unwrap();
        assert!(entries.map.contains_key(&newest), "the newest stays");
    }
}
