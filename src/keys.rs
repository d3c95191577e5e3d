//! Typed key-value keys: the whole metadata layout in one place.
//!
//! ```text
//! blob/<alg>/<hex>                    BlobRecord: size and the blob store objects holding the bytes
//! repo/<repo-key>/link/<alg>/<hex>    "1": the blob may be served from this repository
//! ```
//! `<repo-key>` is the repository name when the key stays under [`MAX_KEY_LEN`], else
//! `~` + sha256(name): names may be 255 characters and sha512 digests 128, while hosts such as
//! DynamoDB and Cosmos cap keys near 250 bytes. `~` cannot start a repository name.
//!
//! Blob store objects:
//! ```text
//! parts/<32 hex random>               bytes written by one request (a whole blob or one chunk)
//! ```

use crate::digest::{Algorithm, Digest};
use crate::name::RepoName;

pub const MAX_KEY_LEN: usize = 250;

/// The longest suffix any repository key carries after `repo/<repo-key>/`.
const LONGEST_REPO_SUFFIX: usize = "link/sha512/".len() + 128;

fn repo_key(name: &RepoName) -> String {
    if "repo/".len() + name.as_str().len() + 1 + LONGEST_REPO_SUFFIX <= MAX_KEY_LEN {
        name.as_str().to_owned()
    } else {
        format!(
            "~{}",
            Digest::of(Algorithm::Sha256, name.as_str().as_bytes()).hex()
        )
    }
}

pub fn blob(digest: &Digest) -> String {
    format!("blob/{}/{}", digest.algorithm().as_str(), digest.hex())
}

pub fn blob_link(name: &RepoName, digest: &Digest) -> String {
    format!(
        "repo/{}/link/{}/{}",
        repo_key(name),
        digest.algorithm().as_str(),
        digest.hex()
    )
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
        assert!(blob(&sha512).len() <= MAX_KEY_LEN);
    }

    #[test]
    fn short_names_stay_readable() {
        let name = RepoName::parse("library/alpine").unwrap();
        let d = Digest::of(Algorithm::Sha256, b"");
        assert_eq!(
            blob_link(&name, &d),
            format!("repo/library/alpine/link/sha256/{}", d.hex())
        );
    }
}
