//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`: the requests and answers; the
//! manifests and tags themselves are `crate::registry::manifests`, immutable tags' bindings
//! `crate::lifecycle::immutable`.

use crate::lifecycle::immutable;
use crate::registry::blobs;
use crate::registry::manifests::{self, ManifestRecord};
use crate::registry::store::{BlobStore, MetaStore, Stores, internal};
use crate::wire::digest::{Algorithm, Digest, RunningHash};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::manifest::{self, MAX_MANIFEST_SIZE};
use crate::wire::message::{CONTENT_DIGEST, Request, Response};
use crate::wire::name::Tag;
use crate::wire::reference::Reference;
use crate::wire::route::url;
use http::{HeaderName, HeaderValue, StatusCode, header};

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");

/// The most `?tag=` parameters one manifest PUT may carry. Each tag is several storage calls,
/// and each is answered by a header line of its own, which clients cap: hyper (under reqwest and
/// the Rust OCI clients) refuses a response of more than 100 header lines.
pub const MAX_TAGS_PER_PUT: usize = 64;

type Result<T> = std::result::Result<T, RegistryError>;

fn manifest_headers<S>(response: Response<S>, digest: &Digest, record: &ManifestRecord) -> Response<S> {
    response
        .header(header::CONTENT_TYPE, &record.media_type)
        .header(CONTENT_DIGEST, digest)
        .header(header::ETAG, format!("\"{digest}\""))
}

pub async fn head<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &crate::wire::name::RepoName,
    reference: &str,
) -> Result<Response<B::Outgoing>> {
    let (digest, record) = manifests::resolve(stores, name, reference).await?;
    Ok(manifest_headers(Response::new(StatusCode::OK), &digest, &record).header(header::CONTENT_LENGTH, record.size))
}

pub async fn get<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &crate::wire::name::RepoName,
    reference: &str,
) -> Result<Response<B::Outgoing>> {
    let (digest, record) = manifests::resolve(stores, name, reference).await?;
    let bytes = blobs::record(stores, &digest)
        .await?
        .ok_or_else(|| RegistryError::new(ErrorCode::Internal, format!("manifest {digest} has no stored bytes")))?;
    let stream = stores.blobs.read_extents(bytes.extents(0, bytes.size)).await.map_err(internal)?;
    Ok(manifest_headers(Response::new(StatusCode::OK), &digest, &record).stream(bytes.size, stream))
}

pub async fn put<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &crate::wire::name::RepoName,
    reference: &str,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>> {
    let reference = Reference::parse(reference)?;
    // Checked before anything is stored: a refused tag leaves no manifest behind.
    let extra_tags = tag_parameters(&req, &reference)?;
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
    let bytes = stores
        .blobs
        .collect(req.body, MAX_MANIFEST_SIZE)
        .await
        .map_err(|e| super::body_error(e, ErrorCode::ManifestInvalid))?
        .ok_or_else(too_large)?;
    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => Algorithm::Sha256,
    };
    // Hashed once: the digest, and the hash a new blob's session is finished with.
    let mut hash = RunningHash::new(algorithm);
    hash.update(&bytes);
    let digest = Digest::from_hash(hash.clone());
    if let Reference::Digest(expected) = &reference
        && *expected != digest
    {
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!("manifest hashes to {digest}, not {expected}"),
        ));
    }
    let manifest = manifest::parse(&bytes, content_type.as_deref())?;
    manifests::check_references(stores, name, &manifest).await?;
    let tags: Vec<&Tag> = match &reference {
        Reference::Tag(tag) => vec![tag],
        Reference::Digest(_) => extra_tags.iter().collect(),
    };
    let bound = immutable::bind_tags(stores, name, &tags, &digest).await?;
    if let Err(err) = manifests::push(stores, name, &digest, &manifest, &bytes, &hash, &tags).await {
        immutable::unbind_failed(stores, name, &digest, &bound).await;
        return Err(err);
    }
    let mut response = Response::new(StatusCode::CREATED)
        .header(header::LOCATION, url::manifest(name, &digest.to_string()))
        .header(CONTENT_DIGEST, &digest);
    if let Some(subject) = &manifest.subject {
        response = response.header(OCI_SUBJECT, subject);
    }
    for tag in &extra_tags {
        // One header per tag applied: how a client tells that the registry tagged (a registry
        // without the feature ignores the parameter and sends none).
        response.headers.append(OCI_TAG, HeaderValue::from_str(tag.as_str()).expect("tags are header-safe"));
    }
    Ok(response.empty())
}

/// The `?tag=` parameters of a manifest PUT (distribution-spec main: push by digest and tag it
/// in the same request), each valid and each once, in the order given. They go with a digest in
/// the path only: with a tag there, which of the names the manifest is pushed under would be
/// ambiguous, so it is refused rather than half applied.
fn tag_parameters<B>(req: &Request<B>, reference: &Reference) -> Result<Vec<Tag>> {
    let Some(query) = req.query.as_deref() else { return Ok(Vec::new()) };
    let mut tags: Vec<Tag> = Vec::new();
    for (_, value) in ::url::form_urlencoded::parse(query.as_bytes()).filter(|(key, _)| key == "tag") {
        let tag = Tag::parse(&value)?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
        if tags.len() > MAX_TAGS_PER_PUT {
            return Err(RegistryError::new(
                ErrorCode::TagInvalid,
                format!("at most {MAX_TAGS_PER_PUT} tag parameters per manifest push"),
            ));
        }
    }
    if let (Reference::Tag(tag), false) = (reference, tags.is_empty()) {
        return Err(RegistryError::new(
            ErrorCode::TagInvalid,
            format!("tag parameters need the manifest's digest in the path, not the tag {}", tag.as_str()),
        ));
    }
    Ok(tags)
}

pub async fn delete<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &crate::wire::name::RepoName,
    reference: &str,
) -> Result<Response<B::Outgoing>> {
    match Reference::parse(reference)? {
        Reference::Tag(tag) => {
            manifests::tag_target(stores, name, &tag).await?.ok_or_else(|| manifests::unknown(name, reference))?;
            if let Some(rule) = stores.config.immutable_tags.rule_for(name, &tag) {
                return Err(immutable::refused(name, &tag, &rule, "it cannot be deleted"));
            }
            // Moved by a racing push meanwhile: this delete came first, the push stays.
            manifests::remove_tag(stores, name, &tag, |_| true).await?;
        }
        Reference::Digest(digest) => {
            let record =
                manifests::record(stores, name, &digest).await?.ok_or_else(|| manifests::unknown(name, reference))?;
            immutable::refuse_deleting(stores, name, &digest).await?;
            manifests::delete(stores, name, &digest, &record).await?;
        }
    }
    Ok(Response::new(StatusCode::ACCEPTED).empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn tags_of(reference: &str, query: &str) -> Result<Vec<String>> {
        let req = Request {
            method: Method::PUT,
            path: format!("/v2/a/manifests/{reference}"),
            query: Some(query.to_owned()),
            headers: HeaderMap::new(),
            body: (),
            origin: None,
        };
        let tags = tag_parameters(&req, &Reference::parse(reference)?)?;
        Ok(tags.iter().map(|t| t.as_str().to_owned()).collect())
    }

    #[test]
    fn tag_parameters_are_kept_in_order_each_once() {
        assert_eq!(tags_of(D, "tag=b&x=y&tag=a&tag=b").unwrap(), ["b", "a"]);
        assert_eq!(tags_of(D, "other=1").unwrap(), Vec::<String>::new());
        assert_eq!(tags_of("latest", "other=1").unwrap(), Vec::<String>::new(), "no tag parameter: nothing to refuse");
    }

    #[test]
    fn an_invalid_tag_parameter_is_tag_invalid() {
        for query in ["tag=-x", "tag=", "tag=a%2Fb", "tag=ok&tag=a:b"] {
            assert_eq!(tags_of(D, query).unwrap_err().code, ErrorCode::TagInvalid, "{query}");
        }
    }

    #[test]
    fn tag_parameters_need_a_digest_in_the_path() {
        assert_eq!(tags_of("latest", "tag=v1").unwrap_err().code, ErrorCode::TagInvalid);
    }

    #[test]
    fn more_distinct_tags_than_the_bound_are_refused() {
        let query = |count: usize| (0..count).map(|i| format!("tag=t{i}")).collect::<Vec<_>>().join("&");
        assert_eq!(tags_of(D, &query(MAX_TAGS_PER_PUT)).unwrap().len(), MAX_TAGS_PER_PUT);
        assert_eq!(tags_of(D, &query(MAX_TAGS_PER_PUT + 1)).unwrap_err().code, ErrorCode::TagInvalid);
        let repeated = vec!["tag=same"; MAX_TAGS_PER_PUT * 2].join("&");
        assert_eq!(tags_of(D, &repeated).unwrap(), ["same"], "repeats count once");
    }
}
