//! `GET /v2/<name>/tags/list?n=&last=`.

use super::listing::{Kept, Page, collect, next_link};
use crate::registry::keys;
use crate::registry::store::{BlobStore, MetaStore, StoreError, Stores, internal};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::{Request, Response};
use crate::wire::name::{RepoName, Tag};
use http::{StatusCode, header};

pub async fn list<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    req: &Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let page = Page::from_request(req)?;
    match stores.blobs.size(&keys::repo_marker(name)).await {
        Ok(_) => {}
        Err(StoreError::NotFound) => {
            return Err(RegistryError::new(ErrorCode::NameUnknown, format!("repository {name} is unknown")));
        }
        Err(e) => return Err(internal(e)),
    }
    // An index entry counts only while its tag still resolves to a manifest of the repository
    // (the generation of the record it was set for).
    let prefix = keys::tags_prefix(name);
    let (tags, more) = collect(stores, &prefix, page.last.as_deref(), page.n, async |entry: &str| {
        let Ok(tag) = Tag::parse(entry) else { return Ok(None) };
        Ok(crate::registry::manifests::tagged(stores, name, &tag).await?.map(|_| Kept::name(entry)))
    })
    .await?;
    let body = serde_json::to_vec(&serde_json::json!({ "name": name.as_str(), "tags": tags })).expect("json");
    let mut response = Response::new(StatusCode::OK);
    if let (true, Some(last)) = (more, tags.last()) {
        response = response.header(header::LINK, next_link(&format!("/v2/{name}/tags/list"), page.n, last, &[]));
    }
    Ok(response.json(body))
}
