//! Upload sessions: the whole state of a chunked upload in one key-value record, so any instance
//! can continue any upload and nothing lives in memory between requests.
//!
//! The record changes only by compare-and-swap from the exact bytes a request read, so of two
//! requests racing on one session (two chunks from the same version, two finishes, a finish and
//! a cancel, a cancel and expiry) exactly one moves it on; the other is refused and removes
//! what it wrote. A chunk is written first, as an object of its own under a fresh name, and the
//! record names it only once the swap succeeds: a broken or losing chunk leaves the session as
//! it was, and can never block a later one. See docs/consistency.md.

use crate::registry::blobs::Part;
use crate::wire::digest::{Algorithm, RunningHash};
use serde::{Deserialize, Serialize};

/// Where a session is in its life. Only `Open` sessions take chunks, answer status requests and
/// can be finished or cancelled; the other states are claims held while their owner works, and
/// what the sweep finishes when that owner died.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    #[default]
    Open,
    /// A finishing request won the session and is verifying and committing it as `digest`.
    Closing,
    /// Committed as `digest`, with its parts as the blob record's (written without a claim, as a
    /// new key can only be): the sweep checks after a grace time that the record still names
    /// them, then lets the blob own them.
    Finished,
    /// A cancel (client DELETE, expiry, failed digest) won the session; its objects go.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    pub repo: String,
    pub id: String,
    /// Unix seconds at creation.
    pub created: u64,
    /// Unix seconds of the last change (a chunk, a state change); expiry counts from here.
    #[serde(default)]
    pub touched: u64,
    /// Bumped by every chunk; carried in the `Location` token.
    pub version: u64,
    pub size: u64,
    pub parts: Vec<Part>,
    /// Running SHA-256 state (hex of the serialized state), continued over every chunk.
    pub sha256: String,
    /// Running SHA-512 state, only in sessions from before SHA-512 stopped running along every
    /// upload: it doubled the CPU of a push for a digest clients almost never use. An upload that
    /// finishes under SHA-512 is hashed over its chunks then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// The user who opened the session (`None`: anonymous, or authentication off); nobody else
    /// may see or continue it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub state: SessionState,
    /// The digest a `Closing` or `Finished` session is committed as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl UploadSession {
    pub fn new(repo: &str, id: String, created: u64) -> UploadSession {
        UploadSession {
            repo: repo.to_owned(),
            id,
            created,
            touched: created,
            version: 0,
            size: 0,
            parts: Vec::new(),
            sha256: hex::encode(RunningHash::new(Algorithm::Sha256).save()),
            sha512: None,
            owner: None,
            state: SessionState::Open,
            digest: None,
        }
    }

    /// The running hashes, to be continued over the next chunk.
    pub fn hashes(&self) -> Option<Vec<RunningHash>> {
        let restore = |algorithm, state: &str| RunningHash::restore(algorithm, &hex::decode(state).ok()?);
        let mut hashes = vec![restore(Algorithm::Sha256, &self.sha256)?];
        if let Some(sha512) = &self.sha512 {
            hashes.push(restore(Algorithm::Sha512, sha512)?);
        }
        Some(hashes)
    }

    /// The session after a chunk of `part.size` bytes written at `now`, with the hashes
    /// continued over it.
    pub fn advanced(&self, part: Part, hashes: &[RunningHash], now: u64) -> UploadSession {
        let mut next = self.clone();
        next.version += 1;
        next.size += part.size;
        next.parts.push(part);
        next.touched = now;
        for hash in hashes {
            match hash.algorithm() {
                Algorithm::Sha256 => next.sha256 = hex::encode(hash.save()),
                Algorithm::Sha512 => next.sha512 = Some(hex::encode(hash.save())),
            }
        }
        next
    }

    /// The session moved to `state` at `now` (as `digest`, for `Closing` and `Finished`).
    pub fn moved_to(&self, state: SessionState, digest: Option<String>, now: u64) -> UploadSession {
        UploadSession { state, digest, touched: now, ..self.clone() }
    }

    /// When the session last changed (records from before `touched` existed: their creation).
    pub fn last_touch(&self) -> u64 {
        self.touched.max(self.created)
    }

    /// Untouched for longer than `expiry_secs`: an open session is abandoned, a claim's owner
    /// has died.
    pub fn expired(&self, now: u64, expiry_secs: u64) -> bool {
        now.saturating_sub(self.last_touch()) > expiry_secs
    }

    /// The `Range` header value: the bytes received so far (`0-0` when none, as Distribution).
    pub fn range(&self) -> String {
        format!("0-{}", self.size.saturating_sub(1))
    }
}

/// Upload ids are 32 lowercase hex characters; anything else is not one of ours.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::digest::Digest;

    #[test]
    fn a_session_continues_its_hashes_across_chunks() {
        let s = UploadSession::new("r", "0".repeat(32), 10);
        let mut hashes = s.hashes().unwrap();
        hashes.iter_mut().for_each(|h| h.update(b"hello "));
        let s = s.advanced(Part { name: "a".into(), size: 6 }, &hashes, 11);
        let mut hashes = s.hashes().unwrap();
        hashes.iter_mut().for_each(|h| h.update(b"world"));
        let s = s.advanced(Part { name: "b".into(), size: 5 }, &hashes, 12);
        assert_eq!((s.version, s.size, s.range().as_str()), (2, 11, "0-10"));
        let finished: Vec<Digest> = s.hashes().unwrap().into_iter().map(Digest::from_hash).collect();
        assert_eq!(finished, [Digest::of(Algorithm::Sha256, b"hello world")], "only SHA-256 runs along");
    }

    #[test]
    fn a_session_from_before_still_continues_its_sha512() {
        let mut old = serde_json::to_value(UploadSession::new("r", "0".repeat(32), 10)).unwrap();
        old["sha512"] = hex::encode(RunningHash::new(Algorithm::Sha512).save()).into();
        let s: UploadSession = serde_json::from_value(old).unwrap();
        let mut hashes = s.hashes().unwrap();
        hashes.iter_mut().for_each(|h| h.update(b"abc"));
        let s = s.advanced(Part { name: "a".into(), size: 3 }, &hashes, 11);
        let finished: Vec<Digest> = s.hashes().unwrap().into_iter().map(Digest::from_hash).collect();
        assert_eq!(finished[1], Digest::of(Algorithm::Sha512, b"abc"));
    }

    #[test]
    fn range_of_an_empty_session() {
        assert_eq!(UploadSession::new("r", "0".repeat(32), 0).range(), "0-0");
    }

    #[test]
    fn expiry_counts_from_the_last_touch_not_from_creation() {
        let s = UploadSession::new("r", "0".repeat(32), 100);
        assert!(!s.expired(150, 60));
        assert!(s.expired(161, 60));
        let hashes = s.hashes().unwrap();
        let s = s.advanced(Part { name: "a".into(), size: 0 }, &hashes, 150);
        assert!(!s.expired(200, 60), "a chunk at 150 keeps the session alive until 210");
        assert!(s.expired(211, 60));
    }

    #[test]
    fn a_record_from_before_states_is_an_open_session_touched_at_creation() {
        let mut old = serde_json::to_value(UploadSession::new("r", "0".repeat(32), 10)).unwrap();
        let map = old.as_object_mut().unwrap();
        map.remove("touched");
        map.remove("state");
        let s: UploadSession = serde_json::from_value(old).unwrap();
        assert_eq!((s.state, s.last_touch()), (SessionState::Open, 10));
    }

    #[test]
    fn ids() {
        assert!(valid_id(&"a1".repeat(16)));
        assert!(!valid_id("../x"));
        assert!(!valid_id(&"A".repeat(32)));
    }
}
