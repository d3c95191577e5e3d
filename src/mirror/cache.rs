//! The mirror's cache protocol (what the endpoints in `crate::api::mirror` serve from):
//!
//! - A manifest by digest is fetched once and kept (its bytes are checked against the digest).
//! - A manifest by tag is served from the cache while its tag was confirmed upstream less than
//!   the upstream's `tag_ttl` ago; then a HEAD asks for the tag's digest again (a GET only when
//!   it changed). While the upstream cannot be reached, or refuses, the cached manifest is served
//!   with `X-Berth-Mirror: stale` and the reason is logged. An upstream 404 for a cached tag
//!   removes the tag here too (the mirror follows its upstream; the manifest stays cached by
//!   digest until garbage collection).
//! - A blob that is not cached is streamed from the upstream to the client while the blob store
//!   writes it. The store's copy is verified against the digest before it is kept, and the
//!   client's last bytes wait for that verdict: on a mismatch the client's transfer fails
//!   (its body ends short) and nothing is stored. Range requests are served from the cache.

use crate::config::events::Action;
use crate::config::mirrors::Target;
use crate::mirror::claim::{self, Claim, Turn};
use crate::mirror::client::{Client, UpstreamError};
use crate::registry::events::Event;
use crate::registry::store::{BlobStore, MetaStore, Outbound, Stores, internal};
use crate::registry::{blobs, keys, manifests};
use crate::wire::digest::{Algorithm, Digest, RunningHash};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::manifest::{self, MAX_MANIFEST_SIZE};
use crate::wire::message::CONTENT_DIGEST;
use crate::wire::name::{RepoName, Tag};
use crate::wire::reference::Reference;
use http::{Method, header};

type Result<T> = std::result::Result<T, RegistryError>;

/// Every manifest type Berth stores, for the upstream's content negotiation.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Make the manifest `reference` (a tag or a digest) of a mirrored repository current in the
/// cache (module doc); `Some(why)` when a cached tag is served unconfirmed.
pub async fn manifest<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    client: &Client<'_, M, B, O>,
    name: &RepoName,
    reference: &str,
) -> Result<Option<String>> {
    match Reference::parse(reference).map_err(|_| unknown(name, reference))? {
        Reference::Digest(digest) => {
            cache_manifest(client, name, &digest).await?;
            Ok(None)
        }
        Reference::Tag(tag) => resolve_tag(client, name, &tag).await,
    }
}

/// Make the tag here follow the upstream's, unless it was confirmed less than the TTL ago;
/// `Some(why)` when the cached tag is served unconfirmed.
///
/// Concurrent requests for a tag that needs confirming ask the upstream once: the one that holds
/// the tag's fetch claim; the others wait, and take its answer (a tag confirmed since they came).
/// The tag keeps resolving to the cached manifest until it is moved to the new one.
async fn resolve_tag<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    client: &Client<'_, M, B, O>,
    name: &RepoName,
    tag: &Tag,
) -> Result<Option<String>> {
    let stores = client.stores;
    let came = (stores.now)();
    let read = async |key: String| -> Result<Option<String>> {
        let value = stores.meta.get(&key).await.map_err(internal)?;
        Ok(value.and_then(|v| String::from_utf8(v).ok()))
    };
    // When the upstream last confirmed the tag.
    let checked_at = async || {
        Ok::<_, RegistryError>(read(keys::mirror_checked(name, tag)).await?.and_then(|c| c.parse::<u64>().ok()))
    };
    // The last confirmation, and the last failed attempt with its reason.
    type Attempts = (Option<u64>, Option<(u64, String)>);
    let attempts = async || -> Result<Attempts> {
        let checked = checked_at().await?;
        let failed = read(keys::mirror_unconfirmed(name, tag)).await?.and_then(|f| {
            let (at, why) = f.split_once(' ')?;
            Some((at.parse::<u64>().ok()?, why.to_owned()))
        });
        Ok((checked, failed))
    };
    let fresh = |checked: Option<u64>| {
        checked.is_some_and(|at| (stores.now)().saturating_sub(at) < client.upstream.tag_ttl_secs)
    };
    // The common case first, with the reads it needs only: a tag confirmed within the TTL.
    if manifests::tagged(stores, name, tag).await?.is_some() && fresh(checked_at().await?) {
        return Ok(None);
    }
    // Confirmed within the TTL; or, for a request that waited for another's attempt, tried since
    // it came (confirmed, or failed: then it serves the cache, said stale, as that attempt did).
    let confirmed = async |waited: bool| -> Result<bool> {
        if manifests::tagged(stores, name, tag).await?.is_none() {
            return Ok(false);
        }
        let (checked, failed) = attempts().await?;
        let tried_since = checked.max(failed.map(|(at, _)| at)).is_some_and(|at| at >= came);
        Ok(fresh(checked) || (waited && tried_since))
    };
    let chain = keys::mirror_fetch_manifest(name, tag.as_str());
    let claim = match claim::turn(stores, client.outbound, &chain, confirmed).await? {
        Turn::Ready => {
            let (checked, failed) = attempts().await?;
            return Ok(failed.filter(|(at, _)| *at >= came && checked.is_none_or(|c| c < *at)).map(|(_, why)| why));
        }
        Turn::Fetch(claim) => Some(claim),
        Turn::Alone => None,
    };
    let refreshed = refresh_tag(client, name, tag, claim.as_ref()).await;
    if let Some(claim) = claim {
        claim::release(stores, claim, matches!(refreshed, Ok(None))).await;
    }
    refreshed
}

/// Ask the upstream for the tag (a HEAD, and a GET when its digest is not cached here), holding
/// the tag's fetch claim.
async fn refresh_tag<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    client: &Client<'_, M, B, O>,
    name: &RepoName,
    tag: &Tag,
    claim: Option<&Claim>,
) -> Result<Option<String>> {
    let stores = client.stores;
    let cached = manifests::tagged(stores, name, tag).await?.map(|(digest, _)| digest);
    let path = format!("/v2/{}/manifests/{}", client.remote, tag.as_str());
    let asked = client.send(Method::HEAD, &path, MANIFEST_ACCEPT).await;
    beat(stores, claim).await;
    let stale = async |why: String| -> Result<Option<String>> {
        match &cached {
            Some(_) => {
                stores.log(format_args!("mirror: serving {name}:{} from the cache: {why}", tag.as_str()));
                stores.count("mirror_stale_answers", 1);
                // Best effort: the requests that waited for this attempt take its answer.
                let failed = format!("{} {why}", (stores.now)());
                let _ = stores.meta.set(&keys::mirror_unconfirmed(name, tag), failed.as_bytes()).await;
                Ok(Some(why))
            }
            None => Err(unavailable(format!("{name}:{} is not cached, and {why}", tag.as_str()))),
        }
    };
    let response = match asked {
        Ok(response) => response,
        Err(UpstreamError::Unreachable(why)) => return stale(format!("{why} (unreachable)")).await,
        Err(UpstreamError::Refused(why)) => return stale(why).await,
    };
    let status = response.status;
    let upstream_digest = response.header(CONTENT_DIGEST).and_then(|d| Digest::parse(d).ok());
    client.drain(response).await;
    match status {
        200 => {}
        404 => {
            if let Some(digest) = &cached {
                manifests::remove_tag(stores, name, tag, |t| t.digest == *digest).await?;
                stores.log(format_args!("mirror: {name}:{} is gone upstream: untagged here", tag.as_str()));
            }
            return Err(RegistryError::new(
                ErrorCode::ManifestUnknown,
                format!("manifest {} unknown to {name} and to its upstream {}", tag.as_str(), client.upstream.name),
            ));
        }
        status => return stale(format!("upstream {} answered {status} for the tag", client.upstream.name)).await,
    }
    let fetched = match upstream_digest {
        Some(digest) if cached.as_ref() == Some(&digest) => Ok(digest),
        Some(digest) => cache_manifest(client, name, &digest).await.map(|()| digest),
        // An upstream that does not say the digest on HEAD: the tag's manifest is fetched.
        None => fetch_manifest(client, name, tag.as_str(), None, claim).await,
    };
    match fetched {
        Ok(digest) if cached.as_ref() == Some(&digest) => {}
        Ok(digest) => manifests::tag_as(stores, name, tag, &digest).await?,
        // The upstream confirmed a new digest but would not give it (Docker Hub's 429): the
        // cached manifest serves, said stale.
        Err(err) if err.code == ErrorCode::Unavailable && err.told && cached.is_some() => {
            return stale(err.detail.unwrap_or_default()).await;
        }
        Err(err) => return Err(err),
    }
    // Best effort: without it the tag is asked about again on the next pull.
    let _ = stores.meta.set(&keys::mirror_checked(name, tag), (stores.now)().to_string().as_bytes()).await;
    Ok(None)
}

/// Make sure the manifest `digest` is stored in `name`: concurrent misses of it (by digest, or
/// by tags that moved to it) fetch it once; the others wait for its record.
async fn cache_manifest<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    client: &Client<'_, M, B, O>,
    name: &RepoName,
    digest: &Digest,
) -> Result<()> {
    let stores = client.stores;
    let reference = digest.to_string();
    let chain = keys::mirror_fetch_manifest(name, &reference);
    let stored = async |_| Ok(manifests::record(stores, name, digest).await?.is_some());
    match claim::turn(stores, client.outbound, &chain, stored).await? {
        Turn::Ready => {}
        Turn::Fetch(claim) => {
            let fetched = fetch_manifest(client, name, &reference, Some(digest), Some(&claim)).await;
            claim::release(stores, claim, fetched.is_ok()).await;
            fetched?;
        }
        Turn::Alone => {
            fetch_manifest(client, name, &reference, Some(digest), None).await?;
        }
    }
    Ok(())
}

/// GET a manifest upstream, check it (against `expected` when known), and store it.
async fn fetch_manifest<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    client: &Client<'_, M, B, O>,
    name: &RepoName,
    reference: &str,
    expected: Option<&Digest>,
    claim: Option<&Claim>,
) -> Result<Digest> {
    let path = format!("/v2/{}/manifests/{reference}", client.remote);
    let response = match client.send(Method::GET, &path, MANIFEST_ACCEPT).await {
        Ok(response) => response,
        Err(why) => return Err(unavailable(format!("{name}@{reference} is not cached, and {why}"))),
    };
    beat(client.stores, claim).await;
    match response.status {
        200 => {}
        404 => {
            client.drain(response).await;
            return Err(unknown(name, reference));
        }
        status => {
            client.drain(response).await;
            return Err(unavailable(format!(
                "{name}@{reference} is not cached, and upstream {} answered {status}",
                client.upstream.name
            )));
        }
    }
    let content_type = response.header(header::CONTENT_TYPE).map(str::to_owned);
    let said = response.header(CONTENT_DIGEST).and_then(|d| Digest::parse(d).ok());
    let bytes = client
        .read(response.body, MAX_MANIFEST_SIZE)
        .await
        .map_err(|why| unavailable(format!("{name}@{reference}: {why}")))?
        .ok_or_else(|| unavailable(format!("upstream manifest {reference} is over {MAX_MANIFEST_SIZE} bytes")))?;
    let expected = expected.or(said.as_ref());
    let mut hash = RunningHash::new(expected.map_or(Algorithm::Sha256, Digest::algorithm));
    hash.update(&bytes);
    let digest = Digest::from_hash(hash.clone());
    if let Some(expected) = expected
        && *expected != digest
    {
        return Err(unavailable(format!(
            "upstream {} sent a manifest for {reference} that hashes to {digest}, not {expected}: nothing was cached",
            client.upstream.name
        )));
    }
    let manifest = manifest::parse(&bytes, content_type.as_deref())?;
    let size = bytes.len() as u64;
    manifests::store(client.stores, name, &digest, &manifest, bytes, hash, manifests::Referenced::MayFollow).await?;
    let mut event = Event::new(client.stores, Action::Mirror, name.as_str());
    (event.digest, event.media_type, event.size) = (Some(digest.to_string()), Some(manifest.media_type), Some(size));
    event.tag = crate::wire::name::Tag::parse(reference).ok().map(|t| t.as_str().to_owned());
    event.actor = Some(format!("mirror:{}", client.upstream.name));
    crate::registry::events::record(client.stores, Action::Mirror, &event).await?;
    Ok(digest)
}

/// Whether the blob is cached for `name`: linked here, with its record (a link without a
/// record is a fetch finishing: its link is written before its record).
pub async fn cached<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<bool> {
    Ok(blobs::is_linked(stores, name, digest).await? && blobs::record(stores, digest).await?.is_some())
}

/// The upstream has the blob in the mirrored repository (its HEAD answers 200); otherwise the
/// answer is the one a miss would get: `BLOB_UNKNOWN` for its 404, 503 when it cannot say.
pub async fn vouch<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &Stores<M, B>,
    outbound: &O,
    target: &Target<'_>,
    name: &RepoName,
    digest: &Digest,
) -> Result<()> {
    ask_for_blob(stores, outbound, target, name, digest, Method::HEAD).await.map(drop)
}

fn blob_unknown(name: &RepoName, digest: &Digest, target: &Target<'_>) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} unknown to {name} and to its upstream {}", target.upstream.name),
    )
}

/// What the upstream answered for a blob.
pub enum Asked<Body> {
    /// A HEAD's answer: the blob's size.
    Head(u64),
    /// A redirect to pass on (edge mode): where the upstream sends the client.
    Redirect(String),
    /// A GET's body of this size, to relay.
    Body(crate::registry::store::OutResponse<Body>, u64),
}

/// Send `method` (GET or HEAD) for the blob to the upstream.
pub async fn ask_for_blob<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &Stores<M, B>,
    outbound: &O,
    target: &Target<'_>,
    name: &RepoName,
    digest: &Digest,
    method: Method,
) -> Result<Asked<O::Body>> {
    let client = Client { stores, outbound, upstream: target.upstream, remote: &target.remote };
    let path = format!("/v2/{}/blobs/{digest}", target.remote);
    let head = method == Method::HEAD;
    let sent = if target.upstream.pass_redirects {
        client.send_unfollowed(method, &path, "").await
    } else {
        client.send(method, &path, "").await
    };
    let response = sent.map_err(|why| unavailable(format!("blob {digest} of {name} is not cached, and {why}")))?;
    match response.status {
        200 => {}
        301 | 302 | 303 | 307 | 308 => {
            // Edge mode: the client fetches from where the upstream sends it.
            let location = response.header(header::LOCATION).unwrap_or_default().to_owned();
            client.drain(response).await;
            return Ok(Asked::Redirect(location));
        }
        404 => {
            client.drain(response).await;
            return Err(blob_unknown(name, digest, target));
        }
        status => {
            client.drain(response).await;
            return Err(unavailable(format!(
                "blob {digest} of {name} is not cached, and upstream {} answered {status}",
                target.upstream.name
            )));
        }
    }
    let size = response.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
        unavailable(format!("upstream {} sent blob {digest} without a Content-Length", target.upstream.name))
    })?;
    if head {
        client.drain(response).await;
        return Ok(Asked::Head(size));
    }
    Ok(Asked::Body(response, size))
}

/// Say that the claim's owner is alive, if this request holds one.
pub async fn beat<M: MetaStore, B>(stores: &Stores<M, B>, claim: Option<&Claim>) {
    if let Some(claim) = claim {
        claim.beat(stores).await;
    }
}

fn unknown(name: &RepoName, reference: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} unknown to {name} and to its upstream"),
    )
}

/// The upstream could not give what is not cached: 503, with the reason for the user.
pub fn unavailable(why: String) -> RegistryError {
    RegistryError::new(ErrorCode::Unavailable, why).told()
}
