//! `GET /v2/_catalog?n=&last=`: every repository the caller may pull, in lexical order (every
//! repository when authentication is off).

use super::listing::{Kept, Page, collect, next_link};
use crate::auth::Identity;
use crate::errcode::RegistryError;
use crate::keys;
use crate::message::{Request, Response};
use crate::store::{BlobStore, MetaStore, Stores};
use http::{StatusCode, header};

pub async fn list<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    identity: &Identity,
    req: &Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let page = Page::from_request(req)?;
    let auth = &stores.config.auth;
    let (repositories, more) = collect(stores, keys::REPOS_PREFIX, page.last.as_deref(), page.n, async |name: &str| {
        Ok(identity.lists(auth, name).then(|| Kept::name(name)))
    })
    .await?;
    let body = serde_json::to_vec(&serde_json::json!({ "repositories": repositories })).expect("json");
    let mut response = Response::new(StatusCode::OK);
    if let (true, Some(last)) = (more, repositories.last()) {
        response = response.header(header::LINK, next_link("/v2/_catalog", page.n, last, &[]));
    }
    Ok(response.json(body))
}
