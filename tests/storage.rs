//! Storage regression tests (issue 11): one test per defect, against the real component through
//! the runner, on the filesystem store and, where a defect can show on either backend, on the
//! key-value blob store provider too (`_fs` / `_kv` pairs of one async test body).
//!
//! The races race ONE key (one upload session, one tag) with many concurrent clients and loop
//! over several rounds. Their random choices (blob bytes, the order requests are issued in) come
//! from a seed that each test prints; `BERTH_TEST_SEED=<n>` replays it (the bytes and orders
//! replay exactly, the scheduling of course not).

mod common;

use common::*;
use futures::future::join_all;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// 256 KiB: the key-value provider's chunk size. Blobs in the races span more than one chunk, so
/// that a write takes a few key-value operations and concurrent writes overlap.
const KV_CHUNK: usize = 256 * 1024;

// ---- harness --------------------------------------------------------------------------------

/// The runner's own filesystem blob store (whatever `BERTH_TEST_BLOB_STORE` says).
fn fs_store() -> RunnerOptions<'static> {
    RunnerOptions { args: Vec::new(), ..Default::default() }
}

/// The key-value blob store provider (providers/blob-kv) composed into the registry.
fn kv_store() -> RunnerOptions<'static> {
    RunnerOptions {
        args: vec!["--blob-store".into(), artifacts().blob_kv_provider.display().to_string()],
        ..Default::default()
    }
}

fn with_vars(mut options: RunnerOptions<'static>, pairs: &[(&str, &str)]) -> RunnerOptions<'static> {
    options.args.extend(vars(pairs));
    options
}

fn is_kv(options: &RunnerOptions<'_>) -> bool {
    options.args.iter().any(|a| a == "--blob-store")
}

fn start(options: RunnerOptions<'static>) -> (tempfile::TempDir, Runner, Registry) {
    let kv = is_kv(&options);
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start_with(data.path(), options);
    if kv {
        assert!(
            runner.log().iter().any(|l| l.contains("blob store: provider component")),
            "the runner composed the provider: {:?}",
            runner.log()
        );
    }
    let registry = Registry::new(&runner);
    (data, runner, registry)
}

/// The upload id in a session Location (`/v2/<name>/blobs/uploads/<id>?_v=N`).
fn upload_id(location: &str) -> String {
    location.split('?').next().unwrap().rsplit('/').next().unwrap().to_owned()
}

/// Poll (bounded) until the runner has logged `count` request lines starting with `prefix`.
fn wait_for_log_lines(runner: &Runner, prefix: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while runner.log().iter().filter(|l| l.starts_with(prefix)).count() < count {
        assert!(Instant::now() < deadline, "the runner never logged {count} {prefix:?} lines: {:?}", runner.log());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Provider chunks (`blob-kv/chunk/<write>/<n>`) that no object record names: bytes of a write
/// that never became (or no longer is) an object.
fn orphan_kv_chunks(data: &Path) -> Vec<String> {
    let mut writes = std::collections::HashSet::new();
    for prefix in ["blob-kv/obj/", "blob-kv/long/"] {
        for (_, value) in kv_values(data, prefix) {
            if let Some(write) = serde_json::from_slice::<serde_json::Value>(&value)
                .ok()
                .and_then(|r| r["write"].as_str().map(str::to_owned))
            {
                writes.insert(write);
            }
        }
    }
    kv_values(data, "blob-kv/chunk/")
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| !writes.contains(key["blob-kv/chunk/".len()..].split('/').next().unwrap()))
        .collect()
}

/// Objects of upload `id` the blob store holds (filesystem files, or provider records).
fn session_objects(data: &Path, kv: bool, id: &str) -> Vec<String> {
    if kv {
        kv_values(data, &format!("blob-kv/obj/uploads/{id}/")).into_iter().map(|(k, _)| k).collect()
    } else {
        stored_objects(data, &format!("uploads/{id}")).iter().map(|p| p.display().to_string()).collect()
    }
}

/// Watches, on a thread until [`Watch::stop`], for objects of upload `id` other than those
/// there when it started: what a request made visible, even for a moment.
struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::collections::BTreeSet<String>>,
}

impl Watch {
    fn session_objects(data: &Path, kv: bool, id: &str) -> Watch {
        use std::sync::atomic::{AtomicBool, Ordering};
        let known: std::collections::BTreeSet<String> = session_objects(data, kv, id).into_iter().collect();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (data, id, stopped) = (data.to_owned(), id.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            let db = kv.then(|| rusqlite::Connection::open(data.join("kv/default.db")).unwrap());
            let prefix = format!("blob-kv/obj/uploads/{id}/");
            let end = format!("{prefix}\u{10ffff}");
            let dir = data.join("blobs/uploads").join(&id);
            let mut seen = std::collections::BTreeSet::new();
            while !stopped.load(Ordering::Relaxed) {
                let now: Vec<String> = match &db {
                    Some(db) => db
                        .prepare_cached("SELECT key FROM kv WHERE key >= ?1 AND key < ?2")
                        .and_then(|mut s| s.query_map([&prefix, &end], |row| row.get(0))?.collect())
                        .unwrap_or_default(),
                    None => std::fs::read_dir(&dir)
                        .map(|entries| {
                            entries
                                .flatten()
                                .map(|e| e.path().display().to_string())
                                .filter(|p| !p.rsplit('/').next().unwrap().starts_with('.'))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                seen.extend(now.into_iter().filter(|name| !known.contains(name)));
                std::thread::yield_now();
            }
            seen
        });
        Watch { stop, thread }
    }

    /// Stop watching; the objects seen.
    fn stop(self) -> std::collections::BTreeSet<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A seeded xorshift generator; the seed is printed, and `BERTH_TEST_SEED` replays it.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed = match std::env::var("BERTH_TEST_SEED") {
            Ok(seed) => seed.trim().parse().expect("BERTH_TEST_SEED is a u64"),
            Err(_) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                (now.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
            }
        };
        println!("{test}: seed {seed} (replay: BERTH_TEST_SEED={seed} cargo test -p berth --test storage {test})");
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        PseudoRandom::bytes(self.next(), len)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

fn assert_no_problems(problems: &[String], seed_hint: &str) {
    assert!(problems.is_empty(), "{} problem(s) ({seed_hint}):\n{}", problems.len(), problems.join("\n"));
}

// ---- 1. duplicate finishing PUTs; a cancel racing a finish ---------------------------------

/// Defect 1: of eight concurrent finishing PUTs of one session exactly one stores the blob, and
/// it reads back; a DELETE racing the finish either loses (and the blob reads back) or wins
/// (and nothing was stored): never a 201 for a blob that cannot be read.
async fn duplicate_or_cancelled_finishes_never_lose_the_blob(options: RunnerOptions<'static>) {
    let test = "duplicate_or_cancelled_finishes_never_lose_the_blob";
    let mut rng = Rng::seeded(test);
    let (_d, _r, reg) = start(options);
    let mut problems = Vec::new();

    for round in 0..6 {
        let blob = rng.bytes(KV_CHUNK + 1000 + round);
        let digest = sha256(&blob);
        let location = reg.start_upload("dup").await;
        let response = reg.patch_chunk(&location, 0, &blob).await;
        assert_eq!(response.status(), 202);
        let location = header(&response, "location");
        let finishes = (0..8).map(|_| async { outcome(reg.finish_upload(&location, &digest, &[]).await).await });
        let outcomes = join_all(finishes).await;
        let created = outcomes.iter().filter(|o| o.0 == 201).count();
        let rest_unknown = outcomes.iter().all(|o| o.0 == 201 || is_error(o, 404, "BLOB_UPLOAD_UNKNOWN"));
        if created != 1 || !rest_unknown {
            problems.push(format!(
                "duplicate PUTs, round {round}: answered {outcomes:?}; expected one 201, seven 404 BLOB_UPLOAD_UNKNOWN"
            ));
        }
        for read in 0..3 {
            if let Err(e) = reads_back(&reg, &format!("/v2/dup/blobs/{digest}"), &blob).await {
                problems.push(format!("duplicate PUTs, round {round}, read {read}: {e}"));
            }
        }
        // The same blob again, through a new session: stored (or already there), and readable.
        let again = reg.start_upload("dup").await;
        let response = outcome(reg.finish_upload(&again, &digest, &blob).await).await;
        if response.0 != 201 {
            problems.push(format!("duplicate PUTs, round {round}: pushing the blob again answered {response:?}"));
        }
        if let Err(e) = reads_back(&reg, &format!("/v2/dup/blobs/{digest}"), &blob).await {
            problems.push(format!("duplicate PUTs, round {round}, after pushing it again: {e}"));
        }
    }

    for round in 0..10 {
        let blob = rng.bytes(KV_CHUNK + 2000 + round);
        let digest = sha256(&blob);
        let location = reg.start_upload("cancel").await;
        let response = reg.patch_chunk(&location, 0, &blob).await;
        assert_eq!(response.status(), 202);
        let location = header(&response, "location");
        let put = async { outcome(reg.finish_upload(&location, &digest, &[]).await).await };
        let delete = async { outcome(reg.delete(&location).await).await };
        let (put, delete) = if rng.next().is_multiple_of(2) {
            tokio::join!(put, delete)
        } else {
            let (delete, put) = tokio::join!(delete, put);
            (put, delete)
        };
        let read = reads_back(&reg, &format!("/v2/cancel/blobs/{digest}"), &blob).await;
        let blob_response = outcome(reg.get(&format!("/v2/cancel/blobs/{digest}")).await).await;
        let what = format!("DELETE racing PUT, round {round}: PUT {put:?}, DELETE {delete:?}");
        if put.0 == 201 {
            if let Err(e) = read {
                problems.push(format!("{what}: the PUT stored the blob but {e}"));
            }
            if !is_error(&delete, 404, "BLOB_UPLOAD_UNKNOWN") {
                problems.push(format!("{what}: a finished session was also cancelled"));
            }
        } else if is_error(&put, 404, "BLOB_UPLOAD_UNKNOWN") {
            if delete.0 != 204 {
                problems.push(format!("{what}: neither request won the session"));
            }
            if !is_error(&blob_response, 404, "BLOB_UNKNOWN") {
                problems.push(format!("{what}: the cancelled blob answers {blob_response:?}"));
            }
        } else {
            problems.push(format!("{what}: the PUT answered neither 201 nor 404 BLOB_UPLOAD_UNKNOWN"));
        }
    }
    assert_no_problems(&problems, "see the seed printed above");
}

#[tokio::test]
async fn duplicate_or_cancelled_finishes_never_lose_the_blob_fs() {
    duplicate_or_cancelled_finishes_never_lose_the_blob(fs_store()).await
}

#[tokio::test]
async fn duplicate_or_cancelled_finishes_never_lose_the_blob_kv() {
    duplicate_or_cancelled_finishes_never_lose_the_blob(kv_store()).await
}

/// On S3 (issue 13), with blob GETs redirected to the bucket.
#[tokio::test]
async fn duplicate_or_cancelled_finishes_never_lose_the_blob_s3() {
    let s3 = common::s3::S3Server::start();
    duplicate_or_cancelled_finishes_never_lose_the_blob(common::s3::cluster_options(&s3, None, 300)).await
}

// ---- 2. concurrent chunks of one chunk version ---------------------------------------------

/// Defect 2: eight PATCHes of different bytes (same length) from the same Location: exactly one
/// is taken (202), the others are 416, and the session then holds exactly the winner's bytes.
async fn of_concurrent_chunks_from_one_location_exactly_one_is_taken(options: RunnerOptions<'static>) {
    let test = "of_concurrent_chunks_from_one_location_exactly_one_is_taken";
    let mut rng = Rng::seeded(test);
    let (_d, _r, reg) = start(options);
    let mut problems = Vec::new();
    let len = KV_CHUNK + 4096;
    for round in 0..12 {
        let location = reg.start_upload("chunks").await;
        let candidates: Vec<Vec<u8>> = (0..8).map(|_| rng.bytes(len)).collect();
        let responses = join_all(candidates.iter().map(|c| reg.patch_chunk(&location, 0, c))).await;
        let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
        let winners: Vec<usize> = (0..statuses.len()).filter(|&i| statuses[i] == 202).collect();
        if winners.len() != 1 || statuses.iter().any(|&s| s != 202 && s != 416) {
            problems.push(format!("round {round}: PATCH statuses {statuses:?}; expected one 202 and seven 416"));
            continue;
        }
        let winner = winners[0];
        let next = header(&responses[winner], "location");
        assert_eq!(header(&responses[winner], "range"), format!("0-{}", len - 1));
        let status = reg.get(&next).await;
        assert_eq!(status.status(), 204);
        let range = header(&status, "range");
        if range != format!("0-{}", len - 1) {
            problems.push(format!("round {round}: after the race the session's Range is {range}"));
        }
        let digest = sha256(&candidates[winner]);
        let finished = outcome(reg.finish_upload(&next, &digest, &[]).await).await;
        if finished.0 != 201 {
            problems.push(format!("round {round}: finishing with the winner's digest answered {finished:?}"));
            continue;
        }
        if let Err(e) = reads_back(&reg, &format!("/v2/chunks/blobs/{digest}"), &candidates[winner]).await {
            problems.push(format!("round {round}: {e}"));
        }
    }
    assert_no_problems(&problems, "see the seed printed above");
}

#[tokio::test]
async fn of_concurrent_chunks_from_one_location_exactly_one_is_taken_fs() {
    of_concurrent_chunks_from_one_location_exactly_one_is_taken(fs_store()).await
}

#[tokio::test]
async fn of_concurrent_chunks_from_one_location_exactly_one_is_taken_kv() {
    of_concurrent_chunks_from_one_location_exactly_one_is_taken(kv_store()).await
}

#[tokio::test]
async fn of_concurrent_chunks_from_one_location_exactly_one_is_taken_s3() {
    let s3 = common::s3::S3Server::start();
    of_concurrent_chunks_from_one_location_exactly_one_is_taken(common::s3::cluster_options(&s3, None, 300)).await
}

// ---- 3. racing pushes and deletes of one tag -----------------------------------------------

/// Whether `repo:tag` resolves (200) or not (404 MANIFEST_UNKNOWN); anything else panics.
async fn resolves(reg: &Registry, repo: &str, tag: &str) -> bool {
    let response = reg.get(&format!("/v2/{repo}/manifests/{tag}")).await;
    match response.status().as_u16() {
        200 => true,
        _ => {
            expect_error(response, 404, "MANIFEST_UNKNOWN").await;
            false
        }
    }
}

async fn listed_tags(reg: &Registry, repo: &str) -> Vec<String> {
    let response = reg.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(response.status(), 200, "tags/list of {repo}");
    let body = json(response).await;
    body["tags"].as_array().map(|t| t.iter().map(|t| t.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

#[derive(Clone, Copy, Debug)]
enum TagOp {
    Push,
    Delete,
}

/// Six pushes and six deletes of `repo:tag`, issued in a random order, all at once.
async fn race_one_tag(reg: &Registry, rng: &mut Rng, repo: &str, tag: &str, manifest: &[u8]) -> Vec<(TagOp, u16)> {
    let mut ops: Vec<TagOp> = [TagOp::Push; 6].into_iter().chain([TagOp::Delete; 6]).collect();
    rng.shuffle(&mut ops);
    join_all(ops.iter().map(|&op| async move {
        let response = match op {
            TagOp::Push => reg.put_manifest(repo, tag, OCI_MANIFEST, manifest).await,
            TagOp::Delete => reg.delete(&format!("/v2/{repo}/manifests/{tag}")).await,
        };
        let (status, code) = outcome(response).await;
        let expected = match op {
            TagOp::Push => status == 201,
            TagOp::Delete => status == 202 || (status == 404 && code.as_deref() == Some("MANIFEST_UNKNOWN")),
        };
        assert!(expected, "{op:?} {repo}:{tag} answered {status} {code:?}");
        (op, status)
    }))
    .await
}

/// Defect 3: whatever the order racing pushes and deletes of one tag land in, the tag resolves
/// exactly when it is listed; and a manifest delete by digest removes every tag that pointed at
/// it before the delete, including one left by such a race.
#[tokio::test]
async fn a_tag_resolves_exactly_when_it_is_listed_under_racing_pushes_and_deletes() {
    let test = "a_tag_resolves_exactly_when_it_is_listed_under_racing_pushes_and_deletes";
    let mut rng = Rng::seeded(test);
    let (_d, _r, reg) = start(fs_store());
    let mut problems = Vec::new();

    let (manifest, _) = reg.push_image("app", "t", 1).await;
    for round in 0..300 {
        let ops = race_one_tag(&reg, &mut rng, "app", "t", &manifest).await;
        let resolves = resolves(&reg, "app", "t").await;
        let listed = listed_tags(&reg, "app").await.contains(&"t".to_owned());
        if resolves != listed {
            problems.push(format!("tag race, round {round}: resolves {resolves}, listed {listed} after {ops:?}"));
        }
    }

    // Deleting the manifest by digest, with more tags being pushed onto it at the same time.
    for round in 0..10u64 {
        let repo = format!("del{round}");
        let (manifest, digest) = reg.push_image(&repo, "p0", 10 + round).await;
        let before: Vec<String> = ["p0", "p1", "p2", "t"].map(str::to_owned).to_vec();
        for tag in ["p1", "p2"] {
            assert_eq!(reg.put_manifest(&repo, tag, OCI_MANIFEST, &manifest).await.status(), 201);
        }
        // Tag `t` through a push/delete race first: it must be listed exactly when it resolves,
        // or the delete below (which finds tags through the listing) may miss it.
        race_one_tag(&reg, &mut rng, &repo, "t", &manifest).await;
        let concurrent: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
        let mut ops: Vec<Option<&str>> = concurrent.iter().map(|c| Some(c.as_str())).collect();
        ops.push(None); // the delete
        rng.shuffle(&mut ops);
        join_all(ops.iter().map(|op| {
            let (reg, repo, manifest, digest) = (&reg, &repo, &manifest, &digest);
            async move {
                match op {
                    Some(tag) => {
                        let status = reg.put_manifest(repo, tag, OCI_MANIFEST, manifest).await.status();
                        assert_eq!(status, 201, "pushing {repo}:{tag} during the delete");
                    }
                    None => {
                        let status = reg.delete(&format!("/v2/{repo}/manifests/{digest}")).await.status();
                        assert_eq!(status, 202, "deleting {repo}@{digest}");
                    }
                }
            }
        }))
        .await;

        let every: Vec<String> = before.iter().chain(&concurrent).cloned().collect();
        let check = async |when: &str, problems: &mut Vec<String>| {
            let listed = listed_tags(&reg, &repo).await;
            for tag in &listed {
                if !every.contains(tag) {
                    problems.push(format!("manifest delete, round {round}, {when}: unexpected tag {tag} listed"));
                }
            }
            for tag in &every {
                let resolves = resolves(&reg, &repo, tag).await;
                if resolves != listed.contains(tag) {
                    problems.push(format!(
                        "manifest delete, round {round}, {when}: {repo}:{tag} resolves {resolves}, listed {listed:?}"
                    ));
                }
                if resolves && before.contains(tag) {
                    problems.push(format!(
                        "manifest delete, round {round}, {when}: {repo}:{tag}, tagged before the delete, resolves"
                    ));
                }
            }
            listed
        };
        let listed = check("after the delete", &mut problems).await;
        let exists = reg.get(&format!("/v2/{repo}/manifests/{digest}")).await.status() == 200;
        if !exists && !listed.is_empty() {
            problems.push(format!("manifest delete, round {round}: manifest gone but tags {listed:?} listed"));
        }
        // Pushing the manifest again (by digest, no tag) must not bring back a tag the delete
        // removed: one it missed would resolve again now.
        assert_eq!(reg.put_manifest(&repo, &digest, OCI_MANIFEST, &manifest).await.status(), 201);
        check("after pushing the manifest again by digest", &mut problems).await;
        if !exists {
            // Every concurrent push then happened before the delete: none may come back either
            // (a push that stored its record before the delete and set its tag after the
            // delete's scan left such a tag; tags now name the generation of the record).
            for tag in &concurrent {
                if resolves(&reg, &repo, tag).await {
                    problems.push(format!("round {round}: {repo}:{tag} came back with the re-pushed manifest"));
                }
            }
        }
    }
    assert_no_problems(&problems, "see the seed printed above");
}

// ---- 4. long repository names ----------------------------------------------------------------

/// Defect 4: repository names of 101-255 characters (whose keys take the hashed form) push,
/// list and pull like short ones; nothing answers 500.
#[tokio::test]
async fn repositories_with_names_of_101_to_255_characters_push_list_and_pull() {
    let (_d, _r, reg) = start(fs_store());
    let names = [
        format!("{}/{}", "c".repeat(50), "d".repeat(49)), // 100: the longest kept readable
        format!("{}/{}", "a".repeat(50), "b".repeat(50)), // 101: the shortest hashed
        format!("{}/{}/{}", "e".repeat(100), "f".repeat(50), "g".repeat(48)), // 200
        format!("{}/{}", "a".repeat(127), "b".repeat(127)), // 255: the longest valid
    ];
    for (i, name) in names.iter().enumerate() {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{i}}}"#).into_bytes();
        let config_digest = reg.push_blob(name, &config).await;
        let layer = PseudoRandom::bytes(40 + i as u64, 3000);
        let layer_digest = reg.push_blob(name, &layer).await;
        let manifest = image_manifest(
            &[(OCI_CONFIG, &config_digest, config.len())],
            &[(OCI_LAYER, &layer_digest, layer.len())],
            "",
        );
        let put = outcome(reg.put_manifest(name, "v1", OCI_MANIFEST, &manifest).await).await;
        assert_eq!(put.0, 201, "manifest PUT with a tag, name of {} characters: {put:?}", name.len());
        let response = reg.get(&format!("/v2/{name}/tags/list")).await;
        assert_eq!(response.status(), 200, "tags/list, name of {} characters", name.len());
        assert_eq!(json(response).await["tags"], serde_json::json!(["v1"]), "name of {} characters", name.len());
        let response = reg.get(&format!("/v2/{name}/manifests/v1")).await;
        assert_eq!(response.status(), 200, "manifest by tag, name of {} characters", name.len());
        assert!(response.bytes().await.unwrap() == manifest);
        assert!(reads_back(&reg, &format!("/v2/{name}/blobs/{layer_digest}"), &layer).await.is_ok());
    }
    let response = reg.get("/v2/_catalog").await;
    assert_eq!(response.status(), 200);
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(json(response).await["repositories"], serde_json::json!(expected));
}

// ---- 5. referrers stay in their repository ---------------------------------------------------

/// An artifact manifest in `repo` with `subject`; returns its digest.
async fn push_referrer(reg: &Registry, repo: &str, subject: &str, n: usize) -> String {
    let config = reg.push_blob(repo, b"{}").await;
    let manifest = image_manifest(
        &[(OCI_EMPTY, &config, 2)],
        &[],
        &format!(
            r#","artifactType":"application/x.sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}},"annotations":{{"n":"{n}"}}"#
        ),
    );
    let digest = sha256(&manifest);
    assert_eq!(reg.put_manifest(repo, &digest, OCI_MANIFEST, &manifest).await.status(), 201);
    digest
}

async fn referrers(reg: &Registry, repo: &str, subject: &str) -> Vec<String> {
    let response = reg.get(&format!("/v2/{repo}/referrers/{subject}")).await;
    assert_eq!(response.status(), 200);
    let index = json(response).await;
    let mut listed: Vec<String> =
        index["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned()).collect();
    listed.sort();
    listed
}

/// Defect 5: the referrers of a subject in repository `a` are `a`'s only, never entries of the
/// nested repository `a/sha256/<hex of the subject>`.
#[tokio::test]
async fn referrers_of_a_repository_never_include_a_nested_repositorys() {
    let (_d, _r, reg) = start(fs_store());
    let (_, subject) = reg.push_image("a", "v1", 1).await;
    let nested = format!("a/sha256/{}", subject.strip_prefix("sha256:").unwrap());
    let (_, nested_subject) = reg.push_image(&nested, "v1", 2).await;
    let of_nested_subject = push_referrer(&reg, &nested, &nested_subject, 1).await;
    let of_subject_in_nested = push_referrer(&reg, &nested, &subject, 2).await;
    let genuine = push_referrer(&reg, "a", &subject, 3).await;
    assert_eq!(referrers(&reg, "a", &subject).await, [genuine]);
    assert_eq!(referrers(&reg, &nested, &nested_subject).await, [of_nested_subject]);
    assert_eq!(referrers(&reg, &nested, &subject).await, [of_subject_in_nested]);
}

// ---- 6. a truncated chunk --------------------------------------------------------------------

/// Send `PATCH <location>` over a raw connection announcing more than `body` and close the
/// connection after `body`: with `Content-Length` twice its length, or chunked without the
/// closing zero-length chunk (docker's streamed PATCH, cut off).
async fn send_truncated_patch(addr: &str, location: &str, chunked: bool, body: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let framing =
        if chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {}", 2 * body.len()) };
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    if chunked {
        for piece in body.chunks(10_000) {
            stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await.unwrap();
            stream.write_all(piece).await.unwrap();
            stream.write_all(b"\r\n").await.unwrap();
        }
    } else {
        stream.write_all(body).await.unwrap();
    }
    stream.flush().await.unwrap();
    drop(stream); // the client goes away mid-body
}

/// Defect 6: a PATCH whose body is cut off is never taken into the session, never becomes an
/// object (not even for the moment before a cleanup, which a crash or a failed delete would make
/// permanent), and the session goes on from the same Location.
async fn a_truncated_chunk_is_never_visible_and_never_blocks_the_session(options: RunnerOptions<'static>) {
    let kv = is_kv(&options);
    // The raw request carries no credentials: authentication off whatever BERTH_TEST_AUTH says.
    let (data, runner, reg) = start(with_vars(options, &[("auth_mode", "none")]));
    let data = data.path();
    let blob = PseudoRandom::bytes(61, 201_000);
    let (first, rest) = blob.split_at(1000);
    let location = reg.start_upload("trunc").await;
    let id = upload_id(&location);
    let response = reg.patch_chunk(&location, 0, first).await;
    assert_eq!(response.status(), 202);
    let location = header(&response, "location");
    let mut patches = 1;
    for chunked in [false, true] {
        let how = if chunked { "chunked body cut before its end" } else { "Content-Length 100000, 50000 bytes sent" };
        let watch = Watch::session_objects(data, kv, &id);
        send_truncated_patch(&runner.addr(), &location, chunked, &rest[..50_000]).await;
        patches += 1;
        wait_for_log_lines(&runner, "PATCH ", patches);
        let seen = watch.stop();
        assert!(seen.is_empty(), "{how}: the broken chunk was stored as an object, if only for a moment: {seen:?}");
        let status = reg.get(&location).await;
        assert_eq!(status.status(), 204, "{how}: the session is still there");
        assert_eq!(header(&status, "range"), "0-999", "{how}: no byte of the broken chunk is in the session");
        assert_eq!(session_objects(data, kv, &id).len(), 1, "{how}: only the first chunk is stored");
        if kv {
            assert_eq!(orphan_kv_chunks(data), Vec::<String>::new(), "{how}: no chunk of the broken write is left");
        } else {
            let temp: Vec<_> = std::fs::read_dir(data.join("blobs/.tmp")).unwrap().collect();
            assert!(temp.is_empty(), "{how}: no temp file is left: {temp:?}");
        }
    }
    // The whole rest from the same Location.
    let response = reg.patch_chunk(&location, 1000, rest).await;
    assert_eq!(response.status(), 202, "the session takes the chunk again");
    let digest = sha256(&blob);
    let response = reg.finish_upload(&header(&response, "location"), &digest, &[]).await;
    assert_eq!(response.status(), 201);
    reads_back(&reg, &format!("/v2/trunc/blobs/{digest}"), &blob).await.unwrap();
}

#[tokio::test]
async fn a_truncated_chunk_is_never_visible_and_never_blocks_the_session_fs() {
    a_truncated_chunk_is_never_visible_and_never_blocks_the_session(fs_store()).await
}

#[tokio::test]
async fn a_truncated_chunk_is_never_visible_and_never_blocks_the_session_kv() {
    a_truncated_chunk_is_never_visible_and_never_blocks_the_session(kv_store()).await
}

// ---- 7. expiry from the last touch -----------------------------------------------------------

/// Defect 7: a session that receives a chunk every second lives on past an expiry of 3 s.
#[tokio::test]
async fn upload_expiry_counts_from_the_last_chunk_not_from_creation() {
    // Time-based by nature: what is tested is that a session touched every second outlives an
    // expiry of 3 s for 7 s, so this test sleeps between chunks (about 7 s in all).
    let (_d, _r, reg) = start(with_vars(fs_store(), &[("upload_expiry_seconds", "3")]));
    let blob = PseudoRandom::bytes(71, 8000);
    let mut location = reg.start_upload("slow").await;
    let begin = tokio::time::Instant::now();
    for (i, chunk) in blob.chunks(1000).enumerate() {
        tokio::time::sleep_until(begin + Duration::from_secs(i as u64)).await;
        let response = reg.patch_chunk(&location, i as u64 * 1000, chunk).await;
        if response.status() != 202 {
            let seen = outcome(response).await;
            panic!("chunk {i}, {:?} after the session opened: {seen:?}", begin.elapsed());
        }
        location = header(&response, "location");
    }
    let digest = sha256(&blob);
    let response = outcome(reg.finish_upload(&location, &digest, &[]).await).await;
    assert_eq!(response.0, 201, "finishing {:?} after the session opened: {response:?}", begin.elapsed());
    reads_back(&reg, &format!("/v2/slow/blobs/{digest}"), &blob).await.unwrap();
}

// ---- 8. durability and reclamation (filesystem store) ----------------------------------------

/// Defect 8a: temp files of writes a stopped runner was in the middle of are removed at start.
#[tokio::test]
async fn leftover_temp_files_are_removed_when_the_runner_starts() {
    let data = tempfile::tempdir().unwrap();
    let blob = PseudoRandom::bytes(81, 5000);
    let digest = {
        let runner = Runner::start_with(data.path(), fs_store());
        let digest = Registry::new(&runner).push_blob("r", &blob).await;
        runner.stop();
        digest
    };
    let leftover = data.path().join("blobs/.tmp/00112233445566778899aabbccddeeff");
    std::fs::write(&leftover, PseudoRandom::bytes(82, 4096)).unwrap();
    let runner = Runner::start_with(data.path(), fs_store());
    assert!(!leftover.exists(), "the leftover temp file is still there after the start");
    reads_back(&Registry::new(&runner), &format!("/v2/r/blobs/{digest}"), &blob).await.unwrap();
}

/// The one stored file of exactly `size` bytes under `<data>/blobs/`.
fn object_file_of_size(data: &Path, size: u64) -> PathBuf {
    let files: Vec<PathBuf> =
        stored_objects(data, "").into_iter().filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == size)).collect();
    assert_eq!(files.len(), 1, "one object file of {size} bytes: {files:?}");
    files.into_iter().next().unwrap()
}

/// Defect 8b: a blob file truncated underneath a read fails that read, not the runner. Over
/// plain HTTP the runner sends the file from mapped windows (section 9): the truncated pages
/// fail its `writev` with EFAULT rather than raising SIGBUS. (Over HTTPS: section 9.)
#[tokio::test]
async fn a_blob_file_truncated_under_a_read_fails_that_read_not_the_runner() {
    const MIB: usize = 1024 * 1024;
    let (d, _runner, reg) = start(fs_store());
    let blob = PseudoRandom::bytes(83, 64 * MIB);
    let digest = sha256(&blob);
    let location = reg.start_upload("big").await;
    let response = reg.http.patch(reg.at(&location)).body(blob.clone()).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let response = reg.finish_upload(&header(&response, "location"), &digest, &[]).await;
    assert_eq!(response.status(), 201);
    let file = object_file_of_size(d.path(), blob.len() as u64);
    assert!(file.file_name().unwrap().to_string_lossy().ends_with('~'), "an object file: {file:?}");

    let response = reg.get(&format!("/v2/big/blobs/{digest}")).await;
    let received = truncated_under_the_read(response, &file, blob.len()).await;
    let alive = reg.http.get(reg.at("/v2/")).send().await;
    match alive {
        Ok(response) => assert_eq!(response.status(), 200),
        Err(e) => panic!("the runner no longer answers after the truncated read ({received} bytes received): {e}"),
    }
}

/// Take 1 MiB of `response`, truncate `file` to 1 MiB, then read on: the read must fail or end
/// short of `length` within a minute. The bytes received.
async fn truncated_under_the_read(mut response: reqwest::Response, file: &Path, length: usize) -> usize {
    const MIB: usize = 1024 * 1024;
    assert_eq!(response.status(), 200);
    let mut received = 0;
    while received < MIB {
        received += response.chunk().await.unwrap().expect("more of the body").len();
    }
    std::fs::OpenOptions::new().write(true).open(file).unwrap().set_len(MIB as u64).unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => received += chunk.len(),
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the read neither failed nor ended within 60 s");
    assert!(
        rest.is_err() || received < length,
        "the read of a truncated file delivered all {received} bytes and ended cleanly"
    );
    received
}

/// Defect 8c: an abandoned session expires through the sweep that POSTs run, and nothing of it
/// is left: no object, not even its directory.
#[tokio::test]
async fn an_abandoned_session_is_reclaimed_whole() {
    let (d, _r, reg) = start(with_vars(fs_store(), &[("upload_expiry_seconds", "2")]));
    let location = reg.start_upload("r").await;
    let id = upload_id(&location);
    let response = reg.patch_chunk(&location, 0, &PseudoRandom::bytes(84, 3000)).await;
    assert_eq!(response.status(), 202);
    let location = header(&response, "location");
    let dir = d.path().join("blobs/uploads").join(&id);
    assert_eq!(stored_objects(d.path(), &format!("uploads/{id}")).len(), 1);
    let entry = d.path().join(format!("blobs/index/uploads/{id}~"));
    assert!(entry.exists(), "the session is in the sweep's index");
    // Nothing looks at the session itself (a GET of an expired session would cancel it on the
    // spot): only the sweep, one step per POST, may reclaim it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.exists() || entry.exists() {
        let post = reg.http.post(reg.at("/v2/other/blobs/uploads/")).send().await.unwrap();
        assert_eq!(post.status(), 202);
        assert!(Instant::now() < deadline, "the sweep never reclaimed the session");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored_objects(d.path(), &format!("uploads/{id}")), Vec::<PathBuf>::new(), "objects of the session");
    expect_error(reg.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn the_filesystem_store_keeps_the_blob_store_contract() {
    let (_data, _runner, reg) = start_registry(RunnerOptions::default());
    assert_store_contract(&reg).await;
}

// ---- 9. blob bodies the runner sends itself ---------------------------------------------------

/// A blob stored as three parts (three PATCH chunks); its digest.
async fn push_in_three_chunks(reg: &Registry, repo: &str, blob: &[u8]) -> String {
    let digest = sha256(blob);
    let mut location = reg.start_upload(repo).await;
    let third = blob.len() / 3;
    for start in [0, third] {
        let response = reg.patch_chunk(&location, start as u64, &blob[start..start + third]).await;
        assert_eq!(response.status(), 202);
        location = header(&response, "location");
    }
    let response = reg.finish_upload(&location, &digest, &blob[2 * third..]).await;
    assert_eq!(response.status(), 201);
    digest
}

/// The most bytes a loopback connection can hold in flight: the largest send buffer plus the
/// largest receive buffer TCP may grow to.
fn socket_buffering() -> usize {
    let max = |file: &str| {
        let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{file}")).unwrap();
        text.split_whitespace().last().unwrap().parse::<usize>().unwrap()
    };
    max("tcp_rmem") + max("tcp_wmem")
}

/// Lines of the runner's memory map that map files under `<data>/blobs/`.
fn mapped_blob_files(runner: &Runner, data: &Path) -> Vec<String> {
    let blobs = std::fs::canonicalize(data.join("blobs")).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", runner.pid())).unwrap();
    maps.lines().filter(|l| l.contains(blobs.to_str().unwrap())).map(str::to_owned).collect()
}

/// GET the blob at `path`, take about 1 MiB, look at the runner's memory map, then take the
/// rest, which must be `blob`, with no host-body token among the headers: the headers, and what
/// the map said mid-transfer. `until_mapped`: look again, reading nothing more, until an object
/// file is mapped (a runner that maps them blocks, a window mapped, once the sockets are full:
/// the blob must be larger than they hold, [`socket_buffering`]); else look once.
async fn get_looking_at_the_map(
    reg: &Registry,
    path: &str,
    blob: &[u8],
    runner: &Runner,
    data: &Path,
    until_mapped: bool,
) -> (reqwest::header::HeaderMap, Vec<String>) {
    let mut response = reg.http.get(reg.at(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while body.len() < 1024 * 1024 {
        body.extend_from_slice(&response.chunk().await.unwrap().expect("more of the body"));
    }
    let mut mapped = mapped_blob_files(runner, data);
    let deadline = Instant::now() + Duration::from_secs(10);
    while until_mapped && mapped.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        mapped = mapped_blob_files(runner, data);
    }
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert!(body == blob, "the body is not the blob ({} of {} bytes)", body.len(), blob.len());
    assert!(!headers.contains_key("x-berth-host-body"), "the host body's token reached the client: {headers:?}");
    (headers, mapped)
}

/// A `Range` across the parts of a blob stored in three: exactly those bytes, as 206.
async fn a_range_is_exact(reg: &Registry, path: &str, blob: &[u8], start: usize, end: usize) {
    let response = reg.http.get(reg.at(path)).header("range", format!("bytes={start}-{end}")).send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(header(&response, "content-range"), format!("bytes {start}-{end}/{}", blob.len()));
    assert_eq!(header(&response, "content-length"), (end + 1 - start).to_string());
    let body = response.bytes().await.unwrap();
    assert!(body[..] == blob[start..=end], "the range {start}-{end} came back with other bytes");
}

/// Over plain HTTP/1.1 the runner sends a blob's bytes itself, from windows of the object files
/// mapped into its memory (only the kernel reads them): the files are in the runner's memory map
/// while the body goes out, the bytes and ranges across parts are exact, and the token by which
/// the component named the body never reaches the client.
#[tokio::test]
async fn over_http_a_blob_body_is_sent_by_the_runner_from_its_mapped_files() {
    let (data, runner, reg) = start(fs_store());
    // Larger than loopback's sockets can hold (tcp_rmem's maximum is 32 MiB on some hosts), so
    // that the runner is still sending, from a mapped window, when the test looks.
    let blob = PseudoRandom::bytes(91, socket_buffering() + 12 * 1024 * 1024 + 5);
    let digest = push_in_three_chunks(&reg, "parts", &blob).await;
    let path = format!("/v2/parts/blobs/{digest}");

    let (headers, mapped) = get_looking_at_the_map(&reg, &path, &blob, &runner, data.path(), true).await;
    assert_eq!(headers["content-length"], blob.len().to_string());
    assert_eq!(headers["docker-content-digest"], digest);
    assert!(!mapped.is_empty(), "no object file was mapped while the body went out");

    a_range_is_exact(&reg, &path, &blob, 4 * 1024 * 1024 - 3, 8 * 1024 * 1024 + 10).await;
    let third = blob.len() / 3;
    a_range_is_exact(&reg, &path, &blob, third - 3, 2 * third + 10).await;
    a_range_is_exact(&reg, &path, &blob, 0, 0).await;
    a_range_is_exact(&reg, &path, &blob, blob.len() - 7, blob.len() - 1).await;
    // A small blob is read at once and sent as it is.
    let small = PseudoRandom::bytes(92, 3000);
    let small_digest = reg.push_blob("parts", &small).await;
    let response = reg.get(&format!("/v2/parts/blobs/{small_digest}")).await;
    assert!(!response.headers().contains_key("x-berth-host-body"));
    assert_eq!(response.bytes().await.unwrap(), small);
    // Once sent, nothing stays mapped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mapped_blob_files(&runner, data.path()).is_empty() {
        assert!(Instant::now() < deadline, "object files stay mapped: {:?}", mapped_blob_files(&runner, data.path()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// HTTP/2 without TLS (prior knowledge, h2c) frames the bytes in user space too: they are read
/// from the files, never mapped, and arrive whole, ranges included.
#[tokio::test]
async fn over_h2c_a_blob_body_is_read_from_its_files_not_mapped() {
    let (data, runner, _) = start(fs_store());
    let reg = Registry::with_client(&runner, client_builder().http2_prior_knowledge().build().unwrap());
    let blob = PseudoRandom::bytes(95, 12 * 1024 * 1024 + 5);
    let digest = push_in_three_chunks(&reg, "parts", &blob).await;
    let path = format!("/v2/parts/blobs/{digest}");
    let (_, mapped) = get_looking_at_the_map(&reg, &path, &blob, &runner, data.path(), false).await;
    assert_eq!(mapped, Vec::<String>::new(), "an object file was mapped for HTTP/2");
    a_range_is_exact(&reg, &path, &blob, 4 * 1024 * 1024 - 3, 8 * 1024 * 1024 + 10).await;
    let response = reg.get(&path).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "the test did not speak HTTP/2");
}

/// Over HTTPS, where the bytes are encrypted in user space, they are read from the files, never
/// mapped (a file truncated under a mapping would be a SIGBUS there); bytes and ranges are
/// exact, and a file truncated under the read fails that read, not the runner.
#[tokio::test]
async fn over_https_a_blob_body_is_read_from_its_files_and_a_truncation_fails_only_that_read() {
    const MIB: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let data = dir.path().join("data");
    let runner = Runner::start_with(
        &data,
        RunnerOptions { tls: Some((&certs.cert, &certs.key)), args: Vec::new(), ..Default::default() },
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap();
    let reg = Registry::with_client(
        &runner,
        // HTTP/1.1: over TLS it is the scheme, not the version (h2c's test), that says read.
        client_builder().tls_built_in_root_certs(false).add_root_certificate(ca).http1_only().build().unwrap(),
    );
    let blob = PseudoRandom::bytes(93, 12 * MIB + 5);
    let digest = push_in_three_chunks(&reg, "parts", &blob).await;
    let path = format!("/v2/parts/blobs/{digest}");

    let (_, mapped) = get_looking_at_the_map(&reg, &path, &blob, &runner, &data, false).await;
    assert_eq!(mapped, Vec::<String>::new(), "an object file was mapped under TLS");
    a_range_is_exact(&reg, &path, &blob, 4 * MIB - 3, 8 * MIB + 10).await;

    let big = PseudoRandom::bytes(94, 64 * MIB);
    let big_digest = reg.push_blob("big", &big).await;
    let file = object_file_of_size(&data, big.len() as u64);
    let response = reg.get(&format!("/v2/big/blobs/{big_digest}")).await;
    truncated_under_the_read(response, &file, big.len()).await;
    let alive = reg.get("/v2/").await;
    assert_eq!(alive.status(), 200, "the runner no longer answers after the truncated read");
}

// ---- 10. answers the runner keeps --------------------------------------------------------------
// `runner/src/http/answer_cache.rs`: anonymous manifest GETs and HEADs, blob HEADs and `/v2/`
// are given again from memory while every key-value value they were made from is unchanged.

fn with_metrics(mut options: RunnerOptions<'static>) -> RunnerOptions<'static> {
    options.args.extend(["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]);
    options
}

/// The headers a kept answer must give as the component gave them.
const ANSWER_HEADERS: [&str; 5] =
    ["content-type", "content-length", "docker-content-digest", "etag", "docker-distribution-api-version"];

async fn answer_of(response: reqwest::Response) -> (u16, Vec<String>, String, Vec<u8>) {
    let status = response.status().as_u16();
    let headers = ANSWER_HEADERS
        .iter()
        .map(|name| response.headers().get(*name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default())
        .collect();
    let id = header(&response, "x-request-id");
    (status, headers, id, response.bytes().await.unwrap().to_vec())
}

/// A kept answer is the component's: the same status, headers and body, with an id of its own
/// (a client's X-Request-Id is answered back), a line in the request log each, and counted.
#[tokio::test]
async fn a_kept_answer_is_the_components_answer_with_an_id_of_its_own() {
    let (_data, runner, reg) = start(with_metrics(fs_store()));
    let (manifest, digest) = reg.push_image("kept/app", "v1", 71).await;
    let layer = serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = kept::answer_cache_count(&scrape(&runner).await, "hit");
    for (method, path) in [
        ("GET", "/v2/kept/app/manifests/v1".to_owned()),
        ("HEAD", "/v2/kept/app/manifests/v1".to_owned()),
        ("GET", format!("/v2/kept/app/manifests/{digest}")),
        ("HEAD", format!("/v2/kept/app/blobs/{layer}")),
        ("GET", "/v2/".to_owned()),
    ] {
        let send = |id: Option<&str>| {
            let mut request = client().request(method.parse().unwrap(), reg.at(&path));
            if let Some(id) = id {
                request = request.header("x-request-id", id);
            }
            async move { answer_of(request.send().await.unwrap()).await }
        };
        let first = send(None).await;
        assert_eq!(first.0, 200, "{method} {path}");
        for again in 0..3 {
            let id = format!("again-{again}");
            let kept = send(Some(id.as_str())).await;
            assert_eq!((kept.0, &kept.1, &kept.3), (first.0, &first.1, &first.3), "{method} {path} answered again");
            assert_eq!(kept.2, id, "{method} {path}: the client's request id is answered back");
        }
        if method == "GET" && path.contains("manifests") {
            assert_eq!(first.3, manifest, "{path}: the manifest's bytes");
        }
    }
    let hits = kept::answer_cache_count(&scrape(&runner).await, "hit") - before;
    assert!(hits >= 5.0 * 3.0, "{hits} answers were given from the cache");
    let logged = runner.log().iter().filter(|l| l.starts_with("GET /v2/kept/app/manifests/v1 200")).count();
    assert_eq!(logged, 4, "one request log line per answer: {:?}", runner.log());
}

/// A tag moved, a manifest or tag deleted, a blob deleted: the very next request sees it.
#[tokio::test]
async fn a_change_is_seen_by_the_very_next_request_after_answers_were_kept() {
    let (_data, runner, reg) = start(with_metrics(fs_store()));
    let (first, first_digest) = reg.push_image("kept/moving", "v1", 72).await;
    let get = |path: String| {
        let reg = reg.clone();
        async move {
            let response = reg.get(&path).await;
            let status = response.status().as_u16();
            (status, response.bytes().await.unwrap().to_vec())
        }
    };
    let by_tag = "/v2/kept/moving/manifests/v1".to_owned();
    for _ in 0..3 {
        assert_eq!(get(by_tag.clone()).await, (200, first.clone()));
    }
    assert!(kept::answer_cache_count(&scrape(&runner).await, "hit") >= 2.0, "answers were kept");

    let (second, _) = reg.push_image("kept/moving", "v1", 73).await;
    assert_eq!(get(by_tag.clone()).await, (200, second.clone()), "the tag moved");
    assert_eq!(get(by_tag.clone()).await, (200, second), "and stays moved");

    let by_digest = format!("/v2/kept/moving/manifests/{first_digest}");
    assert_eq!(get(by_digest.clone()).await, (200, first.clone()));
    assert_eq!(get(by_digest.clone()).await, (200, first));
    for _ in 0..2 {
        assert_eq!(reg.head(&by_digest).await.status(), 200);
    }
    assert_eq!(reg.delete(&by_digest).await.status(), 202);
    expect_error(reg.get(&by_digest).await, 404, "MANIFEST_UNKNOWN").await;
    let head = reg.head(&by_digest).await;
    assert_eq!(head.status(), 404, "HEAD after the delete");

    assert_eq!(reg.delete(&by_tag).await.status(), 202);
    expect_error(reg.get(&by_tag).await, 404, "MANIFEST_UNKNOWN").await;

    let blob = reg.push_blob("kept/moving", b"a blob to delete").await;
    let blob_path = format!("/v2/kept/moving/blobs/{blob}");
    for _ in 0..2 {
        assert_eq!(reg.head(&blob_path).await.status(), 200);
    }
    assert_eq!(reg.delete(&blob_path).await.status(), 202);
    assert_eq!(reg.head(&blob_path).await.status(), 404, "HEAD after the blob's delete");
    assert!(kept::answer_cache_count(&scrape(&runner).await, "changed") >= 4.0, "kept answers were checked");
}

/// One tag moved again and again while 16 clients read it on the same front end: no read that
/// started after a move was acknowledged sees the tag older (seeded; `BERTH_KEPT_SEED` replays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_a_moving_tag_never_see_it_older_than_the_last_acknowledged_move() {
    let (_data, runner, reg) = start(with_metrics(fs_store()));
    let seed = kept::seed();
    let before = kept::answer_cache_count(&scrape(&runner).await, "hit");
    let race = kept::race_a_moving_tag(&reg, &reg, "kept/race", seed, 16, 40).await;
    assert!(race.problems.is_empty(), "seed {seed}: {:#?}", race.problems);
    let hits = kept::answer_cache_count(&scrape(&runner).await, "hit") - before;
    assert!(hits > 0.0, "seed {seed}: no read of {} was given from the cache: the race proves nothing", race.reads);
    println!("{} reads, {hits} from the cache", race.reads);
}
