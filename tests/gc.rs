//! Garbage collection (issue 15) through berth-runner: the admin endpoint, `berth-runner gc`
//! with and without --dry-run, the HEAD-then-GC-then-PUT race, and GC racing many pushers and
//! deleters on the same tags and layers, on the filesystem store and the key-value provider.

mod common;

use common::clients::{Leg, s, with};
use common::rng::Rng;
use common::*;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn provider_args() -> Vec<String> {
    vec!["--blob-store".into(), artifacts().blob_kv_provider.display().to_string()]
}

/// `berth-runner gc` against a leg; its standard output.
fn gc_cli(leg: &Leg, extra: &[&str], user: Option<(&str, &str)>) -> String {
    let mut command = Command::new(&artifacts().runner);
    command.args(["gc", "--registry", &format!("http://{}", leg.host)]).args(extra);
    if let Some((user, password)) = user {
        command.args(["--user", user]).env("BERTH_ADMIN_PASSWORD", password);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "berth-runner gc {extra:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// The digests a `berth-runner gc` output names as removed (or to be removed).
fn named(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("removed ").or_else(|| l.strip_prefix("would remove ")))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// Bytes in the filesystem store's data objects (`uploads/`).
fn data_bytes(data: &std::path::Path) -> u64 {
    stored_objects(data, "uploads").iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

async fn push_image_of(
    reg: &Registry,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[&[u8]],
) -> (reqwest::Response, Vec<u8>) {
    let mut layer_descriptors = Vec::new();
    for layer in layers {
        layer_descriptors.push((OCI_LAYER, reg.push_blob(repo, layer).await, layer.len()));
    }
    let config_digest = reg.push_blob(repo, config).await;
    let layers: Vec<(&str, &str, usize)> = layer_descriptors.iter().map(|(t, d, n)| (*t, d.as_str(), *n)).collect();
    let manifest = image_manifest(&[(OCI_CONFIG, &config_digest, config.len())], &layers, "");
    (reg.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await, manifest)
}

#[tokio::test]
async fn berth_runner_gc_removes_what_only_a_deleted_manifest_held_and_its_dry_run_names_the_same() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let options = RunnerOptions {
        args: vars(&[("gc_grace_seconds", "0")]),
        stderr: Some(log.path().to_owned()),
        ..Default::default()
    };
    let leg = Leg::http_options(options);
    let reg = Registry::new(&leg.runner);
    let shared = PseudoRandom::bytes(1, 300_000);
    let only_a = PseudoRandom::bytes(2, 200_000);
    let only_b = PseudoRandom::bytes(3, 100_000);
    let (r, manifest_a) = push_image_of(&reg, "gc/app", "a", b"{\"config\":\"a\"}", &[&shared, &only_a]).await;
    assert_eq!(r.status(), 201);
    let (r, _) = push_image_of(&reg, "gc/app", "b", b"{\"config\":\"b\"}", &[&shared, &only_b]).await;
    assert_eq!(r.status(), 201);
    let digest_a = sha256(&manifest_a);
    assert_eq!(reg.delete(&format!("/v2/gc/app/manifests/{digest_a}")).await.status(), 202);

    let before = data_bytes(&leg.runner.data);
    let planned = gc_cli(&leg, &["--dry-run"], None);
    assert_eq!(data_bytes(&leg.runner.data), before, "a dry run removes nothing");
    let expected: BTreeSet<String> =
        [sha256(&only_a), sha256(b"{\"config\":\"a\"}"), digest_a.clone()].into_iter().collect();
    assert_eq!(named(&planned), expected, "{planned}");
    let freed = (only_a.len() + 14 + manifest_a.len()) as u64;
    assert!(planned.contains(&format!("would free {freed} bytes")), "{planned}");

    // Three blobs at once, resting a tenth of the time: the same blobs go.
    let done = gc_cli(&leg, &["--concurrency", "3", "--pace", "0.9"], None);
    assert_eq!(named(&done), expected, "{done}");
    assert_eq!(before - data_bytes(&leg.runner.data), freed, "the bytes left the disk");
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(logged.contains(&format!("berth: gc: removed blob {} (200000 bytes)", sha256(&only_a))), "{logged}");
    expect_error(reg.get(&format!("/v2/gc/app/blobs/{}", sha256(&only_a))).await, 404, "BLOB_UNKNOWN").await;

    // The image that stays pulls whole with skopeo.
    let out = leg.work.join("b");
    let args = with(s(&["copy", &leg.image("gc/app:b"), &format!("dir:{}", out.display())]), leg.skopeo_tls("src"));
    leg.skopeo_ok(&args);
    for (bytes, name) in [(&shared, "shared"), (&only_b, "only b")] {
        let file = out.join(sha256(bytes).trim_start_matches("sha256:"));
        assert_eq!(std::fs::read(&file).unwrap(), *bytes, "{name}");
    }
    assert!(named(&gc_cli(&leg, &[], None)).is_empty(), "a second pass finds nothing");
}

#[tokio::test]
async fn head_then_gc_then_put_is_manifest_blob_unknown_and_pushing_again_repairs_it() {
    let leg = Leg::http_with(vars(&[("gc_grace_seconds", "0")]));
    let reg = Registry::new(&leg.runner);
    let layer = PseudoRandom::bytes(7, 50_000);
    let config = b"{\"config\":1}".to_vec();
    let layer_digest = reg.push_blob("gc/race", &layer).await;
    let config_digest = reg.push_blob("gc/race", &config).await;
    // The client checks its blobs: both are there, so it will not send them again.
    for digest in [&layer_digest, &config_digest] {
        assert_eq!(reg.head(&format!("/v2/gc/race/blobs/{digest}")).await.status(), 200);
    }
    // Garbage collection runs in between (one step through the admin API).
    let step = json(client().post(format!("{}/v2/_berth/gc?cursor=", leg.runner.url)).send().await.unwrap()).await;
    assert_eq!(step["collected"].as_array().unwrap().len(), 2, "{step}");
    assert_eq!(step["next"], serde_json::Value::Null);
    // The manifest arrives: refused, and nothing of it is stored.
    let manifest =
        image_manifest(&[(OCI_CONFIG, &config_digest, config.len())], &[(OCI_LAYER, &layer_digest, layer.len())], "");
    expect_error(reg.put_manifest("gc/race", "v1", OCI_MANIFEST, &manifest).await, 400, "MANIFEST_BLOB_UNKNOWN").await;
    expect_error(reg.get("/v2/gc/race/manifests/v1").await, 404, "MANIFEST_UNKNOWN").await;
    // The client pushes its blobs again, then the manifest: whole again.
    reg.push_blob("gc/race", &layer).await;
    reg.push_blob("gc/race", &config).await;
    assert_eq!(reg.put_manifest("gc/race", "v1", OCI_MANIFEST, &manifest).await.status(), 201);
    assert!(named(&gc_cli(&leg, &[], None)).is_empty());
    reads_back(&reg, &format!("/v2/gc/race/blobs/{layer_digest}"), &layer).await.unwrap();
}

#[tokio::test]
async fn the_gc_endpoint_and_berth_runner_gc_need_the_admin_action() {
    let policy = "* admin admin;* admin pull,push,delete;* bob pull,push,delete";
    let users = format!("admin:{SECRET_HASH},bob:{SECRET_HASH}");
    let leg = Leg::http_with(vars(&[("auth_mode", "basic"), ("auth_users", &users), ("auth_policy", policy)]));
    let url = format!("{}/v2/_berth/gc?dry_run=true", leg.runner.url);
    expect_error(client().post(&url).send().await.unwrap(), 401, "UNAUTHORIZED").await;
    expect_error(client().post(&url).basic_auth("bob", Some("secret")).send().await.unwrap(), 403, "DENIED").await;
    let answer = client().post(&url).basic_auth("admin", Some("secret")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer = json(answer).await;
    assert_eq!((answer["dryRun"].as_bool(), answer["examined"].as_u64()), (Some(true), Some(0)));
    let bad = client().post(format!("{url}x")).basic_auth("admin", Some("secret")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    for concurrency in ["0", "9", "many"] {
        let bad = client().post(format!("{url}&concurrency={concurrency}")).basic_auth("admin", Some("secret"));
        let (status, code, body) = error_code(bad.send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "UNSUPPORTED"), "{body}");
        assert!(body.to_string().contains("concurrency is a number of blobs from 1 to 8"), "{body}");
    }
    let output = gc_cli(&leg, &["--dry-run"], Some(("admin", "secret")));
    assert!(output.contains("examined 0 blobs"), "{output}");
}

#[tokio::test]
async fn berth_runner_gc_gets_a_token_where_the_registry_wants_one() {
    let policy = "* admin admin;* admin pull,push,delete";
    let users = format!("admin:{SECRET_HASH}");
    let leg = Leg::http_with(vars(&[
        ("auth_mode", "token"),
        ("auth_users", &users),
        ("auth_policy", policy),
        ("auth_token_secret", TOKEN_SECRET),
        ("gc_grace_seconds", "0"),
    ]));
    let token = fetch_token(&client(), &leg.runner.url, &["repository:gc/t:pull,push".to_owned()]).await;
    let digest = sha256(b"lonely");
    let pushed = client()
        .post(format!("{}/v2/gc/t/blobs/uploads/?digest={digest}", leg.runner.url))
        .bearer_auth(&token)
        .body(b"lonely".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    let output = gc_cli(&leg, &[], Some(("admin", "secret")));
    assert_eq!(named(&output), [digest].into_iter().collect(), "{output}");
}

/// A small deterministic generator for the race's choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const REPOS: [&str; 2] = ["gc/a", "gc/b"];
const TAGS: u64 = 3;
const PUSHERS: u64 = 32;
const PUSHES_EACH: u64 = 4;

/// 32 clients push images sharing layers to the same few tags (re-using blobs they find with a
/// HEAD, as clients do, and pushing them again on `MANIFEST_BLOB_UNKNOWN`), a deleter deletes
/// manifests behind them, and garbage collection runs steps all along, with a grace of 2 s so
/// that layers left by deleted images are collected while pushers reuse them. Then: every
/// acknowledged manifest that was not deleted pulls whole (blobs checked against their
/// digests), every tag pulls with skopeo, and after a last pass no blob is left that no manifest
/// references, and no data object that neither a blob record nor a live upload session owns.
/// Where the registry's key-value store is, for the checks that read it directly.
#[derive(Clone)]
enum Meta {
    /// The runner's SQLite file under this data directory.
    Sqlite(std::path::PathBuf),
    /// A Redis server on this port of 127.0.0.1.
    Redis(u16),
}

impl Meta {
    /// Every key that starts with `prefix`, with its value.
    fn values(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        match self {
            Meta::Sqlite(data) => kv_values(data, prefix),
            Meta::Redis(port) => {
                let cli = |args: &[&str]| {
                    let output = Command::new("redis-cli")
                        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                        .args(args)
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&output.stdout).into_owned()
                };
                let mut keys: Vec<String> =
                    cli(&["--scan", "--pattern", &format!("{prefix}*")]).lines().map(str::to_owned).collect();
                keys.sort();
                keys.dedup();
                keys.into_iter()
                    .map(|key| {
                        let value = cli(&["GET", &key]);
                        let value = value.strip_suffix('\n').unwrap_or(&value).as_bytes().to_vec();
                        (key, value)
                    })
                    .collect()
            }
        }
    }
}

/// Where the blob bytes live, for the last check.
enum Store<'a> {
    Filesystem,
    Provider,
    S3(&'a common::s3::S3Server),
}

/// With `meta` on Redis, a second front end serves the same registry (shared Redis and S3):
/// pushers and collectors are spread over both.
async fn gc_races_pushers_and_deleters(
    mut options: RunnerOptions<'static>,
    store: Store<'_>,
    label: &str,
    collectors: usize,
    redis: Option<&common::redis::RedisServer>,
) {
    // Short, so that layers deleted images left are collected while pushers reuse them. Link
    // times are whole seconds, so a grace of 2 keeps a link for at least one second: a finish
    // (link, then commit) never races a collection that ignores its link. Longer on S3: moto
    // serializes conditional writes, so one push of three blobs and a manifest among 32 clients
    // and the collector can take many seconds, and a shorter grace refuses it again and again.
    let grace: u64 = if matches!(store, Store::S3(_)) { 30 } else { 2 };
    let seed: u64 = std::env::var("BERTH_GC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("{label}: seed {seed} (replay with BERTH_GC_SEED={seed})");
    options.args.extend(vars(&[("gc_grace_seconds", &grace.to_string())]));
    let second_options =
        RunnerOptions { args: options.args.clone(), manifest: options.manifest.clone(), ..Default::default() };
    let leg = Leg::http_options(options);
    let reg = Arc::new(Registry::new(&leg.runner));
    let meta = match redis {
        Some(redis) => Meta::Redis(redis.port),
        None => Meta::Sqlite(leg.runner.data.clone()),
    };
    let second_data = tempfile::tempdir().unwrap();
    let second = redis.map(|_| Runner::start_with(second_data.path(), second_options));
    let front_ends: Vec<Arc<Registry>> =
        std::iter::once(reg.clone()).chain(second.iter().map(|r| Arc::new(Registry::new(r)))).collect();
    let mut choices = Choices(seed);
    let pool: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..10).map(|i| PseudoRandom::bytes(seed.wrapping_add(i), 1_000 + choices.below(40_000) as usize)).collect(),
    );

    let done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, String, Vec<u8>)>::new()));
    let deleted = Arc::new(std::sync::Mutex::new(HashSet::<(String, String)>::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let (acks, mut ack_count) = tokio::sync::watch::channel(0u64);
    let acks = Arc::new(acks);

    let mut pushers = Vec::new();
    for pusher in 0..PUSHERS {
        let reg = front_ends[pusher as usize % front_ends.len()].clone();
        let (pool, acked, refused, acks) = (pool.clone(), acked.clone(), refused.clone(), acks.clone());
        let mut choices = Choices(seed ^ (pusher + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let meta = meta.clone();
        pushers.push(tokio::spawn(async move {
            for push in 0..PUSHES_EACH {
                let repo = REPOS[choices.below(2) as usize];
                let tag = format!("t{}", choices.below(TAGS));
                let first = choices.below(pool.len() as u64) as usize;
                let second = (first + 1 + choices.below(pool.len() as u64 - 1) as usize) % pool.len();
                let config = format!("{{\"pusher\":{pusher},\"push\":{push}}}").into_bytes();
                let blobs = [config.clone(), pool[first].clone(), pool[second].clone()];
                let manifest = image_manifest(
                    &[(OCI_CONFIG, &sha256(&config), config.len())],
                    &[
                        (OCI_LAYER, &sha256(&pool[first]), pool[first].len()),
                        (OCI_LAYER, &sha256(&pool[second]), pool[second].len()),
                    ],
                    "",
                );
                let mut stored = false;
                let mut last_refusal = String::new();
                for _attempt in 0..8 {
                    for blob in &blobs {
                        let digest = sha256(blob);
                        if reg.head(&format!("/v2/{repo}/blobs/{digest}")).await.status() != 200 {
                            reg.push_blob(repo, blob).await;
                        }
                    }
                    let answer = reg.put_manifest(repo, &tag, OCI_MANIFEST, &manifest).await;
                    let status = answer.status().as_u16();
                    let body = answer.text().await.unwrap_or_default();
                    match status {
                        201 => {
                            stored = true;
                            break;
                        }
                        400 if body.contains("MANIFEST_BLOB_UNKNOWN") => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            let hex =
                                body.split("blob sha256:").nth(1).map(|rest| rest[..64].to_owned()).unwrap_or_default();
                            let show = |pairs: Vec<(String, Vec<u8>)>| {
                                pairs
                                    .into_iter()
                                    .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v)))
                                    .collect::<Vec<_>>()
                            };
                            let link = show(meta.values(&format!("repo/{repo}/link/sha256/{hex}")));
                            let record = show(meta.values(&format!("blob/sha256/{hex}")));
                            last_refusal = format!("{body} link={link:?} record={record:?}");
                        }
                        _ => panic!("pushing {repo}:{tag}: {status} {body}"),
                    }
                }
                assert!(stored, "{repo}:{tag} refused eight times in a row (seed {seed}): {last_refusal}");
                acked.lock().unwrap().push((repo.to_owned(), sha256(&manifest), manifest));
                acks.send_modify(|n| *n += 1);
            }
        }));
    }
    let deleter = {
        let (reg, deleted, done) = (reg.clone(), deleted.clone(), done.clone());
        let mut choices = Choices(seed.rotate_left(17) | 1);
        tokio::spawn(async move {
            let mut deletes = 0u64;
            // One delete per three acknowledged pushes, so images come and go all along.
            while ack_count.wait_for(|n| *n >= 3 * (deletes + 1) || done.load(Ordering::Relaxed)).await.is_ok()
                && !done.load(Ordering::Relaxed)
            {
                deletes += 1;
                let repo = REPOS[choices.below(2) as usize];
                let tag = format!("t{}", choices.below(TAGS));
                let found = reg.head(&format!("/v2/{repo}/manifests/{tag}")).await;
                if found.status() != 200 {
                    continue;
                }
                let digest = header(&found, "docker-content-digest");
                // Recorded before the request: a delete that lands counts even if its answer is late.
                deleted.lock().unwrap().insert((repo.to_owned(), digest.clone()));
                let status = reg.delete(&format!("/v2/{repo}/manifests/{digest}")).await.status();
                assert!(status == 202 || status == 404, "delete {repo}@{digest}: {status}");
            }
        })
    };
    // Collectors at once, each starting its steps from the beginning of the blob list: they walk
    // the same blobs together (the same records marked, looked at again and removed).
    let collectors: Vec<_> = (0..collectors)
        .map(|i| {
            let (url, done) = (front_ends[i % front_ends.len()].url.clone(), done.clone());
            tokio::spawn(async move {
                let (mut steps, mut collected) = (0u64, 0u64);
                while !done.load(Ordering::Relaxed) {
                    let answer = client().post(format!("{url}/v2/_berth/gc")).send().await.unwrap();
                    assert_eq!(answer.status(), 200);
                    collected += json(answer).await["collected"].as_array().unwrap().len() as u64;
                    steps += 1;
                }
                (steps, collected)
            })
        })
        .collect();
    for pusher in pushers {
        pusher.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    acks.send_modify(|_| {});
    deleter.await.unwrap();
    let (mut steps, mut collected) = (0, 0);
    for collector in collectors {
        let (s, c) = collector.await.unwrap();
        (steps, collected) = (steps + s, collected + c);
    }
    let refused = refused.load(Ordering::Relaxed);
    println!(
        "{label}: the collectors' {steps} gc steps removed {collected} blobs during the race; {refused} manifest pushes refused and pushed again"
    );
    // With a grace of 2 s the collectors remove what deletes left while the pushers run (on S3,
    // whose grace is 30 s, the race may end before anything is old enough).
    if !matches!(store, Store::S3(_)) {
        assert!(collected > 0, "the collectors raced the pushers: they removed something (seed {seed})");
    }

    // Every acknowledged manifest that no delete named is whole.
    let deleted = deleted.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len() as u64, PUSHERS * PUSHES_EACH);
    let mut checked = 0;
    for (repo, digest, manifest) in &acked {
        if deleted.contains(&(repo.clone(), digest.clone())) {
            continue;
        }
        reads_back(&reg, &format!("/v2/{repo}/manifests/{digest}"), manifest).await.unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        let blobs = parsed["layers"].as_array().unwrap().iter().chain([&parsed["config"]]);
        for blob in blobs {
            let blob_digest = blob["digest"].as_str().unwrap();
            let got = reg.get(&format!("/v2/{repo}/blobs/{blob_digest}")).await;
            if got.status() != 200 {
                let hex = &blob_digest[7..];
                let show = |pairs: Vec<(String, Vec<u8>)>| {
                    pairs.into_iter().map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v))).collect::<Vec<_>>()
                };
                panic!(
                    "{repo}@{digest}: blob {blob_digest} answered {} (seed {seed}); record {:?}; links {:?}",
                    got.status(),
                    show(meta.values(&format!("blob/sha256/{hex}"))),
                    show(meta.values("repo/").into_iter().filter(|(k, _)| k.ends_with(hex)).collect()),
                );
            }
            assert_eq!(sha256(&got.bytes().await.unwrap()), blob_digest, "seed {seed}");
        }
        checked += 1;
    }
    assert!(checked > 0);
    // Every tag pulls with skopeo, byte-identical.
    for repo in REPOS {
        let tags = json(reg.get(&format!("/v2/{repo}/tags/list")).await).await;
        for tag in tags["tags"].as_array().into_iter().flatten() {
            let tag = tag.as_str().unwrap();
            let out = leg.work.join(format!("{}-{tag}", repo.replace('/', "-")));
            let args = with(
                s(&["copy", &leg.image(&format!("{repo}:{tag}")), &format!("dir:{}", out.display())]),
                leg.skopeo_tls("src"),
            );
            leg.skopeo_ok(&args);
            for entry in std::fs::read_dir(&out).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.len() == 64 {
                    assert_eq!(sha256(&std::fs::read(entry.path()).unwrap()), format!("sha256:{name}"), "seed {seed}");
                }
            }
        }
    }

    // A last pass once the grace time is over (a time rule: nothing to wait on but the clock).
    tokio::time::sleep(std::time::Duration::from_millis(1_000 * grace + 1_100)).await;
    let last = gc_cli(&leg, &[], None);
    println!("{label}: last pass: {}", last.lines().last().unwrap_or_default());
    assert!(named(&gc_cli(&leg, &["--dry-run"], None)).is_empty());
    nothing_unreferenced_is_left(&leg.runner.data, &meta, &reg, store, seed).await;
}

/// No blob record that no manifest references; no data object that neither a record nor a live
/// session owns. Prints the bytes measured on the store.
async fn nothing_unreferenced_is_left(
    data: &std::path::Path,
    meta: &Meta,
    reg: &Registry,
    store: Store<'_>,
    seed: u64,
) {
    let mut referenced = BTreeSet::new();
    for (key, value) in meta.values("repo/") {
        let Some((repo, digest)) = key.strip_prefix("repo/").and_then(|k| k.split_once("/manifest/")) else { continue };
        if value.is_empty() {
            continue;
        }
        let digest = digest.replacen('/', ":", 1);
        let manifest = reg.get(&format!("/v2/{repo}/manifests/{digest}")).await.bytes().await.unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        referenced.insert(digest);
        for blob in parsed["layers"].as_array().unwrap().iter().chain([&parsed["config"]]) {
            referenced.insert(blob["digest"].as_str().unwrap().to_owned());
        }
    }
    let mut owned = BTreeMap::new();
    let mut recorded = BTreeSet::new();
    let mut live_bytes = 0;
    for (key, value) in meta.values("blob/") {
        if value.is_empty() {
            continue; // removed
        }
        let record: serde_json::Value = serde_json::from_slice(&value).unwrap();
        recorded.insert(key["blob/".len()..].replacen('/', ":", 1));
        live_bytes += record["size"].as_u64().unwrap();
        for part in record["parts"].as_array().unwrap() {
            owned.insert(part["name"].as_str().unwrap().to_owned(), part["size"].as_u64().unwrap());
        }
    }
    let unreferenced: Vec<String> = recorded
        .difference(&referenced)
        .map(|d| {
            let value = meta.values(&format!("blob/{}", d.replacen(':', "/", 1)));
            let links = meta.values("repo/").into_iter().filter(|(k, _)| k.contains("/link/") && k.ends_with(&d[7..]));
            let links: Vec<String> = links.map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v))).collect();
            format!("{d}: {} links {links:?}", String::from_utf8_lossy(&value[0].1))
        })
        .collect();
    let missing: Vec<&String> = referenced.difference(&recorded).collect();
    assert!(
        unreferenced.is_empty() && missing.is_empty(),
        "blob records no manifest references: {unreferenced:#?}; referenced blobs without a record: {missing:?} (seed {seed})"
    );
    // Data objects (name and size), and the upload sessions that may still own some.
    let last_component = |name: &str| name.rsplit('/').next().unwrap().trim_end_matches('~').to_owned();
    let (objects, live_sessions): (Vec<(String, u64)>, HashSet<String>) = match store {
        Store::Provider => (
            kv_values(data, "blob-kv/obj/uploads/")
                .into_iter()
                .map(|(key, value)| {
                    let record: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
                    (key["blob-kv/obj/".len()..].to_owned(), record["size"].as_u64().unwrap_or(0))
                })
                .collect(),
            kv_values(data, "blob-kv/obj/index/uploads/").into_iter().map(|(k, _)| last_component(&k)).collect(),
        ),
        Store::Filesystem => {
            let root = data.join("blobs");
            (
                stored_objects(data, "uploads")
                    .into_iter()
                    .map(|p| {
                        let file = p.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                        (file.strip_suffix('~').unwrap_or(&file).to_owned(), std::fs::metadata(&p).unwrap().len())
                    })
                    .collect(),
                stored_objects(data, "index/uploads").iter().map(|p| last_component(&p.to_string_lossy())).collect(),
            )
        }
        Store::S3(s3) => (
            s3.objects("registry/uploads/")
                .into_iter()
                .map(|(key, size, _)| (key["registry/".len()..].to_owned(), size))
                .collect(),
            s3.objects("registry/index/uploads/").iter().map(|(k, _, _)| last_component(k)).collect(),
        ),
    };
    if matches!(store, Store::Provider) {
        provider_lists_every_object(data, seed);
    }
    let stored: u64 = objects.iter().map(|(_, size)| size).sum();
    println!("data objects on the store: {stored} bytes; blobs that manifests reference: {live_bytes} bytes");
    for (name, _) in &objects {
        let session = name.split('/').nth(1).unwrap_or_default();
        assert!(
            owned.contains_key(name) || live_sessions.contains(session),
            "{name}: owned by no blob record and no live upload session (seed {seed})"
        );
    }
    let owned_on_store: u64 = objects.iter().filter(|(n, _)| owned.contains_key(n)).map(|(_, s)| s).sum();
    assert_eq!(owned_on_store, live_bytes, "every byte of every kept blob is on the store (seed {seed})");
}

/// The key-value provider's names index against the objects that exist: every object with a
/// live record is in a leaf of the index (a name the index holds without a record is allowed: a
/// create killed between the two, skipped by listings). An object missing from the index is one
/// no listing shows, so garbage collection cannot see what it holds.
fn provider_lists_every_object(data: &std::path::Path, seed: u64) {
    let mut indexed = BTreeSet::new();
    for (key, node) in kv_values(data, "blob-kv/ix/names/node/") {
        let node: serde_json::Value = serde_json::from_slice(&node).unwrap_or_else(|e| panic!("{key}: {e}"));
        if node["level"] == 0 {
            indexed.extend(node["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()));
        }
    }
    let mut objects = 0;
    for (key, record) in kv_values(data, "blob-kv/obj/").into_iter().chain(kv_values(data, "blob-kv/long/")) {
        let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
        if record["deleting"] == true {
            continue;
        }
        let name = record["name"].as_str().map_or_else(|| key["blob-kv/obj/".len()..].to_owned(), str::to_owned);
        assert!(indexed.contains(&name), "object {name} exists but its name is not in the names index (seed {seed})");
        objects += 1;
    }
    assert!(objects > 0, "the provider holds objects");
    println!("names index: {} names, {objects} objects with a live record, each of them listed", indexed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_32_pushers_and_a_deleter_on_the_same_tags_and_layers_on_the_filesystem_store() {
    gc_races_pushers_and_deleters(RunnerOptions::default(), Store::Filesystem, "filesystem store", 3, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_32_pushers_and_a_deleter_on_the_same_tags_and_layers_on_the_key_value_provider() {
    let options = RunnerOptions { args: provider_args(), ..Default::default() };
    gc_races_pushers_and_deleters(options, Store::Provider, "key-value provider", 3, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_32_pushers_and_a_deleter_on_the_same_tags_and_layers_over_two_front_ends_on_redis_and_s3() {
    // Two front ends sharing one Redis and one S3 bucket (redirects on), a collector on each.
    let s3 = common::s3::S3Server::start();
    let redis = common::redis::RedisServer::start();
    let options = common::s3::cluster_options(&s3, Some(&redis), 300);
    gc_races_pushers_and_deleters(options, Store::S3(&s3), "Redis and S3, two front ends", 2, Some(&redis)).await;
}

#[tokio::test]
async fn retention_keeps_the_last_tags_with_their_index_children_and_signatures_and_its_dry_run_agrees() {
    let leg = Leg::http_with(vars(&[("retention", "apps/* keep_last=2 untagged_after=1s"), ("gc_grace_seconds", "0")]));
    let reg = Registry::new(&leg.runner);
    let layout_dir = leg.work.join("layout");
    let layout = common::oci_layout::Layout::create(&layout_dir);
    let v1 = layout.image(81, "amd64", &[30_000]);
    let v2 = layout.image(82, "amd64", &[30_000]);
    let amd64 = layout.image(83, "amd64", &[20_000]);
    let arm64 = layout.image(84, "arm64", &[20_000]);
    let multi = layout.index(&[(&amd64, "amd64"), (&arm64, "arm64")]);
    // Pushed one second apart: retention orders tags by push time, in seconds.
    let push = |top: &common::oci_layout::Written, media_type: &str, tag: &str| {
        layout.tag(top, media_type, tag);
        leg.push_layout(&layout_dir, tag, &format!("apps/web:{tag}"), media_type == OCI_INDEX);
        std::thread::sleep(std::time::Duration::from_millis(1_100));
    };
    push(&v1, OCI_MANIFEST, "v1");
    push(&v2, OCI_MANIFEST, "v2");
    push(&multi, OCI_INDEX, "multi");
    let signature_v1 = reg.attach("apps/web", &v1, "application/vnd.example.signature", b"signed v1").await;
    let signature_v2 = reg.attach("apps/web", &v2, "application/vnd.example.signature", b"signed v2").await;
    std::thread::sleep(std::time::Duration::from_millis(1_100)); // past untagged_after

    let planned = gc_cli(&leg, &["--dry-run"], None);
    let lines = |output: &str, verbs: &[&str]| -> BTreeSet<String> {
        output
            .lines()
            .filter(|l| verbs.iter().any(|v| l.starts_with(v)))
            .map(|l| l.split(' ').next_back().unwrap().to_owned())
            .collect()
    };
    let expected_untag: BTreeSet<String> = ["apps/web:v1".to_owned()].into_iter().collect();
    // v1 goes with its tag; its signature, which v1 reaches, in the next pass.
    let expected_delete: BTreeSet<String> = [format!("apps/web@{}", v1.digest)].into_iter().collect();
    assert_eq!(lines(&planned, &["would untag"]), expected_untag, "{planned}");
    assert_eq!(lines(&planned, &["would delete manifest"]), expected_delete, "{planned}");
    assert_eq!(reg.head("/v2/apps/web/manifests/v1").await.status(), 200, "a dry run changes nothing");

    let done = gc_cli(&leg, &[], None);
    assert_eq!(lines(&done, &["untagged"]), expected_untag, "{done}");
    assert_eq!(lines(&done, &["deleted manifest"]), expected_delete, "{done}");
    expect_error(reg.get(&format!("/v2/apps/web/manifests/{}", v1.digest)).await, 404, "MANIFEST_UNKNOWN").await;
    // What v1 alone used went in the same pass.
    assert!(named(&done).contains(&v1.digest), "{done}");
    let next = gc_cli(&leg, &[], None);
    let signature_gone: BTreeSet<String> = [format!("apps/web@{signature_v1}")].into_iter().collect();
    assert_eq!(lines(&next, &["deleted manifest"]), signature_gone, "{next}");
    expect_error(reg.get(&format!("/v2/apps/web/manifests/{signature_v1}")).await, 404, "MANIFEST_UNKNOWN").await;

    // The index pulls whole with both children; v2 and its signature stay.
    let out = leg.work.join("multi");
    let args = with(
        s(&["copy", "--all", &leg.image("apps/web:multi"), &format!("oci:{}:multi", out.display())]),
        leg.skopeo_tls("src"),
    );
    leg.skopeo_ok(&args);
    let mut tags = json(reg.get("/v2/apps/web/tags/list").await).await["tags"].clone();
    tags.as_array_mut().unwrap().sort_by_key(|t| t.as_str().unwrap().to_owned());
    assert_eq!(tags, serde_json::json!(["multi", "v2"]));
    let referrers = json(reg.get(&format!("/v2/apps/web/referrers/{}", v2.digest)).await).await;
    assert_eq!(referrers["manifests"][0]["digest"], signature_v2.as_str(), "{referrers}");
}

/// A collector killed with SIGKILL in the middle of its steps, again and again: after each
/// restart every image not deleted reads back whole, and once collectors that died count as
/// dead (`gc_abandoned_seconds`), later passes finish what they left (marks, half-removed
/// holder entries, removals whose cleanup died) until only what images hold is left.
async fn a_collector_killed_mid_pass(store: Store<'_>, label: &str) {
    let seed: u64 = std::env::var("BERTH_GC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("{label}: seed {seed} (replay with BERTH_GC_SEED={seed})");
    let mut rng = Rng::new(seed, 7);
    let data = tempfile::tempdir().unwrap();
    let mut args = vars(&[("gc_grace_seconds", "0"), ("gc_abandoned_seconds", "10")]);
    if matches!(store, Store::Provider) {
        args.extend(provider_args());
    }
    let start = || Runner::start_with(data.path(), RunnerOptions { args: args.clone(), ..Default::default() });
    let mut runner = start();
    // Twelve images sharing a base layer; eight deleted, so a pass has about 25 blobs to remove.
    let base = PseudoRandom::bytes(seed, 50_000);
    let mut kept = Vec::new();
    let mut removable = BTreeSet::new();
    {
        let reg = Registry::new(&runner);
        for i in 0..12u64 {
            let own = PseudoRandom::bytes(seed ^ (i + 1), 20_000 + i as usize);
            let config = format!("{{\"image\":{i}}}").into_bytes();
            let (r, manifest) = push_image_of(&reg, "gc/kill", &format!("t{i}"), &config, &[&base, &own]).await;
            assert_eq!(r.status(), 201);
            let digest = sha256(&manifest);
            if i < 8 {
                assert_eq!(reg.delete(&format!("/v2/gc/kill/manifests/{digest}")).await.status(), 202);
                removable.extend([sha256(&own), sha256(&config), digest]);
            } else {
                kept.push((format!("t{i}"), manifest, vec![base.clone(), own, config]));
            }
        }
    }
    let check_kept = async |runner: &Runner, when: &str| {
        let reg = Registry::new(runner);
        for (tag, manifest, blobs) in &kept {
            let got = reg.get(&format!("/v2/gc/kill/manifests/{tag}")).await;
            assert_eq!(got.status(), 200, "{label} {when}: {tag} (seed {seed})");
            assert_eq!(got.bytes().await.unwrap().as_ref(), manifest.as_slice());
            for blob in blobs {
                let got = reg.get(&format!("/v2/gc/kill/blobs/{}", sha256(blob))).await;
                assert_eq!(got.status(), 200, "{label} {when}: a blob of {tag} (seed {seed})");
                assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(blob), "{label} {when}: {tag}");
            }
        }
    };
    // Steps one blob at a time, and a kill at a random moment in them.
    let mut killed_in_a_step = 0;
    for round in 0..5 {
        let url = runner.url.clone();
        let steps = tokio::spawn(async move {
            loop {
                let answer = client().post(format!("{url}/v2/_berth/gc?concurrency=1")).send().await;
                match answer {
                    Ok(answer) if answer.status() == 200 => {
                        if json(answer).await["next"].is_null() {
                            return false;
                        }
                    }
                    _ => return true, // the kill cut the step
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(20 + rng.below(300) as u64)).await;
        kill9(runner);
        killed_in_a_step += usize::from(steps.await.unwrap());
        runner = start();
        check_kept(&runner, &format!("after kill {round}")).await;
    }
    assert!(killed_in_a_step > 0, "{label}: some kill landed in a step (seed {seed})");
    let marks = kv_values(data.path(), "blob/")
        .iter()
        .filter(|(_, v)| String::from_utf8_lossy(v).contains("condemned_by"))
        .count();
    let intents = objects_under(data.path(), &store, "gc/unholding/").len();
    println!("{label}: {killed_in_a_step} of 5 kills landed in a step; left: {marks} marks, {intents} unhold intents");
    // Passes until the dead collectors' leftovers are finished and every removable blob is gone.
    let reg = Registry::new(&runner);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut cursor = String::new();
        loop {
            let answer = client().post(format!("{}/v2/_berth/gc?cursor={cursor}", runner.url)).send().await.unwrap();
            assert_eq!(answer.status(), 200);
            let step = json(answer).await;
            match step["next"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        let mut left = Vec::new();
        for digest in &removable {
            if !kv_values(data.path(), &format!("blob/{}", digest.replacen(':', "/", 1)))
                .iter()
                .all(|(_, value)| value.is_empty())
            {
                left.push(format!("record of {digest}"));
            }
        }
        left.extend(
            objects_under(data.path(), &store, "gc/unholding/").into_iter().map(|name| format!("unhold intent {name}")),
        );
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{label}: left after a minute of passes: {left:#?} (seed {seed})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    check_kept(&runner, "after the last pass").await;
    nothing_unreferenced_is_left(data.path(), &Meta::Sqlite(data.path().to_owned()), &reg, store, seed).await;
}

/// Names of the objects under `prefix` on the filesystem store or the key-value provider.
fn objects_under(data: &std::path::Path, store: &Store<'_>, prefix: &str) -> Vec<String> {
    match store {
        Store::Filesystem => stored_objects(data, prefix.trim_end_matches('/'))
            .into_iter()
            .map(|p| p.strip_prefix(data.join("blobs")).unwrap().to_string_lossy().into_owned())
            .collect(),
        Store::Provider => kv_values(data, &format!("blob-kv/obj/{prefix}"))
            .into_iter()
            .filter(|(_, record)| !String::from_utf8_lossy(record).contains("\"deleting\":true"))
            .map(|(key, _)| key["blob-kv/obj/".len()..].to_owned())
            .collect(),
        Store::S3(s3) => s3.objects(&format!("registry/{prefix}")).into_iter().map(|(key, _, _)| key).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collector_killed_mid_pass_again_and_again_loses_nothing_and_its_leftovers_are_finished_on_the_filesystem_store()
 {
    a_collector_killed_mid_pass(Store::Filesystem, "filesystem store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collector_killed_mid_pass_again_and_again_loses_nothing_and_its_leftovers_are_finished_on_the_key_value_provider()
 {
    a_collector_killed_mid_pass(Store::Provider, "key-value provider").await;
}

/// The tags of a repository, sorted.
async fn tags_of(reg: &Registry, repo: &str) -> Vec<String> {
    let listed = json(reg.get(&format!("/v2/{repo}/tags/list?n=100000")).await).await;
    let mut tags: Vec<String> =
        listed["tags"].as_array().into_iter().flatten().map(|t| t.as_str().unwrap().to_owned()).collect();
    tags.sort();
    tags
}

#[tokio::test]
async fn retention_over_a_repository_of_thousands_of_tags_goes_in_bounded_steps() {
    let leg = Leg::http_with(vars(&[("retention", "big/* keep_last=3")]));
    let reg = Arc::new(Registry::new(&leg.runner));
    let (manifest, _) = reg.push_image("big/app", "first", 7).await;
    let manifest = Arc::new(manifest);
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let (reg, manifest) = (reg.clone(), manifest.clone());
            tokio::spawn(async move {
                for i in (task..1300).step_by(16) {
                    let r = reg.put_manifest("big/app", &format!("t-{i:04}"), OCI_MANIFEST, &manifest).await;
                    assert_eq!(r.status(), 201);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for last in ["last-1", "last-2", "last-3"] {
        assert_eq!(reg.put_manifest("big/app", last, OCI_MANIFEST, &manifest).await.status(), 201);
    }
    let steps = |output: &str| -> u64 {
        let summary = output.lines().find(|l| l.starts_with("gc: ")).unwrap_or_else(|| panic!("{output}"));
        summary.rsplit_once("; ").unwrap().1.trim_end_matches(" steps").parse().unwrap()
    };
    let planned = gc_cli(&leg, &["--dry-run"], None);
    assert_eq!(planned.lines().filter(|l| l.starts_with("would untag big/app:")).count(), 1301, "{planned}");
    let done = gc_cli(&leg, &[], None);
    assert_eq!(done.lines().filter(|l| l.starts_with("untagged big/app:")).count(), 1301);
    // Each step reads about 512 tags: ranking and untagging 1304 tags take several.
    for output in [&planned, &done] {
        assert!(steps(output) > 2 * 1304 / 576, "{}", output.lines().last().unwrap());
    }
    assert_eq!(tags_of(&reg, "big/app").await, ["last-1", "last-2", "last-3"]);
}

/// Retention racing clients that tag, again and again, the same few manifests it deletes once
/// they are old and untagged: every tag's last acknowledged push resolves afterwards to what it
/// set, and the passes did delete manifests under the pushers (so they really raced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_racing_pushers_that_tag_the_manifests_it_deletes_loses_no_acknowledged_tag() {
    let seed: u64 = std::env::var("BERTH_RETENTION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("seed {seed} (replay with BERTH_RETENTION_SEED={seed})");
    // A grace of 2 s, as in the collector races above: the blobs a push has just sent are not
    // taken before its manifest arrives, but those of deleted manifests go while pushers run.
    let leg = Leg::http_with(vars(&[("retention", "r untagged_after=1s"), ("gc_grace_seconds", "2")]));
    let reg = Arc::new(Registry::new(&leg.runner));
    // Twelve manifests (one config each, one layer shared), pushed by digest: all untagged.
    let configs: Vec<Vec<u8>> = (0..12).map(|i| format!("{{\"config\":{i}}}").into_bytes()).collect();
    let layer = PseudoRandom::bytes(seed, 5_000);
    let manifests: Vec<Vec<u8>> = configs
        .iter()
        .map(|config| {
            let layers = [(OCI_LAYER, sha256(&layer), layer.len())];
            let layers: Vec<(&str, &str, usize)> = layers.iter().map(|(t, d, n)| (*t, d.as_str(), *n)).collect();
            image_manifest(&[(OCI_CONFIG, &sha256(config), config.len())], &layers, "")
        })
        .collect();
    let (configs, manifests, layer) = (Arc::new(configs), Arc::new(manifests), Arc::new(layer));
    // A push as a client makes it: blobs (again, when garbage collection took them), then the
    // manifest; retried once after MANIFEST_BLOB_UNKNOWN (its blobs were collected meanwhile).
    let push = {
        let (reg, configs, manifests, layer) = (reg.clone(), configs.clone(), manifests.clone(), layer.clone());
        move |i: usize, reference: String| {
            let (reg, configs, manifests, layer) = (reg.clone(), configs.clone(), manifests.clone(), layer.clone());
            async move {
                for _ in 0..3 {
                    reg.push_blob("r", &layer).await;
                    reg.push_blob("r", &configs[i]).await;
                    let response = reg.put_manifest("r", &reference, OCI_MANIFEST, &manifests[i]).await;
                    match response.status().as_u16() {
                        201 => return,
                        400 => expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await,
                        status => panic!("PUT {reference}: {status} {}", response.text().await.unwrap_or_default()),
                    }
                }
                panic!("PUT {reference} refused three times");
            }
        }
    };
    for i in 0..manifests.len() {
        push(i, sha256(&manifests[i])).await;
    }
    let done = Arc::new(AtomicBool::new(false));
    // Each pusher owns two tags (so its last acknowledged push of each is well defined) and moves
    // them among the same twelve manifests as the others, resting 50-250 ms between pushes.
    let pushers: Vec<_> = (0..4u64)
        .map(|p| {
            let (push, done) = (push.clone(), done.clone());
            tokio::spawn(async move {
                let mut rng = Rng::new(seed, p);
                let mut last = BTreeMap::new();
                while !done.load(Ordering::Relaxed) {
                    let (tag, i) = (format!("p{p}-{}", rng.below(2)), rng.below(12));
                    push(i, tag.clone()).await;
                    last.insert(tag, i);
                    tokio::time::sleep(Duration::from_millis(rng.between(50, 250) as u64)).await;
                }
                last
            })
        })
        .collect();
    let collector = {
        let (reg, done) = (reg.clone(), done.clone());
        tokio::spawn(async move {
            let mut deleted = 0;
            while !done.load(Ordering::Relaxed) {
                let step = json(reg.http.post(reg.at("/v2/_berth/gc")).send().await.unwrap()).await;
                deleted += step["deletedManifests"].as_array().map_or(0, Vec::len);
            }
            deleted
        })
    };
    tokio::time::sleep(Duration::from_secs(8)).await;
    done.store(true, Ordering::Relaxed);
    let deleted = collector.await.unwrap();
    let mut last = BTreeMap::new();
    for pusher in pushers {
        last.extend(pusher.await.unwrap());
    }
    assert!(deleted > 0, "no manifest was deleted under the pushers: the test did not race");
    println!("retention deleted {deleted} manifests under the pushers");
    // One more whole pass, with every manifest the tags leave untagged old by now.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    gc_cli(&leg, &[], None);
    for (tag, i) in &last {
        let response = reg.get(&format!("/v2/r/manifests/{tag}")).await;
        assert_eq!(response.status(), 200, "tag {tag}, last pushed for manifest {i}");
        assert_eq!(header(&response, "docker-content-digest"), sha256(&manifests[*i]), "tag {tag}");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(bytes.as_ref(), manifests[*i].as_slice());
        for blob in [sha256(&configs[*i]), sha256(&layer)] {
            assert_eq!(reg.head(&format!("/v2/r/blobs/{blob}")).await.status(), 200, "tag {tag}: blob {blob}");
        }
    }
    // And the manifests no tag names are gone.
    let tagged: BTreeSet<usize> = last.values().copied().collect();
    for (i, manifest) in manifests.iter().enumerate().filter(|(i, _)| !tagged.contains(i)) {
        assert_eq!(reg.head(&format!("/v2/r/manifests/{}", sha256(manifest))).await.status(), 404, "manifest {i}");
    }
}
