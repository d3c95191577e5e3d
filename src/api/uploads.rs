//! `POST /v2/<name>/blobs/uploads/?digest=<d>`: a whole blob in one request.

use crate::blobs::{self, BlobRecord, Part};
use crate::digest::Digest;
use crate::errcode::{ErrorCode, RegistryError};
use crate::keys;
use crate::message::{CONTENT_DIGEST, Request, Response};
use crate::name::RepoName;
use crate::route::url;
use crate::store::{BlobStore, MetaStore, StoreError, Stores, hashes_for};
use http::{StatusCode, header};

pub async fn start<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    match req.query_param("digest") {
        Some(digest) => monolithic(stores, name, &Digest::parse(&digest)?, req).await,
        None => Err(RegistryError::new(
            ErrorCode::Unsupported,
            "upload sessions are not implemented yet; push with ?digest=",
        )),
    }
}

/// Stream the body into a new object while the blob store hashes it; keep it only if it hashes
/// to `digest` (and has the announced length). On any mismatch nothing is stored.
async fn monolithic<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let declared_length = content_length(&req)?;
    let object = keys::new_part((stores.random)());
    let written = stores
        .blobs
        .write(&object, req.body, hashes_for(&[digest.algorithm()]))
        .await
        .map_err(|e| match e {
            StoreError::BodyInterrupted(why) => {
                RegistryError::new(ErrorCode::BlobUploadInvalid, why)
            }
            other => blobs::internal(other),
        })?;
    let part = Part {
        name: object,
        size: written.size,
    };
    let actual = written.hashes.into_iter().next().map(|h| h.finish());
    let verdict = if declared_length.is_some_and(|n| n != written.size) {
        Err(RegistryError::new(
            ErrorCode::SizeInvalid,
            format!(
                "Content-Length {} but {} bytes received",
                declared_length.unwrap_or(0),
                written.size
            ),
        ))
    } else if actual.as_ref() != Some(digest) {
        Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!(
                "content hashes to {}, not {digest}",
                actual.map_or("nothing".into(), |d| d.to_string())
            ),
        ))
    } else {
        Ok(())
    };
    if let Err(err) = verdict {
        blobs::discard(stores, &[part]).await;
        return Err(err);
    }
    blobs::commit(
        stores,
        name,
        digest,
        BlobRecord {
            size: written.size,
            parts: vec![part],
        },
    )
    .await?;
    Ok(Response::new(StatusCode::CREATED)
        .header(header::LOCATION, url::blob(name, digest))
        .header(CONTENT_DIGEST, digest)
        .empty())
}

fn content_length<B>(req: &Request<B>) -> Result<Option<u64>, RegistryError> {
    req.header(header::CONTENT_LENGTH)
        .map(|v| {
            v.parse().map_err(|_| {
                RegistryError::new(ErrorCode::SizeInvalid, format!("bad Content-Length {v:?}"))
            })
        })
        .transpose()
}
