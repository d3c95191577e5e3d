//! `berth-runner`: runs the Berth component without Spin — Wasmtime, SQLite key-value,
//! filesystem blobs — reading the same spin.toml as `spin up`.

mod app;
mod host;
mod http;
mod memory;
mod store;
mod tools;

use app::{compile_cache, compose, manifest, variables};
use host::outbound;
use http::{limits, metrics, request_log, serve};
use store::{blob_fs, kv_stores, runtime_config};
use tools::{admin_client, auth_tools};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "berth-runner", version, about = "Serve the Berth registry component without Spin")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP component of a Spin manifest.
    Up(Box<UpArgs>),
    /// Read a password from stdin and print its bcrypt hash (for the `auth_users` variable).
    HashPassword(auth_tools::HashPasswordArgs),
    /// Collect garbage on a running registry through its admin API, step by step.
    Gc(admin_client::GcArgs),
    /// Quota usage on a running registry, through its admin API.
    Quota(admin_client::QuotaArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// The Spin manifest (its HTTP component, key-value stores, variables, outbound hosts).
    #[arg(long, short = 'f', default_value = "spin.toml")]
    manifest: PathBuf,
    /// Load the component from here instead of the manifest's `source`.
    #[arg(long)]
    component: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Where key-value databases (kv/) and blobs (blobs/) live.
    #[arg(long, default_value = ".berth")]
    data: PathBuf,
    /// `auto`: serve HTTPS with a certificate signed by a local CA that `up` makes and keeps in
    /// --data (tls/), renewed before it expires; `up` prints the commands that make docker,
    /// podman and containerd trust the CA.
    #[arg(long, value_name = "auto", value_parser = ["auto"], conflicts_with = "tls_cert")]
    tls: Option<String>,
    /// A name the --tls auto certificate is for (repeatable; default: localhost and 127.0.0.1,
    /// and the --listen address when it is a specific one).
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls")]
    tls_names: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address beyond this machine (behind a proxy that terminates TLS,
    /// say). Without it, `up` refuses to start there without --tls-cert/--tls-key: credentials
    /// and images must not cross a network in the clear by mistake.
    #[arg(long)]
    insecure_http: bool,
    /// A Spin runtime config file (the one `spin up --runtime-config-file` reads): its
    /// `[key_value_store.<label>]` tables put stores on Redis (`type = "redis"`, `url`) or on
    /// SQLite (`type = "spin"`, optional `path`). Labels it does not name: SQLite under --data.
    #[arg(long, value_name = "FILE")]
    runtime_config_file: Option<PathBuf>,
    /// Set an application variable: --var name=value (repeatable; beats SPIN_VARIABLE_<NAME>).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Where blobs live: `fs` (the runner's filesystem store under --data), `dependency` (the
    /// provider component spin.toml declares in [component.<id>.dependencies], composed into the
    /// registry as `spin up` does), or the path of a provider component.
    #[arg(long, default_value = "fs", value_name = "fs|dependency|FILE.wasm")]
    blob_store: compose::BlobStoreChoice,
    /// Keep compiled components here, so later starts skip compiling [default:
    /// $XDG_CACHE_HOME/berth-runner or ~/.cache/berth-runner].
    #[arg(long, value_name = "DIR", conflicts_with = "no_compile_cache")]
    compile_cache: Option<PathBuf>,
    /// Compile the component at every start; read and write no compile cache.
    #[arg(long)]
    no_compile_cache: bool,
    /// Requests one component instance serves before it is replaced (1 = fresh per request).
    #[arg(long, default_value_t = 128)]
    instance_reuse: usize,
    /// Requests one component instance serves at once.
    #[arg(long, default_value_t = 16)]
    instance_concurrency: usize,
    /// The request log on standard output: a line per request for people, or a JSON object per
    /// line for log pipelines. Each carries the request's id (X-Request-Id, taken or made), which
    /// the component's lines on standard error end with too.
    #[arg(long, value_enum, default_value_t = request_log::LogFormat::Text)]
    log_format: request_log::LogFormat,
    /// Serve Prometheus metrics at /metrics on this address, a listener of its own (never the
    /// registry's port). Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Who sends blob bodies from the filesystem store: `runner` (the default: from the files to
    /// the socket, never through the component's memory) or `component` (through the
    /// component's streams, as under Spin; for comparing the two).
    #[arg(long, value_enum, default_value_t = BlobBodies::Runner)]
    blob_bodies: BlobBodies,
    /// Answer every request through the component: keep no answers. By default manifest GETs
    /// and HEADs, blob HEADs and /v2/, asked anonymously or with a bearer token (until it
    /// expires), are given again from memory while every key-value value they were made from is
    /// unchanged (checked before each answer: README, "Kept answers").
    #[arg(long)]
    no_answer_cache: bool,
    /// Timeouts and caps against slow or idle clients.
    #[command(flatten)]
    limits: limits::Limits,
}

/// Who sends blob bodies from the filesystem store (`--blob-bodies`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BlobBodies {
    /// The runner, from the files to the socket.
    Runner,
    /// The component, through its streams.
    Component,
}

fn main() -> Result<()> {
    // Two malloc arenas instead of glibc's default of 8 per core: blob chunks are allocated on
    // one thread and freed on another, and every extra arena keeps its own free fragments
    // (measured: 8 parallel pulls left ~20 MiB more RSS behind with the default).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let args = match Cli::parse().command {
        Command::Up(args) => *args,
        Command::HashPassword(args) => return auth_tools::hash_password(args),
        Command::Gc(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            return runtime.block_on(admin_client::gc(args));
        }
        Command::Quota(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            return runtime.block_on(admin_client::quota(args));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(up(args))
}

async fn up(args: UpArgs) -> Result<()> {
    request_log::set_format(args.log_format);
    let mut app = manifest::App::load(&args.manifest)?;
    if let Some(component) = &args.component {
        app.source = component.clone();
    }
    let mut overrides = BTreeMap::new();
    for var in &args.vars {
        let Some((name, value)) = var.split_once('=') else { bail!("--var {var:?}: expected NAME=VALUE") };
        overrides.insert(name.to_owned(), value.to_owned());
    }
    let variables = variables::Variables::resolve(&app, &overrides, |k| std::env::var(k).ok())?;
    let configured_stores = match &args.runtime_config_file {
        Some(file) => runtime_config::load(file)?,
        None => Default::default(),
    };
    for (label, store) in &configured_stores {
        println!("berth-runner: key-value store {label}: {store}");
    }
    // An entry made from a variable may name several hosts (the mirror's upstreams), separated
    // by commas or spaces, or none (the variable is empty).
    let mut outbound_hosts = Vec::new();
    for entry in &app.allowed_outbound_hosts {
        let expanded = variables.expand(entry).with_context(|| format!("allowed_outbound_hosts entry {entry:?}"))?;
        outbound_hosts.extend(expanded.split([',', ' ', '\n']).filter(|h| !h.is_empty()).map(str::to_owned));
    }
    // The sender's clock runs only where the `events` variable names endpoints.
    let events_configured = matches!(variables.get("events"), variables::Lookup::Found(v) if !v.trim().is_empty());
    let shared = Arc::new(host::state::Shared {
        kv: kv_stores::KvStores::new(args.data.join("kv"), app.key_value_stores.clone(), configured_stores),
        blobs: blob_fs::FsBlobStore::new(args.data.join("blobs"))
            .with_context(|| format!("creating {}", args.data.display()))?,
        variables,
        outbound: Arc::new(outbound::AllowedHosts::parse(&outbound_hosts)?),
        host_bodies: host::host_bodies::HostBodies::new(args.blob_bodies == BlobBodies::Runner),
    });
    let auto_tls = match args.tls.as_deref() {
        Some(_) => {
            let names = tls_names(&args);
            let auto = http::tls_auto::AutoTls::at(&args.data);
            auto.ensure(&names, http::tls_auto::now()).context("making the --tls auto certificate")?;
            // Renewed while serving: the listener reloads the files when they change.
            let (renewing, again) = (auto.clone(), names.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
                    if let Err(e) = renewing.ensure(&again, http::tls_auto::now()) {
                        eprintln!("berth-runner: renewing the --tls auto certificate failed: {e:#}");
                    }
                }
            });
            Some((auto, names))
        }
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key, &auto_tls) {
        (Some(cert), Some(key), _) => Some(http::tls::tls_acceptor(cert, key)?),
        (_, _, Some((auto, _))) => Some(http::tls::tls_acceptor(&auto.cert, &auto.key)?),
        _ => None,
    };
    if let Some(refusal) = auth_tools::plain_http_refusal(args.listen, tls.is_some(), args.insecure_http) {
        anyhow::bail!(refusal);
    }
    let engine = host::engine()?;
    let cache = match (&args.compile_cache, args.no_compile_cache) {
        (_, true) => None,
        (Some(dir), false) => Some(dir.clone()),
        (None, false) => compile_cache::CompileCache::default_dir(),
    }
    .and_then(|dir| compile_cache::CompileCache::open(&dir));
    let component = load_component(&engine, &app, &args.blob_store, cache.as_ref())?;
    let reuse = host::Reuse {
        max_requests: args.instance_reuse.max(1),
        max_concurrent: args.instance_concurrency.max(1),
        idle: Duration::from_secs(1),
    };
    let handler =
        wasmtime_wasi_http::handler::ProxyHandler::new(host::Handler::new(engine, &component, shared, reuse)?);
    let scheme = if tls.is_some() { "https" } else { "http" };
    match auth_tools::probe(&handler, &app, scheme).await {
        Err(err) => eprintln!(
            "berth-runner: {err:#}\nberth-runner: serving anyway: every request gets this error until it is fixed"
        ),
        Ok(auth_tools::Probed::OpenToEveryone) => {
            if let Some(warning) = auth_tools::open_registry_warning(args.listen) {
                eprintln!("{warning}");
            }
        }
        Ok(auth_tools::Probed::Guarded) => {}
    }
    if let Some(addr) = args.metrics_listen {
        metrics::serve(addr).await?;
    }
    if events_configured {
        http::event_sender::start(handler.clone(), scheme);
    }
    let listener = serve::bind(args.listen).await?;
    let shutdown = serve::shutdown_signal()?;
    // Before the line that says it serves: whoever waits for that line has these too.
    if let Some((auto, names)) = &auto_tls {
        let ca = std::path::absolute(&auto.ca).unwrap_or_else(|_| auto.ca.clone());
        println!(
            "berth-runner: HTTPS with a local CA ({}). Trust it once, as root, for each name clients use:",
            ca.display()
        );
        for name in names {
            for command in http::tls_auto::trust_commands(&ca, name, listener.local_addr()?.port()) {
                println!("berth-runner:   {command}");
            }
        }
    }
    println!("berth-runner: serving {} on {scheme}://{}", app.component_id, listener.local_addr()?);
    let answers = (!args.no_answer_cache).then(|| Arc::new(http::answer_cache::AnswerCache::new()));
    serve::serve(listener, handler, tls, Arc::new(app), args.limits, answers, shutdown).await
}

/// The app's component, with a blob store provider plugged in when one is chosen.
fn load_component(
    engine: &wasmtime::Engine,
    app: &manifest::App,
    blob_store: &compose::BlobStoreChoice,
    cache: Option<&compile_cache::CompileCache>,
) -> Result<wasmtime::component::Component> {
    let hint = "build it with `spin build` or see README";
    let wasm = match compose::provider_path(blob_store, app)? {
        None => std::fs::read(&app.source)
            .with_context(|| format!("reading component {} ({hint})", app.source.display()))?,
        Some(provider) => {
            let composed = compose::plug_blob_store(&app.source, &provider).with_context(|| {
                format!("plugging blob store provider {} into {} ({hint})", provider.display(), app.source.display())
            })?;
            println!("berth-runner: blob store: provider component {}", provider.display());
            composed
        }
    };
    compile_cache::load(engine, &wasm, cache)
        .map_err(|e| anyhow::anyhow!("compiling component {} ({hint}): {e:?}", app.source.display()))
}

/// The names the --tls auto certificate is for: those given, else this machine's loopback names
/// and the address `up` listens on, when it is a specific one.
fn tls_names(args: &UpArgs) -> Vec<String> {
    if !args.tls_names.is_empty() {
        return args.tls_names.clone();
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let ip = args.listen.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    names
}
