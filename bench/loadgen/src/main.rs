//! The bench's client (bench/stampede.py runs it): many registry clients at once, each with a
//! connection of its own, on one thread, reading bodies into a reused nothing (chunks are
//! counted and dropped), so that the registry, not the client, is what a figure measures. The
//! caller reads this process's CPU time (its rusage) and reports it beside the registry's.
//!
//! ```text
//! berth-loadgen fanout --clients N [--ca PEM] URL...
//!     N clients start at once; each GETs the URLs in order over its own connection (one node
//!     pulling an image: manifest, config, layers).
//! berth-loadgen matrix --base URL --repo R --op push|pull|mix --size BYTES --concurrency C
//!                      --ops K [--ca PEM]
//!     K operations on C workers: a push is a monolithic upload (POST, then PUT with the bytes)
//!     of a blob of its own; a pull GETs one of four blobs pushed beforehand (not timed); mix
//!     is three pulls to one push.
//! ```
//!
//! Prints `ready` when its setup is done and the measured part starts, then one JSON object:
//! bytes moved, wall seconds, per-request time to first byte (fanout)
//! or per-operation latency (matrix) as p50/p99 in ms, and the number of errors.

use sha2::{Digest, Sha256};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let outcome = match args.first().map(String::as_str) {
        Some("fanout") => runtime.block_on(fanout(Options::parse(&args[1..]))),
        Some("matrix") => runtime.block_on(matrix(Options::parse(&args[1..]))),
        _ => Err("usage: berth-loadgen fanout|matrix ... (see the source's first lines)".into()),
    };
    match outcome {
        Ok(report) => println!("{}", report.json()),
        Err(e) => {
            eprintln!("berth-loadgen: {e}");
            std::process::exit(1);
        }
    }
}

/// Say that the setup is done and the measured part starts: the caller samples CPU times here.
fn ready() {
    use std::io::Write;
    println!("ready");
    let _ = std::io::stdout().flush();
}

#[derive(Default)]
struct Options {
    clients: usize,
    ca: Option<String>,
    urls: Vec<String>,
    base: String,
    repo: String,
    op: String,
    size: usize,
    concurrency: usize,
    ops: usize,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let mut o = Options { clients: 1, concurrency: 1, ops: 1, ..Default::default() };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().cloned().unwrap_or_else(|| panic!("{arg} needs a value"));
            match arg.as_str() {
                "--clients" => o.clients = value().parse().expect("--clients N"),
                "--ca" => o.ca = Some(value()),
                "--base" => o.base = value(),
                "--repo" => o.repo = value(),
                "--op" => o.op = value(),
                "--size" => o.size = value().parse().expect("--size BYTES"),
                "--concurrency" => o.concurrency = value().parse().expect("--concurrency C"),
                "--ops" => o.ops = value().parse().expect("--ops K"),
                url => o.urls.push(url.to_owned()),
            }
        }
        o
    }

    /// A client with a single connection of its own (a node), trusting `--ca` when given.
    fn client(&self) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(1);
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("reading {ca}: {e}"))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
            builder = builder.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        builder.build().map_err(|e| e.to_string())
    }
}

struct Report {
    bytes: u64,
    seconds: f64,
    /// Milliseconds: time to first byte per request (fanout), or latency per operation.
    times: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

impl Report {
    fn json(mut self) -> String {
        self.times.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if self.times.is_empty() { 0.0 } else { self.times[((self.times.len() - 1) as f64 * q).round() as usize] }
        };
        format!(
            r#"{{"bytes":{},"seconds":{:.4},"count":{},"p50_ms":{:.3},"p99_ms":{:.3},"errors":{},"first_error":{:?}}}"#,
            self.bytes,
            self.seconds,
            self.times.len(),
            at(0.5),
            at(0.99),
            self.errors,
            self.first_error.unwrap_or_default()
        )
    }
}

/// GET `url`: its time to first byte of the body (ms) and the body's length, or what went wrong.
async fn get(client: &reqwest::Client, url: &str) -> Result<(f64, u64), String> {
    let start = Instant::now();
    let mut response = client
        .get(url)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    let first = response.chunk().await.map_err(|e| format!("GET {url}: body: {e}"))?;
    let ttfb = start.elapsed().as_secs_f64() * 1e3;
    let mut bytes = first.map_or(0, |chunk| chunk.len() as u64);
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("GET {url}: body: {e}"))? {
        bytes += chunk.len() as u64;
    }
    Ok((ttfb, bytes))
}

async fn fanout(o: Options) -> Result<Report, String> {
    if o.urls.is_empty() {
        return Err("fanout needs URLs".into());
    }
    let clients = (0..o.clients).map(|_| o.client()).collect::<Result<Vec<_>, _>>()?;
    ready();
    let local = tokio::task::LocalSet::new();
    let start = Instant::now();
    let nodes: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let urls = o.urls.clone();
            local.spawn_local(async move {
                let mut done = Vec::new();
                for url in &urls {
                    done.push(get(&client, url).await);
                }
                done
            })
        })
        .collect();
    let results = local.run_until(futures::future::join_all(nodes)).await;
    let seconds = start.elapsed().as_secs_f64();
    let mut report = Report { bytes: 0, seconds, times: Vec::new(), errors: 0, first_error: None };
    for node in results {
        for outcome in node.map_err(|e| e.to_string())? {
            report.add(outcome);
        }
    }
    Ok(report)
}

impl Report {
    fn add(&mut self, outcome: Result<(f64, u64), String>) {
        match outcome {
            Ok((ms, bytes)) => {
                self.times.push(ms);
                self.bytes += bytes;
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// Blobs of `size` bytes that share all but their last 8 bytes: the digest of each continues
/// the shared part's hash state, so making a new blob costs nothing per byte.
struct Blobs {
    base: bytes::Bytes,
    hashed: Sha256,
}

impl Blobs {
    fn new(size: usize) -> Blobs {
        assert!(size >= 8, "--size of at least 8 bytes");
        // Incompressible, and different from run to run (a registry must not find it stored).
        let mut state = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let base_bytes: Vec<u8> = (0..size - 8)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let hashed = Sha256::new_with_prefix(&base_bytes);
        Blobs { base: base_bytes.into(), hashed }
    }

    /// The `n`th blob: its digest and its body.
    fn nth(&self, n: u64) -> (String, reqwest::Body) {
        let tail = n.to_le_bytes();
        let digest = self.hashed.clone().chain_update(tail).finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
            vec![Ok(self.base.clone()), Ok(bytes::Bytes::copy_from_slice(&tail))];
        (format!("sha256:{hex}"), reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
    }
}

/// Push blob `n`: a monolithic upload. Its latency in ms.
async fn push(client: &reqwest::Client, base: &str, repo: &str, blobs: &Blobs, n: u64) -> Result<(f64, u64), String> {
    let start = Instant::now();
    let (digest, body) = blobs.nth(n);
    let started = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .map_err(|e| format!("POST upload: {e}"))?;
    if started.status().as_u16() != 202 {
        return Err(format!("POST upload: {}", started.status()));
    }
    let location = started.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("no Location")?;
    let location = if location.starts_with("http") { location.to_owned() } else { format!("{base}{location}") };
    let sep = if location.contains('?') { '&' } else { '?' };
    let size = blobs.base.len() as u64 + 8;
    let finished = client
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("PUT upload: {e}"))?;
    if finished.status().as_u16() != 201 {
        return Err(format!("PUT upload: {}", finished.status()));
    }
    Ok((start.elapsed().as_secs_f64() * 1e3, size))
}

async fn matrix(o: Options) -> Result<Report, String> {
    if !matches!(o.op.as_str(), "push" | "pull" | "mix") {
        return Err("--op push|pull|mix".into());
    }
    let blobs = std::rc::Rc::new(Blobs::new(o.size));
    let setup = o.client()?;
    // The pulled blobs: pushed first, not timed. Numbers from 1<<40 up never meet a push's.
    const PULLED: u64 = 4;
    let mut pulled = Vec::new();
    if o.op != "push" {
        for n in 0..PULLED {
            push(&setup, &o.base, &o.repo, &blobs, (1 << 40) + n).await?;
            pulled.push(format!("{}/v2/{}/blobs/{}", o.base, o.repo, blobs.nth((1 << 40) + n).0));
        }
    }
    ready();
    let next = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let local = tokio::task::LocalSet::new();
    let start = Instant::now();
    let workers = (0..o.concurrency.max(1))
        .map(|_| {
            let client = o.client()?;
            let (blobs, next, pulled) = (blobs.clone(), next.clone(), pulled.clone());
            let (base, repo, op, ops) = (o.base.clone(), o.repo.clone(), o.op.clone(), o.ops);
            Ok(local.spawn_local(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.get();
                    if i >= ops {
                        return done;
                    }
                    next.set(i + 1);
                    let is_push = op == "push" || (op == "mix" && i % 4 == 3);
                    done.push(if is_push {
                        push(&client, &base, &repo, &blobs, i as u64).await
                    } else {
                        let t = Instant::now();
                        get(&client, &pulled[i % pulled.len()])
                            .await
                            .map(|(_, bytes)| (t.elapsed().as_secs_f64() * 1e3, bytes))
                    });
                }
            }))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let results = local.run_until(futures::future::join_all(workers)).await;
    let mut report =
        Report { bytes: 0, seconds: start.elapsed().as_secs_f64(), times: Vec::new(), errors: 0, first_error: None };
    for worker in results {
        for outcome in worker.map_err(|e| e.to_string())? {
            report.add(outcome);
        }
    }
    Ok(report)
}
