//! The newest distribution-spec features and bounded responses, one test per rule, against the
//! real component through the runner over HTTP: manifest PUT with `?tag=` (and `OCI-Tag`),
//! sparse indexes, `Docker-Content-Digest` everywhere, upload cancel, paged referrers, and the
//! bound on `n`.

mod common;

use common::*;
use sha2::Digest as _;

/// The most entries one listing page holds (`src/api/listing.rs`).
const MAX_ENTRIES: usize = 1000;
/// The most `?tag=` parameters one manifest PUT may carry (`src/api/manifests.rs`).
const MAX_TAGS_PER_PUT: usize = 64;

fn start() -> (tempfile::TempDir, Runner, Registry) {
    let data = tempfile::tempdir().unwrap();
    let runner = Runner::start(data.path());
    let registry = Registry::new(&runner);
    (data, runner, registry)
}

fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

/// Every value of a response header, in order.
fn header_values(response: &reqwest::Response, name: &str) -> Vec<String> {
    response.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// The `Link` header, if any.
fn link(response: &reqwest::Response) -> Option<String> {
    response.headers().get("link").map(|l| l.to_str().unwrap().to_owned())
}

/// The URL inside `<...>; rel="next"`.
fn link_target(link: &str) -> String {
    let target = link.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\"")).map(|(t, _)| t);
    target.unwrap_or_else(|| panic!("not a next link: {link}")).to_owned()
}

/// An image manifest over a config and one layer pushed to `repo` (not the manifest itself).
async fn image(reg: &Registry, repo: &str, seed: u64) -> Vec<u8> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layer = PseudoRandom::bytes(seed, 500 + seed as usize);
    let config_digest = reg.push_blob(repo, &config).await;
    let layer_digest = reg.push_blob(repo, &layer).await;
    image_manifest(&[(OCI_CONFIG, &config_digest, config.len())], &[(OCI_LAYER, &layer_digest, layer.len())], "")
}

/// `PUT /v2/<repo>/manifests/<reference>?tag=...` with one `tag` parameter per tag.
async fn put_with_tags(reg: &Registry, repo: &str, reference: &str, tags: &[&str], bytes: &[u8]) -> reqwest::Response {
    let query: Vec<String> = tags.iter().map(|t| format!("tag={t}")).collect();
    let path = format!("/v2/{repo}/manifests/{reference}?{}", query.join("&"));
    reg.http.put(reg.at(&path)).header("content-type", OCI_MANIFEST).body(bytes.to_vec()).send().await.unwrap()
}

async fn expect_manifest(reg: &Registry, repo: &str, reference: &str, digest: &str, bytes: &[u8]) {
    let response = reg.get(&format!("/v2/{repo}/manifests/{reference}")).await;
    assert_eq!(response.status(), 200, "{repo}:{reference}");
    assert_eq!(header(&response, "docker-content-digest"), digest, "{repo}:{reference}");
    assert!(response.bytes().await.unwrap() == bytes, "{repo}:{reference}: the exact bytes pushed");
}

async fn tag_list(reg: &Registry, path: &str) -> (Vec<String>, Option<String>) {
    let response = reg.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    let next = link(&response);
    let body = json(response).await;
    (body["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect(), next)
}

// ---- manifest PUT with ?tag= ----------------------------------------------------------------

#[tokio::test]
async fn a_manifest_put_by_digest_with_two_tag_parameters_applies_both_and_answers_oci_tag_headers() {
    let (_d, _r, reg) = start();
    let manifest = image(&reg, "app", 1).await;
    let digest = sha256(&manifest);
    let response = put_with_tags(&reg, "app", &digest, &["v1", "latest"], &manifest).await;
    assert_eq!(response.status(), 201);
    assert_eq!(header_values(&response, "oci-tag"), ["v1", "latest"]);
    assert_eq!(header(&response, "docker-content-digest"), digest);
    assert_eq!(header(&response, "location"), format!("/v2/app/manifests/{digest}"));
    for reference in ["v1", "latest", digest.as_str()] {
        expect_manifest(&reg, "app", reference, &digest, &manifest).await;
    }
    assert_eq!(tag_list(&reg, "/v2/app/tags/list").await, (vec!["latest".into(), "v1".into()], None));
}

#[tokio::test]
async fn a_sha512_manifest_put_with_tag_parameters_is_tagged() {
    let (_d, _r, reg) = start();
    let manifest = image(&reg, "app", 2).await;
    let digest = sha512(&manifest);
    let response = put_with_tags(&reg, "app", &digest, &["a", "b"], &manifest).await;
    assert_eq!(response.status(), 201);
    assert_eq!(header_values(&response, "oci-tag"), ["a", "b"]);
    assert_eq!(header(&response, "docker-content-digest"), digest);
    for reference in ["a", "b", digest.as_str()] {
        expect_manifest(&reg, "app", reference, &digest, &manifest).await;
    }
}

#[tokio::test]
async fn a_tag_parameter_moves_an_existing_tag_like_a_tag_put() {
    let (_d, _r, reg) = start();
    let (_, old) = reg.push_image("app", "stable", 3).await;
    let manifest = image(&reg, "app", 4).await;
    let digest = sha256(&manifest);
    assert_ne!(old, digest);
    assert_eq!(put_with_tags(&reg, "app", &digest, &["stable"], &manifest).await.status(), 201);
    expect_manifest(&reg, "app", "stable", &digest, &manifest).await;
}

#[tokio::test]
async fn a_repeated_tag_parameter_is_applied_and_answered_once() {
    let (_d, _r, reg) = start();
    let manifest = image(&reg, "app", 5).await;
    let response = put_with_tags(&reg, "app", &sha256(&manifest), &["v1", "v1"], &manifest).await;
    assert_eq!(response.status(), 201);
    assert_eq!(header_values(&response, "oci-tag"), ["v1"]);
}

#[tokio::test]
async fn a_manifest_put_without_tag_parameters_answers_no_oci_tag() {
    let (_d, _r, reg) = start();
    let manifest = image(&reg, "app", 6).await;
    for reference in ["v1".to_owned(), sha256(&manifest)] {
        let response = reg.put_manifest("app", &reference, OCI_MANIFEST, &manifest).await;
        assert_eq!(response.status(), 201);
        assert!(response.headers().get("oci-tag").is_none(), "PUT {reference}");
    }
}

#[tokio::test]
async fn a_tag_parameter_with_a_tag_reference_in_the_path_is_refused() {
    let (_d, _r, reg) = start();
    let manifest = image(&reg, "app", 7).await;
    expect_error(put_with_tags(&reg, "app", "v1", &["v2"], &manifest).await, 400, "TAG_INVALID").await;
    // Nothing was stored: neither tag, nor the manifest.
    for reference in ["v1".to_owned(), "v2".to_owned(), sha256(&manifest)] {
        expect_error(reg.get(&format!("/v2/app/manifests/{reference}")).await, 404, "MANIFEST_UNKNOWN").await;
    }
}

#[tokio::test]
async fn an_invalid_tag_parameter_is_tag_invalid() {
    let (_d, _r, reg) = start();
    let manifest = image(&reg, "app", 8).await;
    let digest = sha256(&manifest);
    let too_long = "t".repeat(129);
    for bad in ["-leading-dash", ".dot", "a%2Fb", "", too_long.as_str()] {
        let response = put_with_tags(&reg, "app", &digest, &["good", bad], &manifest).await;
        expect_error(response, 400, "TAG_INVALID").await;
    }
    // Checked before anything is stored: the valid tag beside it was not applied either.
    expect_error(reg.get("/v2/app/manifests/good").await, 404, "MANIFEST_UNKNOWN").await;
    expect_error(reg.get(&format!("/v2/app/manifests/{digest}")).await, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn more_tag_parameters_than_the_bound_are_tag_invalid() {
    let (_d, _r, reg) = start();
    let manifest = image(&reg, "app", 9).await;
    let tags: Vec<String> = (0..=MAX_TAGS_PER_PUT).map(|i| format!("t{i:04}")).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    expect_error(put_with_tags(&reg, "app", &sha256(&manifest), &tags, &manifest).await, 400, "TAG_INVALID").await;
    expect_error(reg.get("/v2/app/manifests/t0000").await, 404, "MANIFEST_UNKNOWN").await;
    let response = put_with_tags(&reg, "app", &sha256(&manifest), &tags[..MAX_TAGS_PER_PUT], &manifest).await;
    assert_eq!(response.status(), 201, "as many as the bound");
    assert_eq!(header_values(&response, "oci-tag"), tags[..MAX_TAGS_PER_PUT]);
}

// ---- sparse indexes -------------------------------------------------------------------------

fn index(children: &[(&str, usize)]) -> Vec<u8> {
    let entries: Vec<String> = children
        .iter()
        .map(|(digest, size)| format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{size}}}"#))
        .collect();
    format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#, entries.join(",")).into_bytes()
}

#[tokio::test]
async fn a_sparse_index_is_accepted_and_its_missing_child_is_manifest_unknown() {
    let (_d, _r, reg) = start();
    let (amd64, amd64_digest) = reg.push_image("mirror", "amd64", 1).await;
    let arm64_digest = sha256(b"the arm64 manifest, not mirrored");
    let sparse = index(&[(&amd64_digest, amd64.len()), (&arm64_digest, 1234)]);
    let response = reg.put_manifest("mirror", "multi", OCI_INDEX, &sparse).await;
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "docker-content-digest"), sha256(&sparse));
    let response = reg.get("/v2/mirror/manifests/multi").await;
    assert_eq!(header(&response, "content-type"), OCI_INDEX);
    assert!(response.bytes().await.unwrap() == sparse);
    expect_manifest(&reg, "mirror", &amd64_digest, &amd64_digest, &amd64).await;
    expect_error(reg.get(&format!("/v2/mirror/manifests/{arm64_digest}")).await, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(reg.head(&format!("/v2/mirror/manifests/{arm64_digest}")).await.status(), 404);
}

#[tokio::test]
async fn an_index_of_no_child_in_the_repository_is_accepted_and_its_children_may_come_later() {
    let (_d, _r, reg) = start();
    let manifest = image(&reg, "mirror", 2).await;
    let child = sha256(&manifest);
    let sparse = index(&[(&child, manifest.len())]);
    assert_eq!(reg.put_manifest("mirror", &sha256(&sparse), OCI_INDEX, &sparse).await.status(), 201);
    expect_error(reg.get(&format!("/v2/mirror/manifests/{child}")).await, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(reg.put_manifest("mirror", &child, OCI_MANIFEST, &manifest).await.status(), 201);
    expect_manifest(&reg, "mirror", &child, &child, &manifest).await;
}

#[tokio::test]
async fn an_index_with_an_invalid_child_digest_is_still_manifest_invalid() {
    let (_d, _r, reg) = start();
    let bad = index(&[("sha256:not-hex", 10)]);
    expect_error(reg.put_manifest("mirror", "multi", OCI_INDEX, &bad).await, 400, "MANIFEST_INVALID").await;
}

// ---- Docker-Content-Digest ------------------------------------------------------------------

/// The response has `status` and `Docker-Content-Digest: <digest>`.
fn expect_digest(response: &reqwest::Response, status: u16, digest: &str, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    assert_eq!(header(response, "docker-content-digest"), digest, "{what}");
}

#[tokio::test]
async fn every_blob_and_manifest_response_carries_docker_content_digest() {
    let (_d, _r, reg) = start();
    for (algorithm, hash) in [("sha256", sha256 as fn(&[u8]) -> String), ("sha512", sha512)] {
        let blob = PseudoRandom::bytes(11, 3000);
        let digest = hash(&blob);
        // Monolithic POST.
        let post = reg
            .http
            .post(reg.at(&format!("/v2/src/blobs/uploads/?digest={digest}")))
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        expect_digest(&post, 201, &digest, &format!("{algorithm} monolithic POST"));
        // POST, PATCH, PUT.
        let other = PseudoRandom::bytes(12, 2000);
        let other_digest = hash(&other);
        let location = reg.start_upload("src").await;
        let patch = reg.patch_chunk(&location, 0, &other[..1000]).await;
        let put = reg.finish_upload(&header(&patch, "location"), &other_digest, &other[1000..]).await;
        expect_digest(&put, 201, &other_digest, &format!("{algorithm} upload finish"));
        // Mount.
        let mount =
            reg.http.post(reg.at(&format!("/v2/dst/blobs/uploads/?mount={digest}&from=src"))).send().await.unwrap();
        expect_digest(&mount, 201, &digest, &format!("{algorithm} mount"));
        // HEAD, GET, ranged GET.
        for repo in ["src", "dst"] {
            let path = format!("/v2/{repo}/blobs/{digest}");
            expect_digest(&reg.head(&path).await, 200, &digest, &format!("{algorithm} blob HEAD in {repo}"));
            expect_digest(&reg.get(&path).await, 200, &digest, &format!("{algorithm} blob GET in {repo}"));
            let ranged = reg.http.get(reg.at(&path)).header("range", "bytes=10-19").send().await.unwrap();
            expect_digest(&ranged, 206, &digest, &format!("{algorithm} ranged blob GET in {repo}"));
        }
        // Manifests: PUT by tag and by digest, GET and HEAD by both.
        let manifest = image(&reg, "src", if algorithm == "sha256" { 13 } else { 14 }).await;
        let manifest_digest = hash(&manifest);
        let tag = format!("{algorithm}-tag");
        if algorithm == "sha256" {
            let put = reg.put_manifest("src", &tag, OCI_MANIFEST, &manifest).await;
            expect_digest(&put, 201, &manifest_digest, "manifest PUT by tag");
        } else {
            // A tag PUT hashes with sha256: a sha512 manifest is pushed by digest, tagged by ?tag=.
            let put = put_with_tags(&reg, "src", &manifest_digest, &[&tag], &manifest).await;
            expect_digest(&put, 201, &manifest_digest, "sha512 manifest PUT with ?tag=");
        }
        let put = reg.put_manifest("src", &manifest_digest, OCI_MANIFEST, &manifest).await;
        expect_digest(&put, 201, &manifest_digest, &format!("{algorithm} manifest PUT by digest"));
        for reference in [tag.as_str(), manifest_digest.as_str()] {
            let path = format!("/v2/src/manifests/{reference}");
            expect_digest(&reg.get(&path).await, 200, &manifest_digest, &format!("manifest GET {reference}"));
            expect_digest(&reg.head(&path).await, 200, &manifest_digest, &format!("manifest HEAD {reference}"));
        }
    }
}

// ---- upload cancel --------------------------------------------------------------------------

#[tokio::test]
async fn an_upload_cancel_is_204_and_the_session_is_gone_for_every_method() {
    let (_d, runner, reg) = start();
    let location = reg.start_upload("app").await;
    let patch = reg.patch_chunk(&location, 0, &[7; 100]).await;
    assert_eq!(patch.status(), 202);
    let location = header(&patch, "location");
    let cancel = reg.delete(&location).await;
    assert_eq!(cancel.status(), 204);
    expect_error(reg.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(reg.patch_chunk(&location, 100, &[7; 10]).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(reg.finish_upload(&location, &sha256(&[7; 100]), &[]).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(reg.delete(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(stored_objects(&runner.data, "uploads").is_empty(), "the chunk is removed");
}

// ---- referrers pagination -------------------------------------------------------------------

/// An artifact in `repo` whose subject is `subject`; `pad` bytes of annotation make it large.
async fn push_referrer(reg: &Registry, repo: &str, subject: &str, artifact_type: &str, n: usize, pad: usize) -> String {
    let config = reg.push_blob(repo, b"{}").await;
    let manifest = image_manifest(
        &[(OCI_EMPTY, &config, 2)],
        &[],
        &format!(
            r#","artifactType":"{artifact_type}","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}},"annotations":{{"n":"{n}","pad":"{}"}}"#,
            "p".repeat(pad)
        ),
    );
    let digest = sha256(&manifest);
    assert_eq!(reg.put_manifest(repo, &digest, OCI_MANIFEST, &manifest).await.status(), 201);
    digest
}

/// Follow a referrers listing from `path` through its `Link`s: each page's digests, and the
/// page's `OCI-Filters-Applied`.
async fn referrer_pages(reg: &Registry, path: &str) -> Vec<(Vec<String>, Option<String>)> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(path) = next {
        let response = reg.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), OCI_INDEX);
        let filters = response.headers().get("oci-filters-applied").map(|f| f.to_str().unwrap().to_owned());
        next = link(&response).map(|l| link_target(&l));
        let body = json(response).await;
        let digests = body["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned());
        pages.push((digests.collect(), filters));
        assert!(pages.len() <= 10, "the listing never ends");
    }
    pages
}

#[tokio::test]
async fn referrers_pages_with_n_and_a_link_header() {
    let (_d, _r, reg) = start();
    let (_, subject) = reg.push_image("app", "v1", 1).await;
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(push_referrer(&reg, "app", &subject, "application/x.sig", i, 0).await);
    }
    all.sort();
    let first = reg.get(&format!("/v2/app/referrers/{subject}?n=2")).await;
    let expected_link = format!(r#"</v2/app/referrers/{subject}?n=2&last={}>; rel="next""#, all[1].replace(':', "%3A"));
    assert_eq!(link(&first).as_deref(), Some(expected_link.as_str()));
    let pages = referrer_pages(&reg, &format!("/v2/app/referrers/{subject}?n=2")).await;
    let digests: Vec<Vec<String>> = pages.into_iter().map(|(digests, _)| digests).collect();
    assert_eq!(digests, [all[0..2].to_vec(), all[2..4].to_vec(), all[4..].to_vec()], "in order, each once");
    let response = reg.get(&format!("/v2/app/referrers/{subject}?n=0")).await;
    assert!(link(&response).is_none(), "n=0: no Link");
    assert_eq!(json(response).await["manifests"], serde_json::json!([]));
    let response = reg.get(&format!("/v2/app/referrers/{subject}?n=5")).await;
    assert!(link(&response).is_none(), "exactly one page: no Link");
}

#[tokio::test]
async fn a_filtered_referrers_link_keeps_the_filter() {
    let (_d, _r, reg) = start();
    let (_, subject) = reg.push_image("app", "v1", 1).await;
    let mut sboms = Vec::new();
    for i in 0..6 {
        let artifact_type = if i % 2 == 0 { "application/x.sbom" } else { "application/x.sig" };
        let digest = push_referrer(&reg, "app", &subject, artifact_type, i, 0).await;
        if i % 2 == 0 {
            sboms.push(digest);
        }
    }
    sboms.sort();
    let pages = referrer_pages(&reg, &format!("/v2/app/referrers/{subject}?n=2&artifactType=application/x.sbom")).await;
    assert_eq!(pages.len(), 2);
    assert!(pages.iter().all(|(_, filters)| filters.as_deref() == Some("artifactType")), "{pages:?}");
    let listed: Vec<String> = pages.into_iter().flat_map(|(digests, _)| digests).collect();
    assert_eq!(listed, sboms);
}

#[tokio::test]
async fn a_referrers_page_stays_under_the_manifest_size_limit() {
    let (_d, _r, reg) = start();
    let (_, subject) = reg.push_image("app", "v1", 1).await;
    let mut all = Vec::new();
    for i in 0..2 {
        all.push(push_referrer(&reg, "app", &subject, "application/x.sbom", i, 2_500_000).await);
    }
    all.sort();
    let response = reg.get(&format!("/v2/app/referrers/{subject}")).await;
    let length: usize = header(&response, "content-length").parse().unwrap();
    assert!(length <= 4 * 1024 * 1024, "a page of {length} bytes");
    let pages = referrer_pages(&reg, &format!("/v2/app/referrers/{subject}")).await;
    let digests: Vec<Vec<String>> = pages.into_iter().map(|(digests, _)| digests).collect();
    assert_eq!(digests, [vec![all[0].clone()], vec![all[1].clone()]]);
}

#[tokio::test]
async fn a_referrers_n_that_is_not_a_count_is_pagination_number_invalid() {
    let (_d, _r, reg) = start();
    let subject = sha256(b"subject");
    for n in ["-1", "x", "1.5"] {
        let response = reg.get(&format!("/v2/app/referrers/{subject}?n={n}")).await;
        expect_error(response, 400, "PAGINATION_NUMBER_INVALID").await;
    }
}

// ---- bounded listings -----------------------------------------------------------------------

/// A repository `app` with `MAX_ENTRIES + 1` tags (`t0000`...), all on one manifest: set by
/// manifest PUTs with `?tag=`, as many tags each as one request may carry.
async fn many_tags(reg: &Registry) -> Vec<String> {
    let manifest = image(reg, "app", 1).await;
    let digest = sha256(&manifest);
    let tags: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("t{i:04}")).collect();
    for chunk in tags.chunks(MAX_TAGS_PER_PUT) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let response = put_with_tags(reg, "app", &digest, &chunk, &manifest).await;
        assert_eq!(response.status(), 201);
        assert_eq!(header_values(&response, "oci-tag").len(), chunk.len());
    }
    tags
}

#[tokio::test]
async fn n_above_the_maximum_is_clamped() {
    let (_d, _r, reg) = start();
    let tags = many_tags(&reg).await;
    let (page, next) = tag_list(&reg, "/v2/app/tags/list?n=5000").await;
    assert_eq!(page, tags[..MAX_ENTRIES]);
    let last = &tags[MAX_ENTRIES - 1];
    assert_eq!(
        next.as_deref(),
        Some(format!(r#"</v2/app/tags/list?n={MAX_ENTRIES}&last={last}>; rel="next""#).as_str())
    );
    let (page, next) = tag_list(&reg, &link_target(&next.unwrap())).await;
    assert_eq!((page, next), (tags[MAX_ENTRIES..].to_vec(), None));
}

#[tokio::test]
async fn a_listing_without_n_is_paged_at_the_maximum() {
    let (_d, _r, reg) = start();
    let tags = many_tags(&reg).await;
    let (page, next) = tag_list(&reg, "/v2/app/tags/list").await;
    assert_eq!(page, tags[..MAX_ENTRIES]);
    let (page, next) = tag_list(&reg, &link_target(&next.expect("a Link to the rest"))).await;
    assert_eq!((page, next), (tags[MAX_ENTRIES..].to_vec(), None));
}
