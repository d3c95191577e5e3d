//! The key-value blob store provider (providers/blob-kv) composed into the registry, as `spin up`
//! runs it: the runner plugs the provider component into the registry's `berth:blob-store`
//! import (`--blob-store <provider.wasm>`), and every blob byte lives in key-value chunks.
//! Real clients first, then the provider's own rules: exact ranges, nothing left behind, nothing
//! half-written visible.

mod common;

use common::clients::*;
use common::oci_layout::Layout;
use common::*;
use futures::StreamExt as _;
use std::path::Path;

/// 256 KiB: the provider's chunk size (providers/blob-kv/src/layout.rs).
const CHUNK: usize = 256 * 1024;

fn provider_args() -> Vec<String> {
    vec!["--blob-store".into(), artifacts().blob_kv_provider.display().to_string()]
}

fn start(dir: &Path) -> Runner {
    let runner = Runner::start_with(dir, RunnerOptions { args: provider_args(), ..Default::default() });
    assert!(
        runner.log().iter().any(|l| l.contains("blob store: provider component")),
        "the runner composed the provider: {:?}",
        runner.log()
    );
    runner
}

/// No blob bytes went to the runner's filesystem store.
fn assert_no_files(data: &Path) {
    assert!(stored_objects(data, "blobs").is_empty(), "the filesystem store was not used");
}

async fn multi_arch_round_trip(leg: Leg) {
    let src = leg.work.join("src");
    let layout = Layout::create(&src);
    let amd = layout.image(21, "amd64", &[700_000, 1000]);
    let arm = layout.image(22, "arm64", &[600_000]);
    let index = layout.index(&[(&amd, "amd64"), (&arm, "arm64")]);
    layout.tag(&index, OCI_INDEX, "multi");
    leg.push_layout(&src, "multi", "kv/multi:v1", true);

    let raw = leg.skopeo_ok(&with(s(&["inspect", "--raw", &leg.image("kv/multi:v1")]), leg.skopeo_tls_plain()));
    assert_eq!(sha256(&raw.stdout), index.digest, "the index comes back byte-identical");
    let out = leg.work.join("out");
    leg.pull_to("kv/multi:v1", &format!("oci:{}:v1", out.display()), true);
    assert_eq!(blobs_in(&out), blobs_in(&src), "every blob of both platforms comes back byte-identical");
    assert!(!kv_keys(&leg.runner.data, "blob-kv/chunk/").is_empty(), "the bytes are in key-value chunks");
    assert_no_files(&leg.runner.data);
}

#[tokio::test]
async fn skopeo_copies_a_multi_arch_index_in_and_out_through_the_kv_provider_over_http() {
    multi_arch_round_trip(Leg::http_with(provider_args())).await;
}

#[tokio::test]
async fn skopeo_copies_a_multi_arch_index_in_and_out_through_the_kv_provider_over_https() {
    multi_arch_round_trip(Leg::https_with(provider_args())).await;
}

#[tokio::test]
async fn skopeo_pushes_and_pulls_a_100_mib_layer_through_the_kv_provider() {
    let leg = Leg::http_with(provider_args());
    let src = leg.work.join("src");
    let layout = Layout::create(&src);
    let image = layout.image(23, "amd64", &[100 << 20]);
    layout.tag(&image, OCI_MANIFEST, "big");
    leg.push_layout(&src, "big", "kv/big:v1", false);
    let out = leg.work.join("out");
    leg.pull_to("kv/big:v1", &format!("oci:{}:v1", out.display()), false);
    assert_eq!(blobs_in(&out), blobs_in(&src));
    let chunks = kv_keys(&leg.runner.data, "blob-kv/chunk/").len();
    assert!(chunks >= (100 << 20) / CHUNK, "a 100 MiB layer is stored as 256 KiB chunks ({chunks})");
    assert_no_files(&leg.runner.data);
    let peak = leg.runner.peak_rss();
    println!("runner peak RSS through the kv provider, 100 MiB layer push + pull: {} MiB", peak >> 20);
    assert!(peak < 400 << 20, "memory stays bounded: peak RSS {} MiB", peak >> 20);
}

#[tokio::test]
async fn a_range_read_across_chunk_boundaries_returns_exactly_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let runner = start(&dir.path().join("data"));
    let registry = Registry::new(&runner);
    // Uneven chunked upload: the provider re-cuts the bytes into fixed chunks.
    let blob = PseudoRandom::bytes(24, 3 * CHUNK + 12_345);
    let location = registry.start_upload("kv/range").await;
    let cut = CHUNK + 777;
    let response = registry.patch_chunk(&location, 0, &blob[..cut]).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let digest = sha256(&blob);
    assert_eq!(registry.finish_upload(&location, &digest, &blob[cut..]).await.status(), 201);

    let path = format!("/v2/kv/range/blobs/{digest}");
    for (start, end) in [(0, 0), (CHUNK - 1, CHUNK), (CHUNK - 10, 2 * CHUNK + 10), (3 * CHUNK, blob.len() - 1)] {
        let response =
            registry.http.get(registry.at(&path)).header("range", format!("bytes={start}-{end}")).send().await;
        let response = response.unwrap();
        assert_eq!(response.status(), 206, "range {start}-{end}");
        assert_eq!(response.headers()["content-range"], format!("bytes {start}-{end}/{}", blob.len()).as_str());
        assert_eq!(response.bytes().await.unwrap(), &blob[start..=end], "bytes {start}-{end}");
    }
    let whole = registry.get(&path).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(sha256(&whole.bytes().await.unwrap()), digest);
}

#[tokio::test]
async fn a_cancelled_upload_leaves_no_chunks_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runner = start(&data);
    let registry = Registry::new(&runner);
    let location = registry.start_upload("kv/cancel").await;
    let before = kv_keys(&data, "blob-kv/chunk/").len();
    let response = registry.patch_chunk(&location, 0, &PseudoRandom::bytes(25, 2 * CHUNK + 1)).await;
    assert_eq!(response.status(), 202);
    assert_eq!(kv_keys(&data, "blob-kv/chunk/").len() - before, 3, "a 2-chunk-and-a-byte upload is 3 chunks");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(registry.delete(&location).await.status(), 204);
    // The session's objects, its index entry and the claims on their names: all gone, from the
    // provider's indexes too (their nodes stay, empty).
    let outside_indexes: Vec<String> =
        kv_keys(&data, "blob-kv/").into_iter().filter(|key| !key.starts_with("blob-kv/ix/")).collect();
    assert_eq!(outside_indexes, Vec::<String>::new(), "cancelling deleted every chunk and record");
    assert_eq!(kv_index_entries(&data, "blob-kv/ix/names/"), Vec::<String>::new(), "no name is listed");
    assert_eq!(kv_index_entries(&data, "blob-kv/ix/writes/"), Vec::<String>::new(), "no write is in progress");
}

#[tokio::test]
async fn an_interrupted_chunk_is_never_visible_and_leaves_no_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runner = start(&data);
    let registry = Registry::new(&runner);
    let location = registry.start_upload("kv/broken").await;

    // A body that sends two chunks' worth of bytes, then fails.
    let sent = PseudoRandom::bytes(26, 2 * CHUNK);
    let body = futures::stream::iter([Ok(sent), Err(std::io::Error::other("client went away"))]);
    let result = registry
        .http
        .patch(registry.at(&location))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body.boxed()))
        .send()
        .await;
    assert!(result.as_ref().map_or(true, |r| !r.status().is_success()), "the broken chunk is not acknowledged");

    // The session did not move.
    let status = registry.get(&location).await;
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["range"], "0-0", "no byte of the broken chunk is in the session");
    // The request that broke finishes in the runner after the client gave up on it (its log
    // line comes then): it stored what arrived, saw the body did not end cleanly, and deleted
    // that object again, so nothing of it is left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !runner.log().iter().any(|line| line.starts_with("PATCH ")) {
        assert!(std::time::Instant::now() < deadline, "the broken PATCH never finished: {:?}", runner.log());
        std::thread::yield_now();
    }
    // What is stored is the session's own index entry (its record, its one chunk, the claim on
    // its name), nothing of the broken chunk.
    let id = location.split("/uploads/").nth(1).unwrap().split('?').next().unwrap();
    assert_eq!(kv_keys(&data, "blob-kv/obj/"), [format!("blob-kv/obj/index/uploads/{id}")], "no broken chunk's record");
    assert_eq!(kv_keys(&data, "blob-kv/chunk/").len(), 1, "no chunk of the broken chunk");
    assert_eq!(kv_keys(&data, "blob-kv/claim/").len(), 1, "no claim of the broken chunk's name");
    // Then the session takes the whole blob afresh.
    let blob = PseudoRandom::bytes(27, CHUNK + 5);
    let digest = sha256(&blob);
    let response = registry.patch_chunk(&location, 0, &blob).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(registry.finish_upload(&location, &digest, b"").await.status(), 201);
    assert_eq!(sha256(&registry.get(&format!("/v2/kv/broken/blobs/{digest}")).await.bytes().await.unwrap()), digest);
    // Of the data objects' chunks (index entries have small chunks of their own), only the good
    // blob's 2 remain.
    let data_writes: std::collections::HashSet<String> = kv_values(&data, "blob-kv/obj/uploads/")
        .into_iter()
        .map(|(_, v)| serde_json::from_slice::<serde_json::Value>(&v).unwrap()["write"].as_str().unwrap().to_owned())
        .collect();
    let data_chunks = kv_keys(&data, "blob-kv/chunk/")
        .into_iter()
        .filter(|k| data_writes.contains(k["blob-kv/chunk/".len()..].split('/').next().unwrap()))
        .count();
    assert_eq!(data_chunks, 2, "only the good blob's 2 chunks remain");
}

#[tokio::test]
async fn the_chunks_of_a_write_killed_half_way_are_reclaimed_after_its_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runner = start(&data);
    let registry = Registry::new(&runner);
    let location = registry.start_upload("kv/killed").await;
    let chunks_before = kv_keys(&data, "blob-kv/chunk/");

    // A PATCH that sends three chunks' worth of bytes and then nothing: the runner dies under it.
    let (more, body) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    more.unbounded_send(Ok(PseudoRandom::bytes(31, 3 * CHUNK))).unwrap();
    let patch = registry
        .http
        .patch(registry.at(&location))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let patch = tokio::spawn(patch);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while kv_keys(&data, "blob-kv/chunk/").len() < chunks_before.len() + 3 {
        assert!(std::time::Instant::now() < deadline, "the provider never stored the three chunks");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let status = std::process::Command::new("kill").arg("-9").arg(runner.pid().to_string()).status().unwrap();
    assert!(status.success());
    let _ = runner.stop();
    drop(more);
    assert!(patch.await.unwrap().map_or(true, |r| !r.status().is_success()), "the killed PATCH is not acknowledged");

    let orphans: Vec<String> =
        kv_keys(&data, "blob-kv/chunk/").into_iter().filter(|key| !chunks_before.contains(key)).collect();
    assert_eq!(orphans.len(), 3, "the dead write left its chunks: {orphans:?}");
    let markers = kv_index_entries(&data, "blob-kv/ix/writes/");
    assert_eq!(markers.len(), 1, "and its marker: {markers:?}");

    // Restarted with a grace period of one second, every write reclaims a little; small pushes
    // drive it until the dead write's chunks are gone.
    let runner = Runner::start_with(
        &data,
        RunnerOptions {
            args: [provider_args(), vars(&[("blob_kv_write_grace_seconds", "1")])].concat(),
            ..Default::default()
        },
    );
    let registry = Registry::new(&runner);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut pushes = 0u64;
    while kv_keys(&data, "blob-kv/chunk/").iter().any(|key| orphans.contains(key)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead write's chunks were not reclaimed after {pushes} pushes"
        );
        let blob = PseudoRandom::bytes(100 + pushes, 10);
        registry.push_blob("kv/other", &blob).await;
        pushes += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(kv_index_entries(&data, "blob-kv/ix/writes/"), Vec::<String>::new(), "the dead write's marker went too");

    // The session never took the killed chunk: it resumes from 0 and finishes.
    let status = registry.get(&location).await;
    assert_eq!((status.status().as_u16(), header(&status, "range")), (204, "0-0".to_owned()));
    let blob = PseudoRandom::bytes(32, CHUNK + 9);
    let digest = sha256(&blob);
    let response = registry.patch_chunk(&location, 0, &blob).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(registry.finish_upload(&location, &digest, b"").await.status(), 201);
    assert_eq!(sha256(&registry.get(&format!("/v2/kv/killed/blobs/{digest}")).await.bytes().await.unwrap()), digest);
}

#[tokio::test]
async fn a_deleted_object_is_gone_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runner = start(&data);
    let registry = Registry::new(&runner);
    // A tag is an index object in the blob store; deleting the manifest deletes it.
    let (_, digest) = registry.push_image("kv/tags", "v1", 28).await;
    assert_eq!(kv_keys(&data, "blob-kv/obj/index/tags/").len(), 1);
    let tags = serde_json::from_slice::<serde_json::Value>(
        &registry.get("/v2/kv/tags/tags/list").await.bytes().await.unwrap(),
    )
    .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    assert_eq!(registry.delete(&format!("/v2/kv/tags/manifests/{digest}")).await.status(), 202);
    assert_eq!(kv_keys(&data, "blob-kv/obj/index/tags/"), Vec::<String>::new());
    let tags = serde_json::from_slice::<serde_json::Value>(
        &registry.get("/v2/kv/tags/tags/list").await.bytes().await.unwrap(),
    )
    .unwrap();
    assert_eq!(tags["tags"], serde_json::json!([]));
}

#[tokio::test]
async fn a_listing_is_complete_across_the_leaves_of_the_names_index() {
    // The provider lists from its names index: 800 tag entries of about 90 bytes (a repository
    // name this long is keyed by its hash) are more than one index node holds (32 KiB), so the
    // listing crosses leaves.
    let dir = tempfile::tempdir().unwrap();
    let runner = start(&dir.path().join("data"));
    let registry = Registry::new(&runner);
    let repo = format!("kv/{}x", "many-tags-".repeat(12));
    let (manifest, _) = registry.push_image(&repo, "t000", 5).await;
    let mut expected = vec!["t000".to_owned()];
    for i in 1..800 {
        let tag = format!("t{i:03}");
        let response = registry.put_manifest(&repo, &tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(response.status(), 201, "{tag}");
        expected.push(tag);
    }
    let leaves = kv_values(&dir.path().join("data"), "blob-kv/ix/names/node/")
        .iter()
        .filter(|(_, node)| serde_json::from_slice::<serde_json::Value>(node).unwrap()["level"] == 0)
        .count();
    assert!(leaves > 1, "the names span {leaves} leaves");
    let tags = json(registry.get(&format!("/v2/{repo}/tags/list")).await).await;
    let tags: Vec<String> = serde_json::from_value(tags["tags"].clone()).unwrap();
    assert_eq!(tags, expected);
}

#[tokio::test]
async fn the_key_value_provider_on_sqlite_keeps_the_blob_store_contract() {
    let data = tempfile::tempdir().unwrap();
    let runner = start(data.path());
    assert_store_contract(&Registry::new(&runner)).await;
}
