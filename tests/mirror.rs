//! Pull-through mirroring (issue 14) through berth-runner, against real upstreams on loopback:
//! CNCF Distribution (anonymous), a second Berth with token auth, and a small upstream that
//! corrupts a blob. skopeo pulls through the mirror; containerd-style `?ns=` and Docker-style
//! default-upstream paths are sent as those clients send them.

mod common;

use common::clients::{Leg, blobs_in, ensure_installed, s, single_image, with};
use common::process::{free_port, stop_by_pid, wait_until};
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// CNCF Distribution over plain HTTP on a free loopback port, anonymous, with its access log
/// kept (what the mirror asked of it).
struct Upstream {
    child: Option<Child>,
    host: String,
    /// Its access log (standard output): a line per request, `"GET /v2/... HTTP/1.1" 200 ...`.
    access: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Upstream {
    fn start() -> Upstream {
        ensure_installed("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = dir.path().join("registry.log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("access.log")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("docker-registry could not start: apt-get install docker-registry");
        wait_until("docker-registry", Duration::from_secs(30), &log, &mut child, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let access = dir.path().join("access.log");
        Upstream { child: Some(child), host: format!("127.0.0.1:{port}"), access, _dir: dir }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Requests of the access log whose line contains `what`.
    fn requests(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.access).unwrap_or_default().lines().filter(|l| l.contains(what)).count()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_by_pid(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Berth over HTTP mirroring `upstreams` (the `mirror_upstreams` value), which may reach
/// `hosts`.
fn mirror(upstreams: &str, hosts: &[&str], more: &[(&str, &str)]) -> Leg {
    let hosts = hosts.join(",");
    let mut pairs = vec![("mirror_upstreams", upstreams), ("mirror_outbound_hosts", hosts.as_str())];
    pairs.extend_from_slice(more);
    Leg::http_with(vars(&pairs))
}

/// Push a one-platform image (layers of the given sizes) as `image` (`repo:tag`) into a
/// registry at `host` over HTTP; its layout dir, with the manifest's digest.
fn push_image(
    work: &std::path::Path,
    host: &str,
    image: &str,
    seed: u64,
    layers: &[u64],
) -> (std::path::PathBuf, String) {
    let layout = work.join(format!("layout-{seed}"));
    std::fs::create_dir_all(&layout).unwrap();
    let manifest = single_image(&layout, seed, layers);
    let args = s(&[
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{host}/{image}"),
        "--dest-tls-verify=false",
    ]);
    let output = Command::new("skopeo").args(&args).output().unwrap();
    assert!(output.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    (layout, manifest.digest)
}

/// Push a one-platform image as `team/app:v1` into a Berth origin that wants credentials, as its
/// admin (skopeo); its layout dir.
fn push_as_admin(origin: &Leg, seed: u64, layers: &[u64]) -> std::path::PathBuf {
    push_as(origin, "admin", "team/app:v1", seed, layers).0
}

/// Push a one-platform image as `image` (`repo:tag`) into a Berth that wants credentials, as
/// `user` (password `secret`, skopeo); its layout dir and its manifest's digest.
fn push_as(leg: &Leg, user: &str, image: &str, seed: u64, layers: &[u64]) -> (std::path::PathBuf, String) {
    let layout = leg.work.join(format!("layout-{seed}"));
    std::fs::create_dir_all(&layout).unwrap();
    let manifest = single_image(&layout, seed, layers);
    let source = format!("oci:{}:v1", layout.display());
    let creds = format!("{user}:secret");
    let args = with(s(&["copy", "--dest-creds", &creds, &source, &leg.image(image)]), leg.skopeo_tls("dest"));
    leg.skopeo_ok(&args);
    (layout, manifest.digest)
}

#[tokio::test]
async fn a_pull_through_distribution_is_byte_identical_cached_and_served_while_the_upstream_is_down() {
    let mut upstream = Upstream::start();
    let leg = mirror(&format!("dist {} tag_ttl=0", upstream.origin()), &[&upstream.origin()], &[]);
    let (layout, digest) = push_image(&leg.work, &upstream.host, "team/app:v1", 1, &[300_000, 1_200_000]);
    push_image(&leg.work, &upstream.host, "team/app:v2", 2, &[1000]);

    // skopeo pulls the namespaced repository: every blob byte-identical to what was pushed.
    let out = leg.work.join("pulled");
    leg.pull_to("dist/team/app:v1", &format!("dir:{}", out.display()), false);
    let pulled = blobs_in(&out);
    for blob in blobs_in(&layout).iter().filter(|b| **b != digest) {
        assert!(pulled.contains(blob), "{blob} pulled through the mirror");
    }
    let blob_gets = upstream.requests("GET /v2/team/app/blobs/");
    assert!(blob_gets >= 3, "config and layers came from the upstream: {blob_gets}");

    // Cached: the tag list and the catalog show it, a Range request is served from the cache,
    // and a second pull fetches no blob from the upstream.
    let reg = Registry::new(&leg.runner);
    let tags = json(reg.get("/v2/dist/team/app/tags/list").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]), "{tags}");
    let catalog = json(reg.get("/v2/_catalog").await).await;
    assert!(catalog["repositories"].as_array().unwrap().contains(&"dist/team/app".into()), "{catalog}");
    let layer = blobs_in(&layout)
        .into_iter()
        .find(|b| {
            std::fs::metadata(layout.join("blobs/sha256").join(b.trim_start_matches("sha256:"))).unwrap().len()
                > 1_000_000
        })
        .unwrap();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(layer.trim_start_matches("sha256:"))).unwrap();
    let ranged = reg
        .http
        .get(reg.at(&format!("/v2/dist/team/app/blobs/{layer}")))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    let again = leg.work.join("again");
    leg.pull_to("dist/team/app:v1", &format!("dir:{}", again.display()), false);
    assert_eq!(upstream.requests("GET /v2/team/app/blobs/"), blob_gets, "the second pull came from the cache");

    // The upstream stops: the cached tag still pulls, said stale; what was never pulled fails
    // with a clear error.
    upstream.stop();
    let stale = leg.work.join("stale");
    leg.pull_to("dist/team/app:v1", &format!("dir:{}", stale.display()), false);
    assert_eq!(blobs_in(&stale), pulled);
    let head = reg.head("/v2/dist/team/app/manifests/v1").await;
    assert_eq!(head.status(), 200);
    assert!(header(&head, "x-berth-mirror").starts_with("stale;"), "{:?}", head.headers());
    let (status, code, body) = error_code(reg.get("/v2/dist/team/app/manifests/v2").await).await;
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"), "{body}");
    let message = body.to_string();
    assert!(message.contains("dist/team/app:v2 is not cached") && message.contains("upstream dist"), "{message}");
    let args = with(
        s(&["copy", &leg.image("dist/team/app:v2"), &format!("dir:{}", leg.work.join("v2").display())]),
        leg.skopeo_tls("src"),
    );
    let output = leg.skopeo(&args);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("503 Service Unavailable"), "skopeo shows the status (not the body): {said}");
}

#[tokio::test]
async fn pushes_into_a_mirrored_namespace_are_denied_and_other_namespaces_stay_private() {
    let upstream = Upstream::start();
    let leg = mirror(&format!("dist {}", upstream.origin()), &[&upstream.origin()], &[]);
    let layout = leg.work.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    single_image(&layout, 3, &[2000]);
    let args = with(
        s(&["copy", &format!("oci:{}:v1", layout.display()), &leg.image("dist/team/app:v1")]),
        leg.skopeo_tls("dest"),
    );
    let output = leg.skopeo(&args);
    assert!(!output.status.success(), "a push into the mirror is refused");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("read-only mirror of dist"), "skopeo shows the refusal: {said}");
    let reg = Registry::new(&leg.runner);
    let (status, code, _) = error_code(reg.delete("/v2/dist/team/app/manifests/v1").await).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"));
    // Another namespace is an ordinary private registry.
    leg.push_layout(&layout, "v1", "team/app:v1", false);
    assert_eq!(reg.head("/v2/team/app/manifests/v1").await.status(), 200);
    assert_eq!(upstream.requests("PUT "), 0, "nothing went upstream");
}

#[tokio::test]
async fn containerd_ns_and_docker_default_upstream_paths_reach_the_mirror() {
    let upstream = Upstream::start();
    let work = tempfile::tempdir().unwrap();
    let (_, digest) = push_image(work.path(), &upstream.host, "library/alpine:3", 4, &[5000]);
    let leg = mirror(&format!("dist {} default", upstream.origin()), &[&upstream.origin()], &[]);
    let reg = Registry::new(&leg.runner);
    // containerd's hosts.toml mirror: the upstream's name in the path, the upstream in `ns`.
    let r = reg.get("/v2/library/alpine/manifests/3?ns=dist").await;
    if r.status() != 200 {
        panic!("{}", r.text().await.unwrap());
    }
    let r = reg.get("/v2/library/alpine/manifests/3?ns=dist").await;
    assert_eq!(header(&r, "docker-content-digest"), digest);
    // Docker's registry-mirrors: the default upstream for a repository that is not here.
    let r = reg.head(&format!("/v2/library/alpine/manifests/{digest}")).await;
    assert_eq!(r.status(), 200);
    // Both are cached in the namespaced repository.
    let tags = json(reg.get("/v2/dist/library/alpine/tags/list").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["3"]));
    // A repository that is here stays here: pushes go to it, and its pulls do not go upstream.
    reg.push_blob("mine/app", b"local").await;
    let (status, code, _) = error_code(reg.get("/v2/mine/app/manifests/nope").await).await;
    assert_eq!((status, code.as_str()), (404, "MANIFEST_UNKNOWN"));
    assert_eq!(upstream.requests("/v2/mine/app/"), 0, "a repository that is here is not looked up upstream");
    assert!(upstream.requests("/v2/library/alpine/manifests/") >= 1);
}

#[tokio::test]
async fn a_berth_upstream_with_token_auth_is_pulled_through_with_credentials() {
    let users = format!("puller:{SECRET_HASH},admin:{SECRET_HASH}");
    let origin_leg = Leg::http_with(vars(&[
        ("auth_mode", "token"),
        ("auth_users", &users),
        ("auth_policy", "* admin *; team/* puller pull"),
        ("auth_token_secret", TOKEN_SECRET),
    ]));
    let origin = format!("http://{}", origin_leg.host);
    let layout = push_as_admin(&origin_leg, 5, &[70_000]);

    let leg = mirror(&format!("origin {origin}"), &[&origin], &[("mirror_credentials", "origin puller:secret")]);
    let out = leg.work.join("pulled");
    leg.pull_to("origin/team/app:v1", &format!("dir:{}", out.display()), false);
    let pulled = blobs_in(&out);
    assert!(pulled.len() >= 2, "config and layer: {pulled:?}");
    for blob in &pulled {
        assert!(blobs_in(&layout).contains(blob), "{blob} is byte-identical to what was pushed");
    }

    // Without credentials the upstream refuses, and the mirror says so.
    let anonymous = mirror(&format!("origin {origin}"), &[&origin], &[]);
    let reg = Registry::new(&anonymous.runner);
    let (status, code, body) = error_code(reg.get("/v2/origin/team/app/manifests/v1").await).await;
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"), "{body}");
    assert!(body.to_string().contains("upstream origin"), "{body}");
}

/// An upstream that serves one blob with one byte flipped (and a correct Content-Length).
async fn corrupting_upstream(good: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let digest = sha256(&good);
    let mut bad = good;
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let bad = bad.clone();
            let digest = digest.clone();
            tokio::spawn(async move {
                let Some(request) = read_request_head(&mut socket).await else { return };
                let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_owned();
                let head = if line.contains(&format!("/blobs/{digest}")) {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", bad.len())
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
                };
                let _ = socket.write_all(head.as_bytes()).await;
                if line.starts_with("GET") && line.contains("/blobs/") {
                    let _ = socket.write_all(&bad).await;
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_fails_the_client_and_nothing_is_cached() {
    let good = PseudoRandom::bytes(6, 3 * 1024 * 1024);
    let digest = sha256(&good);
    let (origin, task) = corrupting_upstream(good).await;
    let leg = mirror(&format!("bad {origin}"), &[&origin], &[]);
    let reg = Registry::new(&leg.runner);
    let path = format!("/v2/bad/app/blobs/{digest}");
    let response = reg.get(&path).await;
    assert_eq!(response.status(), 200, "the transfer starts before the digest is known");
    assert!(response.bytes().await.is_err(), "the client's transfer fails");
    // Nothing was kept: the next request goes upstream again (and fails again).
    let again = reg.get(&path).await;
    assert!(again.bytes().await.is_err());
    assert!(stored_objects(&leg.runner.data, "uploads").is_empty(), "no blob bytes stored");
    task.abort();
}

#[tokio::test]
async fn an_edge_mirror_of_a_berth_origin_passes_its_blob_redirects_on_and_caches_manifests() {
    use common::s3::{S3Server, cluster_options};
    let s3 = S3Server::start();
    // The origin: Berth on S3, answering blob GETs with a 307 to a presigned URL.
    let origin = Leg::http_options(cluster_options(&s3, None, 300));
    let layout = origin.work.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let manifest = single_image(&layout, 7, &[400_000]);
    origin.push_layout(&layout, "v1", "team/app:v1", false);
    let origin_url = format!("http://{}", origin.host);
    let edge = mirror(&format!("origin {origin_url} redirects=pass"), &[&origin_url], &[]);

    // skopeo pulls through the edge, byte-identical: its blob GETs are sent on to S3.
    let out = edge.work.join("pulled");
    edge.pull_to("origin/team/app:v1", &format!("dir:{}", out.display()), false);
    let pulled = blobs_in(&out);
    assert!(pulled.len() >= 2, "{pulled:?}");
    for blob in &pulled {
        assert!(blobs_in(&layout).contains(blob), "{blob}");
    }
    let layer = pulled.iter().find(|b| **b != manifest.digest).unwrap();
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = plain.get(format!("http://{}/v2/origin/team/app/blobs/{layer}", edge.host)).send().await.unwrap();
    assert_eq!(r.status(), 307);
    assert!(header(&r, "location").starts_with(&s3.endpoint()), "{}", header(&r, "location"));
    let stored = stored_objects(&edge.runner.data, "uploads");
    assert!(
        stored.iter().all(|p| std::fs::metadata(p).unwrap().len() < 400_000),
        "the edge keeps manifests, not the layer: {stored:?}"
    );

    // The manifest is cached at the edge: it answers by digest with the origin gone.
    drop(origin);
    let reg = Registry::new(&edge.runner);
    let r = reg.get(&format!("/v2/origin/team/app/manifests/{}", manifest.digest)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), manifest.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_pulls_of_an_uncached_100_mib_layer_fetch_it_from_the_upstream_once() {
    let seed: u64 = std::env::var("BERTH_MIRROR_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000
    });
    println!("seed {seed} (replay: BERTH_MIRROR_SEED={seed})");
    let upstream = Upstream::start();
    let layer = PseudoRandom::bytes(seed, 100 * 1024 * 1024);
    let digest = sha256(&layer);
    let origin = Registry { url: upstream.origin(), http: Http::new(None) };
    // Distribution takes a blob as a POST, then a PUT with the bytes.
    let location = origin.start_upload("team/app").await;
    assert_eq!(origin.finish_upload(&location, &digest, &layer).await.status(), 201);
    let mut args = vars(&[
        ("mirror_upstreams", &format!("dist {}", upstream.origin())),
        ("mirror_outbound_hosts", &upstream.origin()),
    ]);
    args.extend(["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]);
    let leg = Leg::http_with(args);
    let reg = Registry::new(&leg.runner);
    let mut rng = PseudoRandom::new(seed);
    let mut pulls = Vec::new();
    for i in 0..20 {
        let mut jitter = [0u8; 1];
        rng.fill(&mut jitter);
        let url = reg.at(&format!("/v2/dist/team/app/blobs/{digest}"));
        let http = reg.http.clone();
        pulls.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(jitter[0] as u64 % 50)).await;
            let response = http.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "pull {i}");
            sha256(&response.bytes().await.unwrap())
        }));
    }
    for pull in pulls {
        assert_eq!(pull.await.unwrap(), digest, "every pull is byte-identical (seed {seed})");
    }
    let gets = upstream.requests(&format!("GET /v2/team/app/blobs/{digest}"));
    assert_eq!(gets, 1, "one upstream GET of the blob for 20 concurrent pulls (seed {seed})");
    // The metrics say the same: one upstream ask, of the layer's bytes.
    let text = scrape(&leg.runner).await;
    for expected in [
        r#"berth_registry_events_total{event="mirror_blob_upstream_asks"} 1"#.to_owned(),
        format!(r#"berth_registry_events_total{{event="mirror_upstream_bytes"}} {}"#, layer.len()),
    ] {
        assert!(text.contains(&expected), "{expected} in\n{text} (seed {seed})");
    }
}

#[tokio::test]
async fn podman_pulls_a_namespace_through_a_registries_conf_mirror_entry() {
    let upstream = Upstream::start();
    let work = tempfile::tempdir().unwrap();
    let (_, digest) = push_image(work.path(), &upstream.host, "team/app:v1", 8, &[30_000]);
    let leg = mirror(&format!("dist {}", upstream.origin()), &[&upstream.origin()], &[]);
    // The namespace's own registry does not resolve: the pull can only come through the mirror.
    let conf = leg.work.join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"upstream.invalid/team\"\nlocation = \"upstream.invalid/team\"\n\n\
             [[registry.mirror]]\nlocation = \"{}/dist/team\"\ninsecure = true\n",
            leg.host
        ),
    )
    .unwrap();
    ensure_installed("podman");
    let root = leg.work.join("podman");
    let output = Command::new("podman")
        .args([
            &format!("--root={}", root.join("root").display()),
            &format!("--runroot={}", root.join("run").display()),
            "--storage-driver=vfs",
            "pull",
            "upstream.invalid/team/app:v1",
        ])
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .output()
        .unwrap();
    assert!(output.status.success(), "podman pull: {}", String::from_utf8_lossy(&output.stderr));
    assert!(upstream.requests("GET /v2/team/app/blobs/") >= 2, "the mirror fetched config and layer");
    let reg = Registry::new(&leg.runner);
    let r = reg.head("/v2/dist/team/app/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest"), digest, "cached under the namespaced name");
}

/// Under `spin up` (Spin 4.1), with the shipped spin.toml and the documented variables.
#[tokio::test]
async fn on_spin_the_shipped_app_mirrors_with_the_documented_variables() {
    let upstream = Upstream::start();
    let work = tempfile::tempdir().unwrap();
    let (layout, digest) = push_image(work.path(), &upstream.host, "team/app:v1", 9, &[250_000]);
    let upstreams = format!("dist {}", upstream.origin());
    let origin = upstream.origin();
    let Some(spin) =
        common::spin::Spin::start(&[("mirror_upstreams", &upstreams), ("mirror_outbound_hosts", &origin)], None)
    else {
        return;
    };
    let reg = spin.registry();
    let manifest = reg.get("/v2/dist/team/app/manifests/v1").await;
    assert_eq!(manifest.status(), 200);
    assert_eq!(header(&manifest, "docker-content-digest"), digest);
    let manifest = json(manifest).await;
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(layer.trim_start_matches("sha256:"))).unwrap();
    let pulled = reg.get(&format!("/v2/dist/team/app/blobs/{layer}")).await;
    assert_eq!(pulled.status(), 200);
    assert_eq!(pulled.bytes().await.unwrap(), bytes);
    assert_eq!(upstream.requests(&format!("GET /v2/team/app/blobs/{layer}")), 1);
    // Cached: read again from Spin's key-value store, not the upstream.
    assert_eq!(reg.get(&format!("/v2/dist/team/app/blobs/{layer}")).await.bytes().await.unwrap(), bytes);
    assert_eq!(upstream.requests(&format!("GET /v2/team/app/blobs/{layer}")), 1);
}

#[tokio::test]
async fn upstreams_with_basic_auth_and_with_anonymous_tokens_are_pulled_through() {
    let users = format!("puller:{SECRET_HASH},admin:{SECRET_HASH}");
    // A Berth that asks for a password on every request (Basic).
    let basic = Leg::http_with(vars(&[
        ("auth_mode", "basic"),
        ("auth_users", &users),
        ("auth_policy", "* admin *; team/* puller pull"),
    ]));
    // A Berth whose token endpoint gives anonymous clients pull tokens.
    let anonymous = Leg::http_with(vars(&[
        ("auth_mode", "token"),
        ("auth_users", &users),
        ("auth_policy", "* admin *; team/* anonymous pull"),
        ("auth_token_secret", TOKEN_SECRET),
    ]));
    push_as_admin(&basic, 10, &[20_000]);
    push_as_admin(&anonymous, 11, &[20_000]);
    let (basic_url, anonymous_url) = (format!("http://{}", basic.host), format!("http://{}", anonymous.host));
    let leg = mirror(
        &format!("basic {basic_url}; anon {anonymous_url}"),
        &[&basic_url, &anonymous_url],
        &[("mirror_credentials", "basic puller:secret")],
    );
    for repo in ["basic/team/app", "anon/team/app"] {
        let out = leg.work.join(repo.replace('/', "-"));
        leg.pull_to(&format!("{repo}:v1"), &format!("dir:{}", out.display()), false);
        assert!(blobs_in(&out).len() >= 2, "{repo}");
    }
    // The anonymous token is kept in key-value for its scope and reused.
    let tokens = kv_keys(&leg.runner.data, "mirror/tokens/");
    assert_eq!(tokens.len(), 1, "one scope, one kept token: {tokens:?}");
}

#[tokio::test]
async fn the_auth_policy_applies_to_mirrored_repositories_by_their_namespaced_names() {
    let upstream = Upstream::start();
    let work = tempfile::tempdir().unwrap();
    let (_, digest) = push_image(work.path(), &upstream.host, "team/app:v1", 12, &[1000]);
    let users = format!("alice:{SECRET_HASH},bob:{SECRET_HASH}");
    let leg = mirror(
        &format!("dist {}", upstream.origin()),
        &[&upstream.origin()],
        &[("auth_mode", "basic"), ("auth_users", &users), ("auth_policy", "dist/team/* alice pull; other/* bob pull")],
    );
    let url = format!("http://{}/v2/dist/team/app/manifests/v1", leg.host);
    let r = client().get(&url).basic_auth("alice", Some("secret")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "docker-content-digest")), (200, digest));
    expect_error(client().get(&url).basic_auth("bob", Some("secret")).send().await.unwrap(), 403, "DENIED").await;
    // Through `?ns=` the same rule decides (the request is for dist/team/app).
    let ns = format!("http://{}/v2/team/app/manifests/v1?ns=dist", leg.host);
    expect_error(client().get(&ns).basic_auth("bob", Some("secret")).send().await.unwrap(), 403, "DENIED").await;
    assert_eq!(client().get(&ns).basic_auth("alice", Some("secret")).send().await.unwrap().status(), 200);
}

/// Push `bytes` as a blob of `repo` as `user` (Basic, password `secret`); its digest.
async fn push_blob_as(host: &str, repo: &str, user: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let r = client()
        .post(format!("http://{host}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .basic_auth(user, Some("secret"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "push of a blob to {repo} as {user}");
    digest
}

/// `method` on `path` of the Berth at `host`, anonymous or as `user` (Basic): the status and the
/// error code (empty for a success or a HEAD).
async fn ask(host: &str, method: reqwest::Method, path: &str, user: Option<&str>) -> (u16, String) {
    let mut request = client().request(method, format!("http://{host}{path}"));
    if let Some(user) = user {
        request = request.basic_auth(user, Some("secret"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or_default();
    (status, body["errors"][0]["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_blob_held_only_by_a_private_repository_is_never_served_nor_revealed_through_any_mirror_route() {
    let upstream = Upstream::start();
    let work = tempfile::tempdir().unwrap();
    let (layout, _) = push_image(work.path(), &upstream.host, "team/app:v1", 21, &[40_000]);
    let users = format!("alice:{SECRET_HASH},bob:{SECRET_HASH}");
    let leg = mirror(
        &format!("dist {} default", upstream.origin()),
        &[&upstream.origin()],
        &[
            ("auth_mode", "basic"),
            ("auth_users", &users),
            ("auth_policy", "dist/* anonymous pull; secret/* alice pull,push; other/* bob pull"),
        ],
    );
    // The private image: a blob and a manifest (whose bytes are a blob too) only secret/app holds.
    let private = push_blob_as(&leg.host, "secret/app", "alice", &PseudoRandom::bytes(22, 10_000)).await;
    let (_, manifest) = push_as(&leg, "alice", "secret/app:v1", 23, &[5000]);
    assert_eq!(
        ask(&leg.host, reqwest::Method::HEAD, &format!("/v2/secret/app/blobs/{private}"), Some("alice")).await.0,
        200
    );
    let nowhere = sha256(b"held by no repository at all");
    let ns_host = format!("ns={}", upstream.host);
    for digest in [&private, &manifest] {
        for path in [
            format!("/v2/dist/x/y/blobs/{digest}"),
            format!("/v2/nosuch/blobs/{digest}"),
            format!("/v2/library/z/blobs/{digest}?ns=dist"),
            format!("/v2/library/z/blobs/{digest}?{ns_host}"),
        ] {
            for user in [None, Some("bob")] {
                for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
                    let got = ask(&leg.host, method.clone(), &path, user).await;
                    // Exactly what a digest that nobody here holds gets.
                    let unheld = ask(&leg.host, method.clone(), &path.replace(digest.as_str(), &nowhere), user).await;
                    assert_eq!(got, unheld, "{method} {path} as {user:?}");
                    // A blob HEAD never goes to the default upstream: it is the local repository's
                    // (which the caller may not read), and says the same for every digest.
                    if method == reqwest::Method::GET || !path.starts_with("/v2/nosuch/") {
                        let expected = if method == reqwest::Method::GET { "BLOB_UNKNOWN" } else { "" };
                        assert_eq!(got, (404, expected.to_owned()), "{method} {path} as {user:?}");
                    }
                }
            }
        }
        let manifests = format!("/v2/dist/x/y/manifests/{digest}");
        assert_eq!(ask(&leg.host, reqwest::Method::GET, &manifests, None).await, (404, "MANIFEST_UNKNOWN".into()));
    }
    // Nothing was linked into the mirrored repositories either (an admin-free look: the links).
    let links = kv_keys(&leg.runner.data, "repo/dist/");
    assert!(links.iter().all(|k| !k.contains(private.trim_start_matches("sha256:"))), "{links:?}");

    // A blob the upstream has in the mirrored repository, and that is here for a private one:
    // served from here once the upstream vouches for it (a HEAD there, no GET of its bytes).
    let layer = blobs_in(&layout)
        .into_iter()
        .find(|b| {
            std::fs::metadata(layout.join("blobs/sha256").join(b.trim_start_matches("sha256:"))).unwrap().len() > 30_000
        })
        .unwrap();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(layer.trim_start_matches("sha256:"))).unwrap();
    push_blob_as(&leg.host, "secret/app", "alice", &bytes).await;
    let (heads, gets) = (
        upstream.requests(&format!("HEAD /v2/team/app/blobs/{layer}")),
        upstream.requests(&format!("GET /v2/team/app/blobs/{layer}")),
    );
    let r = client().get(format!("http://{}/v2/dist/team/app/blobs/{layer}", leg.host)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
    assert_eq!(upstream.requests(&format!("HEAD /v2/team/app/blobs/{layer}")), heads + 1, "the upstream vouched");
    assert_eq!(upstream.requests(&format!("GET /v2/team/app/blobs/{layer}")), gets, "its bytes came from here");
}

#[tokio::test]
async fn a_push_to_a_new_private_repository_that_also_exists_upstream_uploads_its_blobs_here() {
    let upstream = Upstream::start();
    let leg = mirror(&format!("dist {} default", upstream.origin()), &[&upstream.origin()], &[]);
    let (layout, digest) = push_image(&leg.work, &upstream.host, "team/small:v1", 24, &[20_000, 30_000]);
    let heads_upstream = upstream.requests("HEAD /v2/team/small/blobs/");
    // The same image pushed here: skopeo's blob HEADs must not be answered by the upstream.
    leg.push_layout(&layout, "v1", "team/small:v1", false);
    let reg = Registry::new(&leg.runner);
    let r = reg.get("/v2/team/small/manifests/v1").await;
    assert_eq!((r.status().as_u16(), header(&r, "docker-content-digest")), (200, digest));
    for blob in blobs_in(&layout) {
        assert_eq!(reg.head(&format!("/v2/team/small/blobs/{blob}")).await.status(), 200, "{blob} is here");
    }
    assert_eq!(upstream.requests("HEAD /v2/team/small/blobs/"), heads_upstream, "a blob HEAD never goes upstream");
}

#[tokio::test]
async fn the_default_upstream_answers_only_for_its_patterns_and_never_tells_whether_a_private_repository_is_here() {
    let upstream = Upstream::start();
    let work = tempfile::tempdir().unwrap();
    let (_, team_digest) = push_image(work.path(), &upstream.host, "team/app:v1", 25, &[1000]);
    push_image(work.path(), &upstream.host, "corp/app:v1", 26, &[1000]);
    let users = format!("alice:{SECRET_HASH}");
    let leg = mirror(
        &format!("dist {} default=team/*,library/*", upstream.origin()),
        &[&upstream.origin()],
        &[
            ("auth_mode", "basic"),
            ("auth_users", &users),
            ("auth_policy", "dist/* anonymous pull; corp/* anonymous pull; team/private alice pull,push"),
        ],
    );
    push_as(&leg, "alice", "team/private:v1", 27, &[1000]);
    let corp_asked = upstream.requests("/v2/corp/app/");
    // To anyone who may not pull it, a private repository here is answered like one that is not
    // (both by the upstream); its owner gets it from here.
    let get = reqwest::Method::GET;
    let hidden = ask(&leg.host, get.clone(), "/v2/team/private/manifests/v1", None).await;
    let absent = ask(&leg.host, get.clone(), "/v2/team/nothere/manifests/v1", None).await;
    assert_eq!(hidden, absent, "the answer does not tell that team/private is here");
    assert_eq!(hidden, (404, "MANIFEST_UNKNOWN".into()));
    assert_eq!(ask(&leg.host, get.clone(), "/v2/team/private/manifests/v1", Some("alice")).await, (200, String::new()));
    // A name the patterns leave out is never looked up upstream, although the upstream has it.
    assert_eq!(ask(&leg.host, get.clone(), "/v2/corp/app/manifests/v1", None).await, (404, "MANIFEST_UNKNOWN".into()));
    // containerd names a registry with a port by host:port in `ns`; another registry's `ns` is
    // this registry's own repository, never the default upstream.
    let r = client()
        .get(format!("http://{}/v2/team/app/manifests/v1?ns={}", leg.host, upstream.host))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "docker-content-digest")), (200, team_digest));
    let other = ask(&leg.host, get.clone(), "/v2/corp/app/manifests/v1?ns=other.example:5000", None).await;
    assert_eq!(other, (404, "MANIFEST_UNKNOWN".into()));
    assert_eq!(upstream.requests("/v2/corp/app/"), corp_asked, "corp/app was never asked for upstream");
    assert_eq!(upstream.requests("/v2/team/private/"), 1, "only the anonymous pull went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_pulls_of_a_tag_all_resolve_and_fetch_its_manifest_once() {
    let seed: u64 = std::env::var("BERTH_MIRROR_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000
    });
    println!("seed {seed} (replay: BERTH_MIRROR_SEED={seed})");
    let upstream = Upstream::start();
    let work = tempfile::tempdir().unwrap();
    const ROUNDS: u64 = 5;
    let mut digests = Vec::new();
    for round in 0..ROUNDS {
        digests.push(push_image(work.path(), &upstream.host, &format!("team/app:r{round}"), 30 + round, &[1000]).1);
    }
    let mut args = vars(&[
        ("mirror_upstreams", &format!("dist {}", upstream.origin())),
        ("mirror_outbound_hosts", &upstream.origin()),
    ]);
    args.extend(["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]);
    let leg = Leg::http_with(args);
    let reg = Registry::new(&leg.runner);
    let mut rng = PseudoRandom::new(seed);
    for (round, digest) in digests.iter().enumerate() {
        let mut pulls = Vec::new();
        for i in 0..20 {
            let mut jitter = [0u8; 1];
            rng.fill(&mut jitter);
            let url = reg.at(&format!("/v2/dist/team/app/manifests/r{round}"));
            let http = reg.http.clone();
            pulls.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(jitter[0] as u64 % 20)).await;
                let response = http.get(url).send().await.unwrap();
                let status = response.status().as_u16();
                let digest = said_digest(&response);
                (i, status, digest, response.text().await.unwrap())
            }));
        }
        for pull in pulls {
            let (i, status, got, body) = pull.await.unwrap();
            assert_eq!(status, 200, "round {round} pull {i}: {body} (seed {seed})");
            assert_eq!(&got, digest, "round {round} pull {i} (seed {seed})");
        }
    }
    let gets = upstream.requests("GET /v2/team/app/manifests/");
    assert_eq!(gets, ROUNDS as usize, "one upstream GET per tag for 20 concurrent pulls each (seed {seed})");
    assert!(kv_keys(&leg.runner.data, "mirror/beat/").is_empty(), "every claim's heartbeat is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_left_by_a_killed_instance_is_taken_over_within_seconds() {
    let upstream = Upstream::start();
    let layer = PseudoRandom::bytes(40, 48 * 1024 * 1024);
    let digest = sha256(&layer);
    let origin = Registry { url: upstream.origin(), http: Http::new(None) };
    let location = origin.start_upload("team/app").await;
    assert_eq!(origin.finish_upload(&location, &digest, &layer).await.status(), 201);
    let upstreams = format!("dist {}", upstream.origin());
    let args = vars(&[("mirror_upstreams", &upstreams), ("mirror_outbound_hosts", &upstream.origin())]);
    let mut leg = Leg::http_with(args.clone());
    let path = format!("/v2/dist/team/app/blobs/{digest}");
    // A pull that has started to relay the layer: the fetch claim is held.
    let mut started = client().get(format!("{}{path}", leg.runner.url)).send().await.unwrap();
    assert_eq!(started.status(), 200);
    assert!(started.chunk().await.unwrap().is_some(), "the relay has begun");
    let killed = Command::new("kill").args(["-9", &leg.runner.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    drop(started);
    let data = leg.runner.data.clone();
    leg.runner = Runner::start_with(&data, RunnerOptions { args, ..Default::default() });
    // The dead fetcher's claim is taken over after its heartbeat goes stale (10 s), far within an
    // edge host's request limit; the pull is whole.
    let pulled =
        client().get(format!("{}{path}", leg.runner.url)).timeout(Duration::from_secs(45)).send().await.unwrap();
    assert_eq!(pulled.status(), 200);
    assert_eq!(sha256(&pulled.bytes().await.unwrap()), digest);
    assert_eq!(upstream.requests(&format!("GET /v2/team/app/blobs/{digest}")), 2, "fetched again once");
    // The claim chain is gone once the blob is cached (the dead owner's link with it).
    let reg = Registry::new(&leg.runner);
    wait_for(|| stored_objects(&leg.runner.data, "mirror").is_empty()).await;
    assert_eq!(reg.head(&path).await.status(), 200);
}

/// The `Docker-Content-Digest` of a response, empty when it has none (an error).
fn said_digest(response: &reqwest::Response) -> String {
    response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Poll `done` until it holds (a bounded wait for background work after a response).
async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "the condition never held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An upstream whose tag `app:v1` names manifest A, then (once `moved` is set) manifest B, which
/// it answers 429 Too Many Requests for, as Docker Hub does past its pull limit.
async fn rate_limited_upstream(
    a: Vec<u8>,
    b: Vec<u8>,
    moved: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let (a, b, moved) = (a.clone(), b.clone(), moved.clone());
            tokio::spawn(async move {
                let Some(request) = read_request_head(&mut socket).await else { return };
                let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_owned();
                let current = if moved.load(std::sync::atomic::Ordering::SeqCst) { &b } else { &a };
                let ok = |body: &[u8]| {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\nDocker-Content-Digest: {}\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        sha256(body),
                        body.len()
                    )
                };
                let (head, body): (String, &[u8]) = if line.contains("/manifests/v1 ") {
                    (ok(current), current)
                } else if line.contains(&format!("/manifests/{} ", sha256(&a))) {
                    (ok(&a), &a)
                } else if line.contains(&format!("/manifests/{} ", sha256(&b))) {
                    ("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(), &[])
                } else {
                    ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(), &[])
                };
                let _ = socket.write_all(head.as_bytes()).await;
                if line.starts_with("GET") {
                    let _ = socket.write_all(body).await;
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn a_tag_whose_new_manifest_the_upstream_refuses_to_give_is_served_stale_from_the_cache() {
    let config = ("application/vnd.oci.image.config.v1+json", sha256(b"{}"), 2);
    let manifest = |layer: &str| {
        image_manifest(&[(config.0, &config.1, config.2)], &[("application/vnd.oci.image.layer.v1.tar", layer, 1)], "")
    };
    let (a, b) = (manifest(&sha256(b"a")), manifest(&sha256(b"b")));
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (origin, task) = rate_limited_upstream(a.clone(), b, moved.clone()).await;
    let leg = mirror(&format!("hub {origin} tag_ttl=0"), &[&origin], &[]);
    let reg = Registry::new(&leg.runner);
    let r = reg.get("/v2/hub/app/manifests/v1").await;
    assert_eq!((r.status().as_u16(), said_digest(&r)), (200, sha256(&a)));
    moved.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = reg.get("/v2/hub/app/manifests/v1").await;
    assert_eq!((r.status().as_u16(), said_digest(&r)), (200, sha256(&a)));
    let said = header(&r, "x-berth-mirror");
    assert!(said.starts_with("stale;") && said.contains("429"), "{said}");
    task.abort();
}

/// A Berth whose `docker.io` upstream is a Distribution on loopback standing in for Docker Hub
/// (default for `library/*`), holding `library/alpine:3` and `team/app:v1`; the layouts'
/// manifests' digests.
fn hub_and_mirror(work: &std::path::Path) -> (Upstream, Leg, String, String) {
    let upstream = Upstream::start();
    let (_, alpine) = push_image(work, &upstream.host, "library/alpine:3", 50, &[30_000]);
    let (_, app) = push_image(work, &upstream.host, "team/app:v1", 51, &[20_000]);
    let leg = mirror(&format!("docker.io {} default=library/*", upstream.origin()), &[&upstream.origin()], &[]);
    (upstream, leg, alpine, app)
}

#[test]
fn docker_engine_pulls_docker_hub_images_through_berth_as_its_registry_mirror() {
    let work = tempfile::tempdir().unwrap();
    let (upstream, leg, alpine, _) = hub_and_mirror(work.path());
    let engine = common::engines::Dockerd::start_with(&["--registry-mirror", &format!("http://{}", leg.host)]);
    // Docker Hub itself is out of reach here: the pull can only come through the mirror.
    let pulled = engine.docker_ok(&["pull", "alpine:3"]);
    assert!(pulled.contains(&alpine), "docker pulled {alpine}: {pulled}");
    let log = leg.runner.log();
    assert!(log.iter().any(|l| l.contains(" /v2/library/alpine/manifests/3 200")), "{log:#?}");
    assert!(upstream.requests("GET /v2/library/alpine/blobs/") >= 2, "config and layer came from the upstream");
    // Cached under the namespaced name; a second engine's pull needs no upstream blob GET.
    let blob_gets = upstream.requests("GET /v2/library/alpine/blobs/");
    let second = common::engines::Dockerd::start_with(&["--registry-mirror", &format!("http://{}", leg.host)]);
    second.docker_ok(&["pull", "alpine:3"]);
    assert_eq!(upstream.requests("GET /v2/library/alpine/blobs/"), blob_gets, "served from the cache");
    assert!(
        kv_keys(&leg.runner.data, "repo/docker.io/library/alpine/tag/3").len() == 1,
        "cached as docker.io/library/alpine"
    );
}

#[test]
fn containerd_pulls_through_berth_from_hosts_toml_for_docker_hub_and_for_a_registry_with_a_port() {
    let work = tempfile::tempdir().unwrap();
    let (upstream, leg, alpine, app) = hub_and_mirror(work.path());
    let containerd = common::engines::Containerd::start();
    // hosts.toml: each registry's pulls go to Berth first (containerd adds `?ns=<registry>`).
    let hosts = work.path().join("hosts");
    for registry in ["docker.io", upstream.host.as_str()] {
        let folder = hosts.join(registry);
        std::fs::create_dir_all(&folder).unwrap();
        let toml = format!(
            "server = \"http://upstream.invalid\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            leg.host
        );
        std::fs::write(folder.join("hosts.toml"), toml).unwrap();
    }
    let hosts_dir = format!("--hosts-dir={}", hosts.display());
    let pulled = containerd.ctr_ok("hub", &["image", "pull", &hosts_dir, "docker.io/library/alpine:3"]);
    assert!(pulled.contains("done") || pulled.contains("elapsed"), "{pulled}");
    let images = containerd.ctr_ok("hub", &["image", "ls"]);
    assert!(images.contains(&alpine), "{images}");
    // A registry with a port: containerd names it host:port in `ns`.
    let image = format!("{}/team/app:v1", upstream.host);
    containerd.ctr_ok("port", &["image", "pull", &hosts_dir, &image]);
    let images = containerd.ctr_ok("port", &["image", "ls"]);
    assert!(images.contains(&app), "{images}");
    // Both were cached in the namespaced repositories of the upstream that `ns` named (by its
    // name, and by its URL's host:port).
    let data = &leg.runner.data;
    assert_eq!(kv_keys(data, "repo/docker.io/library/alpine/tag/3").len(), 1, "{:?}", kv_keys(data, "repo/"));
    assert_eq!(kv_keys(data, "repo/docker.io/team/app/tag/v1").len(), 1, "{:?}", kv_keys(data, "repo/"));
    assert!(kv_keys(data, "repo/team/").is_empty(), "nothing went to a local team/app");
}
