//! Online garbage collection of blobs: bounded steps over the blob list (`index/blobs/`), each
//! resumable from a cursor, safe while clients push (docs/consistency.md, "Garbage collection").
//!
//! A blob is kept while anything holds it: a manifest record of some repository that
//! references it (its layers, config, child manifests, its own bytes), or a link made less than
//! `gc_grace_seconds` ago (a push in flight: the client has that long from pushing a blob to
//! pushing the manifest). Everything that may hold a blob has a holder entry under
//! `index/holders/<blob>/`, written before its fact, so a step finds every fact to check.
//!
//! Removing a blob is a claim made in three moves on its record:
//! 1. mark it condemned by compare-and-swap;
//! 2. list and check its holders again, all of them read after the mark;
//! 3. swap the condemned record to removed (empty).
//!
//! A reference is written the other way round: its fact first, then the record is read
//! ([`crate::registry::blobs::hold`]): unmarked, it stands; condemned, the mark is taken off by swap (and
//! move 3 fails); removed, the reference is taken back and the push fails with
//! `MANIFEST_BLOB_UNKNOWN`, as for a blob never pushed. Either the collector's second look sees
//! the reference, or the reference's look sees the mark: a manifest never references a removed
//! blob. Only after move 3 are the bytes, the dead links, the quota counts and the entries
//! removed.

use crate::config::events::Action;
use crate::lifecycle::retention::{Budget, Done, Position};
use crate::registry::blobs::{self, BlobRecord};
use crate::registry::events::Event;
use crate::registry::keys::{self, Holder};
use crate::registry::store::{BlobStore, MetaStore, ObjectPages, Stores, internal};
use crate::wire::digest::Digest;
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::name::RepoName;

type Result<T> = std::result::Result<T, RegistryError>;

/// Blobs looked at in one step at most.
pub const STEP_BLOBS: u32 = 64;

/// A step stops starting new blobs after this long, well under an edge host's request limit.
pub const STEP_SECONDS: u64 = 5;

// `gc_abandoned_seconds` cannot be set so low that a live collector between its moves is taken
// for a dead one (the settings floor cannot import this one, so it keeps its own bound).
const _: () = assert!(crate::config::MIN_ABANDONED_SECS >= 2 * STEP_SECONDS);

/// Blobs of a step examined at once, unless the caller asks otherwise. A blob's work is mostly
/// waiting on the stores, so several at once do a pass's work for less of the machine than one
/// at a time (docs/benchmarks.md); a caller that wants a pass to take less from the pushes
/// beside it rests between steps (`berth-runner gc --pace`).
pub const DEFAULT_CONCURRENCY: usize = 8;

/// The most blobs a step examines at once.
pub const MAX_CONCURRENCY: usize = 8;

/// Repositories one step looks at at most.
pub const STEP_REPOSITORIES: u32 = 4;

/// Tags and manifests retention examines in one step, about (it reads whole pages).
pub const STEP_RETENTION_ENTRIES: u64 = 512;

/// What one step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Blobs looked at.
    pub examined: u64,
    /// Blobs removed (in a dry run: that would be removed), with their sizes.
    pub collected: Vec<(Digest, u64)>,
    /// Tags retention removed (or would), as `repository:tag`.
    pub untagged: Vec<String>,
    /// Manifests retention deleted (or would), as `repository@digest`.
    pub deleted_manifests: Vec<String>,
    /// Tags and manifests retention looked at.
    pub retention_examined: u64,
    /// Where the next step starts; `None` once the pass is complete.
    pub next: Option<String>,
}

/// Where a pass is: retention first (repository by repository, when rules are set), then the
/// blobs, so that what retention deleted is collected in the same pass.
enum Phase {
    /// The repositories after this one (`repos:<name>`).
    Repositories(Option<String>),
    /// Inside one repository's retention (`retention|<name>|<fingerprint>|<position>`): the
    /// fingerprint names the rule and the kind of run the position was made under.
    Retention(RepoName, String, Position),
    Blobs(Option<String>),
}

impl Phase {
    fn parse(cursor: Option<String>) -> Result<Phase> {
        let Some(c) = cursor else { return Ok(Phase::Repositories(None)) };
        if let Some(inside) = c.strip_prefix("retention|") {
            let parsed = inside.splitn(3, '|').collect::<Vec<_>>();
            let parsed = match parsed.as_slice() {
                [name, fingerprint, position] => RepoName::parse(name)
                    .ok()
                    .zip(Position::parse(position))
                    .map(|(n, p)| (n, fingerprint.to_string(), p)),
                _ => None,
            };
            let (name, fingerprint, position) = parsed.ok_or_else(|| {
                RegistryError::new(ErrorCode::Unsupported, format!("{c:?} is not a cursor garbage collection made"))
                    .with_status(http::StatusCode::BAD_REQUEST)
            })?;
            return Ok(Phase::Retention(name, fingerprint, position));
        }
        Ok(match (c.strip_prefix("repos:"), c.strip_prefix("blobs:")) {
            (Some(after), _) => Phase::Repositories(Some(after.to_owned()).filter(|a| !a.is_empty())),
            (_, Some(after)) => Phase::Blobs(Some(after.to_owned()).filter(|a| !a.is_empty())),
            _ => Phase::Blobs(Some(c)),
        })
    }
}

impl Step {
    pub fn bytes(&self) -> u64 {
        self.collected.iter().map(|(_, size)| size).sum()
    }
}

/// What happened to one blob.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Kept,
    Collected(u64),
}

/// One step from `cursor` (`None`: a new pass): retention over about
/// [`STEP_RETENTION_ENTRIES`] tags and manifests of up to [`STEP_REPOSITORIES`] repositories, or
/// up to [`STEP_BLOBS`] blobs, for at most about [`STEP_SECONDS`]. A dry run only reports what
/// would go, changing nothing.
/// `concurrency` blobs at once (1 to [`MAX_CONCURRENCY`]).
pub async fn step<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    cursor: Option<String>,
    dry_run: bool,
    concurrency: usize,
) -> Result<Step> {
    let concurrency = concurrency.clamp(1, MAX_CONCURRENCY);
    match Phase::parse(cursor)? {
        Phase::Repositories(_) | Phase::Retention(..) if stores.config.retention.is_empty() => {
            blob_step(stores, None, dry_run, concurrency).await
        }
        Phase::Repositories(after) => repository_step(stores, None, after, dry_run).await,
        Phase::Retention(name, fingerprint, position) => {
            repository_step(stores, Some((name, fingerprint, position)), None, dry_run).await
        }
        Phase::Blobs(after) => blob_step(stores, after, dry_run, concurrency).await,
    }
}

/// Retention of the repository a step stopped in (`inside`), then of the repositories after
/// `after` (or after that one), while the step's budget lasts.
async fn repository_step<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    inside: Option<(RepoName, String, Position)>,
    mut after: Option<String>,
    dry_run: bool,
) -> Result<Step> {
    let mut step = Step::default();
    let mut budget = Budget::new((stores.now)(), STEP_SECONDS, STEP_RETENTION_ENTRIES);
    if let Some((name, fingerprint, position)) = inside {
        // A position made under another rule, or by a dry run for a run (or the other way
        // round), is not gone on with: the repository starts again.
        let position = match stores.config.retention.rule_for(&name) {
            Some(rule) if fingerprint != rule_fingerprint(rule, dry_run) => Position::start(rule),
            _ => position,
        };
        if let Some(stopped) = one_repository(stores, &name, position, dry_run, &mut budget, &mut step).await {
            step.next = Some(retention_cursor(stores, &name, &stopped, dry_run));
            return Ok(step);
        }
        after = Some(name.as_str().to_owned());
    }
    let after = after.map(|a| format!("{}{a}", keys::REPOS_PREFIX));
    let (names, mut next) =
        stores.blobs.list(keys::REPOS_PREFIX, after.as_deref(), STEP_REPOSITORIES).await.map_err(internal)?;
    let mut last_done = after;
    for marker in &names {
        // No new repository once the budget is spent (the next step goes on from the last done).
        if budget.exhausted((stores.now)())
            && let Some(last) = last_done
        {
            next = Some(last);
            break;
        }
        last_done = Some(marker.clone());
        let Ok(name) = RepoName::parse(&marker[keys::REPOS_PREFIX.len()..]) else { continue };
        let Some(rule) = stores.config.retention.rule_for(&name) else { continue };
        let start = Position::start(rule);
        if let Some(stopped) = one_repository(stores, &name, start, dry_run, &mut budget, &mut step).await {
            step.next = Some(retention_cursor(stores, &name, &stopped, dry_run));
            return Ok(step);
        }
    }
    step.next = Some(match next {
        Some(last) => format!("repos:{}", &last[keys::REPOS_PREFIX.len()..]),
        None => "blobs:".to_owned(),
    });
    Ok(step)
}

/// The cursor of a step that stopped inside repository `name`'s retention.
fn retention_cursor<M, B>(stores: &Stores<M, B>, name: &RepoName, stopped: &Position, dry_run: bool) -> String {
    let fingerprint =
        stores.config.retention.rule_for(name).map(|rule| rule_fingerprint(rule, dry_run)).unwrap_or_default();
    format!("retention|{name}|{fingerprint}|{}", stopped.encode())
}

/// A rule and a kind of run, in 12 hex digits.
fn rule_fingerprint(rule: &crate::config::retention::Rule, dry_run: bool) -> String {
    let text = format!("{rule} dry_run={dry_run}");
    Digest::of(crate::wire::digest::Algorithm::Sha256, text.as_bytes()).hex()[..12].to_owned()
}

/// One repository's retention from `at` while `budget` lasts, reported into `step`: where it
/// stopped, or `None` once done. A repository that fails (a store error, a damaged record) is
/// logged and left for the next pass; the others go on.
async fn one_repository<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    at: Position,
    dry_run: bool,
    budget: &mut Budget,
    step: &mut Step,
) -> Option<Position> {
    // A repository whose rule went away since the cursor was made is done.
    let rule = stores.config.retention.rule_for(name)?;
    let mut done = Done::default();
    let stopped = crate::lifecycle::retention::resume(stores, name, rule, at, dry_run, budget, &mut done).await;
    step.untagged.extend(done.untagged.iter().map(|t| format!("{name}:{}", t.as_str())));
    step.deleted_manifests.extend(done.deleted.iter().map(|d| format!("{name}@{d}")));
    step.retention_examined += done.examined;
    stopped.unwrap_or_else(|err| {
        let why = err.detail.as_deref().unwrap_or(err.code.message());
        stores.log(format_args!("retention: repository {name} skipped: {why}"));
        None
    })
}

async fn blob_step<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    after: Option<String>,
    dry_run: bool,
    concurrency: usize,
) -> Result<Step> {
    let started = (stores.now)();
    if after.is_none() && !dry_run {
        // A pass's first step: what collectors that died left half done.
        finish_unholds(stores).await?;
    }
    let (names, mut next) =
        stores.blobs.list(keys::BLOBS_INDEX_PREFIX, after.as_deref(), STEP_BLOBS).await.map_err(internal)?;
    let mut step = Step::default();
    // Blobs at once when asked: a blob's work is mostly waiting on the stores (an fsync per write
    // on the filesystem and SQLite), and the blobs of a step are independent.
    for (i, group) in names.chunks(concurrency).enumerate() {
        if i > 0 && (stores.now)().saturating_sub(started) >= STEP_SECONDS {
            next = Some(names[i * concurrency - 1].clone());
            break;
        }
        let digests: Vec<Digest> = group.iter().filter_map(|entry| keys::parse_blob_index(entry)).collect();
        let outcomes = futures::future::join_all(digests.iter().map(|d| examine(stores, d, dry_run))).await;
        for (digest, outcome) in digests.into_iter().zip(outcomes) {
            step.examined += 1;
            match outcome {
                Ok(Outcome::Collected(size)) => step.collected.push((digest, size)),
                Ok(Outcome::Kept) => {}
                // One blob that fails (a store error, a damaged record) does not stop the pass;
                // the next pass tries it again.
                Err(err) => stores.log(format_args!(
                    "gc: blob {digest} skipped: {}",
                    err.detail.as_deref().unwrap_or(err.code.message())
                )),
            }
        }
    }
    step.next = next.map(|n| format!("blobs:{n}"));
    Ok(step)
}

async fn examine<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, digest: &Digest, dry_run: bool) -> Result<Outcome> {
    let now = (stores.now)();
    let Some(bytes) = stores.meta.get(&keys::blob(digest)).await.map_err(internal)? else {
        // A commit that listed the blob has not written its record yet, or died first.
        if !dry_run {
            forget_unrecorded(stores, digest).await?;
        }
        return Ok(Outcome::Kept);
    };
    if bytes.is_empty() {
        // Removed by a collector that died before its cleanup (or a concurrent one): finish it.
        if !dry_run {
            clean_up(stores, digest).await?;
        }
        return Ok(Outcome::Kept);
    }
    let Ok(record) = serde_json::from_slice::<BlobRecord>(&bytes) else {
        stores.log(format_args!("gc: the record of blob {digest} does not parse: kept"));
        return Ok(Outcome::Kept);
    };
    if record.removed.is_some() {
        // Removed by a collector that died before its cleanup: finish it.
        if !dry_run {
            let seen = holds(stores, digest).await?;
            finish_removal(stores, digest, &record, &bytes, &seen).await?;
        }
        return Ok(Outcome::Kept);
    }
    let condemned = match record.condemned {
        None => {
            let seen = holds(stores, digest).await?;
            if seen.live {
                // A kept blob's holders would otherwise grow with every manifest ever deleted
                // that referenced it (a base layer's): the dead ones go, each checked again.
                // Only entries older than the upload expiry: a younger one may be a push's still
                // on its way to its record (which would find its entry gone, and write it again,
                // only if it lives that long).
                if !dry_run {
                    let prefix = keys::holders_prefix(digest);
                    for entry in &seen.dead_manifests {
                        if entry_age(stores, entry).await? >= stores.config.upload_expiry_secs {
                            unhold(stores, digest, &prefix, entry).await?;
                        }
                    }
                    // A namespace whose repositories all unlinked the blob stops paying for it.
                    if !stores.config.quotas.is_empty() {
                        let still_stored = async || Ok(blobs::record(stores, digest).await?.is_some());
                        crate::registry::quota::reconcile_blob(stores, digest, record.size, still_stored).await?;
                    }
                }
                return Ok(Outcome::Kept);
            }
            if dry_run {
                return Ok(Outcome::Collected(record.size));
            }
            match condemn(stores, digest, &record, &bytes).await? {
                Some(marked) => marked,
                None => return Ok(Outcome::Kept), // changed meanwhile: the next pass looks again
            }
        }
        // Another collector is between its moves, or died there.
        // A mark older than `gc_abandoned_seconds` was left by a collector that died between
        // its moves: this step finishes its work.
        Some(at) if now.saturating_sub(at) < stores.config.gc_abandoned_secs || dry_run => return Ok(Outcome::Kept),
        Some(_) => bytes.clone(),
    };
    remove_condemned(stores, digest, record, &condemned).await
}

/// Move 1: mark the record (read as `bytes`) condemned; the marked bytes, or `None` when the
/// record changed since it was read.
async fn condemn<M: MetaStore, B>(
    stores: &Stores<M, B>,
    digest: &Digest,
    record: &BlobRecord,
    bytes: &[u8],
) -> Result<Option<Vec<u8>>> {
    let marked = record.condemned_at((stores.now)(), (stores.random)()).to_json();
    let swapped = stores.meta.compare_and_swap(&keys::blob(digest), bytes, &marked).await.map_err(internal)?;
    Ok(swapped.then_some(marked))
}

/// Moves 2 and 3, then the cleanup: look at every holder again (all read after the mark), and
/// remove the blob only if none holds it and no reference took the mark off.
async fn remove_condemned<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    digest: &Digest,
    record: BlobRecord,
    condemned: &[u8],
) -> Result<Outcome> {
    let unmarked = record.unmarked().to_json();
    let again = match holds_steady(stores, digest).await {
        Ok(again) => again,
        Err(err) => {
            // The second look failed (the store is down, say): the mark comes off again, so the
            // blob does not wait for the abandoned-mark time to be looked at by the next pass.
            let _ = stores.meta.compare_and_swap(&keys::blob(digest), condemned, &unmarked).await;
            return Err(err);
        }
    };
    if again.live {
        stores.meta.compare_and_swap(&keys::blob(digest), condemned, &unmarked).await.map_err(internal)?;
        return Ok(Outcome::Kept);
    }
    let removed = BlobRecord { removed: Some((stores.now)()), ..record.unmarked() }.to_json();
    if !stores.meta.compare_and_swap(&keys::blob(digest), condemned, &removed).await.map_err(internal)? {
        return Ok(Outcome::Kept); // a reference took the mark off
    }
    // From here the blob is gone for every reader; what is left is only cleanup.
    stores.log(format_args!("gc: removed blob {digest} ({} bytes): nothing references it", record.size));
    finish_removal(stores, digest, &record, &removed, &again).await?;
    let mut event = Event::new(stores, Action::Gc, "");
    (event.digest, event.size, event.actor) = (Some(digest.to_string()), Some(record.size), Some("gc".to_owned()));
    crate::registry::events::record(stores, Action::Gc, &event).await?;
    Ok(Outcome::Collected(record.size))
}

/// The cleanup after a removal, each part of it safe to repeat: the parts, the dead links (only
/// the very values judged dead: a link written since takes itself back, `hold`), the quota
/// counts; then the record's value is emptied and the entries go.
async fn finish_removal<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    digest: &Digest,
    record: &BlobRecord,
    removed: &[u8],
    seen: &Holds,
) -> Result<()> {
    blobs::discard(stores, &record.parts).await;
    for (key, value) in &seen.dead_links {
        stores.meta.compare_and_swap(key, value, b"").await.map_err(internal)?;
    }
    crate::registry::quota::release_blob(stores, digest, record.size).await;
    stores.meta.compare_and_swap(&keys::blob(digest), removed, b"").await.map_err(internal)?;
    clean_up(stores, digest).await
}

/// What holds a blob, as read now.
struct Holds {
    /// A manifest references it, or a link within the grace time.
    live: bool,
    /// Links older than the grace time: key and exact value.
    dead_links: Vec<(String, Vec<u8>)>,
    /// Entries of manifests that are gone (deleted, or a push that failed).
    dead_manifests: Vec<String>,
}

async fn holds<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, digest: &Digest) -> Result<Holds> {
    let now = (stores.now)();
    let prefix = keys::holders_prefix(digest);
    let mut holds = Holds { live: false, dead_links: Vec::new(), dead_manifests: Vec::new() };
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in objects {
            match keys::parse_holder(&prefix, &object) {
                Some(Holder::Link { repo_key }) => {
                    let key = keys::blob_link_at(&repo_key, digest);
                    if let Some(value) = stores.meta.get(&key).await.map_err(internal)?.filter(|v| !v.is_empty()) {
                        if now.saturating_sub(blobs::link_time(&value)) < stores.config.gc_grace_secs {
                            holds.live = true;
                        } else {
                            holds.dead_links.push((key, value));
                        }
                    }
                }
                Some(Holder::Manifest { repo_key, manifest }) => {
                    if stores
                        .meta
                        .get(&keys::manifest_at(&repo_key, &manifest))
                        .await
                        .map_err(internal)?
                        .is_some_and(|v| !v.is_empty())
                    {
                        holds.live = true;
                    } else {
                        holds.dead_manifests.push(object);
                    }
                }
                None => {
                    stores.log(format_args!("gc: unknown holder entry {object}: blob {digest} kept"));
                    holds.live = true;
                }
            }
        }
    }
    Ok(holds)
}

/// The second look: what holds the blob, from a listing that no holder-entry removal overlapped.
///
/// Another collector's [`unhold`] removes an entry and puts it back if its fact is there (a
/// manifest pushed again after it was deleted, say): a listing made in between misses a holder
/// that exists. So each unhold writes its intent, then counts itself in
/// [`keys::unholds_begun`], then removes the entry (and deletes the intent only after the
/// entry is back). This look reads the count, then the blob's intents, then the entries, then
/// the count again: an unhold whose removal overlaps the listing either was counted before the
/// first read (then its intent, written before its count, is there for the intents' listing)
/// or is counted after it (then the second read differs). Either way the blob stays.
async fn holds_steady<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, digest: &Digest) -> Result<Holds> {
    let begun = async || {
        let value = stores.meta.get(&keys::unholds_begun(digest)).await.map_err(internal)?;
        Ok::<_, RegistryError>(value.as_deref().map_or(0, crate::registry::store::counter_value))
    };
    let before = begun().await?;
    let (intents, _) =
        stores.blobs.list(&unholding_prefix(&keys::holders_prefix(digest)), None, 1).await.map_err(internal)?;
    let mut seen = holds(stores, digest).await?;
    if !intents.is_empty() || begun().await? != before {
        seen.live = true;
    }
    Ok(seen)
}

/// After the record went: the blob's entries (all of them, listed now: a failed push may have
/// written one after the collector's second look). Each is removed, then its fact looked at
/// again: a push of the same blob that wrote its fact meanwhile gets the entry back (it writes
/// its fact and then checks the entry, so one of the two sees the other).
async fn clean_up<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, digest: &Digest) -> Result<()> {
    let prefix = keys::holders_prefix(digest);
    let mut entries = Vec::new();
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        entries.extend(objects);
    }
    for entry in entries {
        unhold(stores, digest, &prefix, &entry).await?;
    }
    forget_unrecorded(stores, digest).await
}

/// How long ago a holder entry was written (entries carry their time; those from before, and
/// links' entries, count as old).
async fn entry_age<M, B: BlobStore>(stores: &Stores<M, B>, entry: &str) -> Result<u64> {
    let written = match stores.blobs.read_bytes(entry).await {
        Ok(bytes) => std::str::from_utf8(&bytes).ok().and_then(|t| t.parse::<u64>().ok()).unwrap_or(0),
        Err(crate::registry::store::StoreError::NotFound) => return Ok(0),
        Err(e) => return Err(internal(e)),
    };
    Ok((stores.now)().saturating_sub(written))
}

/// Remove one holder entry, and put it back if its fact is there (now, or written meanwhile: a
/// push writes its fact, then checks its entry, so one of the two sees the other).
///
/// Crash-safe: an intent object (`gc/unholding/<entry>/<nonce>`, one of this collector's own) is
/// written before the entry is removed and deleted after the fact was looked at, so a collector
/// killed in between leaves the intent, and the next pass's first step finishes the look
/// ([`finish_unholds`]). The intent, and the count of unholds begun, also tell another
/// collector's second look that its listing may miss this entry ([`holds_steady`]).
async fn unhold<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    digest: &Digest,
    prefix: &str,
    entry: &str,
) -> Result<()> {
    let intent = format!("{}{}", unholding_prefix(entry), hex::encode((stores.random)()));
    blobs::mark(stores, &intent, (stores.now)().to_string().into_bytes()).await?;
    stores.meta.increment(&keys::unholds_begun(digest), 1).await.map_err(internal)?;
    blobs::remove(stores, entry).await?;
    restore_if_held(stores, digest, prefix, entry).await?;
    blobs::remove(stores, &intent).await
}

/// Put the holder entry back if its fact exists.
async fn restore_if_held<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    digest: &Digest,
    prefix: &str,
    entry: &str,
) -> Result<()> {
    let fact = match keys::parse_holder(prefix, entry) {
        Some(Holder::Link { repo_key }) => keys::blob_link_at(&repo_key, digest),
        Some(Holder::Manifest { repo_key, manifest }) => keys::manifest_at(&repo_key, &manifest),
        None => return Ok(()),
    };
    if stores.meta.get(&fact).await.map_err(internal)?.is_some_and(|v| !v.is_empty()) {
        blobs::mark(stores, entry, Vec::new()).await?;
    }
    Ok(())
}

/// Where [`unhold`] notes the entry it is removing.
const UNHOLDING_PREFIX: &str = "gc/unholding/";

/// The prefix of the intents of unholds of `entry`, or of every entry under a blob's holders
/// prefix: `gc/unholding/<entry>/`, each intent then named by its collector's nonce.
fn unholding_prefix(entry: &str) -> String {
    format!("{UNHOLDING_PREFIX}{}/", entry.trim_end_matches('/'))
}

/// The holder entry an intent names (`gc/unholding/<entry>/<nonce>`; before, and still left by
/// collectors of earlier versions, `gc/unholding/<nonce>/<entry>`), and the blob it holds with
/// its holders prefix.
fn intent_entry(intent: &str) -> Option<(&str, Digest, String)> {
    let rest = intent.strip_prefix(UNHOLDING_PREFIX)?;
    [rest.rsplit_once('/').map(|(entry, _)| entry), rest.split_once('/').map(|(_, entry)| entry)]
        .into_iter()
        .flatten()
        .find_map(|entry| keys::parse_holder_entry(entry).map(|(digest, prefix)| (entry, digest, prefix)))
}

/// Finish the unholds of collectors that died in the middle (a bounded page of them, those
/// older than `gc_abandoned_seconds`: a live one finishes in well under a second): each entry's
/// fact is looked at again, the entry put back if it is there, and the intent removed.
async fn finish_unholds<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>) -> Result<()> {
    let (intents, _) = stores.blobs.list(UNHOLDING_PREFIX, None, STEP_BLOBS).await.map_err(internal)?;
    for intent in intents {
        if entry_age(stores, &intent).await? < stores.config.gc_abandoned_secs {
            continue;
        }
        let Some((entry, digest, prefix)) = intent_entry(&intent) else {
            blobs::remove(stores, &intent).await?;
            continue;
        };
        stores.log(format_args!("gc: finishing the removal of holder entry {entry}, left by a collector that died"));
        restore_if_held(stores, &digest, &prefix, entry).await?;
        blobs::remove(stores, &intent).await?;
    }
    Ok(())
}

/// Remove the blob's list entry while it has no record (none, or removed), and put it back if a
/// commit stored one meanwhile (a commit writes the entry, the record, then checks the entry).
async fn forget_unrecorded<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, digest: &Digest) -> Result<()> {
    let entry = keys::blob_index(digest);
    let now = (stores.now)();
    // An entry younger than the upload expiry may belong to a commit still on its way.
    let written = stores.blobs.read_bytes(&entry).await.ok();
    let written_at = written.as_deref().and_then(|w| std::str::from_utf8(w).ok()?.parse::<u64>().ok()).unwrap_or(0);
    let recorded = async || Ok::<_, RegistryError>(blobs::record(stores, digest).await?.is_some());
    if recorded().await? {
        return Ok(());
    }
    if stores.meta.get(&keys::blob(digest)).await.map_err(internal)?.is_none()
        && now.saturating_sub(written_at) < stores.config.upload_expiry_secs
    {
        return Ok(());
    }
    blobs::remove(stores, &entry).await?;
    if recorded().await? {
        blobs::mark(stores, &entry, now.to_string().into_bytes()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::api::*;
    use crate::testing::{advance_clock, block_on, memory_stores};
    use crate::wire::digest::Algorithm;
    use http::{Method, StatusCode};

    /// Garbage collection passes until one removes nothing; what they removed.
    fn collect(stores: &Mem, dry_run: bool) -> Vec<Digest> {
        let mut removed = Vec::new();
        let mut after = None;
        loop {
            let step = block_on(step(stores, after, dry_run, MAX_CONCURRENCY)).unwrap();
            removed.extend(step.collected.into_iter().map(|(d, _)| d));
            after = step.next;
            if after.is_none() {
                return removed;
            }
        }
    }

    fn past_grace(stores: &Mem) {
        advance_clock(stores.config.gc_grace_secs + 1);
    }

    fn blob_status(stores: &Mem, repo: &str, digest: &Digest) -> StatusCode {
        send(stores, Method::GET, &format!("/v2/{repo}/blobs/{digest}"), vec![]).status
    }

    /// Bytes of the objects holding blob data.
    fn stored_bytes(stores: &Mem) -> usize {
        stores.blobs.0.borrow().iter().filter(|(k, _)| k.starts_with("uploads/")).map(|(_, v)| v.len()).sum()
    }

    fn sorted(mut digests: Vec<Digest>) -> Vec<Digest> {
        digests.sort_by_key(Digest::to_string);
        digests
    }

    #[test]
    fn the_blobs_only_a_deleted_manifest_referenced_are_removed_and_every_other_image_stays_whole() {
        let stores = memory_stores();
        let a = push_image(&stores, "r", "a", b"config a", &[b"shared", b"only a"]);
        push_image(&stores, "r", "b", b"config b", &[b"shared", b"only b"]);
        assert_eq!(send(&stores, Method::DELETE, &format!("/v2/r/manifests/{a}"), vec![]).status, StatusCode::ACCEPTED);
        let before = stored_bytes(&stores);
        past_grace(&stores);

        let removed = collect(&stores, false);
        let sha = |b: &[u8]| Digest::of(Algorithm::Sha256, b);
        assert_eq!(sorted(removed), sorted(vec![sha(b"config a"), sha(b"only a"), a.clone()]));
        assert_eq!(
            before - stored_bytes(&stores),
            b"config a".len() + b"only a".len() + manifest_of(b"config a", &[b"shared", b"only a"]).len()
        );
        for gone in [sha(b"config a"), sha(b"only a")] {
            let r = send(&stores, Method::HEAD, &format!("/v2/r/blobs/{gone}"), vec![]);
            assert_eq!(r.status, StatusCode::NOT_FOUND);
        }
        for kept in [sha(b"config b"), sha(b"shared"), sha(b"only b")] {
            assert_eq!(blob_status(&stores, "r", &kept), StatusCode::OK);
        }
        assert_eq!(send(&stores, Method::GET, "/v2/r/manifests/b", vec![]).status, StatusCode::OK);
        assert!(collect(&stores, false).is_empty(), "a second pass finds nothing more");
    }

    #[test]
    fn a_blob_linked_within_the_grace_time_stays_for_the_manifest_still_to_come() {
        let stores = memory_stores();
        let layer = push_blob(&stores, "r", b"pushed, manifest not yet");
        assert!(collect(&stores, false).is_empty());
        advance_clock(stores.config.gc_grace_secs - 1);
        assert!(collect(&stores, false).is_empty());
        advance_clock(2);
        assert_eq!(collect(&stores, false), std::slice::from_ref(&layer));
        assert_eq!(blob_status(&stores, "r", &layer), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_dry_run_reports_what_a_run_removes_and_changes_nothing() {
        let stores = memory_stores();
        let a = push_image(&stores, "r", "a", b"config", &[b"layer"]);
        send(&stores, Method::DELETE, &format!("/v2/r/manifests/{a}"), vec![]);
        past_grace(&stores);
        let snapshot = (stores.meta.0.borrow().clone(), stores.blobs.0.borrow().clone());
        let planned = sorted(collect(&stores, true));
        assert_eq!(planned.len(), 3);
        assert_eq!((stores.meta.0.borrow().clone(), stores.blobs.0.borrow().clone()), snapshot);
        assert_eq!(sorted(collect(&stores, false)), planned);
    }

    #[test]
    fn head_then_gc_then_put_is_manifest_blob_unknown_and_pushing_the_blob_again_repairs_it() {
        let stores = memory_stores();
        let layer = push_blob(&stores, "r", b"layer");
        let config = push_blob(&stores, "r", b"config");
        past_grace(&stores);
        // The client sees both blobs, so it will not send them again...
        assert_eq!(send(&stores, Method::HEAD, &format!("/v2/r/blobs/{layer}"), vec![]).status, StatusCode::OK);
        assert_eq!(send(&stores, Method::HEAD, &format!("/v2/r/blobs/{config}"), vec![]).status, StatusCode::OK);
        // ...garbage collection removes them (nothing references them, linked long ago)...
        assert_eq!(collect(&stores, false).len(), 2);
        // ...and the manifest is refused, never stored with a missing blob.
        let manifest = manifest_of(b"config", &[b"layer"]);
        let r = put_manifest(&stores, "r", "v1", &manifest);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
        assert_eq!(send(&stores, Method::GET, "/v2/r/manifests/v1", vec![]).status, StatusCode::NOT_FOUND);
        // The client pushes the blobs again: stored anew, and the manifest goes in.
        push_blob(&stores, "r", b"layer");
        push_blob(&stores, "r", b"config");
        assert_eq!(put_manifest(&stores, "r", "v1", &manifest).status, StatusCode::CREATED);
        past_grace(&stores);
        assert!(collect(&stores, false).is_empty());
        assert_eq!(blob_status(&stores, "r", &layer), StatusCode::OK);
    }

    /// A layer and a config pushed long ago, nothing referencing them, and the layer's record
    /// marked by a collector (move 1): the layer, its record as read, and the marked bytes.
    fn layer_condemned(stores: &Mem) -> (Digest, BlobRecord, Vec<u8>) {
        let layer = push_blob(stores, "r", b"layer");
        push_blob(stores, "r", b"config");
        past_grace(stores);
        let (record, bytes) = block_on(blobs::stored(stores, &layer)).unwrap().unwrap();
        let marked = block_on(condemn(stores, &layer, &record, &bytes)).unwrap().expect("marked");
        (layer, record, marked)
    }

    #[test]
    fn a_manifest_pushed_between_the_mark_and_the_second_look_keeps_its_blobs() {
        let stores = memory_stores();
        let (layer, record, marked) = layer_condemned(&stores);
        // The manifest arrives while the layer is condemned: its push takes the mark off.
        let manifest = manifest_of(b"config", &[b"layer"]);
        assert_eq!(put_manifest(&stores, "r", "v1", &manifest).status, StatusCode::CREATED);
        assert_eq!(block_on(blobs::record(&stores, &layer)).unwrap().unwrap().condemned, None, "the push took it off");
        assert_eq!(block_on(remove_condemned(&stores, &layer, record, &marked)).unwrap(), Outcome::Kept);
        assert!(collect(&stores, false).is_empty());
        assert_eq!(blob_status(&stores, "r", &layer), StatusCode::OK);
    }

    #[test]
    fn a_second_collectors_mark_in_the_same_second_never_lets_the_first_remove_a_held_blob() {
        let stores = memory_stores();
        // Collector A marks the layer, then looks at its holders: none yet.
        let (layer, record, marked_by_a) = layer_condemned(&stores);
        assert!(!block_on(holds(&stores, &layer)).unwrap().live);
        // A manifest is pushed: its push takes A's mark off.
        let manifest = manifest_of(b"config", &[b"layer"]);
        assert_eq!(put_manifest(&stores, "r", "v1", &manifest).status, StatusCode::CREATED);
        // Collector B marks the layer in the same second (the test clock stands still).
        let (_, bytes) = block_on(blobs::stored(&stores, &layer)).unwrap().unwrap();
        let marked_by_b = block_on(condemn(&stores, &layer, &record, &bytes)).unwrap().expect("marked");
        assert_ne!(marked_by_a, marked_by_b, "two marks are never the same bytes");
        // A's last move, from its own mark: it must fail, B's mark is not A's.
        assert_eq!(block_on(remove_condemned(&stores, &layer, record.clone(), &marked_by_a)).unwrap(), Outcome::Kept);
        // B's second look sees the manifest.
        assert_eq!(block_on(remove_condemned(&stores, &layer, record, &marked_by_b)).unwrap(), Outcome::Kept);
        assert_eq!(blob_status(&stores, "r", &layer), StatusCode::OK);
        assert_eq!(send(&stores, Method::GET, "/v2/r/manifests/v1", vec![]).status, StatusCode::OK);
    }

    /// A layer condemned by collector A, and a manifest that references it, pushed again after
    /// a delete: its holder entry is there and so is its record. The entry's name.
    fn condemned_layer_of_a_pushed_manifest(stores: &Mem) -> (Digest, BlobRecord, Vec<u8>, String) {
        let (layer, record, marked) = layer_condemned(stores);
        let name = crate::wire::name::RepoName::parse("r").unwrap();
        let m = Digest::of(Algorithm::Sha256, b"m");
        let entry = keys::manifest_holder(&name, &layer, &m);
        block_on(blobs::mark(stores, &entry, Vec::new())).unwrap();
        stores.meta.0.borrow_mut().insert(keys::manifest(&name, &m), b"{}".to_vec());
        (layer, record, marked, entry)
    }

    #[test]
    fn a_second_look_during_another_collectors_unhold_of_a_live_entry_keeps_the_blob() {
        let stores = memory_stores();
        let (layer, record, marked, entry) = condemned_layer_of_a_pushed_manifest(&stores);
        // Collector B, which found the manifest's record missing before it was pushed again,
        // is unholding its entry: intent written, counted, entry removed, not yet put back.
        let intent = format!("{}b-nonce", unholding_prefix(&entry));
        block_on(blobs::mark(&stores, &intent, b"0".to_vec())).unwrap();
        block_on(stores.meta.increment(&keys::unholds_begun(&layer), 1)).unwrap();
        block_on(blobs::remove(&stores, &entry)).unwrap();
        assert!(!block_on(holds(&stores, &layer)).unwrap().live, "a plain listing misses the manifest");
        // A's second look sees B's intent and keeps the layer.
        assert_eq!(block_on(remove_condemned(&stores, &layer, record, &marked)).unwrap(), Outcome::Kept);
        // B finishes: the entry is back, the intent gone; the next pass keeps the layer too.
        block_on(restore_if_held(&stores, &layer, &keys::holders_prefix(&layer), &entry)).unwrap();
        block_on(blobs::remove(&stores, &intent)).unwrap();
        assert!(!collect(&stores, false).contains(&layer));
        assert_eq!(blob_status(&stores, "r", &layer), StatusCode::OK);
    }

    #[test]
    fn every_unhold_counts_itself_and_puts_back_an_entry_whose_fact_exists() {
        let stores = memory_stores();
        let (layer, _, _, entry) = condemned_layer_of_a_pushed_manifest(&stores);
        // What the second look relies on for an unhold that begins after its first read of the
        // count and ends (its intent gone) before its second: the count has moved. (The
        // interleaving itself is raced end to end in tests/gc.rs, three collectors at once.)
        let before = block_on(stores.meta.get(&keys::unholds_begun(&layer))).unwrap();
        block_on(unhold(&stores, &layer, &keys::holders_prefix(&layer), &entry)).unwrap();
        let after = block_on(stores.meta.get(&keys::unholds_begun(&layer))).unwrap();
        assert_ne!(before, after, "every unhold counts itself");
        assert!(block_on(blobs::marked(&stores, &entry)).unwrap(), "its fact is there: the entry is back");
        let (intents, _) = block_on(stores.blobs.list(UNHOLDING_PREFIX, None, 10)).unwrap();
        assert!(intents.is_empty(), "{intents:?}");
    }

    #[test]
    fn a_manifest_whose_record_is_written_before_the_second_look_keeps_its_blobs() {
        let stores = memory_stores();
        let (layer, record, marked) = layer_condemned(&stores);
        // A push that has written its holder entry and its record, but not yet read the blob's
        // record, when the collector looks again.
        let name = crate::wire::name::RepoName::parse("r").unwrap();
        let m = Digest::of(Algorithm::Sha256, b"m");
        block_on(blobs::mark(&stores, &keys::manifest_holder(&name, &layer, &m), Vec::new())).unwrap();
        stores.meta.0.borrow_mut().insert(keys::manifest(&name, &m), b"{}".to_vec());
        assert_eq!(block_on(remove_condemned(&stores, &layer, record, &marked)).unwrap(), Outcome::Kept);
        assert!(block_on(blobs::hold(&stores, &layer)).unwrap(), "the push's own look finds it");
    }

    #[test]
    fn a_manifest_whose_links_are_there_but_whose_blob_was_just_removed_is_refused_and_not_stored() {
        let stores = memory_stores();
        let layer = push_blob(&stores, "r", b"layer");
        push_blob(&stores, "r", b"config");
        // A collector has swapped the record to removed and not yet taken the links back.
        stores.meta.0.borrow_mut().insert(keys::blob(&layer), Vec::new());
        let manifest = manifest_of(b"config", &[b"layer"]);
        let r = put_manifest(&stores, "r", "v1", &manifest);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
        let digest = Digest::of(Algorithm::Sha256, &manifest);
        assert_eq!(
            send(&stores, Method::HEAD, &format!("/v2/r/manifests/{digest}"), vec![]).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(send(&stores, Method::HEAD, "/v2/r/manifests/v1", vec![]).status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_mark_left_by_a_collector_that_died_is_finished_by_a_later_step() {
        let stores = memory_stores();
        let layer = push_blob(&stores, "r", b"layer");
        past_grace(&stores);
        let (record, bytes) = block_on(blobs::stored(&stores, &layer)).unwrap().unwrap();
        block_on(condemn(&stores, &layer, &record, &bytes)).unwrap().expect("marked");
        assert!(collect(&stores, false).is_empty(), "a fresh mark belongs to a collector at work");
        advance_clock(crate::config::Config::default().gc_abandoned_secs);
        assert_eq!(collect(&stores, false), [layer]);
        assert_eq!(stored_bytes(&stores), 0);
        assert!(
            stores.blobs.0.borrow().keys().all(|k| !k.starts_with("index/holders/") && !k.starts_with("index/blobs/"))
        );
    }

    #[test]
    fn a_removal_whose_cleanup_died_is_finished_by_a_later_step() {
        let stores = memory_stores();
        let layer = push_blob(&stores, "r", b"layer");
        past_grace(&stores);
        // A collector made its last move, then died before deleting anything.
        let (record, bytes) = block_on(blobs::stored(&stores, &layer)).unwrap().unwrap();
        let removed = BlobRecord { removed: Some(1), ..record }.to_json();
        assert!(block_on(stores.meta.compare_and_swap(&keys::blob(&layer), &bytes, &removed)).unwrap());
        assert_eq!(blob_status(&stores, "r", &layer), StatusCode::NOT_FOUND, "gone for readers");
        assert!(stored_bytes(&stores) > 0);
        collect(&stores, false);
        assert_eq!(stored_bytes(&stores), 0, "the next step deleted the parts the record still named");
        assert_eq!(stores.meta.0.borrow()[&keys::blob(&layer)], b"");
        assert!(
            stores.blobs.0.borrow().keys().all(|k| !k.starts_with("index/holders/") && !k.starts_with("index/blobs/"))
        );
        // Pushed again: stored anew.
        push_blob(&stores, "r", b"layer");
        assert_eq!(blob_status(&stores, "r", &layer), StatusCode::OK);
    }

    #[test]
    fn a_kept_blob_loses_the_holder_entries_of_deleted_manifests() {
        let stores = memory_stores();
        let a = push_image(&stores, "r", "a", b"config a", &[b"base"]);
        push_image(&stores, "r", "b", b"config b", &[b"base"]);
        send(&stores, Method::DELETE, &format!("/v2/r/manifests/{a}"), vec![]);
        past_grace(&stores);
        let base = Digest::of(Algorithm::Sha256, b"base");
        let holders = || stores.blobs.0.borrow().keys().filter(|k| k.starts_with(&keys::holders_prefix(&base))).count();
        assert_eq!(holders(), 3, "a link and two manifests");
        collect(&stores, false);
        assert_eq!(holders(), 3, "younger than the upload expiry: it might be a push's on its way");
        advance_clock(stores.config.upload_expiry_secs);
        collect(&stores, false);
        assert_eq!(holders(), 2, "the deleted manifest's entry went; the link and b's stay");
        assert_eq!(blob_status(&stores, "r", &base), StatusCode::OK);
    }

    #[test]
    fn the_entry_of_a_manifest_push_on_its_way_to_its_record_is_not_pruned() {
        let stores = memory_stores();
        push_image(&stores, "r", "b", b"config b", &[b"base"]);
        past_grace(&stores);
        // A push of another manifest has written its holder entry, and not yet its record.
        let (name, base) = (crate::wire::name::RepoName::parse("r").unwrap(), Digest::of(Algorithm::Sha256, b"base"));
        let coming = Digest::of(Algorithm::Sha256, b"a manifest on its way");
        let entry = keys::manifest_holder(&name, &base, &coming);
        block_on(blobs::mark(&stores, &entry, (stores.now)().to_string().into_bytes())).unwrap();
        collect(&stores, false);
        assert!(stores.blobs.0.borrow().contains_key(&entry), "the push's entry stays");
    }

    #[test]
    fn an_unhold_left_half_done_by_a_collector_that_died_is_finished_by_the_next_pass() {
        let stores = memory_stores();
        let b = push_image(&stores, "r", "b", b"config b", &[b"base"]);
        let (name, base) = (crate::wire::name::RepoName::parse("r").unwrap(), Digest::of(Algorithm::Sha256, b"base"));
        let entry = keys::manifest_holder(&name, &base, &b);
        // The collector wrote its intent and removed the entry (b's manifest exists: it would
        // have put it back), then died.
        let intent = format!("{}{}", unholding_prefix(&entry), hex::encode((stores.random)()));
        block_on(blobs::mark(&stores, &intent, (stores.now)().to_string().into_bytes())).unwrap();
        block_on(blobs::remove(&stores, &entry)).unwrap();
        // The same left by a collector of the version before (`gc/unholding/<nonce>/<entry>`).
        let old_intent = format!("{UNHOLDING_PREFIX}{}/{entry}", hex::encode((stores.random)()));
        block_on(blobs::mark(&stores, &old_intent, (stores.now)().to_string().into_bytes())).unwrap();
        advance_clock(crate::config::Config::default().gc_abandoned_secs + 1);
        collect(&stores, false);
        assert!(stores.blobs.0.borrow().contains_key(&entry), "the entry of b's manifest is back");
        assert!(!stores.blobs.0.borrow().contains_key(&intent), "the intent is gone");
        assert!(!stores.blobs.0.borrow().contains_key(&old_intent), "the old-style intent is gone");
        advance_clock(stores.config.gc_grace_secs + 1);
        collect(&stores, false);
        assert_eq!(blob_status(&stores, "r", &base), StatusCode::OK, "b's layer is kept");
    }

    #[test]
    fn removed_blobs_leave_the_quota_usage() {
        let mut stores = memory_stores();
        stores.config.quotas = crate::config::quotas::Quotas::parse("r 1MiB").unwrap();
        let a = push_image(&stores, "r", "a", b"config", &[b"layer"]);
        let rule = stores.config.quotas.iter().next().unwrap().clone();
        assert!(block_on(crate::registry::quota::used(&stores, &rule)).unwrap() > 0);
        send(&stores, Method::DELETE, &format!("/v2/r/manifests/{a}"), vec![]);
        past_grace(&stores);
        assert_eq!(collect(&stores, false).len(), 3);
        assert_eq!(block_on(crate::registry::quota::used(&stores, &rule)).unwrap(), 0);
    }

    #[test]
    fn a_blob_removed_and_pushed_again_is_collectable_again() {
        let stores = memory_stores();
        let layer = push_blob(&stores, "r", b"layer");
        past_grace(&stores);
        assert_eq!(collect(&stores, false), std::slice::from_ref(&layer));
        push_blob(&stores, "r", b"layer");
        assert_eq!(blob_status(&stores, "r", &layer), StatusCode::OK);
        past_grace(&stores);
        assert_eq!(collect(&stores, false), [layer]);
        assert_eq!(stored_bytes(&stores), 0);
    }
}
