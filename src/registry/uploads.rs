//! What happens to upload sessions: opening, appending a chunk, finishing as a blob, cancelling,
//! and the bounded sweep that expires abandoned sessions and finishes the work of requests that
//! died. Every blob the registry stores (a chunked upload, a whole blob in one POST, a
//! manifest's bytes) is written through a session, so that anything written is owned by a
//! record the sweep can find until a blob record owns it.
//!
//! The session record changes only by compare-and-swap from the bytes a request read
//! ([`Loaded`]); docs/consistency.md has each race and the step that settles it.

use crate::registry::blobs::{self, BlobRecord, Commit, Part};
use crate::registry::keys;
use crate::registry::store::{BlobStore, MetaStore, ObjectPages, Stores, Written, internal};
use crate::registry::upload::{SessionState, UploadSession, valid_id};
use crate::wire::digest::{Digest, RunningHash};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::name::RepoName;

type Result<T> = std::result::Result<T, RegistryError>;

/// How many sessions one sweep step looks at.
pub const SWEEP_BATCH: u32 = 16;

/// How long a finished session keeps its claim on its parts before the sweep checks that the
/// blob record still names them, and how long a cancel may take before the sweep finishes it.
/// Far longer than the few milliseconds between two first writers' reads and writes of one
/// blob record; never longer than the upload expiry.
const GRACE_SECS: u64 = 60;

/// A session as read, with the exact bytes a compare-and-swap must find to change it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub session: UploadSession,
    raw: Vec<u8>,
}

fn grace<M, B>(stores: &Stores<M, B>) -> u64 {
    GRACE_SECS.min(stores.config.upload_expiry_secs)
}

fn corrupt(id: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::new(ErrorCode::Internal, format!("corrupt upload session {id}: {e}"))
}

/// Open a session for `repo`. Its index entry comes first, so that the sweep can find every
/// session that may own objects.
pub async fn open<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    repo: &RepoName,
    owner: Option<String>,
) -> Result<Loaded> {
    let id = hex::encode((stores.random)());
    let now = (stores.now)();
    stores.count("uploads_opened", 1);
    let mut session = UploadSession::new(repo.as_str(), id, now);
    session.owner = owner;
    blobs::mark(stores, &keys::upload_index(&session.id), now.to_string().into_bytes()).await?;
    let raw = serde_json::to_vec(&session).expect("sessions serialize");
    stores.meta.set(&keys::upload(&session.id), &raw).await.map_err(internal)?;
    Ok(Loaded { session, raw })
}

/// The session `id`, whatever its state; `None` when there is none.
pub async fn load<M: MetaStore, B>(stores: &Stores<M, B>, id: &str) -> Result<Option<Loaded>> {
    if !valid_id(id) {
        return Ok(None);
    }
    let Some(raw) = stores.meta.get(&keys::upload(id)).await.map_err(internal)? else { return Ok(None) };
    let session = serde_json::from_slice(&raw).map_err(|e| corrupt(id, e))?;
    Ok(Some(Loaded { session, raw }))
}

/// Move the session from exactly what was read to `next`; `None` when another request changed
/// it first.
async fn swap<M: MetaStore, B>(stores: &Stores<M, B>, from: &Loaded, next: UploadSession) -> Result<Option<Loaded>> {
    let raw = serde_json::to_vec(&next).expect("sessions serialize");
    let key = keys::upload(&from.session.id);
    Ok(stores
        .meta
        .compare_and_swap(&key, &from.raw, &raw)
        .await
        .map_err(internal)?
        .then_some(Loaded { session: next, raw }))
}

/// A fresh name for bytes that `session` writes.
pub fn new_object<M, B>(stores: &Stores<M, B>, session: &UploadSession) -> String {
    keys::upload_object(&session.id, (stores.random)())
}

/// Add a written object as the session's next chunk. The object was written under a fresh name
/// of this session; if another request moved the session first (a concurrent chunk, finish or
/// cancel) it is removed again and the answer is `None`.
pub async fn append<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    from: &Loaded,
    part: Part,
    written: &Written,
) -> Result<Option<Loaded>> {
    let repo = RepoName::parse(&from.session.repo)?;
    if let Err(refused) = crate::registry::quota::charge_pending(stores, &repo, written.size).await {
        blobs::discard(stores, &[part]).await;
        return Err(refused);
    }
    let next = from.session.advanced(part.clone(), &written.hashes, (stores.now)());
    let appended = swap(stores, from, next).await;
    if !matches!(appended, Ok(Some(_))) {
        crate::registry::quota::release_pending(stores, &repo, written.size).await;
        blobs::discard(stores, &[part]).await;
    }
    appended
}

/// How a finish ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// The blob is stored and linked to the session's repository.
    Stored,
    /// Another request finished or cancelled the session first; nothing was done.
    Refused,
    /// The bytes hash to `actual`: the session is cancelled and its objects removed.
    Mismatch { actual: Digest },
}

/// Finish the session as blob `digest`, with `last` (an object just written, and the hashes
/// continued over it) as its final chunk if given. Exactly one finishing request wins the
/// session (a compare-and-swap to `Closing`); the blob is then verified, committed, and linked.
pub async fn finish<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    from: &Loaded,
    last: Option<(Part, Written)>,
    digest: &Digest,
) -> Result<Finish> {
    let now = (stores.now)();
    let mut next = from.session.clone();
    if let Some((part, written)) = &last {
        next = next.advanced(part.clone(), &written.hashes, now);
    }
    let closing = next.moved_to(SessionState::Closing, Some(digest.to_string()), now);
    let Some(closing) = swap(stores, from, closing).await? else {
        if let Some((part, _)) = last {
            blobs::discard(stores, &[part]).await;
        }
        return Ok(Finish::Refused);
    };
    // The chunks counted as pending (all but `last`, which the finish brought) leave the
    // pending count: the blob is counted by its link below. The swap to `Closing` is the one
    // step that happens once per session, so they leave it once.
    let repo = RepoName::parse(&closing.session.repo)?;
    crate::registry::quota::release_pending(stores, &repo, from.session.size).await;
    let session = &closing.session;
    let record = BlobRecord::new(session.size, session.parts.clone());
    let actual = hash_of(stores, session, &record, digest).await?;
    if actual != *digest {
        cancel_claimed(stores, closing).await?;
        return Ok(Finish::Mismatch { actual });
    }
    let (closing, record) = joined_for_redirects(stores, closing, record, digest).await?;
    // The link first: from here it holds the blob against garbage collection, which keeps a
    // blob linked less than `gc_grace_seconds` ago, so the record committed next is not
    // collected before the link could be checked against it.
    let link = blobs::Link::write(stores, &repo, digest, record.size).await?;
    for _ in 0..4 {
        let committed = match blobs::commit(stores, digest, &record).await {
            Ok(committed) => committed,
            Err(err) => {
                // The link goes with its quota charge: the finish fails, and the client's retry
                // links (and is charged) again.
                link.undo(stores).await;
                return Err(err);
            }
        };
        match committed {
            Commit::Adopted => {
                // Keep the claim on the parts until the sweep has seen the record still names them.
                let finished =
                    closing.session.moved_to(SessionState::Finished, Some(digest.to_string()), (stores.now)());
                swap(stores, &closing, finished).await?;
                // This session's own record: only a collector that ignored the link (no grace)
                // can have removed it, and then with the parts; the finish fails.
                if blobs::hold(stores, digest).await? {
                    stores.count("uploads_finished", 1);
                    return Ok(Finish::Stored);
                }
                break;
            }
            Commit::Existing(existing) => {
                // The stored blob must still be there for the link; if a collector removed it
                // meanwhile, this session's parts (still kept) are committed instead.
                if blobs::hold(stores, digest).await? {
                    release(stores, closing, &existing.parts).await?;
                    stores.count("uploads_finished", 1);
                    return Ok(Finish::Stored);
                }
            }
        }
    }
    link.take_back(stores).await;
    Err(RegistryError::new(ErrorCode::Internal, format!("blob {digest} was garbage-collected while being finished")))
}

/// With blob redirects on, a blob of several chunk objects becomes one object where the store
/// can join them, so that a redirect can point at it. The joined object is named under the
/// session like its chunks: the chunks stay the session's until it is settled (as any part a
/// record does not name), and a finish that dies here leaves objects the sweep removes. A join
/// that fails keeps the chunks: the blob is then streamed, never lost.
///
/// Joined or not, the session is swapped once more before the record is written: it names the
/// joined object, so a sweep that settles it keeps exactly what the record names and removes the
/// chunks (docs/consistency.md); and it is touched, since the join may have taken long (a sweep
/// that took the session over meanwhile may have removed the chunks: this finish then fails
/// rather than name them).
async fn joined_for_redirects<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    closing: Loaded,
    record: BlobRecord,
    digest: &Digest,
) -> Result<(Loaded, BlobRecord)> {
    if stores.config.blob_redirect_secs == 0 || record.parts.len() < 2 {
        return Ok((closing, record));
    }
    let session = &closing.session;
    let name = new_object(stores, session);
    let record = match stores.blobs.compose(&name, record.extents(0, record.size)).await {
        Ok(Some(size)) if size == record.size => BlobRecord::new(size, vec![Part { name, size }]),
        Ok(Some(size)) => {
            stores.log(format_args!(
                "joining the chunks of upload {} gave {size} bytes, not {}",
                session.id, record.size
            ));
            record
        }
        Ok(None) => record,
        Err(e) => {
            stores.log(format_args!("joining the chunks of upload {} failed ({e}): its blob is streamed", session.id));
            record
        }
    };
    let mut next = session.moved_to(SessionState::Closing, Some(digest.to_string()), (stores.now)());
    next.parts = record.parts.clone();
    match swap(stores, &closing, next).await? {
        Some(moved) => Ok((moved, record)),
        None => Err(corrupt(&session.id, "changed by another request while finishing")),
    }
}

/// The session's bytes hashed under `digest`'s algorithm: the running hash when it ran along
/// the upload, else (SHA-512) hashed now over the parts.
async fn hash_of<M, B: BlobStore>(
    stores: &Stores<M, B>,
    session: &UploadSession,
    record: &BlobRecord,
    digest: &Digest,
) -> Result<Digest> {
    let hashes = session.hashes().ok_or_else(|| corrupt(&session.id, "bad hash state"))?;
    match hashes.into_iter().find(|h| h.algorithm() == digest.algorithm()) {
        Some(running) => Ok(Digest::from_hash(running)),
        None => Ok(Digest::from_hash(
            stores
                .blobs
                .hash_extents(record.extents(0, record.size), RunningHash::new(digest.algorithm()))
                .await
                .map_err(internal)?,
        )),
    }
}

/// Cancel an open session (a client's DELETE, or expiry). `false` when it is no longer open:
/// another request is finishing or has cancelled it.
pub async fn cancel<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, mut from: Loaded) -> Result<bool> {
    loop {
        if from.session.state != SessionState::Open {
            return Ok(false);
        }
        let cancelled = from.session.moved_to(SessionState::Cancelled, None, (stores.now)());
        if let Some(claimed) = swap(stores, &from, cancelled).await? {
            // Its chunks leave the pending count once: only one request moves it from `Open`.
            stores.count("uploads_cancelled", 1);
            if let Ok(repo) = RepoName::parse(&claimed.session.repo) {
                crate::registry::quota::release_pending(stores, &repo, claimed.session.size).await;
            }
            cancel_claimed(stores, claimed).await?;
            return Ok(true);
        }
        // A chunk landed meanwhile: cancel what is there now.
        match load(stores, &from.session.id).await? {
            Some(now) => from = now,
            None => return Ok(false),
        }
    }
}

/// Remove every object of a session this request holds the claim on, then the session.
async fn cancel_claimed<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, claimed: Loaded) -> Result<()> {
    let cancelled = if claimed.session.state == SessionState::Cancelled {
        claimed
    } else {
        let next = claimed.session.moved_to(SessionState::Cancelled, None, (stores.now)());
        match swap(stores, &claimed, next).await? {
            Some(cancelled) => cancelled,
            None => return Ok(()), // the sweep took it over: it finishes the job
        }
    };
    release(stores, cancelled, &[]).await
}

/// Remove the session's objects except `keep` (the parts a blob record owns), then its record,
/// then its index entry: an interrupted release leaves a session the sweep finds again.
async fn release<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, claimed: Loaded, keep: &[Part]) -> Result<()> {
    let id = &claimed.session.id;
    let prefix = keys::upload_objects(id);
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    let mut doomed = Vec::new();
    while let Some(names) = pages.next().await? {
        doomed.extend(names.into_iter().filter(|n| !keep.iter().any(|k| &k.name == n)));
    }
    for name in doomed {
        blobs::remove(stores, &name).await?;
    }
    stores.meta.delete(&keys::upload(id)).await.map_err(internal)?;
    blobs::remove(stores, &keys::upload_index(id)).await
}

/// One bounded step of the sweep: look at up to [`SWEEP_BATCH`] sessions of the index from a
/// random point (ids are random, so over many steps every session is looked at; no cursor to
/// write on every request) and settle those whose time has come. Its cost is bounded by the
/// batch: the index holds only sessions that may still own objects, never the history of
/// finished uploads. Failures are logged; a later step tries again.
pub async fn sweep<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>) {
    if let Err(err) = sweep_step(stores).await {
        stores.log(format_args!("upload sweep: {err}"));
    }
}

async fn sweep_step<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>) -> Result<()> {
    let start = keys::upload_index(&hex::encode((stores.random)()));
    let prefix = keys::UPLOADS_INDEX_PREFIX;
    let (mut names, _) = stores.blobs.list(prefix, Some(&start), SWEEP_BATCH).await.map_err(internal)?;
    if names.len() < SWEEP_BATCH as usize {
        // Past the last id: go on from the first.
        let (first, _) = stores.blobs.list(prefix, None, SWEEP_BATCH - names.len() as u32).await.map_err(internal)?;
        names.extend(first.into_iter().filter(|n| *n <= start));
    }
    for entry in names {
        let id = &entry[prefix.len()..];
        settle(stores, id, &entry).await?;
    }
    Ok(())
}

/// Settle session `id` if its time has come.
pub async fn settle<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, id: &str, entry: &str) -> Result<()> {
    let now = (stores.now)();
    let expiry = stores.config.upload_expiry_secs;
    let Some(loaded) = load(stores, id).await? else {
        // No record: its release was interrupted after the record went (the objects went
        // before), or the session is being opened right now (entry before record). Only an
        // old entry is removed.
        let opened = stores.blobs.read_bytes(entry).await.ok().and_then(|b| String::from_utf8(b).ok());
        if opened.and_then(|t| t.parse::<u64>().ok()).is_none_or(|t| now.saturating_sub(t) > expiry) {
            blobs::remove(stores, entry).await?;
        }
        return Ok(());
    };
    let session = &loaded.session;
    match session.state {
        SessionState::Open if session.expired(now, expiry) => {
            cancel(stores, loaded).await?;
        }
        SessionState::Cancelled if session.expired(now, grace(stores)) => release(stores, loaded, &[]).await?,
        SessionState::Finished if session.expired(now, grace(stores)) => settle_committed(stores, loaded).await?,
        // A finisher that died (or is still hashing: the expiry is hours) after its claim.
        SessionState::Closing if session.expired(now, expiry) => settle_committed(stores, loaded).await?,
        _ => {}
    }
    Ok(())
}

/// A session committed (or perhaps committed, if its finisher died) as its digest: if the blob
/// record names its parts, the blob owns them and only the rest goes; if not (another first
/// writer's record stayed, or the commit never happened), all of it goes.
async fn settle_committed<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, loaded: Loaded) -> Result<()> {
    let session = &loaded.session;
    let digest = session.digest.as_deref().and_then(|d| Digest::parse(d).ok());
    let owned = match &digest {
        Some(digest) => blobs::record(stores, digest).await?.is_some_and(|r| r.parts == session.parts),
        None => false,
    };
    let keep = if owned { session.parts.clone() } else { Vec::new() };
    // Touch the session before releasing it: a second sweeper that read it earlier fails its
    // swap and leaves it. (Two that read it in the same second may both go on; the release is
    // idempotent, and both keep the same parts.)
    let claimed = loaded.session.moved_to(loaded.session.state, loaded.session.digest.clone(), (stores.now)());
    let Some(claimed) = swap(stores, &loaded, claimed).await? else { return Ok(()) };
    release(stores, claimed, &keep).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{advance_clock, block_on, memory_stores};

    fn write_part<M, B: BlobStore<Incoming = Vec<u8>>>(
        stores: &Stores<M, B>,
        session: &UploadSession,
        bytes: &[u8],
    ) -> (Part, Written) {
        let name = new_object(stores, session);
        let hashes = session.hashes().unwrap();
        let written = block_on(stores.blobs.write(&name, bytes.to_vec(), hashes)).unwrap();
        (Part { name, size: written.size }, written)
    }

    #[test]
    fn of_two_chunks_from_one_version_exactly_one_is_taken_and_the_other_leaves_nothing() {
        let stores = memory_stores();
        let repo = RepoName::parse("r").unwrap();
        let opened = block_on(open(&stores, &repo, None)).unwrap();
        let (a, wa) = write_part(&stores, &opened.session, b"aaa");
        let (b, wb) = write_part(&stores, &opened.session, b"bbbb");
        let first = block_on(append(&stores, &opened, a.clone(), &wa)).unwrap().unwrap();
        assert!(block_on(append(&stores, &opened, b.clone(), &wb)).unwrap().is_none(), "the second is refused");
        assert_eq!(first.session.parts, [a]);
        assert!(block_on(stores.blobs.size(&b.name)).is_err(), "the losing chunk is removed");
    }

    #[test]
    fn of_two_finishes_exactly_one_stores_and_the_blob_reads_back() {
        let stores = memory_stores();
        let repo = RepoName::parse("r").unwrap();
        let opened = block_on(open(&stores, &repo, None)).unwrap();
        let (a, wa) = write_part(&stores, &opened.session, b"hello");
        let loaded = block_on(append(&stores, &opened, a, &wa)).unwrap().unwrap();
        let digest = Digest::of(crate::wire::digest::Algorithm::Sha256, b"hello");
        assert_eq!(block_on(finish(&stores, &loaded, None, &digest)).unwrap(), Finish::Stored);
        assert_eq!(block_on(finish(&stores, &loaded, None, &digest)).unwrap(), Finish::Refused);
        assert!(!block_on(cancel(&stores, loaded.clone())).unwrap(), "a cancel after the finish does nothing");
        let record = block_on(blobs::record(&stores, &digest)).unwrap().unwrap();
        assert!(block_on(blobs::parts_present(&stores, &record)).unwrap());
        // After the grace time the sweep lets the blob own the parts and forgets the session.
        advance_clock(GRACE_SECS + 1);
        block_on(sweep(&stores));
        assert!(block_on(load(&stores, &loaded.session.id)).unwrap().is_none());
        assert!(block_on(blobs::parts_present(&stores, &record)).unwrap());
    }

    #[test]
    fn a_second_upload_of_a_stored_blob_removes_only_its_own_parts() {
        let stores = memory_stores();
        let repo = RepoName::parse("r").unwrap();
        let digest = Digest::of(crate::wire::digest::Algorithm::Sha256, b"x");
        for _ in 0..2 {
            let opened = block_on(open(&stores, &repo, None)).unwrap();
            let (a, wa) = write_part(&stores, &opened.session, b"x");
            assert_eq!(block_on(finish(&stores, &opened, Some((a, wa)), &digest)).unwrap(), Finish::Stored);
        }
        let record = block_on(blobs::record(&stores, &digest)).unwrap().unwrap();
        assert!(block_on(blobs::parts_present(&stores, &record)).unwrap());
        assert_eq!(stores.blobs.0.borrow().keys().filter(|k| k.starts_with("uploads/")).count(), 1);
    }

    #[test]
    fn a_record_whose_parts_are_gone_is_replaced_by_the_next_push() {
        let stores = memory_stores();
        let repo = RepoName::parse("r").unwrap();
        let digest = Digest::of(crate::wire::digest::Algorithm::Sha256, b"y");
        let broken = BlobRecord::new(1, vec![Part { name: "uploads/gone/0".into(), size: 1 }]);
        block_on(stores.meta.set(&keys::blob(&digest), &serde_json::to_vec(&broken).unwrap())).unwrap();
        let opened = block_on(open(&stores, &repo, None)).unwrap();
        let (a, wa) = write_part(&stores, &opened.session, b"y");
        assert_eq!(block_on(finish(&stores, &opened, Some((a, wa)), &digest)).unwrap(), Finish::Stored);
        let record = block_on(blobs::record(&stores, &digest)).unwrap().unwrap();
        assert!(block_on(blobs::parts_present(&stores, &record)).unwrap());
    }

    #[test]
    fn an_abandoned_session_expires_from_its_last_chunk_and_leaves_nothing() {
        let mut stores = memory_stores();
        stores.config.upload_expiry_secs = 100;
        let repo = RepoName::parse("r").unwrap();
        let opened = block_on(open(&stores, &repo, None)).unwrap();
        advance_clock(80);
        let (a, wa) = write_part(&stores, &opened.session, b"abc");
        block_on(append(&stores, &opened, a, &wa)).unwrap().unwrap();
        advance_clock(80);
        block_on(sweep(&stores));
        assert!(block_on(load(&stores, &opened.session.id)).unwrap().is_some(), "touched 80 s ago: alive");
        advance_clock(30);
        block_on(sweep(&stores));
        assert!(block_on(load(&stores, &opened.session.id)).unwrap().is_none());
        assert!(stores.blobs.0.borrow().keys().all(|k| !k.starts_with("uploads/") && !k.starts_with("index/uploads/")));
    }

    #[test]
    fn a_joined_blob_keeps_its_joined_object_and_the_sweep_removes_the_chunks() {
        let mut stores = memory_stores();
        stores.config.blob_redirect_secs = 300;
        stores.config.upload_expiry_secs = 100;
        let repo = RepoName::parse("r").unwrap();
        let digest = Digest::of(crate::wire::digest::Algorithm::Sha256, b"abcdef");
        let opened = block_on(open(&stores, &repo, None)).unwrap();
        let (a, wa) = write_part(&stores, &opened.session, b"abc");
        let after_a = block_on(append(&stores, &opened, a, &wa)).unwrap().unwrap();
        let (b, wb) = write_part(&stores, &after_a.session, b"def");
        assert_eq!(block_on(finish(&stores, &after_a, Some((b, wb)), &digest)).unwrap(), Finish::Stored);
        let record = block_on(blobs::record(&stores, &digest)).unwrap().unwrap();
        assert_eq!(record.parts.len(), 1, "one joined object");
        advance_clock(10_000);
        block_on(sweep(&stores));
        let objects: Vec<String> =
            stores.blobs.0.borrow().keys().filter(|k| k.starts_with("uploads/")).cloned().collect();
        assert_eq!(objects, vec![record.parts[0].name.clone()], "only the joined object is left");
        assert_eq!(stores.blobs.0.borrow()[&record.parts[0].name], b"abcdef");
    }
}
