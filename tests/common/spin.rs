//! Berth under `spin up` (Spin 4.1): the real spin.toml with the component and the key-value blob
//! store provider this test binary built, on a free loopback port (optionally over HTTPS), Spin
//! variables from `SPIN_VARIABLE_*`, its state in a temp dir; stopped, with its
//! `spin trigger http` child, by PID when dropped. Used by tests/spin.rs and tests/engines.rs.
//!
//! Spin is found at `$SPIN_BIN` or `../shared/tools/spin/spin`. Where neither exists (a user's
//! machine), [`Spin::start`] says so and a test does not run; under `CI=true` it fails.

use super::process::{free_port, stop_by_pid, wait_until};
use super::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn spin_binary() -> Option<PathBuf> {
    let candidates =
        [std::env::var_os("SPIN_BIN").map(PathBuf::from), Some(repo_root().join("../shared/tools/spin/spin"))];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

pub struct Spin {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// `http://` or `https://` and the host.
    pub url: String,
    state: tempfile::TempDir,
}

impl Spin {
    /// `None` (after printing that the test did not run) when there is no Spin binary.
    pub fn start(variables: &[(&str, &str)], tls: Option<&TestCerts>) -> Option<Spin> {
        let state = tempfile::tempdir().unwrap();
        let manifest = app_manifest(state.path());
        Self::launch(state, manifest, variables, tls, &[])
    }

    /// deploy/cluster/spin.toml as it ships (the S3 provider, the key-value store as
    /// `runtime_config` says, Spin's default store without one), with the artifacts of this build.
    pub fn start_cluster(variables: &[(&str, &str)], runtime_config: Option<&Path>) -> Option<Spin> {
        let state = tempfile::tempdir().unwrap();
        let artifacts = artifacts();
        let text = std::fs::read_to_string(repo_root().join("deploy/cluster/spin.toml")).unwrap();
        let text = text
            .replace(
                "\"../../target/wasm32-wasip2/release/berth.wasm\"",
                &format!("{:?}", artifacts.component.display().to_string()),
            )
            .replace(
                "\"../../target/wasm32-wasip2/release/berth_blob_s3.wasm\"",
                &format!("{:?}", artifacts.blob_s3_provider.display().to_string()),
            );
        assert!(text.contains(&artifacts.blob_s3_provider.display().to_string()), "the manifest names the provider");
        let manifest = state.path().join("spin.toml");
        std::fs::write(&manifest, text).unwrap();
        match runtime_config {
            Some(config) => {
                let config = config.display().to_string();
                Self::launch(state, manifest, variables, None, &["--runtime-config-file", &config])
            }
            None => Self::launch(state, manifest, variables, None, &[]),
        }
    }

    fn launch(
        state: tempfile::TempDir,
        manifest: PathBuf,
        variables: &[(&str, &str)],
        tls: Option<&TestCerts>,
        extra: &[&str],
    ) -> Option<Spin> {
        let Some(spin) = spin_binary() else {
            // CI has Spin: there a missing binary is a broken setup, never a skipped test.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "spin not found ($SPIN_BIN or ../shared/tools/spin/spin): under CI=true this test fails"
            );
            // Straight to the process's stderr (libtest captures only the print macros): the
            // run's output says what did not run, even when the test counts as passed. Under
            // cargo-nextest a passing test's output is hidden, so tests/run.sh also names a file
            // (BERTH_NOT_RUN_LOG) that it prints in the run's summary.
            let test = match std::thread::current().name() {
                Some(name) if name != "main" => name.to_owned(),
                _ => std::env::var("NEXTEST_TEST_NAME").unwrap_or_else(|_| "a test".to_owned()),
            };
            let line = format!("NOT RUN: {test}: spin not found ($SPIN_BIN or ../shared/tools/spin/spin)");
            let _ = writeln!(std::io::stderr(), "{line}");
            if let Ok(log) = std::env::var("BERTH_NOT_RUN_LOG") {
                let appended = std::fs::OpenOptions::new().create(true).append(true).open(log);
                let _ = appended.and_then(|mut file| writeln!(file, "{line}"));
            }
            return None;
        };
        let port = free_port();
        let mut command = Command::new(spin);
        command
            .arg("up")
            .arg("--from")
            .arg(&manifest)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state.path().join("state"))
            // Spin's shared Wasmtime cache is written by every `spin up` at once when tests run
            // in parallel, and its background worker then panics (noise, not a failure).
            .arg("--disable-cache")
            .args(extra)
            .envs(variables.iter().map(|(name, value)| (format!("SPIN_VARIABLE_{}", name.to_uppercase()), *value)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.path().join("spin-stderr.txt")).unwrap());
        if let Some(certs) = tls {
            command.arg("--tls-cert").arg(&certs.cert).arg("--tls-key").arg(&certs.key);
        }
        let mut child = command.spawn().expect("starting spin up");
        // Spin compiles the components before it listens.
        wait_until("spin up", Duration::from_secs(180), &state.path().join("spin-stderr.txt"), &mut child, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let host = format!("127.0.0.1:{port}");
        let scheme = if tls.is_some() { "https" } else { "http" };
        Some(Spin { child, url: format!("{scheme}://{host}"), host, state })
    }

    /// A client of this registry, without credentials.
    pub fn registry(&self) -> Registry {
        Registry { url: self.url.clone(), http: Http::new(None) }
    }

    /// The process serving requests: `spin up` runs `spin trigger http` as its child.
    pub fn trigger_pid(&self) -> u32 {
        let output = Command::new("pgrep").arg("-P").arg(self.child.id().to_string()).output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(self.child.id())
    }
}

/// spin.toml with absolute paths to the built component and provider (the target dir may be
/// anywhere), written into `dir`.
fn app_manifest(dir: &Path) -> PathBuf {
    let artifacts = artifacts();
    let (component, provider) = (&artifacts.component, &artifacts.blob_kv_provider);
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    let text = text
        .replace("\"target/wasm32-wasip2/release/berth.wasm\"", &format!("{:?}", component.display().to_string()))
        .replace(
            "\"target/wasm32-wasip2/release/berth_blob_kv.wasm\"",
            &format!("{:?}", provider.display().to_string()),
        );
    assert!(text.contains(&component.display().to_string()), "spin.toml names the component");
    let path = dir.join("spin.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl Drop for Spin {
    fn drop(&mut self) {
        // The component's own stderr (Spin writes it to a file): shown with the test's output;
        // Spin's own, when the test failed. (Spin 4.1 prints "worker failed: worker panicked"
        // for each keep-alive connection still open when it is stopped: noise at shutdown.)
        let log = self.state.path().join("state/logs/registry_stderr.txt");
        if let Ok(text) = std::fs::read_to_string(log).map(|t| t.trim().to_owned())
            && !text.is_empty()
        {
            println!("component stderr under spin:\n{text}");
        }
        if std::thread::panicking() {
            let spin_log = std::fs::read_to_string(self.state.path().join("spin-stderr.txt")).unwrap_or_default();
            println!("spin stderr:\n{spin_log}");
        }
        // The trigger child first (by its PID), then spin itself.
        let trigger = self.trigger_pid();
        if trigger != self.child.id() {
            let _ = Command::new("kill").arg("-TERM").arg(trigger.to_string()).status();
        }
        stop_by_pid(&mut self.child, Duration::from_secs(10));
        if trigger != self.child.id() && Path::new(&format!("/proc/{trigger}")).exists() {
            let _ = Command::new("kill").arg("-KILL").arg(trigger.to_string()).status();
        }
    }
}
