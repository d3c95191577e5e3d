//! Blobs: what a blob is made of (its record), which repositories may serve it (links), and how
//! one is pushed in a single request or opened for reading.

use crate::registry::keys;
use crate::registry::store::{BlobStore, Extent, MetaStore, StoreError, Stores, internal};
use crate::wire::digest::Digest;
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::name::RepoName;
use serde::{Deserialize, Serialize};

/// One blob store object holding a run of a blob's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub size: u64,
}

/// A blob: its size and its bytes as an ordered list of parts (no copy when an upload finishes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    pub parts: Vec<Part>,
    /// Set by garbage collection (the time) while it checks, after this mark, that nothing
    /// references the blob; a reference written meanwhile takes the mark off ([`hold`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condemned: Option<u64>,
    /// The marking collector's nonce: two marks are never the same bytes, so a collector's swap
    /// from its own mark never succeeds on another's (two collectors marking in the same second,
    /// after a push took the first mark off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condemned_by: Option<String>,
    /// Set by garbage collection's removal (the time): the blob is gone for every reader, and
    /// the record names the parts until they are deleted, so a collector that dies in between
    /// leaves work the next one finds (it then empties the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
}

impl BlobRecord {
    pub fn new(size: u64, parts: Vec<Part>) -> Self {
        BlobRecord { size, parts, condemned: None, condemned_by: None, removed: None }
    }

    /// This record marked condemned at `now` by a collector of its own (`random`: its nonce).
    pub fn condemned_at(&self, now: u64, random: [u8; 16]) -> BlobRecord {
        BlobRecord { condemned: Some(now), condemned_by: Some(hex::encode(random)), ..self.clone() }
    }

    /// This record without a collector's mark.
    pub fn unmarked(&self) -> BlobRecord {
        BlobRecord { condemned: None, condemned_by: None, ..self.clone() }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records serialize")
    }

    /// The extents that hold bytes `start..end` of the blob.
    pub fn extents(&self, start: u64, end: u64) -> Vec<Extent> {
        let mut extents = Vec::new();
        let mut offset = 0;
        for part in &self.parts {
            let (part_start, part_end) = (offset, offset + part.size);
            offset = part_end;
            let (from, to) = (start.max(part_start), end.min(part_end));
            if from < to {
                extents.push(Extent { name: part.name.clone(), offset: from - part_start, length: to - from });
            }
        }
        extents
    }
}

/// A blob's record with the exact bytes stored (for a swap); `None` when there is none, or
/// garbage collection removed it (an empty value: a key-value delete cannot be conditional).
pub async fn stored<M: MetaStore, B>(
    stores: &Stores<M, B>,
    digest: &Digest,
) -> Result<Option<(BlobRecord, Vec<u8>)>, RegistryError> {
    let Some(bytes) = stores.meta.get(&keys::blob(digest)).await.map_err(internal)? else {
        return Ok(None);
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    let record: BlobRecord = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::new(ErrorCode::Internal, format!("corrupt blob record {digest}: {e}")))?;
    if record.removed.is_some() {
        return Ok(None);
    }
    Ok(Some((record, bytes)))
}

pub async fn record<M: MetaStore, B>(
    stores: &Stores<M, B>,
    digest: &Digest,
) -> Result<Option<BlobRecord>, RegistryError> {
    Ok(stored(stores, digest).await?.map(|(record, _)| record))
}

/// Whether repository `name` links the blob (an empty link was unlinked by garbage collection).
pub async fn is_linked<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<bool, RegistryError> {
    Ok(stores.meta.get(&keys::blob_link(name, digest)).await.map_err(internal)?.is_some_and(|v| !v.is_empty()))
}

/// The blob, if it is linked to repository `name`.
pub async fn linked<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<BlobRecord, RegistryError> {
    let unknown = || RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} unknown to repository {name}"));
    if !is_linked(stores, name, digest).await? {
        return Err(unknown());
    }
    record(stores, digest).await?.ok_or_else(unknown)
}

/// After a reference to the blob was written (a link, a manifest record): whether the blob is
/// still there for it. A record that garbage collection condemned is taken back (its mark
/// removed by compare-and-swap, so the collector's own swap to removed then fails); a removed
/// one is gone, and the caller takes its reference back. Garbage collection marks the record
/// first and then reads the references, so either it sees this reference or this sees its
/// mark (docs/consistency.md, "Garbage collection").
pub async fn hold<M: MetaStore, B>(stores: &Stores<M, B>, digest: &Digest) -> Result<bool, RegistryError> {
    loop {
        let Some((record, bytes)) = stored(stores, digest).await? else { return Ok(false) };
        if record.condemned.is_none() {
            return Ok(true);
        }
        let kept = record.unmarked();
        if stores.meta.compare_and_swap(&keys::blob(digest), &bytes, &kept.to_json()).await.map_err(internal)? {
            return Ok(true);
        }
    }
}

/// What [`commit`] did with a verified blob's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// The blob record now names these parts.
    Adopted,
    /// The blob was already stored, whole, in the record's own parts: the new parts are not
    /// needed (the caller removes them; none of them is named by `existing`).
    Existing(BlobRecord),
}

/// Make a verified blob known as `blob`'s parts, unless it is already stored whole.
///
/// A record whose parts are all there is never replaced, and its parts are never discarded
/// here. A record that lost a part (damage from before this rule) is replaced by
/// compare-and-swap, so a re-push repairs it. A new record is a plain write: a key-value store
/// offers no exclusive create of a new key (Spin's SQLite swap of an absent key is an upsert),
/// so two first pushes of one blob may both write one; the session that wrote the record keeps
/// its claim on its parts until the sweep has checked, after a grace time, which record stayed
/// (`crate::registry::uploads`).
pub async fn commit<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    digest: &Digest,
    blob: &BlobRecord,
) -> Result<Commit, RegistryError> {
    let key = keys::blob(digest);
    let json = blob.to_json();
    loop {
        let current = stores.meta.get(&key).await.map_err(internal)?;
        if current.as_ref().is_none_or(|c| c.is_empty()) {
            // Garbage collection's list, before the record it lists (an entry alone costs a
            // check; a record without one would never be collected).
            mark(stores, &keys::blob_index(digest), (stores.now)().to_string().into_bytes()).await?;
        }
        let Some(current) = current else {
            stores.meta.set(&key, &json).await.map_err(internal)?;
            remark(stores, &keys::blob_index(digest), (stores.now)().to_string().into_bytes()).await?;
            return Ok(Commit::Adopted);
        };
        if current.is_empty() {
            // Removed by garbage collection: stored again, by a swap (a concurrent first push
            // may be doing the same).
            if stores.meta.compare_and_swap(&key, &current, &json).await.map_err(internal)? {
                remark(stores, &keys::blob_index(digest), (stores.now)().to_string().into_bytes()).await?;
                return Ok(Commit::Adopted);
            }
            continue;
        }
        let existing = serde_json::from_slice::<BlobRecord>(&current).ok();
        if let Some(removed) = existing.as_ref().filter(|e| e.removed.is_some()) {
            // Removed by garbage collection, its cleanup maybe unfinished: stored again by a
            // swap, and the old parts go (the collector may be deleting them too).
            mark(stores, &keys::blob_index(digest), (stores.now)().to_string().into_bytes()).await?;
            if stores.meta.compare_and_swap(&key, &current, &json).await.map_err(internal)? {
                let orphans: Vec<Part> = removed.parts.iter().filter(|p| !blob.parts.contains(p)).cloned().collect();
                discard(stores, &orphans).await;
                remark(stores, &keys::blob_index(digest), (stores.now)().to_string().into_bytes()).await?;
                return Ok(Commit::Adopted);
            }
            continue;
        }
        if let Some(existing) = existing.as_ref().filter(|e| e.size == blob.size)
            && parts_present(stores, existing).await?
        {
            return Ok(Commit::Existing(existing.clone()));
        }
        if stores.meta.compare_and_swap(&key, &current, &json).await.map_err(internal)? {
            if let Some(broken) = existing {
                let orphans: Vec<Part> = broken.parts.into_iter().filter(|p| !blob.parts.contains(p)).collect();
                discard(stores, &orphans).await;
            }
            return Ok(Commit::Adopted);
        }
        // Another request changed the record meanwhile: look again.
    }
}

/// Whether every object the record names is there, with its size.
pub async fn parts_present<M, B: BlobStore>(stores: &Stores<M, B>, record: &BlobRecord) -> Result<bool, RegistryError> {
    for part in &record.parts {
        match stores.blobs.size(&part.name).await {
            Ok(size) if size == part.size => {}
            Ok(_) | Err(StoreError::NotFound) => return Ok(false),
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(true)
}

/// Let repository `name` serve an existing blob of `size` bytes (and list the repository in the
/// catalog), if the quotas of its namespaces allow (`crate::registry::quota`). `false` when garbage
/// collection removed the blob since the caller found it: nothing is linked then.
pub async fn link<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<bool, RegistryError> {
    let link = Link::write(stores, name, digest, size).await?;
    if !hold(stores, digest).await? {
        link.take_back(stores).await;
        return Ok(false);
    }
    Ok(true)
}

/// A link written: its holder entry (garbage collection's way to it), its quota charge and the
/// link itself, whose value is the time it was made (a blob linked less than
/// `gc_grace_seconds` ago is kept for the manifest that will reference it).
pub struct Link<'a> {
    key: String,
    value: Vec<u8>,
    digest: Digest,
    size: u64,
    charged: crate::registry::quota::Charged<'a>,
}

impl<'a> Link<'a> {
    pub async fn write<M: MetaStore, B: BlobStore>(
        stores: &'a Stores<M, B>,
        name: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<Link<'a>, RegistryError> {
        let holder = keys::link_holder(name, digest);
        mark(stores, &holder, Vec::new()).await?;
        let charged = crate::registry::quota::charge(stores, name, digest, size).await?;
        let key = keys::blob_link(name, digest);
        let value = link_value((stores.now)(), (stores.random)());
        if let Err(e) = stores.meta.set(&key, &value).await {
            crate::registry::quota::refund(stores, digest, size, &charged).await;
            return Err(internal(e));
        }
        // A recount that looked between the charge and the link may have taken the count.
        crate::registry::quota::recharge(stores, digest, size, &charged).await;
        remark(stores, &holder, Vec::new()).await?;
        mark(stores, &keys::repo_marker(name), Vec::new()).await?;
        Ok(Link { key, value, digest: digest.clone(), size, charged })
    }

    /// Undo the link (only if it is still the one written here) and its quota charge: what it
    /// was written for failed.
    pub async fn undo<M: MetaStore, B>(self, stores: &Stores<M, B>) {
        let _ = stores.meta.compare_and_swap(&self.key, &self.value, b"").await;
        crate::registry::quota::refund(stores, &self.digest, self.size, &self.charged).await;
    }

    /// Undo the link (only if it is still the one written here) and its quota charge: the blob
    /// it was for was removed.
    pub async fn take_back<M: MetaStore, B>(self, stores: &Stores<M, B>) {
        let _ = stores.meta.compare_and_swap(&self.key, &self.value, b"").await;
        crate::registry::quota::refund(stores, &self.digest, self.size, &self.charged).await;
    }
}

/// Create an index object (an entry that listings enumerate and check against its fact). It
/// may exist already: an entry's content is fixed by its name, so an existing one is the same.
///
/// "Already exists" while no object can be seen means a concurrent removal came in between (try
/// again), or, after several tries, a name that a crash left claimed but empty in a store whose
/// exclusive create is a claim (the key-value provider): deleting it clears the claim.
pub async fn mark<M, B: BlobStore>(stores: &Stores<M, B>, object: &str, content: Vec<u8>) -> Result<(), RegistryError> {
    // Many tries before a claim is taken for a crash's: a create of the same name by another
    // request (claimed, its record not yet stored) must have finished long before, or deleting
    // the name would take a live object (a holder entry garbage collection must see) away.
    const TRIES: usize = 64;
    for attempt in 0..TRIES {
        match stores.blobs.write_bytes(object, content.clone()).await {
            Ok(()) => return Ok(()),
            Err(StoreError::AlreadyExists) if marked(stores, object).await? => return Ok(()),
            Err(StoreError::AlreadyExists) if attempt >= TRIES - 4 => {
                if marked(stores, object).await? {
                    return Ok(());
                }
                let _ = stores.blobs.delete(object).await;
            }
            Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Err(internal(StoreError::Other(format!("index entry {object} cannot be created"))))
}

/// An index entry once more after its fact was written: a collector that removed it in between
/// (having found the fact missing) is answered here, since it removes first and then looks at
/// the fact, while this writes the fact first and then looks at the entry.
pub async fn remark<M, B: BlobStore>(
    stores: &Stores<M, B>,
    object: &str,
    content: Vec<u8>,
) -> Result<(), RegistryError> {
    if marked(stores, object).await? { Ok(()) } else { mark(stores, object, content).await }
}

/// A link's value: when it was made, and a random part, so that a compare-and-swap from a value
/// read earlier never matches a later link of the same second.
pub fn link_value(now: u64, random: [u8; 16]) -> Vec<u8> {
    format!("{now} {}", hex::encode(&random[..8])).into_bytes()
}

/// When a link was made (0 for links from before link times, whose value is `1`).
pub fn link_time(value: &[u8]) -> u64 {
    std::str::from_utf8(value).ok().and_then(|v| v.split(' ').next()?.parse().ok()).unwrap_or(0)
}

/// Whether an index object exists.
pub async fn marked<M, B: BlobStore>(stores: &Stores<M, B>, object: &str) -> Result<bool, RegistryError> {
    match stores.blobs.size(object).await {
        Ok(_) => Ok(true),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(internal(e)),
    }
}

/// Remove an object (an index entry, or bytes nobody references); one that is already gone
/// is fine (a concurrent removal, or the release of the session a losing request wrote into).
pub async fn remove<M, B: BlobStore>(stores: &Stores<M, B>, object: &str) -> Result<(), RegistryError> {
    match stores.blobs.delete(object).await {
        Ok(()) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(internal(e)),
    }
}

/// Remove objects nobody references. Failure only leaks space, so it is logged, not returned.
pub async fn discard<M, B: BlobStore>(stores: &Stores<M, B>, parts: &[Part]) {
    for part in parts {
        if let Err(err) = remove(stores, &part.name).await {
            stores.log(format_args!("could not delete unreferenced object {}: {err}", part.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sizes: &[u64]) -> BlobRecord {
        let parts = sizes.iter().enumerate().map(|(i, &size)| Part { name: format!("p{i}"), size }).collect();
        BlobRecord::new(sizes.iter().sum(), parts)
    }

    #[test]
    fn extents_of_the_whole_blob_are_its_parts() {
        let r = record(&[3, 4, 5]);
        let e = r.extents(0, 12);
        assert_eq!(
            e.iter().map(|x| (x.name.as_str(), x.offset, x.length)).collect::<Vec<_>>(),
            [("p0", 0, 3), ("p1", 0, 4), ("p2", 0, 5)]
        );
    }

    #[test]
    fn extents_of_a_range_cut_the_first_and_last_parts() {
        let r = record(&[3, 4, 5]);
        let e = r.extents(2, 8);
        assert_eq!(
            e.iter().map(|x| (x.name.as_str(), x.offset, x.length)).collect::<Vec<_>>(),
            [("p0", 2, 1), ("p1", 0, 4), ("p2", 0, 1)]
        );
    }

    #[test]
    fn empty_parts_and_empty_ranges_yield_nothing() {
        assert!(record(&[0, 0]).extents(0, 0).is_empty());
        assert!(record(&[3]).extents(3, 3).is_empty());
    }
}
