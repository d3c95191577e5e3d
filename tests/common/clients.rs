//! Real clients (skopeo, podman, buildah, docker CLI, umoci) against a runner: how to start one
//! over HTTP or HTTPS, and how to call each client with the right trust flags.

use super::oci_layout::{Layout, Written, file_sha256};
use super::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A runner and how a client reaches it.
pub struct Leg {
    _dir: tempfile::TempDir,
    pub runner: Runner,
    /// `host:port`
    pub host: String,
    /// Holds `ca.crt` on the HTTPS leg.
    pub cert_dir: Option<PathBuf>,
    pub work: PathBuf,
}

impl Leg {
    pub fn http() -> Leg {
        Self::http_with(Vec::new())
    }

    pub fn https() -> Leg {
        Self::https_with(Vec::new())
    }

    /// Over HTTP, with extra `berth-runner up` arguments.
    pub fn http_with(args: Vec<String>) -> Leg {
        Self::http_options(RunnerOptions { args, ..Default::default() })
    }

    /// Over HTTP, started with `options` (another manifest, say).
    pub fn http_options(options: RunnerOptions<'_>) -> Leg {
        let dir = tempfile::tempdir().unwrap();
        let runner = Runner::start_with(&dir.path().join("data"), options);
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Leg { host: runner.addr(), runner, cert_dir: None, work, _dir: dir }
    }

    /// Over HTTPS with a test CA, with extra `berth-runner up` arguments.
    pub fn https_with(args: Vec<String>) -> Leg {
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs");
        std::fs::create_dir_all(&certs_dir).unwrap();
        let certs = make_certs(&certs_dir);
        // Clients read every *.crt in the folder as a CA: keep only the CA there.
        let cert_dir = dir.path().join("trust");
        std::fs::create_dir_all(&cert_dir).unwrap();
        std::fs::copy(&certs.ca, cert_dir.join("ca.crt")).unwrap();
        let options = RunnerOptions { tls: Some((&certs.cert, &certs.key)), args, ..Default::default() };
        let runner = Runner::start_with(&dir.path().join("data"), options);
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Leg { host: runner.addr(), runner, cert_dir: Some(cert_dir), work, _dir: dir }
    }

    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("docker://{}/{repo_and_tag}", self.host)
    }

    /// Trust flags for skopeo, as `src` or `dest` side.
    pub fn skopeo_tls(&self, side: &str) -> Vec<String> {
        match &self.cert_dir {
            Some(dir) => vec![format!("--{side}-cert-dir={}", dir.display())],
            None => vec![format!("--{side}-tls-verify=false")],
        }
    }

    pub fn skopeo_tls_plain(&self) -> Vec<String> {
        match &self.cert_dir {
            Some(dir) => vec![format!("--cert-dir={}", dir.display())],
            None => vec!["--tls-verify=false".into()],
        }
    }

    /// skopeo with a blob-info cache of this test's own (bind-mounted over the system one in a
    /// private mount namespace): pushes really upload instead of trusting what other runs
    /// remembered, while what this test pushed is remembered (so skopeo can mount across
    /// repositories as it does in real use).
    pub fn skopeo(&self, args: &[String]) -> Output {
        let own_cache = self.work.join("blob-info-cache");
        std::fs::create_dir_all(&own_cache).unwrap();
        match run_with_binds("skopeo", args, &[(&own_cache, "/var/lib/containers/cache")]) {
            Some(output) => output,
            // No private mount namespace here: run skopeo as it is (its cache may then let it skip
            // uploads of blobs it has seen before; the tests still check the results).
            None => run_client("skopeo", args),
        }
    }

    /// A folder laid out as `<host:port>/ca.crt` holding this leg's CA, for clients that only
    /// read CAs from a fixed system folder (`/etc/docker/certs.d`, `/etc/containers/certs.d`).
    fn certs_d(&self) -> Option<PathBuf> {
        let ca = self.cert_dir.as_ref()?.join("ca.crt");
        let certs_d = self.work.join("certs.d");
        std::fs::create_dir_all(certs_d.join(&self.host)).unwrap();
        std::fs::copy(ca, certs_d.join(&self.host).join("ca.crt")).unwrap();
        Some(certs_d)
    }

    /// The engine-free docker CLI's `manifest <subcommand>`: over HTTP with `--insecure`; over
    /// HTTPS trusting the test CA through `/etc/docker/certs.d` (the only place this CLI reads
    /// CAs from), bind-mounted in a private mount namespace.
    pub fn docker_manifest(&self, subcommand: &str, rest: &[&str]) -> Output {
        let config = self.work.join("docker");
        std::fs::create_dir_all(&config).unwrap();
        let mut args = s(&["--config", &config.display().to_string(), "manifest", subcommand]);
        if self.cert_dir.is_none() {
            args.push("--insecure".into());
        }
        args.extend(rest.iter().map(|a| a.to_string()));
        let output = match self.certs_d() {
            None => run_client("docker", &args),
            Some(certs_d) => run_with_binds("docker", &args, &[(&certs_d, "/etc/docker/certs.d")])
                .expect("docker over HTTPS needs a private mount namespace (unshare -m, as root) to see the test CA"),
        };
        assert_success("docker", &args, &output);
        output
    }

    /// `podman search`, which has no `--cert-dir`: over HTTPS it trusts the test CA through
    /// `/etc/containers/certs.d`, bind-mounted in a private mount namespace.
    pub fn podman_search(&self, rest: &[&str]) -> Output {
        let root = self.work.join("podman");
        let mut args = vec![
            format!("--root={}", root.join("root").display()),
            format!("--runroot={}", root.join("run").display()),
            "--storage-driver=vfs".into(),
            "search".into(),
        ];
        if self.cert_dir.is_none() {
            args.push("--tls-verify=false".into());
        }
        args.extend(rest.iter().map(|a| a.to_string()));
        let output = match self.certs_d() {
            None => run_client("podman", &args),
            Some(certs_d) => run_with_binds("podman", &args, &[(&certs_d, "/etc/containers/certs.d")]).expect(
                "podman search over HTTPS needs a private mount namespace (unshare -m, as root) to see the test CA",
            ),
        };
        assert_success("podman", &args, &output);
        output
    }

    pub fn skopeo_ok(&self, args: &[String]) -> Output {
        let output = self.skopeo(args);
        assert_success("skopeo", args, &output);
        output
    }

    /// `skopeo copy [--all] oci:<layout>:<tag> docker://<host>/<image>`.
    pub fn push_layout(&self, layout: &Path, tag: &str, image: &str, all: bool) -> Output {
        let mut args = s(&["copy"]);
        if all {
            args.push("--all".into());
        }
        args.extend([format!("oci:{}:{tag}", layout.display()), self.image(image)]);
        self.skopeo_ok(&with(args, self.skopeo_tls("dest")))
    }

    /// `skopeo copy docker://<host>/<image> <destination>`, e.g. `oci:<dir>:<tag>` or `dir:<dir>`.
    pub fn pull_to(&self, image: &str, destination: &str, all: bool) -> Output {
        let mut args = s(&["copy"]);
        if all {
            args.push("--all".into());
        }
        args.extend([self.image(image), destination.to_owned()]);
        self.skopeo_ok(&with(args, self.skopeo_tls("src")))
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        let output = self.podman_output(args);
        assert_success("podman", &args.iter().map(|a| a.to_string()).collect::<Vec<_>>(), &output);
        output
    }

    /// `podman ...` with this leg's storage, not checked (for what must fail).
    pub fn podman_output(&self, args: &[&str]) -> Output {
        let root = self.work.join("podman");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("config.json"), "{}").unwrap();
        let mut full: Vec<String> = vec![
            format!("--root={}", root.join("root").display()),
            format!("--runroot={}", root.join("run").display()),
            "--storage-driver=vfs".into(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        ensure_installed("podman");
        let output = Command::new("podman").args(&full).env("DOCKER_CONFIG", &root).output();
        output.unwrap_or_else(|e| {
            panic!("podman could not run ({e}): .ci/run installs it from Debian (apt-get install podman)")
        })
    }

    pub fn podman_tls(&self) -> String {
        match &self.cert_dir {
            Some(dir) => format!("--cert-dir={}", dir.display()),
            None => "--tls-verify=false".into(),
        }
    }
}

/// Run `program` in a private mount namespace where each host folder is bind-mounted over a
/// system path, so a client that reads fixed system paths (caches, CA folders) sees this test's
/// files and nothing leaks between tests. `None` when no private mount namespace can be made.
pub fn run_with_binds(program: &str, args: &[String], binds: &[(&Path, &str)]) -> Option<Output> {
    let mut script = String::new();
    for (from, onto) in binds {
        std::fs::create_dir_all(onto).ok()?;
        script.push_str(&format!("mount --bind '{}' '{onto}' && ", from.display()));
    }
    script.push_str(&format!("exec {program} \"$@\""));
    let output =
        Command::new("unshare").arg("-m").arg("sh").arg("-c").arg(&script).arg("sh").args(args).output().ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    (!stderr.contains("mount:") && !stderr.contains("unshare:")).then_some(output)
}

/// Make sure `program` is on the PATH: where it is not and the tests run as root on Debian (CI,
/// a fresh machine), install its Debian package once per test process, so that README's test
/// command passes without a separate setup step. Elsewhere the test then fails saying what to
/// install.
pub fn ensure_installed(program: &str) {
    static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if done.iter().any(|p| p == program) {
        return;
    }
    done.push(program.to_owned());
    let on_path = |p: &str| {
        Command::new("sh").arg("-c").arg(format!("command -v {p}")).output().is_ok_and(|o| o.status.success())
    };
    if on_path(program) || !on_path("apt-get") {
        return;
    }
    let package = match program {
        "docker" | "dockerd" => "docker.io",
        "htpasswd" => "apache2-utils",
        "promtool" => "prometheus",
        "chromedriver" => "chromium-driver",
        other => other,
    };
    eprintln!("tests: {program} is missing: installing Debian's {package}");
    // Other test processes may be installing too: wait for dpkg's lock rather than fail.
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600", "-q", "-y"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let _ = apt(&["update"]);
    let _ = apt(&["install", "--no-install-recommends", package]);
}

pub fn run_client(client: &str, args: &[String]) -> Output {
    ensure_installed(client);
    Command::new(client).args(args).output().unwrap_or_else(|e| {
        panic!("{client} could not run ({e}): .ci/run installs it from Debian (apt-get install {client})")
    })
}

pub fn assert_success(client: &str, args: &[String], output: &Output) {
    assert!(
        output.status.success(),
        "{client} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn s(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

pub fn with(mut base: Vec<String>, more: Vec<String>) -> Vec<String> {
    base.extend(more);
    base
}

/// Blob digests of a `dir:` or `oci:` copy, checked against the file contents.
pub fn blobs_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for root in [dir.to_owned(), dir.join("blobs/sha256")] {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && entry.path().is_file() {
                assert_eq!(
                    file_sha256(&entry.path()),
                    format!("sha256:{name}"),
                    "blob file {name} is byte-identical to its digest"
                );
                out.push(format!("sha256:{name}"));
            }
        }
    }
    out.sort();
    out
}

pub fn single_image(dir: &Path, seed: u64, layers: &[u64]) -> Written {
    let layout = Layout::create(dir);
    let manifest = layout.image(seed, "amd64", layers);
    layout.tag(&manifest, OCI_MANIFEST, "v1");
    manifest
}
