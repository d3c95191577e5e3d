//! HTTP-level fuzzing (issue 12): thousands of mutated requests against a running registry that
//! holds a known image. Methods (real and junk), paths built from the API's shapes with bad
//! names, huge counts, percent-encoding, `..`, Unicode, very long segments and control
//! characters, junk headers (`Content-Type`, `Content-Range`, `Range`, `Accept`,
//! `Authorization`, ...), and bodies (random bytes, manifests cut short or lying about sizes and
//! digests); about a third go over raw TCP with broken framing: a `Content-Length` longer or
//! shorter than the body, chunked bodies cut off or malformed, both framings at once, junk.
//!
//! The rules: no answer is a 5xx (neither one the client reads nor one in the runner's request
//! log, which also shows the answers to requests whose connection broke), the runner never dies,
//! and afterwards the known image pulls byte for byte.
//!
//! Seeded: the seed is printed first (`fuzz seed: N`); `BERTH_FUZZ_SEED=N` replays the same
//! requests (request i depends only on the seed and i, not on the interleaving), and
//! `BERTH_FUZZ_REQUESTS=N` sends N instead of 3000. A failing request is printed whole enough
//! to be sent again (method, target, headers, framing, body prefix).

mod common;

use common::rng::Rng;
use common::*;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The repository the fuzzer may change (it holds a copy of the image, so requests hit data).
const TARGET: &str = "fuzz/app";
/// The known image: the fuzzer only reads it (GET and HEAD), so it must survive unchanged.
const KNOWN: &str = "fuzz/known";
const DEFAULT_REQUESTS: usize = 3000;
const CONCURRENCY: usize = 8;
/// How long a raw connection may stay silent before the fuzzer gives up on its answer.
const RAW_READ_TIMEOUT: Duration = Duration::from_secs(30);

const OCI_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

// ---- seeds and randomness ------------------------------------------------------------------

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not an unsigned integer")))
}

/// `BERTH_FUZZ_SEED`, or one from the clock; printed first so that any run can be replayed.
fn fuzz_seed() -> u64 {
    let seed = env_number("BERTH_FUZZ_SEED")
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    println!("fuzz seed: {seed} (replay: BERTH_FUZZ_SEED={seed})");
    seed
}

/// What these tests draw beyond the generator's basics (tests/common/rng.rs).
impl Rng {
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// `len` characters of `alphabet`.
    fn text(&mut self, alphabet: &str, len: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        (0..len).map(|_| chars[self.below(chars.len())]).collect()
    }

    /// `min` to `min + spread - 1` characters of `alphabet`.
    fn text_of(&mut self, alphabet: &str, min: usize, spread: usize) -> String {
        let len = min + self.below(spread);
        self.text(alphabet, len)
    }

    fn bytes_of(&mut self, min: usize, spread: usize) -> Vec<u8> {
        let len = min + self.below(spread);
        self.bytes(len)
    }

    /// Up to `max` bytes for a header value: mostly what a field value may hold (visible ASCII,
    /// space, tab, obs-text), so the request reaches the registry; sometimes anything (a CR or LF
    /// is sent as a space, see [`raw_bytes`]).
    fn field_value(&mut self, max: usize) -> Vec<u8> {
        let mut value = self.bytes_of(0, max);
        if self.chance(85) {
            for b in &mut value {
                if (*b < 0x20 && *b != b'\t') || *b == 0x7f {
                    *b = b' ' + *b % 0x5f;
                }
            }
        }
        value
    }

    fn hex(&mut self, len: usize) -> String {
        self.text("0123456789abcdef", len)
    }
}

// ---- what the fuzzer knows about the registry ------------------------------------------------

struct World {
    manifest: Vec<u8>,
    manifest_digest: String,
    /// (digest, size) of the config and the layer.
    blobs: Vec<(String, u64)>,
    /// Open upload sessions of TARGET (ids).
    uploads: Vec<String>,
}

impl World {
    fn digest(&self, rng: &mut Rng) -> String {
        match rng.below(10) {
            0..=2 => self.blobs[rng.below(self.blobs.len())].0.clone(),
            3 => self.manifest_digest.clone(),
            4 => format!("sha256:{}", rng.hex(64)),
            5 => format!("sha512:{}", rng.hex(128)),
            _ => mutated_digest(rng, &self.manifest_digest),
        }
    }

    fn reference(&self, rng: &mut Rng) -> String {
        match rng.below(8) {
            0..=2 => "v1".into(),
            3 => self.digest(rng),
            4 => rng.text_of("abcXYZ019._-", 1, 20),
            5 => rng.text("abc", 129),
            _ => rng.pick(&["-x", ".x", "a:b", "a%2Fb", "sha256:", ":", "latest/x", "%00", "v1%0a", "é"]).into(),
        }
    }
}

fn mutated_digest(rng: &mut Rng, digest: &str) -> String {
    let hex = &digest["sha256:".len()..];
    match rng.below(9) {
        0 => format!("sha256:{}", &hex[..63]),
        1 => format!("{digest}0"),
        2 => digest.to_uppercase(),
        3 => format!("sha384:{}", rng.hex(96)),
        4 => format!("md5:{}", rng.hex(32)),
        5 => format!("sha256:{}zz", &hex[..62]),
        6 => "sha256:".into(),
        7 => format!("sha256%3A{hex}"),
        _ => format!("sha256:{}", rng.text_of("0123456789abcdef", 0, 200)),
    }
}

// ---- one mutated request ----------------------------------------------------------------------

/// How the request goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// reqwest, correct framing.
    Client,
    /// Raw TCP, a correct `Content-Length`.
    Exact,
    /// Raw TCP, `Content-Length` larger than the body by this much, then the write side closed.
    Longer(u64),
    /// Raw TCP, `Content-Length` this much smaller than the body (the rest is garbage after it).
    Shorter(usize),
    /// Raw TCP, chunked, cut off inside a chunk, then the write side closed.
    ChunkedCut,
    /// Raw TCP, chunked, then a chunk size that is not hex (connection left open).
    ChunkedJunk,
    /// Raw TCP, both `Content-Length` and `Transfer-Encoding: chunked`.
    Both,
    /// Raw TCP, two different `Content-Length` headers.
    TwoLengths,
    /// Raw TCP, random bytes after a plausible request line.
    Junk,
    /// Raw TCP, the HTTP/2 connection preface (plain-text HTTP/2), then frames made of the body.
    H2Junk,
}

struct Fuzzed {
    index: usize,
    method: String,
    /// Path and query, exactly as sent.
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    framing: Framing,
}

impl std::fmt::Display for Fuzzed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |b: &[u8], n: usize| format!("{:?}", String::from_utf8_lossy(&b[..b.len().min(n)]));
        write!(
            f,
            "request #{} {} {} framing {:?}",
            self.index,
            shown(self.method.as_bytes(), 120),
            shown(self.target.as_bytes(), 300),
            self.framing
        )?;
        for (name, value) in &self.headers {
            write!(f, "\n    {name}: {}", shown(value, 200))?;
        }
        write!(f, "\n    body ({} bytes): {}", self.body.len(), shown(&self.body, 200))
    }
}

/// Request `index` of the run: a function of the seed and the index only.
fn fuzzed(seed: u64, index: usize, world: &World) -> Fuzzed {
    let mut rng = Rng::new(seed, index as u64);
    // Each shape with the methods it serves: most requests use one of them, so they get past
    // the router into the handlers; the rest any method, junk ones included.
    let shapes: [(&str, &[&str]); 11] = [
        ("base", &["GET", "HEAD"]),
        ("catalog", &["GET"]),
        ("tags", &["GET"]),
        ("manifest", &["GET", "HEAD", "PUT", "DELETE"]),
        ("blob", &["GET", "HEAD", "DELETE"]),
        ("start", &["POST"]),
        ("upload", &["PATCH", "PUT", "GET", "DELETE"]),
        ("upload", &["PATCH", "PUT"]),
        ("referrers", &["GET"]),
        ("token", &["GET", "POST"]),
        ("other", &["GET"]),
    ];
    let (shape, methods) = shapes[rng.below(shapes.len())];
    let method = if rng.chance(75) {
        methods[rng.below(methods.len())].to_owned()
    } else {
        let junk = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE", "FUZZ", "get", "PROPFIND"];
        match rng.below(12) {
            0 => "A".repeat(1 + rng.below(300)),
            1 => rng.text_of("GETPOST-_!#$%&'*+.^`|~", 1, 10),
            _ => rng.pick(&junk).to_owned(),
        }
    };
    // Only reads may address the known image; everything else goes to TARGET (or a bad name).
    let reads = matches!(method.as_str(), "GET" | "HEAD");
    let name = repository_name(&mut rng, reads);
    let query = query(&mut rng, world);
    let path = match shape {
        "base" => rng.pick(&["/v2/", "/v2", "/v2//", "/v2/?"]).to_owned(),
        "catalog" => "/v2/_catalog".to_owned(),
        "tags" => format!("/v2/{name}/tags/list"),
        "manifest" => format!("/v2/{name}/manifests/{}", world.reference(&mut rng)),
        "blob" => format!("/v2/{name}/blobs/{}", world.digest(&mut rng)),
        "start" => format!("/v2/{name}/blobs/uploads/"),
        "upload" => {
            let id = match rng.below(6) {
                0..=3 => world.uploads[rng.below(world.uploads.len())].clone(),
                4 => rng.hex(32),
                _ => rng.pick(&["", "x", "..", "%2e%2e", "00000000000000000000000000000000/x"]).to_owned(),
            };
            format!("/v2/{name}/blobs/uploads/{id}")
        }
        "referrers" => format!("/v2/{name}/referrers/{}", world.digest(&mut rng)),
        "token" => rng.pick(&["/token", "/v2/token"]).to_owned(),
        _ => other_path(&mut rng),
    };
    let target = if query.is_empty() { path } else { format!("{path}?{query}") };
    let headers = headers(&mut rng, world);
    let body = body(&mut rng, world);
    let framing = match rng.below(100) {
        0..=64 => Framing::Client,
        65..=72 => Framing::Exact,
        73..=79 => Framing::Longer(match rng.below(3) {
            0 => 1 + rng.below(10) as u64,
            1 => 1 + rng.below(10_000_000) as u64,
            _ => u64::MAX / 2,
        }),
        80..=84 => Framing::Shorter(1 + rng.below(body.len().max(1))),
        85..=89 => Framing::ChunkedCut,
        90..=93 => Framing::ChunkedJunk,
        94..=95 => Framing::Both,
        96..=97 => Framing::TwoLengths,
        98 => Framing::Junk,
        _ => Framing::H2Junk,
    };
    Fuzzed { index, method, target, headers, body, framing }
}

fn repository_name(rng: &mut Rng, reads: bool) -> String {
    match rng.below(20) {
        0..=10 => TARGET.to_owned(),
        11 | 12 if reads => KNOWN.to_owned(),
        11 | 12 => TARGET.to_owned(),
        13 => rng.pick(&["a", "fuzz/other", "x/y/z/w", "a.b_c__d-e---f", "blobs", "fuzz/app/manifests/v1"]).to_owned(),
        14 => format!("{}/{}", "a".repeat(127), "b".repeat(127)),
        15 => rng
            .pick(&[
                "FUZZ/APP",
                "fuzz//app",
                "fuzz/../app",
                "fuzz/./app",
                "..",
                "%2e%2e",
                "fuzz%2fapp",
                "fuzz/app%00",
                "fuzz/ápp",
                "fuzz/%C3%A1pp",
                "-a",
                "a-",
                "a..b",
                "a___b",
                "_catalog",
                "fuzz/app/",
                "/fuzz/app",
                "fuzz/app%0d%0a",
                "fuzz/app%7f",
                "😀",
                "fuzz\\app",
                "fuzz/app;x=y",
            ])
            .to_owned(),
        16 => "a".repeat(256),
        17 => "a/".repeat(2500) + "a",
        _ => rng.text_of("abcXYZ019._-/%:é", 1, 40),
    }
}

fn other_path(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => rng
            .pick(&["/", "/v1/", "/v3/a/tags/list", "/v2/_catalog/x", "/token/x", "//v2/", "/v2/../v2/", "/%76%32/"])
            .to_owned(),
        1 => format!("/v2/{}", rng.text_of("abc/._-:%0123456789", 1, 60)),
        2 => format!(
            "/v2/{}/{}",
            "x".repeat(1 + rng.below(10_000)),
            rng.pick(&["tags/list", "manifests/v1", "blobs/uploads/"])
        ),
        _ => format!("/{}", rng.text_of("abcdefghijklmnopqrstuvwxyz/%.-_~", 0, 100)),
    }
}

fn query(rng: &mut Rng, world: &World) -> String {
    let mut pairs = Vec::new();
    for _ in 0..rng.below(4) {
        let key = rng.pick(&[
            "n",
            "last",
            "digest",
            "mount",
            "from",
            "_v",
            "artifactType",
            "tag",
            "scope",
            "service",
            "offline_token",
            "grant_type",
            "x",
            "",
        ]);
        let value = match rng.below(9) {
            0 => rng
                .pick(&["0", "1", "2", "-1", "100000000000", "18446744073709551615", "18446744073709551616", "1e3", ""])
                .to_owned(),
            1 | 2 => world.digest(rng),
            3 => rng.pick(&[TARGET, KNOWN, "a", "..", "UPPER", "fuzz/app/../known"]).to_owned(),
            4 => format!(
                "repository:{}:{}",
                rng.pick(&[TARGET, KNOWN, "x", ""]),
                rng.pick(&["pull", "push,pull", "*", "delete", ""])
            ),
            5 => rng.pick(&["%zz", "%", "%%", "&&", "==", "%00", "%0a", "+", "%ff%fe", "a%20b"]).to_owned(),
            6 => rng.pick(&["berth", "other", "true", "password", "refresh_token", "v1", "latest"]).to_owned(),
            7 => "x".repeat(rng.below(5000)),
            _ => rng.text_of("abc019:/,*", 0, 30),
        };
        pairs.push(if key.is_empty() { value } else { format!("{key}={value}") });
    }
    pairs.join(if rng.chance(90) { "&" } else { ";" })
}

fn headers(rng: &mut Rng, world: &World) -> Vec<(String, Vec<u8>)> {
    let mut headers = Vec::new();
    for _ in 0..rng.below(5) {
        let (name, value): (&str, Vec<u8>) = match rng.below(10) {
            0 | 1 => (
                "content-type",
                match rng.below(8) {
                    0 => OCI_MANIFEST_TYPE.into(),
                    1 => OCI_INDEX_TYPE.into(),
                    2 => DOCKER_MANIFEST.into(),
                    3 => format!("{OCI_MANIFEST_TYPE}; charset=utf-8").into(),
                    4 => rng
                        .pick(&["application/json", "application/octet-stream", "text/plain", "", ";", "a/b; c"])
                        .into(),
                    5 => "x".repeat(10_000).into(),
                    _ => rng.field_value(40),
                },
            ),
            2 | 3 => (
                "content-range",
                match rng.below(6) {
                    0 => format!("0-{}", rng.below(2000)).into(),
                    1 => format!("bytes {}-{}/*", rng.below(100), rng.below(100)).into(),
                    2 => rng
                        .pick(&[
                            "0-18446744073709551615",
                            "18446744073709551615-18446744073709551615",
                            "5-1",
                            "-",
                            "-5",
                            "0-",
                            "bytes=0-",
                            "abc",
                            "0-0",
                            "1-0/0",
                        ])
                        .into(),
                    3 => format!("{}-{}", rng.next(), rng.next()).into(),
                    _ => rng.field_value(30),
                },
            ),
            4 => (
                "range",
                match rng.below(4) {
                    0 => format!("bytes={}-{}", rng.below(2000), rng.below(2000)).into(),
                    1 => rng
                        .pick(&[
                            "bytes=-1",
                            "bytes=5-",
                            "bytes=0-18446744073709551615",
                            "bytes=18446744073709551615-",
                            "bytes=0-1,2-3",
                            "bytes=x-y",
                            "items=0-1",
                            "bytes=-0",
                            "bytes=-18446744073709551616",
                            "bytes=",
                            "bytes=-",
                        ])
                        .into(),
                    2 => format!("bytes=-{}", rng.next()).into(),
                    _ => rng.field_value(30),
                },
            ),
            5 => (
                "accept",
                rng.pick(&[
                    OCI_MANIFEST_TYPE,
                    OCI_INDEX_TYPE,
                    "*/*",
                    "",
                    "text/html",
                    "application/vnd.oci.image.manifest.v1+json;q=0",
                ])
                .into(),
            ),
            6 => (
                "authorization",
                match rng.below(5) {
                    0 => format!(
                        "Basic {}",
                        rng.text_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", 0, 60)
                    )
                    .into(),
                    1 => format!(
                        "Bearer {}.{}.{}",
                        rng.text("abcXYZ012_-", 20),
                        rng.text("abcXYZ012_-", 60),
                        rng.text("abcXYZ012_-", 43)
                    )
                    .into(),
                    2 => rng
                        .pick(&["Basic", "Bearer", "Basic !!!", "Bearer ", "Digest x", "", "Basic YWRtaW46c2VjcmV0"])
                        .into(),
                    3 => format!("Bearer {}", "a".repeat(20_000)).into(),
                    _ => rng.field_value(40),
                },
            ),
            7 => (
                rng.pick(&["x-forwarded-host", "x-forwarded-proto", "host"]),
                match rng.below(3) {
                    0 => rng.pick(&["evil\"host", "a,b", "https", "gopher", "", "[::1]:99999", "localhost:0"]).into(),
                    1 => "h".repeat(rng.below(3000)).into(),
                    _ => rng.field_value(30),
                },
            ),
            8 => (
                // (The framing headers come from the framing, below.)
                rng.pick(&["expect", "content-encoding", "te"]),
                rng.pick(&["100-continue", "gzip", "identity", "br", "trailers", ""]).into(),
            ),
            9 if rng.chance(30) => (rng.pick(&["docker-content-digest", "oci-subject"]), world.digest(rng).into()),
            _ => ("x-fuzz", rng.field_value(100)),
        };
        headers.push((name.to_owned(), value));
    }
    headers
}

fn body(rng: &mut Rng, world: &World) -> Vec<u8> {
    let manifest = || String::from_utf8(world.manifest.clone()).unwrap();
    match rng.below(20) {
        0..=4 => Vec::new(),
        5..=7 => {
            let len = if rng.chance(90) { rng.below(4096) } else { rng.below(200_000) };
            rng.bytes(len)
        }
        8 | 9 => world.manifest.clone(),
        10 | 11 => world.manifest[..rng.below(world.manifest.len())].to_vec(),
        // Lying sizes: the same blobs, other sizes (the registry does not check them against the
        // blobs, but must not trip over them either).
        12 => {
            let size = rng.pick(&["0", "-1", "9223372036854775807", "9223372036854775808", "1e400", "\"12\"", "null", "1.5"]);
            let (d, s) = &world.blobs[rng.below(world.blobs.len())];
            manifest().replace(&format!("\"digest\":\"{d}\",\"size\":{s}"), &format!("\"digest\":\"{d}\",\"size\":{size}")).into_bytes()
        }
        // Lying digests: blobs the registry does not have, or digests it cannot verify.
        13 => {
            let (d, _) = &world.blobs[rng.below(world.blobs.len())];
            let other = if rng.chance(50) { format!("sha256:{}", rng.hex(64)) } else { mutated_digest(rng, d) };
            manifest().replace(d.as_str(), &other).into_bytes()
        }
        // A referrer of the known manifest, valid; or with its subject mangled.
        14 => {
            let subject = if rng.chance(70) { world.manifest_digest.clone() } else { mutated_digest(rng, &world.manifest_digest) };
            let m = manifest();
            format!(
                r#"{},"artifactType":"application/x.fuzz","subject":{{"mediaType":"{OCI_MANIFEST_TYPE}","digest":"{subject}","size":{}}}}}"#,
                &m[..m.len() - 1],
                world.manifest.len()
            )
            .into_bytes()
        }
        15 => format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX_TYPE}","manifests":[{{"mediaType":"{OCI_MANIFEST_TYPE}","digest":"{}","size":{}}}]}}"#,
            world.digest(rng),
            world.manifest.len()
        )
        .into_bytes(),
        16 => rng
            .pick(&[
                "{}", "[]", "null", "{\"schemaVersion\":2}", "{\"schemaVersion\":\"2\"}", "{\"schemaVersion\":2,\"layers\":{}}",
                "{\"schemaVersion\":2,\"config\":[],\"layers\":[]}", "{\"schemaVersion\":2,\"manifests\":null}",
                "\u{feff}{}", "{\"a\":", "grant_type=password&username=admin&password=x&service=berth",
                "grant_type=refresh_token&refresh_token=a.b.c",
            ])
            .as_bytes()
            .to_vec(),
        // Deeply nested JSON.
        17 => format!("{}{}", "[".repeat(10_000), "]".repeat(rng.below(10_000))).into_bytes(),
        // One of the image's own blobs (a monolithic push may then succeed).
        18 => PseudoRandom::bytes(7, 1007),
        // Over the manifest limit.
        _ if rng.chance(30) => vec![b' '; 4 * 1024 * 1024 + 1],
        _ => rng.bytes_of(0, 64),
    }
}

// ---- sending ---------------------------------------------------------------------------------

/// What came back: the statuses seen (a raw connection may carry more than one answer), or why
/// there was none.
#[derive(Debug)]
enum Outcome {
    Answered(Vec<u16>),
    /// The connection closed (or broke) without an answer: fine for broken framing.
    Closed,
    Silent,
    Failed(String),
}

async fn send(client: &reqwest::Client, addr: &str, base: &str, request: &Fuzzed) -> Outcome {
    if request.framing == Framing::Client
        && let Some(outcome) = send_with_client(client, base, request).await
    {
        return outcome;
    }
    let bytes = raw_bytes(addr, request);
    let close_write = matches!(request.framing, Framing::Longer(_) | Framing::ChunkedCut | Framing::H2Junk);
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || send_raw(&addr, &bytes, close_write)).await.unwrap()
}

/// `None` when reqwest cannot express the request (a junk method or target): it goes raw.
async fn send_with_client(client: &reqwest::Client, base: &str, request: &Fuzzed) -> Option<Outcome> {
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).ok().filter(|m| *m != reqwest::Method::CONNECT)?;
    let url = reqwest::Url::parse(&format!("{base}{}", request.target)).ok()?;
    let mut builder = client.request(method, url);
    for (name, value) in &request.headers {
        let (Ok(name), Ok(value)) =
            (reqwest::header::HeaderName::from_bytes(name.as_bytes()), reqwest::header::HeaderValue::from_bytes(value))
        else {
            continue;
        };
        // reqwest frames the body itself; a header of ours would contradict it.
        if name != reqwest::header::CONTENT_LENGTH
            && name != reqwest::header::TRANSFER_ENCODING
            && name != reqwest::header::HOST
        {
            builder = builder.header(name, value);
        }
    }
    let outcome = match builder.body(request.body.clone()).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read the answer whole: a body that breaks off is a failure of its own.
            match response.bytes().await {
                Ok(_) => Outcome::Answered(vec![status]),
                Err(e) => Outcome::Failed(format!("status {status}, then the body broke: {e}")),
            }
        }
        // The registry answered before reading the whole body (a refusal) and closed: the
        // client could not finish sending, so it never read the answer. The runner's log has it.
        Err(e) if format!("{e:?}").contains("BodyWrite") => Outcome::Closed,
        Err(e) => Outcome::Failed(format!("no answer to a well-formed request: {e:?}")),
    };
    Some(outcome)
}

fn raw_bytes(addr: &str, request: &Fuzzed) -> Vec<u8> {
    let mut head = Vec::new();
    head.extend_from_slice(request.method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(request.target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let _ = write!(head, "host: {addr}\r\nconnection: close\r\n");
    for (name, value) in &request.headers {
        if name == "host" {
            continue;
        }
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        // Keep each header on its line: a CR or LF in a value would make it a header of its own.
        head.extend(value.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
        head.extend_from_slice(b"\r\n");
    }
    let body = &request.body;
    let chunked = |body: &[u8]| {
        let mut out = Vec::new();
        for chunk in body.chunks(1000) {
            let _ = write!(out, "{:x}\r\n", chunk.len());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out
    };
    let mut out = head;
    match request.framing {
        Framing::Client | Framing::Exact => {
            let _ = write!(out, "content-length: {}\r\n\r\n", body.len());
            out.extend_from_slice(body);
        }
        Framing::Longer(more) => {
            let _ = write!(out, "content-length: {}\r\n\r\n", (body.len() as u64).saturating_add(more));
            out.extend_from_slice(body);
        }
        Framing::Shorter(less) => {
            let _ = write!(out, "content-length: {}\r\n\r\n", body.len().saturating_sub(less));
            out.extend_from_slice(body);
        }
        Framing::ChunkedCut => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            let mut encoded = chunked(body);
            let _ = write!(encoded, "{:x}\r\n", 10 + body.len() % 1000);
            encoded.extend_from_slice(&body[..body.len().min(5)]);
            out.extend_from_slice(&encoded);
        }
        Framing::ChunkedJunk => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            out.extend_from_slice(&chunked(body));
            out.extend_from_slice(b"zz\r\nnot a chunk\r\n0\r\n\r\n");
        }
        Framing::Both => {
            let _ = write!(out, "content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n", body.len());
            out.extend_from_slice(&chunked(body));
            out.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::TwoLengths => {
            let _ = write!(out, "content-length: {}\r\ncontent-length: {}\r\n\r\n", body.len(), body.len() + 1);
            out.extend_from_slice(body);
        }
        Framing::Junk => {
            out.extend_from_slice(&body[..body.len().min(300)]);
            out.extend_from_slice(b"\r\n\r\n");
        }
        Framing::H2Junk => {
            out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            // A SETTINGS frame, then a HEADERS frame whose block is the body, then the body raw.
            out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            let block = &body[..body.len().min(16_000)];
            out.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&[1, 5, 0, 0, 0, 1]);
            out.extend_from_slice(block);
            out.extend_from_slice(&body[..body.len().min(1000)]);
        }
    }
    out
}

fn send_raw(addr: &str, bytes: &[u8], close_write: bool) -> Outcome {
    let (answer, silent) = match exchange(addr, bytes, close_write) {
        Ok(exchanged) => exchanged,
        Err(e) => return Outcome::Failed(format!("cannot connect: {e}")),
    };
    let statuses = statuses(&answer);
    match (statuses.is_empty(), silent) {
        (false, _) => Outcome::Answered(statuses),
        (true, false) => Outcome::Closed,
        (true, true) => Outcome::Silent,
    }
}

/// Send `bytes` on a new connection (then close its write side if asked) and read until the
/// server closes it: what came back, and whether the server went silent instead.
fn exchange(addr: &str, bytes: &[u8], close_write: bool) -> std::io::Result<(Vec<u8>, bool)> {
    let mut socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(RAW_READ_TIMEOUT))?;
    socket.set_write_timeout(Some(RAW_READ_TIMEOUT))?;
    // The server may answer and close before it has read everything (413, 431): a write error
    // is not a failure, the answer is what counts.
    let _ = socket.write_all(bytes);
    if close_write {
        let _ = socket.shutdown(Shutdown::Write);
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let silent = loop {
        match socket.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break true,
            Err(_) => break false, // reset
        }
    };
    Ok((answer, silent))
}

/// The status of every response head in `answer` (one per line starting `HTTP/1.x NNN `).
fn statuses(answer: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = answer[at..].windows(7).position(|w| w == b"HTTP/1.") {
        let start = at + found;
        at = start + 7;
        let line_start = start == 0 || answer[..start].ends_with(b"\n");
        if let Some(status) = answer.get(start + 9..start + 12).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
            && line_start
        {
            out.push(status);
        }
    }
    out
}

/// Whether the process is running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Request log lines of the runner (`<method> <path> <status> <bytes>B <ms>ms...`) with a 5xx.
fn logged_server_errors(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() >= 5
                && fields[3].ends_with('B')
                && fields[4].ends_with("ms")
                && fields[2].parse::<u16>().is_ok_and(|status| status >= 500)
        })
        .cloned()
        .collect()
}

// ---- the run ---------------------------------------------------------------------------------

async fn push_known_image(registry: &Registry) -> World {
    let (manifest, manifest_digest) = registry.push_image(KNOWN, "v1", 7).await;
    assert_eq!(registry.push_image(TARGET, "v1", 7).await.1, manifest_digest, "the same image in both");
    let json: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let blobs = std::iter::once(&json["config"])
        .chain(json["layers"].as_array().unwrap())
        .map(|d| (d["digest"].as_str().unwrap().to_owned(), d["size"].as_u64().unwrap()))
        .collect();
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let location = registry.start_upload(TARGET).await;
        uploads.push(location.split('?').next().unwrap().rsplit('/').next().unwrap().to_owned());
    }
    World { manifest, manifest_digest, blobs, uploads }
}

/// The known image, pulled by tag and by digest, is byte for byte what was pushed.
async fn assert_known_image_intact(registry: &Registry, world: &World) {
    for reference in ["v1", world.manifest_digest.as_str()] {
        let response = registry.get(&format!("/v2/{KNOWN}/manifests/{reference}")).await;
        assert_eq!(response.status(), 200, "pulling {KNOWN}:{reference}");
        let bytes = response.bytes().await.unwrap();
        assert!(bytes == world.manifest, "the manifest {KNOWN}:{reference} changed");
    }
    for (digest, size) in &world.blobs {
        let response = registry.get(&format!("/v2/{KNOWN}/blobs/{digest}")).await;
        assert_eq!(response.status(), 200, "pulling blob {digest}");
        let bytes = response.bytes().await.unwrap();
        assert_eq!((bytes.len() as u64, sha256(&bytes)), (*size, digest.clone()), "blob {digest} changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutated_requests_never_get_a_server_error_nor_break_the_runner() {
    let seed = fuzz_seed();
    let count = env_number("BERTH_FUZZ_REQUESTS").map_or(DEFAULT_REQUESTS, |n| n as usize);
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let registry = Registry::new(&runner);
    let world = Arc::new(push_known_image(&registry).await);
    assert_known_image_intact(&registry, &world).await;

    let started = Instant::now();
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let tally: Arc<Mutex<std::collections::BTreeMap<String, usize>>> = Arc::default();
    let sent: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let pid = runner.pid();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, next, failures, tally, sent, world) =
                (client.clone(), next.clone(), failures.clone(), tally.clone(), sent.clone(), world.clone());
            let (addr, base) = (runner.addr(), runner.url.clone());
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        return;
                    }
                    let request = fuzzed(seed, index, &world);
                    let path = request.target.split('?').next().unwrap_or_default().to_owned();
                    sent.lock().unwrap().push((request.method.clone(), path, index));
                    let outcome = send(&client, &addr, &base, &request).await;
                    let key = match &outcome {
                        Outcome::Answered(statuses) => format!("{}xx", statuses[0] / 100),
                        other => format!("{other:?}").split('(').next().unwrap().to_owned(),
                    };
                    *tally.lock().unwrap().entry(key).or_default() += 1;
                    let problem = match outcome {
                        Outcome::Answered(statuses) if statuses.iter().any(|&s| s >= 500) => {
                            Some(format!("answered {statuses:?}"))
                        }
                        Outcome::Failed(why) => Some(why),
                        // A well-framed request must be answered; broken framing may be cut off.
                        Outcome::Closed | Outcome::Silent if request.framing == Framing::Exact => {
                            Some("a well-framed request got no answer".to_owned())
                        }
                        _ => None,
                    };
                    if let Some(problem) = problem {
                        failures.lock().unwrap().push(format!("{problem}: {request}"));
                    }
                    if !alive(pid) {
                        failures.lock().unwrap().push(format!("the runner died after {request}"));
                        return;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!("fuzz: {count} requests in {elapsed:.1?}: {:?}", tally.lock().unwrap());

    assert!(alive(pid), "the runner died");
    assert_known_image_intact(&registry, &world).await;
    // Every request has been answered or dropped before the pulls above: once the last pull is
    // in the runner's log, so is every answer before it.
    let last_pull = format!("GET /v2/{KNOWN}/blobs/{} 200 ", world.blobs.last().unwrap().0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !runner.log().iter().any(|line| line.starts_with(&last_pull)) {
        assert!(Instant::now() < deadline, "the runner never logged {last_pull:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = runner.log();
    let mut failures = failures.lock().unwrap().clone();
    for line in logged_server_errors(&log) {
        let mut fields = line.split_whitespace();
        let (method, path) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
        let candidates: Vec<String> = sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == method && p == path)
            .map(|(_, _, i)| fuzzed(seed, *i, &world).to_string())
            .collect();
        failures.push(format!("the runner logged {line:?}; sent as:\n  {}", candidates.join("\n  ")));
    }
    if !failures.is_empty() {
        let mut report = format!("{} failures (seed {seed}; replay: BERTH_FUZZ_SEED={seed}):", failures.len());
        for failure in failures.iter().take(20) {
            let _ = write!(report, "\n- {failure}");
        }
        panic!("{report}");
    }
}

// ---- what the fuzzer found, one rule a test -----------------------------------------------------

/// The ways a request body can break off that the fuzzer found answered with 500: cut inside a
/// chunk (then the write side closed), a chunk size that is not hex, and a `Content-Length`
/// longer than what was sent (then the write side closed).
const BROKEN_BODIES: [Framing; 3] = [Framing::ChunkedCut, Framing::ChunkedJunk, Framing::Longer(100)];

/// Send `body` to `target` with a broken framing; the answer (status and OCI error code), which
/// must come, and the runner's log line for it, which must not be a 5xx either.
async fn send_broken(
    runner: &Runner,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    framing: Framing,
) -> (u16, String) {
    let request = Fuzzed {
        index: 0,
        method: method.into(),
        target: target.into(),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
        body: body.to_vec(),
        framing,
    };
    let logged_before = runner.log().len();
    let (addr, bytes) = (runner.addr(), raw_bytes(&runner.addr(), &request));
    let close_write = matches!(framing, Framing::Longer(_) | Framing::ChunkedCut);
    let (answer, _) = tokio::task::spawn_blocking(move || exchange(&addr, &bytes, close_write)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = *statuses(&answer).first().unwrap_or_else(|| panic!("no answer to {request}"));
    let code = text.split("\"code\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default().to_owned();
    // The log line is written once the answer has gone out.
    let path = target.split('?').next().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = runner.log();
        if let Some(line) = log[logged_before..].iter().find(|l| l.starts_with(&format!("{method} {path} "))) {
            break line.clone();
        }
        assert!(Instant::now() < deadline, "no log line for {request}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(logged_server_errors(std::slice::from_ref(&line)).is_empty(), "{line}");
    (status, code)
}

#[tokio::test]
async fn a_manifest_put_whose_body_breaks_off_is_a_client_error() {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let registry = Registry::new(&runner);
    let (manifest, _) = registry.push_image(TARGET, "v1", 3).await;
    for framing in BROKEN_BODIES {
        let headers = [("content-type", OCI_MANIFEST_TYPE)];
        let (status, code) =
            send_broken(&runner, "PUT", &format!("/v2/{TARGET}/manifests/broken"), &headers, &manifest, framing).await;
        assert_eq!((status, code.as_str()), (400, "MANIFEST_INVALID"), "{framing:?}");
        let response = registry.get(&format!("/v2/{TARGET}/manifests/broken")).await;
        assert_eq!(response.status(), 404, "{framing:?}: nothing is tagged from half a manifest");
    }
}

#[tokio::test]
async fn a_token_request_whose_body_breaks_off_is_a_client_error() {
    let data = tempfile::tempdir().unwrap();
    let users = format!("{}:{SECRET_HASH}", ADMIN.0);
    let args = vars(&[
        ("auth_mode", "token"),
        ("auth_users", &users),
        ("auth_policy", "* admin *"),
        ("auth_token_secret", TOKEN_SECRET),
    ]);
    let runner = Runner::start_with(data.path(), RunnerOptions { args, ..RunnerOptions::default() });
    let form =
        format!("grant_type=password&username={}&password={}&service=berth&scope=repository:a:pull", ADMIN.0, ADMIN.1);
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    for framing in BROKEN_BODIES {
        let (status, code) = send_broken(&runner, "POST", "/token", &headers, form.as_bytes(), framing).await;
        assert_eq!((status, code.as_str()), (400, "UNSUPPORTED"), "{framing:?}");
    }
    // The same form, whole, gets its token: the refusals above were about the framing.
    let response = client()
        .post(format!("{}/token", runner.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Found by the property tests (src/proptests.rs): `last - first + 1` of this range overflowed
/// (a panic in a debug build, a chunk "of 0 bytes" in the release component).
#[tokio::test]
async fn a_chunk_whose_content_range_length_does_not_fit_a_u64_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let registry = Registry::new(&runner);
    let location = registry.start_upload(TARGET).await;
    for body in [&b""[..], b"abc"] {
        let response = registry
            .http
            .patch(registry.at(&location))
            .header("content-range", "0-18446744073709551615")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(header(&response, "range"), "0-0", "the session is where it was");
        expect_error(response, 416, "RANGE_INVALID").await;
    }
    // The session still takes its first chunk.
    assert_eq!(registry.patch_chunk(&location, 0, b"abc").await.status(), 202);
}
