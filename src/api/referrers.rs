//! `GET /v2/<name>/referrers/<digest>?artifactType=`: the manifests whose subject is `<digest>`,
//! as an image index. Always 200 (an empty index when there are none).

use super::manifests::ReferrerDescriptor;
use crate::blobs::{ObjectPages, internal};
use crate::digest::Digest;
use crate::errcode::RegistryError;
use crate::keys;
use crate::manifest::OCI_INDEX;
use crate::message::{Request, Response};
use crate::name::RepoName;
use crate::store::{BlobStore, MetaStore, StoreError, Stores};
use http::{HeaderName, StatusCode, header};

const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

pub async fn list<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    subject: &Digest,
    req: &Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let filter = req.query_param("artifactType");
    let prefix = keys::referrers_prefix(name, subject);
    let mut manifests = Vec::new();
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in &objects {
            // Only this repository's referrers of this subject, each still a manifest here
            // with this subject: an entry outlives its manifest for a moment after a delete.
            let Some(referrer) = keys::parse_referrer_entry_name(&object[prefix.len()..]) else { continue };
            let Some(record) = super::manifests::record(stores, name, &referrer).await? else { continue };
            if record.subject.as_deref() != Some(subject.to_string().as_str()) {
                continue;
            }
            let bytes = match stores.blobs.read_bytes(object).await {
                Ok(bytes) => bytes,
                Err(StoreError::NotFound) => continue, // deleted meanwhile
                Err(e) => return Err(internal(e)),
            };
            let Ok(descriptor) = serde_json::from_slice::<ReferrerDescriptor>(&bytes) else { continue };
            if descriptor.digest != referrer.to_string() {
                continue;
            }
            if filter.as_ref().is_none_or(|f| descriptor.artifact_type.as_ref() == Some(f)) {
                manifests.push(descriptor);
            }
        }
    }
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = Response::new(StatusCode::OK);
    if filter.is_some() {
        response = response.header(FILTERS_APPLIED, "artifactType");
    }
    Ok(response.full(serde_json::to_vec(&index).expect("json")).header(header::CONTENT_TYPE, OCI_INDEX))
}
