//! Real container engines for the end-to-end journeys (tests/engines.rs): containerd 1.6 and
//! Docker Engine 20.10 (Debian's `containerd` and `docker.io`), each started as root in a temp
//! dir of its own (own socket, data root, pid file, no network setup), waited for by polling,
//! and stopped by PID when dropped (also when the test fails). Also the other servers the
//! journeys run against: CNCF Distribution (`docker-registry`); Berth under `spin up` is
//! `super::spin`.

use super::clients::ensure_installed;
use super::process::{free_port, stop_by_pid, wait_until};
use super::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `containerd` in a temp dir: its own root, state and gRPC socket.
pub struct Containerd {
    child: Child,
    pub socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        ensure_installed("containerd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let socket = d.join("containerd.sock");
        // No CRI plugin (Kubernetes only; it wants CNI). Content is isolated per namespace, so
        // a pull into a fresh namespace really downloads instead of reusing blobs it has.
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {:?}\n\
             [plugins.\"io.containerd.metadata.v1.bolt\"]\n  content_sharing_policy = \"isolated\"\n",
            d.join("root").display().to_string(),
            d.join("state").display().to_string(),
            socket.display().to_string(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = d.join("containerd.log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(d.join("containerd.err")).unwrap())
            .spawn()
            .expect("containerd could not start: .ci/run installs it (apt-get install containerd)");
        let err_log = d.join("containerd.err");
        wait_until("containerd", Duration::from_secs(60), &err_log, &mut child, || {
            socket.exists()
                && Command::new("ctr").arg("-a").arg(&socket).arg("version").output().is_ok_and(|o| o.status.success())
        });
        Containerd { child, socket, dir }
    }

    /// `ctr -a <socket> -n <namespace> <args>`, not checked.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("ctr").arg("-a").arg(&self.socket).arg("-n").arg(namespace).args(args).output().expect("ctr")
    }

    /// `ctr ...` that must succeed; returns stdout and stderr.
    pub fn ctr_ok(&self, namespace: &str, args: &[&str]) -> String {
        let output = self.ctr(namespace, args);
        assert!(output.status.success(), "ctr {args:?} failed:\n{}", output_text(&output));
        output_text(&output)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("containerd.err")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            println!("containerd log (last lines, newest first):\n{}", tail.join("\n"));
        }
        stop_by_pid(&mut self.child, Duration::from_secs(15));
    }
}

/// `dockerd` in a temp dir (data root, exec root, socket, pid file), on a [`Containerd`] of its
/// own, with no bridge and no iptables: nothing on the host's network changes. The docker CLI
/// runs with a config dir of its own (`docker login` credentials stay in the temp dir).
pub struct Dockerd {
    child: Child,
    pub socket: PathBuf,
    pub config: PathBuf,
    dir: tempfile::TempDir,
    // Dropped after dockerd (fields drop in order): dockerd needs it until it has stopped.
    pub containerd: Containerd,
}

/// Debian's CLI (matching the 20.10 engine) when it is there; any `docker` on the PATH otherwise.
fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").is_file() { "/usr/bin/docker" } else { "docker" }
}

impl Dockerd {
    pub fn start() -> Dockerd {
        Self::start_with(&[])
    }

    /// With more `dockerd` options (`--registry-mirror`, say).
    pub fn start_with(options: &[&str]) -> Dockerd {
        let containerd = Containerd::start();
        ensure_installed("dockerd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let socket = d.join("docker.sock");
        let config = d.join("cli");
        std::fs::create_dir_all(&config).unwrap();
        let log = d.join("dockerd.log");
        let mut child = Command::new("dockerd")
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(options)
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--containerd")
            .arg(&containerd.socket)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(d.join("dockerd.err")).unwrap())
            .spawn()
            .expect("dockerd could not start: .ci/run installs it (apt-get install docker.io)");
        let engine = |args: &[&str]| {
            Command::new(docker_cli()).env("DOCKER_HOST", format!("unix://{}", socket.display())).args(args).output()
        };
        wait_until("dockerd", Duration::from_secs(90), &d.join("dockerd.err"), &mut child, || {
            socket.exists() && engine(&["info"]).is_ok_and(|o| o.status.success())
        });
        Dockerd { child, socket, config, dir, containerd }
    }

    /// `docker --config <own> <args>` against this engine, not checked.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_with_stdin(args, None)
    }

    pub fn docker_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(docker_cli())
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker CLI");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// `docker ...` that must succeed; returns stdout and stderr.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let output = self.docker(args);
        assert!(output.status.success(), "docker {args:?} failed:\n{}", output_text(&output));
        output_text(&output)
    }

    /// `docker login -u <user> --password-stdin <host>`.
    pub fn login(&self, host: &str, user: &str, password: &str) -> String {
        let output = self.docker_with_stdin(&["login", "-u", user, "--password-stdin", host], Some(password));
        assert!(output.status.success(), "docker login {host} failed:\n{}", output_text(&output));
        output_text(&output)
    }

    /// Load an OCI layout's `tag` into the engine as `reference`: skopeo writes a docker-archive,
    /// `docker load` reads it (the engine cannot read OCI layouts itself in 20.10).
    pub fn load_layout(&self, layout: &Path, tag: &str, reference: &str) {
        let archive = self.dir.path().join("load.tar");
        let _ = std::fs::remove_file(&archive);
        let args = clients::s(&[
            "copy",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker-archive:{}:{reference}", archive.display()),
        ]);
        let output = clients::run_client("skopeo", &args);
        clients::assert_success("skopeo", &args, &output);
        self.docker_ok(&["load", "-i", &archive.display().to_string()]);
        std::fs::remove_file(&archive).unwrap();
    }

    /// The image ID (config digest) of a local image.
    pub fn image_id(&self, reference: &str) -> String {
        self.docker_ok(&["image", "inspect", "--format", "{{.Id}}", reference]).trim().to_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("dockerd.err")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            println!("dockerd log (last lines, newest first):\n{}", tail.join("\n"));
        }
        stop_by_pid(&mut self.child, Duration::from_secs(30));
    }
}

/// The test CA where dockerd (and the docker CLI) read it, `/etc/docker/certs.d/<host:port>/ca.crt`;
/// the folder is removed when dropped (also when the test fails).
pub struct DockerCa {
    dir: PathBuf,
}

impl DockerCa {
    pub fn install(host: &str, ca: &Path) -> DockerCa {
        let dir = Path::new("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&dir).expect("creating /etc/docker/certs.d/<host:port> (the tests run as root)");
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
        DockerCa { dir }
    }

    /// `/etc/docker/certs.d/<host:port>` removed when dropped, whatever put a CA there (the
    /// command `up --tls auto` prints).
    pub fn removed_when_dropped(host: &str) -> DockerCa {
        DockerCa { dir: Path::new("/etc/docker/certs.d").join(host) }
    }
}

impl Drop for DockerCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runner arguments for token authentication with one user, [`ADMIN`], allowed everything.
pub fn token_auth_vars() -> Vec<(String, String)> {
    vec![
        ("auth_mode".into(), "token".into()),
        ("auth_users".into(), format!("{}:{SECRET_HASH}", ADMIN.0)),
        ("auth_policy".into(), format!("* {} *", ADMIN.0)),
        ("auth_token_secret".into(), TOKEN_SECRET.into()),
    ]
}

/// CNCF Distribution (`/usr/bin/docker-registry`, Debian's `docker-registry`) on a free loopback
/// port over HTTPS with the given certificate, filesystem storage in a temp dir; no auth.
pub struct Distribution {
    child: Child,
    pub host: String,
    _dir: tempfile::TempDir,
}

impl Distribution {
    pub fn start(certs: &TestCerts) -> Distribution {
        ensure_installed("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.path().join("data").display(),
            certs.cert.display(),
            certs.key.display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = dir.path().join("registry.log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("docker-registry could not start: apt-get install docker-registry");
        wait_until("docker-registry", Duration::from_secs(30), &log, &mut child, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Distribution { child, host: format!("127.0.0.1:{port}"), _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        stop_by_pid(&mut self.child, Duration::from_secs(10));
    }
}

/// VmHWM (peak resident set size) of a process, in bytes.
pub fn peak_rss_of(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:") * 1024
}

/// Measure `pid`'s peak RSS afresh from now on (Linux: writing `5` to `/proc/<pid>/clear_refs`
/// resets VmHWM to the current RSS), so that an earlier peak does not count: a runner compiles
/// its component at start when the compile cache is cold (a fresh clone), and Cranelift's peak
/// then is about 115 MiB, far above any transfer's.
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .unwrap_or_else(|e| panic!("resetting the peak RSS of {pid} (/proc/{pid}/clear_refs): {e}"));
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
