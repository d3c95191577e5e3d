//! The OCI Distribution Spec v1.1 rules, one test each, against the real component through the
//! runner over HTTP.

mod common;

use common::*;
use futures::StreamExt;

fn start() -> (tempfile::TempDir, Runner, Registry) {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let registry = Registry::new(&runner);
    (data, runner, registry)
}

// ---- pull: blobs ----------------------------------------------------------------------------

#[tokio::test]
async fn blob_range_request_is_206_with_content_range() {
    let (_d, _r, reg) = start();
    let blob = PseudoRandom::bytes(1, 1000);
    let digest = reg.push_blob("r", &blob).await;
    let url = reg.at(&format!("/v2/r/blobs/{digest}"));
    for (range, start, end) in
        [("bytes=10-19", 10, 20), ("bytes=990-", 990, 1000), ("bytes=-5", 995, 1000), ("bytes=900-5000", 900, 1000)]
    {
        let response = reg.http.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(response.status(), 206, "{range}");
        assert_eq!(header(&response, "content-range"), format!("bytes {start}-{}/1000", end - 1), "{range}");
        assert_eq!(header(&response, "content-length"), (end - start).to_string(), "{range}");
        assert_eq!(header(&response, "docker-content-digest"), digest);
        assert!(response.bytes().await.unwrap() == blob[start..end], "{range}");
    }
}

#[tokio::test]
async fn unsatisfiable_range_is_416_with_a_body_matching_its_length() {
    let (_d, _r, reg) = start();
    let digest = reg.push_blob("r", &[7; 100]).await;
    for range in ["bytes=500-0", "bytes=100-", "bytes=200-300"] {
        let response =
            reg.http.get(reg.at(&format!("/v2/r/blobs/{digest}"))).header("range", range).send().await.unwrap();
        assert_eq!(response.status(), 416, "{range}");
        assert_eq!(header(&response, "content-range"), "bytes */100");
        let length: usize = header(&response, "content-length").parse().unwrap();
        let body = response.bytes().await.unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["errors"][0]["code"], "RANGE_INVALID");
    }
}

#[tokio::test]
async fn blob_head_and_get_of_unknown_blob_are_404_blob_unknown() {
    let (_d, _r, reg) = start();
    let digest = sha256(b"never pushed");
    assert_eq!(reg.head(&format!("/v2/r/blobs/{digest}")).await.status(), 404);
    expect_error(reg.get(&format!("/v2/r/blobs/{digest}")).await, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn a_chunked_upload_of_several_parts_finishes_under_sha512() {
    // Sessions run only SHA-256 along the chunks; a sha512 digest is checked over every part
    // (two PATCHes and the PUT's own body) when the upload closes.
    use sha2::Digest;
    let (_d, _r, reg) = start();
    let parts = [PseudoRandom::bytes(7, 300_000), PseudoRandom::bytes(8, 5), PseudoRandom::bytes(9, 70_000)];
    let whole = parts.concat();
    let digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&whole)));
    let wrong = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&parts[0])));
    for (claimed, expected_status) in [(&wrong, 400), (&digest, 201)] {
        let mut location = reg.start_upload("r512").await;
        let mut offset = 0;
        for part in &parts[..2] {
            let response = reg.patch_chunk(&location, offset, part).await;
            assert_eq!(response.status(), 202);
            location = header(&response, "location");
            offset += part.len() as u64;
        }
        let response = reg.finish_upload(&location, claimed, &parts[2]).await;
        if expected_status == 400 {
            expect_error(response, 400, "DIGEST_INVALID").await;
            continue;
        }
        assert_eq!(response.status(), 201);
        assert_eq!(header(&response, "docker-content-digest"), digest);
    }
    let got = reg.get(&format!("/v2/r512/blobs/{digest}")).await;
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == whole, "the three parts, in order");
    let wrong_blob = reg.get(&format!("/v2/r512/blobs/{wrong}")).await;
    expect_error(wrong_blob, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn sha512_blobs_push_and_pull() {
    use sha2::Digest;
    let (_d, _r, reg) = start();
    let blob = PseudoRandom::bytes(5, 4096);
    let digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&blob)));
    let response = reg
        .http
        .post(reg.at(&format!("/v2/r/blobs/uploads/?digest={digest}")))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "docker-content-digest"), digest);
    // And through a chunked session.
    let location = reg.start_upload("r").await;
    let other = PseudoRandom::bytes(6, 3000);
    let other_digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&other)));
    let response = reg.http.patch(reg.at(&location)).body(other.clone()).send().await.unwrap();
    let location = header(&response, "location");
    let response = reg.finish_upload(&location, &other_digest, &[]).await;
    assert_eq!(response.status(), 201);
    for (d, bytes) in [(digest, blob), (other_digest, other)] {
        let got = reg.get(&format!("/v2/r/blobs/{d}")).await;
        assert_eq!(got.status(), 200);
        assert!(got.bytes().await.unwrap() == bytes);
    }
}

#[tokio::test]
async fn the_empty_json_blob_and_zero_byte_blobs_work() {
    let (_d, _r, reg) = start();
    for bytes in [&b"{}"[..], &b""[..]] {
        let digest = reg.push_blob("r", bytes).await;
        let response = reg.get(&format!("/v2/r/blobs/{digest}")).await;
        assert_eq!(header(&response, "content-length"), bytes.len().to_string());
        assert!(response.bytes().await.unwrap() == bytes);
    }
}

// ---- push: upload sessions ------------------------------------------------------------------

#[tokio::test]
async fn post_opens_a_session_with_location_range_and_upload_uuid() {
    let (_d, _r, reg) = start();
    let response = reg.http.post(reg.at("/v2/r/blobs/uploads/")).send().await.unwrap();
    assert_eq!(response.status(), 202);
    assert!(header(&response, "location").starts_with("/v2/r/blobs/uploads/"));
    assert_eq!(header(&response, "range"), "0-0");
    assert_eq!(header(&response, "content-length"), "0");
    let uuid = header(&response, "docker-upload-uuid");
    assert!(header(&response, "location").contains(&uuid));
}

#[tokio::test]
async fn post_then_monolithic_put_creates_the_blob() {
    let (_d, _r, reg) = start();
    let blob = PseudoRandom::bytes(2, 5000);
    let digest = sha256(&blob);
    let location = reg.start_upload("r").await;
    let response =
        reg.http.put(format!("{}&digest={digest}", reg.at(&location))).body(blob.clone()).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "location"), format!("/v2/r/blobs/{digest}"));
    assert_eq!(header(&response, "docker-content-digest"), digest);
    assert!(reg.get(&format!("/v2/r/blobs/{digest}")).await.bytes().await.unwrap() == blob);
}

#[tokio::test]
async fn chunked_patches_with_content_range_then_put() {
    let (_d, _r, reg) = start();
    let blob = PseudoRandom::bytes(3, 30_000);
    let digest = sha256(&blob);
    let mut location = reg.start_upload("r").await;
    for (i, chunk) in blob.chunks(10_000).enumerate() {
        let start = i * 10_000;
        let response = reg.patch_chunk(&location, start as u64, chunk).await;
        assert_eq!(response.status(), 202);
        assert_eq!(header(&response, "range"), format!("0-{}", start + chunk.len() - 1));
        let next = header(&response, "location");
        assert_ne!(next, location, "each chunk gives a new Location");
        location = next;
    }
    let response = reg.finish_upload(&location, &digest, &[]).await;
    assert_eq!(response.status(), 201);
    assert!(reg.get(&format!("/v2/r/blobs/{digest}")).await.bytes().await.unwrap() == blob);
}

#[tokio::test]
async fn an_out_of_order_chunk_is_416_and_the_session_survives() {
    let (_d, _r, reg) = start();
    let blob = PseudoRandom::bytes(4, 2000);
    let location = reg.start_upload("r").await;
    let response = reg.patch_chunk(&location, 0, &blob[..1000]).await;
    let location = header(&response, "location");
    let response = reg.patch_chunk(&location, 1500, &blob[1500..]).await;
    assert_eq!(response.status(), 416);
    assert_eq!(header(&response, "range"), "0-999");
    let status = reg.get(&location).await;
    assert_eq!(status.status(), 204);
    assert_eq!(header(&status, "range"), "0-999");
    let response = reg.patch_chunk(&location, 1000, &blob[1000..]).await;
    assert_eq!(response.status(), 202);
    let response = reg.finish_upload(&header(&response, "location"), &sha256(&blob), &[]).await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn a_chunk_sent_to_a_stale_location_is_416_not_merged() {
    let (_d, _r, reg) = start();
    let first = reg.start_upload("r").await;
    let response = reg.http.patch(reg.at(&first)).body(vec![1; 100]).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let response = reg.http.patch(reg.at(&first)).body(vec![2; 100]).send().await.unwrap();
    assert_eq!(response.status(), 416);
    assert_eq!(header(&response, "range"), "0-99");
    expect_error(reg.http.patch(reg.at(&first)).body(vec![2; 100]).send().await.unwrap(), 416, "RANGE_INVALID").await;
}

#[tokio::test]
async fn upload_status_is_204_with_location_and_range() {
    let (_d, _r, reg) = start();
    let location = reg.start_upload("r").await;
    let response = reg.get(&location).await;
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "range"), "0-0");
    assert!(header(&response, "location").starts_with("/v2/r/blobs/uploads/"));
    assert!(!header(&response, "docker-upload-uuid").is_empty());
}

#[tokio::test]
async fn docker_push_sequence_post_streamed_patch_put() {
    let (_d, _r, reg) = start();
    let blob = PseudoRandom::bytes(8, 3 * 1024 * 1024);
    let digest = sha256(&blob);
    let location = reg.start_upload("r").await;
    // A streamed body: chunked transfer encoding, no Content-Length, no Content-Range.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = blob.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let response = reg
        .http
        .patch(reg.at(&location))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(header(&response, "range"), format!("0-{}", blob.len() - 1));
    let response = reg.finish_upload(&header(&response, "location"), &digest, &[]).await;
    assert_eq!(response.status(), 201);
    assert!(reg.get(&format!("/v2/r/blobs/{digest}")).await.bytes().await.unwrap() == blob);
}

#[tokio::test]
async fn containerd_push_sequence_post_then_put_with_the_body() {
    let (_d, _r, reg) = start();
    let blob = PseudoRandom::bytes(9, 100_000);
    let digest = sha256(&blob);
    let location = reg.start_upload("r").await;
    let response = reg.http.put(format!("{}&digest={digest}", reg.at(&location))).body(blob).send().await.unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn put_with_a_final_chunk_completes_the_upload() {
    let (_d, _r, reg) = start();
    let blob = PseudoRandom::bytes(10, 20_000);
    let digest = sha256(&blob);
    let location = reg.start_upload("r").await;
    let response = reg.patch_chunk(&location, 0, &blob[..10_000]).await;
    let location = header(&response, "location");
    let response = reg
        .http
        .put(format!("{}&digest={digest}", reg.at(&location)))
        .header("content-range", "10000-19999")
        .body(blob[10_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(reg.get(&format!("/v2/r/blobs/{digest}")).await.bytes().await.unwrap() == blob);
}

#[tokio::test]
async fn put_with_the_wrong_digest_is_digest_invalid_and_stores_nothing() {
    let (_d, runner, reg) = start();
    let location = reg.start_upload("r").await;
    let wrong = sha256(b"other");
    let response =
        reg.http.put(format!("{}&digest={wrong}", reg.at(&location))).body(vec![1; 5000]).send().await.unwrap();
    expect_error(response, 400, "DIGEST_INVALID").await;
    expect_error(reg.get(&format!("/v2/r/blobs/{wrong}")).await, 404, "BLOB_UNKNOWN").await;
    assert!(stored_objects(&runner.data, "uploads").is_empty(), "chunks removed");
}

#[tokio::test]
async fn delete_of_an_upload_cancels_it() {
    let (_d, runner, reg) = start();
    let location = reg.start_upload("r").await;
    let response = reg.http.patch(reg.at(&location)).body(vec![1; 100]).send().await.unwrap();
    let location = header(&response, "location");
    assert_eq!(reg.delete(&location).await.status(), 204);
    expect_error(reg.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(stored_objects(&runner.data, "uploads").is_empty());
}

#[tokio::test]
async fn unknown_upload_sessions_are_404_blob_upload_unknown() {
    let (_d, _r, reg) = start();
    expect_error(reg.get("/v2/r/blobs/uploads/0123456789abcdef0123456789abcdef").await, 404, "BLOB_UPLOAD_UNKNOWN")
        .await;
    expect_error(reg.get("/v2/r/blobs/uploads/not-a-session").await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // A session belongs to the repository it was opened in.
    let location = reg.start_upload("r").await;
    let elsewhere = location.replace("/v2/r/", "/v2/other/");
    expect_error(reg.get(&elsewhere).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn an_upload_resumes_after_the_runner_restarts() {
    let data = tempfile::tempdir().unwrap();
    let blob = PseudoRandom::bytes(11, 50_000);
    let location = {
        let runner = Runner::start(data.path());
        let reg = Registry::new(&runner);
        let location = reg.start_upload("r").await;
        let response = reg.patch_chunk(&location, 0, &blob[..25_000]).await;
        assert_eq!(response.status(), 202);
        runner.stop();
        header(&response, "location")
    };
    let runner = Runner::start(data.path());
    let reg = Registry::new(&runner);
    let status = reg.get(&location).await;
    assert_eq!(status.status(), 204);
    assert_eq!(header(&status, "range"), "0-24999");
    let response = reg.patch_chunk(&location, 25_000, &blob[25_000..]).await;
    assert_eq!(response.status(), 202);
    let response = reg.finish_upload(&header(&response, "location"), &sha256(&blob), &[]).await;
    assert_eq!(response.status(), 201);
    assert!(reg.get(&format!("/v2/r/blobs/{}", sha256(&blob))).await.bytes().await.unwrap() == blob);
}

#[tokio::test]
async fn abandoned_sessions_expire_and_their_chunks_are_removed() {
    let data = tempfile::tempdir().unwrap();
    let options = RunnerOptions { args: vec!["--var".into(), "upload_expiry_seconds=1".into()], ..Default::default() };
    let runner = Runner::start_with(data.path(), options);
    let reg = Registry::new(&runner);
    let location = reg.start_upload("r").await;
    let response = reg.http.patch(reg.at(&location)).body(vec![1; 1000]).send().await.unwrap();
    let location = header(&response, "location");
    assert!(!stored_objects(&runner.data, "uploads").is_empty());
    // Wait for the condition (the session is gone), polling, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let response = reg.get(&location).await;
        if response.status() == 404 {
            expect_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
            break;
        }
        assert!(std::time::Instant::now() < deadline, "session never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(stored_objects(&runner.data, "uploads").is_empty(), "chunks removed");
}

#[tokio::test]
async fn cross_repository_mount_with_from_is_201() {
    let (_d, _r, reg) = start();
    let digest = reg.push_blob("source", b"shared layer").await;
    let response =
        reg.http.post(reg.at(&format!("/v2/target/blobs/uploads/?mount={digest}&from=source"))).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "location"), format!("/v2/target/blobs/{digest}"));
    assert_eq!(header(&response, "docker-content-digest"), digest);
    assert_eq!(reg.get(&format!("/v2/target/blobs/{digest}")).await.status(), 200);
}

#[tokio::test]
async fn mount_without_from_finds_the_blob_anywhere() {
    let (_d, _r, reg) = start();
    let digest = reg.push_blob("source", b"discoverable").await;
    let response = reg.http.post(reg.at(&format!("/v2/target/blobs/uploads/?mount={digest}"))).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(reg.get(&format!("/v2/target/blobs/{digest}")).await.status(), 200);
}

#[tokio::test]
async fn mount_of_a_blob_not_in_from_opens_a_session() {
    let (_d, _r, reg) = start();
    let digest = reg.push_blob("source", b"here").await;
    for query in [format!("mount={digest}&from=elsewhere"), format!("mount={}", sha256(b"nowhere"))] {
        let response = reg.http.post(reg.at(&format!("/v2/target/blobs/uploads/?{query}"))).send().await.unwrap();
        assert_eq!(response.status(), 202, "{query}");
        assert!(header(&response, "location").starts_with("/v2/target/blobs/uploads/"));
    }
    expect_error(reg.get(&format!("/v2/target/blobs/{digest}")).await, 404, "BLOB_UNKNOWN").await;
}

// ---- manifests ------------------------------------------------------------------------------

#[tokio::test]
async fn a_manifest_pulls_by_tag_and_digest_with_exact_bytes_and_headers() {
    let (_d, _r, reg) = start();
    let (bytes, digest) = reg.push_image("app", "v1", 1).await;
    for reference in ["v1", digest.as_str()] {
        let response = reg.get(&format!("/v2/app/manifests/{reference}")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&response, "docker-content-digest"), digest);
        assert_eq!(header(&response, "content-length"), bytes.len().to_string());
        assert!(response.bytes().await.unwrap() == bytes);
        let head = reg.head(&format!("/v2/app/manifests/{reference}")).await;
        assert_eq!(head.status(), 200);
        assert_eq!(header(&head, "docker-content-digest"), digest);
        assert_eq!(header(&head, "content-length"), bytes.len().to_string());
    }
}

#[tokio::test]
async fn manifest_put_answers_201_with_location_and_digest() {
    let (_d, _r, reg) = start();
    let config = reg.push_blob("app", b"{}").await;
    let manifest = image_manifest(&[(OCI_CONFIG, &config, 2)], &[], "");
    let response = reg.put_manifest("app", "latest", OCI_MANIFEST, &manifest).await;
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "docker-content-digest"), sha256(&manifest));
    assert_eq!(header(&response, "location"), format!("/v2/app/manifests/{}", sha256(&manifest)));
    // By digest too.
    let response = reg.put_manifest("app", &sha256(&manifest), OCI_MANIFEST, &manifest).await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn a_manifest_put_by_a_digest_it_does_not_have_is_400() {
    let (_d, _r, reg) = start();
    let config = reg.push_blob("app", b"{}").await;
    let manifest = image_manifest(&[(OCI_CONFIG, &config, 2)], &[], "");
    expect_error(reg.put_manifest("app", &sha256(b"other"), OCI_MANIFEST, &manifest).await, 400, "DIGEST_INVALID")
        .await;
}

#[tokio::test]
async fn a_manifest_referencing_a_missing_blob_is_manifest_blob_unknown() {
    let (_d, _r, reg) = start();
    let config = reg.push_blob("app", b"{}").await;
    let layer_elsewhere = reg.push_blob("other", b"layer").await;
    let manifest = image_manifest(&[(OCI_CONFIG, &config, 2)], &[(OCI_LAYER, &layer_elsewhere, 5)], "");
    expect_error(reg.put_manifest("app", "t", OCI_MANIFEST, &manifest).await, 400, "MANIFEST_BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn an_invalid_manifest_is_manifest_invalid() {
    let (_d, _r, reg) = start();
    for body in [&b"not json"[..], br#"{"schemaVersion":2}"#, br#"{"schemaVersion":1,"name":"x"}"#] {
        expect_error(reg.put_manifest("app", "t", OCI_MANIFEST, body).await, 400, "MANIFEST_INVALID").await;
    }
}

#[tokio::test]
async fn manifests_up_to_4_mib_are_accepted_and_larger_ones_are_413() {
    let (_d, _r, reg) = start();
    let config = reg.push_blob("app", b"{}").await;
    let base = image_manifest(&[(OCI_CONFIG, &config, 2)], &[], r#","annotations":{"pad":"PAD"}"#);
    let fill = |target: usize| {
        String::from_utf8(base.clone()).unwrap().replace("PAD", &"x".repeat(target - base.len() + 3)).into_bytes()
    };
    let exactly = fill(4 * 1024 * 1024);
    assert_eq!(exactly.len(), 4 * 1024 * 1024);
    assert_eq!(reg.put_manifest("app", "big", OCI_MANIFEST, &exactly).await.status(), 201);
    let over = fill(4 * 1024 * 1024 + 1);
    expect_error(reg.put_manifest("app", "bigger", OCI_MANIFEST, &over).await, 413, "SIZE_INVALID").await;
}

#[tokio::test]
async fn a_manifest_with_a_missing_subject_is_accepted_with_oci_subject() {
    let (_d, _r, reg) = start();
    let config = reg.push_blob("app", b"{}").await;
    let subject = sha256(b"a manifest not pushed yet");
    let manifest = image_manifest(
        &[(OCI_EMPTY, &config, 2)],
        &[],
        &format!(
            r#","artifactType":"application/x.sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":10}}"#
        ),
    );
    let response = reg.put_manifest("app", &sha256(&manifest), OCI_MANIFEST, &manifest).await;
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "oci-subject"), subject);
}

#[tokio::test]
async fn an_index_may_reference_child_manifests_not_in_the_repository() {
    // distribution-spec main allows sparse indexes (a mirror of some platforms only): the index
    // is stored, and its missing child is simply unknown.
    let (_d, _r, reg) = start();
    let (amd, amd_digest) = reg.push_image("app", "amd64", 1).await;
    let index = |digests: &[(&str, usize)]| {
        let entries: Vec<String> = digests
            .iter()
            .map(|(d, s)| format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{s}}}"#))
            .collect();
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#, entries.join(",")).into_bytes()
    };
    let missing = sha256(b"not a manifest here");
    let sparse = index(&[(&amd_digest, amd.len()), (&missing, 5)]);
    assert_eq!(reg.put_manifest("app", "multi", OCI_INDEX, &sparse).await.status(), 201);
    let response = reg.get("/v2/app/manifests/multi").await;
    assert_eq!(header(&response, "content-type"), OCI_INDEX);
    assert!(response.bytes().await.unwrap() == sparse);
    expect_error(reg.get(&format!("/v2/app/manifests/{missing}")).await, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn unknown_manifests_are_404_manifest_unknown() {
    let (_d, _r, reg) = start();
    expect_error(reg.get("/v2/app/manifests/nope").await, 404, "MANIFEST_UNKNOWN").await;
    expect_error(reg.get(&format!("/v2/app/manifests/{}", sha256(b"x"))).await, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(reg.head("/v2/app/manifests/nope").await.status(), 404);
}

// ---- discovery ------------------------------------------------------------------------------

async fn tags(reg: &Registry, query: &str) -> (Vec<String>, Option<String>) {
    let response = reg.get(&format!("/v2/app/tags/list{query}")).await;
    assert_eq!(response.status(), 200, "{query}");
    let link = response.headers().get("link").map(|l| l.to_str().unwrap().to_owned());
    let body: serde_json::Value = response.json_value().await;
    assert_eq!(body["name"], "app");
    (body["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect(), link)
}

trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

#[tokio::test]
async fn tags_list_in_lexical_order_with_pagination() {
    let (_d, _r, reg) = start();
    let (manifest, _) = reg.push_image("app", "c", 1).await;
    for tag in ["a", "B", "b1", "d"] {
        assert_eq!(reg.put_manifest("app", tag, OCI_MANIFEST, &manifest).await.status(), 201);
    }
    assert_eq!(tags(&reg, "").await, (vec!["B".into(), "a".into(), "b1".into(), "c".into(), "d".into()], None));
    let (page, link) = tags(&reg, "?n=2").await;
    assert_eq!(page, ["B", "a"]);
    assert_eq!(link.as_deref(), Some(r#"</v2/app/tags/list?n=2&last=a>; rel="next""#));
    let (page, link) = tags(&reg, "?n=2&last=a").await;
    assert_eq!(page, ["b1", "c"]);
    assert!(link.is_some());
    assert_eq!(tags(&reg, "?n=2&last=c").await, (vec!["d".into()], None));
    assert_eq!(tags(&reg, "?n=0").await, (vec![], None), "n=0: empty, no Link");
    assert_eq!(tags(&reg, "?last=zzz").await, (vec![], None), "last past the end");
    assert_eq!(tags(&reg, "?n=5").await.1, None, "exactly one page: no Link");
    expect_error(reg.get("/v2/app/tags/list?n=-1").await, 400, "PAGINATION_NUMBER_INVALID").await;
}

#[tokio::test]
async fn tags_of_an_unknown_repository_are_name_unknown() {
    let (_d, _r, reg) = start();
    expect_error(reg.get("/v2/nothing/tags/list").await, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn catalog_lists_repositories_with_pagination() {
    let (_d, _r, reg) = start();
    for repo in ["b/x", "a", "c", "b"] {
        reg.push_image(repo, "t", 1).await;
    }
    let body = reg.get("/v2/_catalog").await.json_value().await;
    assert_eq!(body["repositories"], serde_json::json!(["a", "b", "b/x", "c"]));
    let response = reg.get("/v2/_catalog?n=2").await;
    assert_eq!(header(&response, "link"), r#"</v2/_catalog?n=2&last=b>; rel="next""#);
    assert_eq!(response.json_value().await["repositories"], serde_json::json!(["a", "b"]));
    let body = reg.get("/v2/_catalog?n=2&last=b").await.json_value().await;
    assert_eq!(body["repositories"], serde_json::json!(["b/x", "c"]));
}

async fn push_referrer(reg: &Registry, repo: &str, subject: &str, artifact_type: &str, n: usize) -> String {
    let config = reg.push_blob(repo, b"{}").await;
    let manifest = image_manifest(
        &[(OCI_EMPTY, &config, 2)],
        &[],
        &format!(
            r#","artifactType":"{artifact_type}","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}},"annotations":{{"n":"{n}"}}"#
        ),
    );
    let digest = sha256(&manifest);
    assert_eq!(reg.put_manifest(repo, &digest, OCI_MANIFEST, &manifest).await.status(), 201);
    digest
}

#[tokio::test]
async fn referrers_list_artifacts_and_filter_by_artifact_type() {
    let (_d, _r, reg) = start();
    let (_, subject) = reg.push_image("app", "v1", 1).await;
    let sig = push_referrer(&reg, "app", &subject, "application/x.sig", 1).await;
    let sbom = push_referrer(&reg, "app", &subject, "application/x.sbom", 2).await;
    let response = reg.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), OCI_INDEX);
    assert!(response.headers().get("oci-filters-applied").is_none());
    let index = response.json_value().await;
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let entry = manifests.iter().find(|m| m["digest"] == sig.as_str()).unwrap();
    assert_eq!(entry["artifactType"], "application/x.sig");
    assert_eq!(entry["mediaType"], OCI_MANIFEST);
    assert_eq!(entry["annotations"]["n"], "1");
    assert!(entry["size"].as_u64().unwrap() > 0);

    let response = reg.get(&format!("/v2/app/referrers/{subject}?artifactType=application/x.sbom")).await;
    assert_eq!(header(&response, "oci-filters-applied"), "artifactType");
    let index = response.json_value().await;
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], sbom.as_str());
}

#[tokio::test]
async fn referrers_of_an_unknown_subject_are_an_empty_index() {
    let (_d, _r, reg) = start();
    let response = reg.get(&format!("/v2/app/referrers/{}", sha256(b"nothing"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json_value().await["manifests"], serde_json::json!([]));
    expect_error(reg.get("/v2/app/referrers/sha256:bad").await, 400, "DIGEST_INVALID").await;
}

// ---- delete ---------------------------------------------------------------------------------

#[tokio::test]
async fn deleting_a_manifest_by_digest_untags_it_and_forgets_its_referrer_entry() {
    let (_d, _r, reg) = start();
    let (_, subject) = reg.push_image("app", "base", 1).await;
    let (manifest, digest) = reg.push_image("app", "v1", 2).await;
    assert_eq!(reg.put_manifest("app", "v1-alias", OCI_MANIFEST, &manifest).await.status(), 201);
    let referrer = push_referrer(&reg, "app", &subject, "application/x.sig", 1).await;
    assert_eq!(reg.delete(&format!("/v2/app/manifests/{digest}")).await.status(), 202);
    expect_error(reg.get(&format!("/v2/app/manifests/{digest}")).await, 404, "MANIFEST_UNKNOWN").await;
    expect_error(reg.get("/v2/app/manifests/v1").await, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(tags(&reg, "").await.0, ["base"]);
    assert_eq!(reg.delete(&format!("/v2/app/manifests/{referrer}")).await.status(), 202);
    assert_eq!(
        reg.get(&format!("/v2/app/referrers/{subject}")).await.json_value().await["manifests"],
        serde_json::json!([])
    );
    expect_error(reg.delete(&format!("/v2/app/manifests/{digest}")).await, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn deleting_a_tag_only_untags() {
    let (_d, _r, reg) = start();
    let (manifest, digest) = reg.push_image("app", "v1", 1).await;
    assert_eq!(reg.put_manifest("app", "v2", OCI_MANIFEST, &manifest).await.status(), 201);
    assert_eq!(reg.delete("/v2/app/manifests/v1").await.status(), 202);
    expect_error(reg.get("/v2/app/manifests/v1").await, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(reg.get("/v2/app/manifests/v2").await.status(), 200);
    assert_eq!(reg.get(&format!("/v2/app/manifests/{digest}")).await.status(), 200);
    assert_eq!(tags(&reg, "").await.0, ["v2"]);
    expect_error(reg.delete("/v2/app/manifests/v1").await, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn deleting_a_blob_unlinks_it_from_that_repository_only() {
    let (_d, _r, reg) = start();
    let digest = reg.push_blob("a", b"shared").await;
    reg.push_blob("b", b"shared").await;
    assert_eq!(reg.delete(&format!("/v2/a/blobs/{digest}")).await.status(), 202);
    expect_error(reg.get(&format!("/v2/a/blobs/{digest}")).await, 404, "BLOB_UNKNOWN").await;
    assert_eq!(reg.get(&format!("/v2/b/blobs/{digest}")).await.status(), 200);
    expect_error(reg.delete(&format!("/v2/a/blobs/{digest}")).await, 404, "BLOB_UNKNOWN").await;
}

// ---- bad input ------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_names_tags_and_digests_are_400_with_the_right_code() {
    let (_d, _r, reg) = start();
    let long = format!("{}/{}", "a".repeat(200), "b".repeat(60));
    for (path, code) in [
        ("/v2/Bad/tags/list".to_owned(), "NAME_INVALID"),
        (format!("/v2/{long}/tags/list"), "NAME_INVALID"),
        ("/v2/a/blobs/sha256:123".to_owned(), "DIGEST_INVALID"),
        ("/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(), "DIGEST_INVALID"),
    ] {
        expect_error(reg.get(&path).await, 400, code).await;
    }
    expect_error(reg.put_manifest("a", "-bad-tag", OCI_MANIFEST, b"{}").await, 400, "TAG_INVALID").await;
    expect_error(reg.put_manifest("a", "sha256:zz", OCI_MANIFEST, b"{}").await, 400, "DIGEST_INVALID").await;
    let response = reg.http.post(reg.at("/v2/a/blobs/uploads/?digest=sha256:zz")).body("x").send().await.unwrap();
    expect_error(response, 400, "DIGEST_INVALID").await;
}

// ---- consistency without compare-and-swap ---------------------------------------------------

#[tokio::test]
async fn concurrent_tag_pushes_to_one_repository_are_all_listed() {
    let (_d, _r, reg) = start();
    let (manifest, _) = reg.push_image("app", "seed", 1).await;
    let pushes = (0..32).map(|i| {
        let (reg, manifest) = (&reg, &manifest);
        async move { reg.put_manifest("app", &format!("t{i:02}"), OCI_MANIFEST, manifest).await.status() }
    });
    assert!(futures::future::join_all(pushes).await.iter().all(|s| *s == 201));
    let mut expected: Vec<String> = (0..32).map(|i| format!("t{i:02}")).collect();
    expected.insert(0, "seed".into());
    expected.sort();
    assert_eq!(tags(&reg, "").await.0, expected);
}

#[tokio::test]
async fn concurrent_referrer_pushes_to_one_subject_are_all_listed() {
    let (_d, _r, reg) = start();
    let (_, subject) = reg.push_image("app", "v1", 1).await;
    let pushes = (0..32).map(|i| {
        let (reg, subject) = (&reg, &subject);
        async move { push_referrer(reg, "app", subject, "application/x.sig", i).await }
    });
    let mut pushed = futures::future::join_all(pushes).await;
    pushed.sort();
    let index = reg.get(&format!("/v2/app/referrers/{subject}")).await.json_value().await;
    let mut listed: Vec<String> =
        index["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned()).collect();
    listed.sort();
    assert_eq!(listed, pushed);
}

#[tokio::test]
async fn concurrent_new_repositories_are_all_in_the_catalog() {
    let (_d, _r, reg) = start();
    let pushes = (0..32).map(|i| {
        let reg = &reg;
        async move { reg.push_image(&format!("team/repo{i:02}"), "t", i).await }
    });
    futures::future::join_all(pushes).await;
    let body = reg.get("/v2/_catalog").await.json_value().await;
    let expected: Vec<String> = (0..32).map(|i| format!("team/repo{i:02}")).collect();
    assert_eq!(body["repositories"], serde_json::json!(expected));
}

// ---- memory ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_gib_streamed_docker_patch_keeps_runner_memory_bounded() {
    use sha2::Digest;
    const TOTAL: u64 = 1024 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    let generate = || {
        let mut rng = PseudoRandom::new(42);
        futures::stream::iter((0..TOTAL / CHUNK as u64).map(move |_| {
            let mut chunk = vec![0; CHUNK];
            rng.fill(&mut chunk);
            Ok::<_, std::io::Error>(chunk)
        }))
    };
    let mut hasher = sha2::Sha256::new();
    generate()
        .for_each(|c| {
            hasher.update(c.unwrap());
            async {}
        })
        .await;
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let (_d, runner, reg) = start();
    let location = reg.start_upload("big").await;
    let response = reg.http.patch(reg.at(&location)).body(reqwest::Body::wrap_stream(generate())).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let response = reg.finish_upload(&header(&response, "location"), &digest, &[]).await;
    assert_eq!(response.status(), 201);
    let peak = runner.peak_rss();
    println!("runner peak RSS during a 1 GiB streamed PATCH: {} MiB", peak >> 20);
    assert!(peak < 256 * 1024 * 1024, "peak RSS {} MiB", peak >> 20);
    let head = reg.head(&format!("/v2/big/blobs/{digest}")).await;
    assert_eq!(header(&head, "content-length"), TOTAL.to_string());
}
