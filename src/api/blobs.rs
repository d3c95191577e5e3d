//! `GET|HEAD /v2/<name>/blobs/<digest>`: blobs, streamed from the blob store.

use crate::blobs::{self, internal};
use crate::digest::Digest;
use crate::errcode::RegistryError;
use crate::message::{CONTENT_DIGEST, Response};
use crate::name::RepoName;
use crate::store::{BlobStore, MetaStore, Stores};
use http::{StatusCode, header};

pub async fn head<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let blob = blobs::linked(stores, name, digest).await?;
    Ok(blob_headers(Response::new(StatusCode::OK), digest)
        .header(header::CONTENT_LENGTH, blob.size))
}

pub async fn get<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let blob = blobs::linked(stores, name, digest).await?;
    let stream = stores
        .blobs
        .read_extents(blob.extents(0, blob.size))
        .await
        .map_err(internal)?;
    Ok(blob_headers(Response::new(StatusCode::OK), digest).stream(blob.size, stream))
}

fn blob_headers<S>(response: Response<S>, digest: &Digest) -> Response<S> {
    response
        .header(CONTENT_DIGEST, digest)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ETAG, format!("\"{digest}\""))
}
