//! `GET /v2/_catalog?n=&last=`: every repository the caller may pull, in lexical order (every
//! repository when authentication is off).
//!
//! One request looks at [`MAX_EXAMINED`] names at most: a caller who may pull few of the
//! repositories gets a short page (or an empty one) and a `Link` that goes on from where it
//! stopped looking, rather than a scan of the whole index in one request. That position may be a
//! repository the caller may not see, so it travels sealed (`cursor=`, [`super::cursor`]).

use super::cursor;
use super::listing::{Kept, MAX_ENTRIES, Page, collect_within, next_link};
use crate::auth::Identity;
use crate::registry::keys;
use crate::registry::store::{BlobStore, MetaStore, Stores};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::{Request, Response};
use http::{StatusCode, header};

/// Repository names one catalog request looks at, at most.
pub const MAX_EXAMINED: usize = 10 * MAX_ENTRIES;

pub async fn list<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    identity: &Identity,
    req: &Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let page = Page::from_request(req)?;
    let auth = &stores.config.auth;
    let resumed = match req.query_param("cursor") {
        None => None,
        Some(sealed) => Some(cursor::open(auth, &sealed).ok_or_else(|| {
            RegistryError::new(
                ErrorCode::Unsupported,
                "cursor= was not made by this registry, or its secrets changed since: list from the start",
            )
            .with_status(StatusCode::BAD_REQUEST)
        })?),
    };
    let after = match (page.last.as_deref(), resumed.as_deref()) {
        (Some(last), Some(resumed)) => Some(last.max(resumed)),
        (last, resumed) => last.or(resumed),
    };
    let collected = collect_within(stores, keys::REPOS_PREFIX, after, page.n, MAX_EXAMINED, async |name: &str| {
        Ok(identity.lists(auth, name).then(|| Kept::name(name)))
    })
    .await?;
    let repositories = collected.entries;
    let body = serde_json::to_vec(&serde_json::json!({ "repositories": repositories })).expect("json");
    let mut response = Response::new(StatusCode::OK);
    if collected.more {
        let last = repositories.last().map(String::as_str).or(page.last.as_deref()).unwrap_or("");
        let link = match &collected.looked_to {
            Some(position) => {
                let sealed = cursor::seal(auth, position, (stores.random)());
                next_link("/v2/_catalog", page.n, last, &[("cursor", &sealed)])
            }
            None => next_link("/v2/_catalog", page.n, last, &[]),
        };
        response = response.header(header::LINK, link);
    }
    Ok(response.json(body))
}
