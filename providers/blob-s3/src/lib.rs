//! `berth-blob-s3`: Berth's blob store (`berth:blob-store/store@0.4.0`) over an S3-compatible
//! bucket, reached by outbound `wasi:http` from inside wasm, so the same component serves under
//! `spin up`, on edge hosts and in `berth-runner` (`--blob-store dependency` with a manifest that
//! names it, or `--blob-store berth_blob_s3.wasm`).
//!
//! - Requests are presigned URLs made by `rusty-s3` (SigV4, query-string form); credentials
//!   never leave the signing and are never logged.
//! - Writes stream: bytes are hashed as they pass and sent as parts of a multipart upload
//!   (one part held at a time, [`part_size`]), or as one PUT when the object is smaller than a
//!   part.
//!   Both end with `If-None-Match: *`: the object appears whole, once, or not at all, and of
//!   concurrent writers of one name exactly one succeeds (S3's conditional writes).
//! - Reads hand S3's response body on as the read stream: the bytes do not pass through here.
//! - `presign-read` makes the URLs of blob redirects.
//!
//! [`settings`] reads the Spin variables and [`answer`] classifies S3's answers; the wasm glue
//! in `provider` only moves requests and bytes.

pub mod answer;
pub mod settings;

const MIB: usize = 1024 * 1024;

/// The size of multipart part `number` (from 1): the memory a write holds. S3's smallest part is
/// 5 MiB (but the last) and it allows 10,000 parts, so parts start at the minimum (a layer of
/// a few GiB never holds more) and grow for very large objects: 5 MiB up to 5,000 MiB, then
/// 16 MiB up to ~67 GiB, then 64 MiB, up to ~330 GiB in all.
pub fn part_size(number: usize) -> usize {
    match number {
        0..=1000 => 5 * MIB,
        1001..=5000 => 16 * MIB,
        _ => 64 * MIB,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parts_stay_small_for_layers_and_reach_hundreds_of_gib() {
        use super::{MIB, part_size};
        assert_eq!(part_size(1), 5 * MIB);
        let total: usize = (1..=10_000).map(part_size).sum();
        assert!(total > 300 * 1024 * MIB, "{total}");
        assert!((1..10_000).all(|n| part_size(n) <= part_size(n + 1)));
    }
}

#[cfg(target_arch = "wasm32")]
mod provider;
