//! Blobs: what a blob is made of (its record), which repositories may serve it (links), and how
//! one is pushed in a single request or opened for reading.

use crate::digest::Digest;
use crate::errcode::{ErrorCode, RegistryError};
use crate::keys;
use crate::name::RepoName;
use crate::store::{BlobStore, Extent, MetaStore, StoreError, Stores};
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
}

impl BlobRecord {
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

pub fn internal(err: StoreError) -> RegistryError {
    RegistryError::new(ErrorCode::Internal, err.to_string())
}

pub async fn record<M: MetaStore, B>(
    stores: &Stores<M, B>,
    digest: &Digest,
) -> Result<Option<BlobRecord>, RegistryError> {
    let Some(bytes) = stores.meta.get(&keys::blob(digest)).await.map_err(internal)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RegistryError::new(ErrorCode::Internal, format!("corrupt blob record {digest}: {e}")))
}

/// The blob, if it is linked to repository `name`.
pub async fn linked<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<BlobRecord, RegistryError> {
    let unknown = || RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} unknown to repository {name}"));
    if stores.meta.get(&keys::blob_link(name, digest)).await.map_err(internal)?.is_none() {
        return Err(unknown());
    }
    record(stores, digest).await?.ok_or_else(unknown)
}

/// Make a verified blob known and link it to `name`. The record is written before the link, so a
/// link never points at nothing. If the blob exists already, the new parts are dropped.
pub async fn commit<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    blob: BlobRecord,
) -> Result<(), RegistryError> {
    match record(stores, digest).await? {
        Some(existing) if existing.size == blob.size => discard(stores, &blob.parts).await,
        _ => {
            let json = serde_json::to_vec(&blob).expect("records serialize");
            stores.meta.set(&keys::blob(digest), &json).await.map_err(internal)?;
        }
    }
    link(stores, name, digest).await
}

/// Let repository `name` serve an existing blob (and list the repository in the catalog).
pub async fn link<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<(), RegistryError> {
    stores.meta.set(&keys::blob_link(name, digest), b"1").await.map_err(internal)?;
    mark(stores, &keys::repo_marker(name), Vec::new()).await
}

/// Create an index object (a fact that listings enumerate). It may exist already: facts are
/// immutable, so an existing one is the same fact.
pub async fn mark<M, B: BlobStore>(stores: &Stores<M, B>, object: &str, content: Vec<u8>) -> Result<(), RegistryError> {
    match stores.blobs.write_bytes(object, content).await {
        Ok(()) | Err(StoreError::AlreadyExists) => Ok(()),
        Err(e) => Err(internal(e)),
    }
}

/// Remove an index object; one that is already gone is fine.
pub async fn unmark<M, B: BlobStore>(stores: &Stores<M, B>, object: &str) -> Result<(), RegistryError> {
    match stores.blobs.delete(object).await {
        Ok(()) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(internal(e)),
    }
}

/// Remove objects nobody references. Failure only leaks space, so it is logged, not returned.
pub async fn discard<M, B: BlobStore>(stores: &Stores<M, B>, parts: &[Part]) {
    for part in parts {
        if let Err(err) = stores.blobs.delete(&part.name).await {
            eprintln!("berth: could not delete unreferenced object {}: {err}", part.name);
        }
    }
}

/// The blob store's objects under a prefix, a page at a time, in lexical order: the one loop
/// over `list` that tags, catalog, referrers and untagging share.
pub struct ObjectPages<'a, B> {
    blobs: &'a B,
    prefix: &'a str,
    cursor: Option<String>,
    done: bool,
}

impl<'a, B: BlobStore> ObjectPages<'a, B> {
    /// Objects named `prefix...`, starting after the object `after` when given.
    pub fn new(blobs: &'a B, prefix: &'a str, after: Option<String>) -> Self {
        ObjectPages { blobs, prefix, cursor: after, done: false }
    }

    /// The next page of object names; `None` once the listing is complete.
    pub async fn next(&mut self) -> Result<Option<Vec<String>>, RegistryError> {
        if self.done {
            return Ok(None);
        }
        let (names, next) = self.blobs.list(self.prefix, self.cursor.as_deref(), 1000).await.map_err(internal)?;
        self.done = next.is_none();
        self.cursor = next;
        Ok(Some(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sizes: &[u64]) -> BlobRecord {
        let parts = sizes.iter().enumerate().map(|(i, &size)| Part { name: format!("p{i}"), size }).collect();
        BlobRecord { size: sizes.iter().sum(), parts }
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
