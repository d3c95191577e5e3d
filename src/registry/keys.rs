//! Typed key-value keys and blob store object names: the whole storage layout in one place.
//!
//! Key-value (one key per fact; see docs/consistency.md):
//! ```text
//! blob/<alg>/<hex>                        BlobRecord: size and the objects holding the bytes
//! repo/<repo-key>/link/<alg>/<hex>        the time it was linked: the blob may be served here
//!                                         (empty: unlinked by garbage collection)
//! repo/<repo-key>/manifest/<alg>/<hex>    ManifestRecord: the manifest is in this repository
//! repo/<repo-key>/tag/<tag>               the digest the tag points at
//! upload/<id>                             UploadSession (changed only by compare-and-swap)
//! gc/cursor                               where the next garbage collection step starts
//! events/<endpoint>/next                  the number of the endpoint's newest event (counter)
//! events/<endpoint>/state                 how far its delivery is (delivered, retry, lease)
//! ui/session-generation/<user>            the web UI user's logouts (counter)
//! ```
//! `<repo-key>` is the repository name when the key stays under [`MAX_KEY_LEN`], else
//! `_` + sha256(name): names may be 255 characters and sha512 digests 128, while hosts such as
//! DynamoDB and Cosmos cap keys near 250 bytes. A repository name component cannot start with
//! `_`, and every store accepts the form.
//!
//! Blob store objects. Data and index entries live apart, so that a listing reads only the
//! entries it pages through, never the data of every blob ever pushed:
//! ```text
//! uploads/<id>/<32 hex random>                          bytes written by one request of upload <id>
//! index/uploads/<id>                                    upload <id> may own objects (the sweep's list)
//! index/repos/<name>                                    a repository exists (the catalog)
//! index/tags/<repo-key>/_/<tag>                         a tag exists (tag listing)
//! index/referrers/<repo-key>/_/<alg>/<hex>/<alg>-<hex>  a referrer of a subject: its descriptor
//! bindings/tags/<repo-key>/_/<tag>                      the digest an immutable tag is bound to
//! index/manifests/<repo-key>/_/<alg>-<hex>              a manifest record may exist (retention)
//! index/tagged/<repo-key>/_/<alg>-<hex>/<tag>:<push>    a tag may name the manifest (retention)
//! events/<endpoint>/<20-digit number>                   an event waiting for its endpoint
//! index/blobs/<alg>/<hex>                               a blob record may exist (GC's list)
//! index/holders/<alg>/<hex>/<repo-key>/_/link           the blob may be linked in a repository
//! index/holders/<alg>/<hex>/<repo-key>/_/manifest/<alg>-<hex>
//!                                                       a manifest of a repository references it
//! ```
//! The `_` component ends the repository part of an index name: no repository name has a `_`
//! component, so the entries of `a` and of a nested `a/b` never share a prefix and a listing of
//! one never reads the other's. Each index entry is its own object (no read-modify-write of a
//! shared list), listed by prefix in lexical order with a cursor, and checked against its fact.

use crate::wire::digest::{Algorithm, Digest};
use crate::wire::name::{RepoName, Tag};

pub const MAX_KEY_LEN: usize = 250;

/// The longest suffix any repository key carries after `repo/<repo-key>/`.
const LONGEST_REPO_SUFFIX: usize = "manifest/sha512/".len() + 128;

pub fn repo_key(name: &RepoName) -> String {
    if "repo/".len() + name.as_str().len() + 1 + LONGEST_REPO_SUFFIX <= MAX_KEY_LEN {
        name.as_str().to_owned()
    } else {
        format!("_{}", Digest::of(Algorithm::Sha256, name.as_str().as_bytes()).hex())
    }
}

pub fn blob(digest: &Digest) -> String {
    format!("blob/{}/{}", digest.algorithm().as_str(), digest.hex())
}

pub fn blob_link(name: &RepoName, digest: &Digest) -> String {
    blob_link_at(&repo_key(name), digest)
}

/// A link by repository key (what a holder entry names).
pub fn blob_link_at(repo_key: &str, digest: &Digest) -> String {
    format!("repo/{repo_key}/link/{}/{}", digest.algorithm().as_str(), digest.hex())
}

pub fn manifest(name: &RepoName, digest: &Digest) -> String {
    manifest_at(&repo_key(name), digest)
}

/// A manifest record by repository key (what a holder entry names).
pub fn manifest_at(repo_key: &str, digest: &Digest) -> String {
    format!("repo/{repo_key}/manifest/{}/{}", digest.algorithm().as_str(), digest.hex())
}

pub const GC_CURSOR: &str = "gc/cursor";

pub const BLOBS_INDEX_PREFIX: &str = "index/blobs/";

/// Garbage collection's list of blobs: written before a blob record is first stored.
pub fn blob_index(digest: &Digest) -> String {
    format!("{BLOBS_INDEX_PREFIX}{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// The blob an entry of [`BLOBS_INDEX_PREFIX`] names.
pub fn parse_blob_index(object: &str) -> Option<Digest> {
    let (algorithm, hex) = object.strip_prefix(BLOBS_INDEX_PREFIX)?.split_once('/')?;
    Digest::parse(&format!("{algorithm}:{hex}")).ok()
}

/// What may hold a blob: one entry per linking repository and per referencing manifest,
/// written before its fact (the link, the manifest record), so garbage collection can find and
/// check every fact that keeps the blob.
/// The count of holder-entry removals ever begun for a blob (garbage collection's `unhold`):
/// a collector's second look that sees it change knows an entry may have been missing from
/// its listing.
pub fn unholds_begun(digest: &Digest) -> String {
    format!("gc/unholds/{}/{}", digest.algorithm().as_str(), digest.hex())
}

pub fn holders_prefix(digest: &Digest) -> String {
    format!("index/holders/{}/{}/", digest.algorithm().as_str(), digest.hex())
}

/// The blob a holder entry (an object under [`holders_prefix`]) holds, with that prefix.
pub fn parse_holder_entry(object: &str) -> Option<(Digest, String)> {
    let mut parts = object.strip_prefix("index/holders/")?.splitn(3, '/');
    let (algorithm, hex) = (parts.next()?, parts.next()?);
    let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
    let prefix = holders_prefix(&digest);
    Some((digest, prefix))
}

pub fn link_holder(name: &RepoName, digest: &Digest) -> String {
    format!("{}{}/_/link", holders_prefix(digest), repo_key(name))
}

pub fn manifest_holder(name: &RepoName, digest: &Digest, manifest: &Digest) -> String {
    format!("{}{}/_/manifest/{}", holders_prefix(digest), repo_key(name), referrer_entry_name(manifest))
}

/// The fact a holder entry stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// `repo/<repo-key>/link/<blob>`
    Link { repo_key: String },
    /// `repo/<repo-key>/manifest/<manifest>`
    Manifest { repo_key: String, manifest: Digest },
}

/// Parse an entry below [`holders_prefix`] (`None` for anything else).
pub fn parse_holder(prefix: &str, object: &str) -> Option<Holder> {
    // The first `/_/` ends the repository key: no repository name component is `_`.
    let (repo_key, what) = object.strip_prefix(prefix)?.split_once("/_/")?;
    let repo_key = repo_key.to_owned();
    match what {
        "link" => Some(Holder::Link { repo_key }),
        _ => Some(Holder::Manifest { repo_key, manifest: parse_referrer_entry_name(what.strip_prefix("manifest/")?)? }),
    }
}

pub fn tag(name: &RepoName, tag: &Tag) -> String {
    format!("repo/{}/tag/{}", repo_key(name), tag.as_str())
}

/// The claim chain of the one request that fetches a blob from an upstream
/// (`crate::mirror::claim`: links created exclusively in the blob store).
pub fn mirror_fetch(digest: &Digest) -> String {
    format!("mirror/fetching/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// The claim chain of the one request that fetches a manifest reference (a tag or a digest) of
/// a mirrored repository from its upstream.
pub fn mirror_fetch_manifest(name: &RepoName, reference: &str) -> String {
    format!("mirror/fetching-manifest/{}/{reference}", repo_key(name))
}

/// When the mirror last failed to confirm `tag` with the upstream, and why (`<time> <why>`):
/// requests that waited for that attempt serve the cached tag, said stale, without asking again.
pub fn mirror_unconfirmed(name: &RepoName, tag: &Tag) -> String {
    format!("repo/{}/unconfirmed/{}", repo_key(name), tag.as_str())
}

/// The repository's push counter (`increment`): orders tag pushes of the same second.
pub fn push_sequence(name: &RepoName) -> String {
    format!("repo/{}/pushes", repo_key(name))
}

/// When the mirror last confirmed `tag` with the upstream (seconds since the epoch).
pub fn mirror_checked(name: &RepoName, tag: &Tag) -> String {
    format!("repo/{}/checked/{}", repo_key(name), tag.as_str())
}

pub fn upload(id: &str) -> String {
    format!("upload/{id}")
}

/// Every object upload `id` writes starts with this.
pub fn upload_objects(id: &str) -> String {
    format!("uploads/{id}/")
}

/// A fresh object name for bytes that upload `id` writes.
pub fn upload_object(id: &str, random: [u8; 16]) -> String {
    format!("{}{}", upload_objects(id), hex::encode(random))
}

pub const UPLOADS_INDEX_PREFIX: &str = "index/uploads/";

pub fn upload_index(id: &str) -> String {
    format!("{UPLOADS_INDEX_PREFIX}{id}")
}

pub fn repo_marker(name: &RepoName) -> String {
    format!("{REPOS_PREFIX}{name}")
}

pub const REPOS_PREFIX: &str = "index/repos/";

/// The manifest an immutable tag was first pushed for (`crate::lifecycle::immutable`), created once,
/// exclusively: of two racing first pushes one binds the tag.
pub fn immutable_binding(name: &RepoName, tag: &Tag) -> String {
    format!("{}{}", immutable_bindings_prefix(name), tag.as_str())
}

/// The prefix of a repository's immutable tag bindings (the tag follows it).
pub fn immutable_bindings_prefix(name: &RepoName) -> String {
    format!("bindings/tags/{}/_/", repo_key(name))
}

pub fn tags_prefix(name: &RepoName) -> String {
    format!("index/tags/{}/_/", repo_key(name))
}

pub fn tag_entry(name: &RepoName, tag: &Tag) -> String {
    format!("{}{}", tags_prefix(name), tag.as_str())
}

/// The tags of a repository that point at manifest `digest`, one entry per tag push
/// (`<tag>:<sequence>`, `<tag>:-` for a tag from before the push counter): retention finds a
/// manifest's tags here without reading every tag. An entry is written before the tag's value;
/// it is stale once that tag's value names another digest or another push (a push number is
/// never used twice, so a stale entry never becomes true again and may be deleted).
pub fn tagged_prefix(name: &RepoName, digest: &Digest) -> String {
    format!("index/tagged/{}/_/{}/", repo_key(name), referrer_entry_name(digest))
}

pub fn tagged_entry(name: &RepoName, digest: &Digest, tag: &Tag, sequence: Option<i64>) -> String {
    match sequence {
        Some(n) => format!("{}{}:{n}", tagged_prefix(name, digest), tag.as_str()),
        None => format!("{}{}:-", tagged_prefix(name, digest), tag.as_str()),
    }
}

/// The tag and push number a [`tagged_entry`] names (its last component).
pub fn parse_tagged_entry(entry: &str) -> Option<(Tag, Option<i64>)> {
    let (tag, sequence) = entry.rsplit_once(':')?;
    let sequence = match sequence {
        "-" => None,
        n => Some(n.parse().ok()?),
    };
    Some((Tag::parse(tag).ok()?, sequence))
}

/// A manifest's holder entries in one repository (the indexes that list it as a child, and its
/// own bytes' entry), below [`holders_prefix`].
pub fn manifest_holders_in(name: &RepoName, digest: &Digest) -> String {
    format!("{}{}/_/manifest/", holders_prefix(digest), repo_key(name))
}

/// An event endpoint's counter: the number of its newest event (`crate::registry::events`).
pub fn event_counter(endpoint: &str) -> String {
    format!("events/{endpoint}/next")
}

/// A web UI user's session generation (a counter their logout moves on, `crate::api::ui`): a
/// session made in an earlier generation is nobody's.
pub fn ui_session_generation(user: &str) -> String {
    format!("ui/session-generation/{user}")
}

/// Where an event endpoint's delivery is (`crate::registry::events::State`).
pub fn event_state(endpoint: &str) -> String {
    format!("events/{endpoint}/state")
}

/// Event number `n` of an endpoint's outbox (a blob store object, created exclusively).
pub fn event(endpoint: &str, n: u64) -> String {
    format!("events/{endpoint}/{n:020}")
}

/// A repository's manifests (retention's list of them).
pub fn manifests_prefix(name: &RepoName) -> String {
    format!("index/manifests/{}/_/", repo_key(name))
}

pub fn manifest_entry(name: &RepoName, digest: &Digest) -> String {
    format!("{}{}", manifests_prefix(name), referrer_entry_name(digest))
}

pub fn referrers_prefix(name: &RepoName, subject: &Digest) -> String {
    format!("index/referrers/{}/_/{}/{}/", repo_key(name), subject.algorithm().as_str(), subject.hex())
}

pub fn referrer(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!("{}{}", referrers_prefix(name, subject), referrer_entry_name(referrer))
}

/// The last component of a referrer's index entry.
pub fn referrer_entry_name(referrer: &Digest) -> String {
    format!("{}-{}", referrer.algorithm().as_str(), referrer.hex())
}

/// The referrer a referrer entry's last component names (`None` for anything else).
pub fn parse_referrer_entry_name(entry: &str) -> Option<Digest> {
    let (algorithm, hex) = entry.split_once('-')?;
    Digest::parse(&format!("{algorithm}:{hex}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_fits_the_smallest_host_limit() {
        let long = RepoName::parse(&format!("{}/{}", "a".repeat(127), "b".repeat(127))).unwrap();
        let sha512 = Digest::of(Algorithm::Sha512, b"x");
        assert!(blob_link(&long, &sha512).len() <= MAX_KEY_LEN);
        assert!(manifest(&long, &sha512).len() <= MAX_KEY_LEN);
        assert!(tag(&long, &Tag::parse(&"t".repeat(128)).unwrap()).len() <= MAX_KEY_LEN);
        assert!(blob(&sha512).len() <= MAX_KEY_LEN);
    }

    #[test]
    fn holder_entries_name_their_fact_for_short_and_hashed_repository_keys() {
        let blob = Digest::of(Algorithm::Sha256, b"b");
        let m = Digest::of(Algorithm::Sha512, b"m");
        let prefix = holders_prefix(&blob);
        for name in ["a/b", &"x".repeat(200)] {
            let name = RepoName::parse(name).unwrap();
            let repo_key = repo_key(&name);
            assert_eq!(
                parse_holder(&prefix, &link_holder(&name, &blob)),
                Some(Holder::Link { repo_key: repo_key.clone() })
            );
            assert_eq!(
                parse_holder(&prefix, &manifest_holder(&name, &blob, &m)),
                Some(Holder::Manifest { repo_key: repo_key.clone(), manifest: m.clone() })
            );
            assert_eq!(blob_link_at(&repo_key, &blob), blob_link(&name, &blob));
        }
        assert_eq!(parse_blob_index(&blob_index(&m)), Some(m));
    }

    #[test]
    fn index_entries_of_a_repository_never_share_a_prefix_with_a_nested_one() {
        let subject = Digest::of(Algorithm::Sha256, b"s");
        let outer = RepoName::parse("a").unwrap();
        let nested = RepoName::parse(&format!("a/sha256/{}", subject.hex())).unwrap();
        let r = Digest::of(Algorithm::Sha256, b"r");
        assert!(!referrer(&nested, &subject, &r).starts_with(&referrers_prefix(&outer, &subject)));
        let tag = Tag::parse("t").unwrap();
        assert!(!tag_entry(&RepoName::parse("a/b").unwrap(), &tag).starts_with(&tags_prefix(&outer)));
        assert_eq!(parse_referrer_entry_name(&referrer_entry_name(&r)), Some(r));
    }

    #[test]
    fn long_repository_names_are_hashed_into_a_form_every_store_accepts() {
        let long = RepoName::parse(&"a".repeat(120)).unwrap();
        let key = tags_prefix(&long);
        assert!(key.starts_with("index/tags/_") && key.len() < 100, "{key}");
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_".contains(&b)));
    }

    #[test]
    fn short_names_stay_readable() {
        let name = RepoName::parse("library/alpine").unwrap();
        let d = Digest::of(Algorithm::Sha256, b"");
        assert_eq!(blob_link(&name, &d), format!("repo/library/alpine/link/sha256/{}", d.hex()));
    }
}
