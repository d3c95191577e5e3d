//! Torture tests of the storage invariants (issue 11, "Tests that can fail"), against the real
//! component through the runner:
//!
//! - a model-based concurrency torture test: a dozen concurrent clients doing random pushes
//!   (single POST, chunked, docker's streamed PATCH, containerd's single PUT), duplicate and
//!   concurrent finishes, cancels (some racing their own finish), racing chunks, tag moves and
//!   deletes, manifest deletes, mounts and referrer pushes on a small shared key space, plus
//!   targeted races (a tag moved while its old manifest is deleted, a referrer pushed while it is
//!   deleted, a tag pushed while it is deleted); the model records only what was acknowledged,
//!   with when it ran, and the invariants are checked once everybody is done (an operation
//!   "follows" another only when it started after the other ended);
//! - a crash test: the runner killed with SIGKILL at random points during pushes, round after
//!   round on the same data: nothing acknowledged goes missing, every session a client held
//!   resumes (unknown only if the kill cut its finish), the reclaim phase finds leftovers and
//!   leaves nothing behind; and the same with manifest and tag deletes in the workload and a
//!   garbage collector stepping all along, killed with the rest (what a live manifest references
//!   stays whole, nothing deleted comes back, a last pass after the kills keeps it so).
//!
//! Both print their seed first (`torture seed: N`); `BERTH_TORTURE_SEED=N` replays the same
//! choices (the interleaving of concurrent requests is the machine's). `BERTH_TORTURE_OPS=N`
//! runs N operations per torture client instead of 40 (a longer soak).

mod common;

use common::rng::Rng;
use common::*;
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---- seeds, randomness, answers -------------------------------------------------------------

/// `BERTH_TORTURE_SEED`, or one from the clock; printed first so that any run can be replayed.
fn torture_seed() -> u64 {
    common::rng::seed("torture", "BERTH_TORTURE_SEED")
}

/// What these tests draw beyond the generator's basics (tests/common/rng.rs).
impl Rng {
    /// `parts` lengths of at least `min` each summing to `len` (fewer parts when `len` is short).
    fn split(&mut self, len: usize, parts: usize, min: usize) -> Vec<usize> {
        let parts = parts.clamp(1, (len / min.max(1)).max(1));
        let mut cuts = BTreeSet::new();
        let mut tries = 0;
        while cuts.len() < parts - 1 && tries < 1000 {
            tries += 1;
            let cut = self.between(min, len - min);
            if cuts.iter().all(|&c: &usize| c.abs_diff(cut) >= min) {
                cuts.insert(cut);
            }
        }
        let mut sizes = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([len]) {
            sizes.push(cut - at);
            at = cut;
        }
        sizes
    }
}

/// A response, read whole.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// `status` and, unless `code` is empty, the OCI error code.
    fn is(&self, status: u16, code: &str) -> bool {
        self.status == status && (code.is_empty() || self.code() == code)
    }

    fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(400)]).into_owned();
        format!("{} {}", self.status, body)
    }

    fn short(&self) -> String {
        match self.code() {
            code if code.is_empty() => self.status.to_string(),
            code => format!("{} {code}", self.status),
        }
    }
}

async fn answer(request: HttpRequest) -> Result<Answer, String> {
    let response = request.send().await.map_err(|e| format!("transport error: {e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| format!("reading the body: {e:?}"))?.to_vec();
    Ok(Answer { status, headers, body })
}

/// `location` with `digest=` added to its query.
fn with_digest(location: &str, digest: &str) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={digest}")
}

/// The byte count an upload `Range: 0-<last>` header stands for (`0-0` is taken as empty:
/// the tests never write a first chunk of one byte).
fn range_len(range: &str) -> Option<usize> {
    let last: usize = range.strip_prefix("0-")?.parse().ok()?;
    Some(if last == 0 { 0 } else { last + 1 })
}

fn sha(bytes: &[u8]) -> String {
    sha256(bytes)
}

// ---- the torture test: fixture ----------------------------------------------------------------

const REPOS: [&str; 2] = ["torture/app", "torture/app/nested"];
const TAGS: [[&str; 3]; 2] = [["a-latest", "a-v1", "a-v2"], ["n-latest", "n-v1", "n-v2"]];
/// Tag `t` of a repository: the 3 shared tags, then one private tag per client (`c<id>`).
fn tag_name(repo: usize, t: usize) -> String {
    if t < 3 { TAGS[repo][t].to_owned() } else { format!("c{}", t - 3) }
}

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

struct PoolBlob {
    bytes: Vec<u8>,
    digest: String,
}

/// A manifest a client may push: an image (config + layers from the pool) or a referrer of an
/// image (empty config, `subject`, `artifactType`).
struct Candidate {
    bytes: Vec<u8>,
    digest: String,
    blobs: Vec<usize>,
    subject: Option<usize>,
}

struct Fixture {
    pool: Vec<PoolBlob>,
    manifests: Vec<Candidate>,
    images: usize,
}

/// Pool index of the empty JSON `{}` (the referrers' config).
const EMPTY: usize = 0;
/// The layers: blobs that are not configs (racing chunks need two distinct contents).
const LAYERS: [usize; 4] = [3, 4, 5, 6];

impl Fixture {
    fn new() -> Fixture {
        let pool: Vec<Vec<u8>> = vec![
            b"{}".to_vec(),
            br#"{"architecture":"amd64","os":"linux","torture":1}"#.to_vec(),
            br#"{"architecture":"arm64","os":"linux","torture":2}"#.to_vec(),
            PseudoRandom::bytes(3, 5),
            PseudoRandom::bytes(4, 1500),
            PseudoRandom::bytes(5, 70_000),
            // Over the key-value provider's 256 KiB chunk.
            PseudoRandom::bytes(6, 300_000),
        ];
        let pool: Vec<PoolBlob> = pool.into_iter().map(|bytes| PoolBlob { digest: sha(&bytes), bytes }).collect();
        let descriptor =
            |media_type: &str, i: usize| (media_type.to_owned(), pool[i].digest.clone(), pool[i].bytes.len());
        let build = |config: (String, String, usize), layers: Vec<(String, String, usize)>, extra: &str| {
            let config = [(config.0.as_str(), config.1.as_str(), config.2)];
            let layers: Vec<(&str, &str, usize)> =
                layers.iter().map(|(m, d, s)| (m.as_str(), d.as_str(), *s)).collect();
            image_manifest(&config, &layers, extra)
        };
        let mut manifests = Vec::new();
        let images: [(usize, &[usize]); 6] = [(1, &[3]), (1, &[4, 5]), (2, &[6]), (2, &[3, 6]), (1, &[6]), (2, &[4])];
        for (config, layers) in images {
            let bytes =
                build(descriptor(OCI_CONFIG, config), layers.iter().map(|&l| descriptor(OCI_LAYER, l)).collect(), "");
            let mut blobs = vec![config];
            blobs.extend_from_slice(layers);
            manifests.push(Candidate { digest: sha(&bytes), bytes, blobs, subject: None });
        }
        let image_count = manifests.len();
        for subject in 0..image_count {
            for (artifact_type, layers) in
                [("application/vnd.torture.signature", vec![]), ("application/vnd.torture.sbom", vec![3])]
            {
                let (digest, size) = (manifests[subject].digest.clone(), manifests[subject].bytes.len());
                let extra = format!(
                    r#","artifactType":"{artifact_type}","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{size}}}"#
                );
                let bytes = build(
                    descriptor(OCI_EMPTY, EMPTY),
                    layers.iter().map(|&l| descriptor(OCI_LAYER, l)).collect(),
                    &extra,
                );
                let mut blobs = vec![EMPTY];
                blobs.extend(layers);
                manifests.push(Candidate { digest: sha(&bytes), bytes, blobs, subject: Some(subject) });
            }
        }
        Fixture { pool, manifests, images: image_count }
    }
}

// ---- the torture test: the model ---------------------------------------------------------------

/// When a request (or the part of an operation that decides its outcome) ran, from the test's start.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: Duration,
    end: Duration,
}

/// A blob push or mount into a repository.
struct BlobPush {
    repo: usize,
    blob: usize,
    span: Span,
    acked: bool,
}

struct ManifestPush {
    repo: usize,
    manifest: usize,
    tag: Option<usize>,
    span: Span,
    acked: bool,
    /// Refused with 400 MANIFEST_BLOB_UNKNOWN: when each referenced blob was pushed by this client.
    blob_unknown: Option<Vec<(usize, Option<Duration>)>>,
    who: String,
}

/// A delete (of a blob, a manifest by digest, or a tag), whatever it answered.
struct Delete {
    repo: usize,
    target: usize,
    span: Span,
    who: String,
}

/// A read of a blob just after this client's acknowledged push of it.
struct Read {
    repo: usize,
    blob: usize,
    span: Span,
    found: bool,
    who: String,
}

/// A private tag moved to `expected` while the manifest it pointed at was deleted, then read.
struct Moved {
    repo: usize,
    tag: usize,
    expected: usize,
    resolved: Option<String>,
    span: Span,
    who: String,
}

/// A session a client left open.
struct Held {
    repo: usize,
    location: String,
    offset: usize,
    blob: usize,
    who: String,
}

#[derive(Default)]
struct Model {
    failures: Vec<String>,
    blob_pushes: Vec<BlobPush>,
    blob_deletes: Vec<Delete>,
    manifest_pushes: Vec<ManifestPush>,
    manifest_deletes: Vec<Delete>,
    tag_deletes: Vec<Delete>,
    reads: Vec<Read>,
    moved: Vec<Moved>,
    held: Vec<Held>,
    /// Each client's operations and answers, printed when something failed.
    logs: BTreeMap<usize, Vec<String>>,
    ops: usize,
    /// How often each kind of operation ran.
    kinds: BTreeMap<String, usize>,
}

/// The last pushes and deletes of manifest `manifest` in `repo`, for a failure message.
fn history(model: &Model, repo: usize, manifest: usize) -> String {
    let mut events: Vec<(Duration, String)> = model
        .manifest_pushes
        .iter()
        .filter(|p| p.repo == repo && p.manifest == manifest)
        .map(|p| (p.span.start, format!("push by {} [{:?}..{:?}] acked: {}", p.who, p.span.start, p.span.end, p.acked)))
        .chain(
            model
                .manifest_deletes
                .iter()
                .filter(|d| d.repo == repo && d.target == manifest)
                .map(|d| (d.span.start, format!("delete by {} [{:?}..{:?}]", d.who, d.span.start, d.span.end))),
        )
        .collect();
    events.sort_by_key(|(at, _)| *at);
    let last: Vec<String> = events.into_iter().rev().take(4).rev().map(|(_, e)| e).collect();
    last.join("; ")
}

/// Whether something pushed by one of `pushes` must still be there: one acknowledged push
/// started after every delete had ended (a delete overlapping all pushes may have won).
fn must_remain<'a>(pushes: impl Iterator<Item = (&'a Span, bool)>, deletes: impl Iterator<Item = &'a Span>) -> bool {
    let last_delete = deletes.map(|d| d.end).max();
    pushes.filter(|(_, acked)| *acked).any(|(p, _)| last_delete.is_none_or(|end| p.start > end))
}

#[derive(Debug, Clone, Copy)]
enum Style {
    Monolithic,
    Chunked,
    Docker,
    Containerd,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Push(Style),
    DuplicateFinish,
    Cancel,
    CancelRacingFinish,
    Abandon,
    RacingChunks,
    PushManifestByTag,
    PushManifestByDigest,
    PushReferrer,
    DeleteTag,
    DeleteManifest,
    Mount,
    DeleteBlob,
    MoveTagRacingDelete,
    ReferrerRacingDelete,
    TagPushRacingTagDelete,
}

const OPS: [(Op, usize); 19] = [
    (Op::Push(Style::Monolithic), 10),
    (Op::Push(Style::Chunked), 8),
    (Op::Push(Style::Docker), 6),
    (Op::Push(Style::Containerd), 6),
    (Op::DuplicateFinish, 7),
    (Op::Cancel, 3),
    (Op::CancelRacingFinish, 6),
    (Op::Abandon, 2),
    (Op::RacingChunks, 5),
    (Op::PushManifestByTag, 14),
    (Op::PushManifestByDigest, 5),
    (Op::PushReferrer, 7),
    (Op::DeleteTag, 4),
    (Op::DeleteManifest, 4),
    (Op::Mount, 6),
    (Op::DeleteBlob, 2),
    (Op::MoveTagRacingDelete, 4),
    (Op::ReferrerRacingDelete, 3),
    (Op::TagPushRacingTagDelete, 3),
];

struct Client {
    id: usize,
    op: usize,
    rng: Rng,
    reg: Registry,
    fx: Arc<Fixture>,
    model: Arc<Mutex<Model>>,
    t0: Instant,
    log: Vec<String>,
    /// Blobs this client pushed with an acknowledgement, by (repo, pool index): when.
    pushed: HashMap<(usize, usize), Duration>,
}

impl Client {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn who(&self) -> String {
        format!("client {} op {}", self.id, self.op)
    }

    fn fail(&mut self, what: String) {
        self.log.push(format!("    FAILED: {what}"));
        let line = format!("{}: {what}", self.who());
        self.model.lock().unwrap().failures.push(line);
    }

    /// Note an answer in the log; any 5xx or transport error is a failure.
    fn check(&mut self, what: &str, result: Result<Answer, String>) -> Option<Answer> {
        match result {
            Ok(a) => {
                self.log.push(format!("    {what} -> {}", a.short()));
                if a.status >= 500 {
                    self.fail(format!("{what}: {}", a.describe()));
                }
                Some(a)
            }
            Err(e) => {
                self.fail(format!("{what}: {e}"));
                None
            }
        }
    }

    async fn send(&mut self, what: &str, request: HttpRequest) -> Option<Answer> {
        let result = answer(request).await;
        self.check(what, result)
    }

    /// `a` must be one of `ok` (status, error code or "" for any): else a failure.
    fn expect(&mut self, what: &str, a: &Answer, ok: &[(u16, &str)]) -> bool {
        let good = ok.iter().any(|(status, code)| a.is(*status, code));
        if !good && a.status < 500 {
            self.fail(format!("{what}: expected one of {ok:?}, got {}", a.describe()));
        }
        good
    }

    fn url(&self, path: &str) -> String {
        self.reg.at(path)
    }

    fn blob(&self, i: usize) -> (Vec<u8>, String) {
        (self.fx.pool[i].bytes.clone(), self.fx.pool[i].digest.clone())
    }

    fn record_push(&mut self, repo: usize, blob: usize, span: Span, acked: bool) {
        if acked {
            self.pushed.insert((repo, blob), span.start);
        }
        self.model.lock().unwrap().blob_pushes.push(BlobPush { repo, blob, span, acked });
    }

    /// Sometimes read an acknowledged blob back at once (judged at the end against deletes).
    async fn maybe_read_back(&mut self, repo: usize, blob: usize) {
        if !self.rng.chance(30) {
            return;
        }
        let (bytes, digest) = self.blob(blob);
        let start = self.now();
        let request = self.reg.http.get(self.url(&format!("/v2/{}/blobs/{digest}", REPOS[repo])));
        let Some(a) = self.send("GET blob (read back)", request).await else { return };
        let span = Span { start, end: self.now() };
        if !self.expect("GET blob (read back)", &a, &[(200, ""), (404, "BLOB_UNKNOWN")]) {
            return;
        }
        if a.status == 200 && a.body != bytes {
            self.fail(format!("read back {digest} from {}: {} bytes differ", REPOS[repo], a.body.len()));
        }
        let who = self.who();
        self.model.lock().unwrap().reads.push(Read { repo, blob, span, found: a.status == 200, who });
    }

    async fn open_session(&mut self, repo: usize) -> Option<String> {
        let request = self.reg.http.post(self.url(&format!("/v2/{}/blobs/uploads/", REPOS[repo])));
        let a = self.send("POST open", request).await?;
        if !self.expect("POST open", &a, &[(202, "")]) {
            return None;
        }
        let location = a.header("location");
        if location.is_none() {
            self.fail("POST open: 202 without Location".into());
        }
        location
    }

    fn patch(&self, location: &str, start: usize, bytes: &[u8]) -> HttpRequest {
        self.reg
            .http
            .patch(self.url(location))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{}", start + bytes.len() - 1))
            .body(bytes.to_vec())
    }

    fn finish(&self, location: &str, digest: &str, last: &[u8]) -> HttpRequest {
        self.reg.http.put(self.url(&with_digest(location, digest))).body(last.to_vec())
    }

    /// PATCH `pieces` of `bytes` in order from `location`; the next location and offset.
    async fn patch_pieces(&mut self, mut location: String, bytes: &[u8], pieces: &[usize]) -> Option<(String, usize)> {
        let mut offset = 0;
        for &len in pieces {
            let request = self.patch(&location, offset, &bytes[offset..offset + len]);
            let what = format!("PATCH {offset}+{len}");
            let a = self.send(&what, request).await?;
            if !self.expect(&what, &a, &[(202, "")]) {
                return None;
            }
            location = a.header("location")?;
            offset += len;
        }
        Some((location, offset))
    }

    /// Check a 201 blob answer's digest header.
    fn check_created(&mut self, what: &str, a: &Answer, digest: &str) {
        if a.status == 201 && a.header("docker-content-digest").as_deref() != Some(digest) {
            self.fail(format!(
                "{what}: 201 with Docker-Content-Digest {:?}, not {digest}",
                a.header("docker-content-digest")
            ));
        }
    }

    async fn push_blob(&mut self, repo: usize, blob: usize, style: Style) -> bool {
        let (bytes, digest) = self.blob(blob);
        let name = REPOS[repo];
        self.log.push(format!("  push {style:?} blob {blob} to {name}"));
        let (span, answer) = match style {
            Style::Monolithic => {
                let start = self.now();
                let request =
                    self.reg.http.post(self.url(&format!("/v2/{name}/blobs/uploads/?digest={digest}"))).body(bytes);
                let a = self.send("POST ?digest=", request).await;
                (Span { start, end: self.now() }, a)
            }
            Style::Chunked => {
                let Some(location) = self.open_session(repo).await else { return false };
                let patches = self.rng.between(2, 3);
                let last_in_put = self.rng.chance(50);
                let mut pieces = self.rng.split(bytes.len(), patches + last_in_put as usize, 1);
                let last = if last_in_put && pieces.len() > 1 { pieces.pop().unwrap() } else { 0 };
                let Some((location, offset)) = self.patch_pieces(location, &bytes, &pieces).await else { return false };
                let start = self.now();
                let request = self.finish(&location, &digest, &bytes[offset..offset + last]);
                let a = self.send("PUT finish", request).await;
                (Span { start, end: self.now() }, a)
            }
            Style::Docker => {
                let Some(location) = self.open_session(repo).await else { return false };
                // One PATCH of the whole blob, streamed without Content-Length or Content-Range.
                let pieces = self.rng.split(bytes.len(), 3, 1);
                let mut chunks = Vec::new();
                let mut at = 0;
                for len in pieces {
                    chunks.push(Ok::<_, std::io::Error>(bytes[at..at + len].to_vec()));
                    at += len;
                }
                let request = self
                    .reg
                    .http
                    .patch(self.url(&location))
                    .header("content-type", "application/octet-stream")
                    .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
                let Some(a) = self.send("PATCH streamed", request).await else { return false };
                if !self.expect("PATCH streamed", &a, &[(202, "")]) {
                    return false;
                }
                let Some(location) = a.header("location") else { return false };
                if a.header("range").as_deref() != Some(format!("0-{}", bytes.len() - 1).as_str()) {
                    self.fail(format!("PATCH streamed: Range {:?} after {} bytes", a.header("range"), bytes.len()));
                }
                let start = self.now();
                let request = self.finish(&location, &digest, &[]);
                let a = self.send("PUT finish", request).await;
                (Span { start, end: self.now() }, a)
            }
            Style::Containerd => {
                let Some(location) = self.open_session(repo).await else { return false };
                let start = self.now();
                let request = self.finish(&location, &digest, &bytes);
                let a = self.send("PUT whole", request).await;
                (Span { start, end: self.now() }, a)
            }
        };
        let Some(a) = answer else {
            self.record_push(repo, blob, span, false);
            return false;
        };
        let acked = self.expect("blob push", &a, &[(201, "")]);
        self.check_created("blob push", &a, &digest);
        self.record_push(repo, blob, span, acked);
        if acked {
            self.maybe_read_back(repo, blob).await;
        }
        acked
    }

    /// 2-4 identical finishing PUTs of one session at once: exactly one stores the blob.
    async fn duplicate_finish(&mut self, repo: usize, blob: usize) {
        let (bytes, digest) = self.blob(blob);
        self.log.push(format!("  duplicate finishes of blob {blob} in {}", REPOS[repo]));
        let Some(location) = self.open_session(repo).await else { return };
        let (location, offset) = if bytes.len() >= 2 && self.rng.chance(60) {
            let first = if self.rng.chance(30) { bytes.len() } else { self.rng.between(1, bytes.len() - 1) };
            match self.patch_pieces(location, &bytes, &[first]).await {
                Some(next) => next,
                None => return,
            }
        } else {
            (location, 0)
        };
        let copies = self.rng.between(2, 4);
        let start = self.now();
        let requests: Vec<_> = (0..copies).map(|_| answer(self.finish(&location, &digest, &bytes[offset..]))).collect();
        let results = join_all(requests).await;
        let span = Span { start, end: self.now() };
        let mut created = 0;
        for (i, result) in results.into_iter().enumerate() {
            let what = format!("PUT finish copy {i}");
            let Some(a) = self.check(&what, result) else { continue };
            if self.expect(&what, &a, &[(201, ""), (404, "BLOB_UPLOAD_UNKNOWN"), (416, "RANGE_INVALID")])
                && a.status == 201
            {
                created += 1;
                self.check_created(&what, &a, &digest);
            }
        }
        if created != 1 {
            self.fail(format!("{copies} concurrent finishes of one session: {created} answered 201, not exactly one"));
        }
        self.record_push(repo, blob, span, created >= 1);
        if created >= 1 {
            self.maybe_read_back(repo, blob).await;
        }
    }

    /// Cancel a session (alone, or racing its own finish): exactly one of the two wins.
    async fn cancel(&mut self, repo: usize, blob: usize, race_finish: bool) {
        let (bytes, digest) = self.blob(blob);
        self.log.push(format!("  cancel (racing a finish: {race_finish}) blob {blob} in {}", REPOS[repo]));
        let Some(location) = self.open_session(repo).await else { return };
        let (location, offset) = if bytes.len() >= 2 && self.rng.chance(60) {
            let first = self.rng.between(1, bytes.len() - 1);
            match self.patch_pieces(location, &bytes, &[first]).await {
                Some(next) => next,
                None => return,
            }
        } else {
            (location, 0)
        };
        let delete = answer(self.reg.http.delete(self.url(&location)));
        if !race_finish {
            let Some(a) = self.check("DELETE session", delete.await) else { return };
            self.expect("DELETE session", &a, &[(204, "")]);
            let request = self.reg.http.get(self.url(&location));
            if let Some(a) = self.send("GET cancelled session", request).await {
                self.expect("GET cancelled session", &a, &[(404, "BLOB_UPLOAD_UNKNOWN")]);
            }
            return;
        }
        let start = self.now();
        let finish = answer(self.finish(&location, &digest, &bytes[offset..]));
        let (deleted, finished) = futures::join!(delete, finish);
        let span = Span { start, end: self.now() };
        let deleted = self.check("DELETE session (racing)", deleted);
        let finished = self.check("PUT finish (racing)", finished);
        let (Some(deleted), Some(finished)) = (deleted, finished) else {
            self.record_push(repo, blob, span, false);
            return;
        };
        let cancel_won = self.expect("DELETE session (racing)", &deleted, &[(204, ""), (404, "BLOB_UPLOAD_UNKNOWN")])
            && deleted.status == 204;
        let finish_won = self.expect("PUT finish (racing)", &finished, &[(201, ""), (404, "BLOB_UPLOAD_UNKNOWN")])
            && finished.status == 201;
        self.check_created("PUT finish (racing)", &finished, &digest);
        if cancel_won == finish_won {
            self.fail(format!(
                "a cancel racing a finish: DELETE {} and PUT {}: exactly one must win",
                deleted.short(),
                finished.short()
            ));
        }
        self.record_push(repo, blob, span, finish_won);
        if finish_won {
            self.maybe_read_back(repo, blob).await;
        }
    }

    /// Open a session, maybe send a chunk, and leave it: checked at the end.
    async fn abandon(&mut self, repo: usize, blob: usize) {
        let bytes = self.fx.pool[blob].bytes.clone();
        self.log.push(format!("  abandon a session of blob {blob} in {}", REPOS[repo]));
        let Some(location) = self.open_session(repo).await else { return };
        let (location, offset) = if bytes.len() >= 4 && self.rng.chance(60) {
            let first = self.rng.between(2, bytes.len() - 2);
            match self.patch_pieces(location, &bytes, &[first]).await {
                Some(next) => next,
                None => return,
            }
        } else {
            (location, 0)
        };
        let who = self.who();
        self.model.lock().unwrap().held.push(Held { repo, location, offset, blob, who });
    }

    /// Two PATCHes of different bytes from one Location at once: exactly one is taken, and the
    /// blob finished from the winner's Location is the winner's.
    async fn racing_chunks(&mut self, repo: usize) {
        let a_blob = LAYERS[self.rng.below(LAYERS.len())];
        let mut b_blob = LAYERS[self.rng.below(LAYERS.len())];
        if b_blob == a_blob {
            b_blob = LAYERS[(LAYERS.iter().position(|&l| l == a_blob).unwrap() + 1) % LAYERS.len()];
        }
        let (a_bytes, b_bytes) = (self.fx.pool[a_blob].bytes.clone(), self.fx.pool[b_blob].bytes.clone());
        self.log.push(format!("  racing chunks of blobs {a_blob} and {b_blob} in {}", REPOS[repo]));
        let shortest = a_bytes.len().min(b_bytes.len());
        let len = self.rng.between(2, shortest - 1);
        let Some(location) = self.open_session(repo).await else { return };
        let (ra, rb) = futures::join!(
            answer(self.patch(&location, 0, &a_bytes[..len])),
            answer(self.patch(&location, 0, &b_bytes[..len]))
        );
        let ra = self.check("PATCH racer a", ra);
        let rb = self.check("PATCH racer b", rb);
        let (Some(ra), Some(rb)) = (ra, rb) else { return };
        let ok: &[(u16, &str)] = &[(202, ""), (416, "RANGE_INVALID")];
        if !self.expect("PATCH racer a", &ra, ok) || !self.expect("PATCH racer b", &rb, ok) {
            return;
        }
        let (winner, answer) = match (ra.status, rb.status) {
            (202, 416) => (a_blob, ra),
            (416, 202) => (b_blob, rb),
            _ => {
                self.fail(format!(
                    "two PATCHes from one Location: {} and {}, not exactly one 202",
                    ra.short(),
                    rb.short()
                ));
                return;
            }
        };
        let Some(location) = answer.header("location") else { return };
        // The session holds exactly the winner's chunk.
        let request = self.reg.http.get(self.url(&location));
        if let Some(status) = self.send("GET session after the race", request).await
            && self.expect("GET session after the race", &status, &[(204, "")])
            && status.header("range").and_then(|r| range_len(&r)) != Some(len)
        {
            self.fail(format!("after a race of {len}-byte chunks the session's Range is {:?}", status.header("range")));
        }
        let (bytes, digest) = self.blob(winner);
        let start = self.now();
        let request = self.finish(&location, &digest, &bytes[len..]);
        let a = self.send("PUT finish the winner", request).await;
        let span = Span { start, end: self.now() };
        let acked = a.as_ref().is_some_and(|a| a.is(201, ""));
        if let Some(a) = a.as_ref().filter(|a| !a.is(201, "") && a.status < 500) {
            // A 400 DIGEST_INVALID here: the hash state does not describe the winner's bytes.
            self.fail(format!("finishing the winner (blob {winner}) of two racing chunks: {}", a.describe()));
        }
        self.record_push(repo, winner, span, acked);
        if acked {
            self.maybe_read_back(repo, winner).await;
        }
    }

    /// Push a manifest (by tag, by digest); its blobs first when this client has not pushed them.
    /// Push the manifest's blobs that this client has not pushed to `repo`; when each was pushed.
    async fn ensure_blobs(&mut self, repo: usize, manifest: usize) -> Vec<(usize, Option<Duration>)> {
        let blobs = self.fx.manifests[manifest].blobs.clone();
        for &blob in &blobs {
            if !self.pushed.contains_key(&(repo, blob)) {
                let style = if self.rng.chance(70) { Style::Monolithic } else { Style::Chunked };
                self.push_blob(repo, blob, style).await;
            }
        }
        blobs.iter().map(|&b| (b, self.pushed.get(&(repo, b)).copied())).collect()
    }

    fn manifest_put(&mut self, repo: usize, manifest: usize, tag: Option<usize>) -> HttpRequest {
        let candidate = &self.fx.manifests[manifest];
        let reference = tag.map(|t| tag_name(repo, t)).unwrap_or_else(|| candidate.digest.clone());
        let (name, digest) = (REPOS[repo], candidate.digest.clone());
        let request = self
            .reg
            .http
            .put(self.url(&format!("/v2/{name}/manifests/{reference}")))
            .header("content-type", OCI_MANIFEST)
            .body(candidate.bytes.clone());
        self.log.push(format!("  push manifest {manifest} ({digest}) to {name}:{reference}"));
        request
    }

    /// Judge and record a manifest push's answer; whether it was acknowledged.
    fn manifest_answer(
        &mut self,
        repo: usize,
        manifest: usize,
        tag: Option<usize>,
        span: Span,
        result: Result<Answer, String>,
        pushed_at: Vec<(usize, Option<Duration>)>,
    ) -> bool {
        let (digest, subject) = (self.fx.manifests[manifest].digest.clone(), self.fx.manifests[manifest].subject);
        let mut push = ManifestPush { repo, manifest, tag, span, acked: false, blob_unknown: None, who: self.who() };
        if let Some(a) = self.check("PUT manifest", result)
            && self.expect("PUT manifest", &a, &[(201, ""), (400, "MANIFEST_BLOB_UNKNOWN")])
        {
            push.acked = a.status == 201;
            if a.status == 400 {
                push.blob_unknown = Some(pushed_at);
            } else {
                if a.header("docker-content-digest").as_deref() != Some(digest.as_str()) {
                    self.fail(format!("PUT manifest: Docker-Content-Digest {:?}", a.header("docker-content-digest")));
                }
                let expected_subject = subject.map(|s| self.fx.manifests[s].digest.clone());
                if a.header("oci-subject") != expected_subject {
                    self.fail(format!(
                        "PUT manifest: OCI-Subject {:?}, expected {expected_subject:?}",
                        a.header("oci-subject")
                    ));
                }
            }
        }
        let acked = push.acked;
        self.model.lock().unwrap().manifest_pushes.push(push);
        acked
    }

    /// Push a manifest (by tag, by digest); its blobs first when this client has not pushed them.
    async fn push_manifest(&mut self, repo: usize, manifest: usize, tag: Option<usize>) -> bool {
        let pushed_at = self.ensure_blobs(repo, manifest).await;
        let request = self.manifest_put(repo, manifest, tag);
        let start = self.now();
        let result = answer(request).await;
        let span = Span { start, end: self.now() };
        self.manifest_answer(repo, manifest, tag, span, result, pushed_at)
    }

    fn delete_request(&mut self, repo: usize, reference: &str) -> HttpRequest {
        self.log.push(format!("  delete {}:{reference}", REPOS[repo]));
        self.reg.http.delete(self.url(&format!("/v2/{}/manifests/{reference}", REPOS[repo])))
    }

    /// Judge and record a manifest delete (`manifest`) or a tag delete (`tag`).
    fn delete_answer(&mut self, repo: usize, what: Result<usize, usize>, span: Span, result: Result<Answer, String>) {
        if let Some(a) = self.check("DELETE", result) {
            self.expect("DELETE", &a, &[(202, ""), (404, "MANIFEST_UNKNOWN")]);
        }
        let who = self.who();
        let mut model = self.model.lock().unwrap();
        match what {
            Ok(manifest) => model.manifest_deletes.push(Delete { repo, target: manifest, span, who }),
            Err(tag) => model.tag_deletes.push(Delete { repo, target: tag, span, who }),
        }
    }

    /// A tag of this client's own moved from X to Y while X is deleted: whichever comes first,
    /// the tag must end at Y (a delete of X removes only tags pointing at X).
    async fn move_tag_racing_delete(&mut self, repo: usize) {
        let tag = 3 + self.id;
        let x = self.rng.below(self.fx.images);
        let y = (x + 1 + self.rng.below(self.fx.images - 1)) % self.fx.images;
        if !self.push_manifest(repo, x, Some(tag)).await {
            return;
        }
        let pushed_at = self.ensure_blobs(repo, y).await;
        let put = self.manifest_put(repo, y, Some(tag));
        let x_digest = self.fx.manifests[x].digest.clone();
        let delete = self.delete_request(repo, &x_digest);
        let start = self.now();
        let (pushed, deleted) = futures::join!(answer(put), answer(delete));
        let span = Span { start, end: self.now() };
        let acked = self.manifest_answer(repo, y, Some(tag), span, pushed, pushed_at);
        self.delete_answer(repo, Ok(x), span, deleted);
        if !acked {
            return;
        }
        let request = self
            .reg
            .http
            .get(self.url(&format!("/v2/{}/manifests/{}", REPOS[repo], tag_name(repo, tag))))
            .header("accept", MANIFEST_ACCEPT);
        let Some(a) = self.send("GET the moved tag", request).await else { return };
        let resolved = if a.status == 200 { a.header("docker-content-digest") } else { None };
        let span = Span { start, end: self.now() };
        let who = self.who();
        self.model.lock().unwrap().moved.push(Moved { repo, tag, expected: y, resolved, span, who });
    }

    /// A referrer pushed again while it is deleted: either outcome, but its referrers entry
    /// must agree with it (checked at the end).
    async fn referrer_racing_delete(&mut self, repo: usize) {
        let referrer = self.fx.images + self.rng.below(self.fx.manifests.len() - self.fx.images);
        if !self.push_manifest(repo, referrer, None).await {
            return;
        }
        let pushed_at = self.ensure_blobs(repo, referrer).await;
        let put = self.manifest_put(repo, referrer, None);
        let digest = self.fx.manifests[referrer].digest.clone();
        let delete = self.delete_request(repo, &digest);
        let start = self.now();
        let (pushed, deleted) = futures::join!(answer(put), answer(delete));
        let span = Span { start, end: self.now() };
        self.manifest_answer(repo, referrer, None, span, pushed, pushed_at);
        self.delete_answer(repo, Ok(referrer), span, deleted);
    }

    /// A shared tag pushed while it is deleted: either outcome, but listed iff it resolves.
    async fn tag_push_racing_tag_delete(&mut self, repo: usize) {
        let (tag, manifest) = (self.rng.below(3), self.rng.below(self.fx.images));
        let pushed_at = self.ensure_blobs(repo, manifest).await;
        let put = self.manifest_put(repo, manifest, Some(tag));
        let delete = self.delete_request(repo, &tag_name(repo, tag));
        let start = self.now();
        let (pushed, deleted) = futures::join!(answer(put), answer(delete));
        let span = Span { start, end: self.now() };
        self.manifest_answer(repo, manifest, Some(tag), span, pushed, pushed_at);
        self.delete_answer(repo, Err(tag), span, deleted);
    }

    async fn delete_tag(&mut self, repo: usize, tag: usize) {
        let name = REPOS[repo];
        self.log.push(format!("  delete tag {name}:{}", tag_name(repo, tag)));
        let start = self.now();
        let request = self.reg.http.delete(self.url(&format!("/v2/{name}/manifests/{}", tag_name(repo, tag))));
        let a = self.send("DELETE tag", request).await;
        let span = Span { start, end: self.now() };
        if let Some(a) = a {
            self.expect("DELETE tag", &a, &[(202, ""), (404, "MANIFEST_UNKNOWN")]);
        }
        let who = self.who();
        self.model.lock().unwrap().tag_deletes.push(Delete { repo, target: tag, span, who });
    }

    async fn delete_manifest(&mut self, repo: usize, manifest: usize) {
        let name = REPOS[repo];
        let digest = self.fx.manifests[manifest].digest.clone();
        self.log.push(format!("  delete manifest {manifest} ({digest}) in {name}"));
        let start = self.now();
        let request = self.reg.http.delete(self.url(&format!("/v2/{name}/manifests/{digest}")));
        let a = self.send("DELETE manifest", request).await;
        let span = Span { start, end: self.now() };
        if let Some(a) = a {
            self.expect("DELETE manifest", &a, &[(202, ""), (404, "MANIFEST_UNKNOWN")]);
        }
        let who = self.who();
        self.model.lock().unwrap().manifest_deletes.push(Delete { repo, target: manifest, span, who });
    }

    async fn mount(&mut self, repo: usize, blob: usize) {
        let (to, from) = (REPOS[repo], REPOS[1 - repo]);
        let digest = self.fx.pool[blob].digest.clone();
        self.log.push(format!("  mount blob {blob} from {from} into {to}"));
        let start = self.now();
        let request = self.reg.http.post(self.url(&format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}")));
        let a = self.send("POST mount", request).await;
        let span = Span { start, end: self.now() };
        let Some(a) = a else { return };
        if !self.expect("POST mount", &a, &[(201, ""), (202, "")]) {
            return;
        }
        self.check_created("POST mount", &a, &digest);
        self.record_push(repo, blob, span, a.status == 201);
        if a.status == 202 {
            // Not mountable: a session opened instead; cancel it.
            let Some(location) = a.header("location") else { return };
            let request = self.reg.http.delete(self.url(&location));
            if let Some(a) = self.send("DELETE the mount's session", request).await {
                self.expect("DELETE the mount's session", &a, &[(204, "")]);
            }
        } else {
            self.maybe_read_back(repo, blob).await;
        }
    }

    async fn delete_blob(&mut self, repo: usize, blob: usize) {
        let name = REPOS[repo];
        let digest = self.fx.pool[blob].digest.clone();
        self.log.push(format!("  delete blob {blob} from {name}"));
        let start = self.now();
        let request = self.reg.http.delete(self.url(&format!("/v2/{name}/blobs/{digest}")));
        let a = self.send("DELETE blob", request).await;
        let span = Span { start, end: self.now() };
        if let Some(a) = a {
            self.expect("DELETE blob", &a, &[(202, ""), (404, "BLOB_UNKNOWN")]);
        }
        self.pushed.remove(&(repo, blob));
        let who = self.who();
        self.model.lock().unwrap().blob_deletes.push(Delete { repo, target: blob, span, who });
    }

    fn choose(&mut self) -> Op {
        let total: usize = OPS.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(total);
        for (op, weight) in OPS {
            if roll < weight {
                return op;
            }
            roll -= weight;
        }
        unreachable!()
    }

    async fn run(mut self, ops: usize) {
        for n in 0..ops {
            self.op = n;
            let op = self.choose();
            let repo = self.rng.below(REPOS.len());
            let blob = self.rng.below(self.fx.pool.len());
            self.log.push(format!("op {n} at {:?}: {op:?}", self.now()));
            *self.model.lock().unwrap().kinds.entry(format!("{op:?}")).or_default() += 1;
            match op {
                Op::Push(style) => {
                    self.push_blob(repo, blob, style).await;
                }
                Op::DuplicateFinish => self.duplicate_finish(repo, blob).await,
                Op::Cancel => self.cancel(repo, blob, false).await,
                Op::CancelRacingFinish => self.cancel(repo, blob, true).await,
                Op::Abandon => self.abandon(repo, blob).await,
                Op::RacingChunks => self.racing_chunks(repo).await,
                Op::PushManifestByTag => {
                    let manifest = self.rng.below(self.fx.images);
                    let tag = self.rng.below(3);
                    self.push_manifest(repo, manifest, Some(tag)).await;
                }
                Op::PushManifestByDigest => {
                    let manifest = self.rng.below(self.fx.images);
                    self.push_manifest(repo, manifest, None).await;
                }
                Op::PushReferrer => {
                    let manifest = self.fx.images + self.rng.below(self.fx.manifests.len() - self.fx.images);
                    let tag = self.rng.chance(20).then(|| self.rng.below(3));
                    self.push_manifest(repo, manifest, tag).await;
                }
                Op::DeleteTag => {
                    let tag = self.rng.below(3);
                    self.delete_tag(repo, tag).await
                }
                Op::DeleteManifest => {
                    let manifest = if self.rng.chance(60) {
                        self.rng.below(self.fx.images)
                    } else {
                        self.rng.below(self.fx.manifests.len())
                    };
                    self.delete_manifest(repo, manifest).await
                }
                Op::Mount => self.mount(repo, blob).await,
                Op::MoveTagRacingDelete => self.move_tag_racing_delete(repo).await,
                Op::ReferrerRacingDelete => self.referrer_racing_delete(repo).await,
                Op::TagPushRacingTagDelete => self.tag_push_racing_tag_delete(repo).await,
                Op::DeleteBlob => {
                    let blob = LAYERS[self.rng.below(LAYERS.len())];
                    self.delete_blob(repo, blob).await
                }
            }
        }
        let mut model = self.model.lock().unwrap();
        model.ops += ops;
        model.logs.insert(self.id, std::mem::take(&mut self.log));
    }
}

// ---- the torture test: the invariants ------------------------------------------------------------

struct Checker<'a> {
    reg: &'a Registry,
    fx: &'a Fixture,
    /// How many tags each repository may have (shared and private ones).
    tags: usize,
    failures: Vec<String>,
}

impl Checker<'_> {
    async fn get(&mut self, path: &str, accept: Option<&str>) -> Option<Answer> {
        let mut request = self.reg.http.get(self.reg.at(path));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        match answer(request).await {
            Ok(a) if a.status >= 500 => {
                self.failures.push(format!("check: GET {path}: {}", a.describe()));
                None
            }
            Ok(a) => Some(a),
            Err(e) => {
                self.failures.push(format!("check: GET {path}: {e}"));
                None
            }
        }
    }

    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    /// Every acknowledged blob reads back byte-identical unless a delete may have won; nothing
    /// reads back from a repository nobody pushed it to.
    async fn blobs(&mut self, model: &Model) {
        for (repo, repo_name) in REPOS.iter().enumerate() {
            for blob in 0..self.fx.pool.len() {
                let digest = self.fx.pool[blob].digest.clone();
                let pushes: Vec<&BlobPush> =
                    model.blob_pushes.iter().filter(|p| p.repo == repo && p.blob == blob).collect();
                let deletes = model.blob_deletes.iter().filter(|d| d.repo == repo && d.target == blob);
                let must = must_remain(pushes.iter().map(|p| (&p.span, p.acked)), deletes.map(|d| &d.span));
                let acked = pushes.iter().filter(|p| p.acked).count();
                let Some(a) = self.get(&format!("/v2/{repo_name}/blobs/{digest}"), None).await else { continue };
                match a.status {
                    200 => {
                        if a.body != self.fx.pool[blob].bytes {
                            self.fail(format!(
                                "blob {blob} ({digest}) in {} reads back {} bytes hashing to {}",
                                repo_name,
                                a.body.len(),
                                sha(&a.body)
                            ));
                        }
                        if pushes.is_empty() {
                            self.fail(format!(
                                "blob {blob} ({digest}) reads back from {}, where nobody pushed it",
                                REPOS[repo]
                            ));
                        }
                    }
                    404 if a.code() == "BLOB_UNKNOWN" => {
                        if must {
                            self.fail(format!(
                                "blob {blob} ({digest}) in {}: {acked} acknowledged pushes, one after every delete, \
                                 but GET answers {}",
                                REPOS[repo],
                                a.describe()
                            ));
                        }
                    }
                    _ => self.fail(format!("blob {blob} in {}: GET answers {}", REPOS[repo], a.describe())),
                }
            }
        }
    }

    /// Every acknowledged manifest not deleted since reads back byte-identical by digest.
    /// Returns which manifests exist now, by (repo, candidate).
    async fn manifests(&mut self, model: &Model) -> HashSet<(usize, usize)> {
        let mut exists = HashSet::new();
        for (repo, repo_name) in REPOS.iter().enumerate() {
            for (i, candidate) in self.fx.manifests.iter().enumerate() {
                let pushes: Vec<&ManifestPush> =
                    model.manifest_pushes.iter().filter(|p| p.repo == repo && p.manifest == i).collect();
                let deletes = model.manifest_deletes.iter().filter(|d| d.repo == repo && d.target == i);
                let must = must_remain(pushes.iter().map(|p| (&p.span, p.acked)), deletes.map(|d| &d.span));
                let path = format!("/v2/{repo_name}/manifests/{}", candidate.digest);
                let Some(a) = self.get(&path, Some(MANIFEST_ACCEPT)).await else { continue };
                match a.status {
                    200 => {
                        exists.insert((repo, i));
                        if a.body != candidate.bytes {
                            self.fail(format!(
                                "manifest {i} in {} reads back other bytes ({})",
                                REPOS[repo],
                                sha(&a.body)
                            ));
                        }
                        if pushes.is_empty() {
                            self.fail(format!("manifest {i} reads back from {}, where nobody pushed it", REPOS[repo]));
                        }
                    }
                    404 if a.code() == "MANIFEST_UNKNOWN" => {
                        if must {
                            let who: Vec<&str> = pushes.iter().filter(|p| p.acked).map(|p| p.who.as_str()).collect();
                            self.fail(format!(
                                "manifest {i} ({}) in {}: acknowledged ({who:?}) after every delete, but GET answers {}",
                                candidate.digest,
                                REPOS[repo],
                                a.describe()
                            ));
                        }
                    }
                    _ => self.fail(format!("manifest {i} in {}: GET answers {}", REPOS[repo], a.describe())),
                }
            }
        }
        exists
    }

    /// Every tag that resolves is listed and every listed tag resolves, to a digest some client
    /// acknowledged for it; the last acknowledged push of a tag, when nothing else on the tag
    /// overlapped it or came after, is what it resolves to.
    async fn tags(&mut self, model: &Model) {
        for (repo, &name) in REPOS.iter().enumerate() {
            let listed: BTreeSet<String> = match self.get(&format!("/v2/{name}/tags/list"), None).await {
                Some(a) if a.status == 200 => {
                    let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                    if body["name"] != name {
                        self.fail(format!("tags/list of {name} names {}", body["name"]));
                    }
                    body["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                }
                Some(a) if a.is(404, "NAME_UNKNOWN") => BTreeSet::new(),
                Some(a) => {
                    self.fail(format!("tags/list of {name}: {}", a.describe()));
                    continue;
                }
                None => continue,
            };
            let names: Vec<String> = (0..self.tags).map(|t| tag_name(repo, t)).collect();
            for tag in &listed {
                if !names.contains(tag) {
                    self.fail(format!("tags/list of {name} lists {tag:?}, never pushed to {name}"));
                }
            }
            for (t, tag) in names.iter().enumerate() {
                let pushes: Vec<&ManifestPush> =
                    model.manifest_pushes.iter().filter(|p| p.repo == repo && p.tag == Some(t)).collect();
                let Some(a) = self.get(&format!("/v2/{name}/manifests/{tag}"), Some(MANIFEST_ACCEPT)).await else {
                    continue;
                };
                let resolved = match a.status {
                    200 => a.header("docker-content-digest"),
                    404 if a.code() == "MANIFEST_UNKNOWN" => None,
                    _ => {
                        self.fail(format!("{name}:{tag}: GET answers {}", a.describe()));
                        continue;
                    }
                };
                if resolved.is_some() != listed.contains(tag) {
                    self.fail(format!(
                        "{name}:{tag} {} but {} in tags/list",
                        if resolved.is_some() { "resolves" } else { "does not resolve" },
                        if listed.contains(tag) { "is listed" } else { "is not listed" }
                    ));
                }
                if let Some(digest) = &resolved {
                    if sha(&a.body) != *digest {
                        self.fail(format!("{name}:{tag} answers bytes hashing to {}, not {digest}", sha(&a.body)));
                    }
                    let acked_for_tag =
                        pushes.iter().any(|p| p.acked && self.fx.manifests[p.manifest].digest == *digest);
                    if !acked_for_tag {
                        self.fail(format!(
                            "{name}:{tag} resolves to {digest}, which no client had acknowledged for it"
                        ));
                    }
                }
                // Last writer: the latest-starting acknowledged push, if every other operation
                // that can change this tag ended before it started.
                let Some(last) = pushes.iter().filter(|p| p.acked).max_by_key(|p| p.span.start) else { continue };
                let last_digest = &self.fx.manifests[last.manifest].digest;
                let overlapped = pushes.iter().any(|p| !std::ptr::eq(*p, *last) && p.span.end >= last.span.start)
                    || model
                        .tag_deletes
                        .iter()
                        .any(|d| d.repo == repo && d.target == t && d.span.end >= last.span.start)
                    || model
                        .manifest_deletes
                        .iter()
                        .any(|d| d.repo == repo && d.target == last.manifest && d.span.end >= last.span.start);
                if !overlapped && resolved.as_ref() != Some(last_digest) {
                    let racing_deletes: Vec<String> = model
                        .manifest_deletes
                        .iter()
                        .filter(|d| d.repo == repo && d.span.end >= last.span.start && d.span.start <= last.span.end)
                        .map(|d| format!("manifest {} [{:?}..{:?}]", d.target, d.span.start, d.span.end))
                        .collect();
                    self.fail(format!(
                        "{name}:{tag}: the last push ({}, manifest {}, {:?}..{:?}) was acknowledged after everything \
                         else on the tag, but the tag resolves to {resolved:?} (deletes of other manifests of {name} \
                         overlapping it: {racing_deletes:?})",
                        last.who, last.manifest, last.span.start, last.span.end
                    ));
                }
            }
        }
    }

    /// Referrers list only manifests of that repository that exist and have that subject, and
    /// every existing referrer is listed.
    async fn referrers(&mut self, model: &Model, exists: &HashSet<(usize, usize)>) {
        for (repo, &name) in REPOS.iter().enumerate() {
            for subject in 0..self.fx.images {
                let subject_digest = self.fx.manifests[subject].digest.clone();
                let Some(a) = self.get(&format!("/v2/{name}/referrers/{subject_digest}"), None).await else { continue };
                if a.status != 200 {
                    self.fail(format!("referrers of {subject} in {name}: {}", a.describe()));
                    continue;
                }
                let index: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                let mut listed = BTreeSet::new();
                for entry in index["manifests"].as_array().into_iter().flatten() {
                    let digest = entry["digest"].as_str().unwrap_or_default();
                    let Some(i) = self.fx.manifests.iter().position(|m| m.digest == digest) else {
                        self.fail(format!("referrers of {subject} in {name} list {digest}, no manifest of this test"));
                        continue;
                    };
                    listed.insert(i);
                    if self.fx.manifests[i].subject != Some(subject) {
                        self.fail(format!(
                            "referrers of {subject} in {name} list manifest {i}, whose subject is another"
                        ));
                    }
                    if !exists.contains(&(repo, i)) {
                        self.fail(format!(
                            "referrers of {subject} in {name} list manifest {i}, which is not in {name}"
                        ));
                    }
                    if entry["size"].as_u64() != Some(self.fx.manifests[i].bytes.len() as u64) {
                        self.fail(format!("referrers of {subject} in {name}: entry {entry} has the wrong size"));
                    }
                }
                for (i, candidate) in self.fx.manifests.iter().enumerate() {
                    if candidate.subject == Some(subject) && exists.contains(&(repo, i)) && !listed.contains(&i) {
                        self.failures.push(format!(
                            "referrer {i} of {subject} exists in {name} (GET by digest 200) but is not in its \
                             referrers; its last pushes and deletes there: {}",
                            history(model, repo, i)
                        ));
                    }
                }
            }
        }
    }

    /// The catalog lists only the repositories of this test.
    async fn catalog(&mut self) {
        let Some(a) = self.get("/v2/_catalog", None).await else { return };
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
        for repo in body["repositories"].as_array().into_iter().flatten() {
            if !REPOS.iter().any(|r| repo == r) {
                self.fail(format!("the catalog lists {repo}"));
            }
        }
    }

    /// No session is stuck: every open one answers its status and takes the next chunk, and
    /// finishes as its blob. Nobody else knows their ids and none can expire (24 h), so each one
    /// must still be open.
    async fn held_sessions(&mut self, model: &Model) {
        for held in &model.held {
            let bytes = &self.fx.pool[held.blob].bytes;
            let Some(status) = self.get(&held.location, None).await else { continue };
            if status.is(404, "BLOB_UPLOAD_UNKNOWN") {
                self.fail(format!("{}: an open session nobody else knew answers {}", held.who, status.describe()));
                continue;
            }
            if status.status != 204 {
                self.fail(format!("{}: GET of an open session answers {}", held.who, status.describe()));
                continue;
            }
            if status.header("range").and_then(|r| range_len(&r)) != Some(held.offset) {
                self.fail(format!(
                    "{}: session Range {:?}, {} bytes sent",
                    held.who,
                    status.header("range"),
                    held.offset
                ));
                continue;
            }
            let url = self.reg.at(&held.location);
            let chunk = &bytes[held.offset..held.offset + 1];
            let request = self
                .reg
                .http
                .patch(url)
                .header("content-range", format!("{}-{}", held.offset, held.offset))
                .body(chunk.to_vec());
            let patched = match answer(request).await {
                Ok(a) => a,
                Err(e) => {
                    self.fail(format!("{}: PATCH of a held session: {e}", held.who));
                    continue;
                }
            };
            if patched.status != 202 {
                self.fail(format!("{}: PATCH from the latest Location answers {}", held.who, patched.describe()));
                continue;
            }
            let location = patched.header("location").unwrap_or_default();
            let digest = &self.fx.pool[held.blob].digest;
            let request =
                self.reg.http.put(self.reg.at(&with_digest(&location, digest))).body(bytes[held.offset + 1..].to_vec());
            match answer(request).await {
                Ok(a) if a.status == 201 => {
                    let repo = REPOS[held.repo];
                    match self.get(&format!("/v2/{repo}/blobs/{digest}"), None).await {
                        Some(got) if got.status == 200 && got.body == *bytes => {}
                        Some(got) => self.fail(format!("{}: the resumed blob reads back {}", held.who, got.short())),
                        None => {}
                    }
                }
                Ok(a) => self.fail(format!("{}: finishing a held session answers {}", held.who, a.describe())),
                Err(e) => self.fail(format!("{}: finishing a held session: {e}", held.who)),
            }
        }
    }

    /// A tag moved to Y while the manifest it pointed at was deleted ends at Y, unless a delete
    /// of Y itself overlapped.
    fn moved(&mut self, model: &Model) {
        for moved in &model.moved {
            let expected = &self.fx.manifests[moved.expected].digest;
            if moved.resolved.as_ref() == Some(expected) {
                continue;
            }
            let excused = model.manifest_deletes.iter().any(|d| {
                d.repo == moved.repo
                    && d.target == moved.expected
                    && d.span.end >= moved.span.start
                    && d.span.start <= moved.span.end
            });
            if !excused {
                self.fail(format!(
                    "{}: {}:{} was moved to manifest {} ({expected}, acknowledged) while the manifest it pointed at \
                     was deleted; it then resolves to {:?}",
                    moved.who,
                    REPOS[moved.repo],
                    tag_name(moved.repo, moved.tag),
                    moved.expected,
                    moved.resolved
                ));
            }
        }
    }

    /// A manifest refused for unknown blobs is an error unless a delete of one of them, in
    /// that repository, may have come after this client pushed it.
    fn refusals(&mut self, model: &Model) {
        for push in &model.manifest_pushes {
            let Some(pushed) = &push.blob_unknown else { continue };
            let excused = pushed.iter().any(|(blob, at)| {
                at.is_none()
                    || model.blob_deletes.iter().any(|d| {
                        d.repo == push.repo
                            && d.target == *blob
                            && d.span.start <= push.span.end
                            && at.is_none_or(|at| d.span.end >= at)
                    })
            });
            if !excused {
                self.fail(format!(
                    "{}: manifest {} refused with MANIFEST_BLOB_UNKNOWN in {}, though the client's pushes of its blobs \
                     {pushed:?} were acknowledged and no delete of them could have come after",
                    push.who, push.manifest, REPOS[push.repo]
                ));
            }
        }
    }

    /// An acknowledged blob read back at once, not found, is an error unless a delete of it
    /// had started by then.
    fn reads(&mut self, model: &Model) {
        for read in model.reads.iter().filter(|r| !r.found) {
            let excused = model
                .blob_deletes
                .iter()
                .any(|d| d.repo == read.repo && d.target == read.blob && d.span.start <= read.span.end);
            if !excused {
                self.fail(format!(
                    "{}: blob {} in {} was not found right after its acknowledged push, with no delete of it",
                    read.who, read.blob, REPOS[read.repo]
                ));
            }
        }
    }
}

/// `clients` concurrent clients doing `ops` random operations each (`BERTH_TORTURE_OPS` for a
/// longer soak), then every invariant.
async fn torture(backend: Backend, clients: usize, ops: usize) {
    torture_across(vec![RunnerOptions { args: backend.args(), ..Default::default() }], clients, ops).await;
}

/// [`torture`] with one runner per entry of `front_ends`, all serving one registry (shared
/// storage): client `i` talks to front end `i % n`, so every key is raced from each of them.
async fn torture_across(front_ends: Vec<RunnerOptions<'static>>, clients: usize, ops: usize) {
    let seed = torture_seed();
    let ops = std::env::var("BERTH_TORTURE_OPS").ok().and_then(|n| n.parse().ok()).unwrap_or(ops);
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let runners: Vec<Runner> = front_ends
        .into_iter()
        .enumerate()
        .map(|(i, options)| Runner::start_with(&data.path().join(format!("front-end-{i}")), options))
        .collect();
    let runner = &runners[0];
    let fx = Arc::new(Fixture::new());
    let model = Arc::new(Mutex::new(Model::default()));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            let client = Client {
                id,
                op: 0,
                rng: Rng::new(seed, id as u64),
                reg: Registry::new(&runners[id % runners.len()]),
                fx: fx.clone(),
                model: model.clone(),
                t0,
                log: Vec::new(),
                pushed: HashMap::new(),
            };
            tokio::spawn(tokio::time::timeout(Duration::from_secs(300), client.run(ops)))
        })
        .collect();
    for (id, task) in join_all(tasks).await.into_iter().enumerate() {
        match task {
            Ok(Ok(())) => {}
            Ok(Err(_)) => model.lock().unwrap().failures.push(format!("client {id} did not finish within 300 s")),
            Err(e) => model.lock().unwrap().failures.push(format!("client {id} panicked: {e}")),
        }
    }
    let load = t0.elapsed();
    let reg = Registry::new(runner);
    let model = std::mem::take(&mut *model.lock().unwrap());
    let mut checker = Checker { reg: &reg, fx: &fx, tags: 3 + clients, failures: Vec::new() };
    checker.blobs(&model).await;
    let exists = checker.manifests(&model).await;
    checker.tags(&model).await;
    checker.referrers(&model, &exists).await;
    checker.catalog().await;
    checker.refusals(&model);
    checker.reads(&model);
    checker.moved(&model);
    checker.held_sessions(&model).await;
    let acked_blobs = model.blob_pushes.iter().filter(|p| p.acked).count();
    let acked_manifests = model.manifest_pushes.iter().filter(|p| p.acked).count();
    println!(
        "torture seed {seed}: {clients} clients x {ops} ops in {load:?} ({acked_blobs} blob pushes and {acked_manifests} \
         manifest pushes acknowledged, {} manifest deletes, {} tag deletes, {} blob deletes, {} sessions held); \
         {} manifests exist at the end; whole test {:?}",
        model.manifest_deletes.len(),
        model.tag_deletes.len(),
        model.blob_deletes.len(),
        model.held.len(),
        exists.len(),
        started.elapsed()
    );
    println!("operations: {:?}", model.kinds);
    let mut failures = model.failures.clone();
    failures.extend(checker.failures);
    if !failures.is_empty() {
        let mut clients_involved = BTreeSet::new();
        for failure in &failures {
            if let Some(id) =
                failure.strip_prefix("client ").and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<usize>().ok())
            {
                clients_involved.insert(id);
            }
        }
        for id in clients_involved {
            println!("---- client {id}'s operations:");
            for line in model.logs.get(&id).into_iter().flatten() {
                println!("{line}");
            }
        }
        for (i, runner) in runners.iter().enumerate() {
            println!("---- runner {i} log (last 60 lines):");
            let log = runner.log();
            for line in &log[log.len().saturating_sub(60)..] {
                println!("{line}");
            }
        }
        panic!("{} invariant violations (replay: BERTH_TORTURE_SEED={seed}):\n{}", failures.len(), failures.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_never_lose_acknowledged_data_on_the_filesystem_store() {
    torture(Backend::Fs, 12, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_never_lose_acknowledged_data_on_the_key_value_provider() {
    torture(Backend::Kv, 12, 40).await;
}

/// Issue 13: the same torture with its clients spread over two runners that share one Redis and
/// one S3 bucket (blob GETs redirected to the bucket).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_over_two_front_ends_on_redis_and_s3_never_lose_acknowledged_data() {
    let s3 = common::s3::S3Server::start();
    let redis = common::redis::RedisServer::start();
    let front_end = || common::s3::cluster_options(&s3, Some(&redis), 300);
    torture_across(vec![front_end(), front_end()], 12, 40).await;
}

// ---- the crash test ------------------------------------------------------------------------------

const CRASH_REPOS: [&str; 2] = ["crash/shared", "crash/other"];
const SHARED_TAGS: [&str; 2] = ["latest", "stable"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Fs,
    Kv,
}

impl Backend {
    fn args(self) -> Vec<String> {
        match self {
            Backend::Fs => Vec::new(),
            Backend::Kv => vec!["--blob-store".into(), artifacts().blob_kv_provider.display().to_string()],
        }
    }
}

struct TagAttempt {
    repo: usize,
    tag: String,
    digest: String,
    start: Duration,
    end: Duration,
    acked: bool,
}

struct CrashHeld {
    repo: usize,
    location: String,
    offset: usize,
    content: Arc<Vec<u8>>,
    who: String,
    /// The kill cut its finishing `PUT`: the finish may have completed, and then the session is
    /// unknown. Any other held session must resume.
    in_finish: bool,
}

#[derive(Default)]
struct CrashModel {
    /// Garbage collection runs beside the clients (grace 2 s), and they delete manifests and
    /// tags: a blob is then checked only while a manifest the model holds references it (one
    /// nothing references may be collected, as documented).
    collect: bool,
    /// Manifests whose delete was acknowledged: they never resolve again.
    deleted: BTreeSet<(usize, String)>,
    /// Tags whose delete was acknowledged: they never resolve again (their pushes were all before).
    deleted_tags: BTreeSet<(usize, String)>,
    /// Tags whose delete the kill cut: either way is right.
    unsure_tags: BTreeSet<(usize, String)>,
    deletes: usize,
    gc_steps: usize,
    gc_collected: usize,
    /// Acknowledged blobs: (repo, digest) -> bytes.
    blobs: BTreeMap<(usize, String), Arc<Vec<u8>>>,
    /// Acknowledged manifests: (repo, digest) -> bytes.
    manifests: BTreeMap<(usize, String), Arc<Vec<u8>>>,
    tags: Vec<TagAttempt>,
    held: Vec<CrashHeld>,
    failures: Vec<String>,
    pushes: usize,
}

struct CrashClient {
    who: String,
    rng: Rng,
    reg: Registry,
    model: Arc<Mutex<CrashModel>>,
    killed: Arc<AtomicBool>,
    t0: Instant,
    round: usize,
    shared: Arc<Vec<Arc<Vec<u8>>>>,
    /// This client's acknowledged untagged manifests and unique tags, which it may delete.
    own_manifests: Vec<(usize, String)>,
    own_tags: Vec<(usize, String)>,
}

/// Why a crash client stopped.
struct Stopped;

impl CrashClient {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn fail(&self, what: String) {
        self.model.lock().unwrap().failures.push(format!("{}: {what}", self.who));
    }

    /// Send; a transport error is expected once the runner was killed (the client stops), a
    /// failure before. Any 5xx is a failure.
    async fn send(&self, what: &str, request: HttpRequest) -> Result<Answer, Stopped> {
        match answer(request).await {
            Ok(a) => {
                if a.status >= 500 {
                    self.fail(format!("{what}: {}", a.describe()));
                    return Err(Stopped);
                }
                Ok(a)
            }
            Err(e) => {
                if !self.killed.load(Ordering::SeqCst) {
                    self.fail(format!("{what}: {e} (before the kill)"));
                }
                Err(Stopped)
            }
        }
    }

    fn expect(&self, what: &str, a: &Answer, status: u16) -> Result<(), Stopped> {
        if a.status == status {
            return Ok(());
        }
        self.fail(format!("{what}: expected {status}, got {}", a.describe()));
        Err(Stopped)
    }

    fn content(&mut self) -> Arc<Vec<u8>> {
        if self.rng.chance(25) {
            let i = self.rng.below(self.shared.len());
            return self.shared[i].clone();
        }
        let size = match self.rng.below(10) {
            0..=5 => self.rng.between(2, 4096),
            6..=8 => self.rng.between(4096, 200_000),
            _ => self.rng.between(200_000, 700_000),
        };
        Arc::new(PseudoRandom::bytes(self.rng.next(), size))
    }

    async fn monolithic(&mut self, repo: usize, bytes: Arc<Vec<u8>>) -> Result<String, Stopped> {
        let digest = sha(&bytes);
        let url = self.reg.at(&format!("/v2/{}/blobs/uploads/?digest={digest}", CRASH_REPOS[repo]));
        let a = self.send("POST ?digest=", self.reg.http.post(url).body(bytes.to_vec())).await?;
        self.expect("POST ?digest=", &a, 201)?;
        let mut model = self.model.lock().unwrap();
        model.blobs.insert((repo, digest.clone()), bytes);
        model.pushes += 1;
        Ok(digest)
    }

    /// A chunked upload; with `abandon`, left open after its chunks. A session interrupted by
    /// the kill is held, for the next start to resume.
    async fn chunked(&mut self, repo: usize, bytes: Arc<Vec<u8>>, abandon: bool) -> Result<(), Stopped> {
        let digest = sha(&bytes);
        let url = self.reg.at(&format!("/v2/{}/blobs/uploads/", CRASH_REPOS[repo]));
        let a = self.send("POST open", self.reg.http.post(url)).await?;
        self.expect("POST open", &a, 202)?;
        let mut location = a.header("location").unwrap_or_default();
        let parts = self.rng.between(2, 4);
        let mut pieces = self.rng.split(bytes.len(), parts, 2);
        let last = if !abandon && pieces.len() > 1 && self.rng.chance(50) { pieces.pop().unwrap() } else { 0 };
        if abandon && pieces.len() > 1 {
            pieces.pop();
        }
        let mut offset = 0;
        let hold = |location: &str, offset: usize, in_finish: bool| CrashHeld {
            repo,
            location: location.to_owned(),
            offset,
            content: bytes.clone(),
            who: self.who.clone(),
            in_finish,
        };
        for len in pieces {
            let request = self
                .reg
                .http
                .patch(self.reg.at(&location))
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{offset}-{}", offset + len - 1))
                .body(bytes[offset..offset + len].to_vec());
            let a = match self.send("PATCH", request).await {
                Ok(a) => a,
                Err(stopped) => {
                    self.model.lock().unwrap().held.push(hold(&location, offset, false));
                    return Err(stopped);
                }
            };
            self.expect("PATCH", &a, 202)?;
            location = a.header("location").unwrap_or_default();
            offset += len;
        }
        if abandon {
            self.model.lock().unwrap().held.push(hold(&location, offset, false));
            return Ok(());
        }
        let request = self
            .reg
            .http
            .put(self.reg.at(&with_digest(&location, &digest)))
            .body(bytes[offset..offset + last].to_vec());
        let a = match self.send("PUT finish", request).await {
            Ok(a) => a,
            Err(stopped) => {
                self.model.lock().unwrap().held.push(hold(&location, offset, true));
                return Err(stopped);
            }
        };
        self.expect("PUT finish", &a, 201)?;
        let mut model = self.model.lock().unwrap();
        model.blobs.insert((repo, digest), bytes);
        model.pushes += 1;
        Ok(())
    }

    async fn image(&mut self, repo: usize, n: usize) -> Result<(), Stopped> {
        let config =
            format!(r#"{{"architecture":"amd64","os":"linux","crash":"{}-{n}-{}"}}"#, self.who, self.rng.next());
        let config = Arc::new(config.into_bytes());
        let layer = self.content();
        let config_digest = self.monolithic(repo, config.clone()).await?;
        let layer_digest = if self.rng.chance(50) {
            self.monolithic(repo, layer.clone()).await?
        } else {
            self.chunked(repo, layer.clone(), false).await?;
            sha(&layer)
        };
        let manifest = image_manifest(
            &[(OCI_CONFIG, &config_digest, config.len())],
            &[(OCI_LAYER, &layer_digest, layer.len())],
            "",
        );
        let digest = sha(&manifest);
        let tag = match self.rng.below(3) {
            0 => None,
            1 => Some(SHARED_TAGS[self.rng.below(SHARED_TAGS.len())].to_owned()),
            _ => Some(format!("r{}-{}-{n}", self.round, self.who.replace(' ', "-"))),
        };
        let reference = tag.clone().unwrap_or_else(|| digest.clone());
        let url = self.reg.at(&format!("/v2/{}/manifests/{reference}", CRASH_REPOS[repo]));
        let start = self.now();
        let mut result = self
            .send("PUT manifest", self.reg.http.put(&url).header("content-type", OCI_MANIFEST).body(manifest.clone()))
            .await;
        // With garbage collection beside (grace 2 s), a blob pushed a while ago may be collected
        // before its manifest: refused with MANIFEST_BLOB_UNKNOWN, and pushed again, as a client would.
        let collect = self.model.lock().unwrap().collect;
        for _ in 0..5 {
            if !(collect && matches!(&result, Ok(a) if a.is(400, "MANIFEST_BLOB_UNKNOWN"))) {
                break;
            }
            for blob in [&config, &layer] {
                if self.monolithic(repo, blob.clone()).await.is_err() {
                    result = Err(Stopped);
                    break;
                }
            }
            if result.is_err() {
                break;
            }
            result = self
                .send(
                    "PUT manifest again",
                    self.reg.http.put(&url).header("content-type", OCI_MANIFEST).body(manifest.clone()),
                )
                .await;
        }
        let end = self.now();
        let acked = matches!(&result, Ok(a) if a.status == 201);
        let mut model = self.model.lock().unwrap();
        if let Some(tag) = &tag {
            model.tags.push(TagAttempt { repo, tag: tag.clone(), digest: digest.clone(), start, end, acked });
        }
        let a = result?;
        drop(model);
        self.expect("PUT manifest", &a, 201)?;
        let mut model = self.model.lock().unwrap();
        model.manifests.insert((repo, digest.clone()), Arc::new(manifest));
        model.pushes += 1;
        drop(model);
        match tag {
            None => self.own_manifests.push((repo, digest)),
            Some(tag) if !SHARED_TAGS.contains(&tag.as_str()) => self.own_tags.push((repo, tag)),
            Some(_) => {}
        }
        Ok(())
    }

    /// Delete one of this client's untagged manifests by digest. From the attempt on the model
    /// no longer holds it (a delete the kill cut may or may not have happened); acknowledged, it
    /// must never resolve again.
    async fn delete_manifest(&mut self) -> Result<(), Stopped> {
        if self.own_manifests.is_empty() {
            return Ok(());
        }
        let (repo, digest) = self.own_manifests.swap_remove(self.rng.below(self.own_manifests.len()));
        self.model.lock().unwrap().manifests.remove(&(repo, digest.clone()));
        let url = self.reg.at(&format!("/v2/{}/manifests/{digest}", CRASH_REPOS[repo]));
        let a = self.send("DELETE manifest", self.reg.http.delete(url)).await?;
        self.expect("DELETE manifest", &a, 202)?;
        let mut model = self.model.lock().unwrap();
        model.deleted.insert((repo, digest));
        model.deletes += 1;
        Ok(())
    }

    /// Delete one of this client's own tags (its pushes are all acknowledged and over).
    async fn delete_tag(&mut self) -> Result<(), Stopped> {
        if self.own_tags.is_empty() {
            return Ok(());
        }
        let (repo, tag) = self.own_tags.swap_remove(self.rng.below(self.own_tags.len()));
        {
            let mut model = self.model.lock().unwrap();
            model.tags.retain(|a| !(a.repo == repo && a.tag == tag));
            model.unsure_tags.insert((repo, tag.clone()));
        }
        let url = self.reg.at(&format!("/v2/{}/manifests/{tag}", CRASH_REPOS[repo]));
        let a = self.send("DELETE tag", self.reg.http.delete(url)).await?;
        self.expect("DELETE tag", &a, 202)?;
        let mut model = self.model.lock().unwrap();
        model.unsure_tags.remove(&(repo, tag.clone()));
        model.deleted_tags.insert((repo, tag));
        model.deletes += 1;
        Ok(())
    }

    async fn run(mut self) {
        let collect = self.model.lock().unwrap().collect;
        for n in 0.. {
            let repo = if self.rng.chance(70) { 0 } else { 1 };
            if collect {
                let result = match self.rng.below(10) {
                    0..=4 => self.image(repo, n).await,
                    5 | 6 => self.delete_manifest().await,
                    7 => self.delete_tag().await,
                    8 => {
                        let bytes = self.content();
                        self.chunked(repo, bytes, false).await
                    }
                    _ => {
                        let bytes = self.content();
                        self.chunked(repo, bytes, true).await
                    }
                };
                if result.is_err() {
                    return;
                }
                continue;
            }
            let result = match self.rng.below(10) {
                0..=2 => {
                    let bytes = self.content();
                    self.monolithic(repo, bytes).await.map(|_| ())
                }
                3..=5 => {
                    let bytes = self.content();
                    self.chunked(repo, bytes, false).await
                }
                6 => {
                    let bytes = self.content();
                    self.chunked(repo, bytes, true).await
                }
                _ => self.image(repo, n).await,
            };
            if result.is_err() {
                return;
            }
        }
    }
}

/// After a restart: everything acknowledged is there, tags are consistent, and every held
/// session resumes (and then is finished, or held again) or is unknown.
async fn check_after_restart(reg: &Registry, model: &mut CrashModel, rng: &mut Rng, when: &str) {
    let mut failures = Vec::new();
    // With garbage collection, the blobs that manifests the model holds reference.
    let referenced: BTreeSet<(usize, String)> = model
        .manifests
        .iter()
        .flat_map(|((repo, _), bytes)| {
            let parsed: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            let blobs: Vec<String> = parsed["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain([&parsed["config"]])
                .filter_map(|d| d["digest"].as_str().map(str::to_owned))
                .collect();
            blobs.into_iter().map(|digest| (*repo, digest))
        })
        .collect();
    for ((repo, digest), bytes) in &model.blobs {
        if model.collect && !referenced.contains(&(*repo, digest.clone())) {
            continue;
        }
        let url = reg.at(&format!("/v2/{}/blobs/{digest}", CRASH_REPOS[*repo]));
        match answer(reg.http.get(url)).await {
            Ok(a) if a.status == 200 && a.body == **bytes => {}
            Ok(a) => {
                failures.push(format!("{when}: acknowledged blob {digest} in {}: {}", CRASH_REPOS[*repo], a.short()))
            }
            Err(e) => failures.push(format!("{when}: GET blob {digest}: {e}")),
        }
    }
    for ((repo, digest), bytes) in &model.manifests {
        let url = reg.at(&format!("/v2/{}/manifests/{digest}", CRASH_REPOS[*repo]));
        match answer(reg.http.get(url).header("accept", MANIFEST_ACCEPT)).await {
            Ok(a) if a.status == 200 && a.body == **bytes => {}
            Ok(a) => failures.push(format!(
                "{when}: acknowledged manifest {digest} in {}: {}",
                CRASH_REPOS[*repo],
                a.short()
            )),
            Err(e) => failures.push(format!("{when}: GET manifest {digest}: {e}")),
        }
    }
    for (repo, digest) in &model.deleted {
        let url = reg.at(&format!("/v2/{}/manifests/{digest}", CRASH_REPOS[*repo]));
        match answer(reg.http.get(url).header("accept", MANIFEST_ACCEPT)).await {
            Ok(a) if a.is(404, "MANIFEST_UNKNOWN") => {}
            Ok(a) => failures.push(format!("{when}: deleted manifest {digest} answers {}", a.short())),
            Err(e) => failures.push(format!("{when}: GET deleted manifest {digest}: {e}")),
        }
    }
    for (repo, tag) in &model.deleted_tags {
        let url = reg.at(&format!("/v2/{}/manifests/{tag}", CRASH_REPOS[*repo]));
        match answer(reg.http.get(url).header("accept", MANIFEST_ACCEPT)).await {
            Ok(a) if a.is(404, "MANIFEST_UNKNOWN") => {}
            Ok(a) => failures.push(format!("{when}: deleted tag {tag} answers {}", a.short())),
            Err(e) => failures.push(format!("{when}: GET deleted tag {tag}: {e}")),
        }
    }
    // Tags: each resolves to a digest attempted for it (one acknowledged if nothing else was in
    // flight after it), resolves if any push of it was acknowledged, and is listed iff it resolves.
    let mut by_tag: BTreeMap<(usize, String), Vec<&TagAttempt>> = BTreeMap::new();
    for attempt in &model.tags {
        by_tag.entry((attempt.repo, attempt.tag.clone())).or_default().push(attempt);
    }
    let mut listed: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (repo, name) in CRASH_REPOS.iter().enumerate() {
        match answer(reg.http.get(reg.at(&format!("/v2/{name}/tags/list")))).await {
            Ok(a) if a.status == 200 => {
                let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                let tags = body["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_owned));
                listed.insert(repo, tags.collect());
            }
            Ok(a) if a.is(404, "NAME_UNKNOWN") => {}
            Ok(a) => failures.push(format!("{when}: tags/list of {name}: {}", a.describe())),
            Err(e) => failures.push(format!("{when}: tags/list of {name}: {e}")),
        }
    }
    for (repo, tags) in &listed {
        for tag in tags {
            let key = (*repo, tag.clone());
            if !by_tag.contains_key(&key) && !model.unsure_tags.contains(&key) {
                failures.push(format!("{when}: {} lists tag {tag}, never pushed there", CRASH_REPOS[*repo]));
            }
        }
    }
    for ((repo, tag), attempts) in &by_tag {
        let name = CRASH_REPOS[*repo];
        let resolved = match answer(
            reg.http.get(reg.at(&format!("/v2/{name}/manifests/{tag}"))).header("accept", MANIFEST_ACCEPT),
        )
        .await
        {
            Ok(a) if a.status == 200 => a.header("docker-content-digest"),
            Ok(a) if a.is(404, "MANIFEST_UNKNOWN") => None,
            Ok(a) => {
                failures.push(format!("{when}: {name}:{tag}: {}", a.describe()));
                continue;
            }
            Err(e) => {
                failures.push(format!("{when}: {name}:{tag}: {e}"));
                continue;
            }
        };
        let is_listed = listed.get(repo).is_some_and(|l| l.contains(tag));
        if resolved.is_some() != is_listed {
            failures.push(format!("{when}: {name}:{tag} resolves: {resolved:?}, listed: {is_listed}"));
        }
        match &resolved {
            None if attempts.iter().any(|a| a.acked) => {
                failures.push(format!("{when}: {name}:{tag} was acknowledged but does not resolve"))
            }
            Some(digest) if !attempts.iter().any(|a| a.digest == *digest) => {
                failures.push(format!("{when}: {name}:{tag} resolves to {digest}, never pushed for it"))
            }
            _ => {}
        }
        if let Some(last) = attempts.iter().filter(|a| a.acked).max_by_key(|a| a.start)
            && attempts.iter().all(|a| std::ptr::eq(*a, *last) || a.end < last.start)
            && resolved.as_deref() != Some(last.digest.as_str())
        {
            failures.push(format!(
                "{when}: {name}:{tag}: the last push ({}) was acknowledged after every other, but it resolves to {resolved:?}",
                last.digest
            ));
        }
    }
    // Held sessions: resume (GET 204 whose Range is at least what was acknowledged; a PATCH
    // from the Location taken) or are unknown.
    let mut still_held = Vec::new();
    for held in std::mem::take(&mut model.held) {
        let status = match answer(reg.http.get(reg.at(&held.location))).await {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{when}: {}: GET session: {e}", held.who));
                continue;
            }
        };
        if status.is(404, "BLOB_UPLOAD_UNKNOWN") {
            // Only a finish the kill cut may have completed (and closed the session); a session
            // cut in a chunk, or left open, must resume.
            if !held.in_finish {
                failures.push(format!(
                    "{when}: {}: a session not being finished is unknown after the restart ({} of {} bytes acknowledged)",
                    held.who,
                    held.offset,
                    held.content.len()
                ));
            }
            continue;
        }
        if status.status != 204 {
            failures.push(format!("{when}: {}: GET of a held session answers {}", held.who, status.describe()));
            continue;
        }
        let Some(received) = status.header("range").and_then(|r| range_len(&r)) else {
            failures.push(format!("{when}: {}: session Range {:?}", held.who, status.header("range")));
            continue;
        };
        if received < held.offset || received > held.content.len() {
            failures.push(format!(
                "{when}: {}: the session holds {received} bytes, {} were acknowledged of {}",
                held.who,
                held.offset,
                held.content.len()
            ));
            continue;
        }
        // The client's own Location while nothing more landed; the status' when a chunk in
        // flight at the kill was taken.
        let location =
            if received == held.offset { held.location.clone() } else { status.header("location").unwrap_or_default() };
        let len = (held.content.len() - received).min(rng.between(2, 100_000)).max(1);
        if received + len > held.content.len() {
            // Everything is there already: finish with an empty PUT.
            let digest = sha(&held.content);
            match answer(reg.http.put(reg.at(&with_digest(&location, &digest))).body(Vec::new())).await {
                Ok(a) if a.status == 201 => {
                    model.blobs.insert((held.repo, digest), held.content.clone());
                }
                Ok(a) => {
                    failures.push(format!("{when}: {}: finishing a complete held session: {}", held.who, a.describe()))
                }
                Err(e) => failures.push(format!("{when}: {}: {e}", held.who)),
            }
            continue;
        }
        let request = reg
            .http
            .patch(reg.at(&location))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{received}-{}", received + len - 1))
            .body(held.content[received..received + len].to_vec());
        let patched = match answer(request).await {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{when}: {}: PATCH of a held session: {e}", held.who));
                continue;
            }
        };
        if patched.status != 202 {
            failures.push(format!(
                "{when}: {}: PATCH {received}+{len} from {location} answers {} (the session is stuck)",
                held.who,
                patched.describe()
            ));
            continue;
        }
        let location = patched.header("location").unwrap_or_default();
        let offset = received + len;
        if rng.chance(50) {
            // Held again, across the next kill.
            still_held.push(CrashHeld { location, offset, in_finish: false, ..held });
            continue;
        }
        let digest = sha(&held.content);
        let request = reg.http.put(reg.at(&with_digest(&location, &digest))).body(held.content[offset..].to_vec());
        match answer(request).await {
            Ok(a) if a.status == 201 => {
                let url = reg.at(&format!("/v2/{}/blobs/{digest}", CRASH_REPOS[held.repo]));
                match answer(reg.http.get(url)).await {
                    Ok(a) if a.status == 200 && a.body == *held.content => {
                        model.blobs.insert((held.repo, digest), held.content.clone());
                    }
                    Ok(a) => failures.push(format!("{when}: {}: the resumed blob reads back {}", held.who, a.short())),
                    Err(e) => failures.push(format!("{when}: {}: {e}", held.who)),
                }
            }
            Ok(a) => failures.push(format!("{when}: {}: finishing a resumed session: {}", held.who, a.describe())),
            Err(e) => failures.push(format!("{when}: {}: {e}", held.who)),
        }
    }
    model.held = still_held;
    model.failures.extend(failures);
}

/// What the reclaimer has not removed yet (empty when nothing is left).
fn leftovers(data: &Path, backend: Backend) -> Vec<String> {
    let keys_values = |prefix: &str| kv_values(data, prefix);
    let mut owned = HashSet::new();
    for (key, value) in keys_values("blob/") {
        if value.is_empty() {
            continue; // removed by garbage collection
        }
        let record: serde_json::Value =
            serde_json::from_slice(&value).unwrap_or_else(|e| panic!("blob record {key}: {e}"));
        if record["removed"].is_number() {
            continue; // removed, its cleanup cut by a kill: the parts are no longer owned
        }
        for part in record["parts"].as_array().into_iter().flatten() {
            owned.insert(part["name"].as_str().unwrap_or_default().to_owned());
        }
    }
    let mut left = Vec::new();
    match backend {
        Backend::Fs => {
            let root = data.join("blobs");
            if let Ok(entries) = std::fs::read_dir(root.join(".tmp")) {
                left.extend(entries.flatten().map(|e| format!("temp file {}", e.path().display())));
            }
            left.extend(
                stored_objects(data, "index/uploads")
                    .into_iter()
                    .map(|p| format!("session index entry {}", p.display())),
            );
            for object in stored_objects(data, "uploads") {
                // Object `a/b` is the file `a/b~` (runner/src/store/blob_fs.rs).
                let file = object.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                let name = file.strip_suffix('~').unwrap_or(&file).to_owned();
                if !owned.contains(&name) {
                    left.push(format!("orphan object {name}"));
                }
            }
        }
        Backend::Kv => {
            left.extend(
                keys_values("blob-kv/obj/index/uploads/").into_iter().map(|(k, _)| format!("session index entry {k}")),
            );
            let mut writes = HashSet::new();
            for (key, value) in keys_values("blob-kv/obj/").into_iter().chain(keys_values("blob-kv/long/")) {
                let record: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
                if let Some(write) = record["write"].as_str() {
                    writes.insert(write.to_owned());
                }
                let name = match key.strip_prefix("blob-kv/obj/") {
                    Some(name) => name.to_owned(),
                    None => record["name"].as_str().unwrap_or_default().to_owned(),
                };
                if name.starts_with("uploads/") && !owned.contains(&name) {
                    left.push(format!("orphan object {name}"));
                }
            }
            let names: HashSet<String> = keys_values("blob-kv/obj/")
                .into_iter()
                .map(|(k, _)| k["blob-kv/obj/".len()..].to_owned())
                .chain(keys_values("blob-kv/long/").into_iter().filter_map(|(_, v)| {
                    let record: serde_json::Value = serde_json::from_slice(&v).ok()?;
                    record["name"].as_str().map(str::to_owned)
                }))
                .map(|name| format!("blob-kv/claim/{}", &sha(name.as_bytes())["sha256:".len()..]))
                .collect();
            // The provider's own leftovers of a kill: chunks of a write that never committed, the
            // claim of a name whose write or delete died half-way, and the markers by which its
            // reclaimer finds them (every one is past its grace by now, so none may be left).
            for (key, _) in keys_values("blob-kv/claim/") {
                if !names.contains(&key) {
                    left.push(format!("claim without an object {key}"));
                }
            }
            for (key, _) in keys_values("blob-kv/chunk/") {
                let write = key["blob-kv/chunk/".len()..].split('/').next().unwrap_or_default();
                if !writes.contains(write) {
                    left.push(format!("orphan chunk {key}"));
                }
            }
            left.extend(kv_index_entries(data, "blob-kv/ix/writes/").into_iter().map(|m| format!("write marker {m}")));
        }
    }
    left
}

/// Empty directories under `<data>/blobs/uploads` (reported, not failed).
fn empty_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut any = false;
    for entry in entries.flatten() {
        any = true;
        if entry.path().is_dir() {
            empty_dirs(&entry.path(), out);
        }
    }
    if !any {
        out.push(dir.to_owned());
    }
}

async fn crash(backend: Backend, rounds: usize, collect: bool) {
    let seed = torture_seed();
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let model = Arc::new(Mutex::new(CrashModel { collect, ..Default::default() }));
    let mut rng = Rng::new(seed, 1000);
    let shared: Arc<Vec<Arc<Vec<u8>>>> = Arc::new(
        (0..4).map(|i| Arc::new(PseudoRandom::bytes(9000 + i, [3000, 90_000, 300_000, 17][i as usize]))).collect(),
    );
    let start = |extra: &[(&str, &str)]| {
        let mut args = backend.args();
        if collect {
            args.extend(vars(&[("gc_grace_seconds", "2")]));
        }
        args.extend(vars(extra));
        Runner::start_with(data.path(), RunnerOptions { args, ..Default::default() })
    };
    let mut rounds_log = Vec::new();
    // One clock for every round: tag pushes of different rounds are compared.
    let t0 = Instant::now();
    for round in 0..rounds {
        let runner = start(&[]);
        let reg = Registry::new(&runner);
        {
            let mut m = std::mem::take(&mut *model.lock().unwrap());
            check_after_restart(&reg, &mut m, &mut rng, &format!("start of round {round}")).await;
            *model.lock().unwrap() = m;
        }
        let killed = Arc::new(AtomicBool::new(false));
        let clients = rng.between(4, 6);
        let delay = Duration::from_millis(if collect { rng.between(300, 1500) } else { rng.between(50, 800) } as u64);
        let before = model.lock().unwrap().pushes;
        // A collector stepping all along, from where the last one left off (the cursor is kept).
        let collector = collect.then(|| {
            let (url, killed, model) = (runner.url.clone(), killed.clone(), model.clone());
            let http = Http::new(runner.login);
            tokio::spawn(async move {
                loop {
                    match answer(http.post(format!("{url}/v2/_berth/gc"))).await {
                        Ok(a) if a.status == 200 => {
                            let step: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                            let mut model = model.lock().unwrap();
                            model.gc_steps += 1;
                            model.gc_collected += step["collected"].as_array().map_or(0, Vec::len);
                        }
                        Ok(a) => {
                            model.lock().unwrap().failures.push(format!("gc step: {}", a.describe()));
                            return;
                        }
                        Err(e) => {
                            if !killed.load(Ordering::SeqCst) {
                                model.lock().unwrap().failures.push(format!("gc step: {e} (before the kill)"));
                            }
                            return;
                        }
                    }
                }
            })
        });
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let client = CrashClient {
                    who: format!("round {round} client {c}"),
                    rng: Rng::new(seed, (round * 100 + c) as u64),
                    reg: Registry { url: runner.url.clone(), http: Http::new(runner.login) },
                    model: model.clone(),
                    killed: killed.clone(),
                    t0,
                    round,
                    shared: shared.clone(),
                    own_manifests: Vec::new(),
                    own_tags: Vec::new(),
                };
                tokio::spawn(tokio::time::timeout(Duration::from_secs(60), client.run()))
            })
            .collect();
        // The random point of the kill is the point of this test.
        tokio::time::sleep(delay).await;
        killed.store(true, Ordering::SeqCst);
        kill9(runner);
        for task in join_all(tasks).await {
            if !matches!(task, Ok(Ok(()))) {
                model.lock().unwrap().failures.push(format!("round {round}: a client did not stop after the kill"));
            }
        }
        if let Some(collector) = collector {
            collector.await.unwrap();
        }
        let m = model.lock().unwrap();
        rounds_log.push(format!(
            "round {round}: {clients} clients, killed after {delay:?}, {} pushes acknowledged, {} sessions held",
            m.pushes - before,
            m.held.len()
        ));
    }
    // The last restart: everything is there and every held session resumes or is unknown.
    {
        let runner = start(&[]);
        let reg = Registry::new(&runner);
        let mut m = std::mem::take(&mut *model.lock().unwrap());
        check_after_restart(&reg, &mut m, &mut rng, "after the last kill").await;
        if collect {
            // A whole pass with nothing else going on: the marks and removals the kills cut are
            // finished (or left for later), and what the model holds is all still there.
            let mut cursor = String::new();
            loop {
                let a = answer(reg.http.post(format!("{}/v2/_berth/gc?cursor={cursor}", runner.url))).await;
                let step: serde_json::Value = match a {
                    Ok(a) if a.status == 200 => serde_json::from_slice(&a.body).unwrap_or_default(),
                    other => {
                        m.failures.push(format!("last gc pass: {:?}", other.map(|a| a.describe())));
                        break;
                    }
                };
                m.gc_collected += step["collected"].as_array().map_or(0, Vec::len);
                match step["next"].as_str() {
                    Some(next) => cursor = next.to_owned(),
                    None => break,
                }
            }
            check_after_restart(&reg, &mut m, &mut rng, "after a last collection").await;
            println!(
                "collection: {} steps during the rounds, {} blobs collected, {} deletes acknowledged",
                m.gc_steps, m.gc_collected, m.deletes
            );
            if m.gc_steps == 0 || m.gc_collected == 0 || m.deletes == 0 {
                m.failures.push(format!(
                    "the collector did not race the clients: {} steps, {} blobs collected, {} deletes",
                    m.gc_steps, m.gc_collected, m.deletes
                ));
            }
        }
        *model.lock().unwrap() = m;
        runner.stop();
    }
    // Reclamation: with a 2 s expiry (and grace), the sweep (one step per upload POST) must
    // leave nothing behind that no blob record owns.
    let runner = start(&[("upload_expiry_seconds", "2"), ("blob_kv_write_grace_seconds", "2")]);
    let reg = Registry::new(&runner);
    let reclaim_start = Instant::now();
    let deadline = reclaim_start + Duration::from_secs(45);
    let mut left;
    let mut sweeps = 0;
    let left_at_start = leftovers(data.path(), backend).len();
    loop {
        left = leftovers(data.path(), backend);
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        match answer(reg.http.post(reg.at("/v2/sweep/blobs/uploads/"))).await {
            Ok(a) if a.status == 202 => {
                sweeps += 1;
                // The sweeper's own session goes at once.
                if let Some(location) = a.header("location")
                    && let Ok(d) = answer(reg.http.delete(reg.at(&location))).await
                    && d.status != 204
                {
                    model.lock().unwrap().failures.push(format!("sweep: DELETE of its session: {}", d.describe()));
                }
            }
            Ok(a) => {
                model.lock().unwrap().failures.push(format!("sweep: POST answers {}", a.describe()));
                break;
            }
            Err(e) => {
                model.lock().unwrap().failures.push(format!("sweep: POST: {e}"));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reclaimed_in = reclaim_start.elapsed();
    let mut dirs = Vec::new();
    if backend == Backend::Fs {
        for entry in std::fs::read_dir(data.path().join("blobs/uploads")).into_iter().flatten().flatten() {
            empty_dirs(&entry.path(), &mut dirs);
        }
    }
    // Nothing acknowledged went with the reclaimed objects.
    let mut m = std::mem::take(&mut *model.lock().unwrap());
    let open_sessions = m.held.len();
    // The sessions left open have expired: unknown now.
    for held in std::mem::take(&mut m.held) {
        match answer(reg.http.get(reg.at(&held.location))).await {
            Ok(a) if a.is(404, "BLOB_UPLOAD_UNKNOWN") => {}
            Ok(a) => {
                m.failures.push(format!("{}: a session untouched past its expiry answers {}", held.who, a.describe()))
            }
            Err(e) => m.failures.push(format!("{}: GET of an expired session: {e}", held.who)),
        }
    }
    check_after_restart(&reg, &mut m, &mut rng, "after reclamation").await;
    for line in &rounds_log {
        println!("{line}");
    }
    println!(
        "crash seed {seed} ({backend:?}): {} blobs and {} manifests acknowledged in {rounds} rounds; {open_sessions} sessions \
         left open expired; {left_at_start} things to reclaim, reclaimed in {reclaimed_in:?} ({sweeps} sweep steps); {} empty directories left under \
         blobs/uploads; whole test {:?}",
        m.blobs.len(),
        m.manifests.len(),
        dirs.len(),
        started.elapsed()
    );
    if !dirs.is_empty() {
        println!("empty directories under blobs/uploads (not reclaimed): {dirs:?}");
    }
    if left_at_start == 0 {
        // Abandoned sessions and kills in chunks always leave some: a reclaim phase that found
        // nothing did not look where they are.
        m.failures.push("the reclaim phase found nothing to reclaim".to_owned());
    }
    if !left.is_empty() {
        let shown: Vec<&String> = left.iter().take(30).collect();
        m.failures.push(format!(
            "after {reclaimed_in:?} and {sweeps} sweep steps, {} things are left: {shown:#?}",
            left.len()
        ));
    }
    if !m.failures.is_empty() {
        let log = runner.log();
        println!("---- runner log (last 40 lines):");
        for line in &log[log.len().saturating_sub(40)..] {
            println!("{line}");
        }
        panic!("{} failures (replay: BERTH_TORTURE_SEED={seed}):\n{}", m.failures.len(), m.failures.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_at_random_points_loses_nothing_acknowledged() {
    crash(Backend::Fs, 6, false).await;
}

/// The same with manifest and tag deletes in the workload and a garbage collector stepping all
/// along (grace 2 s), killed with the rest: nothing a live manifest references is lost, nothing
/// deleted comes back, and a last pass after the kills finds everything still whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_at_random_points_while_collecting_garbage_loses_nothing_acknowledged() {
    crash(Backend::Fs, 8, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_at_random_points_while_collecting_garbage_loses_nothing_on_the_key_value_provider() {
    crash(Backend::Kv, 8, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_at_random_points_loses_nothing_acknowledged_on_the_key_value_provider() {
    crash(Backend::Kv, 6, false).await;
}
