//! A SHA-256 or SHA-512 in progress whose state can be saved as bytes and restored later.
//!
//! One upload is hashed in several places: the component opens the hash, the blob store (the
//! runner natively, or a provider component) continues it over each chunk it stores, and the
//! state rests in the upload session record between chunks. All of them share this type, so the
//! saved bytes mean the same thing everywhere (sha2 0.11's `SerializableState`).

use sha2::Digest as _;
use sha2::digest::common::hazmat::SerializableState;

/// The hash algorithms Berth verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name in a digest string (`sha256:...`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Bytes of output.
    pub const fn output_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

#[derive(Clone)]
pub enum RunningHash {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl RunningHash {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => RunningHash::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => RunningHash::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            RunningHash::Sha256(_) => Algorithm::Sha256,
            RunningHash::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            RunningHash::Sha256(h) => h.update(bytes),
            RunningHash::Sha512(h) => h.update(bytes),
        }
    }

    /// The hash of everything given to [`RunningHash::update`] (and before the state was saved).
    pub fn finalize(self) -> Vec<u8> {
        match self {
            RunningHash::Sha256(h) => h.finalize().to_vec(),
            RunningHash::Sha512(h) => h.finalize().to_vec(),
        }
    }

    /// The state as bytes, for [`RunningHash::restore`].
    pub fn save(&self) -> Vec<u8> {
        match self {
            RunningHash::Sha256(h) => h.serialize().to_vec(),
            RunningHash::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// Continue a state saved by [`RunningHash::save`]; `None` if the bytes are not one.
    pub fn restore(algorithm: Algorithm, state: &[u8]) -> Option<Self> {
        match algorithm {
            Algorithm::Sha256 => sha2::Sha256::deserialize(state.try_into().ok()?).ok().map(RunningHash::Sha256),
            Algorithm::Sha512 => sha2::Sha512::deserialize(state.try_into().ok()?).ok().map(RunningHash::Sha512),
        }
    }
}

/// The conversions between [`RunningHash`] and the WIT `hash-state` record of Berth's blob store
/// interface, for a crate that implements the interface (the runner's host, each provider): its
/// bindings generate their own `HashState`, `HashAlgorithm` and `Error` types, so the functions
/// are made in that crate, from this one definition. Defines `restore_hash` (a running hash
/// continued from the state the component saved) and `save_hash` (the state to hand back, for
/// the component to continue or finish).
#[macro_export]
macro_rules! wit_hash_state_conversions {
    ($hash_state:ident, $hash_algorithm:ident, $error:ident) => {
        fn restore_hash(state: &$hash_state) -> Result<$crate::RunningHash, $error> {
            let algorithm = match state.algorithm {
                $hash_algorithm::Sha256 => $crate::Algorithm::Sha256,
                $hash_algorithm::Sha512 => $crate::Algorithm::Sha512,
            };
            $crate::RunningHash::restore(algorithm, &state.state)
                .ok_or_else(|| $error::Other("invalid hash state".into()))
        }

        fn save_hash(hash: &$crate::RunningHash) -> $hash_state {
            let algorithm = match hash.algorithm() {
                $crate::Algorithm::Sha256 => $hash_algorithm::Sha256,
                $crate::Algorithm::Sha512 => $hash_algorithm::Sha512,
            };
            $hash_state { algorithm, state: hash.save() }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_and_restored_hash_ends_like_one_that_ran_through() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut whole = RunningHash::new(algorithm);
            whole.update(b"hello, ");
            whole.update(b"world");
            let mut first = RunningHash::new(algorithm);
            first.update(b"hello, ");
            let mut second = RunningHash::restore(algorithm, &first.save()).unwrap();
            second.update(b"world");
            let out = second.finalize();
            assert_eq!(out.len(), algorithm.output_len());
            assert_eq!(out, whole.finalize());
        }
    }

    #[test]
    fn a_state_of_the_wrong_size_or_algorithm_is_refused() {
        let sha256 = RunningHash::new(Algorithm::Sha256).save();
        assert!(RunningHash::restore(Algorithm::Sha512, &sha256).is_none());
        assert!(RunningHash::restore(Algorithm::Sha256, &sha256[1..]).is_none());
        assert!(RunningHash::restore(Algorithm::Sha256, b"").is_none());
    }
}
