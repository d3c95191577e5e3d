//! Typed key-value keys: the whole metadata layout in one place.
//!
//! ```text
//! blob/<alg>/<hex>                        BlobRecord: size and the objects holding the bytes
//! repo/<repo-key>/link/<alg>/<hex>        "1": the blob may be served from this repository
//! repo/<repo-key>/manifest/<alg>/<hex>    ManifestRecord: the manifest is in this repository
//! repo/<repo-key>/tag/<tag>               the digest the tag points at
//! upload/<id>                             UploadSession
//! ```
//! `<repo-key>` is the repository name when the key stays under [`MAX_KEY_LEN`], else
//! `~` + sha256(name): names may be 255 characters and sha512 digests 128, while hosts such as
//! DynamoDB and Cosmos cap keys near 250 bytes. `~` cannot start a repository name.
//!
//! Blob store objects:
//! ```text
//! parts/<32 hex random>                          a whole blob (or manifest) written by one request
//! uploads/<id>/<version>                         one chunk of an upload session
//! index/repos/<name>                             a repository exists (the catalog)
//! index/tags/<repo-key>/<tag>                    a tag exists (tag listing)
//! index/referrers/<repo-key>/<alg>/<hex>/<alg>-<hex>  a referrer of a subject: its descriptor
//! ```
//! The `index/` objects are how listings work without compare-and-swap: each fact is its own
//! object (no read-modify-write of a shared list), and the blob store lists them by prefix in
//! lexical order with a cursor. See docs/consistency.md.

use crate::digest::{Algorithm, Digest};
use crate::name::{RepoName, Tag};

pub const MAX_KEY_LEN: usize = 250;

/// The longest suffix any repository key carries after `repo/<repo-key>/`.
const LONGEST_REPO_SUFFIX: usize = "manifest/sha512/".len() + 128;

fn repo_key(name: &RepoName) -> String {
    if "repo/".len() + name.as_str().len() + 1 + LONGEST_REPO_SUFFIX <= MAX_KEY_LEN {
        name.as_str().to_owned()
    } else {
        format!("~{}", Digest::of(Algorithm::Sha256, name.as_str().as_bytes()).hex())
    }
}

pub fn blob(digest: &Digest) -> String {
    format!("blob/{}/{}", digest.algorithm().as_str(), digest.hex())
}

pub fn blob_link(name: &RepoName, digest: &Digest) -> String {
    format!("repo/{}/link/{}/{}", repo_key(name), digest.algorithm().as_str(), digest.hex())
}

pub fn manifest(name: &RepoName, digest: &Digest) -> String {
    format!("repo/{}/manifest/{}/{}", repo_key(name), digest.algorithm().as_str(), digest.hex())
}

pub fn tag(name: &RepoName, tag: &Tag) -> String {
    format!("repo/{}/tag/{}", repo_key(name), tag.as_str())
}

pub fn upload(id: &str) -> String {
    format!("upload/{id}")
}

pub fn upload_chunk(id: &str, version: u64) -> String {
    format!("uploads/{id}/{version:012}")
}

pub fn repo_marker(name: &RepoName) -> String {
    format!("{REPOS_PREFIX}{name}")
}

pub const REPOS_PREFIX: &str = "index/repos/";

pub fn tags_prefix(name: &RepoName) -> String {
    format!("index/tags/{}/", repo_key(name))
}

pub fn referrers_prefix(name: &RepoName, subject: &Digest) -> String {
    format!("index/referrers/{}/{}/{}/", repo_key(name), subject.algorithm().as_str(), subject.hex())
}

pub fn referrer(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!("{}{}-{}", referrers_prefix(name, subject), referrer.algorithm().as_str(), referrer.hex())
}

/// A fresh object name for bytes being written.
pub fn new_part(random: [u8; 16]) -> String {
    format!("parts/{}", hex::encode(random))
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
    fn short_names_stay_readable() {
        let name = RepoName::parse("library/alpine").unwrap();
        let d = Digest::of(Algorithm::Sha256, b"");
        assert_eq!(blob_link(&name, &d), format!("repo/library/alpine/link/sha256/{}", d.hex()));
    }
}
