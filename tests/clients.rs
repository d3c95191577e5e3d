//! Real registry clients against the real component through the runner, over HTTP and over HTTPS
//! with a CA the client is told to trust (never `--tls-verify=false` on the HTTPS leg).
//! `.ci/run` installs skopeo, podman, buildah and umoci from Debian; a missing client fails the
//! test with the reason, it never skips silently.

mod common;

use common::clients::*;
use common::oci_layout::Layout;
use common::*;
use std::process::Command;

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
    leg.push_layout(&src, "v1", "a/app:v1", false);
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
    leg.push_layout(&src, "v1", "many/layers:v1", false);
    let out = leg.work.join("out");
    leg.pull_to("many/layers:v1", &format!("oci:{}:v1", out.display()), false);
    assert_eq!(blobs_in(&out), blobs_in(&src));
    assert_eq!(blobs_in(&out).len(), 102);
}

#[tokio::test]
async fn skopeo_pushes_and_pulls_a_1_gib_layer_with_bounded_runner_memory() {
    let leg = Leg::http();
    let src = leg.work.join("src");
    single_image(&src, 7, &[1 << 30]);
    let idle = leg.runner.rss();
    leg.push_layout(&src, "v1", "big/layer:v1", false);
    let out = leg.work.join("out");
    leg.pull_to("big/layer:v1", &format!("oci:{}:v1", out.display()), false);
    assert_eq!(blobs_in(&out), blobs_in(&src), "the 1 GiB layer comes back byte-identical");
    let peak = leg.runner.peak_rss();
    println!("runner RSS: idle {} MiB, peak over a 1 GiB layer push + pull with skopeo {} MiB", idle >> 20, peak >> 20);
    assert!(peak < 256 << 20, "the runner streams: peak RSS {} MiB for a 1 GiB layer", peak >> 20);
}

async fn podman_push_pull(leg: Leg) {
    let src = leg.work.join("src");
    single_image(&src, 6, &[80_000]);
    leg.push_layout(&src, "v1", "pod/app:v1", false);
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

async fn podman_search_lists_tags(leg: Leg) {
    let src = leg.work.join("src");
    single_image(&src, 7, &[1000]);
    leg.push_layout(&src, "v1", "find/me:v1", false);
    let output = leg.podman_search(&["--list-tags", &format!("{}/find/me", leg.host)]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("v1"), "{}", String::from_utf8_lossy(&output.stdout));
}

#[tokio::test]
async fn podman_search_lists_tags_over_http() {
    podman_search_lists_tags(Leg::http()).await;
}

#[tokio::test]
async fn podman_search_lists_tags_over_https() {
    podman_search_lists_tags(Leg::https()).await;
}

async fn docker_cli_inspects_a_manifest_and_an_index(leg: Leg) {
    let src = leg.work.join("src");
    let layout = Layout::create(&src);
    let amd = layout.image(8, "amd64", &[1000]);
    let arm = layout.image(9, "arm64", &[1000]);
    let index = layout.index(&[(&amd, "amd64"), (&arm, "arm64")]);
    layout.tag(&index, OCI_INDEX, "multi");
    leg.push_layout(&src, "multi", "dock/multi:v1", true);
    let single = leg.work.join("single");
    single_image(&single, 8, &[1000]);
    leg.push_layout(&single, "v1", "dock/single:v1", false);
    let output = leg.docker_manifest("inspect", &[&format!("{}/dock/multi:v1", leg.host)]);
    let inspected: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(inspected["manifests"].as_array().unwrap().len(), 2, "the index: {inspected}");
    let output = leg.docker_manifest("inspect", &[&format!("{}/dock/single:v1", leg.host)]);
    let inspected: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(inspected["layers"].as_array().unwrap().len(), 1, "the image: {inspected}");
}

#[tokio::test]
async fn docker_cli_inspects_a_manifest_and_an_index_over_http() {
    docker_cli_inspects_a_manifest_and_an_index(Leg::http()).await;
}

#[tokio::test]
async fn docker_cli_inspects_a_manifest_and_an_index_over_https() {
    docker_cli_inspects_a_manifest_and_an_index(Leg::https()).await;
}

#[tokio::test]
async fn umoci_unpacks_an_image_pulled_from_berth() {
    let leg = Leg::http();
    let src = leg.work.join("src");
    single_image(&src, 10, &[4096]);
    leg.push_layout(&src, "v1", "fs/app:v1", false);
    let pulled = leg.work.join("pulled");
    leg.pull_to("fs/app:v1", &format!("oci:{}:v1", pulled.display()), false);
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
        ensure_installed("buildah");
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
    leg.push_layout(&src, "amd64", "plat/app:amd64", false);
    layout.tag(&arm, OCI_MANIFEST, "arm64");
    leg.push_layout(&src, "arm64", "plat/app:arm64", false);
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

async fn docker_cli_creates_and_pushes_a_manifest_list(leg: Leg) {
    let src = leg.work.join("src");
    let layout = Layout::create(&src);
    let amd = layout.image(14, "amd64", &[1000]);
    layout.tag(&amd, OCI_MANIFEST, "v1");
    leg.skopeo_ok(&with(
        s(&["copy", "--format=v2s2", &format!("oci:{}:v1", src.display()), &leg.image("dl/app:amd64")]),
        leg.skopeo_tls("dest"),
    ));
    let list = format!("{}/dl/app:list", leg.host);
    leg.docker_manifest("create", &[&list, &format!("{}/dl/app:amd64", leg.host)]);
    leg.docker_manifest("push", &[&list]);
    let raw = leg.skopeo_ok(&with(s(&["inspect", "--raw", &leg.image("dl/app:list")]), leg.skopeo_tls_plain()));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
}

#[tokio::test]
async fn docker_cli_creates_and_pushes_a_manifest_list_over_http() {
    // Over HTTP only: with the test CA in /etc/docker/certs.d (as for `docker manifest inspect`
    // over HTTPS, which passes), the engine-free docker CLI (28.2) `manifest push` still
    // aborts the TLS handshake and retries over plain HTTP ("error pinging v2 registry"); its
    // only other way in is --insecure, which the HTTPS leg must not use.
    println!("docker manifest push runs over HTTP only: see the comment in this test");
    docker_cli_creates_and_pushes_a_manifest_list(Leg::http()).await;
}

/// `skopeo` or `podman` trusting what `etc` (standing for `/etc/containers`) holds, as if it were
/// the system's: its `certs.d` bind-mounted over the system one in a private mount namespace,
/// or, where there is none, given as the certificate folder for `host`.
fn trusting_etc(program: &str, args: &[String], etc: &std::path::Path, host: &str, flag: &str) -> std::process::Output {
    ensure_installed(program);
    if let Some(output) = run_with_binds(program, args, &[(&etc.join("certs.d"), "/etc/containers/certs.d")]) {
        return output;
    }
    let mut args = args.to_vec();
    args.insert(1, format!("--{flag}={}", etc.join("certs.d").join(host).display()));
    Command::new(program).args(&args).output().unwrap()
}

/// `up --tls auto`: HTTPS from a local CA kept in the data folder; the commands `up` prints make
/// skopeo and podman trust it (run as printed, with `/etc/containers` standing in a folder of
/// the test's own), and a restart keeps the same CA.
#[test]
fn with_tls_auto_skopeo_and_podman_trust_the_registry_after_the_printed_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = || RunnerOptions { args: s(&["--tls", "auto"]), ..Default::default() };
    let runner = Runner::start_with(&data, options());
    assert!(runner.url.starts_with("https://"), "{}", runner.url);
    let host = runner.addr();
    let etc = dir.path().join("etc-containers");
    run_trust_command(&runner, "podman, skopeo, buildah", &host, Some(("/etc/containers", &etc)));

    let layout = dir.path().join("layout");
    let image = single_image(&layout, 91, &[30_000]);
    let push = s(&["copy", &format!("oci:{}:v1", layout.display()), &format!("docker://{host}/auto/app:v1")]);
    let untrusted = Command::new("skopeo").args(&push).output().unwrap();
    assert!(!untrusted.status.success(), "without the CA the push must fail");
    let pushed = trusting_etc("skopeo", &push, &etc, &host, "dest-cert-dir");
    assert_success("skopeo", &push, &pushed);

    let podman_root = dir.path().join("podman");
    // podman takes its storage flags before the command.
    let pull = [
        format!("--root={}", podman_root.join("root").display()),
        format!("--runroot={}", podman_root.join("run").display()),
        "--storage-driver=vfs".to_owned(),
        "pull".to_owned(),
        format!("{host}/auto/app:v1"),
    ];
    let pulled = trusting_etc("podman", &pull, &etc, &host, "cert-dir");
    assert_success("podman", &pull, &pulled);

    // A restart keeps the CA: the clients' trust holds.
    let ca = std::fs::read(data.join("tls/ca.crt")).unwrap();
    drop(runner);
    let runner = Runner::start_with(&data, options());
    assert_eq!(std::fs::read(data.join("tls/ca.crt")).unwrap(), ca);
    let host = runner.addr();
    let inspect = s(&["inspect", "--raw", &format!("docker://{host}/auto/app:v1")]);
    let inspected = trusting_etc("skopeo", &inspect, &etc, &host, "cert-dir");
    // The new port is another host for the certs.d folder: trust it as printed again.
    let inspected = if inspected.status.success() {
        inspected
    } else {
        run_trust_command(&runner, "podman, skopeo, buildah", &host, Some(("/etc/containers", &etc)));
        trusting_etc("skopeo", &inspect, &etc, &host, "cert-dir")
    };
    assert_success("skopeo", &inspect, &inspected);
    assert_eq!(format!("sha256:{}", sha256(&inspected.stdout).trim_start_matches("sha256:")), image.digest);
}
