//! The end-to-end harness: builds the real wasm component (release) and `berth-runner` once,
//! starts the runner on a free loopback port with its own data dir, waits until it answers, and
//! stops it by PID when the test ends (also when it fails).
//!
//! `BERTH_TEST_AUTH=token` (or `basic`) starts every runner that sets no `auth_mode` itself with
//! authentication on and one user, [`ADMIN`], allowed everything; [`Registry`] then logs in
//! transparently (token mode: a token per repository from `/token`, as clients do). That is how
//! the V2 API suite runs with auth on: `BERTH_TEST_AUTH=token cargo test -p berth --test distribution`.

#![allow(dead_code)]

pub mod clients;
pub mod engines;
pub mod kept;
pub mod oci_layout;
pub mod process;
pub mod redis;
pub mod rng;
pub mod s3;
pub mod spin;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/` of this test binary (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_owned()
}

pub struct Artifacts {
    pub runner: PathBuf,
    pub component: PathBuf,
    /// A component that traps on `GET /trap` (tests/fixtures/trap).
    pub trap_component: PathBuf,
    /// The key-value blob store provider (providers/blob-kv).
    pub blob_kv_provider: PathBuf,
    /// The S3 blob store provider (providers/blob-s3).
    pub blob_s3_provider: PathBuf,
    /// The runners' shared compile cache (`target/berth-compile-cache`): the component is
    /// compiled once per build, not at every runner start.
    pub compile_cache: PathBuf,
}

/// Build the component (release wasm: debug wasm hashes and copies slowly) and the runner (same
/// profile as the tests) once per test binary. Cargo's own lock serialises concurrent builds.
///
/// Under `BERTH_TEST_PREBUILT=1` (tests/run.sh, which builds them once before cargo-nextest
/// starts a process per test) a debug test binary builds nothing: the files must exist.
pub fn artifacts() -> &'static Artifacts {
    static BUILT: OnceLock<Artifacts> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile = profile_dir();
        let target_dir = profile.parent().expect("target dir").to_owned();
        let artifacts = Artifacts {
            runner: profile.join("berth-runner"),
            component: target_dir.join("wasm32-wasip2/release/berth.wasm"),
            trap_component: target_dir.join("wasm32-wasip2/release/berth_trap_fixture.wasm"),
            blob_kv_provider: target_dir.join("wasm32-wasip2/release/berth_blob_kv.wasm"),
            blob_s3_provider: target_dir.join("wasm32-wasip2/release/berth_blob_s3.wasm"),
            compile_cache: target_dir.join("berth-compile-cache"),
        };
        let release = profile.file_name().is_some_and(|n| n == "release");
        // tests/run.sh builds the debug runner: a release test run builds its own.
        if std::env::var("BERTH_TEST_PREBUILT").as_deref() == Ok("1") && !release {
            let built = [
                &artifacts.runner,
                &artifacts.component,
                &artifacts.trap_component,
                &artifacts.blob_kv_provider,
                &artifacts.blob_s3_provider,
            ];
            for built in built {
                assert!(built.is_file(), "BERTH_TEST_PREBUILT=1 but {} is missing (run tests/run.sh)", built.display());
            }
            return artifacts;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let run = |args: &[&str]| {
            // Without the package variables `cargo test` gives this process (CARGO_PKG_NAME,
            // CARGO_MANIFEST_DIR, ...): ring's build script reruns when they change, which would
            // rebuild the TLS stack and relink the runner here after every `cargo test -p
            // berth-runner` (a minute or two of CI).
            let mut command = Command::new(&cargo);
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                let per_package = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_"];
                if per_package.iter().any(|p| name.starts_with(p)) || name == "CARGO_TARGET_TMPDIR" {
                    command.env_remove(name.as_ref());
                }
            }
            let status = command
                .args(args)
                .arg("--target-dir")
                .arg(&target_dir)
                .current_dir(repo_root())
                .status()
                .expect("running cargo");
            assert!(status.success(), "cargo {args:?} failed");
        };
        run(&[
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "berth",
            "-p",
            "berth-blob-kv",
            "-p",
            "berth-blob-s3",
            "-p",
            "berth-trap-fixture",
        ]);
        if release {
            run(&["build", "--release", "-p", "berth-runner"]);
        } else {
            run(&["build", "-p", "berth-runner"]);
        }
        artifacts
    })
}

/// A running `berth-runner`.
pub struct Runner {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    log: std::sync::Arc<Mutex<Vec<String>>>,
    /// Set when `BERTH_TEST_AUTH` turned authentication on: how [`Registry`] logs in.
    pub login: Option<Login>,
}

/// The all-powerful test user of `BERTH_TEST_AUTH` runs, and its password.
pub const ADMIN: (&str, &str) = ("admin", "secret");
/// `htpasswd -nbB -C 4 admin secret` (cost 4: the cheapest bcrypt, for tests).
pub const SECRET_HASH: &str = "$2y$04$bKOFBbX2st4s.3cifBS8CeTKuRnPHiEmAhGnQkwQxJGjeuGt/ERWa";
/// A token signing secret for tests.
pub const TOKEN_SECRET: &str = "test-secret-0123456789abcdef0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    Token,
    Basic,
}

/// `--var` arguments for the runner.
pub fn vars(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().flat_map(|(name, value)| ["--var".to_owned(), format!("{name}={value}")]).collect()
}

/// The authentication `BERTH_TEST_AUTH` asks for, unless the test configures its own.
fn env_login(args: &[String]) -> Option<(Login, Vec<String>)> {
    let login = match std::env::var("BERTH_TEST_AUTH").ok()?.as_str() {
        "token" => Login::Token,
        "basic" => Login::Basic,
        "" | "none" => return None,
        other => panic!("BERTH_TEST_AUTH={other:?}: expected token, basic or none"),
    };
    if args.iter().any(|a| a.starts_with("auth_mode=")) {
        return None;
    }
    let mode = if login == Login::Token { "token" } else { "basic" };
    let users = format!("{}:{SECRET_HASH}", ADMIN.0);
    let policy = format!("* {} *", ADMIN.0);
    let args = vars(&[
        ("auth_mode", mode),
        ("auth_users", &users),
        ("auth_policy", &policy),
        ("auth_token_secret", TOKEN_SECRET),
        ("auth_token_lifetime_seconds", "3600"),
    ]);
    Some((login, args))
}

pub struct RunnerOptions<'a> {
    pub manifest: PathBuf,
    /// The component to serve; the registry when `None`.
    pub component: Option<PathBuf>,
    pub tls: Option<(&'a Path, &'a Path)>,
    pub args: Vec<String>,
    /// Where the runner's standard error (the component's log) goes; the test's own when `None`.
    pub stderr: Option<PathBuf>,
}

impl Default for RunnerOptions<'_> {
    /// The registry as spin.toml declares it. With `BERTH_TEST_BLOB_STORE=kv` in the environment,
    /// through the key-value blob store provider instead of the runner's filesystem store (so a
    /// whole suite can be run against the provider).
    fn default() -> Self {
        let args = match std::env::var("BERTH_TEST_BLOB_STORE").as_deref() {
            Ok("kv") => vec!["--blob-store".into(), artifacts().blob_kv_provider.display().to_string()],
            _ => Vec::new(),
        };
        RunnerOptions { manifest: repo_root().join("spin.toml"), component: None, tls: None, args, stderr: None }
    }
}

impl Runner {
    pub fn start(data: &Path) -> Runner {
        Self::start_with(data, RunnerOptions::default())
    }

    pub fn start_with(data: &Path, options: RunnerOptions<'_>) -> Runner {
        let artifacts = artifacts();
        let login = env_login(&options.args);
        let mut command = Command::new(&artifacts.runner);
        command
            .arg("up")
            .arg("--manifest")
            .arg(&options.manifest)
            .arg("--component")
            .arg(options.component.as_ref().unwrap_or(&artifacts.component))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data)
            .args(&options.args)
            .args(default_compile_cache(&options.args))
            .args(login.as_ref().map(|(_, args)| args.as_slice()).unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(match &options.stderr {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("creating the runner's stderr file")),
                None => Stdio::inherit(),
            });
        if let Some((cert, key)) = options.tls {
            command.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = command.spawn().expect("starting berth-runner");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = mpsc::channel();
        let log_writer = log.clone();
        // Drain stdout for the runner's whole life (a full pipe would block it).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split(" on ").nth(1).filter(|_| line.starts_with("berth-runner: serving")) {
                    let _ = url_tx.send(url.trim().to_owned());
                }
                log_writer.lock().unwrap().push(line);
            }
        });
        let url = match url_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("berth-runner did not report a listening address; exit: {:?}", child.wait());
            }
        };
        let runner = Runner { child, url, data: data.to_owned(), log, login: login.map(|(login, _)| login) };
        runner.wait_ready();
        runner
    }

    /// Poll until the listener accepts connections (the URL is printed after bind, so this is quick).
    fn wait_ready(&self) {
        let addr = self.url.split("://").nth(1).unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "berth-runner at {addr} never accepted a connection");
            std::thread::yield_now();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> String {
        self.url.split("://").nth(1).unwrap().to_owned()
    }

    /// The request log lines printed so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:") * 1024
    }

    /// Current resident set size (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// Stop with SIGTERM and wait for the exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("runner exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// `--compile-cache <the shared one>`, unless the test chose its own or none.
fn default_compile_cache(args: &[String]) -> Vec<String> {
    if args.iter().any(|a| a == "--compile-cache" || a == "--no-compile-cache") {
        return Vec::new();
    }
    vec!["--compile-cache".into(), artifacts().compile_cache.display().to_string()]
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// An HTTP client for the runner (no proxy from the environment).
pub fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

/// The start of one: for clients with settings of their own (a CA, HTTP/2, ...).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().no_proxy()
}

/// The `code` of the first entry of an OCI error body.
pub async fn error_code(response: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("an OCI error body (JSON)");
    let code = body["errors"][0]["code"].as_str().expect("errors[0].code").to_owned();
    (status, code, body)
}

/// A response header as a string (the test fails when it is missing).
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).unwrap_or_else(|| panic!("header {name}")).to_str().unwrap().to_owned()
}

/// The response is an OCI error with this status and code.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) {
    let (got_status, got_code, body) = error_code(response).await;
    assert_eq!((got_status, got_code.as_str()), (status, code), "{body}");
}

/// A response body as JSON.
/// `GET <path>` answers 200 with exactly `bytes`; else what it did answer.
pub async fn reads_back(reg: &Registry, path: &str, bytes: &[u8]) -> Result<(), String> {
    let response = reg.get(path).await;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| format!("GET {path}: {status}, body failed: {e}"))?;
    if status != 200 {
        return Err(format!("GET {path}: {status} {}", String::from_utf8_lossy(&body)));
    }
    if body != bytes {
        return Err(format!("GET {path}: 200 but {} bytes that differ from the {} pushed", body.len(), bytes.len()));
    }
    Ok(())
}

/// A response's status and, for an error, its OCI error code (the body is consumed).
pub async fn outcome(response: reqwest::Response) -> (u16, Option<String>) {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned));
    (status, code)
}

pub fn is_error(outcome: &(u16, Option<String>), status: u16, code: &str) -> bool {
    outcome.0 == status && outcome.1.as_deref() == Some(code)
}

pub async fn json(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.expect("a body")).expect("a JSON body")
}

/// sha256 of bytes, as a digest string (computed here, independently of the registry).
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Deterministic, incompressible bytes (xorshift), generated in chunks: never all in memory.
pub struct PseudoRandom(u64);

impl PseudoRandom {
    pub fn new(seed: u64) -> Self {
        PseudoRandom(seed.max(1))
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }

    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        PseudoRandom::new(seed).fill(&mut out);
        out
    }
}

/// A CA and a certificate for 127.0.0.1 / localhost signed by it, written as PEM files.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certs(dir: &Path) -> TestCerts {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Berth test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let certs = TestCerts { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") };
    std::fs::write(&certs.ca, ca.pem()).unwrap();
    std::fs::write(&certs.cert, leaf.pem()).unwrap();
    std::fs::write(&certs.key, leaf_key.serialize_pem()).unwrap();
    certs
}

/// Kill a runner with SIGKILL (no cleanup of any kind), and reap it.
pub fn kill9(runner: Runner) {
    let status = Command::new("kill").arg("-9").arg(runner.pid().to_string()).status().expect("kill -9");
    assert!(status.success(), "kill -9 {}", runner.pid());
    let _ = runner.stop();
}

/// Object files under `<data>/blobs/<dir>` (temp files excluded).
pub fn stored_objects(data: &Path, dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() { walk(&path, out) } else { out.push(path) }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("blobs").join(dir), &mut out);
    out
}

/// The keys (and values) of the runner's SQLite key-value store `default` that start with
/// `prefix`, in order.
pub fn kv_values(data: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let db = rusqlite::Connection::open(data.join("kv/default.db")).unwrap();
    let mut statement = db.prepare("SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key").unwrap();
    let end = format!("{prefix}\u{10ffff}");
    statement
        .query_map([prefix, end.as_str()], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn kv_keys(data: &Path, prefix: &str) -> Vec<String> {
    kv_values(data, prefix).into_iter().map(|(key, _)| key).collect()
}

/// The entries of an index of the key-value blob provider (`blob-kv/ix/names/` holds the object
/// names, `blob-kv/ix/writes/` the writes in progress; providers/blob-kv/src/index.rs), read as
/// a listing reads them: from the root down the leftmost children, then along the leaves.
pub fn kv_index_entries(data: &Path, prefix: &str) -> Vec<String> {
    let nodes: std::collections::HashMap<String, Vec<u8>> = kv_values(data, prefix).into_iter().collect();
    let Some(root) = nodes.get(&format!("{prefix}root")) else { return vec![] };
    let mut id = u64::from_le_bytes(root.as_slice().try_into().expect("the root pointer is a number"));
    if id == 0 {
        return vec![];
    }
    let node = |id: u64| -> serde_json::Value {
        let raw = nodes.get(&format!("{prefix}node/{id}")).unwrap_or_else(|| panic!("index node {id} is missing"));
        serde_json::from_slice(raw).unwrap()
    };
    while node(id)["level"].as_u64().unwrap() > 0 {
        id = node(id)["children"][0].as_u64().unwrap();
    }
    let mut entries = Vec::new();
    loop {
        let leaf = node(id);
        entries.extend(leaf["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()));
        match leaf["next"].as_u64() {
            Some(next) => id = next,
            None => return entries,
        }
    }
}

/// What a test's stand-in server has read of a request: its head up to the blank line (and any
/// bytes of the body that came with it); `None` when the client went away first.
pub async fn read_request_head(socket: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// A registry client for the spec tests: one base URL, helpers for the common pushes.
#[derive(Clone)]
pub struct Registry {
    pub url: String,
    pub http: Http,
}

/// A `reqwest::Client` that logs in as [`ADMIN`] when the runner has authentication on: in token
/// mode it asks `/token` for full access to the repository each request addresses (and pull on
/// a mount's `from`), as a client would after a challenge; in basic mode it sends the password.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    login: Option<Login>,
    /// Tokens by the scopes they were asked for.
    tokens: Arc<Mutex<std::collections::HashMap<String, String>>>,
}

pub struct HttpRequest {
    inner: reqwest::RequestBuilder,
    http: Http,
}

impl Http {
    pub fn new(login: Option<Login>) -> Http {
        Http { client: client(), login, tokens: Default::default() }
    }

    pub fn request(&self, method: reqwest::Method, url: impl reqwest::IntoUrl) -> HttpRequest {
        HttpRequest { inner: self.client.request(method, url), http: self.clone() }
    }

    pub fn get(&self, url: impl reqwest::IntoUrl) -> HttpRequest {
        self.request(reqwest::Method::GET, url)
    }

    pub fn head(&self, url: impl reqwest::IntoUrl) -> HttpRequest {
        self.request(reqwest::Method::HEAD, url)
    }

    pub fn post(&self, url: impl reqwest::IntoUrl) -> HttpRequest {
        self.request(reqwest::Method::POST, url)
    }

    pub fn put(&self, url: impl reqwest::IntoUrl) -> HttpRequest {
        self.request(reqwest::Method::PUT, url)
    }

    pub fn patch(&self, url: impl reqwest::IntoUrl) -> HttpRequest {
        self.request(reqwest::Method::PATCH, url)
    }

    pub fn delete(&self, url: impl reqwest::IntoUrl) -> HttpRequest {
        self.request(reqwest::Method::DELETE, url)
    }

    async fn authorization(&self, url: &reqwest::Url) -> Option<String> {
        match self.login? {
            Login::Basic => {
                use base64::Engine;
                let credentials = format!("{}:{}", ADMIN.0, ADMIN.1);
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)))
            }
            Login::Token => {
                let scopes = scopes_for(url);
                let key = scopes.join(" ");
                if let Some(token) = self.tokens.lock().unwrap().get(&key) {
                    return Some(format!("Bearer {token}"));
                }
                let token =
                    fetch_token(&self.client, &format!("{}://{}", url.scheme(), url.authority()), &scopes).await;
                self.tokens.lock().unwrap().insert(key, token.clone());
                Some(format!("Bearer {token}"))
            }
        }
    }
}

/// A token for `scopes` from the registry at `base`, as [`ADMIN`].
pub async fn fetch_token(client: &reqwest::Client, base: &str, scopes: &[String]) -> String {
    let mut query: Vec<(&str, &str)> = vec![("service", "berth")];
    query.extend(scopes.iter().map(|s| ("scope", s.as_str())));
    let response =
        client.get(format!("{base}/token")).query(&query).basic_auth(ADMIN.0, Some(ADMIN.1)).send().await.unwrap();
    assert_eq!(response.status(), 200, "token for {scopes:?}");
    let body = json(response).await;
    body["token"].as_str().unwrap().to_owned()
}

/// Everything on the repository a `/v2/...` URL addresses, pull on a mount's `from`, or the catalog.
fn scopes_for(url: &reqwest::Url) -> Vec<String> {
    let path = url.path();
    if path == "/v2/_catalog" {
        return vec!["registry:catalog:*".into()];
    }
    let Some(rest) = path.strip_prefix("/v2") else { return Vec::new() };
    let end = ["/manifests/", "/blobs/", "/tags/", "/referrers/"].iter().filter_map(|m| rest.rfind(m)).max();
    let Some(end) = end.filter(|&e| e > 0) else { return Vec::new() };
    let mut scopes = vec![format!("repository:{}:pull,push,delete", &rest[1..end])];
    if let Some((_, from)) = url.query_pairs().find(|(k, _)| k == "from") {
        scopes.push(format!("repository:{from}:pull"));
    }
    scopes
}

impl HttpRequest {
    pub fn header<K, V>(self, key: K, value: V) -> HttpRequest
    where
        http::HeaderName: TryFrom<K>,
        <http::HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        http::HeaderValue: TryFrom<V>,
        <http::HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        HttpRequest { inner: self.inner.header(key, value), http: self.http }
    }

    pub fn body(self, body: impl Into<reqwest::Body>) -> HttpRequest {
        HttpRequest { inner: self.inner.body(body), http: self.http }
    }

    pub async fn send(self) -> reqwest::Result<reqwest::Response> {
        let (client, request) = self.inner.build_split();
        let mut request = request?;
        if let Some(authorization) = self.http.authorization(request.url()).await {
            request.headers_mut().insert(http::header::AUTHORIZATION, authorization.parse().unwrap());
        }
        client.execute(request).await
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// A runner with a data dir of its own, and a client of it (keep the dir alive with the runner).
pub fn start_registry(options: RunnerOptions<'static>) -> (tempfile::TempDir, Runner, Registry) {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start_with(data.path(), options);
    let registry = Registry::new(&runner);
    (data, runner, registry)
}

/// The path (and query) of a Location, absolute or not: the same session on another front end.
pub fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or_else(|| "/".to_owned(), |slash| rest[slash..].to_owned()),
        None => location.to_owned(),
    }
}

impl Registry {
    pub fn new(runner: &Runner) -> Registry {
        Registry { url: runner.url.clone(), http: Http::new(runner.login) }
    }

    /// The runner's registry reached through `client` (a TLS trust of its own, HTTP/2 by prior
    /// knowledge, ...).
    pub fn with_client(runner: &Runner, client: reqwest::Client) -> Registry {
        Registry { url: runner.url.clone(), http: Http { client, login: runner.login, tokens: Default::default() } }
    }

    pub fn at(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.url) }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.at(path)).send().await.unwrap()
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.http.head(self.at(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http.delete(self.at(path)).send().await.unwrap()
    }

    /// Push a blob in one `POST ?digest=`; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let response = self
            .http
            .post(self.at(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "pushing blob to {repo}");
        digest
    }

    /// Open an upload session; returns its Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let response = self.http.post(self.at(&format!("/v2/{repo}/blobs/uploads/"))).send().await.unwrap();
        assert_eq!(response.status(), 202);
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    /// `PATCH` one chunk of an upload at `start` with its `Content-Range`.
    pub async fn patch_chunk(&self, location: &str, start: u64, bytes: &[u8]) -> reqwest::Response {
        let end = start + bytes.len() as u64 - 1;
        self.http
            .patch(self.at(location))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{end}"))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Close an upload with `PUT <location>&digest=`, sending `last` as its final chunk.
    pub async fn finish_upload(&self, location: &str, digest: &str, last: &[u8]) -> reqwest::Response {
        let separator = if location.contains('?') { '&' } else { '?' };
        self.http
            .put(self.at(&format!("{location}{separator}digest={digest}")))
            .body(last.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> reqwest::Response {
        self.http
            .put(self.at(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Push config + one layer + an image manifest under `reference`; returns (manifest bytes, digest).
    /// Push, by HTTP, an artifact of `artifact_type` whose subject is `subject` (as cosign, oras
    /// or notation attach a signature or an SBOM): its digest.
    pub async fn attach(
        &self,
        repo: &str,
        subject: &oci_layout::Written,
        artifact_type: &str,
        payload: &[u8],
    ) -> String {
        let config = self.push_blob(repo, b"{}").await;
        let layer = self.push_blob(repo, payload).await;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact_type}","config":{{"mediaType":"{OCI_EMPTY}","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{layer}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}}}}"#,
            payload.len(),
            subject.digest,
            subject.size
        );
        let digest = sha256(manifest.as_bytes());
        assert_eq!(self.put_manifest(repo, &digest, OCI_MANIFEST, manifest.as_bytes()).await.status(), 201);
        digest
    }

    pub async fn push_image(&self, repo: &str, reference: &str, seed: u64) -> (Vec<u8>, String) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let layer = PseudoRandom::bytes(seed, 1000 + seed as usize);
        let config_digest = self.push_blob(repo, &config).await;
        let layer_digest = self.push_blob(repo, &layer).await;
        let manifest = image_manifest(
            &[(OCI_CONFIG, &config_digest, config.len())],
            &[(OCI_LAYER, &layer_digest, layer.len())],
            "",
        );
        let response = self.put_manifest(repo, reference, OCI_MANIFEST, &manifest).await;
        assert_eq!(response.status(), 201, "pushing manifest {repo}:{reference}");
        let digest = sha256(&manifest);
        (manifest, digest)
    }
}

/// An OCI image manifest; `extra` is appended inside the top-level object (`,"subject":...`).
pub fn image_manifest(config: &[(&str, &str, usize)], layers: &[(&str, &str, usize)], extra: &str) -> Vec<u8> {
    let descriptor = |(media_type, digest, size): &(&str, &str, usize)| {
        format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{size}}}"#)
    };
    let layers: Vec<String> = layers.iter().map(descriptor).collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]{extra}}}"#,
        descriptor(&config[0]),
        layers.join(",")
    )
    .into_bytes()
}

/// The blob store contract (`src/registry/store_contract.rs`), checked by the registry against
/// the store it runs on (`POST /v2/_berth/storage/check`): every rule must hold. Each backend's
/// tests call this once: a new backend is one more call.
pub async fn assert_store_contract(reg: &Registry) {
    let response = reg.http.post(reg.at("/v2/_berth/storage/check")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let report = json(response).await;
    let checks = report["checks"].as_array().expect("a list of checks");
    assert!(checks.len() >= 10, "{report:#}");
    let broken: Vec<&serde_json::Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(broken.is_empty() && report["ok"] == true, "rules the store broke: {broken:#?}");
}

/// The `--metrics-listen` address a runner said it serves its metrics on (`http://.../metrics`).
pub fn metrics_url(runner: &Runner) -> String {
    runner
        .log()
        .iter()
        .find_map(|l| l.strip_prefix("berth-runner: metrics on ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no metrics listener in {:?}", runner.log()))
}

/// A scrape of the runner's metrics (Prometheus' text format).
pub async fn scrape(runner: &Runner) -> String {
    client().get(metrics_url(runner)).send().await.unwrap().text().await.unwrap()
}

/// Run, by `sh`, the command `up --tls auto` printed to make `client` trust the registry at
/// `host` (`client` as the line labels it: `docker`, `podman, skopeo, buildah`, `containerd`),
/// with the system folder `root` (e.g. `/etc/containers`) standing in `instead` when given. A
/// note in brackets after the command is not run. Panics when there is no such line, or when
/// the command fails.
pub fn run_trust_command(runner: &Runner, client: &str, host: &str, moved: Option<(&str, &Path)>) {
    let label = format!("{client}: ");
    let printed = runner
        .log()
        .into_iter()
        .find(|l| l.contains(&label) && l.contains(&format!("certs.d/{host} ")))
        .unwrap_or_else(|| panic!("no {client} trust command for {host}: {:?}", runner.log()));
    let command = printed.split_once(&label).unwrap().1.split("   (").next().unwrap().trim();
    let command = match moved {
        Some((root, instead)) => command.replace(root, &instead.display().to_string()),
        None => command.to_owned(),
    };
    assert!(Command::new("sh").arg("-c").arg(&command).status().unwrap().success(), "{command}");
}
