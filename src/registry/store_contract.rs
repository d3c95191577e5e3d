//! The blob store contract, checked against a live store: what the registry relies on of every
//! backend (the filesystem, the key-value provider on SQLite or Redis, the S3 provider, and any
//! new one), run by `POST /v2/_berth/storage/check` (admin) and by the tests of each backend
//! (`tests/common::assert_store_contract`), the way CNCF Distribution holds its drivers to one
//! test suite. A new backend passes it before it is trusted with a registry.
//!
//! The checks work under a scratch prefix of their own (`check/<random>/`), remove what they
//! made, and stay within a few hundred store calls, so they fit one request.

use crate::registry::store::{BlobStore, Extent, StoreError, Stores};
use crate::wire::digest::{Algorithm, Digest, RunningHash};

/// The longest object name checked: above the longest the registry makes (a holder entry of a
/// SHA-512 blob in a long-named repository, about 400 bytes), under S3's 1024-byte keys with a
/// key prefix.
pub const LONGEST_NAME: usize = 900;

/// The longest `/`-separated part of a name checked: a filesystem's file name limit.
pub const LONGEST_PART: usize = 255;

/// One rule of the contract, and how the store kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub rule: &'static str,
    /// `None`: kept; else what the store did instead.
    pub broken: Option<String>,
}

/// Where every check's scratch objects live: `check/<start time>-<random>/`.
pub const SCRATCH_ROOT: &str = "check/";

/// A check's scratch objects are left behind only by a check cut off mid-way (a request killed,
/// a listing that failed); the next check removes those older than this.
pub const ABANDONED_AFTER_SECS: u64 = 3600;

/// Run every check against `stores.blobs`; the scratch objects are removed whatever the outcome,
/// and so are those that checks cut off before their end left (an hour old or more).
pub async fn check<M, B: BlobStore>(stores: &Stores<M, B>) -> Vec<Check> {
    let now = (stores.now)();
    clear_abandoned(&stores.blobs, now).await;
    let scratch = format!("{SCRATCH_ROOT}{now:016x}-{}/", hex::encode((stores.random)()));
    let blobs = &stores.blobs;
    let mut checks = Vec::new();
    let mut record = |rule: &'static str, outcome: Result<(), String>| {
        checks.push(Check { rule, broken: outcome.err() });
    };
    record("a new name is created, and reads back whole", created_whole(blobs, &scratch).await);
    record("creating a name that exists fails with already-exists", exclusive(blobs, &scratch).await);
    record("of racing creates of one name exactly one wins", racing_creates(blobs, &scratch).await);
    record("extents read the bytes they name, across objects", extents(blobs, &scratch).await);
    record("compose joins extents into a new object, exclusively", compose(blobs, &scratch).await);
    record("listings are ordered, paged, and start after the cursor", listings(blobs, &scratch).await);
    record("a deleted name is gone, and can be created again", deleted(blobs, &scratch).await);
    record("a read racing a delete gives the whole bytes or an error", read_racing_delete(blobs, &scratch).await);
    record("names of every length up to the longest are kept apart", name_lengths(blobs, &scratch).await);
    clear(blobs, &scratch).await;
    record("the scratch objects are all removed", listed(blobs, &scratch).await.and_then(empty));
    checks
}

type Outcome = Result<(), String>;

fn expect<T: std::fmt::Debug, E: std::fmt::Debug>(what: &str, got: Result<T, E>, wanted: &str) -> String {
    format!("{what}: {got:?}, wanted {wanted}")
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn digest(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

/// The digest of the bytes the extents read, through the store.
async fn digest_of<B: BlobStore>(blobs: &B, extents: Vec<Extent>) -> Result<Digest, StoreError> {
    let hash = blobs.hash_extents(extents, RunningHash::new(Algorithm::Sha256)).await?;
    Ok(Digest::from_hash(hash))
}

fn whole(name: &str, length: usize) -> Extent {
    Extent { name: name.to_owned(), offset: 0, length: length as u64 }
}

async fn created_whole<B: BlobStore>(blobs: &B, scratch: &str) -> Outcome {
    let name = format!("{scratch}created");
    let data = bytes(1, 70_000);
    blobs.write_bytes(&name, data.clone()).await.map_err(|e| format!("create: {e}"))?;
    match blobs.size(&name).await {
        Ok(size) if size == data.len() as u64 => {}
        other => return Err(expect("size", other, &data.len().to_string())),
    }
    match blobs.read_bytes(&name).await {
        Ok(read) if read == data => Ok(()),
        Ok(read) => Err(format!("read {} bytes that differ from the {} written", read.len(), data.len())),
        Err(e) => Err(format!("read: {e}")),
    }
}

async fn exclusive<B: BlobStore>(blobs: &B, scratch: &str) -> Outcome {
    let name = format!("{scratch}exclusive");
    blobs.write_bytes(&name, b"first".to_vec()).await.map_err(|e| format!("create: {e}"))?;
    match blobs.write_bytes(&name, b"second".to_vec()).await {
        Err(StoreError::AlreadyExists) => {}
        other => return Err(expect("second create", other, "already-exists")),
    }
    match blobs.read_bytes(&name).await {
        Ok(read) if read == b"first" => Ok(()),
        other => Err(expect("read after the refused create", other, "the first bytes")),
    }
}

async fn racing_creates<B: BlobStore>(blobs: &B, scratch: &str) -> Outcome {
    let name = format!("{scratch}raced");
    let contents: Vec<Vec<u8>> = (0..6).map(|n| bytes(n, 10_000 + n as usize)).collect();
    let outcomes = futures::future::join_all(contents.iter().map(|c| blobs.write_bytes(&name, c.clone()))).await;
    let won: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].is_ok()).collect();
    if won.len() != 1 || outcomes.iter().any(|o| matches!(o, Err(e) if *e != StoreError::AlreadyExists)) {
        return Err(format!("outcomes of 6 racing creates: {outcomes:?}"));
    }
    match blobs.read_bytes(&name).await {
        Ok(read) if read == contents[won[0]] => Ok(()),
        other => Err(expect("read", other.map(|r| r.len()), "the winner's bytes")),
    }
}

async fn extents<B: BlobStore>(blobs: &B, scratch: &str) -> Outcome {
    let (a, b) = (format!("{scratch}extent-a"), format!("{scratch}extent-b"));
    let (da, db) = (bytes(3, 5000), bytes(4, 3000));
    blobs.write_bytes(&a, da.clone()).await.map_err(|e| format!("create: {e}"))?;
    blobs.write_bytes(&b, db.clone()).await.map_err(|e| format!("create: {e}"))?;
    let ranges = [(&a, &da, 0, 5000), (&a, &da, 1, 1), (&a, &da, 4096, 904), (&b, &db, 2999, 1), (&b, &db, 10, 0)];
    for (name, data, offset, length) in ranges {
        let extent = Extent { name: name.clone(), offset, length };
        let wanted = digest(&data[offset as usize..(offset + length) as usize]);
        match digest_of(blobs, vec![extent]).await {
            Ok(got) if got == wanted => {}
            other => return Err(expect(&format!("{length} bytes of {name} at {offset}"), other, "those bytes")),
        }
    }
    let joined = [&da[100..2100], &db[..], &da[4999..]].concat();
    let extents = vec![
        Extent { name: a.clone(), offset: 100, length: 2000 },
        whole(&b, db.len()),
        Extent { name: a.clone(), offset: 4999, length: 1 },
    ];
    match digest_of(blobs, extents).await {
        Ok(got) if got == digest(&joined) => {}
        other => return Err(expect("three extents of two objects", other, "their bytes one after another")),
    }
    match digest_of(blobs, vec![Extent { name: a.clone(), offset: 4000, length: 2000 }]).await {
        Err(_) => Ok(()),
        Ok(got) => Err(format!("a range past the end read {got}, wanted an error")),
    }
}

async fn compose<B: BlobStore>(blobs: &B, scratch: &str) -> Outcome {
    let (a, b, joined) = (format!("{scratch}part-a"), format!("{scratch}part-b"), format!("{scratch}joined"));
    let (da, db) = (bytes(5, 6000), bytes(6, 4000));
    blobs.write_bytes(&a, da.clone()).await.map_err(|e| format!("create: {e}"))?;
    blobs.write_bytes(&b, db.clone()).await.map_err(|e| format!("create: {e}"))?;
    let extents = vec![Extent { name: a.clone(), offset: 1000, length: 5000 }, whole(&b, db.len())];
    let expected = [&da[1000..], &db[..]].concat();
    match blobs.compose(&joined, extents.clone()).await {
        Ok(None) => return Ok(()), // this store does not join objects: the registry keeps extents
        Ok(Some(size)) if size == expected.len() as u64 => {}
        other => return Err(expect("compose", other, &format!("Some({})", expected.len()))),
    }
    match digest_of(blobs, vec![whole(&joined, expected.len())]).await {
        Ok(got) if got == digest(&expected) => {}
        other => return Err(expect("the composed object", other, "the extents' bytes")),
    }
    match blobs.compose(&joined, extents).await {
        Err(StoreError::AlreadyExists) => Ok(()),
        other => Err(expect("composing onto an existing name", other, "already-exists")),
    }
}

/// Every name under `prefix`, page by page (pages of 3, to cross page ends).
async fn listed<B: BlobStore>(blobs: &B, prefix: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let (page, next) = blobs.list(prefix, cursor.as_deref(), 3).await.map_err(|e| format!("list: {e}"))?;
        if page.len() > 3 {
            return Err(format!("a page of {} names for a limit of 3", page.len()));
        }
        names.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(names),
        }
    }
    Err("the listing never ended".into())
}

fn empty(names: Vec<String>) -> Outcome {
    if names.is_empty() { Ok(()) } else { Err(format!("left: {names:?}")) }
}

async fn listings<B: BlobStore>(blobs: &B, scratch: &str) -> Outcome {
    let prefix = format!("{scratch}list/");
    let mut names: Vec<String> =
        ["a", "a-b", "a.b", "a/b", "a/b/c", "ab", "b", "b0", "z"].iter().map(|n| format!("{prefix}{n}")).collect();
    for name in names.iter().chain([&format!("{scratch}lisu"), &format!("{scratch}lis")]) {
        blobs.write_bytes(name, b"x".to_vec()).await.map_err(|e| format!("create {name}: {e}"))?;
    }
    names.sort();
    let got = listed(blobs, &prefix).await?;
    if got != names {
        return Err(format!("listed {got:?}, wanted {names:?} (in byte order, the prefix's only)"));
    }
    // A cursor is an object name: the listing starts right after it.
    let after = &names[3];
    let (page, _) = blobs.list(&prefix, Some(after), 100).await.map_err(|e| format!("list: {e}"))?;
    if page != names[4..] {
        return Err(format!("after {after}: {page:?}, wanted {:?}", &names[4..]));
    }
    Ok(())
}

async fn deleted<B: BlobStore>(blobs: &B, scratch: &str) -> Outcome {
    let name = format!("{scratch}deleted");
    blobs.write_bytes(&name, bytes(7, 3000)).await.map_err(|e| format!("create: {e}"))?;
    blobs.delete(&name).await.map_err(|e| format!("delete: {e}"))?;
    match blobs.size(&name).await {
        Err(StoreError::NotFound) => {}
        other => return Err(expect("size after delete", other, "not-found")),
    }
    match blobs.read_bytes(&name).await {
        Err(StoreError::NotFound) => {}
        other => return Err(expect("read after delete", other.map(|r| r.len()), "not-found")),
    }
    match blobs.delete(&name).await {
        Err(StoreError::NotFound) => {}
        other => return Err(expect("a second delete", other, "not-found")),
    }
    if listed(blobs, &name).await? != Vec::<String>::new() {
        return Err("a deleted name is still listed".into());
    }
    let again = bytes(8, 100);
    blobs.write_bytes(&name, again.clone()).await.map_err(|e| format!("create after delete: {e}"))?;
    match blobs.read_bytes(&name).await {
        Ok(read) if read == again => Ok(()),
        other => Err(expect("read of the new object", other.map(|r| r.len()), "its bytes")),
    }
}

async fn read_racing_delete<B: BlobStore>(blobs: &B, scratch: &str) -> Outcome {
    let name = format!("{scratch}read-while-deleted");
    let data = bytes(9, 300_000);
    blobs.write_bytes(&name, data.clone()).await.map_err(|e| format!("create: {e}"))?;
    let (read, deleted) = futures::join!(digest_of(blobs, vec![whole(&name, data.len())]), blobs.delete(&name));
    deleted.map_err(|e| format!("delete: {e}"))?;
    match read {
        Ok(got) if got != digest(&data) => Err(format!("the read gave other bytes ({got})")),
        _ => Ok(()),
    }
}

/// A name of exactly `length` bytes under `prefix`, in parts of at most [`LONGEST_PART`].
fn name_of_length(prefix: &str, length: usize) -> String {
    let mut name = prefix.to_owned();
    let letter = |at: usize| char::from(b'a' + (at % 26) as u8);
    while length - name.len() > LONGEST_PART {
        // A full part when what is left after it is a part of its own; else leave one letter.
        let part = LONGEST_PART.min(length - name.len() - 2);
        for _ in 0..part {
            name.push(letter(name.len()));
        }
        name.push('/');
    }
    while name.len() < length {
        name.push(letter(name.len()));
    }
    name
}

async fn name_lengths<B: BlobStore>(blobs: &B, scratch: &str) -> Outcome {
    let prefix = format!("{scratch}n/");
    let mut lengths: Vec<usize> = (prefix.len() + 1..prefix.len() + 64)
        .chain((prefix.len() + 64..LONGEST_NAME).step_by(53))
        .chain([LONGEST_PART, LONGEST_PART + 1, LONGEST_NAME])
        .collect();
    lengths.sort();
    lengths.dedup();
    for &length in &lengths {
        let name = name_of_length(&prefix, length);
        blobs.write_bytes(&name, length.to_string().into_bytes()).await.map_err(|e| format!("create {length}: {e}"))?;
    }
    for &length in &lengths {
        let name = name_of_length(&prefix, length);
        match blobs.read_bytes(&name).await {
            Ok(read) if read == length.to_string().into_bytes() => {}
            other => return Err(expect(&format!("the name of {length} bytes"), other, "its own bytes")),
        }
    }
    let mut wanted: Vec<String> = lengths.iter().map(|&l| name_of_length(&prefix, l)).collect();
    wanted.sort();
    let got = listed(blobs, &prefix).await?;
    if got != wanted {
        return Err(format!("listed {} names, wanted {}", got.len(), wanted.len()));
    }
    Ok(())
}

/// Remove every object under `scratch` (best effort: what is left shows in the last check).
/// Only names that do start with `scratch` are deleted: the listing is what is being checked,
/// and a store whose listing strays past its prefix must not lose other objects for it.
async fn clear<B: BlobStore>(blobs: &B, scratch: &str) {
    if let Ok(names) = listed(blobs, scratch).await {
        for name in names.iter().filter(|n| n.starts_with(scratch)) {
            let _ = blobs.delete(name).await;
        }
    }
}

/// Remove the scratch objects of checks that started [`ABANDONED_AFTER_SECS`] or more before
/// `now` (their prefix names their start).
async fn clear_abandoned<B: BlobStore>(blobs: &B, now: u64) {
    let Ok(names) = listed(blobs, SCRATCH_ROOT).await else { return };
    for name in names {
        let Some(started) = name.strip_prefix(SCRATCH_ROOT).and_then(|rest| rest.get(..16)) else { continue };
        let Ok(started) = u64::from_str_radix(started, 16) else { continue };
        if now.saturating_sub(started) >= ABANDONED_AFTER_SECS {
            let _ = blobs.delete(&name).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::store::Written;
    use crate::testing::{block_on, memory_stores};

    #[test]
    fn the_in_memory_store_keeps_the_contract() {
        let stores = memory_stores();
        let checks = block_on(check(&stores));
        assert!(checks.len() >= 10);
        assert!(stores.blobs.0.borrow().is_empty(), "the scratch objects are gone");
        assert!(checks.iter().all(|c| c.broken.is_none()), "{checks:#?}");
    }

    /// A store that overwrites existing names and lists the first page only: the rules it breaks
    /// are named, the others held.
    struct Careless(crate::testing::MemBlobs);

    impl BlobStore for Careless {
        type Incoming = Vec<u8>;
        type Outgoing = Vec<u8>;
        async fn write(&self, name: &str, data: Vec<u8>, hashes: Vec<RunningHash>) -> Result<Written, StoreError> {
            self.0.0.borrow_mut().remove(name);
            self.0.write(name, data, hashes).await
        }
        async fn read_extents(&self, extents: Vec<Extent>) -> Result<Vec<u8>, StoreError> {
            self.0.read_extents(extents).await
        }
        async fn size(&self, name: &str) -> Result<u64, StoreError> {
            self.0.size(name).await
        }
        async fn delete(&self, name: &str) -> Result<(), StoreError> {
            self.0.delete(name).await
        }
        async fn compose(&self, name: &str, extents: Vec<Extent>) -> Result<Option<u64>, StoreError> {
            self.0.compose(name, extents).await
        }
        async fn presign(&self, name: &str, expires_secs: u32) -> Result<Option<String>, StoreError> {
            self.0.presign(name, expires_secs).await
        }
        async fn list(
            &self,
            prefix: &str,
            _: Option<&str>,
            limit: u32,
        ) -> Result<(Vec<String>, Option<String>), StoreError> {
            Ok((self.0.list(prefix, None, limit).await?.0, None))
        }
        async fn write_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
            self.write(name, bytes, Vec::new()).await.map(|_| ())
        }
        async fn read_bytes(&self, name: &str) -> Result<Vec<u8>, StoreError> {
            self.0.read_bytes(name).await
        }
        async fn collect(&self, body: Vec<u8>, limit: usize) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.collect(body, limit).await
        }
        async fn hash_extents(&self, extents: Vec<Extent>, hash: RunningHash) -> Result<RunningHash, StoreError> {
            self.0.hash_extents(extents, hash).await
        }
    }

    #[test]
    fn a_store_that_overwrites_and_lists_one_page_is_caught() {
        let memory = memory_stores();
        let stores = Stores {
            meta: memory.meta,
            blobs: Careless(Default::default()),
            random: memory.random,
            now: memory.now,
            config: memory.config,
            request_id: memory.request_id,
            events: memory.events,
        };
        let checks = block_on(check(&stores));
        let broken: Vec<&str> = checks.iter().filter(|c| c.broken.is_some()).map(|c| c.rule).collect();
        assert_eq!(
            broken,
            [
                "creating a name that exists fails with already-exists",
                "of racing creates of one name exactly one wins",
                "listings are ordered, paged, and start after the cursor",
                "names of every length up to the longest are kept apart",
                "the scratch objects are all removed",
            ],
            "{checks:#?}"
        );
    }

    #[test]
    fn a_check_removes_what_an_abandoned_check_left_and_nothing_outside_its_scratch() {
        let stores = memory_stores();
        let now = (stores.now)();
        let abandoned = format!("{SCRATCH_ROOT}{:016x}-ab/x", now - ABANDONED_AFTER_SECS);
        let recent = format!("{SCRATCH_ROOT}{:016x}-cd/x", now - 10);
        for name in [&abandoned, &recent, &"checkpoint/x".to_owned(), &"index/blobs/x".to_owned()] {
            block_on(stores.blobs.write_bytes(name, b"x".to_vec())).unwrap();
        }
        let checks = block_on(check(&stores));
        assert!(checks.iter().all(|c| c.broken.is_none()), "{checks:#?}");
        let left: Vec<String> = stores.blobs.0.borrow().keys().cloned().collect();
        assert_eq!(left, [recent, "checkpoint/x".to_owned(), "index/blobs/x".to_owned()]);
    }

    #[test]
    fn names_are_made_of_the_length_asked_in_parts_a_filesystem_takes() {
        for length in [9, 10, 255, 263, 264, 265, 600, LONGEST_NAME] {
            let name = name_of_length("check/x/", length);
            assert_eq!(name.len(), length);
            assert!(name.split('/').all(|part| !part.is_empty() && part.len() <= LONGEST_PART), "{name}");
        }
    }
}
