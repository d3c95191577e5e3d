//! Content digests: `algorithm ":" encoded`, parsed once at the edge, then trusted.
//!
//! Grammar (OCI image-spec descriptor.md):
//! ```text
//! digest    ::= algorithm ":" encoded
//! algorithm ::= algorithm-component (algorithm-separator algorithm-component)*
//! encoded   ::= [a-zA-Z0-9=_-]+
//! ```
//! Berth verifies `sha256` (64 lowercase hex) and `sha512` (128 lowercase hex); any other
//! algorithm cannot be verified and is rejected as `DIGEST_INVALID`.

use crate::wire::errcode::{ErrorCode, RegistryError};

pub use berth_hash_state::{Algorithm, RunningHash};

/// Lowercase hex characters in an encoded digest of `algorithm`.
const fn hex_len(algorithm: Algorithm) -> usize {
    algorithm.output_len() * 2
}

/// A digest whose algorithm Berth supports and whose encoding is well formed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let invalid = |why: &str| RegistryError::new(ErrorCode::DigestInvalid, format!("invalid digest {s:?}: {why}"));
        let (algorithm, hex) = s.split_once(':').ok_or_else(|| invalid("missing ':'"))?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("unsupported algorithm")),
        };
        if hex.len() != hex_len(algorithm) {
            return Err(invalid("wrong length"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("not lowercase hex"));
        }
        Ok(Self { algorithm, hex: hex.to_owned() })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes` under `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Self {
        let mut hasher = RunningHash::new(algorithm);
        hasher.update(bytes);
        Digest::from_hash(hasher)
    }

    /// The digest a finished hash gives.
    pub fn from_hash(hash: RunningHash) -> Self {
        Digest { algorithm: hash.algorithm(), hex: hex::encode(hash.finalize()) }
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_sha256_and_sha512() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        let sha512 = Digest::of(Algorithm::Sha512, b"");
        assert_eq!(Digest::parse(&sha512.to_string()).unwrap(), sha512);
    }

    #[test]
    fn rejects_malformed_digests_as_digest_invalid() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85z",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            let err = Digest::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::DigestInvalid, "{bad:?}");
        }
    }

    #[test]
    fn digest_of_known_content() {
        assert_eq!(Digest::of(Algorithm::Sha256, b"").to_string(), EMPTY_SHA256);
        assert_eq!(
            Digest::of(Algorithm::Sha256, b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_saved_hash_continues_where_it_stopped() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut first = RunningHash::new(algorithm);
            first.update(b"hello, ");
            let saved = first.save();
            let mut resumed = RunningHash::restore(algorithm, &saved).unwrap();
            resumed.update(b"world");
            assert_eq!(Digest::from_hash(resumed), Digest::of(algorithm, b"hello, world"));
        }
    }

    #[test]
    fn garbage_state_is_refused() {
        assert!(RunningHash::restore(Algorithm::Sha256, b"nope").is_none());
    }
}
