//! `GET /v2/<name>/referrers/<digest>?artifactType=&n=&last=`: the manifests whose subject is
//! `<digest>`, as an image index. Always 200 (an empty index when there are none). Paged like
//! tags and the catalog (see [`super::listing`]): `last` is the digest of the last referrer
//! received, and a `Link` to the next page (keeping the filter) follows when more remain.

use super::listing::{Kept, Page, collect, next_link};
use crate::registry::keys;
use crate::registry::manifests::ReferrerDescriptor;
use crate::registry::store::{BlobStore, MetaStore, StoreError, Stores, internal};
use crate::wire::digest::Digest;
use crate::wire::errcode::RegistryError;
use crate::wire::manifest::OCI_INDEX;
use crate::wire::message::{Request, Response};
use crate::wire::name::RepoName;
use http::{HeaderName, StatusCode, header};

const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

pub async fn list<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    subject: &Digest,
    req: &Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let page = Page::from_request(req)?;
    let filter = req.query_param("artifactType");
    let prefix = keys::referrers_prefix(name, subject);
    let after = page.last.as_deref().map(entry_name_of);
    let (manifests, more) = collect(stores, &prefix, after.as_deref(), page.n, async |entry: &str| {
        let Some(kept) = referrer(stores, name, subject, &prefix, entry).await? else { return Ok(None) };
        Ok(filter.as_ref().is_none_or(|f| kept.entry.artifact_type.as_ref() == Some(f)).then_some(kept))
    })
    .await?;
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = Response::new(StatusCode::OK);
    if let (true, Some(last)) = (more, manifests.last()) {
        let extra: Vec<(&str, &str)> = filter.iter().map(|f| ("artifactType", f.as_str())).collect();
        let path = format!("/v2/{name}/referrers/{subject}");
        response = response.header(header::LINK, next_link(&path, page.n, &last.digest, &extra));
    }
    if filter.is_some() {
        response = response.header(FILTERS_APPLIED, "artifactType");
    }
    Ok(response.full(serde_json::to_vec(&index).expect("json")).header(header::CONTENT_TYPE, OCI_INDEX))
}

/// The index entry name a `last` digest stands for (`sha256:<hex>` is entry `sha256-<hex>`).
/// Not validated: any string is a position in the lexical order, and a bad one lists nothing
/// wrong, only from another place.
fn entry_name_of(last: &str) -> String {
    last.replacen(':', "-", 1)
}

/// The descriptor the index entry `entry` (under `prefix`) holds, when it is still a referrer of
/// `subject` in this repository: an entry outlives its manifest for a moment after a delete.
async fn referrer<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    subject: &Digest,
    prefix: &str,
    entry: &str,
) -> Result<Option<Kept<ReferrerDescriptor>>, RegistryError> {
    let Some(digest) = keys::parse_referrer_entry_name(entry) else { return Ok(None) };
    let Some(record) = crate::registry::manifests::record(stores, name, &digest).await? else { return Ok(None) };
    if record.subject.as_deref() != Some(subject.to_string().as_str()) {
        return Ok(None);
    }
    let bytes = match stores.blobs.read_bytes(&format!("{prefix}{entry}")).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound) => return Ok(None), // deleted meanwhile
        Err(e) => return Err(internal(e)),
    };
    let Ok(descriptor) = serde_json::from_slice::<ReferrerDescriptor>(&bytes) else { return Ok(None) };
    if descriptor.digest != digest.to_string() {
        return Ok(None);
    }
    // The stored entry is the descriptor as serialized into the response: its length is what it
    // adds to the page.
    Ok(Some(Kept { entry: descriptor, bytes: bytes.len() + 1 }))
}
