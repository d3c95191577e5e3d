//! The registry on Redis key-value (issue 13): `berth-runner up --runtime-config-file` with a
//! Spin runtime config file whose `[key_value_store.default]` is `type = "redis"`, against a real
//! redis-server of each test's own (Debian's `redis-server`, installed if missing).
//!
//! What lives in Redis: the registry's metadata; with the key-value blob store provider composed
//! in, the blobs' chunks and the provider's index too, so two runners with data dirs of their own
//! share one registry through one Redis.

mod common;

use common::redis::RedisServer;
use common::*;
use futures::future::join_all;
use std::path::Path;
use std::process::Command;

/// 256 KiB: the key-value provider's chunk size; the race's blobs span more than one chunk.
const KV_CHUNK: usize = 256 * 1024;

// ---- harness --------------------------------------------------------------------------------

/// Push an image and read it all back by tag and by digest, through `reg`.
async fn push_and_pull(reg: &Registry, repo: &str, tag: &str, seed: u64) {
    let (manifest, digest) = reg.push_image(repo, tag, seed).await;
    reads_back(reg, &format!("/v2/{repo}/manifests/{tag}"), &manifest).await.unwrap();
    reads_back(reg, &format!("/v2/{repo}/manifests/{digest}"), &manifest).await.unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = &parsed["layers"][0];
    let layer_bytes = PseudoRandom::bytes(seed, 1000 + seed as usize);
    assert_eq!(layer["size"].as_u64(), Some(layer_bytes.len() as u64));
    reads_back(reg, &format!("/v2/{repo}/blobs/{}", layer["digest"].as_str().unwrap()), &layer_bytes).await.unwrap();
    let tags = reg.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(tags.status(), 200);
    let tags: serde_json::Value = serde_json::from_slice(&tags.bytes().await.unwrap()).unwrap();
    assert!(tags["tags"].as_array().unwrap().iter().any(|t| t == tag), "{tags}");
}

/// The runner made no SQLite store: the label `default` went to Redis.
fn assert_no_sqlite_store(data: &Path) {
    assert!(!data.join("kv/default.db").exists(), "the store `default` was opened on SQLite");
}

// ---- (a), (b): push and pull with the store on Redis -----------------------------------------

#[tokio::test]
async fn push_and_pull_keep_the_registry_metadata_in_redis() {
    let redis = RedisServer::start();
    let (data, runner, reg) = start_registry(redis.options(false));
    assert!(runner.log().iter().any(|l| l == "berth-runner: key-value store default: Redis"), "{:?}", runner.log());
    assert!(redis.keys("*").is_empty());
    push_and_pull(&reg, "on-redis/app", "v1", 1).await;
    let keys = redis.keys("*");
    assert!(!keys.is_empty(), "the registry wrote its metadata to Redis");
    assert!(keys.iter().all(|k| !k.starts_with("blob-kv/")), "no provider here: {keys:?}");
    assert_no_sqlite_store(data.path());
    assert!(!stored_objects(data.path(), "").is_empty(), "the blobs are in the runner's filesystem store");
}

#[tokio::test]
async fn with_the_key_value_provider_chunks_and_index_live_in_redis_too() {
    let redis = RedisServer::start();
    let (data, runner, reg) = start_registry(redis.options(true));
    assert!(runner.log().iter().any(|l| l.contains("blob store: provider component")), "{:?}", runner.log());
    push_and_pull(&reg, "on-redis/app", "v1", 2).await;
    // A blob of several chunks, so chunks are written and read as more than one value.
    let big = PseudoRandom::bytes(3, 3 * KV_CHUNK + 17);
    let digest = reg.push_blob("on-redis/app", &big).await;
    reads_back(&reg, &format!("/v2/on-redis/app/blobs/{digest}"), &big).await.unwrap();
    assert!(redis.keys("blob-kv/chunk/*").len() >= 4, "chunks: {:?}", redis.keys("blob-kv/chunk/*"));
    assert!(!redis.keys("blob-kv/ix/*").is_empty(), "the provider's index is in Redis");
    assert_no_sqlite_store(data.path());
    assert!(stored_objects(data.path(), "").is_empty(), "no blob went to the filesystem");
}

// ---- (c): the same-key races on Redis --------------------------------------------------------

/// Eight concurrent finishing PUTs of one upload session: exactly one 201, the others 404
/// BLOB_UPLOAD_UNKNOWN, and the blob reads back byte-identical (as tests/storage.rs on SQLite).
async fn duplicate_finishes_never_lose_the_blob(provider: bool) {
    let redis = RedisServer::start();
    let (_data, _runner, reg) = start_registry(redis.options(provider));
    let mut problems = Vec::new();
    for round in 0..5 {
        let blob = PseudoRandom::bytes(100 + round, KV_CHUNK + 1000 + round as usize);
        let digest = sha256(&blob);
        let location = reg.start_upload("dup").await;
        let response = reg.patch_chunk(&location, 0, &blob).await;
        assert_eq!(response.status(), 202);
        let location = header(&response, "location");
        let finishes = (0..8).map(|_| async { outcome(reg.finish_upload(&location, &digest, &[]).await).await });
        let outcomes = join_all(finishes).await;
        let created = outcomes.iter().filter(|o| o.0 == 201).count();
        if created != 1 || !outcomes.iter().all(|o| o.0 == 201 || is_error(o, 404, "BLOB_UPLOAD_UNKNOWN")) {
            problems
                .push(format!("round {round}: answered {outcomes:?}; expected one 201, seven 404 BLOB_UPLOAD_UNKNOWN"));
        }
        if let Err(e) = reads_back(&reg, &format!("/v2/dup/blobs/{digest}"), &blob).await {
            problems.push(format!("round {round}: {e}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn duplicate_finishes_on_redis_never_lose_the_blob_fs() {
    duplicate_finishes_never_lose_the_blob(false).await
}

#[tokio::test]
async fn duplicate_finishes_on_redis_never_lose_the_blob_kv() {
    duplicate_finishes_never_lose_the_blob(true).await
}

// ---- (d): two runners, one Redis -------------------------------------------------------------

#[tokio::test]
async fn two_runners_on_one_redis_see_each_others_writes_and_race_safely() {
    let redis = RedisServer::start();
    let (_data_a, _a, reg_a) = start_registry(redis.options(true));
    let (_data_b, _b, reg_b) = start_registry(redis.options(true));

    // What one pushes, the other serves.
    let (manifest, _) = reg_a.push_image("shared/app", "v1", 4).await;
    reads_back(&reg_b, "/v2/shared/app/manifests/v1", &manifest).await.unwrap();
    push_and_pull(&reg_b, "shared/app", "v2", 5).await;

    let mut problems = Vec::new();
    for round in 0..4 {
        // One upload session, finished from both runners at once: one wins.
        let blob = PseudoRandom::bytes(200 + round, KV_CHUNK + 500 + round as usize);
        let digest = sha256(&blob);
        let location = reg_a.start_upload("shared/app").await;
        let response = reg_a.patch_chunk(&location, 0, &blob).await;
        assert_eq!(response.status(), 202);
        let location = header(&response, "location");
        let path = path_of(&location);
        let finishes = (0..8).map(|i| {
            let (reg, path, digest) = (if i % 2 == 0 { &reg_a } else { &reg_b }, path.clone(), digest.clone());
            async move { outcome(reg.finish_upload(&path, &digest, &[]).await).await }
        });
        let outcomes = join_all(finishes).await;
        let created = outcomes.iter().filter(|o| o.0 == 201).count();
        if created != 1 || !outcomes.iter().all(|o| o.0 == 201 || is_error(o, 404, "BLOB_UPLOAD_UNKNOWN")) {
            problems.push(format!("round {round}: finishes from two runners answered {outcomes:?}"));
        }
        for reg in [&reg_a, &reg_b] {
            if let Err(e) = reads_back(reg, &format!("/v2/shared/app/blobs/{digest}"), &blob).await {
                problems.push(format!("round {round}: {e}"));
            }
        }

        // One tag, pushed from both runners at once: both then resolve it to the same manifest.
        let tag = format!("race{round}");
        let (first, second) = tokio::join!(
            reg_a.push_image("shared/app", &tag, 300 + round),
            reg_b.push_image("shared/app", &tag, 400 + round)
        );
        let seen_a = reg_a.get(&format!("/v2/shared/app/manifests/{tag}")).await.bytes().await.unwrap();
        let seen_b = reg_b.get(&format!("/v2/shared/app/manifests/{tag}")).await.bytes().await.unwrap();
        if seen_a != seen_b || (seen_a != first.0 && seen_a != second.0) {
            problems.push(format!("round {round}: after racing pushes of {tag} the runners disagree or serve neither"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---- answers kept by one front end while another writes -------------------------------------

/// One tag moved again and again through one runner while 16 clients read it through another,
/// both on one Redis: the reading runner gives kept answers (checked against Redis before each),
/// and no read that started after a move was acknowledged sees the tag older (seeded;
/// `BERTH_KEPT_SEED` replays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_through_one_runner_is_never_served_older_by_the_other_after_the_move() {
    let redis = RedisServer::start();
    // The key-value provider: both runners' blobs (manifest bytes too) live in Redis.
    let (_data_a, _a, writer) = start_registry(redis.options(true));
    let mut options = redis.options(true);
    options.args.extend(["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]);
    let (_data_b, b, reader) = start_registry(options);
    let seed = kept::seed();
    let race = kept::race_a_moving_tag(&writer, &reader, "shared/moving", seed, 16, 30).await;
    assert!(race.problems.is_empty(), "seed {seed}: {:#?}", race.problems);
    let metrics = scrape(&b).await;
    let (hits, changed) = (kept::answer_cache_count(&metrics, "hit"), kept::answer_cache_count(&metrics, "changed"));
    assert!(hits > 0.0 && changed > 0.0, "seed {seed}: {hits} hits, {changed} changed of {} reads", race.reads);
    println!("{} reads: {hits} from the cache, {changed} found changed", race.reads);
}

/// Kept answers are checked against Redis: while it is down, none is given (the component
/// answers 503 UNAVAILABLE, as without the cache); once it is back, they are given again.
#[tokio::test]
async fn no_kept_answer_is_given_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let mut options = redis.options(true);
    options.args.extend(["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]);
    let (_data, runner, reg) = start_registry(options);
    let (manifest, _) = reg.push_image("kept/outage", "v1", 81).await;
    let path = "/v2/kept/outage/manifests/v1";
    for _ in 0..3 {
        reads_back(&reg, path, &manifest).await.unwrap();
    }
    let hits = async || kept::answer_cache_count(&scrape(&runner).await, "hit");
    let before = hits().await;
    assert!(before >= 2.0, "answers were kept: {before} hits");

    redis.stop();
    let answer = client().get(reg.at(path)).timeout(std::time::Duration::from_secs(60)).send().await.unwrap();
    expect_error(answer, 503, "UNAVAILABLE").await;
    assert_eq!(hits().await, before, "a kept answer was given without its check");

    redis.restart();
    let mut tries = 0;
    while reg.get(path).await.status() != 200 {
        tries += 1;
        assert!(tries < 50, "the manifest was never served again after Redis came back");
    }
    reads_back(&reg, path, &manifest).await.unwrap();
    reads_back(&reg, path, &manifest).await.unwrap();
    assert!(hits().await > before, "kept answers are given again");
}

// ---- stale pooled connections ----------------------------------------------------------------

/// `n` pulls of `path` at once (they fill the runner's connection pool); their statuses.
async fn pulls(reg: &Registry, path: &str, n: usize) -> Vec<u16> {
    join_all((0..n).map(|_| async { reg.get(path).await.status().as_u16() })).await
}

/// Wait until Redis has no client but the one asking (it closed the runner's idle ones).
fn until_only_the_asker_is_connected(redis: &RedisServer) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while redis.cli(&["CLIENT", "LIST"]).lines().count() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "redis kept the idle connections: {}",
            redis.cli(&["CLIENT", "LIST"])
        );
        std::thread::yield_now();
    }
}

#[tokio::test]
async fn pooled_connections_closed_by_an_idle_timeout_or_a_restart_never_fail_a_request() {
    let mut redis = RedisServer::start();
    let (_data, _runner, reg) = start_registry(redis.options(false));
    reg.push_image("pool/app", "v1", 7).await;
    let path = "/v2/pool/app/manifests/v1";
    // What managed Redis services and proxies do: close connections idle for 2 s.
    redis.cli(&["CONFIG", "SET", "timeout", "2"]);
    assert!(pulls(&reg, path, 8).await.iter().all(|s| *s == 200));
    until_only_the_asker_is_connected(&redis);
    let after_timeout: Vec<u16> = [pulls(&reg, path, 8).await, pulls(&reg, path, 12).await].concat();
    assert!(after_timeout.iter().all(|s| *s == 200), "after the idle timeout: {after_timeout:?}");
    // A restart closes every connection, however recently used.
    redis.cli(&["CONFIG", "SET", "timeout", "0"]);
    assert!(pulls(&reg, path, 8).await.iter().all(|s| *s == 200));
    redis.stop();
    redis.restart();
    let after_restart: Vec<u16> = [pulls(&reg, path, 8).await, pulls(&reg, path, 12).await].concat();
    assert!(after_restart.iter().all(|s| *s == 200), "after a restart: {after_restart:?}");
}

// ---- the runtime config file at start --------------------------------------------------------

#[test]
fn a_store_type_the_runner_does_not_support_stops_it_at_start_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runtime-config.toml");
    std::fs::write(&config, "[key_value_store.default]\ntype = \"azure_cosmos\"\n").unwrap();
    let output = Command::new(&artifacts().runner)
        .arg("up")
        .arg("--manifest")
        .arg(repo_root().join("spin.toml"))
        .arg("--component")
        .arg(&artifacts().component)
        .args(["--listen", "127.0.0.1:0", "--no-compile-cache", "--data"])
        .arg(dir.path().join("data"))
        .arg("--runtime-config-file")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the runner started: {stderr}");
    assert!(stderr.contains("[key_value_store.default]") && stderr.contains("\"azure_cosmos\""), "{stderr}");
}

// ---- probes --------------------------------------------------------------------------------

/// `/healthz` answers while the instance serves; `/readyz` answers 503 while Redis is down
/// (the log, not the answer, names the key-value store) and 200 again once it is back. Neither
/// needs credentials, with authentication on.
#[tokio::test]
async fn readyz_is_503_while_redis_is_down_and_healthz_answers_throughout() {
    let mut redis = RedisServer::start();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut options = redis.options(false);
    options.args.extend(vars(&[
        ("auth_mode", "basic"),
        ("auth_users", &format!("admin:{SECRET_HASH}")),
        ("auth_policy", "* admin pull,push"),
    ]));
    options.stderr = Some(log.path().to_owned());
    options.args.extend(["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]);
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start_with(data.path(), options);
    let probe = async |path: &str| {
        let answer = client()
            .get(format!("{}{path}", runner.url))
            .timeout(std::time::Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), json(answer).await["status"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(probe("/healthz").await, (200, "ok".to_owned()));
    assert_eq!(probe("/readyz").await, (200, "ready".to_owned()));
    assert_eq!(client().get(format!("{}/v2/", runner.url)).send().await.unwrap().status(), 401);

    redis.stop();
    assert_eq!(probe("/readyz").await, (503, "unavailable".to_owned()));
    assert_eq!(probe("/healthz").await, (200, "ok".to_owned()));
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(logged.contains("berth: readyz: the key-value store is not ready"), "{logged}");
    // The runner's metrics count the failures, by backend.
    let text = scrape(&runner).await;
    let failures = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"berth_backend_errors_total{backend="redis"} "#))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(failures.parse::<u64>().unwrap() > 0, "{text}");
    assert!(text.contains(r#"berth_backend_errors_total{backend="sqlite"} 0"#), "{text}");

    redis.restart();
    let mut answers = Vec::new();
    loop {
        let answer = probe("/readyz").await;
        if answer.0 == 200 {
            break;
        }
        answers.push(answer);
        assert!(answers.len() < 50, "readyz after Redis came back: {answers:?}");
    }
}

#[tokio::test]
async fn the_key_value_provider_on_redis_keeps_the_blob_store_contract() {
    let redis = RedisServer::start();
    let (_data, _runner, reg) = start_registry(redis.options(true));
    assert_store_contract(&reg).await;
}
