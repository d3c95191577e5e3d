//! End-to-end rules of the foundation: the real component through the real runner.

mod common;

use common::*;
use futures::StreamExt;
use std::io::{Read, Write};

fn push_url(runner: &Runner, repo: &str, digest: &str) -> String {
    format!("{}/v2/{repo}/blobs/uploads/?digest={digest}", runner.url)
}

#[tokio::test]
async fn base_endpoint_answers_with_the_api_version_over_http() {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let response = client().get(format!("{}/v2/", runner.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["docker-distribution-api-version"], "registry/2.0");
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn base_endpoint_answers_over_https_with_a_trusted_certificate() {
    let data = tempfile::tempdir().unwrap();
    let certs = make_certs(data.path());
    let options = RunnerOptions { tls: Some((&certs.cert, &certs.key)), ..Default::default() };
    let runner = Runner::start_with(&data.path().join("data"), options);
    assert!(runner.url.starts_with("https://"), "{}", runner.url);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap();
    let tls_client =
        reqwest::Client::builder().no_proxy().tls_built_in_root_certs(false).add_root_certificate(ca).build().unwrap();
    let response = tls_client.get(format!("{}/v2/", runner.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["docker-distribution-api-version"], "registry/2.0");
    // Without the CA the handshake must fail: the test really is talking TLS.
    let untrusting = reqwest::Client::builder().no_proxy().tls_built_in_root_certs(false).build().unwrap();
    assert!(untrusting.get(format!("{}/v2/", runner.url)).send().await.is_err());
}

/// A client that trusts exactly these CAs.
fn trusting(cas: &[&std::path::Path]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().no_proxy().tls_built_in_root_certs(false);
    for ca in cas {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
    }
    builder.build().unwrap()
}

/// A certificate renewed on disk is served to new connections within seconds, while clients
/// keep pulling: no request fails, connections made before keep working, and the old
/// certificate is no longer served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_on_disk_under_load_is_served_without_dropping_a_request() {
    let data = tempfile::tempdir().unwrap();
    let (old_dir, new_dir, live) = (data.path().join("old"), data.path().join("new"), data.path().join("live"));
    for dir in [&old_dir, &new_dir, &live] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let (old, new) = (make_certs(&old_dir), make_certs(&new_dir));
    let (cert, key) = (live.join("server.crt"), live.join("server.key"));
    std::fs::copy(&old.cert, &cert).unwrap();
    std::fs::copy(&old.key, &key).unwrap();
    let options = RunnerOptions { tls: Some((&cert, &key)), ..Default::default() };
    let runner = Runner::start_with(&data.path().join("data"), options);
    let url = format!("{}/v2/", runner.url);
    let both = trusting(&[&old.ca, &new.ca]);
    assert_eq!(both.get(&url).send().await.unwrap().status(), 200);
    // Load: four clients, each on its own kept-alive connection, asking until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, stop) = (trusting(&[&old.ca, &new.ca]), url.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut answered, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => answered += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (answered, failed)
            })
        })
        .collect();
    // Renewed: each file replaced whole (as tools do, by a rename), the key first.
    for (from, to) in [(&new.key, &key), (&new.cert, &cert)] {
        let staged = to.with_extension("new");
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, to).unwrap();
    }
    let only_new = trusting(&[&new.ca]);
    let mut tries = 0;
    while only_new.get(&url).send().await.is_err() {
        tries += 1;
        assert!(tries < 200, "the new certificate was never served: {:?}", runner.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in load {
        let (answered, failed) = client.await.unwrap();
        assert!(answered > 0 && failed.is_empty(), "{answered} answered, failed: {failed:?}");
    }
    assert!(trusting(&[&old.ca]).get(&url).send().await.is_err(), "the old certificate is no longer served");
    assert!(
        runner.log().iter().any(|l| l.starts_with("berth-runner: TLS certificate reloaded from")),
        "{:?}",
        runner.log()
    );
}

#[tokio::test]
async fn unknown_paths_get_an_oci_error_not_plain_text() {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    for path in ["/", "/nope", "/v2/a", "/v3/x/tags/list"] {
        let response = client().get(format!("{}{path}", runner.url)).send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "application/json", "{path}");
        let (status, code, _) = error_code(response).await;
        assert_eq!((status, code.as_str()), (404, "NOT_FOUND"), "{path}");
    }
}

#[tokio::test]
async fn wrong_methods_and_bad_names_get_oci_errors() {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let (status, code, _) = error_code(client().delete(format!("{}/v2/", runner.url)).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (405, "UNSUPPORTED"));
    let (status, code, _) =
        error_code(client().get(format!("{}/v2/UPPER/tags/list", runner.url)).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "NAME_INVALID"));
    let (status, code, _) =
        error_code(client().get(format!("{}/v2/a/blobs/sha256:0", runner.url)).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "DIGEST_INVALID"));
}

#[tokio::test]
async fn a_malformed_http_request_does_not_crash_the_runner() {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let mut socket = std::net::TcpStream::connect(runner.addr()).unwrap();
    socket.write_all(b"NOT HTTP AT ALL\r\n\x00\x01\x02\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&answer));
    let response = client().get(format!("{}/v2/", runner.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_guest_trap_fails_only_its_request() {
    let data = tempfile::tempdir().unwrap();
    let options = RunnerOptions { component: Some(artifacts().trap_component.clone()), ..Default::default() };
    let runner = Runner::start_with(data.path(), options);
    for _ in 0..3 {
        let response = client().get(format!("{}/trap", runner.url)).send().await.unwrap();
        assert_eq!(response.headers()["docker-distribution-api-version"], "registry/2.0");
        let id = header(&response, "x-request-id");
        let (status, code, body) = error_code(response).await;
        assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"));
        // The runner answers for the trapped component, naming the request as it would have.
        let detail = body["errors"][0]["detail"].as_str().unwrap();
        assert!(id.len() == 16 && detail.ends_with(&format!("(request {id})")), "{id} {detail}");
        let alive = client().get(format!("{}/ok", runner.url)).send().await.unwrap();
        assert_eq!(alive.status(), 200);
        assert_eq!(alive.text().await.unwrap(), "alive");
    }
}

#[tokio::test]
async fn a_pushed_blob_reads_back_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let blob = PseudoRandom::bytes(1, 3 * 1024 * 1024 + 17);
    let digest = sha256(&blob);
    {
        let runner = Runner::start(data.path());
        let response =
            client().post(push_url(&runner, "library/app", &digest)).body(blob.clone()).send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["location"], format!("/v2/library/app/blobs/{digest}"));
        assert_eq!(response.headers()["docker-content-digest"], digest.as_str());
        assert!(runner.stop().success(), "runner exits cleanly on SIGTERM");
    }
    let runner = Runner::start(data.path());
    let url = format!("{}/v2/library/app/blobs/{digest}", runner.url);
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], blob.len().to_string().as_str());
    assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
    let get = client().get(&url).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.headers()["content-length"], blob.len().to_string().as_str());
    assert_eq!(get.headers()["docker-content-digest"], digest.as_str());
    assert!(get.bytes().await.unwrap() == blob, "the same bytes come back");
    // Linked to the repository it was pushed to, not to others.
    let (status, code, _) =
        error_code(client().get(format!("{}/v2/other/blobs/{digest}", runner.url)).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "BLOB_UNKNOWN"));
}

fn with_compile_cache(dir: &std::path::Path) -> RunnerOptions<'static> {
    RunnerOptions { args: vec!["--compile-cache".into(), dir.display().to_string()], ..RunnerOptions::default() }
}

async fn base_endpoint_status(runner: &Runner) -> u16 {
    client().get(format!("{}/v2/", runner.url)).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_second_start_loads_the_compiled_component_from_the_cache() {
    let (data, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Runner::start_with(data.path(), with_compile_cache(cache.path()));
    assert!(first.log().iter().any(|l| l.contains("component compiled in")), "{:?}", first.log());
    assert_eq!(base_endpoint_status(&first).await, 200);
    assert!(first.stop().success());
    let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "one compiled component: {entries:?}");
    assert!(entries[0].extension().is_some_and(|x| x == "cwasm"));

    let second = Runner::start_with(data.path(), with_compile_cache(cache.path()));
    assert!(second.log().iter().any(|l| l.contains("compiled component loaded from")), "{:?}", second.log());
    assert_eq!(base_endpoint_status(&second).await, 200);
}

#[tokio::test]
async fn a_damaged_compile_cache_entry_is_compiled_again() {
    let (data, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert!(Runner::start_with(data.path(), with_compile_cache(cache.path())).stop().success());
    let entry = std::fs::read_dir(cache.path()).unwrap().next().unwrap().unwrap().path();
    let mut damaged = std::fs::read(&entry).unwrap();
    damaged.truncate(damaged.len() / 2);
    std::fs::write(&entry, &damaged).unwrap();

    let runner = Runner::start_with(data.path(), with_compile_cache(cache.path()));
    assert!(runner.log().iter().any(|l| l.contains("component compiled in")), "{:?}", runner.log());
    assert_eq!(base_endpoint_status(&runner).await, 200);
    assert!(std::fs::metadata(&entry).unwrap().len() > damaged.len() as u64, "the entry was written whole again");
}

#[tokio::test]
async fn an_empty_blob_can_be_pushed_and_pulled() {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let digest = sha256(b"");
    let response = client().post(push_url(&runner, "a", &digest)).body(Vec::new()).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let get = client().get(format!("{}/v2/a/blobs/{digest}", runner.url)).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.headers()["content-length"], "0");
    assert!(get.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_digest_mismatch_is_digest_invalid_and_stores_nothing() {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let blob = PseudoRandom::bytes(2, 100_000);
    let wrong = sha256(b"something else");
    let response = client().post(push_url(&runner, "a", &wrong)).body(blob).send().await.unwrap();
    let (status, code, body) = error_code(response).await;
    assert_eq!((status, code.as_str()), (400, "DIGEST_INVALID"));
    assert!(body["errors"][0]["message"].is_string());
    let (status, code, _) =
        error_code(client().get(format!("{}/v2/a/blobs/{wrong}", runner.url)).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "BLOB_UNKNOWN"));
    assert_eq!(stored_objects(&runner.data, "parts"), Vec::<std::path::PathBuf>::new(), "no object left behind");
}

#[tokio::test]
async fn a_missing_store_label_gives_a_clean_error() {
    let data = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(repo_root().join("spin.toml"))
        .unwrap()
        .replace(r#"key_value_stores = ["default"]"#, r#"key_value_stores = ["elsewhere"]"#);
    let manifest_path = data.path().join("spin.toml");
    std::fs::write(&manifest_path, manifest).unwrap();
    let log = data.path().join("stderr.log");
    let options = RunnerOptions { manifest: manifest_path, stderr: Some(log.clone()), ..Default::default() };
    let runner = Runner::start_with(&data.path().join("data"), options);
    let answer = client().get(format!("{}/v2/a/blobs/{}", runner.url, sha256(b""))).send().await.unwrap();
    let request_id = header(&answer, "x-request-id");
    let (status, code, body) = error_code(answer).await;
    assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"));
    // The client gets the request's id; the operator reads what failed in the log, under it.
    let detail = body["errors"][0]["detail"].as_str().unwrap();
    let reference = detail
        .strip_prefix("internal error (request ")
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("a reference, not the store's message: {detail}"));
    assert_eq!(reference, request_id, "the reference is the request's id");
    assert!(!detail.contains("default") && !detail.contains("access denied"), "{detail}");
    let logged = std::fs::read_to_string(&log).unwrap();
    let line = logged.lines().find(|l| l.contains(reference)).unwrap_or_else(|| panic!("{logged}"));
    assert!(line.contains("\"default\"") && line.contains("access denied"), "{line}");
    // The runner goes on serving, and says the same on every request.
    let (status, code, _) = error_code(client().get(format!("{}/v2/", runner.url)).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"));
}

#[tokio::test]
async fn two_hundred_concurrent_requests_are_all_answered() {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let blob = b"concurrency".to_vec();
    let digest = sha256(&blob);
    assert_eq!(client().post(push_url(&runner, "c", &digest)).body(blob.clone()).send().await.unwrap().status(), 201);
    let client = client();
    let requests = (0..200).map(|i| {
        let client = client.clone();
        let url =
            if i % 2 == 0 { format!("{}/v2/", runner.url) } else { format!("{}/v2/c/blobs/{digest}", runner.url) };
        async move {
            let response = client.get(url).send().await.expect("answered");
            (response.status().as_u16(), response.bytes().await.expect("body").len())
        }
    });
    let results = futures::future::join_all(requests).await;
    for (i, (status, len)) in results.into_iter().enumerate() {
        assert_eq!(status, 200, "request {i}");
        assert_eq!(len, if i % 2 == 0 { 2 } else { blob.len() }, "request {i}");
    }
}

#[tokio::test]
async fn a_blob_streams_whole_when_its_instance_retires_after_the_request() {
    // With one request per instance the instance retires as soon as it has answered; the blob
    // bytes still flowing from the host must keep it alive until the last one is sent.
    let data = tempfile::tempdir().unwrap();
    let options = RunnerOptions { args: vec!["--instance-reuse".into(), "1".into()], ..Default::default() };
    let runner = Runner::start_with(data.path(), options);
    let blob = PseudoRandom::bytes(3, 48 * 1024 * 1024);
    let digest = sha256(&blob);
    assert_eq!(client().post(push_url(&runner, "r", &digest)).body(blob.clone()).send().await.unwrap().status(), 201);
    for _ in 0..3 {
        let response = client().get(format!("{}/v2/r/blobs/{digest}", runner.url)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut received = Vec::with_capacity(blob.len());
        while let Some(chunk) = body.next().await {
            received.extend_from_slice(&chunk.expect("the whole body arrives"));
            // Read slowly, yielding to let the server side run ahead and retire the instance.
            tokio::task::yield_now().await;
        }
        assert!(received == blob);
    }
}

const GIB: u64 = 1024 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

fn generated_stream(seed: u64, total: u64) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let mut rng = PseudoRandom::new(seed);
    futures::stream::iter((0..total.div_ceil(CHUNK as u64)).map(move |i| {
        let len = (total - i * CHUNK as u64).min(CHUNK as u64) as usize;
        let mut chunk = vec![0; len];
        rng.fill(&mut chunk);
        Ok(chunk)
    }))
}

fn digest_of_generated(seed: u64, total: u64) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    futures::executor::block_on(generated_stream(seed, total).for_each(|chunk| {
        hasher.update(chunk.unwrap());
        async {}
    }));
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Push and pull `total` bytes streamed both ways; returns the runner's peak RSS.
async fn stream_through(total: u64) -> (u64, u64) {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    // Let the first request instantiate the component before taking the idle figure.
    assert_eq!(client().get(format!("{}/v2/", runner.url)).send().await.unwrap().status(), 200);
    let idle = runner.rss();
    let digest = digest_of_generated(7, total);
    let body = reqwest::Body::wrap_stream(generated_stream(7, total));
    let response = client()
        .post(push_url(&runner, "big", &digest))
        .header("content-length", total)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);

    let response = client().get(format!("{}/v2/big/blobs/{digest}", runner.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], total.to_string().as_str());
    let mut expected = generated_stream(7, total).map(Result::unwrap);
    let mut pending: Vec<u8> = Vec::new();
    let mut received = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            if pending.is_empty() {
                pending = expected.next().await.expect("more bytes than pushed");
            }
            let n = rest.len().min(pending.len());
            assert!(rest[..n] == pending[..n], "byte mismatch at offset {received}");
            pending.drain(..n);
            rest = &rest[n..];
            received += n as u64;
        }
    }
    assert_eq!(received, total);
    (idle, runner.peak_rss())
}

#[tokio::test]
async fn a_gib_blob_streams_through_with_bounded_memory() {
    let (idle, peak) = stream_through(GIB).await;
    println!("runner RSS: idle {} MiB, peak while streaming 1 GiB {} MiB", idle >> 20, peak >> 20);
    assert!(peak < 256 * 1024 * 1024, "peak RSS {} MiB is not far below the 1 GiB blob", peak >> 20);
}

#[tokio::test]
async fn a_64_mib_blob_streams_through_with_bounded_memory() {
    let (idle, peak) = stream_through(64 * 1024 * 1024).await;
    println!("runner RSS: idle {} MiB, peak while streaming 64 MiB {} MiB", idle >> 20, peak >> 20);
    assert!(peak < 200 * 1024 * 1024, "peak RSS {} MiB", peak >> 20);
}

/// `--log-format json`: one JSON object per request on standard output, with the request's id,
/// taken from `X-Request-Id` or made; the same id in the answer's `X-Request-Id` and at the end of
/// every line the component logs for that request.
#[tokio::test]
async fn every_request_has_an_id_in_its_answer_its_json_log_line_and_the_components_lines() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stderr.log");
    let mut args = vec!["--log-format".to_owned(), "json".to_owned()];
    args.extend(vars(&[("gc_grace_seconds", "0")]));
    let options = RunnerOptions { args, stderr: Some(log.clone()), ..Default::default() };
    let runner = Runner::start_with(&data.path().join("data"), options);
    let blob = b"an unreferenced layer".to_vec();
    let pushed = client()
        .post(push_url(&runner, "app", &sha256(&blob)))
        .header("x-request-id", "push-1")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!((pushed.status().as_u16(), header(&pushed, "x-request-id")), (201, "push-1".to_owned()));
    // An error body quotes the request in its detail, for a user's report.
    let missing = format!("{}/v2/app/blobs/{}", runner.url, sha256(b"never pushed"));
    let unknown = client().get(missing).header("x-request-id", "oops-1").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let body = json(unknown).await;
    assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
    assert!(body["errors"][0]["detail"].as_str().unwrap().ends_with("(request oops-1)"), "{body}");
    // An id that could forge a log line is replaced by one made here.
    let forged = client().get(format!("{}/v2/", runner.url)).header("x-request-id", "a\tb").send().await.unwrap();
    let made = header(&forged, "x-request-id");
    assert!(made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    // A collection step that removes the blob logs it under its own id.
    let step = client().post(format!("{}/v2/_berth/gc", runner.url)).header("x-request-id", "gc-7").send().await;
    assert_eq!(step.unwrap().status(), 200);
    let logged = std::fs::read_to_string(&log).unwrap();
    let removal = format!("berth: gc: removed blob {}", sha256(&blob));
    let line = logged.lines().find(|l| l.starts_with(&removal)).unwrap_or_else(|| panic!("{logged}"));
    assert!(line.ends_with("(request gc-7)"), "{line}");
    // The request log: JSON objects with the fields a pipeline indexes.
    let lines: Vec<serde_json::Value> =
        runner.log().iter().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let push = lines.iter().find(|l| l["request_id"] == "push-1").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(push["method"], "POST");
    assert_eq!(push["route"], "uploads");
    assert_eq!(push["repository"], "app");
    assert_eq!(push["status"], 201);
    assert!(push["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{push}");
    assert!(push["duration_ms"].is_number() && push["bytes"].is_number(), "{push}");
    assert!(push["time"].as_str().unwrap().ends_with('Z'), "{push}");
    assert!(lines.iter().any(|l| l["request_id"] == made.as_str() && l["route"] == "base"), "{lines:#?}");
}

/// Plain HTTP only by explicit opt-in: `up` on an address beyond this machine without a
/// certificate refuses to start, saying how to serve HTTPS or to opt in (it binds nothing).
#[test]
fn plain_http_beyond_loopback_is_refused_at_start_without_insecure_http() {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(&artifacts().runner)
        .args(["up", "--listen", "0.0.0.0:0", "--no-compile-cache", "--manifest"])
        .arg(repo_root().join("spin.toml"))
        .arg("--component")
        .arg(&artifacts().component)
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started: {stderr}");
    assert!(stderr.contains("refusing to serve plain HTTP on 0.0.0.0:0"), "{stderr}");
    assert!(stderr.contains("--tls-cert") && stderr.contains("--insecure-http"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("serving"), "it never served");
}

/// `--metrics-listen`: Prometheus metrics on a listener of their own, which `promtool check
/// metrics` accepts and a real Prometheus scrapes: requests by endpoint family, method and
/// status, their latency, and the bytes in and out.
#[tokio::test]
async fn metrics_are_served_apart_checked_by_promtool_and_scraped_by_prometheus() {
    use common::clients::ensure_installed;
    use common::process::{free_port, stop_by_pid, wait_until};
    ensure_installed("prometheus");
    let data = tempfile::tempdir().unwrap();
    let args = vec!["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()];
    let runner = Runner::start_with(&data.path().join("data"), RunnerOptions { args, ..Default::default() });
    let metrics_url = metrics_url(&runner);
    let blob = b"counted".to_vec();
    let pushed = client()
        .post(push_url(&runner, "app", &sha256(&blob)))
        .header("x-berth-count-events", "0")
        .body(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    assert!(pushed.headers().get("x-berth-events").is_none(), "the component's counts never reach a client");
    let missing = client().get(format!("{}/v2/app/manifests/nothing", runner.url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    missing.bytes().await.unwrap();
    // Not on the registry's port.
    assert_eq!(client().get(format!("{}/metrics", runner.url)).send().await.unwrap().status(), 404);

    // A garbage collection pass (one step, on a registry this small).
    let step = json(client().post(format!("{}/v2/_berth/gc?cursor=", runner.url)).send().await.unwrap()).await;
    assert!(step["next"].is_null(), "{step}");
    // Instances are busy only while they serve: none once every answer is read.
    let mut text = scrape(&runner).await;
    for _ in 0..200 {
        if text.contains("\nberth_instances_busy 0\n") {
            break;
        }
        tokio::task::yield_now().await;
        text = scrape(&runner).await;
    }
    let gauge = |name: &str| -> i64 {
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(gauge("berth_instances") >= 1, "{text}");
    assert_eq!(gauge("berth_instances_busy"), 0, "{text}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - 60..=now).contains(&gauge("berth_gc_last_pass_completed_timestamp_seconds")), "{text}");
    for expected in [
        r#"berth_http_requests_total{route="uploads",method="POST",status="201"} 1"#,
        r#"berth_http_requests_total{route="manifests",method="GET",status="404"} 1"#,
        "berth_http_request_duration_seconds_bucket",
        "berth_http_request_body_bytes_total 7",
        "berth_connections_open",
        // What the component counted: the registry's own figures.
        r#"berth_registry_events_total{event="uploads_opened"} 1"#,
        r#"berth_registry_events_total{event="uploads_finished"} 1"#,
        r#"berth_registry_events_total{event="gc_passes_completed"} 1"#,
    ] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
    common::process::promtool_check_metrics(&text);

    // A real Prometheus scrapes it every second; its query API then has the request counts.
    let dir = tempfile::tempdir().unwrap();
    let target = metrics_url.trim_start_matches("http://").trim_end_matches("/metrics");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let log = dir.path().join("prometheus.log");
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=berth_http_requests_total%7Broute%3D%22uploads%22%2Cstatus%3D%22201%22%7D"
    );
    let scraped = || {
        let output = std::process::Command::new("curl").args(["-s", &query]).output().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        body["data"]["result"][0]["value"][1] == "1"
    };
    wait_until("prometheus scraping berth", std::time::Duration::from_secs(60), &log, &mut prometheus, scraped);
    stop_by_pid(&mut prometheus, std::time::Duration::from_secs(10));
}

/// The deploy guide's monitoring example (`deploy/monitoring/`): a scrape config Prometheus
/// accepts, and two alert rules (server errors, storage unavailable) that `promtool test rules`
/// shows firing on the series that should raise them, and only there.
#[test]
fn the_monitoring_examples_config_and_alert_rules_check_and_fire_as_documented() {
    common::clients::ensure_installed("promtool");
    let dir = repo_root().join("deploy/monitoring");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let output = std::process::Command::new("promtool").args(&args).current_dir(&dir).output().unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
