//! Manifests and tags of a repository: the manifest records (their bytes are blobs), the tags
//! that point at them, the referrers entries of manifests with a subject, and the holder
//! entries through which garbage collection finds what a manifest keeps. Every claim here is
//! in docs/consistency.md ("Manifests and tags").

use crate::registry::blobs::{self, Part};
use crate::registry::keys;
use crate::registry::store::{BlobStore, MetaStore, ObjectPages, Stores, Written, internal};
use crate::registry::uploads::{self, Finish};
use crate::wire::digest::{Digest, RunningHash};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::manifest::Manifest;
use crate::wire::name::{RepoName, Tag};
use crate::wire::reference::Reference;
use serde::{Deserialize, Serialize};

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
    /// [`crate::registry::blobs::BlobRecord::condemned_by`]).
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
    /// Whether the tag's entry under [`keys::tagged_prefix`] was written before this value (tags
    /// from before those entries have none until retention writes it).
    pub tagged: bool,
}

impl TagTarget {
    /// A tag for `generation` of manifest `digest`, before its push sets the rest.
    pub fn new(digest: &Digest, generation: Option<String>) -> TagTarget {
        TagTarget { digest: digest.clone(), generation, pushed: None, sequence: None, tagged: false }
    }

    /// `<digest>`, `<digest>#<generation>`, `<digest>#<generation>#<pushed>`,
    /// `<digest>#<generation>#<pushed>#<sequence>` or `<digest>#<generation>#<pushed>#<sequence>#tagged`.
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
        let tagged = match fields.next() {
            Some("tagged") => true,
            Some(_) => return None,
            None => false,
        };
        Some(TagTarget { digest, generation, pushed, sequence, tagged })
    }

    pub(crate) fn to_value(&self) -> String {
        match (&self.generation, self.pushed, self.sequence) {
            (Some(generation), Some(pushed), Some(n)) if self.tagged => {
                format!("{}#{generation}#{pushed}#{n}#tagged", self.digest)
            }
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

pub fn unknown(name: &RepoName, reference: &str) -> RegistryError {
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
pub async fn resolve<M: MetaStore, B>(
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

/// Store a pushed manifest and point `tags` at it. Retention may remove an untagged manifest
/// between this push's store and its tag (retention found no tag; the record went after this
/// push read it): it is stored again.
pub async fn push<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    manifest: &Manifest,
    bytes: &[u8],
    hash: &RunningHash,
    tags: &[&Tag],
) -> Result<()> {
    let mut generation =
        store(stores, name, digest, manifest, bytes.to_vec(), hash.clone(), Referenced::MustBeHere).await?;
    for &tag in tags {
        let mut tries = 0;
        while !set_tag(stores, name, tag, TagTarget::new(digest, generation.clone())).await? {
            tries += 1;
            if tries > 3 {
                return Err(RegistryError::new(
                    ErrorCode::Internal,
                    format!("manifest {digest} kept being removed under a push"),
                ));
            }
            generation =
                store(stores, name, digest, manifest, bytes.to_vec(), hash.clone(), Referenced::MustBeHere).await?;
        }
    }
    Ok(())
}

/// Delete a manifest by digest: from the record's removal on, neither the digest nor any tag
/// resolves to it; then its entries and the tags set for it go.
pub async fn delete<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    record: &ManifestRecord,
) -> Result<()> {
    stores.meta.delete(&keys::manifest(name, digest)).await.map_err(internal)?;
    forget(stores, name, digest, record).await?;
    untag(stores, name, digest, record).await
}

/// Every blob must be in this repository. Neither a subject nor an index's child manifests need
/// be: an index may be sparse (distribution-spec main: a mirror that keeps some platforms only),
/// and a pull of a missing child is `MANIFEST_UNKNOWN` like that of any manifest not here. A
/// child that is here was checked when it was pushed.
pub async fn check_references<M: MetaStore, B: BlobStore>(
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
    target.tagged = true;
    let tagged = keys::tagged_entry(name, &target.digest, tag, target.sequence);
    for _ in 0..8 {
        // The manifest's entry for this tag before each write of the tag: retention finds the
        // tags of a manifest there (an entry whose tag never got its value is harmless), and may
        // have removed it with the record this loop found replaced.
        blobs::mark(stores, &tagged, Vec::new()).await?;
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
        let target = TagTarget::new(digest, record.generation);
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
            Err(crate::registry::store::StoreError::NotFound) => None,
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

/// A test of a tag's value (what stops [`tags_of`]).
pub(crate) type TagTest<'a> = dyn Fn(&Tag, &TagTarget) -> bool + 'a;

/// The tags of manifest `digest` found through its entries under [`keys::tagged_prefix`]: each
/// with its value, read now; with `until`, the first for which it is true ends the listing.
/// Tags from before those entries are not found here until retention writes theirs.
///
/// `prune` (only once the manifest's record is removed) deletes the entries whose tag names
/// another digest or another push. An entry may be a push's that has not written its value yet:
/// that push then reads the record, finds it removed, stores it again and sets its tag with a
/// new push number and entry, so nothing live loses its entry. While the record stands, entries
/// are never deleted.
pub(crate) async fn tags_of<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    prune: bool,
    until: Option<&TagTest<'_>>,
) -> Result<Vec<(Tag, TagTarget, Vec<u8>)>> {
    let prefix = keys::tagged_prefix(name, digest);
    let mut found = Vec::new();
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in objects {
            let Some((tag, sequence)) = keys::parse_tagged_entry(&object[prefix.len()..]) else { continue };
            match tag_value(stores, name, &tag).await? {
                Some((target, bytes)) if target.digest == *digest && target.sequence == sequence => {
                    let enough = until.is_some_and(|until| until(&tag, &target));
                    found.push((tag, target, bytes));
                    if enough {
                        return Ok(found);
                    }
                }
                _ if prune => blobs::remove(stores, &object).await?,
                _ => {}
            }
        }
    }
    Ok(found)
}

/// Write the entry of a tag from before [`keys::tagged_prefix`] entries, then say so in its
/// value (by a swap from `bytes`: a tag pushed meanwhile has its own entry).
pub(crate) async fn enter_tag<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tag: &Tag,
    target: &TagTarget,
    bytes: &[u8],
) -> Result<()> {
    blobs::mark(stores, &keys::tagged_entry(name, &target.digest, tag, target.sequence), Vec::new()).await?;
    let entered = TagTarget { tagged: true, ..target.clone() };
    let value = entered.to_value();
    // Tags from before push times or generations cannot carry the flag: their entry is written
    // again by every pass (a few such tags, from the first versions).
    if value.as_bytes() != bytes && TagTarget::parse(&value).is_some_and(|t| t.tagged) {
        stores.meta.compare_and_swap(&keys::tag(name, tag), bytes, value.as_bytes()).await.map_err(internal)?;
    }
    Ok(())
}

/// Remove the tags of a deleted manifest found through its entries (only while they still
/// point at its record: a tag moved meanwhile stays), and the entries.
pub(crate) async fn untag_entered<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    deleted: &ManifestRecord,
) -> Result<()> {
    for (tag, _, _) in tags_of(stores, name, digest, true, None).await? {
        remove_tag(stores, name, &tag, |target| target.digest == *digest && target.names(deleted)).await?;
    }
    tags_of(stores, name, digest, true, None).await?;
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
    // The entries of the tags just removed are stale now.
    tags_of(stores, name, digest, true, None).await?;
    Ok(())
}
