//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use crate::blobs::{self, ObjectPages, Part, internal};
use crate::digest::{Algorithm, Digest, RunningHash};
use crate::errcode::{ErrorCode, RegistryError};
use crate::immutable;
use crate::keys;
use crate::manifest::{self, MAX_MANIFEST_SIZE, Manifest};
use crate::message::{CONTENT_DIGEST, Request, Response};
use crate::name::{RepoName, Tag};
use crate::reference::Reference;
use crate::route::url;
use crate::store::{BlobStore, MetaStore, StoreError, Stores, Written};
use crate::uploads::{self, Finish};
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");

/// The most `?tag=` parameters one manifest PUT may carry. Each tag is several storage calls,
/// and each is answered by a header line of its own, which clients cap: hyper (under reqwest and
/// the Rust OCI clients) refuses a response of more than 100 header lines.
pub const MAX_TAGS_PER_PUT: usize = 64;

type Result<T> = std::result::Result<T, RegistryError>;

/// A manifest in a repository. Its bytes are a blob (`blob/<digest>`), stored once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    pub subject: Option<String>,
    /// Random per creation of the record: a tag names the generation it was set for, so a tag
    /// left behind by a racing delete of the manifest stays dead when the same manifest is
    /// pushed again later (`None` in records from before generations, matched by tags without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// When the record was created (`None` in records from before), for retention's age rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// Set by retention (the time) while it checks, after this mark, that nothing keeps the
    /// manifest; a push that references it takes the mark off ([`hold_manifest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condemned: Option<u64>,
    /// Retention's nonce with the mark: two marks are never the same bytes (see
    /// [`crate::blobs::BlobRecord::condemned_by`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condemned_by: Option<String>,
}

impl ManifestRecord {
    /// This record marked condemned at `now` by a retention pass of its own (`random`: its nonce).
    pub fn condemned_at(&self, now: u64, random: [u8; 16]) -> ManifestRecord {
        ManifestRecord { condemned: Some(now), condemned_by: Some(hex::encode(random)), ..self.clone() }
    }

    /// This record without retention's mark.
    pub fn unmarked(self) -> ManifestRecord {
        ManifestRecord { condemned: None, condemned_by: None, ..self }
    }
}

/// What a tag points at: a manifest's digest, in one generation of its record, and when the
/// tag was pushed (retention's order; `None` for tags from before push times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTarget {
    pub digest: Digest,
    pub generation: Option<String>,
    pub pushed: Option<u64>,
    /// The repository's push counter when the tag was pushed: orders the pushes of one second
    /// (`None` for tags from before it).
    pub sequence: Option<i64>,
}

impl TagTarget {
    /// `<digest>`, `<digest>#<generation>`, `<digest>#<generation>#<pushed>` or
    /// `<digest>#<generation>#<pushed>#<sequence>`.
    fn parse(text: &str) -> Option<TagTarget> {
        let mut fields = text.split('#');
        let digest = Digest::parse(fields.next()?).ok()?;
        let generation = fields.next().map(str::to_owned);
        let pushed = match fields.next() {
            Some(time) => Some(time.parse().ok()?),
            None => None,
        };
        let sequence = match fields.next() {
            Some(n) => Some(n.parse().ok()?),
            None => None,
        };
        Some(TagTarget { digest, generation, pushed, sequence })
    }

    pub(crate) fn to_value(&self) -> String {
        match (&self.generation, self.pushed, self.sequence) {
            (Some(generation), Some(pushed), Some(n)) => format!("{}#{generation}#{pushed}#{n}", self.digest),
            (Some(generation), Some(pushed), None) => format!("{}#{generation}#{pushed}", self.digest),
            (Some(generation), None, _) => format!("{}#{generation}", self.digest),
            (None, _, _) => self.digest.to_string(),
        }
    }

    /// Retention's order: the later push sorts greater (by time, then by the repository's push
    /// counter, which tells pushes of one second apart).
    pub fn push_order(&self) -> (u64, i64) {
        (self.pushed.unwrap_or(0), self.sequence.unwrap_or(0))
    }

    /// Whether `record` is the manifest this tag was set for.
    pub fn names(&self, record: &ManifestRecord) -> bool {
        record.generation == self.generation
    }
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
    Ok(stored(stores, name, digest).await?.map(|(record, _)| record))
}

/// A manifest's record with the exact bytes stored (for a swap); `None` when there is none or
/// retention removed it (an empty value).
pub async fn stored<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<Option<(ManifestRecord, Vec<u8>)>> {
    let Some(bytes) = stores.meta.get(&keys::manifest(name, digest)).await.map_err(internal)? else { return Ok(None) };
    if bytes.is_empty() {
        return Ok(None);
    }
    let record = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::new(ErrorCode::Internal, format!("corrupt manifest record {digest}: {e}")))?;
    Ok(Some((record, bytes)))
}

/// After a reference to a manifest of this repository was written (a tag, an index naming it
/// as a child): whether the manifest is still there for it. A record that retention condemned
/// is taken back (the mark swapped off, so retention's own swap to removed fails); the same
/// pattern as [`blobs::hold`] for blobs.
pub async fn hold_manifest<M: MetaStore, B>(stores: &Stores<M, B>, name: &RepoName, digest: &Digest) -> Result<bool> {
    loop {
        let Some((record, bytes)) = stored(stores, name, digest).await? else { return Ok(false) };
        if record.condemned.is_none() {
            return Ok(true);
        }
        let kept = serde_json::to_vec(&record.unmarked()).expect("records serialize");
        if stores.meta.compare_and_swap(&keys::manifest(name, digest), &bytes, &kept).await.map_err(internal)? {
            return Ok(true);
        }
    }
}

/// What a tag points at, if the tag exists, with the exact bytes stored (for a swap).
pub(crate) async fn tag_value<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tag: &Tag,
) -> Result<Option<(TagTarget, Vec<u8>)>> {
    let Some(bytes) = stores.meta.get(&keys::tag(name, tag)).await.map_err(internal)? else { return Ok(None) };
    if bytes.is_empty() {
        return Ok(None); // deleted (see `remove_tag`)
    }
    let corrupt = || RegistryError::new(ErrorCode::Internal, format!("corrupt tag {}", tag.as_str()));
    let text = std::str::from_utf8(&bytes).map_err(|_| corrupt())?;
    let target = TagTarget::parse(text).ok_or_else(corrupt)?;
    Ok(Some((target, bytes)))
}

/// What a tag points at, if the tag exists.
pub async fn tag_target<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tag: &Tag,
) -> Result<Option<TagTarget>> {
    Ok(tag_value(stores, name, tag).await?.map(|(target, _)| target))
}

/// The manifest a tag resolves to: the record of the generation the tag was set for.
pub async fn tagged<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tag: &Tag,
) -> Result<Option<(Digest, ManifestRecord)>> {
    let Some(target) = tag_target(stores, name, tag).await? else { return Ok(None) };
    Ok(record(stores, name, &target.digest).await?.filter(|r| target.names(r)).map(|r| (target.digest, r)))
}

/// Resolve a reference to a manifest of this repository. A tag whose manifest was deleted
/// resolves to nothing.
async fn resolve<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    reference: &str,
) -> Result<(Digest, ManifestRecord)> {
    match Reference::parse(reference).map_err(|_| unknown(name, reference))? {
        Reference::Digest(digest) => {
            let record = record(stores, name, &digest).await?.ok_or_else(|| unknown(name, reference))?;
            Ok((digest, record))
        }
        Reference::Tag(tag) => tagged(stores, name, &tag).await?.ok_or_else(|| unknown(name, reference)),
    }
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
    check_references(stores, name, &manifest).await?;
    let tags: Vec<&Tag> = match &reference {
        Reference::Tag(tag) => vec![tag],
        Reference::Digest(_) => extra_tags.iter().collect(),
    };
    let bound = bind_immutable_tags(stores, name, &tags, &digest).await?;
    let pushed = async {
        let mut generation =
            store(stores, name, &digest, &manifest, bytes.clone(), hash.clone(), Referenced::MustBeHere).await?;
        for &tag in &tags {
            let mut tries = 0;
            // Retention may remove an untagged manifest between this push's store and its tag
            // (retention found no tag; the record went after this push read it): store it again.
            while !set_tag(
                stores,
                name,
                tag,
                TagTarget { digest: digest.clone(), generation: generation.clone(), pushed: None, sequence: None },
            )
            .await?
            {
                tries += 1;
                if tries > 3 {
                    return Err(RegistryError::new(
                        ErrorCode::Internal,
                        format!("manifest {digest} kept being removed under a push"),
                    ));
                }
                generation =
                    store(stores, name, &digest, &manifest, bytes.clone(), hash.clone(), Referenced::MustBeHere)
                        .await?;
            }
        }
        Ok::<(), RegistryError>(())
    }
    .await;
    if let Err(err) = pushed {
        // A push that failed leaves no binding of its own, unless it set that tag already: the
        // tag stays free for any manifest.
        let mut unset = Vec::new();
        for (binding, tag) in &bound {
            if tag_target(stores, name, tag).await.ok().flatten().is_none_or(|t| t.digest != digest) {
                unset.push((binding.clone(), tag.clone()));
            }
        }
        unbind(stores, &unset).await;
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

/// A binding whose manifest is neither stored nor tagged after this long was left by a push that
/// died between binding and tagging (a push takes seconds from one to the other): the next first
/// push takes it over.
const STALE_BINDING_SECS: u64 = 600;

/// Immutable tags (`crate::immutable`), checked before anything is stored: a tag already bound
/// to another manifest (or naming one) refuses the push. The first push binds it, by creating
/// its binding object exclusively: of two racing first pushes of different manifests, exactly one
/// binds the tag and the other is refused. All or nothing: a refused tag of a `?tag=` list undoes
/// the bindings this push made before it. The bindings this push made, which it undoes if it
/// fails later ([`unbind`]).
async fn bind_immutable_tags<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tags: &[&Tag],
    digest: &Digest,
) -> Result<Vec<(String, Tag)>> {
    let mut made = Vec::new();
    for &tag in tags {
        match bind(stores, name, tag, digest).await {
            Ok(Some(binding)) => made.push((binding, tag.clone())),
            Ok(None) => {}
            Err(err) => {
                unbind(stores, &made).await;
                return Err(err);
            }
        }
    }
    Ok(made)
}

/// Bind `tag` to `digest` if a rule makes it immutable: the binding this call created, `None`
/// when there was nothing to create (no rule, or bound to `digest` already).
async fn bind<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> Result<Option<String>> {
    let Some(rule) = stores.config.immutable_tags.rule_for(name, tag) else { return Ok(None) };
    let moved = || immutable::refused(name, tag, &rule, "it names another manifest, and cannot be moved");
    if let Some((current, _)) = tagged(stores, name, tag).await?
        && current != *digest
    {
        return Err(moved());
    }
    let binding = keys::immutable_binding(name, tag);
    let now = (stores.now)();
    for _ in 0..4 {
        match stores.blobs.write_bytes(&binding, format!("{digest} {now}").into_bytes()).await {
            Ok(()) => return Ok(Some(binding)),
            Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(internal(e)),
        }
        let bound = match stores.blobs.read_bytes(&binding).await {
            Ok(bound) => String::from_utf8_lossy(&bound).into_owned(),
            Err(StoreError::NotFound) => continue, // undone meanwhile
            Err(e) => return Err(internal(e)),
        };
        // `<digest> <time>` (bindings from before times: `<digest>`, as old as can be).
        let mut fields = bound.split(' ');
        let bound_digest = fields.next().and_then(|d| Digest::parse(d).ok());
        let at: u64 = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        if bound_digest.as_ref() == Some(digest) {
            return Ok(None);
        }
        let left_by_a_dead_push = now.saturating_sub(at) > STALE_BINDING_SECS
            && tag_target(stores, name, tag).await?.is_none()
            && match &bound_digest {
                Some(other) => record(stores, name, other).await?.is_none(),
                None => true,
            };
        if !left_by_a_dead_push {
            return Err(moved());
        }
        stores.log(format_args!(
            "immutable tag {name}:{} was bound by a push that never finished: taken over",
            tag.as_str()
        ));
        blobs::remove(stores, &binding).await?;
    }
    Err(moved())
}

/// Undo the bindings a failed push made. Best effort: one left behind is taken over once stale.
async fn unbind<M, B: BlobStore>(stores: &Stores<M, B>, bindings: &[(String, Tag)]) {
    for (binding, _) in bindings {
        let _ = stores.blobs.delete(binding).await;
    }
}

/// A delete by digest of a manifest an immutable tag names is refused (it would drop the tag).
///
/// The bindings are read first: a first push binds its immutable tags before it stores the
/// record this delete has read, and tags the manifest only after, so a delete that looked at
/// tags alone could pass between the push's record and its tag, and both would succeed with
/// the tag gone. A binding is there from before the record on (until a failed push undoes it).
async fn refuse_deleting_what_immutable_tags_name<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<()> {
    if !stores.config.immutable_tags.may_apply_to(name) {
        return Ok(());
    }
    let prefix = keys::immutable_bindings_prefix(name);
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in &objects {
            let Ok(tag) = Tag::parse(&object[prefix.len()..]) else { continue };
            let Some(rule) = stores.config.immutable_tags.rule_for(name, &tag) else { continue };
            let bound = match stores.blobs.read_bytes(object).await {
                Ok(bound) => bound,
                Err(StoreError::NotFound) => continue, // undone meanwhile
                Err(e) => return Err(internal(e)),
            };
            if String::from_utf8_lossy(&bound).split(' ').next() == Some(digest.to_string().as_str()) {
                return Err(immutable::refused(
                    name,
                    &tag,
                    &rule,
                    &format!("the manifest {digest} it is bound to cannot be deleted"),
                ));
            }
        }
    }
    // Tags bound before bindings existed have none.
    let prefix = keys::tags_prefix(name);
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in &objects {
            let Ok(tag) = Tag::parse(&object[prefix.len()..]) else { continue };
            let Some(rule) = stores.config.immutable_tags.rule_for(name, &tag) else { continue };
            if tag_target(stores, name, &tag).await?.is_some_and(|t| t.digest == *digest) {
                return Err(immutable::refused(
                    name,
                    &tag,
                    &rule,
                    &format!("the manifest {digest} it names cannot be deleted"),
                ));
            }
        }
    }
    Ok(())
}

/// Every blob must be in this repository. Neither a subject nor an index's child manifests need
/// be: an index may be sparse (distribution-spec main: a mirror that keeps some platforms only),
/// and a pull of a missing child is `MANIFEST_UNKNOWN` like that of any manifest not here. A
/// child that is here was checked when it was pushed.
async fn check_references<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    manifest: &Manifest,
) -> Result<()> {
    for blob in &manifest.blobs {
        if !blobs::is_linked(stores, name, blob).await? {
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!("blob {blob} is not in repository {name}"),
            ));
        }
    }
    Ok(())
}

/// Point `tag` at `target`. Its index entry is written before the tag (an entry without a tag
/// is never listed) and again after it: a delete of the same tag that ran in between may have
/// removed the entry after checking that the tag was gone (see [`remove_tag`]). Then the record
/// is read again: condemned by retention, its mark is taken off (retention looks at tags after
/// marking, this push after tagging: one of the two sees the other); another generation means
/// a concurrent first push of the same manifest wrote the record last, and the tag follows it;
/// gone (`false`) means it was deleted since this push stored it, and the caller stores it again
/// (a delete racing a push is ordered before it).
async fn set_tag<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tag: &Tag,
    mut target: TagTarget,
) -> Result<bool> {
    let entry = keys::tag_entry(name, tag);
    target.pushed = Some((stores.now)());
    target.sequence = Some(stores.meta.increment(&keys::push_sequence(name), 1).await.map_err(internal)?);
    for _ in 0..8 {
        blobs::mark(stores, &entry, Vec::new()).await?;
        stores.meta.set(&keys::tag(name, tag), target.to_value().as_bytes()).await.map_err(internal)?;
        blobs::mark(stores, &entry, Vec::new()).await?;
        match record(stores, name, &target.digest).await? {
            Some(now) if !target.names(&now) => target.generation = now.generation,
            Some(_) => return hold_manifest(stores, name, &target.digest).await,
            None => return Ok(false),
        }
    }
    Err(RegistryError::new(ErrorCode::Internal, format!("tag {} kept changing under a push", tag.as_str())))
}

/// Point `tag` at the stored manifest `digest` (the mirror: a tag confirmed upstream).
pub(crate) async fn tag_as<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> Result<()> {
    for _ in 0..4 {
        let record = record(stores, name, digest).await?.ok_or_else(|| unknown(name, &digest.to_string()))?;
        let target = TagTarget { digest: digest.clone(), generation: record.generation, pushed: None, sequence: None };
        if set_tag(stores, name, tag, target).await? {
            return Ok(());
        }
    }
    Err(RegistryError::new(ErrorCode::Internal, format!("manifest {digest} kept being removed under a tag")))
}

/// Remove `tag` if it still points where `doomed` says: the tag first (from here it does not
/// resolve), then its index entry, then a second look (see [`unindex`]). The tag is swapped to
/// empty (deleted) rather than deleted: a delete cannot be made conditional, and a tag moved
/// meanwhile to another manifest (a push racing a delete of the old manifest) must stay.
/// Whether this request removed it.
pub(crate) async fn remove_tag<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tag: &Tag,
    doomed: impl Fn(&TagTarget) -> bool,
) -> Result<bool> {
    let key = keys::tag(name, tag);
    let Some((target, bytes)) = tag_value(stores, name, tag).await? else { return Ok(false) };
    if !doomed(&target) || !stores.meta.compare_and_swap(&key, &bytes, b"").await.map_err(internal)? {
        return Ok(false);
    }
    let entry = keys::tag_entry(name, tag);
    unindex(stores, &entry, Some(Vec::new()), async || Ok(tag_value(stores, name, tag).await?.is_some())).await?;
    Ok(true)
}

/// Remove an index entry whose fact was just removed, then look at the fact again: if a push
/// set it meanwhile, put the entry back. A push writes its entry before and after its fact;
/// whichever of the two requests touches the entry last, the entry ends up there exactly when
/// the fact is.
/// `known`: the entry's content when the caller knows it (else it is read before the removal).
async fn unindex<M, B: BlobStore>(
    stores: &Stores<M, B>,
    entry: &str,
    known: Option<Vec<u8>>,
    fact_exists: impl AsyncFnOnce() -> Result<bool>,
) -> Result<()> {
    let content = match known {
        Some(content) => Some(content),
        None => match stores.blobs.read_bytes(entry).await {
            Ok(content) => Some(content),
            Err(crate::store::StoreError::NotFound) => None,
            Err(e) => return Err(internal(e)),
        },
    };
    blobs::remove(stores, entry).await?;
    if fact_exists().await?
        && let Some(content) = content
    {
        blobs::mark(stores, entry, content).await?;
    }
    Ok(())
}

/// Store the bytes (as a blob; `hash` is their running hash, finished), the manifest record
/// (unless there is one: it keeps its generation), and its referrers entry; the record's
/// generation.
pub(crate) async fn store<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    manifest: &Manifest,
    bytes: Vec<u8>,
    hash: RunningHash,
    referenced: Referenced,
) -> Result<Option<String>> {
    let size = bytes.len() as u64;
    // Entries before the record: retention lists manifests, garbage collection finds the
    // record through the holders.
    blobs::mark(stores, &keys::manifest_entry(name, digest), Vec::new()).await?;
    for held in held_by(manifest, digest) {
        // The time: garbage collection prunes the entry of a manifest with no record only once
        // it is older than any push can be (this push has written it, and not yet its record).
        blobs::mark(stores, &keys::manifest_holder(name, held, digest), (stores.now)().to_string().into_bytes())
            .await?;
    }
    let linked = match blobs::record(stores, digest).await? {
        Some(stored) if blobs::parts_present(stores, &stored).await? => {
            blobs::link(stores, name, digest, stored.size).await?
        }
        _ => false,
    };
    if !linked {
        store_bytes(stores, name, digest, bytes, hash).await?;
    }
    let record = ManifestRecord {
        media_type: manifest.media_type.clone(),
        size,
        subject: manifest.subject.as_ref().map(Digest::to_string),
        generation: Some(hex::encode(&(stores.random)()[8..])),
        created: Some((stores.now)()),
        condemned: None,
        condemned_by: None,
    };
    let referrer_entry = if let Some(subject) = &manifest.subject {
        let descriptor = ReferrerDescriptor {
            media_type: manifest.media_type.clone(),
            digest: digest.to_string(),
            size,
            artifact_type: manifest.artifact_type.clone(),
            annotations: manifest.annotations.clone(),
        };
        // The entry before the record: a listing shows it only once the record is there.
        let entry = keys::referrer(name, subject, digest);
        let descriptor = serde_json::to_vec(&descriptor).expect("descriptors serialize");
        blobs::mark(stores, &entry, descriptor.clone()).await?;
        Some((entry, descriptor))
    } else {
        None
    };
    // Children here now must still be here once the record is (retention may be removing them).
    let mut present_children = Vec::new();
    for child in &manifest.children {
        if self::record(stores, name, child).await?.is_some() {
            present_children.push(child.clone());
        }
    }
    let key = keys::manifest(name, digest);
    for _ in 0..8 {
        let (generation, written, created_here) = match stored(stores, name, digest).await? {
            Some((existing, bytes)) => {
                hold_references(stores, name, digest, manifest, referenced).await?;
                // Refreshed by a swap (no mark, created now): retention's last swap and a failed
                // push's take-back, both from bytes read before, then fail.
                let refreshed = ManifestRecord { created: Some((stores.now)()), ..existing.unmarked() };
                let json = serde_json::to_vec(&refreshed).expect("records serialize");
                if !stores.meta.compare_and_swap(&key, &bytes, &json).await.map_err(internal)? {
                    continue;
                }
                (refreshed.generation, json, false)
            }
            None => {
                let json = serde_json::to_vec(&record).expect("records serialize");
                stores.meta.set(&key, &json).await.map_err(internal)?;
                if let Err(gone) = hold_references(stores, name, digest, manifest, referenced).await {
                    take_back(stores, &key, &json).await?;
                    return Err(gone);
                }
                (record.generation.clone(), json, true)
            }
        };
        for child in &manifest.children {
            // An index keeps its children in this repository from retention.
            if !hold_manifest(stores, name, child).await? && present_children.contains(child) {
                if created_here {
                    take_back(stores, &key, &written).await?;
                }
                return Err(RegistryError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!("child manifest {child} of {digest} was deleted while it was pushed: push it again"),
                ));
            }
        }
        if let Some((entry, descriptor)) = referrer_entry {
            // Again after the record: a racing delete may have removed it in between (`unindex`).
            blobs::mark(stores, &entry, descriptor).await?;
        }
        for held in held_by(manifest, digest) {
            blobs::remark(stores, &keys::manifest_holder(name, held, digest), (stores.now)().to_string().into_bytes())
                .await?;
        }
        blobs::remark(stores, &keys::manifest_entry(name, digest), Vec::new()).await?;
        return Ok(generation);
    }
    Err(RegistryError::new(ErrorCode::Internal, format!("the record of manifest {digest} kept changing under a push")))
}

/// A push that cannot stand takes its own record back: by a swap from the exact bytes it wrote,
/// so a concurrent push of the same manifest that refreshed the record (and was acknowledged)
/// keeps it.
async fn take_back<M: MetaStore, B>(stores: &Stores<M, B>, key: &str, written: &[u8]) -> Result<()> {
    stores.meta.compare_and_swap(key, written, b"").await.map_err(internal)?;
    Ok(())
}

/// What a manifest keeps from garbage collection: its blobs, its child manifests and its own
/// bytes.
fn held_by<'a>(manifest: &'a Manifest, digest: &'a Digest) -> impl Iterator<Item = &'a Digest> {
    manifest.blobs.iter().chain(&manifest.children).chain(std::iter::once(digest))
}

/// After the record is written: every blob it references must still be stored (a blob that
/// garbage collection condemned is taken back; one it removed fails the push, as a blob that
/// was never pushed does). Children may be missing (a sparse index), but are held if there.
/// Whether the blobs a stored manifest references must be here already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Referenced {
    /// A push: they were pushed first (and garbage collection must not take them now).
    MustBeHere,
    /// The mirror's cache: they are fetched when pulled. Those that are here are held.
    MayFollow,
}

async fn hold_references<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    manifest: &Manifest,
    referenced: Referenced,
) -> Result<()> {
    if !blobs::hold(stores, digest).await? {
        return Err(RegistryError::new(
            ErrorCode::ManifestBlobUnknown,
            format!("the bytes of manifest {digest} in repository {name} were garbage-collected: push it again"),
        ));
    }
    for blob in &manifest.blobs {
        if !blobs::hold(stores, blob).await? && referenced == Referenced::MustBeHere {
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!("blob {blob} is not in repository {name}: it was garbage-collected, push it again"),
            ));
        }
    }
    for child in &manifest.children {
        blobs::hold(stores, child).await?;
    }
    Ok(())
}

/// A manifest's bytes stored as a blob, through an upload session like any other blob: one
/// chunk, whose running hash (`hash`, over `bytes`) the finish checks against `digest`.
async fn store_bytes<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    bytes: Vec<u8>,
    hash: RunningHash,
) -> Result<()> {
    let opened = uploads::open(stores, name, None).await?;
    let object = uploads::new_object(stores, &opened.session);
    let size = bytes.len() as u64;
    stores.blobs.write_bytes(&object, bytes).await.map_err(internal)?;
    let last = (Part { name: object, size }, Written { size, hashes: vec![hash] });
    match uploads::finish(stores, &opened, Some(last), digest).await? {
        Finish::Stored => Ok(()),
        other => Err(RegistryError::new(ErrorCode::Internal, format!("storing manifest {digest}: {other:?}"))),
    }
}

pub async fn delete<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    reference: &str,
) -> Result<Response<B::Outgoing>> {
    match Reference::parse(reference)? {
        Reference::Tag(tag) => {
            tag_target(stores, name, &tag).await?.ok_or_else(|| unknown(name, reference))?;
            if let Some(rule) = stores.config.immutable_tags.rule_for(name, &tag) {
                return Err(immutable::refused(name, &tag, &rule, "it cannot be deleted"));
            }
            // Moved by a racing push meanwhile: this delete came first, the push stays.
            remove_tag(stores, name, &tag, |_| true).await?;
        }
        Reference::Digest(digest) => {
            let record = record(stores, name, &digest).await?.ok_or_else(|| unknown(name, reference))?;
            refuse_deleting_what_immutable_tags_name(stores, name, &digest).await?;
            // From here on neither the digest nor any tag resolves to it.
            stores.meta.delete(&keys::manifest(name, &digest)).await.map_err(internal)?;
            forget(stores, name, &digest, &record).await?;
            untag(stores, name, &digest, &record).await?;
        }
    }
    Ok(Response::new(StatusCode::ACCEPTED).empty())
}

/// After a manifest's record went (a delete, or retention): its referrer and list entries, each
/// put back if a push stored the record again meanwhile.
pub async fn forget<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    record: &ManifestRecord,
) -> Result<()> {
    let still = async || Ok(self::record(stores, name, digest).await?.is_some());
    unindex(stores, &keys::manifest_entry(name, digest), Some(Vec::new()), still).await?;
    {
        {
            if let Some(subject) = record.subject.as_deref().and_then(|s| Digest::parse(s).ok()) {
                let entry = keys::referrer(name, &subject, digest);
                let still = async || Ok(self::record(stores, name, digest).await?.is_some());
                unindex(stores, &entry, None, still).await?;
            }
        }
    }
    Ok(())
}

/// Remove the tags that point at a deleted manifest (and only while they still do: a tag moved
/// to another manifest meanwhile stays).
pub(crate) async fn untag<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    deleted: &ManifestRecord,
) -> Result<()> {
    let prefix = keys::tags_prefix(name);
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in &objects {
            let Ok(tag) = Tag::parse(&object[prefix.len()..]) else { continue };
            // Only tags set for the deleted record: a push that stored the manifest again since
            // (a new generation) and tagged it keeps its tag.
            remove_tag(stores, name, &tag, |target| target.digest == *digest && target.names(deleted)).await?;
        }
    }
    Ok(())
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
