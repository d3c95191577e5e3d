//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`: blobs streamed from the blob store, with
//! single `Range` requests.

use crate::registry::blobs::{self, BlobRecord};
use crate::registry::keys;
use crate::registry::store::{BlobStore, MetaStore, Stores, internal};
use crate::wire::digest::Digest;
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::{CONTENT_DIGEST, Request, Response};
use crate::wire::name::RepoName;
use crate::wire::range::{RangeRequest, parse_range};
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
    if let Some(location) = redirect(stores, &blob).await? {
        // The client follows with the same request (its Range header too) to the store itself.
        return Ok(blob_headers(Response::new(StatusCode::TEMPORARY_REDIRECT), digest)
            .header(header::LOCATION, location)
            .header(header::CACHE_CONTROL, "no-store")
            .empty());
    }
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
    let extents = blob.extents(start, end);
    let mut response = blob_headers(Response::new(status), digest);
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(header::CONTENT_RANGE, format!("bytes {start}-{}/{}", end - 1, blob.size));
    }
    // Every decision is made: the host may send the bytes itself (the runner's files).
    if let Some(token) = stores.blobs.host_body(&extents).await.map_err(internal)? {
        return Ok(response.host_body(end - start, token));
    }
    let stream = stores.blobs.read_extents(extents).await.map_err(internal)?;
    Ok(response.stream(end - start, stream))
}

/// Where the client can fetch the blob from the store itself: only when redirects are on, the
/// store can presign, and the blob is one whole object (a blob made of several chunk objects
/// has no single URL, and is streamed). The caller has checked the link and the caller's access.
async fn redirect<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    blob: &BlobRecord,
) -> Result<Option<String>, RegistryError> {
    let secs = stores.config.blob_redirect_secs;
    match blob.parts.as_slice() {
        [part] if secs > 0 && part.size == blob.size => stores.blobs.presign(&part.name, secs).await.map_err(internal),
        _ => Ok(None),
    }
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

pub(super) fn blob_headers<S>(response: Response<S>, digest: &Digest) -> Response<S> {
    response
        .header(CONTENT_DIGEST, digest)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
}
