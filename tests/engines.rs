//! The user journeys with real engines: Docker Engine 20.10 (`dockerd`) and containerd 1.6
//! (`ctr`), as Debian ships them, started as root in temp dirs (tests/common/engines.rs), against
//! Berth through `berth-runner` and again under `spin up` (the key-value blob provider composed
//! in), with token authentication on. The 1 GiB journey also runs against CNCF Distribution in
//! the same test and prints both sets of figures.
//!
//! dockerd and containerd must start here (CI installs them; a test that cannot start them
//! fails). Tests under Spin print that they did NOT run when no Spin binary is found.

mod common;

use common::clients::{assert_success, run_client, s};
use common::engines::*;
use common::oci_layout::{Layout, Written};
use common::process::assert_free_disk;
use common::spin::Spin;
use common::*;
use std::path::Path;
use std::time::Instant;

/// Berth as a journey sees it: through the runner or under Spin, over HTTP or HTTPS, token auth on.
struct Target {
    runner: Option<Runner>,
    spin: Option<Spin>,
    host: String,
    certs: Option<TestCerts>,
    _dir: tempfile::TempDir,
}

impl Target {
    fn runner(https: bool) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let certs = https.then(|| certs_in(dir.path()));
        let pairs = token_auth_vars();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let options = RunnerOptions {
            args: vars(&pairs),
            tls: certs.as_ref().map(|c| (c.cert.as_path(), c.key.as_path())),
            ..Default::default()
        };
        let runner = Runner::start_with(&dir.path().join("data"), options);
        Target { host: runner.addr(), runner: Some(runner), spin: None, certs, _dir: dir }
    }

    /// `None` when there is no Spin binary (the test then says it did not run).
    fn spin(https: bool) -> Option<Target> {
        let dir = tempfile::tempdir().unwrap();
        let certs = https.then(|| certs_in(dir.path()));
        let pairs = token_auth_vars();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let spin = Spin::start(&pairs, certs.as_ref())?;
        Some(Target { host: spin.host.clone(), runner: None, spin: Some(spin), certs, _dir: dir })
    }

    fn name(&self) -> &'static str {
        if self.runner.is_some() { "berth-runner" } else { "berth under spin up" }
    }

    /// The process holding the registry's memory: the runner, or Spin's `spin trigger http`.
    fn pid(&self) -> u32 {
        match (&self.runner, &self.spin) {
            (Some(runner), _) => runner.pid(),
            (_, Some(spin)) => spin.trigger_pid(),
            _ => unreachable!(),
        }
    }

    /// The runner's request log (Spin keeps none).
    fn log(&self) -> Option<Vec<String>> {
        self.runner.as_ref().map(Runner::log)
    }

    /// The CA in `/etc/docker/certs.d/<host:port>/`, removed again when the guard drops.
    fn docker_ca(&self) -> DockerCa {
        DockerCa::install(&self.host, &self.certs.as_ref().expect("an HTTPS target").ca)
    }
}

/// A test CA and server certificate, the CA alone in a folder of its own: clients given a
/// cert dir read every `*.crt` there as a CA and refuse a `*.key` without a `*.cert`.
fn certs_in(dir: &Path) -> TestCerts {
    let server = dir.join("server");
    std::fs::create_dir_all(&server).unwrap();
    let mut certs = make_certs(&server);
    let trust = dir.join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::rename(&certs.ca, trust.join("ca.crt")).unwrap();
    certs.ca = trust.join("ca.crt");
    certs
}

/// `digest: sha256:... size: N` of `docker push`'s last line: the manifest digest.
fn pushed_digest(output: &str) -> String {
    let at = output.rfind("digest: ").unwrap_or_else(|| panic!("a digest in docker push's output:\n{output}"));
    output[at + 8..].split_whitespace().next().unwrap().to_owned()
}

/// A three-layer image as an OCI layout tagged `v1`.
fn multi_layer_layout(dir: &Path, seed: u64) -> Written {
    common::clients::single_image(dir, seed, &[300_000, 1_200_000, 40_000])
}

// ---- dockerd: login, push, rmi + pull, manifest inspect, logout -----------------------------

fn dockerd_multi_layer_journey(target: &Target) {
    let _ca = target.docker_ca();
    let engine = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    multi_layer_layout(&work.path().join("image"), 11);
    let host = &target.host;
    let reference = format!("{host}/team/app:v1");
    engine.load_layout(&work.path().join("image"), "v1", &reference);
    let id = engine.image_id(&reference);

    // Token auth is on: without a login the push is refused.
    let refused = engine.docker(&["push", &reference]);
    assert!(!refused.status.success(), "push without login must fail");

    let login = engine.login(host, ADMIN.0, ADMIN.1);
    assert!(login.contains("Login Succeeded"), "{login}");
    let pushed = engine.docker_ok(&["push", &reference]);
    let digest = pushed_digest(&pushed);

    // rmi + pull: the same image comes back (the image ID is the config digest, and dockerd
    // checks every layer against the config's diff_ids while it unpacks).
    engine.docker_ok(&["rmi", &reference]);
    assert!(!engine.docker(&["image", "inspect", &reference]).status.success(), "the image is gone after rmi");
    let pulled = engine.docker_ok(&["pull", &reference]);
    assert!(pulled.contains(&format!("Digest: {digest}")), "pulled the pushed manifest:\n{pulled}");
    assert_eq!(engine.image_id(&reference), id, "the image ID is unchanged after push, rmi and pull");
    let repo_digest = engine.docker_ok(&["image", "inspect", "--format", "{{index .RepoDigests 0}}", &reference]);
    assert_eq!(repo_digest.trim(), format!("{host}/team/app@{digest}"));

    // The CLI reads the registry itself (with the login's credentials and the CA in certs.d).
    let inspected = engine.docker_ok(&["manifest", "inspect", &reference]);
    let manifest: serde_json::Value = serde_json::from_str(&inspected).expect("manifest inspect prints JSON");
    assert_eq!(manifest["config"]["digest"], id.as_str(), "{inspected}");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(3), "{inspected}");

    // After logout the anonymous token grants nothing: the pull is refused with docker's
    // message for denied access.
    engine.docker_ok(&["logout", host]);
    engine.docker_ok(&["rmi", &reference]);
    let denied = engine.docker(&["pull", &reference]);
    let message = String::from_utf8_lossy(&denied.stderr).into_owned();
    println!("{}: docker pull after logout: {}", target.name(), message.trim());
    assert!(!denied.status.success());
    assert!(
        message.contains(&format!("pull access denied for {host}/team/app"))
            && message.contains("may require 'docker login'"),
        "docker's message for denied access: {message}"
    );
}

#[test]
fn dockerd_logs_in_pushes_and_pulls_a_multi_layer_image_over_https_with_token_auth() {
    dockerd_multi_layer_journey(&Target::runner(true));
}

#[test]
fn under_spin_dockerd_logs_in_pushes_and_pulls_a_multi_layer_image_over_https_with_token_auth() {
    let Some(target) = Target::spin(true) else { return };
    dockerd_multi_layer_journey(&target);
}

// ---- dockerd: a second repository sharing layers (cross-repository mounts) ------------------

fn dockerd_cross_repository_journey(target: &Target) {
    let _ca = target.docker_ca();
    let engine = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    // Same seed: the second image has the first one's two layers plus one of its own.
    let base = work.path().join("base");
    let app = work.path().join("app");
    common::clients::single_image(&base, 21, &[500_000, 700_000]);
    common::clients::single_image(&app, 21, &[500_000, 700_000, 90_000]);
    let host = &target.host;
    engine.load_layout(&base, "v1", &format!("{host}/base/os:v1"));
    engine.load_layout(&app, "v1", &format!("{host}/apps/web:v1"));
    engine.login(host, ADMIN.0, ADMIN.1);
    engine.docker_ok(&["push", &format!("{host}/base/os:v1")]);
    let pushed = engine.docker_ok(&["push", &format!("{host}/apps/web:v1")]);
    // dockerd remembers where it pushed each layer and asks to mount it (`POST ?mount=&from=`
    // with a token for both repositories); the registry answers 201 and docker says so.
    let mounted = pushed.lines().filter(|l| l.contains("Mounted from base/os")).count();
    assert_eq!(mounted, 2, "both shared layers are mounted, not uploaded again:\n{pushed}");
    if let Some(log) = target.log() {
        let mounts: Vec<&String> =
            log.iter().filter(|l| l.starts_with("POST /v2/apps/web/blobs/uploads/ 201")).collect();
        assert_eq!(mounts.len(), 2, "two mounts answered 201 in the request log: {log:#?}");
        let uploads = log.iter().filter(|l| l.starts_with("PATCH /v2/apps/web/blobs/uploads/")).count();
        assert_eq!(uploads, 2, "only the own layer and the config are uploaded: {log:#?}");
    }
    // The second repository serves the image whole: pull it back after removing it locally.
    let id = engine.image_id(&format!("{host}/apps/web:v1"));
    engine.docker_ok(&["rmi", &format!("{host}/apps/web:v1"), &format!("{host}/base/os:v1")]);
    engine.docker_ok(&["pull", &format!("{host}/apps/web:v1")]);
    assert_eq!(engine.image_id(&format!("{host}/apps/web:v1")), id);
}

#[test]
fn dockerd_pushing_to_a_second_repository_mounts_the_shared_layers() {
    dockerd_cross_repository_journey(&Target::runner(true));
}

#[test]
fn under_spin_dockerd_pushing_to_a_second_repository_mounts_the_shared_layers() {
    let Some(target) = Target::spin(true) else { return };
    dockerd_cross_repository_journey(&target);
}

// ---- dockerd: an image with a 1 GiB layer ---------------------------------------------------

struct Figures {
    push_s: f64,
    pull_s: f64,
    peak_rss: u64,
}

/// Push the loaded `local` image to `host` as `remote`, remove it locally, pull it back (the
/// image ID must not change); the timings and the peak RSS of `pid` after push and pull.
fn push_and_pull_timed(engine: &Dockerd, local: &str, remote: &str, pid: u32) -> Figures {
    let id = engine.image_id(local);
    engine.docker_ok(&["tag", local, remote]);
    // The peak of the push and pull alone (not the component's compilation at start).
    reset_peak_rss(pid);
    let started = Instant::now();
    // dockerd sends each layer as one streamed PATCH (no Content-Length).
    engine.docker_ok(&["push", remote]);
    let push_s = started.elapsed().as_secs_f64();
    let peak_rss = peak_rss_of(pid);
    engine.docker_ok(&["rmi", remote, local]);
    let started = Instant::now();
    engine.docker_ok(&["pull", remote]);
    let pull_s = started.elapsed().as_secs_f64();
    assert_eq!(engine.image_id(remote), id, "the 1 GiB image comes back with its image ID");
    engine.docker_ok(&["tag", remote, local]);
    engine.docker_ok(&["rmi", remote]);
    Figures { push_s, pull_s, peak_rss }
}

/// The 1 GiB journeys take turns: each holds about 4 GiB on disk at its peak (the engine's copy,
/// the registry's, the pulled copy and Distribution's), and two at once filled a CI machine's
/// disk.
static ONE_GIB_JOURNEY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Disk a 1 GiB journey needs free when it starts (its peak and a margin for the other tests).
const ONE_GIB_JOURNEY_DISK: u64 = 6 << 30;

/// Load the 1 GiB image into `engine` as `local/big:v1` (the layout written for it is removed
/// once loaded, to keep the journey's disk to what the engine and registries hold).
fn load_gib_image(engine: &Dockerd) {
    let work = tempfile::tempdir().unwrap();
    assert_free_disk(work.path(), ONE_GIB_JOURNEY_DISK);
    gib_layout(&work.path().join("image"));
    engine.load_layout(&work.path().join("image"), "v1", "local/big:v1");
}

fn gib_layout(dir: &Path) -> Written {
    let started = Instant::now();
    let layout = Layout::create(dir);
    let manifest = layout.image(31, "amd64", &[1 << 30, 10_000]);
    layout.tag(&manifest, OCI_MANIFEST, "v1");
    println!("1 GiB test image written in {:.1} s", started.elapsed().as_secs_f64());
    manifest
}

fn report(name: &str, figures: &Figures) {
    println!(
        "FIGURES {name}: dockerd push of the 1 GiB layer {:.1} s, pull {:.1} s, registry peak RSS {:.1} MiB",
        figures.push_s,
        figures.pull_s,
        mib(figures.peak_rss)
    );
}

#[test]
fn dockerd_pushes_and_pulls_a_1_gib_layer_in_under_64_mib_next_to_distribution() {
    let _turn = ONE_GIB_JOURNEY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // The bound is a serving runner's, one that loads its compiled component from the cache as a
    // restarted runner does: when this test runs first in a fresh clone, a runner started and
    // stopped here compiles it. (A runner that compiles at start keeps about 37 MiB more
    // resident after its compiler's peak, even with the peak itself not counted.)
    drop(start_registry(RunnerOptions::default()));
    let target = Target::runner(true);
    let _ca = target.docker_ca();
    let engine = Dockerd::start();
    load_gib_image(&engine);
    engine.login(&target.host, ADMIN.0, ADMIN.1);
    let berth = push_and_pull_timed(&engine, "local/big:v1", &format!("{}/big/image:v1", target.host), target.pid());
    report("berth-runner (HTTPS, token auth)", &berth);

    // The same image and engine against CNCF Distribution (same certificate, no auth).
    if Path::new("/usr/bin/docker-registry").is_file() || std::env::var_os("BERTH_TEST_DISTRIBUTION").is_some() {
        let certs_dir = tempfile::tempdir().unwrap();
        let certs = make_certs(certs_dir.path());
        let distribution = Distribution::start(&certs);
        let _distribution_ca = DockerCa::install(&distribution.host, &certs.ca);
        let reference = format!("{}/big/image:v1", distribution.host);
        let figures = push_and_pull_timed(&engine, "local/big:v1", &reference, distribution.pid());
        report("CNCF Distribution 2.8 (HTTPS, no auth)", &figures);
    } else {
        println!("/usr/bin/docker-registry is missing (apt-get install docker-registry): no Distribution figures");
    }
    assert!(
        berth.peak_rss < 64 << 20,
        "the runner streams docker's PATCH: peak RSS {:.1} MiB for a 1 GiB layer",
        mib(berth.peak_rss)
    );
}

#[test]
fn under_spin_dockerd_pushes_and_pulls_a_1_gib_layer() {
    let _turn = ONE_GIB_JOURNEY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(target) = Target::spin(true) else { return };
    let _ca = target.docker_ca();
    let engine = Dockerd::start();
    load_gib_image(&engine);
    engine.login(&target.host, ADMIN.0, ADMIN.1);
    let figures = push_and_pull_timed(&engine, "local/big:v1", &format!("{}/big/image:v1", target.host), target.pid());
    // Spin's own memory (its runtime, the SQLite key-value store) is not Berth's to bound:
    // reported, not asserted.
    report("berth under spin up (HTTPS, token auth, key-value blob provider)", &figures);
}

// ---- containerd: ctr pull (one platform, all platforms) and push with --user ----------------

/// Write an OCI archive of a layout's `tag` (for `ctr image import`).
fn oci_archive(layout: &Path, tag: &str, archive: &Path) {
    let args =
        s(&["copy", &format!("oci:{}:{tag}", layout.display()), &format!("oci-archive:{}:{tag}", archive.display())]);
    let output = run_client("skopeo", &args);
    assert_success("skopeo", &args, &output);
}

/// Copy a layout to the registry with skopeo as [`ADMIN`] (setup for the pulls).
fn skopeo_push(target: &Target, layout: &Path, image: &str, all: bool) {
    let mut args = s(&["copy", "--dest-creds", &format!("{}:{}", ADMIN.0, ADMIN.1)]);
    match &target.certs {
        // The CA's folder holds only ca.crt (see certs_in).
        Some(certs) => args.push(format!("--dest-cert-dir={}", certs.ca.parent().unwrap().display())),
        None => args.push("--dest-tls-verify=false".into()),
    }
    if all {
        args.push("--all".into());
    }
    args.extend([format!("oci:{}:v1", layout.display()), format!("docker://{}/{image}", target.host)]);
    let output = run_client("skopeo", &args);
    assert_success("skopeo", &args, &output);
}

/// The digest `ctr image ls` shows for `reference`.
fn ctr_image_digest(containerd: &Containerd, namespace: &str, reference: &str) -> String {
    let listing = containerd.ctr_ok(namespace, &["image", "ls"]);
    let line =
        listing.lines().find(|l| l.starts_with(reference)).unwrap_or_else(|| panic!("{reference} in:\n{listing}"));
    line.split_whitespace().find(|w| w.starts_with("sha256:")).unwrap().to_owned()
}

/// `transport` is `--plain-http` or `--hosts-dir=<dir>`.
fn ctr_journey(target: &Target, transport: &str) {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let host = &target.host;
    let user = format!("--user={}:{}", ADMIN.0, ADMIN.1);

    // ctr image push: import an image (no registry labels: a real upload follows, containerd's
    // POST then one PUT with the body), push it with --user.
    let single = work.path().join("single");
    let manifest = common::clients::single_image(&single, 41, &[250_000, 600_000]);
    oci_archive(&single, "v1", &work.path().join("single.tar"));
    containerd.ctr_ok(
        "push",
        &[
            "image",
            "import",
            "--base-name",
            &format!("{host}/team/single"),
            &work.path().join("single.tar").display().to_string(),
        ],
    );
    let reference = format!("{host}/team/single:v1");
    let anonymous = containerd.ctr("push", &["image", "push", transport, &reference]);
    assert!(!anonymous.status.success(), "push without --user is refused under token auth");
    containerd.ctr_ok("push", &["image", "push", transport, &user, &reference]);
    if let Some(log) = target.log() {
        let puts =
            log.iter().filter(|l| l.starts_with("PUT /v2/team/single/blobs/uploads/") && l.contains(" 201 ")).count();
        assert_eq!(puts, 3, "config and two layers uploaded, each with one PUT: {log:#?}");
    }

    // ctr image pull of a single-platform image, into a namespace of its own (content is not
    // shared between namespaces here: the pull downloads every blob).
    let wrong = containerd.ctr("pull", &["image", "pull", transport, &format!("--user={}:wrong", ADMIN.0), &reference]);
    assert!(!wrong.status.success(), "a wrong password is refused");
    containerd.ctr_ok("pull", &["image", "pull", transport, &user, &reference]);
    assert_eq!(ctr_image_digest(&containerd, "pull", &reference), manifest.digest);
    let content = containerd.ctr_ok("pull", &["content", "ls"]);
    let layers: Vec<String> = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(single.join("blobs/sha256").join(&manifest.digest[7..])).unwrap(),
    )
    .unwrap()["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    for layer in &layers {
        assert!(content.contains(layer.as_str()), "layer {layer} was pulled:\n{content}");
    }

    // ctr image pull --all-platforms of a two-platform index: the index and both images.
    let multi = work.path().join("multi");
    let layout = Layout::create(&multi);
    let amd64 = layout.image(42, "amd64", &[200_000]);
    let arm64 = layout.image(43, "arm64", &[210_000]);
    let index = layout.index(&[(&amd64, "amd64"), (&arm64, "arm64")]);
    layout.tag(&index, OCI_INDEX, "v1");
    skopeo_push(target, &multi, "team/multi:v1", true);
    let multi_ref = format!("{host}/team/multi:v1");
    containerd.ctr_ok("all", &["image", "pull", transport, &user, "--all-platforms", &multi_ref]);
    assert_eq!(ctr_image_digest(&containerd, "all", &multi_ref), index.digest);
    let content = containerd.ctr_ok("all", &["content", "ls"]);
    for digest in [&index.digest, &amd64.digest, &arm64.digest] {
        assert!(content.contains(digest.as_str()), "{digest} was pulled:\n{content}");
    }
}

#[test]
fn ctr_pulls_an_image_and_an_index_with_all_platforms_and_pushes_with_user_against_token_auth() {
    // ctr 1.6 speaks plain HTTP to loopback registries.
    ctr_journey(&Target::runner(false), "--plain-http");
}

#[test]
fn under_spin_ctr_pulls_an_image_and_an_index_with_all_platforms_and_pushes_with_user_against_token_auth() {
    let Some(target) = Target::spin(false) else { return };
    ctr_journey(&target, "--plain-http");
}

/// HTTPS for ctr through `hosts.toml` in a hosts dir: `server` and the CA of this registry.
fn hosts_dir(target: &Target, dir: &Path) -> String {
    let host = &target.host;
    let folder = dir.join(host);
    std::fs::create_dir_all(&folder).unwrap();
    let ca = target.certs.as_ref().unwrap().ca.display().to_string();
    let toml = format!(
        "server = \"https://{host}\"\n[host.\"https://{host}\"]\n  ca = {ca:?}\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n"
    );
    std::fs::write(folder.join("hosts.toml"), toml).unwrap();
    format!("--hosts-dir={}", dir.display())
}

#[test]
fn ctr_pulls_and_pushes_over_https_through_hosts_toml() {
    let target = Target::runner(true);
    let dir = tempfile::tempdir().unwrap();
    ctr_journey(&target, &hosts_dir(&target, dir.path()));
    let log = target.log().unwrap();
    assert!(log.iter().any(|l| l.starts_with("GET /v2/team/multi/manifests/")), "{log:#?}");
}

#[test]
fn under_spin_ctr_pulls_and_pushes_over_https_through_hosts_toml() {
    let Some(target) = Target::spin(true) else { return };
    let dir = tempfile::tempdir().unwrap();
    ctr_journey(&target, &hosts_dir(&target, dir.path()));
}

/// `up --tls auto`: after the docker command `up` prints (run as printed, as root), dockerd
/// pushes to and pulls from the registry over HTTPS.
#[test]
fn with_tls_auto_dockerd_pushes_and_pulls_after_the_printed_command() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start_with(dir.path(), RunnerOptions { args: s(&["--tls", "auto"]), ..Default::default() });
    let host = runner.addr();
    let engine = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    multi_layer_layout(&work.path().join("image"), 12);
    let reference = format!("{host}/auto/app:v1");
    engine.load_layout(&work.path().join("image"), "v1", &reference);
    let id = engine.image_id(&reference);
    // (dockerd takes 127.0.0.0/8 for an insecure registry whatever it is told, so here it would
    // push without the CA too: skopeo and podman show that the CA is what makes the trust,
    // tests/clients.rs; this shows the printed command, and docker over HTTPS with it.)
    let _trusted = DockerCa::removed_when_dropped(&host);
    run_trust_command(&runner, "docker", &host, None);
    engine.docker_ok(&["push", &reference]);
    engine.docker_ok(&["rmi", &reference]);
    engine.docker_ok(&["pull", &reference]);
    assert_eq!(engine.image_id(&reference), id);
}

/// `up --tls auto`: containerd pulls from the registry after the containerd command `up` prints
/// (run as printed, with `/etc/containerd` standing in a folder of the test's own), and refuses
/// it before.
#[test]
fn with_tls_auto_containerd_pulls_after_the_printed_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runner = Runner::start_with(&data, RunnerOptions { args: s(&["--tls", "auto"]), ..Default::default() });
    let host = runner.addr();
    let etc = dir.path().join("etc-containerd");

    // An image to pull, pushed with the CA given to skopeo directly.
    let trust = dir.path().join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::copy(data.join("tls/ca.crt"), trust.join("ca.crt")).unwrap();
    let layout = dir.path().join("layout");
    multi_layer_layout(&layout, 13);
    let push = s(&[
        "copy",
        &format!("--dest-cert-dir={}", trust.display()),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{host}/auto/app:v1"),
    ]);
    assert_success("skopeo", &push, &run_client("skopeo", &push));

    let containerd = Containerd::start();
    let hosts_dir = format!("--hosts-dir={}", etc.join("certs.d").display());
    let reference = format!("{host}/auto/app:v1");
    let refused = containerd.ctr("berth", &["images", "pull", &hosts_dir, &reference]);
    assert!(!refused.status.success(), "before the command containerd does not trust the registry");
    run_trust_command(&runner, "containerd", &host, Some(("/etc/containerd", &etc)));
    containerd.ctr_ok("berth", &["images", "pull", &hosts_dir, &reference]);
}
