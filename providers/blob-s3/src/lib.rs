//! `berth-blob-s3`: Berth's blob store (`berth:blob-store/store@0.3.0`) over an S3-compatible
//! bucket, reached by outbound `wasi:http` from inside wasm, so the same component serves under
//! `spin up`, on edge hosts and in `berth-runner` (`--blob-store dependency` with a manifest that
//! names it, or `--blob-store berth_blob_s3.wasm`).
//!
//! - Requests are presigned URLs made by `rusty-s3` (SigV4, query-string form); credentials
//!   never leave the signing and are never logged.
//! - Writes stream: bytes are hashed as they pass and sent as parts of a multipart upload
//!   ([`PART_SIZE`] held at a time), or as one PUT when the object is smaller than a part.
//!   Both end with `If-None-Match: *`: the object appears whole, once, or not at all, and of
//!   concurrent writers of one name exactly one succeeds (S3's conditional writes).
//! - Reads hand S3's response body on as the read stream: the bytes do not pass through here.
//! - `presign-read` makes the URLs of blob redirects.
//!
//! [`settings`] reads the Spin variables and [`answer`] classifies S3's answers; the wasm glue
//! in `provider` only moves requests and bytes.

pub mod answer;
pub mod settings;

/// Bytes held per multipart part: S3's minimum part is 5 MiB (but the last), its maximum part
/// count 10,000, so 8 MiB parts allow objects up to 78 GiB while memory stays bounded.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

#[cfg(target_arch = "wasm32")]
mod provider;
