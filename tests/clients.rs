//! Real registry clients against the real component through the runner, over HTTP and over HTTPS
//! with a CA the client is told to trust (never `--tls-verify=false` on the HTTPS leg).
//! `.ci/run` installs skopeo, podman, buildah and umoci from Debian; a missing client fails the
//! test with the reason, it never skips silently.

mod common;

use common::oci_layout::{Layout, Written, file_sha256};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A runner and how a client reaches it.
struct Leg {
    _dir: tempfile::TempDir,
    runner: Runner,
    /// `host:port`
    host: String,
    /// Holds `ca.crt` on the HTTPS leg.
    cert_dir: Option<PathBuf>,
    work: PathBuf,
}

impl Leg {
    fn http() -> Leg {
        let dir = tempfile::tempdir().unwrap();
        let runner = Runner::start(&dir.path().join("data"));
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Leg { host: runner.addr(), runner, cert_dir: None, work, _dir: dir }
    }

    fn https() -> Leg {
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs");
        std::fs::create_dir_all(&certs_dir).unwrap();
        let certs = make_certs(&certs_dir);
        // Clients read every *.crt in the folder as a CA: keep only the CA there.
        let cert_dir = dir.path().join("trust");
        std::fs::create_dir_all(&cert_dir).unwrap();
        std::fs::copy(&certs.ca, cert_dir.join("ca.crt")).unwrap();
        let options = RunnerOptions { tls: Some((&certs.cert, &certs.key)), ..Default::default() };
        let runner = Runner::start_with(&dir.path().join("data"), options);
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Leg { host: runner.addr(), runner, cert_dir: Some(cert_dir), work, _dir: dir }
    }

    fn image(&self, repo_and_tag: &str) -> String {
        format!("docker://{}/{repo_and_tag}", self.host)
    }

    /// Trust flags for skopeo, as `src` or `dest` side.
    fn skopeo_tls(&self, side: &str) -> Vec<String> {
        match &self.cert_dir {
            Some(dir) => vec![format!("--{side}-cert-dir={}", dir.display())],
            None => vec![format!("--{side}-tls-verify=false")],
        }
    }

    fn skopeo_tls_plain(&self) -> Vec<String> {
        match &self.cert_dir {
            Some(dir) => vec![format!("--cert-dir={}", dir.display())],
            None => vec!["--tls-verify=false".into()],
        }
    }

    /// skopeo with a blob-info cache of this test's own (bind-mounted over the system one in a
    /// private mount namespace): pushes really upload instead of trusting what other runs
    /// remembered, while what this test pushed is remembered (so skopeo can mount across
    /// repositories as it does in real use).
    fn skopeo(&self, args: &[String]) -> Output {
        let system_cache = "/var/lib/containers/cache";
        let own_cache = self.work.join("blob-info-cache");
        std::fs::create_dir_all(system_cache).unwrap();
        std::fs::create_dir_all(&own_cache).unwrap();
        let script = format!("mount --bind '{}' {system_cache} && exec skopeo \"$@\"", own_cache.display());
        let output = Command::new("unshare").arg("-m").arg("sh").arg("-c").arg(&script).arg("sh").args(args).output();
        match output {
            Ok(output) if !String::from_utf8_lossy(&output.stderr).contains("mount:") => output,
            // No private mount namespace here: run skopeo as it is (its cache may then let it skip
            // uploads of blobs it has seen before; the tests still check the results).
            _ => run_client("skopeo", args),
        }
    }

    fn skopeo_ok(&self, args: &[String]) -> Output {
        let output = self.skopeo(args);
        assert_success("skopeo", args, &output);
        output
    }

    fn podman(&self, args: &[&str]) -> Output {
        let root = self.work.join("podman");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("config.json"), "{}").unwrap();
        let mut full: Vec<String> = vec![
            format!("--root={}", root.join("root").display()),
            format!("--runroot={}", root.join("run").display()),
            "--storage-driver=vfs".into(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let output = Command::new("podman").args(&full).env("DOCKER_CONFIG", &root).output();
        let output = output.unwrap_or_else(|e| {
            panic!("podman could not run ({e}): .ci/run installs it from Debian (apt-get install podman)")
        });
        assert_success("podman", &full, &output);
        output
    }

    fn podman_tls(&self) -> String {
        match &self.cert_dir {
            Some(dir) => format!("--cert-dir={}", dir.display()),
            None => "--tls-verify=false".into(),
        }
    }
}

fn run_client(client: &str, args: &[String]) -> Output {
    Command::new(client).args(args).output().unwrap_or_else(|e| {
        panic!("{client} could not run ({e}): .ci/run installs it from Debian (apt-get install {client})")
    })
}

fn assert_success(client: &str, args: &[String], output: &Output) {
    assert!(
        output.status.success(),
        "{client} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn s(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

fn with(mut base: Vec<String>, more: Vec<String>) -> Vec<String> {
    base.extend(more);
    base
}

/// Blob digests of a `dir:` or `oci:` copy, checked against the file contents.
fn blobs_in(dir: &Path) -> Vec<String> {
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

fn single_image(dir: &Path, seed: u64, layers: &[u64]) -> Written {
    let layout = Layout::create(dir);
    let manifest = layout.image(seed, "amd64", layers);
    layout.tag(&manifest, OCI_MANIFEST, "v1");
    manifest
}

async fn skopeo_round_trip(leg: Leg) {
    let src = leg.work.join("src");
    let manifest = single_image(&src, 1, &[100_000, 2_000_000, 10]);
    let pushed = leg.image("team/app:v1");
    leg.skopeo_ok(&with(s(&["copy", &format!("oci:{}:v1", src.display()), &pushed]), leg.skopeo_tls("dest")));

    // Back to dir: and oci:, byte-identical blobs.
    let out_dir = leg.work.join("out-dir");
    leg.skopeo_ok(&with(s(&["copy", &pushed, &format!("dir:{}", out_dir.display())]), leg.skopeo_tls("src")));
    let out_oci = leg.work.join("out-oci");
    leg.skopeo_ok(&with(s(&["copy", &pushed, &format!("oci:{}:v1", out_oci.display())]), leg.skopeo_tls("src")));
    let source_blobs = blobs_in(&src);
    assert_eq!(blobs_in(&out_oci), source_blobs, "oci: copy has the same blobs");
    let dir_blobs = blobs_in(&out_dir);
    assert!(
        dir_blobs.iter().all(|b| source_blobs.contains(b)) && dir_blobs.len() == source_blobs.len() - 1,
        "dir: copy has the config and layers"
    );

    // inspect --raw gives the exact manifest bytes; inspect and list-tags work.
    let raw = leg.skopeo_ok(&with(s(&["inspect", "--raw", &pushed]), leg.skopeo_tls_plain()));
    assert_eq!(sha256(&raw.stdout), manifest.digest);
    let inspect = leg.skopeo_ok(&with(s(&["inspect", &pushed]), leg.skopeo_tls_plain()));
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["Digest"], manifest.digest.as_str());
    let tags = leg.skopeo_ok(&with(s(&["list-tags", &leg.image("team/app")]), leg.skopeo_tls_plain()));
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));

    // delete, then the image is gone.
    leg.skopeo_ok(&with(s(&["delete", &pushed]), leg.skopeo_tls_plain()));
    assert!(!leg.skopeo(&with(s(&["inspect", "--raw", &pushed]), leg.skopeo_tls_plain())).status.success());
}

#[tokio::test]
async fn skopeo_copies_an_image_in_and_out_over_http() {
    skopeo_round_trip(Leg::http()).await;
}

#[tokio::test]
async fn skopeo_copies_an_image_in_and_out_over_https() {
    skopeo_round_trip(Leg::https()).await;
}

async fn multi_arch(leg: Leg) {
    let src = leg.work.join("src");
    let layout = Layout::create(&src);
    let amd = layout.image(2, "amd64", &[50_000]);
    let arm = layout.image(3, "arm64", &[60_000]);
    let index = layout.index(&[(&amd, "amd64"), (&arm, "arm64")]);
    layout.tag(&index, OCI_INDEX, "multi");
    let pushed = leg.image("team/multi:v1");
    leg.skopeo_ok(&with(
        s(&["copy", "--all", &format!("oci:{}:multi", src.display()), &pushed]),
        leg.skopeo_tls("dest"),
    ));
    let raw = leg.skopeo_ok(&with(s(&["inspect", "--raw", &pushed]), leg.skopeo_tls_plain()));
    assert_eq!(sha256(&raw.stdout), index.digest, "the index comes back byte-identical");

    // podman picks the arm64 image out of the index.
    let reference = format!("{}/team/multi:v1", leg.host);
    let tls = leg.podman_tls();
    leg.podman(&["pull", "--arch=arm64", &tls, &reference]);
    let inspect = leg.podman(&["image", "inspect", &reference]);
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect[0]["Architecture"], "arm64");
}

#[tokio::test]
async fn skopeo_copy_all_and_podman_pull_arch_of_a_multi_arch_index_over_http() {
    multi_arch(Leg::http()).await;
}

#[tokio::test]
async fn skopeo_copy_all_and_podman_pull_arch_of_a_multi_arch_index_over_https() {
    multi_arch(Leg::https()).await;
}

#[tokio::test]
async fn skopeo_copies_between_repositories_by_mounting() {
    let leg = Leg::http();
    let src = leg.work.join("src");
    let manifest = single_image(&src, 4, &[300_000]);
    leg.skopeo_ok(&with(
        s(&["copy", &format!("oci:{}:v1", src.display()), &leg.image("a/app:v1")]),
        leg.skopeo_tls("dest"),
    ));
    let mut args = s(&["copy", &leg.image("a/app:v1"), &leg.image("b/app:v1")]);
    args.extend(leg.skopeo_tls("src"));
    args.extend(leg.skopeo_tls("dest"));
    leg.skopeo_ok(&args);
    let raw = leg.skopeo_ok(&with(s(&["inspect", "--raw", &leg.image("b/app:v1")]), leg.skopeo_tls_plain()));
    assert_eq!(sha256(&raw.stdout), manifest.digest);
    let mounted = leg.runner.log().iter().filter(|l| l.starts_with("POST /v2/b/app/blobs/uploads/ 201")).count();
    assert!(mounted >= 1, "blobs were mounted from a/app, not uploaded again: {:?}", leg.runner.log());
}

#[tokio::test]
async fn skopeo_pushes_and_pulls_a_100_layer_image() {
    let leg = Leg::http();
    let src = leg.work.join("src");
    let sizes: Vec<u64> = (0..100).map(|i| 1000 + i * 37).collect();
    single_image(&src, 5, &sizes);
    leg.skopeo_ok(&with(
        s(&["copy", &format!("oci:{}:v1", src.display()), &leg.image("many/layers:v1")]),
        leg.skopeo_tls("dest"),
    ));
    let out = leg.work.join("out");
    leg.skopeo_ok(&with(
        s(&["copy", &leg.image("many/layers:v1"), &format!("oci:{}:v1", out.display())]),
        leg.skopeo_tls("src"),
    ));
    assert_eq!(blobs_in(&out), blobs_in(&src));
    assert_eq!(blobs_in(&out).len(), 102);
}

async fn podman_push_pull(leg: Leg) {
    let src = leg.work.join("src");
    single_image(&src, 6, &[80_000]);
    leg.skopeo_ok(&with(
        s(&["copy", &format!("oci:{}:v1", src.display()), &leg.image("pod/app:v1")]),
        leg.skopeo_tls("dest"),
    ));
    let tls = leg.podman_tls();
    let source = format!("{}/pod/app:v1", leg.host);
    let target = format!("{}/pod/copy:v2", leg.host);
    leg.podman(&["pull", &tls, &source]);
    leg.podman(&["tag", &source, &target]);
    leg.podman(&["push", &tls, &target]);
    let raw = leg.skopeo_ok(&with(s(&["inspect", &leg.image("pod/copy:v2")]), leg.skopeo_tls_plain()));
    let raw: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(raw["Architecture"], "amd64");
}

#[tokio::test]
async fn podman_pulls_tags_and_pushes_over_http() {
    podman_push_pull(Leg::http()).await;
}

#[tokio::test]
async fn podman_pulls_tags_and_pushes_over_https() {
    podman_push_pull(Leg::https()).await;
}

#[tokio::test]
async fn podman_search_lists_tags() {
    // podman 4.3's search has no --cert-dir, so this runs over HTTP only.
    let leg = Leg::http();
    let src = leg.work.join("src");
    single_image(&src, 7, &[1000]);
    leg.skopeo_ok(&with(
        s(&["copy", &format!("oci:{}:v1", src.display()), &leg.image("find/me:v1")]),
        leg.skopeo_tls("dest"),
    ));
    let output = leg.podman(&["search", "--list-tags", "--tls-verify=false", &format!("{}/find/me", leg.host)]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("v1"), "{}", String::from_utf8_lossy(&output.stdout));
}

#[tokio::test]
async fn docker_cli_inspects_a_manifest_and_an_index() {
    let leg = Leg::http();
    let src = leg.work.join("src");
    let layout = Layout::create(&src);
    let amd = layout.image(8, "amd64", &[1000]);
    let arm = layout.image(9, "arm64", &[1000]);
    let index = layout.index(&[(&amd, "amd64"), (&arm, "arm64")]);
    layout.tag(&index, OCI_INDEX, "multi");
    leg.skopeo_ok(&with(
        s(&["copy", "--all", &format!("oci:{}:multi", src.display()), &leg.image("dock/multi:v1")]),
        leg.skopeo_tls("dest"),
    ));
    let config = leg.work.join("docker");
    std::fs::create_dir_all(&config).unwrap();
    let output = Command::new("docker")
        .args([
            "--config",
            &config.display().to_string(),
            "manifest",
            "inspect",
            "--insecure",
            &format!("{}/dock/multi:v1", leg.host),
        ])
        .output()
        .expect("the docker CLI is on this machine");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let inspected: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(inspected["manifests"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn umoci_unpacks_an_image_pulled_from_berth() {
    let leg = Leg::http();
    let src = leg.work.join("src");
    single_image(&src, 10, &[4096]);
    leg.skopeo_ok(&with(
        s(&["copy", &format!("oci:{}:v1", src.display()), &leg.image("fs/app:v1")]),
        leg.skopeo_tls("dest"),
    ));
    let pulled = leg.work.join("pulled");
    leg.skopeo_ok(&with(
        s(&["copy", &leg.image("fs/app:v1"), &format!("oci:{}:v1", pulled.display())]),
        leg.skopeo_tls("src"),
    ));
    let bundle = leg.work.join("bundle");
    let output = run_client(
        "umoci",
        &s(&["unpack", "--rootless", "--image", &format!("{}:v1", pulled.display()), &bundle.display().to_string()]),
    );
    assert_success("umoci", &[], &output);
    let file = bundle.join("rootfs/data/file-10000.bin");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        PseudoRandom::bytes(10_000, 4096),
        "the unpacked file has the layer's bytes"
    );
}

async fn buildah_push(leg: Leg) {
    // buildah names an image pulled from a layout after its path, which must be lowercase (the
    // temp dirs are not): use a lowercase path of our own.
    let src =
        std::env::temp_dir().join(format!("berth-buildah-{}-{}", std::process::id(), u8::from(leg.cert_dir.is_some())));
    let _ = std::fs::remove_dir_all(&src);
    single_image(&src, 11, &[20_000]);
    let root = leg.work.join("buildah");
    let storage = [
        format!("--root={}", root.join("root").display()),
        format!("--runroot={}", root.join("run").display()),
        "--storage-driver=vfs".into(),
    ];
    let buildah = |args: &[String]| {
        let full: Vec<String> = storage.iter().cloned().chain(args.iter().cloned()).collect();
        let output = Command::new("buildah").args(&full).output().unwrap_or_else(|e| {
            panic!("buildah could not run ({e}): .ci/run installs it from Debian (apt-get install buildah)")
        });
        assert_success("buildah", &full, &output);
        output
    };
    let pulled = buildah(&s(&["pull", "--quiet", &format!("oci:{}:v1", src.display())]));
    let image_id = String::from_utf8_lossy(&pulled.stdout)
        .lines()
        .last()
        .expect("buildah pull prints the image id")
        .trim()
        .to_owned();
    let tls = match &leg.cert_dir {
        Some(dir) => format!("--cert-dir={}", dir.display()),
        None => "--tls-verify=false".into(),
    };
    buildah(&s(&["push", &tls, &image_id, &leg.image("built/app:v1")]));
    let _ = std::fs::remove_dir_all(&src);
    let inspect = leg.skopeo_ok(&with(s(&["inspect", &leg.image("built/app:v1")]), leg.skopeo_tls_plain()));
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["Architecture"], "amd64");
}

#[tokio::test]
async fn buildah_pushes_over_http() {
    buildah_push(Leg::http()).await;
}

#[tokio::test]
async fn buildah_pushes_over_https() {
    buildah_push(Leg::https()).await;
}

async fn podman_manifest_push_all(leg: Leg) {
    let src = leg.work.join("src");
    let layout = Layout::create(&src);
    let amd = layout.image(12, "amd64", &[3000]);
    let arm = layout.image(13, "arm64", &[4000]);
    layout.tag(&amd, OCI_MANIFEST, "amd64");
    leg.skopeo_ok(&with(
        s(&["copy", &format!("oci:{}:amd64", src.display()), &leg.image("plat/app:amd64")]),
        leg.skopeo_tls("dest"),
    ));
    layout.tag(&arm, OCI_MANIFEST, "arm64");
    leg.skopeo_ok(&with(
        s(&["copy", &format!("oci:{}:arm64", src.display()), &leg.image("plat/app:arm64")]),
        leg.skopeo_tls("dest"),
    ));
    let tls = leg.podman_tls();
    let list = "localhost/plat-list:v1";
    leg.podman(&["manifest", "create", list]);
    for arch in ["amd64", "arm64"] {
        leg.podman(&["manifest", "add", &tls, list, &leg.image(&format!("plat/app:{arch}"))]);
    }
    leg.podman(&["manifest", "push", "--all", &tls, list, &leg.image("plat/app:multi")]);
    let raw = leg.skopeo_ok(&with(s(&["inspect", "--raw", &leg.image("plat/app:multi")]), leg.skopeo_tls_plain()));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let digests: Vec<&str> =
        index["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert!(digests.contains(&amd.digest.as_str()) && digests.contains(&arm.digest.as_str()), "{index}");
}

#[tokio::test]
async fn podman_manifest_create_and_push_all_over_http() {
    podman_manifest_push_all(Leg::http()).await;
}

#[tokio::test]
async fn podman_manifest_create_and_push_all_over_https() {
    podman_manifest_push_all(Leg::https()).await;
}

#[tokio::test]
async fn docker_cli_creates_and_pushes_a_manifest_list() {
    // The engine-free docker CLI talks to an HTTP registry with --insecure (it treats 127/8 as
    // insecure); HTTPS with a private CA would need /etc/docker/certs.d, outside a test's reach.
    let leg = Leg::http();
    let src = leg.work.join("src");
    let layout = Layout::create(&src);
    let amd = layout.image(14, "amd64", &[1000]);
    layout.tag(&amd, OCI_MANIFEST, "v1");
    leg.skopeo_ok(&with(
        s(&["copy", "--format=v2s2", &format!("oci:{}:v1", src.display()), &leg.image("dl/app:amd64")]),
        leg.skopeo_tls("dest"),
    ));
    let config = leg.work.join("docker");
    std::fs::create_dir_all(&config).unwrap();
    let docker = |args: &[&str]| {
        let output = Command::new("docker")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("the docker CLI is on this machine");
        assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output
    };
    let list = format!("{}/dl/app:list", leg.host);
    docker(&["manifest", "create", "--insecure", &list, &format!("{}/dl/app:amd64", leg.host)]);
    docker(&["manifest", "push", "--insecure", &list]);
    let raw = leg.skopeo_ok(&with(s(&["inspect", "--raw", &leg.image("dl/app:list")]), leg.skopeo_tls_plain()));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
}
