//! Retention rules (the `retention` variable): per repository pattern, which tags to keep and
//! how long an untagged manifest stays. Applied by garbage collection's repository phase
//! (`crate::lifecycle::gc`), one repository at a time; a dry run shows the plan.
//!
//! A rule is `<repository-glob> [keep_last=N] [keep_tags=<glob>,...] [untagged_after=<age>]`;
//! rules are separated by newlines or `;`, and the first whose glob matches a repository applies.
//! - `keep_last=N`: of the tags no `keep_tags` glob matches, keep the N pushed last; untag the
//!   others. Without it, no tag is removed.
//! - `keep_tags`: tags kept whatever their age (immutable tags are always kept).
//! - `untagged_after`: a manifest that nothing kept reaches, and that was created longer ago
//!   than this (`30d`, `12h`, `90m`, `600s`), is deleted. Without it, no manifest is deleted.
//!
//! Kept means reachable from a kept tag, or from a manifest younger than `untagged_after`: the
//! children of a kept index and the referrers of a kept manifest (signatures, SBOMs) are kept,
//! transitively. A manifest is deleted by the claim garbage collection uses for blobs: marked
//! condemned by compare-and-swap, reachability computed again (every tag read after the mark),
//! then swapped to removed; a push that tags it or names it as a child writes that first and
//! then takes the mark off (`hold_manifest`), so a kept manifest is never deleted.

use crate::registry::manifests::{self, ManifestRecord, TagTarget};
use crate::registry::store::{BlobStore, MetaStore, ObjectPages, Stores, internal};
use crate::registry::{blobs, keys};
use crate::wire::digest::Digest;
use crate::wire::errcode::RegistryError;
use crate::wire::name::{RepoName, Tag};
use std::collections::{BTreeMap, BTreeSet};

use crate::config::retention::Rule;
use crate::wire::glob::glob_match;

type Result<T> = std::result::Result<T, RegistryError>;

/// What a rule would do to one repository now.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Tags to remove, each with the exact value read (removed only if it still holds it).
    pub untag: Vec<(Tag, Vec<u8>)>,
    /// Manifests to delete, with their records as read.
    pub delete: Vec<(Digest, ManifestRecord, Vec<u8>)>,
}

/// A repository's tags that resolve, with the exact values stored.
async fn tags<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
) -> Result<Vec<(Tag, TagTarget, Vec<u8>)>> {
    let prefix = keys::tags_prefix(name);
    let mut found = Vec::new();
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in objects {
            let Ok(tag) = Tag::parse(&object[prefix.len()..]) else { continue };
            let Some((target, bytes)) = manifests::tag_value(stores, name, &tag).await? else { continue };
            if manifests::record(stores, name, &target.digest).await?.is_some_and(|r| target.names(&r)) {
                found.push((tag, target, bytes));
            }
        }
    }
    Ok(found)
}

/// The repository's manifests, with their records and exact bytes.
async fn manifest_records<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
) -> Result<BTreeMap<Digest, (ManifestRecord, Vec<u8>)>> {
    let prefix = keys::manifests_prefix(name);
    let mut found = BTreeMap::new();
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in objects {
            let Some(digest) = keys::parse_referrer_entry_name(&object[prefix.len()..]) else { continue };
            if let Some(stored) = manifests::stored(stores, name, &digest).await? {
                found.insert(digest, stored);
            }
        }
    }
    Ok(found)
}

/// Which tags a rule keeps (by name).
fn kept_tags<M, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    rule: &Rule,
    tags: &[(Tag, TagTarget, Vec<u8>)],
) -> BTreeSet<Tag> {
    let mut kept = BTreeSet::new();
    let mut ranked = Vec::new();
    for (tag, target, _) in tags {
        let pinned = rule.keep_tags.iter().any(|g| glob_match(g, tag.as_str()))
            || stores.config.immutable_tags.rule_for(name, tag).is_some();
        if pinned || rule.keep_last.is_none() {
            kept.insert(tag.clone());
        } else {
            ranked.push((target.push_order(), tag.clone()));
        }
    }
    // The most recently pushed first (pushes of one second by the repository's push counter);
    // ties (tags from before the counter) by name, so a plan is the same every time.
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    kept.extend(ranked.into_iter().take(rule.keep_last.unwrap_or(0)).map(|(_, tag)| tag));
    kept
}

/// A manifest's bytes (at most `MAX_MANIFEST_SIZE`), parsed.
async fn parsed<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    digest: &Digest,
    record: &ManifestRecord,
) -> Result<Option<crate::wire::manifest::Manifest>> {
    let Some(blob) = blobs::record(stores, digest).await? else { return Ok(None) };
    let mut bytes = Vec::new();
    for part in &blob.parts {
        bytes.extend(stores.blobs.read_bytes(&part.name).await.map_err(internal)?);
    }
    Ok(crate::wire::manifest::parse(&bytes, Some(&record.media_type)).ok())
}

/// Everything kept reaches: from the kept tags' manifests and the manifests younger than
/// `untagged_after`, through the children of indexes and the referrers of manifests.
async fn reachable<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    rule: &Rule,
    tags: &[(Tag, TagTarget, Vec<u8>)],
    kept: &BTreeSet<Tag>,
    records: &BTreeMap<Digest, (ManifestRecord, Vec<u8>)>,
) -> Result<BTreeSet<Digest>> {
    let now = (stores.now)();
    let young = |record: &ManifestRecord| {
        rule.untagged_after.is_none_or(|age| now.saturating_sub(record.created.unwrap_or(0)) < age)
    };
    let mut queue: Vec<Digest> =
        tags.iter().filter(|(t, _, _)| kept.contains(t)).map(|(_, target, _)| target.digest.clone()).collect();
    queue.extend(records.iter().filter(|(_, (r, _))| young(r)).map(|(d, _)| d.clone()));
    let mut seen = BTreeSet::new();
    while let Some(digest) = queue.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        queue.extend(edges(stores, name, &digest).await?);
    }
    Ok(seen)
}

/// What `rule` would do to repository `name` now.
pub async fn plan<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, name: &RepoName, rule: &Rule) -> Result<Plan> {
    let tags = tags(stores, name).await?;
    let kept = kept_tags(stores, name, rule, &tags);
    let untag =
        tags.iter().filter(|(t, _, _)| !kept.contains(t)).map(|(t, _, bytes)| (t.clone(), bytes.clone())).collect();
    let mut plan = Plan { untag, delete: Vec::new() };
    if rule.untagged_after.is_some() {
        let records = manifest_records(stores, name).await?;
        let keep = reachable(stores, name, rule, &tags, &kept, &records).await?;
        let unkept: BTreeSet<Digest> = records.keys().filter(|d| !keep.contains(*d)).cloned().collect();
        // Only what no other unkept manifest reaches: the children of an index and the referrers
        // of a manifest go in a later pass, once it is gone. A push of the index or the subject
        // that takes its mark off then never finds its children or referrers deleted meanwhile.
        let below = reached_from(stores, name, &unkept).await?;
        plan.delete = records
            .into_iter()
            .filter(|(d, _)| unkept.contains(d) && !below.contains(d))
            .map(|(d, (r, b))| (d, r, b))
            .collect();
    }
    Ok(plan)
}

/// The manifests one step below `from`: their children and their referrers.
async fn reached_from<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    from: &BTreeSet<Digest>,
) -> Result<BTreeSet<Digest>> {
    let mut below = BTreeSet::new();
    for digest in from {
        below.extend(edges(stores, name, digest).await?);
    }
    Ok(below)
}

/// A manifest's children (an index's manifests) and referrers in this repository.
async fn edges<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    let Some(record) = manifests::record(stores, name, digest).await? else { return Ok(out) };
    if let Some(manifest) = parsed(stores, digest, &record).await? {
        out.extend(manifest.children);
    }
    let prefix = keys::referrers_prefix(name, digest);
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        out.extend(objects.iter().filter_map(|o| keys::parse_referrer_entry_name(&o[prefix.len()..])));
    }
    Ok(out)
}

/// Carry out a plan: the tags first (each only if it still holds the value planned), then the
/// manifests by condemn, look again, remove. What was done.
pub async fn apply<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    rule: &Rule,
    plan: Plan,
) -> Result<(Vec<Tag>, Vec<Digest>)> {
    let mut untagged = Vec::new();
    for (tag, value) in plan.untag {
        if manifests::remove_tag(stores, name, &tag, |t| t.to_value().as_bytes() == value.as_slice()).await? {
            stores.log(format_args!("retention: untagged {name}:{} (rule {rule})", tag.as_str()));
            untagged.push(tag);
        }
    }
    let mut condemned = Vec::new();
    for (digest, record, bytes) in plan.delete {
        let marked = record.condemned_at((stores.now)(), (stores.random)());
        let marked = serde_json::to_vec(&marked).expect("records serialize");
        if stores.meta.compare_and_swap(&keys::manifest(name, &digest), &bytes, &marked).await.map_err(internal)? {
            condemned.push((digest, record, marked));
        }
    }
    if condemned.is_empty() {
        return Ok((untagged, Vec::new()));
    }
    // The second look: every tag and every edge read again, after the marks.
    let tags = tags(stores, name).await?;
    let kept = kept_tags(stores, name, rule, &tags);
    let records = manifest_records(stores, name).await?;
    let keep = reachable(stores, name, rule, &tags, &kept, &records).await?;
    let mut deleted = Vec::new();
    for (digest, record, marked) in condemned {
        let key = keys::manifest(name, &digest);
        if keep.contains(&digest) {
            let unmarked = serde_json::to_vec(&record.unmarked()).expect("records serialize");
            stores.meta.compare_and_swap(&key, &marked, &unmarked).await.map_err(internal)?;
            continue;
        }
        if !stores.meta.compare_and_swap(&key, &marked, b"").await.map_err(internal)? {
            continue; // a push took the mark off
        }
        stores.log(format_args!("retention: deleted manifest {name}@{digest}: nothing kept reaches it (rule {rule})"));
        manifests::forget(stores, name, &digest, &record).await?;
        manifests::untag(stores, name, &digest, &record).await?;
        deleted.push(digest);
    }
    Ok((untagged, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::retention::Retention;
    use crate::testing::api::*;
    use crate::testing::{advance_clock, block_on, memory_stores};
    use crate::wire::digest::Algorithm;
    use http::{Method, StatusCode};

    fn with_rules(rules: &str) -> Mem {
        let mut stores = memory_stores();
        stores.config.retention = Retention::parse(rules).unwrap();
        stores
    }

    fn sha(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }

    /// A whole pass (retention, then blobs); what it reported.
    fn pass(stores: &Mem, dry_run: bool) -> crate::lifecycle::gc::Step {
        let mut total = crate::lifecycle::gc::Step::default();
        let mut cursor = None;
        loop {
            let step = block_on(crate::lifecycle::gc::step(
                stores,
                cursor,
                dry_run,
                crate::lifecycle::gc::DEFAULT_CONCURRENCY,
            ))
            .unwrap();
            total.untagged.extend(step.untagged);
            total.deleted_manifests.extend(step.deleted_manifests);
            total.collected.extend(step.collected);
            cursor = step.next;
            if cursor.is_none() {
                total.untagged.sort();
                total.deleted_manifests.sort();
                return total;
            }
        }
    }

    fn tags_of(stores: &Mem, repo: &str) -> Vec<String> {
        let r = send(stores, Method::GET, &format!("/v2/{repo}/tags/list"), vec![]);
        let crate::wire::message::Body::Full(body) = r.body else { panic!("no body") };
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["tags"].as_array().map(|t| t.iter().map(|t| t.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
    }

    fn manifest_status(stores: &Mem, repo: &str, reference: &str) -> StatusCode {
        send(stores, Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"), vec![]).status
    }

    /// An index of the given manifests (pushed by digest first).
    fn index_of(children: &[&[u8]]) -> Vec<u8> {
        let manifests: Vec<_> = children
            .iter()
            .map(|c| serde_json::json!({"mediaType": crate::wire::manifest::OCI_MANIFEST, "digest": sha(c).to_string(), "size": c.len()}))
            .collect();
        serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": crate::wire::manifest::OCI_INDEX, "manifests": manifests}),
        )
        .unwrap()
    }

    /// A signature-like artifact whose subject is `subject` (its blobs pushed to `repo`).
    fn referrer_of(stores: &Mem, repo: &str, subject: &[u8], payload: &[u8]) -> Vec<u8> {
        push_blob(stores, repo, b"{}");
        push_blob(stores, repo, payload);
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::wire::manifest::OCI_MANIFEST,
            "artifactType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(b"{}").to_string(), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sha(payload).to_string(), "size": payload.len()}],
            "subject": {"mediaType": crate::wire::manifest::OCI_MANIFEST, "digest": sha(subject).to_string(), "size": subject.len()},
        }))
        .unwrap()
    }

    #[test]
    fn keep_last_keeps_the_tags_pushed_last_and_those_a_pattern_pins() {
        let stores = with_rules("r keep_last=2 keep_tags=stable");
        for (i, tag) in ["stable", "a", "b", "c", "d"].iter().enumerate() {
            push_image(&stores, "r", tag, format!("config {i}").as_bytes(), &[format!("layer {i}").as_bytes()]);
            advance_clock(10);
        }
        let planned = pass(&stores, true);
        assert_eq!(planned.untagged, ["r:a", "r:b"]);
        assert_eq!(tags_of(&stores, "r"), ["a", "b", "c", "d", "stable"], "a dry run changes nothing");
        let done = pass(&stores, false);
        assert_eq!(done.untagged, planned.untagged, "the run does what the dry run said");
        assert_eq!(tags_of(&stores, "r"), ["c", "d", "stable"]);
        // Without untagged_after the manifests stay (by digest), and so do their blobs.
        assert!(done.deleted_manifests.is_empty() && done.collected.is_empty());
    }

    #[test]
    fn keep_last_keeps_the_newest_of_tags_pushed_within_one_second() {
        let stores = with_rules("r keep_last=3");
        // build-1 .. build-6 pushed back to back: the clock does not move between them.
        for i in 1..=6 {
            let tag = format!("build-{i}");
            push_image(&stores, "r", &tag, format!("config {i}").as_bytes(), &[format!("layer {i}").as_bytes()]);
        }
        let done = pass(&stores, false);
        assert_eq!(done.untagged, ["r:build-1", "r:build-2", "r:build-3"]);
        assert_eq!(tags_of(&stores, "r"), ["build-4", "build-5", "build-6"]);
    }

    #[test]
    fn a_retention_step_starts_no_repository_after_its_time_and_the_next_step_goes_on_from_there() {
        let mut stores = with_rules("a keep_last=1; b keep_last=1");
        for repo in ["a", "b"] {
            for tag in ["old", "new"] {
                push_image(&stores, repo, tag, format!("config {repo}{tag}").as_bytes(), &[b"layer"]);
                advance_clock(10);
            }
        }
        // A clock that moves a whole step's time at every reading: the first repository takes
        // the step's time.
        fn slow_clock() -> u64 {
            crate::testing::advance_clock(crate::lifecycle::gc::STEP_SECONDS);
            crate::testing::test_clock()
        }
        stores.now = slow_clock;
        let first = block_on(crate::lifecycle::gc::step(&stores, None, false, 1)).unwrap();
        assert_eq!(first.untagged, ["a:old"]);
        assert_eq!(first.next.as_deref(), Some("repos:a"));
        let second = block_on(crate::lifecycle::gc::step(&stores, first.next, false, 1)).unwrap();
        assert_eq!(second.untagged, ["b:old"]);
    }

    #[test]
    fn untagged_manifests_go_after_their_age_but_indexes_children_and_referrers_of_kept_ones_stay() {
        let stores = with_rules("r untagged_after=1h");
        let kept = push_image_bytes(&stores, "keep", b"config kept", b"layer kept");
        let orphan = push_image_bytes(&stores, "orphan", b"config orphan", b"layer orphan");
        assert_eq!(send(&stores, Method::DELETE, "/v2/r/manifests/orphan", vec![]).status, StatusCode::ACCEPTED);
        let amd64 = push_image_bytes(&stores, "amd64", b"config amd64", b"layer amd64");
        let arm64 = push_image_bytes(&stores, "arm64", b"config arm64", b"layer arm64");
        for tag in ["amd64", "arm64"] {
            send(&stores, Method::DELETE, &format!("/v2/r/manifests/{tag}"), vec![]);
        }
        let index = index_of(&[&amd64, &arm64]);
        assert_eq!(put_manifest(&stores, "r", "multi", &index).status, StatusCode::CREATED);
        let signature = referrer_of(&stores, "r", &kept, b"signature of kept");
        assert_eq!(put_manifest(&stores, "r", &sha(&signature).to_string(), &signature).status, StatusCode::CREATED);
        let stray = referrer_of(&stores, "r", &orphan, b"signature of orphan");
        assert_eq!(put_manifest(&stores, "r", &sha(&stray).to_string(), &stray).status, StatusCode::CREATED);

        assert!(pass(&stores, true).deleted_manifests.is_empty(), "nothing is an hour old yet");
        advance_clock(2 * 3600);
        // The orphan goes first; its signature, which it reaches, in the next pass.
        let planned = pass(&stores, true);
        assert_eq!(planned.deleted_manifests, [format!("r@{}", sha(&orphan))]);
        let first = pass(&stores, false);
        assert_eq!(first.deleted_manifests, planned.deleted_manifests, "the run does what the dry run said");
        let planned = pass(&stores, true);
        assert_eq!(planned.deleted_manifests, [format!("r@{}", sha(&stray))]);
        let mut done = pass(&stores, false);
        assert_eq!(done.deleted_manifests, planned.deleted_manifests, "the run does what the dry run said");
        done.collected.extend(first.collected);
        for gone in [&orphan, &stray] {
            assert_eq!(manifest_status(&stores, "r", &sha(gone).to_string()), StatusCode::NOT_FOUND);
        }
        for stays in [&kept, &amd64, &arm64, &index, &signature] {
            assert_eq!(manifest_status(&stores, "r", &sha(stays).to_string()), StatusCode::OK);
        }
        // The passes collected the deleted manifests' blobs, and only theirs.
        let collected: BTreeSet<Digest> = done.collected.iter().map(|(d, _)| d.clone()).collect();
        for blob in
            [sha(&orphan), sha(&stray), sha(b"config orphan"), sha(b"layer orphan"), sha(b"signature of orphan")]
        {
            assert!(collected.contains(&blob), "{blob}");
        }
        assert!(!collected.contains(&sha(b"{}")), "the empty config is still used by the kept signature");
        let referrers = send(&stores, Method::GET, &format!("/v2/r/referrers/{}", sha(&kept)), vec![]);
        let crate::wire::message::Body::Full(body) = referrers.body else { panic!() };
        assert!(String::from_utf8_lossy(&body).contains(&sha(&signature).to_string()));
    }

    fn push_image_bytes(stores: &Mem, tag: &str, config: &[u8], layer: &[u8]) -> Vec<u8> {
        push_image(stores, "r", tag, config, &[layer]);
        manifest_of(config, &[layer])
    }

    #[test]
    fn a_push_that_tags_a_condemned_manifest_takes_the_mark_off_so_retention_cannot_remove_it() {
        let stores = with_rules("r untagged_after=1h");
        let manifest = push_image_bytes(&stores, "t", b"config", b"layer");
        send(&stores, Method::DELETE, "/v2/r/manifests/t", vec![]);
        advance_clock(2 * 3600);
        let name = RepoName::parse("r").unwrap();
        let digest = sha(&manifest);
        // Retention has marked it (the first move of `apply`)...
        let (record, bytes) = block_on(manifests::stored(&stores, &name, &digest)).unwrap().unwrap();
        let marked = serde_json::to_vec(&ManifestRecord { condemned: Some(1), ..record }).unwrap();
        assert!(block_on(stores.meta.compare_and_swap(&keys::manifest(&name, &digest), &bytes, &marked)).unwrap());
        // ...then a client tags it again...
        assert_eq!(put_manifest(&stores, "r", "again", &manifest).status, StatusCode::CREATED);
        // ...so retention's last move, a swap from the marked record, fails.
        assert!(!block_on(stores.meta.compare_and_swap(&keys::manifest(&name, &digest), &marked, b"")).unwrap());
        assert!(pass(&stores, false).deleted_manifests.is_empty());
        assert_eq!(manifest_status(&stores, "r", "again"), StatusCode::OK);
    }
}
