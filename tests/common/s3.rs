//! An S3 server of a test's own: moto's server (`moto[server]` from PyPI, installed if missing)
//! on a free port of 127.0.0.1, stopped by PID. moto implements multipart uploads, conditional
//! writes (`If-None-Match: *` on PutObject and CompleteMultipartUpload), ListObjectsV2 and
//! presigned URLs; in server mode it does not verify signatures (docs/deploying.md says so).
//! `tests/fixtures/s3/moto_serve.py` serves it, making its conditional writes atomic as S3's are.

use super::process::{free_port, stop_by_pid, wait_until};
use super::redis::RedisServer;
use super::{RunnerOptions, artifacts, repo_root, vars};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S3Server {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

pub const BUCKET: &str = "berth";

/// Install moto's server with pip unless Python can import it already.
pub fn ensure_moto() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let importable = || {
            Command::new("python3")
                .args(["-c", "import moto.server, flask, flask_cors"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !importable() {
            eprintln!("tests: moto's S3 server is missing: pip install 'moto[server]'");
            let _ = Command::new("python3").args(["-m", "pip", "install", "-q", "moto[server]"]).status();
        }
        assert!(importable(), "moto[server] could not be installed (python3 -m pip install 'moto[server]')");
    });
}

impl S3Server {
    /// A server with an empty bucket [`BUCKET`].
    pub fn start() -> S3Server {
        ensure_moto();
        let dir = tempfile::tempdir().unwrap();
        let mut server =
            S3Server { child: spawn_placeholder(), port: free_port(), log: dir.path().join("moto.log"), _dir: dir };
        server.restart();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop the server (by PID), as an outage would. moto keeps objects in memory: they go too.
    pub fn stop(&mut self) {
        stop_by_pid(&mut self.child, Duration::from_secs(10));
    }

    /// Start it (again) on its port, and create the bucket.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        self.child = Command::new("python3")
            .arg(super::repo_root().join("tests/fixtures/s3/moto_serve.py"))
            .args(["127.0.0.1", &self.port.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting moto's S3 server (tests/fixtures/s3/moto_serve.py)");
        let bucket = format!("{}/{BUCKET}", self.endpoint());
        // Ready is the bucket made, not the port open: a server still starting (or a moto that
        // died on a port taken meanwhile) failed the single PUT made once the port answered.
        wait_until(
            &format!("moto server, creating bucket {bucket}"),
            Duration::from_secs(60),
            &self.log.clone(),
            &mut self.child,
            || Command::new("curl").args(["-sf", "-o", "/dev/null", "-X", "PUT", &bucket]).status().unwrap().success(),
        );
    }

    /// The keys in the bucket under `prefix`, with their sizes and ETags (S3's own listing).
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64, String)> {
        let url = format!("{}/{BUCKET}?list-type=2&prefix={prefix}", self.endpoint());
        let out = Command::new("curl").args(["-sf", &url]).output().unwrap();
        let xml = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |entry: &str, tag: &str| -> String {
            let open = format!("<{tag}>");
            let start = entry.find(&open).map(|i| i + open.len()).unwrap_or(0);
            let end = entry[start..].find(&format!("</{tag}>")).map(|i| start + i).unwrap_or(start);
            entry[start..end].replace("&#34;", "\"").replace("&quot;", "\"")
        };
        xml.split("<Contents>")
            .skip(1)
            .map(|entry| (field(entry, "Key"), field(entry, "Size").parse().unwrap_or(0), field(entry, "ETag")))
            .collect()
    }
}

/// A finished child, so that `start` can go through `restart`.
fn spawn_placeholder() -> Child {
    Command::new("true").spawn().unwrap()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shipped cluster manifest, its variables pointed at `s3`, and the S3 provider composed in.
pub fn cluster_options(s3: &S3Server, redis: Option<&RedisServer>, redirect_seconds: u32) -> RunnerOptions<'static> {
    cluster_options_at(&s3.endpoint(), redis, redirect_seconds)
}

/// [`cluster_options`] with any endpoint (one that misbehaves, say).
pub fn cluster_options_at(
    endpoint: &str,
    redis: Option<&RedisServer>,
    redirect_seconds: u32,
) -> RunnerOptions<'static> {
    let mut args = vec!["--blob-store".to_owned(), artifacts().blob_s3_provider.display().to_string()];
    if let Some(redis) = redis {
        args.extend(["--runtime-config-file".to_owned(), redis.runtime_config_file().display().to_string()]);
    }
    args.extend(vars(&[
        ("blob_s3_endpoint", endpoint),
        ("blob_s3_bucket", BUCKET),
        ("blob_s3_access_key_id", "berth-test"),
        ("blob_s3_secret_access_key", "berth-test-secret"),
        ("blob_s3_prefix", "registry/"),
        ("blob_redirect_seconds", &redirect_seconds.to_string()),
    ]));
    RunnerOptions { manifest: repo_root().join("deploy/cluster/spin.toml"), args, ..Default::default() }
}
