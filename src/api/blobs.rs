//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`: blobs streamed from the blob store, with
//! single `Range` requests.

use crate::blobs::{self, internal};
use crate::digest::Digest;
use crate::errcode::{ErrorCode, RegistryError};
use crate::keys;
use crate::message::{CONTENT_DIGEST, Request, Response};
use crate::name::RepoName;
use crate::range::{RangeRequest, parse_range};
use crate::store::{BlobStore, MetaStore, Stores};
use http::{StatusCode, header};

pub async fn head<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let blob = blobs::linked(stores, name, digest).await?;
    Ok(blob_headers(Response::new(StatusCode::OK), digest).header(header::CONTENT_LENGTH, blob.size))
}

pub async fn get<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    req: &Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let blob = blobs::linked(stores, name, digest).await?;
    let (status, start, end) = match parse_range(req.header(header::RANGE), blob.size) {
        RangeRequest::Whole => (StatusCode::OK, 0, blob.size),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeRequest::Unsatisfiable => {
            let err = RegistryError::new(
                ErrorCode::RangeInvalid,
                format!("range not satisfiable for a blob of {} bytes", blob.size),
            );
            return Ok(Response::error(&err).header(header::CONTENT_RANGE, format!("bytes */{}", blob.size)));
        }
    };
    let stream = stores.blobs.read_extents(blob.extents(start, end)).await.map_err(internal)?;
    let mut response = blob_headers(Response::new(status), digest);
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(header::CONTENT_RANGE, format!("bytes {start}-{}/{}", end - 1, blob.size));
    }
    Ok(response.stream(end - start, stream))
}

/// Unlink the blob from this repository (the bytes stay while other repositories use them).
pub async fn delete<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response<B::Outgoing>, RegistryError> {
    blobs::linked(stores, name, digest).await?;
    stores.meta.delete(&keys::blob_link(name, digest)).await.map_err(internal)?;
    Ok(Response::new(StatusCode::ACCEPTED).empty())
}

fn blob_headers<S>(response: Response<S>, digest: &Digest) -> Response<S> {
    response
        .header(CONTENT_DIGEST, digest)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
}
