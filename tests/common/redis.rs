//! A redis-server of a test's own (Debian's `redis-server`, installed if missing), on a free
//! port of 127.0.0.1, stopped by PID.

use super::process::stop_by_pid;
use super::{RunnerOptions, artifacts};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server on a free port of 127.0.0.1, saving nothing to disk; stopped by PID on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        super::clients::ensure_installed("redis-server");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = spawn(port, dir.path());
        let server = RedisServer { child, port, dir };
        server.wait_for_ping();
        server
    }

    /// Stop the server (by PID), as an outage would.
    pub fn stop(&mut self) {
        stop_by_pid(&mut self.child, Duration::from_secs(10));
    }

    /// Start it again on the same port, with what it had written (its append-only file).
    pub fn restart(&mut self) {
        self.child = spawn(self.port, self.dir.path());
        self.wait_for_ping();
    }

    pub fn wait_for_ping(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server on port {} never answered PING", self.port);
            std::thread::yield_now();
        }
    }

    /// `redis-cli` against this server; its standard output (empty if it failed).
    pub fn cli(&self, args: &[&str]) -> String {
        let output =
            Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &self.port.to_string()]).args(args).output();
        output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }

    /// Every key whose name matches the glob `pattern`, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.cli(&["--scan", "--pattern", pattern]).lines().map(str::to_owned).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// A Spin runtime config file putting the store `default` on this server.
    pub fn runtime_config_file(&self) -> PathBuf {
        let path = self.dir.path().join("runtime-config.toml");
        let text =
            format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n", self.port);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runner options with the store `default` here, and the blob store provider if `provider`.
    pub fn options(&self, provider: bool) -> RunnerOptions<'static> {
        let mut args = vec!["--runtime-config-file".into(), self.runtime_config_file().display().to_string()];
        if provider {
            args.extend(["--blob-store".into(), artifacts().blob_kv_provider.display().to_string()]);
        }
        // `args` replaces BERTH_TEST_BLOB_STORE's choice: these tests say which store they use.
        RunnerOptions { args, ..Default::default() }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every write goes to the append-only file before it is acknowledged, so a stopped and
/// restarted server still has what the registry acknowledged.
fn spawn(port: u16, dir: &Path) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting redis-server (Debian's redis-server package)")
}
