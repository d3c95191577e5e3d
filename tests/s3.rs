//! The registry on S3 (issue 13): the `berth-blob-s3` provider composed into the registry, run by
//! `berth-runner` with `deploy/cluster/spin.toml` as it ships, against a real S3 server of each
//! test's own (moto's, `tests/common/s3.rs`), and Redis for the shared key-value store.
//!
//! What is checked: pushes by real clients land in the bucket (multipart for large layers), blob
//! GETs answer 307 to a presigned URL the clients follow (ranges too), several front ends share
//! one Redis and one bucket without sticky routing, and a backend outage is a 503 UNAVAILABLE that
//! passes when the backend returns.

mod common;

use common::clients::Leg;
use common::oci_layout::{Layout, file_sha256};
use common::redis::RedisServer;
use common::s3::{BUCKET, S3Server, cluster_options, cluster_options_at};
use common::*;

/// A client that shows a redirect instead of following it.
fn without_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The status of the runner's log line for `method path` (e.g. `GET /v2/a/blobs/sha256:..`).
fn logged_status(runner: &Runner, method: &str, path: &str) -> Vec<String> {
    let prefix = format!("{method} {path} ");
    runner
        .log()
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(' ').next().unwrap().to_owned())
        .collect()
}

#[test]
fn an_image_pushed_with_skopeo_lands_in_the_bucket_and_pulls_back_through_redirects() {
    let s3 = S3Server::start();
    let leg = Leg::http_options(cluster_options(&s3, None, 300));
    let layout_dir = leg.work.join("layout");
    let layout = Layout::create(&layout_dir);
    // 12 MiB: three 5 MiB parts (the last one short), carried by the provider's multipart upload.
    let image = layout.image(7, "amd64", &[12 * 1024 * 1024, 4096]);
    layout.tag(&image, "application/vnd.oci.image.manifest.v1+json", "v1");
    leg.push_layout(&layout_dir, "v1", "apps/web:v1", false);

    let objects = s3.objects("registry/");
    assert!(objects.iter().all(|(key, _, _)| key.starts_with("registry/")), "{objects:?}");
    let multipart =
        objects.iter().filter(|(_, size, etag)| *size >= 12 * 1024 * 1024 && etag.ends_with("-3\"")).count();
    assert_eq!(multipart, 1, "the large layer is one object of three parts: {objects:?}");

    let pulled = leg.work.join("pulled");
    leg.pull_to("apps/web:v1", &format!("oci:{}:v1", pulled.display()), false);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout_dir.join("blobs/sha256").join(&image.digest[7..])).unwrap())
            .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let copy = pulled.join("blobs/sha256").join(&digest[7..]);
        assert_eq!(file_sha256(&copy), digest, "layer {digest} pulled whole");
        let statuses = logged_status(&leg.runner, "GET", &format!("/v2/apps/web/blobs/{digest}"));
        assert!(statuses.iter().all(|s| s == "307") && !statuses.is_empty(), "{digest}: {statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_points_at_the_blob_and_keeps_ranges_and_head_answers_from_metadata() {
    let s3 = S3Server::start();
    let (_data, runner, reg) = start_registry(cluster_options(&s3, None, 120));
    let bytes = PseudoRandom::bytes(11, 9 * 1024 * 1024 + 17);
    let digest = reg.push_blob("r", &bytes).await;
    let path = format!("/v2/r/blobs/{digest}");

    let head = reg.head(&path).await;
    assert_eq!((head.status().as_u16(), header(&head, "content-length")), (200, bytes.len().to_string()));

    let no_follow = without_redirects();
    let answer = no_follow.get(reg.at(&path)).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 307);
    assert_eq!(header(&answer, "docker-content-digest"), digest);
    let location = header(&answer, "location");
    assert!(location.starts_with(&format!("{}/{BUCKET}/registry/", s3.endpoint())), "{location}");
    assert!(location.contains("X-Amz-Signature=") && location.contains("X-Amz-Expires=120"), "{location}");

    // The client follows with its Range header: the store answers the range itself.
    let ranged = client().get(reg.at(&path)).header("range", "bytes=8388600-8388700").send().await.unwrap();
    assert_eq!(ranged.status().as_u16(), 206);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &bytes[8_388_600..=8_388_700]);
    reads_back(&reg, &path, &bytes).await.unwrap();

    // A blob of another repository gets no URL.
    let other = no_follow.get(reg.at(&format!("/v2/elsewhere/blobs/{digest}"))).send().await.unwrap();
    expect_error(other, 404, "BLOB_UNKNOWN").await;
    drop(runner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redirects_blobs_stream_through_the_registry_across_chunk_objects() {
    let s3 = S3Server::start();
    let (_data, _runner, reg) = start_registry(cluster_options(&s3, None, 0));
    // A chunked upload: two PATCHes, so the blob is two objects read as one stream.
    let first = PseudoRandom::bytes(21, 3 * 1024 * 1024);
    let second = PseudoRandom::bytes(22, 1024 * 1024 + 5);
    let whole = [first.clone(), second.clone()].concat();
    let digest = sha256(&whole);
    let location = reg.start_upload("chunks").await;
    let patched = reg.patch_chunk(&location, 0, &first).await;
    assert_eq!(patched.status().as_u16(), 202);
    let location = header(&patched, "location");
    let finished = reg.finish_upload(&location, &digest, &second).await;
    assert_eq!(finished.status().as_u16(), 201);
    let path = format!("/v2/chunks/blobs/{digest}");
    let answer = reg.get(&path).await;
    assert_eq!(answer.status().as_u16(), 200, "streamed, not redirected");
    assert_eq!(answer.bytes().await.unwrap().as_ref(), whole.as_slice());
    let across = client().get(reg.at(&path)).header("range", "bytes=3145700-3145799").send().await.unwrap();
    assert_eq!(across.status().as_u16(), 206);
    assert_eq!(across.bytes().await.unwrap().as_ref(), &whole[3_145_700..3_145_800]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_front_ends_share_one_redis_and_one_bucket_without_sticky_routing() {
    let s3 = S3Server::start();
    let redis = RedisServer::start();
    let (_a_data, _a, a) = start_registry(cluster_options(&s3, Some(&redis), 300));
    let (_b_data, _b, b) = start_registry(cluster_options(&s3, Some(&redis), 300));

    // An upload started on A, continued on B, finished on A.
    let first = PseudoRandom::bytes(31, 300_000);
    let second = PseudoRandom::bytes(32, 200_000);
    let whole = [first.clone(), second.clone()].concat();
    let digest = sha256(&whole);
    let location = a.start_upload("shared").await;
    let on_b = b.at(&path_of(&location));
    let patched = b.patch_chunk(&on_b, 0, &first).await;
    assert_eq!(patched.status().as_u16(), 202, "B continues A's session");
    let on_a = a.at(&path_of(&header(&patched, "location")));
    assert_eq!(a.finish_upload(&on_a, &digest, &second).await.status().as_u16(), 201);
    reads_back(&b, &format!("/v2/shared/blobs/{digest}"), &whole).await.unwrap();

    // A tag pushed on A pulls from B.
    let (manifest, _) = a.push_image("shared", "v1", 5).await;
    reads_back(&b, "/v2/shared/manifests/v1", &manifest).await.unwrap();
    assert!(!redis.keys("*").is_empty(), "the metadata is in Redis");
    assert!(!s3.objects("registry/").is_empty(), "the blobs are in the bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_s3_or_redis_is_503_unavailable_and_passes_when_the_backend_returns() {
    let mut s3 = S3Server::start();
    let mut redis = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stderr.log");
    let options = RunnerOptions { stderr: Some(log.clone()), ..cluster_options(&s3, Some(&redis), 0) };
    let runner = Runner::start_with(&data.path().join("data"), options);
    let reg = Registry::new(&runner);
    let logged = |what: &str| {
        std::fs::read_to_string(&log).unwrap().lines().any(|l| l.contains("storage unavailable") && l.contains(what))
    };
    let (manifest, _) = reg.push_image("up", "v1", 9).await;

    redis.stop();
    let (status, code, body) = error_code(reg.get("/v2/up/manifests/v1").await).await;
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"), "{body}");
    assert!(logged("key-value"), "the log names the key-value store");
    redis.restart(); // with its append-only file: what was acknowledged is there
    reads_back(&reg, "/v2/up/manifests/v1", &manifest).await.unwrap();

    s3.stop();
    let url = reg.at(&format!("/v2/up/blobs/uploads/?digest={}", sha256(b"down")));
    let push = reg.http.post(url).body(b"down".to_vec()).send().await.unwrap();
    let (status, code, body) = error_code(push).await;
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"), "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "the backend's address is for the log only: {body}");
    assert!(logged("S3 at"), "the log names S3");
    s3.restart(); // moto keeps nothing in memory across restarts: the bucket is new and empty
    let digest = reg.push_blob("up", b"back again").await;
    reads_back(&reg, &format!("/v2/up/blobs/{digest}"), b"back again").await.unwrap();
    drop(runner);
}

/// Under Spin 4.1 the shipped cluster manifest serves through S3 with redirects. (Spin's own key-value
/// store here: with Spin's Redis store, every upload finish fails its compare-and-swap, see
/// docs/deploying.md, so a runner beside `spin up` sharing one Redis is not tested yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_up_serves_the_cluster_manifest_from_the_bucket_with_redirects() {
    let s3 = S3Server::start();
    let endpoint = s3.endpoint();
    let variables = [
        ("blob_s3_endpoint", endpoint.as_str()),
        ("blob_s3_bucket", BUCKET),
        ("blob_s3_access_key_id", "berth-test"),
        ("blob_s3_secret_access_key", "berth-test-secret"),
        ("blob_s3_prefix", "registry/"),
    ];
    let Some(spin) = common::spin::Spin::start_cluster(&variables, None) else { return };
    let reg = spin.registry();
    let (manifest, _) = reg.push_image("edge", "v1", 3).await;
    reads_back(&reg, "/v2/edge/manifests/v1", &manifest).await.unwrap();
    let layer = PseudoRandom::bytes(41, 10 * 1024 * 1024 + 3);
    let digest = reg.push_blob("edge", &layer).await;
    let no_follow = without_redirects();
    let answer = no_follow.get(reg.at(&format!("/v2/edge/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 307, "spin up redirects blob GETs to the bucket");
    reads_back(&reg, &format!("/v2/edge/blobs/{digest}"), &layer).await.unwrap();
    assert!(
        s3.objects("registry/").iter().any(|(_, size, _)| *size == layer.len() as u64),
        "the layer is in the bucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redirects_on_a_chunked_upload_ends_as_one_object_a_redirect_points_at() {
    let s3 = S3Server::start();
    let (_data, _runner, reg) = start_registry(cluster_options(&s3, None, 300));
    // 6 MiB, 1 MiB and 9 MiB chunks: runs of 5 MiB or more are copied inside S3, the rest is read
    // through to fill a part; one 16 MiB object.
    const MIB: usize = 1024 * 1024;
    let chunks = [PseudoRandom::bytes(51, 6 * MIB), PseudoRandom::bytes(52, MIB), PseudoRandom::bytes(53, 9 * MIB)];
    let whole = chunks.concat();
    let digest = sha256(&whole);
    let mut location = reg.start_upload("joined").await;
    let mut at = 0u64;
    for chunk in &chunks {
        let patched = reg.patch_chunk(&location, at, chunk).await;
        assert_eq!(patched.status().as_u16(), 202);
        location = header(&patched, "location");
        at += chunk.len() as u64;
    }
    assert_eq!(reg.finish_upload(&location, &digest, b"").await.status().as_u16(), 201);

    let no_follow = without_redirects();
    let answer = no_follow.get(reg.at(&format!("/v2/joined/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 307, "a chunked blob is redirected too");
    let joined =
        s3.objects("registry/").into_iter().filter(|(_, size, _)| *size == whole.len() as u64).collect::<Vec<_>>();
    assert_eq!(joined.len(), 1, "one object holds the whole blob");
    // 6 MiB copied; 1 MiB and 4 of the 9 read through into one 5 MiB part; the other 5 copied.
    assert!(joined[0].2.ends_with("-3\""), "three parts: {:?}", joined[0]);
    assert!(header(&answer, "location").contains(&joined[0].0), "the redirect points at it");
    reads_back(&reg, &format!("/v2/joined/blobs/{digest}"), &whole).await.unwrap();
}

#[test]
fn an_s3_endpoint_that_does_not_answer_is_named_in_the_log_at_start() {
    let mut s3 = S3Server::start();
    s3.stop(); // its port now refuses connections
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stderr.log");
    let options = RunnerOptions { stderr: Some(log.clone()), ..cluster_options(&s3, None, 0) };
    let runner = Runner::start_with(&data.path().join("data"), options);
    // The start-up probe has run before the runner says it serves.
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("storage check")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("blob store") && line.contains(&format!("S3 at {}", s3.endpoint())), "{line}");
    drop(runner);
}

/// Issue 13, item 3: behind a host that caps response bodies at 10 MiB (berth-runner's
/// `--edge-body-cap`, as on Akamai Functions), skopeo, podman, containerd and Docker Engine pull
/// an image whose layer is larger than the cap: its bytes come from the bucket by redirect. The
/// same front end without redirects cannot serve that layer (the cap bites).
#[test]
fn behind_a_10_mib_response_cap_clients_pull_larger_layers_through_redirects_only() {
    const CAP: &str = "10485760";
    let s3 = S3Server::start();
    let redis = RedisServer::start();
    let capped = |redirect_seconds: u32| {
        let mut options = cluster_options(&s3, Some(&redis), redirect_seconds);
        options.args.extend(["--edge-body-cap".to_owned(), CAP.to_owned()]);
        Leg::http_options(options)
    };
    // Pushes go to an origin without the cap (docs/deploying.md), pulls to the edge.
    let origin = Leg::http_options(cluster_options(&s3, Some(&redis), 300));
    let edge = capped(300);
    let edge_streaming = capped(0);

    let layout_dir = origin.work.join("layout");
    let layout = Layout::create(&layout_dir);
    let image = layout.image(17, "amd64", &[24 * 1024 * 1024, 2048]);
    layout.tag(&image, "application/vnd.oci.image.manifest.v1+json", "v1");
    origin.push_layout(&layout_dir, "v1", "edge/app:v1", false);

    let pulled = edge.work.join("pulled");
    edge.pull_to("edge/app:v1", &format!("oci:{}:v1", pulled.display()), false);
    let podman = edge.podman(&["pull", "--tls-verify=false", &format!("{}/edge/app:v1", edge.host)]);
    assert!(podman.status.success(), "podman pull through the edge: {}", String::from_utf8_lossy(&podman.stderr));

    let containerd = common::engines::Containerd::start();
    let reference = format!("{}/edge/app:v1", edge.host);
    containerd.ctr_ok("pull", &["image", "pull", "--plain-http", &reference]);
    let docker = common::engines::Dockerd::start();
    docker.docker_ok(&["pull", &reference]);
    assert_eq!(docker.image_id(&reference), image_config_digest(&layout_dir, &image.digest));

    let log = edge.runner.log();
    let big_layer_gets: Vec<&String> =
        log.iter().filter(|l| l.starts_with("GET /v2/edge/app/blobs/") && l.contains(" 307 ")).collect();
    assert!(big_layer_gets.len() >= 4, "every client was redirected: {log:#?}");

    // Without redirects the layer is over the cap: the pull fails, as it would at the edge.
    let failed = edge_streaming.skopeo(&common::clients::s(&[
        "copy",
        "--src-tls-verify=false",
        &edge_streaming.image("edge/app:v1"),
        &format!("oci:{}:v1", edge_streaming.work.join("pulled").display()),
    ]));
    assert!(!failed.status.success(), "a 24 MiB layer streamed through a 10 MiB cap must fail");
}

/// The config digest of the image manifest `manifest_digest` in an OCI layout (Docker's image ID).
fn image_config_digest(layout: &std::path::Path, manifest_digest: &str) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&manifest_digest[7..])).unwrap())
            .unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_that_never_answers_fails_requests_with_503_after_its_timeout() {
    // A black hole: it accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let mut options = cluster_options_at(&endpoint, None, 0);
    options.args.extend(vars(&[("blob_s3_timeout_seconds", "2")]));
    let (_data, _runner, reg) = start_registry(options);
    let started = std::time::Instant::now();
    let url = reg.at(&format!("/v2/slow/blobs/uploads/?digest={}", sha256(b"stuck")));
    let push = reg.http.post(url).body(b"stuck".to_vec()).send().await.unwrap();
    let (status, code, body) = error_code(push).await;
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "failed after {:?}", started.elapsed());
}

/// A stand-in for AWS under concurrent conditional writes, in front of `target` (moto): it
/// answers the first `conflicts` conditional writes (`If-None-Match`) with `409
/// ConditionalRequestConflict`, as AWS does while another conditional write of the key is in
/// flight, and passes every other request on. How many it answered 409 is counted.
async fn conflicting_s3(
    target: String,
    conflicts: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let target = target.trim_start_matches("http://").to_owned();
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let (target, counter) = (target.clone(), counter.clone());
            tokio::spawn(async move {
                let Some(head) = read_request_head(&mut client).await else { return };
                let mut buf = [0u8; 8192];
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let conditional = text.lines().any(|l| l.starts_with("if-none-match:"));
                if conditional && counter.fetch_add(1, Ordering::SeqCst) < conflicts {
                    let end = text.find("\r\n\r\n").unwrap() + 4;
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |n| n.trim().parse().unwrap_or(0));
                    let mut have = head.len() - end;
                    while have < length {
                        match client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => have += n,
                        }
                    }
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>ConditionalRequestConflict</Code>\
                                <Message>A conflicting conditional operation is currently in progress</Message></Error>";
                    let answer = format!(
                        "HTTP/1.1 409 Conflict\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(answer.as_bytes()).await;
                    let _ = client.shutdown().await;
                    return;
                }
                if conditional {
                    counter.fetch_sub(1, Ordering::SeqCst);
                }
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else { return };
                if upstream.write_all(&head).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (endpoint, answered, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_that_s3_answers_409_conflict_are_sent_again_and_the_push_succeeds() {
    let s3 = S3Server::start();
    let (endpoint, answered, task) = conflicting_s3(s3.endpoint(), 3).await;
    let (_data, _runner, reg) = start_registry(cluster_options_at(&endpoint, None, 0));
    let blob = PseudoRandom::bytes(77, 300_000);
    let digest = reg.push_blob("conflict/app", &blob).await;
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 3, "three writes were answered 409");
    reads_back(&reg, &format!("/v2/conflict/app/blobs/{digest}"), &blob).await.unwrap();
    let (manifest, _) = reg.push_image("conflict/app", "v1", 78).await;
    reads_back(&reg, "/v2/conflict/app/manifests/v1", &manifest).await.unwrap();
    task.abort();
}

#[tokio::test]
async fn the_s3_provider_keeps_the_blob_store_contract() {
    let s3 = S3Server::start();
    let (_data, _runner, reg) = start_registry(cluster_options(&s3, None, 120));
    assert_store_contract(&reg).await;
}
