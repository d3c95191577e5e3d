//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use crate::blobs::{self, BlobRecord, ObjectPages, Part, internal};
use crate::digest::{Algorithm, Digest};
use crate::errcode::{ErrorCode, RegistryError};
use crate::keys;
use crate::manifest::{self, MAX_MANIFEST_SIZE, Manifest};
use crate::message::{CONTENT_DIGEST, Request, Response};
use crate::name::{RepoName, Tag};
use crate::reference::Reference;
use crate::route::url;
use crate::store::{BlobStore, MetaStore, Stores};
use http::{HeaderName, StatusCode, header};
use serde::{Deserialize, Serialize};

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");

type Result<T> = std::result::Result<T, RegistryError>;

/// A manifest in a repository. Its bytes are a blob (`blob/<digest>`), stored once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    pub subject: Option<String>,
}

/// What the referrers API lists for a manifest with a subject (stored as its index object).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

fn unknown(name: &RepoName, reference: &str) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestUnknown, format!("manifest {reference} unknown to repository {name}"))
}

pub async fn record<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<Option<ManifestRecord>> {
    let Some(bytes) = stores.meta.get(&keys::manifest(name, digest)).await.map_err(internal)? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RegistryError::new(ErrorCode::Internal, format!("corrupt manifest record {digest}: {e}")))
}

/// The digest a tag points at, if the tag exists.
pub async fn tag_target<M: MetaStore, B>(stores: &Stores<M, B>, name: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
    let Some(bytes) = stores.meta.get(&keys::tag(name, tag)).await.map_err(internal)? else { return Ok(None) };
    let text = String::from_utf8(bytes).map_err(|_| RegistryError::new(ErrorCode::Internal, "corrupt tag"))?;
    Digest::parse(&text)
        .map(Some)
        .map_err(|_| RegistryError::new(ErrorCode::Internal, format!("corrupt tag {}", tag.as_str())))
}

/// Resolve a reference to a manifest of this repository. A tag whose manifest was deleted
/// resolves to nothing.
async fn resolve<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    reference: &str,
) -> Result<(Digest, ManifestRecord)> {
    let digest = match Reference::parse(reference).map_err(|_| unknown(name, reference))? {
        Reference::Digest(digest) => digest,
        Reference::Tag(tag) => tag_target(stores, name, &tag).await?.ok_or_else(|| unknown(name, reference))?,
    };
    let record = record(stores, name, &digest).await?.ok_or_else(|| unknown(name, reference))?;
    Ok((digest, record))
}

fn manifest_headers<S>(response: Response<S>, digest: &Digest, record: &ManifestRecord) -> Response<S> {
    response
        .header(header::CONTENT_TYPE, &record.media_type)
        .header(CONTENT_DIGEST, digest)
        .header(header::ETAG, format!("\"{digest}\""))
}

pub async fn head<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    reference: &str,
) -> Result<Response<B::Outgoing>> {
    let (digest, record) = resolve(stores, name, reference).await?;
    Ok(manifest_headers(Response::new(StatusCode::OK), &digest, &record).header(header::CONTENT_LENGTH, record.size))
}

pub async fn get<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    reference: &str,
) -> Result<Response<B::Outgoing>> {
    let (digest, record) = resolve(stores, name, reference).await?;
    let bytes = blobs::record(stores, &digest)
        .await?
        .ok_or_else(|| RegistryError::new(ErrorCode::Internal, format!("manifest {digest} has no stored bytes")))?;
    let stream = stores.blobs.read_extents(bytes.extents(0, bytes.size)).await.map_err(internal)?;
    Ok(manifest_headers(Response::new(StatusCode::OK), &digest, &record).stream(bytes.size, stream))
}

pub async fn put<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    reference: &str,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>> {
    let reference = Reference::parse(reference)?;
    let too_large = || {
        RegistryError::new(ErrorCode::SizeInvalid, format!("manifests are limited to {MAX_MANIFEST_SIZE} bytes"))
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    if req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_MANIFEST_SIZE as u64)
    {
        return Err(too_large());
    }
    let content_type = req.header(header::CONTENT_TYPE).map(str::to_owned);
    let bytes = stores.blobs.collect(req.body, MAX_MANIFEST_SIZE).await.map_err(internal)?.ok_or_else(too_large)?;
    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => Algorithm::Sha256,
    };
    let digest = Digest::of(algorithm, &bytes);
    if let Reference::Digest(expected) = &reference
        && *expected != digest
    {
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!("manifest hashes to {digest}, not {expected}"),
        ));
    }
    let manifest = manifest::parse(&bytes, content_type.as_deref())?;
    check_references(stores, name, &manifest).await?;
    store(stores, name, &digest, &manifest, bytes).await?;
    if let Reference::Tag(tag) = &reference {
        // The fact first, then its index entry: a listing checks each entry against the facts.
        blobs::mark(stores, &format!("{}{}", keys::tags_prefix(name), tag.as_str()), Vec::new()).await?;
        stores.meta.set(&keys::tag(name, tag), digest.to_string().as_bytes()).await.map_err(internal)?;
    }
    let mut response = Response::new(StatusCode::CREATED)
        .header(header::LOCATION, url::manifest(name, &digest.to_string()))
        .header(CONTENT_DIGEST, &digest);
    if let Some(subject) = &manifest.subject {
        response = response.header(OCI_SUBJECT, subject);
    }
    Ok(response.empty())
}

/// Every blob and child manifest must be in this repository (a missing subject is allowed).
async fn check_references<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    manifest: &Manifest,
) -> Result<()> {
    for blob in &manifest.blobs {
        if stores.meta.get(&keys::blob_link(name, blob)).await.map_err(internal)?.is_none() {
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!("blob {blob} is not in repository {name}"),
            ));
        }
    }
    for child in &manifest.children {
        if record(stores, name, child).await?.is_none() {
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!("manifest {child} is not in repository {name}"),
            ));
        }
    }
    Ok(())
}

/// Store the bytes (as a blob), the manifest record, and its referrers entry.
async fn store<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    manifest: &Manifest,
    bytes: Vec<u8>,
) -> Result<()> {
    let size = bytes.len() as u64;
    if blobs::record(stores, digest).await?.is_none() {
        let object = keys::new_part((stores.random)());
        stores.blobs.write_bytes(&object, bytes).await.map_err(internal)?;
        blobs::commit(stores, name, digest, BlobRecord { size, parts: vec![Part { name: object, size }] }).await?;
    } else {
        blobs::link(stores, name, digest).await?;
    }
    let record = ManifestRecord {
        media_type: manifest.media_type.clone(),
        size,
        subject: manifest.subject.as_ref().map(Digest::to_string),
    };
    stores
        .meta
        .set(&keys::manifest(name, digest), &serde_json::to_vec(&record).expect("records serialize"))
        .await
        .map_err(internal)?;
    if let Some(subject) = &manifest.subject {
        let descriptor = ReferrerDescriptor {
            media_type: manifest.media_type.clone(),
            digest: digest.to_string(),
            size,
            artifact_type: manifest.artifact_type.clone(),
            annotations: manifest.annotations.clone(),
        };
        blobs::mark(
            stores,
            &keys::referrer(name, subject, digest),
            serde_json::to_vec(&descriptor).expect("descriptors serialize"),
        )
        .await?;
    }
    Ok(())
}

pub async fn delete<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    reference: &str,
) -> Result<Response<B::Outgoing>> {
    match Reference::parse(reference)? {
        Reference::Tag(tag) => {
            tag_target(stores, name, &tag).await?.ok_or_else(|| unknown(name, reference))?;
            stores.meta.delete(&keys::tag(name, &tag)).await.map_err(internal)?;
            blobs::unmark(stores, &format!("{}{}", keys::tags_prefix(name), tag.as_str())).await?;
        }
        Reference::Digest(digest) => {
            let record = record(stores, name, &digest).await?.ok_or_else(|| unknown(name, reference))?;
            // From here on neither the digest nor any tag resolves to it.
            stores.meta.delete(&keys::manifest(name, &digest)).await.map_err(internal)?;
            if let Some(subject) = record.subject.as_deref().and_then(|s| Digest::parse(s).ok()) {
                blobs::unmark(stores, &keys::referrer(name, &subject, &digest)).await?;
            }
            untag(stores, name, &digest).await?;
        }
    }
    Ok(Response::new(StatusCode::ACCEPTED).empty())
}

/// Remove the tags that point at a deleted manifest.
async fn untag<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, name: &RepoName, digest: &Digest) -> Result<()> {
    let prefix = keys::tags_prefix(name);
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in &objects {
            let Ok(tag) = Tag::parse(&object[prefix.len()..]) else { continue };
            if tag_target(stores, name, &tag).await?.as_ref() == Some(digest) {
                stores.meta.delete(&keys::tag(name, &tag)).await.map_err(internal)?;
                blobs::unmark(stores, object).await?;
            }
        }
    }
    Ok(())
}
