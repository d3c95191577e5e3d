//! Endpoints of mirrored repositories (`crate::mirror`): manifests and blobs pulled through from
//! the upstream and cached here (the cache protocol: `crate::mirror::cache`); everything that
//! would write is refused.

use super::Background;
use crate::config::mirrors::Target;
use crate::mirror::cache::{self, Asked, ask_for_blob, cached, vouch};
use crate::mirror::claim::{self, Claim, Turn};
use crate::mirror::client::Client;
use crate::registry::store::{BlobStore, MetaStore, Outbound, Stores};
use crate::registry::{blobs, keys};
use crate::wire::digest::Digest;
use crate::wire::errcode::RegistryError;
use crate::wire::message::{Request, Response};
use crate::wire::name::RepoName;
use http::{HeaderName, Method, StatusCode, header};

type Result<T> = std::result::Result<T, RegistryError>;

/// Said on an answer from the cache that the upstream could not confirm.
pub const MIRROR_HEADER: HeaderName = HeaderName::from_static("x-berth-mirror");

pub async fn manifest<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &Stores<M, B>,
    outbound: &O,
    target: &Target<'_>,
    name: &RepoName,
    reference: &str,
    method: &Method,
) -> Result<Response<B::Outgoing>> {
    let client = Client { stores, outbound, upstream: target.upstream, remote: &target.remote };
    let stale = cache::manifest(&client, name, reference).await?;
    let response = if method == Method::HEAD {
        super::manifests::head(stores, name, reference).await?
    } else {
        super::manifests::get(stores, name, reference).await?
    };
    Ok(match stale {
        Some(why) => response.header(MIRROR_HEADER, format!("stale; {why}")),
        None => response,
    })
}

/// A blob of a mirrored repository: from the cache, else streamed from the upstream (the
/// background future writes and verifies the store's copy, then releases the client's last
/// bytes or cuts them off).
///
/// A blob is served from here only once it is linked into this repository, and it is linked
/// only by a fetch from the upstream or when the upstream says it has the blob in its own
/// repository (a HEAD there): that some other repository here holds the digest is never an
/// answer, so neither a GET nor a HEAD tells anything about private content.
///
/// Of concurrent misses of one blob, on any instances, one fetches it: the one that takes the
/// blob's fetch claim ([`claim`]). The others wait until the blob is stored, then serve it from
/// the cache; if the fetch fails, or its owner dies, one of them fetches it in turn.
pub async fn blob<'a, M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &'a Stores<M, B>,
    outbound: &'a O,
    target: &Target<'_>,
    name: RepoName,
    digest: Digest,
    req: &Request<B::Incoming>,
) -> Result<(Response<B::Outgoing>, Option<Background<'a>>)> {
    let (name, digest) = (&name, &digest);
    let chain = keys::mirror_fetch(digest);
    loop {
        if cached(stores, name, digest).await? {
            stores.count("mirror_blob_hits", 1);
            let response = if req.method == Method::HEAD {
                super::blobs::head(stores, name, digest).await?
            } else {
                super::blobs::get(stores, name, digest, req).await?
            };
            return Ok((response, None));
        }
        if let Some(stored) = blobs::record(stores, digest).await?
            && blobs::parts_present(stores, &stored).await?
        {
            // The bytes are here for another repository: linked here only if the upstream
            // vouches for the digest in this repository.
            vouch(stores, outbound, target, name, digest).await?;
            blobs::link(stores, name, digest, stored.size).await?;
            continue;
        }
        if req.method == Method::HEAD || target.upstream.pass_redirects {
            // A HEAD asks the upstream, and fetches nothing; with redirects passed on, the
            // client is sent where the upstream sends it (nothing to share a fetch of).
            return fetch_blob(stores, outbound, target, name, digest, req, None).await;
        }
        // Ready once stored whole: a record whose parts are gone is fetched again (its commit
        // replaces it), not waited for.
        let stored = async |_| match blobs::record(stores, digest).await? {
            Some(stored) => blobs::parts_present(stores, &stored).await,
            None => Ok(false),
        };
        match claim::turn(stores, outbound, &chain, stored).await? {
            Turn::Ready => {}
            Turn::Fetch(claim) => return fetch_blob(stores, outbound, target, name, digest, req, Some(claim)).await,
            Turn::Alone => return fetch_blob(stores, outbound, target, name, digest, req, None).await,
        }
    }
}

/// Ask the upstream for the blob: its headers for a HEAD; for a GET its bytes, relayed to the
/// client and the store (the background future releases `claim` when the store's copy is done).
async fn fetch_blob<'a, M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &'a Stores<M, B>,
    outbound: &'a O,
    target: &Target<'_>,
    name: &RepoName,
    digest: &Digest,
    req: &Request<B::Incoming>,
    claim: Option<Claim>,
) -> Result<(Response<B::Outgoing>, Option<Background<'a>>)> {
    stores.count("mirror_blob_upstream_asks", 1);
    let answer = ask_for_blob(stores, outbound, target, name, digest, req.method.clone()).await;
    let (response, size) = match answer {
        Ok(Asked::Body(response, size)) => (response, size),
        other => {
            if let Some(claim) = claim {
                claim::release(stores, claim, false).await;
            }
            return Ok((answer_of(digest, other?), None));
        }
    };
    stores.count("mirror_upstream_bytes", size);
    let headers = super::blobs::blob_headers(Response::new(StatusCode::OK), digest);
    let (incoming, outgoing, verdict) = outbound.relay(response.body);
    let (name, digest) = (name.clone(), digest.clone());
    let background: Background<'a> = Box::pin(async move {
        // Verified against the digest and `size` before it is committed and linked.
        let store = super::uploads::store_whole(stores, &name, None, &digest, incoming, Some(size));
        let kept = match &claim {
            // The claim's heartbeat goes on beside the copy, however long it takes.
            Some(claim) => {
                let beating = std::pin::pin!(claim.heartbeat(stores, outbound));
                match futures::future::select(std::pin::pin!(store), beating).await {
                    futures::future::Either::Left((kept, _)) => kept,
                    futures::future::Either::Right(((), _)) => unreachable!("the heartbeat never ends"),
                }
            }
            None => store.await,
        };
        if let Err(err) = &kept {
            stores.log(format_args!(
                "mirror: blob {digest} of {name} not cached: {}",
                err.detail.as_deref().unwrap_or("?")
            ));
        }
        if let Some(claim) = claim {
            claim::release(stores, claim, kept.is_ok()).await;
        }
        outbound.settle(verdict, kept.is_ok());
    });
    Ok((headers.stream(size, outgoing), Some(background)))
}

/// The answer for an upstream's HEAD (the blob's headers) or redirect (passed on).
fn answer_of<Body, Outgoing>(digest: &Digest, asked: Asked<Body>) -> Response<Outgoing> {
    match asked {
        Asked::Head(size) => {
            super::blobs::blob_headers(Response::new(StatusCode::OK), digest).header(header::CONTENT_LENGTH, size)
        }
        Asked::Redirect(location) => super::blobs::blob_headers(Response::new(StatusCode::TEMPORARY_REDIRECT), digest)
            .header(header::LOCATION, location)
            .header(header::CACHE_CONTROL, "no-store")
            .empty(),
        Asked::Body(..) => unreachable!("a body is relayed, not answered"),
    }
}
